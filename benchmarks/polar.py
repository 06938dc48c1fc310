"""Speed and accuracy of the polar-factor methods over shapes and spectra.

Shapes 256x256, 1024x1024, 768x3072, 3072x768 and a batch 8x256x256; spectra:

* ``gaussian``: G = randn(m, n) (Marchenko-Pastur spectrum, Haar singular vectors);
* ``low_stable_rank``: s_1 = 1, s_j ~ 0.02 Uniform(0, 1) for j >= 2 (a spike over a small bulk);
* ``power_law``: s_j = 1 / j;
* ``log_spaced``: s log-spaced over [1e-6, 1];

the last three built as G = U diag(s) V^T with Haar-random orthogonal U, V (QR of a Gaussian). The
input is float32. Methods: ``svd``; Newton-Schulz with Muon's quintic (5 and 10 steps, float32; 5 steps
bfloat16); Polar Express (5, 6, 8 steps, float32) with each normalization (``schatten8``, the default,
and ``frobenius``); Polar Express 8 steps in bfloat16; torch.optim.Muon's internal Newton-Schulz
(``torch.optim._muon._zeropower_via_newtonschulz``, bfloat16, 2-D only, so a batch is looped); and two
diagnostic variants of Frobenius-normalized Polar Express (10 steps; a table generated for l = 1e-4).

Reported per (shape, spectrum, method): median wall and process CPU time (timed on the gaussian
spectrum: the iterative methods cost the same on every spectrum), relative Frobenius error
||Q - U V^T||_F / ||U V^T||_F against the float64 polar factor of the float32 input (float64 SVD), and
max |s_i(Q) - 1| over the singular directions with s_i > 1e-3 s_max, where s_i(Q) = u_i^T Q v_i
(u_i, v_i the float64 singular vectors of G: how far the method moved that singular value from 1).
Also, per (shape, spectrum), the smallest singular value of interest (> 1e-3 s_max) after each
normalization, to compare with the Polar Express table's l = 1e-3.

Goal (issue 2): Polar Express, 8 steps, float32 reaches max |s - 1| <= 1e-2 on every spectrum.

Usage::

    .venv/bin/python benchmarks/polar.py           # all shapes, ~3-5 minutes on 2 CPU cores
    .venv/bin/python benchmarks/polar.py --quick   # 256x256 and 8x256x256 only
"""

from __future__ import annotations

import argparse
import math
import statistics

import torch

import _util  # noqa: F401  (puts src/ on sys.path)
import steepest
from _util import machine, summarize, table, time_interleaved
from steepest.app.runs import atomic_write_json

SHAPES = ((256, 256), (1024, 1024), (768, 3072), (3072, 768), (8, 256, 256))
SPECTRA = ("gaussian", "low_stable_rank", "power_law", "log_spaced")
THRESHOLD = 1e-3  # singular values of interest: s > THRESHOLD * s_max
GOAL = 1e-2


