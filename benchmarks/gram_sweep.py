"""The mixed-precision Gram form of Newton-Schulz against the standard bf16 form, per shape, paired (issue 22).

Per shape: ``polar(G, "newton_schulz", 5, dtype=torch.bfloat16)`` in the standard form (``gram=False``,
torch.optim.Muon's arithmetic) and in the mixed Gram form (``gram=True``: bf16 m x n products, float32 m x m
side, restarted after ``polar_factor.GRAM_MIXED_RESTART`` steps), on ``--matrices`` stacked matrices of the
shape (a batched step's stack), timed in interleaved rounds (:func:`_util.time_shuffled`, CPU time under one
torch thread), and the error of each against the float64 NS5 reference (relative Frobenius, scale-free as in
benchmarks/peers.py) on four spectra: Gaussian, log-spaced 1..1e-3 and 1..1e-5, and a rank-4 signal over
1e-3 noise. Reported: both medians, mixed / standard (median of per-round ratios), each form's worst error,
the worst per-spectrum error ratio mixed / standard, what ``dtype="auto"`` picks on this machine (``precision.auto_gram``), and the :class:`precision.GramRule`
the rows support (smallest aspect from which mixed is faster by >= 5% at every larger aspect of a side).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/gram_sweep.py --threads 1
    PYTHONPATH=src .venv/bin/python benchmarks/gram_sweep.py --threads 1 --sides 128,256 --aspects 3,4,6,9
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
from steepest.linalg.precision import auto_gram, device_kind

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


def sweep_shape(m: int, n: int, count: int, rounds: int) -> dict:
    g = torch.Generator().manual_seed(m * 7919 + n)
    errs: dict[str, list[float]] = {"standard": [], "mixed": []}
    for kind in SPECTRA:
        G = make(m, n, kind, g)
        ref = ns5(G.double(), dtype=torch.float64).float()
        errs["standard"].append(error(ns5(G, dtype=torch.bfloat16, gram=False).float(), ref))
        errs["mixed"].append(error(ns5(G, dtype=torch.bfloat16, gram=True).float(), ref))
    X = torch.randn(count, m, n, generator=g).to(torch.bfloat16)  # the stack a batched bf16 step dualizes
    fns = {
        "standard": lambda: ns5(X, dtype=torch.bfloat16, gram=False),
        "mixed": lambda: ns5(X, dtype=torch.bfloat16, gram=True),
    }
    times: dict[str, list[float]] = {}
    time_shuffled(fns, rounds, cpu_times=times)
    return {
        "shape": [m, n],
        "aspect": n / m,
        "standard_ms": 1e3 * statistics.median(times["standard"]),
        "mixed_ms": 1e3 * statistics.median(times["mixed"]),
        "ratio": paired_ratio(times["mixed"], times["standard"]),
        "err_standard": max(errs["standard"]),
        "err_mixed": max(errs["mixed"]),
        "err_ratio": max(a / max(b, 1e-30) for a, b in zip(errs["mixed"], errs["standard"])),
        "errors": errs,
        "auto_mixed": auto_gram("cpu", (m, n)),
    }


def fit(rows: list[dict], win: float = 0.95) -> dict:
    """Per side, the smallest measured aspect from which mixed / standard <= ``win`` at every larger one."""
    out = {}
    for m in sorted({r["shape"][0] for r in rows}):
        rs = sorted((r for r in rows if r["shape"][0] == m), key=lambda r: r["aspect"])
        ok = None
        for i in range(len(rs)):
            if all(r["ratio"] <= win for r in rs[i:]):
                ok = rs[i]["aspect"]
                break
        out[str(m)] = ok
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--sides", default="128,192,256,384,512")
    ap.add_argument("--aspects", default="2,3,4,4.5,6,9,16")
    ap.add_argument("--matrices", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--max-side", type=int, default=8192, help="skip shapes whose larger side is above this")
    ap.add_argument("--out", default="benchmarks/results/gram_sweep.json")
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
                f"{m}x{n}: mixed/standard {r['ratio']:.3f} err {r['err_mixed']:.2e} vs {r['err_standard']:.2e}",
                file=sys.stderr,
            )
    cols = [
        ("shape", "shape", "{}"),
        ("aspect", "n/m", "{:.1f}"),
        ("standard_ms", "standard ms", "{:.2f}"),
        ("mixed_ms", "mixed ms", "{:.2f}"),
        ("ratio", "mixed/std", "{:.3f}"),
        ("err_standard", "err std", "{:.2e}"),
        ("err_mixed", "err mixed", "{:.2e}"),
        ("err_ratio", "worst err mixed/std", "{:.2f}"),
        ("auto_mixed", "auto mixed", "{}"),
    ]
    print(table(rows, cols))
    fitted = fit(rows)
    print(
        f"device kind {device_kind('cpu')}; smallest aspect with mixed <= 0.95x at every larger one, per side: {fitted}"
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
