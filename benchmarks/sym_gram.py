"""Symmetric Gram products on CPU: is computing 3 of the 4 blocks of X X^T faster than the full product?

Newton-Schulz's A = X X^T (and A^2 = A A^T) is symmetric, so half of it determines the rest; on GPUs a SYRK-style
kernel makes one NS step 1.34-1.52x faster (issue 22). torch exposes no SYRK, so the only CPU form is blocked:
split X's rows in halves X1, X2, compute X1 X1^T, X1 X2^T, X2 X2^T as ONE batched product (3/4 of the flops)
and mirror the off-diagonal block. This script times, per stacked shape of the ``benchmarks/peers.py`` sets
(bf16, the dtype the NS step runs in where the CPU has native bf16, else float32), the full product
``torch.bmm(X, X.mT, out=A)`` against the blocked one, in interleaved rounds on one thread (thread CPU time,
median), and checks the two give the same matrix (max |difference|).

A lever goes into the step only where it is faster on the shapes the step sees; the result is recorded in
``benchmarks/RESULTS.md`` either way.

Usage::

    .venv/bin/python benchmarks/sym_gram.py                 # ~1 minute on 1 core
    .venv/bin/python benchmarks/sym_gram.py --rounds 5      # quicker
Writes benchmarks/results/sym_gram.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics

import torch

import _util  # noqa: F401  (puts src/ on sys.path)
from _util import ROOT, machine, table, time_interleaved
from steepest.app.runs import atomic_write_json
from steepest.linalg.precision import auto_dtype

#: (stack size, m, n) with m <= n: the wide orientation NS works on; the stacks of peers.py's sets (charlm,
#: GPT-like, conv) plus two larger squares.
SHAPES = (
    (3, 128, 128),
    (3, 128, 384),
    (6, 128, 512),
    (4, 384, 384),
    (4, 384, 1152),
    (8, 384, 1536),
    (3, 64, 576),
    (3, 128, 1152),
    (3, 256, 2304),
    (2, 512, 512),
    (1, 1024, 1024),
)


def full_gram(X: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """A = X X^T for a stack X (b, m, n): one batched product."""
    return torch.bmm(X, X.mT, out=out)


def blocked_gram(X: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """The same A from 3 of its 4 (m/2 x m/2) blocks, computed as one batched product of the stacked halves,
    and the lower off-diagonal block mirrored from the upper one."""
    b, m, _ = X.shape
    h = m // 2
    X1, X2 = X[:, :h], X[:, h:]
    P = torch.bmm(torch.cat([X1, X1, X2]), torch.cat([X1, X2, X2]).mT)
    out[:, :h, :h] = P[:b]
    out[:, :h, h:] = P[b : 2 * b]
    out[:, h:, h:] = P[2 * b :]
    out[:, h:, :h] = P[b : 2 * b].mT
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sym_gram.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = auto_dtype(torch.device("cpu"))
    rows = []
    for b, m, n in SHAPES:
        X = torch.randn(b, m, n).to(dtype)
        A_full, A_block = torch.empty(b, m, m, dtype=dtype), torch.empty(b, m, m, dtype=dtype)
        cpu: dict[str, list[float]] = {}
        time_interleaved(
            {
                "full": lambda X=X, A=A_full: full_gram(X, A),
                "blocked": lambda X=X, A=A_block: blocked_gram(X, A),
            },
            args.rounds,
            cpu_times=cpu,
        )
        ms = {k: 1e3 * statistics.median(v) for k, v in cpu.items()}
        diff = (full_gram(X, A_full).float() - blocked_gram(X, A_block).float()).abs().max().item()
        rows.append(
            dict(
                shape=f"{b} x {m}x{n}",
                full_ms=ms["full"],
                blocked_ms=ms["blocked"],
                ratio=ms["blocked"] / ms["full"],
                max_diff=diff,
            )
        )
    cols = [
        ("shape", "stack x shape", "{}"),
        ("full_ms", f"full X X^T ({str(dtype).split('.')[-1]}) ms", "{:.3f}"),
        ("blocked_ms", "3 of 4 blocks ms", "{:.3f}"),
        ("ratio", "blocked / full", "{:.2f}"),
        ("max_diff", "max |diff|", "{:.1e}"),
    ]
    print(table(rows, cols))
    atomic_write_json(
        args.out,
        {"dtype": str(dtype), "rows": rows, "machine": machine(), "command": "benchmarks/sym_gram.py", **vars(args)},
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
