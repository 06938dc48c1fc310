"""Polar accuracy per step count: max |s - 1| of Polar Express for N steps with the table ``steps=N`` picks,
against the published table truncated to N steps, in float32 and bf16 (issue 22 item 3; also the
``accuracy`` section of benchmarks/gpu.py, on the GPU).

Per (shape, spectrum) of benchmarks/polar.py (``make_matrix``: Haar singular vectors, float32 input)
and per method: max |u_i^T Q v_i - 1| over the singular values s_i > 1e-3 s_max and the relative
Frobenius distance to U V^T, both against the float64 SVD of the float32 input (``polar.accuracy``).
Methods: Newton-Schulz 5 (Muon's quintic, for scale), Polar Express N steps with the default table
(``coefficients.best_polar_express_table(N)``) and with the published l = 1e-3 table truncated to N.
Printed: the worst over shapes, per spectrum.

Usage::

    .venv/bin/python benchmarks/polar_steps.py --threads 1                         # README's table
    .venv/bin/python benchmarks/polar_steps.py --shapes 256x256 --steps 6 --dtypes float32
"""

from __future__ import annotations

import argparse
import sys

import torch

import _util  # noqa: F401  (puts src/ on sys.path)
import polar as polar_bench  # benchmarks/polar.py: spectra, float64 reference, accuracy metric
import steepest
from _util import machine, table
from steepest._io import atomic_write_json
from steepest.linalg import coefficients as C

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def methods(steps_list, published: bool = True) -> dict:
    """name -> callable(G, dtype): NS5, and per N Polar Express with the chosen table (and the published one)."""
    out = {"newton_schulz 5": lambda G, dt: steepest.polar(G, "newton_schulz", 5, dtype=dt)}
    for s in steps_list:
        tag = C.best_polar_express_table(s).removeprefix("POLAR_EXPRESS_")
        out[f"polar_express {s} default ({tag})"] = lambda G, dt, s=s: steepest.polar(G, "polar_express", s, dtype=dt)
        if published and tag != "L1E3":
            out[f"polar_express {s} published L1E3"] = lambda G, dt, s=s: steepest.polar(
                G, "polar_express", s, dtype=dt, coefficients=C.POLAR_EXPRESS_L1E3
            )
    return out


def accuracy_rows(device, shapes, spectra, meths: dict, dtypes) -> list[dict]:
    """One row per (shape, spectrum, method, dtype); the float64 reference is computed on the CPU."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for shape in shapes:
        for spectrum in spectra:
            G = polar_bench.make_matrix(tuple(shape), spectrum, g)
            U, s, Vh, Qref = polar_bench.reference(G)
            Gd = G.to(device)
            for name, fn in meths.items():
                for dt in dtypes:
                    acc = polar_bench.accuracy(fn(Gd, DTYPES[dt]).cpu(), U, s, Vh, Qref)
                    rows.append(
                        {"shape": "x".join(map(str, shape)), "spectrum": spectrum, "method": name, "dtype": dt, **acc}
                    )
    return rows


def worst_over_shapes(rows: list[dict], spectra) -> list[dict]:
    out = []
    for name in dict.fromkeys(r["method"] for r in rows):
        for dt in dict.fromkeys(r["dtype"] for r in rows):
            sel = [r for r in rows if r["method"] == name and r["dtype"] == dt]
            w = {
                "method": name,
                "dtype": dt,
                **{sp: max(r["max_abs_s_minus_1"] for r in sel if r["spectrum"] == sp) for sp in spectra},
            }
            w["rel_fro_err_worst"] = max(r["rel_fro_err"] for r in sel)
            out.append(w)
    return out


def print_table(worst: list[dict], spectra) -> None:
    print(
        table(
            worst,
            [("method", "method", "{}"), ("dtype", "dtype", "{}")]
            + [(sp, sp, "{:.2e}") for sp in spectra]
            + [("rel_fro_err_worst", "rel. Frobenius (worst)", "{:.2e}")],
        )
    )


def _shape(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.lower().split("x"))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default=",".join("x".join(map(str, s)) for s in polar_bench.SHAPES))
    ap.add_argument("--spectra", default=",".join(polar_bench.SPECTRA))
    ap.add_argument("--steps", default="4,5,6,7,8,10")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(_util.ROOT / "benchmarks" / "results" / "polar_steps.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [_shape(s) for s in args.shapes.split(",") if s]
    spectra = [s for s in args.spectra.split(",") if s]
    dtypes = [d for d in args.dtypes.split(",") if d]
    bad = sorted(set(dtypes) - set(DTYPES)) + sorted(set(spectra) - set(polar_bench.SPECTRA))
    if bad:
        raise SystemExit(f"unknown dtypes/spectra {bad}: dtypes {list(DTYPES)}, spectra {polar_bench.SPECTRA}")
    meths = methods([int(s) for s in args.steps.split(",") if s])
    rows = accuracy_rows(torch.device(args.device), shapes, spectra, meths, dtypes)
    worst = worst_over_shapes(rows, spectra)
    print(f"\nmax |s - 1| over s > 1e-3 s_max, worst over shapes {args.shapes}:\n")
    print_table(worst, spectra)
    result = {
        "machine": machine(),
        "command": "benchmarks/polar_steps.py " + " ".join(argv or []),
        "device": args.device,
        "worst_over_shapes": worst,
        "rows": rows,
    }
    atomic_write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