def _haar(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    """n x k matrix with orthonormal columns, Haar distributed (QR with the sign fix)."""
    Q, R = torch.linalg.qr(torch.randn(n, k, dtype=torch.float64, generator=g))
    return Q * torch.sign(torch.diagonal(R)).unsqueeze(0)


def make_matrix(shape: tuple[int, ...], spectrum: str, g: torch.Generator) -> torch.Tensor:
    """A float32 test matrix (or batch) of ``shape`` with the named spectrum (see the module doc)."""
    *batch, m, n = shape
    if batch:
        return torch.stack([make_matrix((m, n), spectrum, g) for _ in range(math.prod(batch))]).reshape(shape)
    if spectrum == "gaussian":
        return torch.randn(m, n, dtype=torch.float64, generator=g).float()
    r = min(m, n)
    j = torch.arange(1, r + 1, dtype=torch.float64)
    if spectrum == "low_stable_rank":
        s = 0.02 * torch.rand(r, dtype=torch.float64, generator=g)
        s[0] = 1.0
    elif spectrum == "power_law":
        s = 1.0 / j
    elif spectrum == "log_spaced":
        s = torch.logspace(0, -6, r, dtype=torch.float64)
    else:
        raise ValueError(f"unknown spectrum {spectrum!r}")
    s = s.sort(descending=True).values
    return ((_haar(m, r, g) * s) @ _haar(n, r, g).T).float()


def _torch_muon_ns(G: torch.Tensor) -> torch.Tensor:
    from torch.optim._muon import _zeropower_via_newtonschulz

    coef = steepest.linalg.coefficients.MUON_QUINTIC
    if G.ndim == 2:
        return _zeropower_via_newtonschulz(G, coef, 5, 1e-7)
    flat = G.reshape(-1, *G.shape[-2:])
    return torch.stack([_zeropower_via_newtonschulz(x, coef, 5, 1e-7) for x in flat]).reshape(G.shape)


def methods(extra: bool) -> dict[str, dict]:
    """name -> {fn, method, steps, dtype, normalization} (the callables take the float32 input)."""
    P = steepest.polar
    bf, f32 = torch.bfloat16, torch.float32
    out = {
        "svd": dict(fn=lambda G: P(G, "svd"), dtype="float32"),
        "newton_schulz 5": dict(fn=lambda G: P(G, "newton_schulz", 5), dtype="float32", normalization="frobenius"),
        "newton_schulz 10": dict(fn=lambda G: P(G, "newton_schulz", 10), dtype="float32", normalization="frobenius"),
        "newton_schulz 5 bf16": dict(
            fn=lambda G: P(G, "newton_schulz", 5, dtype=bf), dtype="bfloat16", normalization="frobenius"
        ),
        "torch.optim.Muon NS5": dict(fn=_torch_muon_ns, dtype="bfloat16", normalization="frobenius"),
    }
    for norm in ("schatten8", "frobenius"):
        for steps in (5, 6, 8):
            out[f"polar_express {steps} {norm}"] = dict(
                fn=lambda G, s=steps, nm=norm: P(G, "polar_express", s, dtype=f32, normalization=nm),
                dtype="float32",
                normalization=norm,
            )
    out["polar_express 8 schatten8 bf16"] = dict(
        fn=lambda G: P(G, "polar_express", 8, dtype=bf, normalization="schatten8"),
        dtype="bfloat16",
        normalization="schatten8",
    )
    if extra:
        table4 = steepest.polar_express_coefficients(1e-4, 8)
        out["polar_express 10 frobenius"] = dict(
            fn=lambda G: P(G, "polar_express", 10, normalization="frobenius"),
            dtype="float32",
            normalization="frobenius",
        )
        out["polar_express 8 frobenius l=1e-4"] = dict(
            fn=lambda G: P(G, "polar_express", 8, coefficients=table4, normalization="frobenius"),
            dtype="float32",
            normalization="frobenius",
        )
        out["polar_express 8 schatten8 l=1e-4"] = dict(
            fn=lambda G: P(G, "polar_express", 8, coefficients=table4, normalization="schatten8"),
            dtype="float32",
            normalization="schatten8",
        )
    return out


def reference(G: torch.Tensor):
    """float64 SVD of the float32 input: (U, s, Vh, U V^T)."""
    U, s, Vh = torch.linalg.svd(G.double(), full_matrices=False)
    return U, s, Vh, U @ Vh


def accuracy(Q: torch.Tensor, U, s, Vh, Qref) -> dict:
    """Relative Frobenius error to U V^T and max |u_i^T Q v_i - 1| over s_i > THRESHOLD * s_max."""
    Qd = Q.double()
    fro = float(torch.linalg.vector_norm(Qd - Qref) / torch.linalg.vector_norm(Qref))
    si = torch.einsum("...mi,...mn,...in->...i", U, Qd, Vh)
    keep = s > THRESHOLD * s[..., :1]
    dev = float((si - 1).abs()[keep].max())
    return {"rel_fro_err": fro, "max_abs_s_minus_1": dev}


def normalized_floor(s: torch.Tensor) -> dict:
    """Smallest singular value of interest after each normalization (incl. Polar Express's 1.01)."""
    keep_min = torch.where(s > THRESHOLD * s[..., :1], s, torch.full_like(s, math.inf)).amin(-1)
    fro = s.square().sum(-1).sqrt()
    s8 = s.pow(8).sum(-1).pow(1 / 8)
    return {
        "s_min_over_fro": float((keep_min / (1.01 * fro)).min()),
        "s_min_over_s8": float((keep_min / (1.01 * s8)).min()),
        "stable_rank": float((s.square().sum(-1) / s[..., 0].square()).mean()),
    }


def _fmt_shape(shape) -> str:
    return "x".join(str(v) for v in shape)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small shapes only, 2 timed repeats, no extra variants")
    ap.add_argument("--repeats", type=int, default=None, help="timed repeats per method (default 7 small, 3 large)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(_util.ROOT / "benchmarks" / "results" / "polar.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    shapes = [s for s in SHAPES if max(s[-2:]) <= 256] if args.quick else list(SHAPES)
    meths = methods(extra=not args.quick)
    g = torch.Generator().manual_seed(0)
    rows, floors = [], []
    import sys

    from tqdm import tqdm

    todo = [(sh, sp) for sh in shapes for sp in SPECTRA]
    for shape, spectrum in tqdm(todo, desc="shape x spectrum", disable=not sys.stderr.isatty()):
        G = make_matrix(shape, spectrum, g)
        U, s, Vh, Qref = reference(G)
        floors.append({"shape": _fmt_shape(shape), "spectrum": spectrum, **normalized_floor(s)})
        acc = {name: accuracy(m["fn"](G), U, s, Vh, Qref) for name, m in meths.items()}
        timing = {}
        if spectrum == SPECTRA[0]:
            # The iterative methods do the same matmuls whatever the spectrum: time them on the first
            # spectrum only (interleaved rounds), which keeps the default run within a few minutes.
            large = math.prod(shape) > 300_000
            reps = args.repeats or (2 if args.quick else (3 if large else 7))
            cpu: dict[str, list[float]] = {}
            times = time_interleaved(
                {name: (lambda f=m["fn"], G=G: f(G)) for name, m in meths.items()}, reps, warmup=0, cpu_times=cpu
            )
            timing = {
                name: {**summarize(times[name]), "cpu_median_ms": 1e3 * statistics.median(cpu[name])} for name in meths
            }
        for name, m in meths.items():
            rows.append(
                {
                    "shape": _fmt_shape(shape),
                    "spectrum": spectrum,
                    "method": name,
                    "dtype": m["dtype"],
                    "normalization": m.get("normalization"),
                    **timing.get(name, {}),
                    **acc[name],
                }
            )

    # ------------------------------------------------------------------ tables
    names = list(meths)
    for key, title in (("median_ms", "Median wall time (ms)"), ("cpu_median_ms", "Median process CPU time (ms)")):
        print(f"\n{title}, on the {SPECTRA[0]} spectrum:\n")
        trows = []
        for name in names:
            r = {"method": name}
            for shape in shapes:
                r[_fmt_shape(shape)] = next(
                    x[key] for x in rows if x["method"] == name and x["shape"] == _fmt_shape(shape) and key in x
                )
            trows.append(r)
        print(table(trows, [("method", "method", "{}")] + [(_fmt_shape(s), _fmt_shape(s), "{:.1f}") for s in shapes]))
    for key, title in (
        ("max_abs_s_minus_1", f"max |s - 1| over s > {THRESHOLD:g} s_max"),
        ("rel_fro_err", "relative Frobenius error to the float64 polar factor"),
    ):
        print(f"\n{title} (worst over shapes):\n")
        arows = []
        for name in names:
            r = {"method": name}
            for sp in SPECTRA:
                r[sp] = max(x[key] for x in rows if x["method"] == name and x["spectrum"] == sp)
            arows.append(r)
        print(table(arows, [("method", "method", "{}")] + [(sp, sp, "{:.2e}") for sp in SPECTRA]))
    print("\nSmallest singular value of interest after normalization (Polar Express table assumes >= 1e-3):\n")
    print(
        table(
            floors,
            [
                ("shape", "shape", "{}"),
                ("spectrum", "spectrum", "{}"),
                ("stable_rank", "stable rank", "{:.3g}"),
                ("s_min_over_fro", "s_min / (1.01 ||s||_F)", "{:.2e}"),
                ("s_min_over_s8", "s_min / (1.01 ||s||_8)", "{:.2e}"),
            ],
        )
    )
    verdicts = {}
    for norm in ("schatten8", "frobenius"):
        name = f"polar_express 8 {norm}"
        worst = max(x["max_abs_s_minus_1"] for x in rows if x["method"] == name)
        fails = sorted(
            {(x["shape"], x["spectrum"]) for x in rows if x["method"] == name and x["max_abs_s_minus_1"] > GOAL}
        )
        verdicts[norm] = {"worst": worst, "met": not fails, "failures": fails}
        print(
            f"\nGoal (polar_express 8 steps, float32, {norm}): max|s-1| <= {GOAL:g} on every spectrum: "
            f"{'MET' if not fails else 'MISSED'} (worst {worst:.2e}){'' if not fails else ' on ' + str(fails)}"
        )
    result = {
        "machine": machine(),
        "command": "benchmarks/polar.py " + " ".join(argv or []),
        "settings": {
            "shapes": shapes,
            "spectra": SPECTRA,
            "threshold": THRESHOLD,
            "goal": GOAL,
            "threads": torch.get_num_threads(),
        },
        "goal": verdicts,
        "rows": rows,
        "normalized_floor": floors,
    }
    atomic_write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
