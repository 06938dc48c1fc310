"""Accuracy and cost of the sketched norm estimates against the exact SVD (steepest.linalg.estimate).

Spectra (gradient-like): "spike" = rank-16 signal + isotropic Gaussian noise (a minibatch gradient),
"power" = singular values i^-1 (heavy-tailed decay), "gauss" = pure Gaussian noise (Marchenko-Pastur,
no spectral gap: the hard case for power iteration). Exact cost = one torch.linalg.svdvals (what
steepest.dual_norm / matrix_norm use). Goal: within 5% at <= 10% of the exact cost.

Run: .venv/bin/python benchmarks/estimate.py   (writes benchmarks/results/estimate.json)
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

from steepest.app.runs import atomic_write_json, environment
from steepest.linalg.estimate import nuclear_norm_estimate, spectral_norm_estimate


def make(m, n, kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "gauss":
        return torch.randn(m, n, generator=g)
    if kind == "spike":
        S = torch.randn(m, 16, generator=g) @ torch.randn(16, n, generator=g)
        return S * 2 / n**0.5 + 0.05 * torch.randn(m, n, generator=g)
    k = min(m, n)
    U = torch.linalg.qr(torch.randn(m, k, generator=g)).Q
    V = torch.linalg.qr(torch.randn(n, k, generator=g)).Q
    return (U * torch.arange(1, k + 1).float() ** -1.0) @ V.T


def median_time(f, reps):
    """(result, median CPU seconds) over ``reps`` calls after one warm-up; CPU time (time.process_time)
    because the box is shared: wall time swings several-fold with other jobs, CPU time much less."""
    f()
    ts = []
    for _ in range(reps):
        t = time.process_time()
        out = f()
        ts.append(time.process_time() - t)
    return out, statistics.median(ts)


def main() -> None:
    torch.set_num_threads(1)
    rows = []
    for shape in [(2048, 2048), (768, 3072)]:
        for kind in ("spike", "power", "gauss"):
            A = make(*shape, kind)
            s, t_exact = median_time(lambda A=A: torch.linalg.svdvals(A), 3)
            op_err, nuc_err, t_op, t_nuc = [], [], [], []
            for seed in range(3):
                gen = lambda seed=seed: torch.Generator().manual_seed(seed)  # noqa: E731
                op, t1 = median_time(lambda A=A, gen=gen: spectral_norm_estimate(A, generator=gen()), 3)
                nuc, t2 = median_time(lambda A=A, gen=gen: nuclear_norm_estimate(A, generator=gen()), 3)
                op_err.append(abs(float(op / s[0]) - 1))
                nuc_err.append(abs(float(nuc / s.sum()) - 1))
                t_op.append(t1)
                t_nuc.append(t2)
            row = dict(
                shape=f"{shape[0]}x{shape[1]}",
                spectrum=kind,
                exact_s=t_exact,
                op_max_rel_err=max(op_err),
                op_cost=statistics.median(t_op) / t_exact,
                nuc_max_rel_err=max(nuc_err),
                nuc_cost=statistics.median(t_nuc) / t_exact,
            )
            row["meets_goal"] = (
                row["op_max_rel_err"] <= 0.05
                and row["nuc_max_rel_err"] <= 0.05
                and row["op_cost"] <= 0.10
                and row["nuc_cost"] <= 0.10
            )
            rows.append(row)
            print(
                f"{row['shape']:>10} {kind:>6}  exact {t_exact * 1e3:8.1f} ms | op err {row['op_max_rel_err']:.4f} "
                f"cost {row['op_cost'] * 100:5.1f}% | nuc err {row['nuc_max_rel_err']:.4f} cost {row['nuc_cost'] * 100:5.1f}%"
                f" | goal {'yes' if row['meets_goal'] else 'NO'}",
                flush=True,
            )
    out = Path(__file__).parent / "results" / "estimate.json"
    atomic_write_json(
        out,
        {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "environment": environment(),
            "defaults": {
                "spectral": "iters=4, block=4",
                "nuclear": "rank=16, oversample=8, power_iters=1, probes=4, lanczos_steps=12",
            },
            "rows": rows,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
