"""The forms of the Newton-Schulz polar iteration per shape, paired: speed and error (issue 22).

Per shape, on a stack of ``--matrices`` matrices (what a batched step dualizes), ``polar(G, "newton_schulz", 5)``:

* ``bf16``: the standard form in bf16 (``dtype=torch.bfloat16``: torch.optim.Muon's arithmetic; what
  ``dtype="auto"`` ran on native-bf16 CPUs from the kind's bf16 side up);
* ``fp32``: float32 with its default form (the Gram form from aspect 2: what ``"auto"`` runs below that side);
* ``mixed``: the mixed Gram form (``dtype=torch.bfloat16, gram=True``: bf16 m x n products, float32 m x m side);
* ``eigh``: the float32 eigh form (``form="eigh"``: one m x m ``eigh``, the iteration on its eigenvalues).

Timed in interleaved rounds (:func:`_util.time_shuffled`, thread CPU time under one torch thread); each form's
error against the float64 NS5 reference (relative Frobenius, scale-free as in benchmarks/peers.py) on four
spectra: Gaussian, log-spaced 1..1e-3 and 1..1e-5, and a rank-4 signal over 1e-3 noise (worst reported).
Printed per shape: the medians, each form / the faster of ``bf16`` and ``fp32`` (median of per-round ratios),
the worst errors, and what ``dtype="auto"`` runs now (``precision.auto_eigh``); then the
:class:`precision.EighRule` the rows support (per side, the smallest aspect from which ``eigh`` is <= 0.95x at
every larger aspect).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/form_sweep.py --threads 1
    PYTHONPATH=src .venv/bin/python benchmarks/form_sweep.py --threads 1 --sides 128,256 --aspects 3,4,6,9
"""

from __future__ import annotations

import argparse
import statistics
import sys

import torch

import _util  # noqa: F401  (puts src/ on sys.path)
from _util import machine, paired_ratio, table, time_shuffled
from steepest._io import atomic_write_json
from steepest.linalg.polar_factor import polar
from steepest.linalg.precision import auto_eigh, device_kind

SPECTRA = ("gaussian", "log3", "log5", "rank4")


def make(m: int, n: int, kind: str, g: torch.Generator) -> torch.Tensor:
    """An m x n float32 matrix with the singular-value profile ``kind`` (random singular vectors)."""
    if kind == "gaussian":
        return torch.randn(m, n, generator=g)
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64))
    if kind == "log3":
        s = torch.logspace(0, -3, k, dtype=torch.float64)
    elif kind == "log5":
        s = torch.logspace(0, -5, k, dtype=torch.float64)
    else:
        s = torch.cat(
            [torch.logspace(0, -1, 4, dtype=torch.float64), 1e-3 * torch.rand(k - 4, generator=g, dtype=torch.float64)]
        )
    return ((U * s) @ V.T).float()


def error(U: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative Frobenius distance of U to ``ref`` scaled to U's norm (scale-free)."""
    R = ref * (U.norm() / ref.norm().clamp(min=1e-30))
    return float((U - R).norm() / R.norm().clamp(min=1e-30))


def ns5(G: torch.Tensor, **kw) -> torch.Tensor:
    return polar(G, "newton_schulz", 5, **kw)


FORMS = {
    "bf16": {"dtype": torch.bfloat16, "gram": False},
    "fp32": {"dtype": torch.float32},
    "mixed": {"dtype": torch.bfloat16, "gram": True},
    "eigh": {"dtype": torch.float32, "form": "eigh"},
}


def sweep_shape(m: int, n: int, count: int, rounds: int) -> dict:
    g = torch.Generator().manual_seed(m * 7919 + n)
    errs: dict[str, list[float]] = {f: [] for f in FORMS}
    for kind in SPECTRA:
        G = make(m, n, kind, g)
        ref = ns5(G.double(), dtype=torch.float64).float()
        for f, kw in FORMS.items():
            errs[f].append(error(ns5(G, **kw).float(), ref))
    X = torch.randn(count, m, n, generator=g)  # the stack a batched step dualizes (float32 momentum)
    fns = {f: (lambda kw=kw: ns5(X, **kw)) for f, kw in FORMS.items()}
    times: dict[str, list[float]] = {}
    time_shuffled(fns, rounds, cpu_times=times)
    med = {f: statistics.median(times[f]) for f in FORMS}
    base = "bf16" if med["bf16"] <= med["fp32"] else "fp32"
    row = {"shape": [m, n], "aspect": n / m, "baseline": base, "errors": errs, "auto_eigh": auto_eigh("cpu", (m, n))}
    for f in FORMS:
        row[f"{f}_ms"] = 1e3 * med[f]
        row[f"{f}_ratio"] = paired_ratio(times[f], times[base])
        row[f"{f}_err"] = max(errs[f])
    return row


def fit(rows: list[dict], win: float = 0.95) -> dict:
    """Per side, the smallest measured aspect from which eigh / the faster baseline <= ``win`` at every larger one."""
    out = {}
    for m in sorted({r["shape"][0] for r in rows}):
        rs = sorted((r for r in rows if r["shape"][0] == m), key=lambda r: r["aspect"])
        out[str(m)] = next(
            (rs[i]["aspect"] for i in range(len(rs)) if all(r["eigh_ratio"] <= win for r in rs[i:])), None
        )
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sides", default="64,96,128,192,256,384,512")
    ap.add_argument("--aspects", default="1,2,3,4,6,9,16")
    ap.add_argument("--matrices", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--max-side", type=int, default=8192, help="skip shapes whose larger side is above this")
    ap.add_argument("--out", default="benchmarks/results/form_sweep.json")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    for m in (int(x) for x in a.sides.split(",")):
        for asp in (float(x) for x in a.aspects.split(",")):
            n = int(round(m * asp))
            if n > a.max_side:
                continue
            rows.append(sweep_shape(m, n, a.matrices, a.rounds))
            r = rows[-1]
            print(
                f"{m}x{n}: eigh/{r['baseline']} {r['eigh_ratio']:.3f} mixed {r['mixed_ratio']:.3f} "
                f"err eigh {r['eigh_err']:.1e} bf16 {r['bf16_err']:.1e}",
                file=sys.stderr,
            )
    cols = [("shape", "shape", "{}"), ("aspect", "n/m", "{:.1f}"), ("baseline", "faster of bf16/fp32", "{}")]
    cols += [(f"{f}_ms", f"{f} ms", "{:.2f}") for f in FORMS]
    cols += [(f"{f}_ratio", f"{f} / faster", "{:.3f}") for f in ("mixed", "eigh")]
    cols += [(f"{f}_err", f"{f} worst err", "{:.1e}") for f in FORMS]
    cols += [("auto_eigh", "auto: eigh", "{}")]
    print(table(rows, cols))
    fitted = fit(rows)
    print(
        f"device kind {device_kind('cpu')}; smallest aspect with eigh <= 0.95x at every larger one, per side: {fitted}"
    )
    out = {
        "environment": machine(),
        "kind": device_kind("cpu"),
        "command": " ".join(sys.argv),
        "rows": rows,
        "fit": fitted,
    }
    atomic_write_json(a.out, out)
    return out


if __name__ == "__main__":
    main()
