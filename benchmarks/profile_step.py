"""cProfile of 50 steepest.Muon steps on a small GPT-like parameter set: where the Python time of a step goes.

4 blocks of d=64 (64x192, 64x64, 256x64, 64x256 matrices on Muon, float32 Newton-Schulz, the default
executor) plus 8 vectors on AdamW, one torch thread, 5 warm-up steps. Prints the 35 most expensive
functions by cumulative time, then every call of the per-step settings work that issue 18 removed
(``check_settings``, ``Block.settings``, ``repr``, ``check_hyperparameters``) or added in its place
(``StepSettings`` lookups, the snapshot of a group, ``check_lr_wd``).

Usage::

    PYTHONPATH=src .venv/bin/python benchmarks/profile_step.py
"""

from __future__ import annotations

import cProfile
import io
import math
import pstats
import time

import torch

import _util  # noqa: F401  (puts src/ on sys.path)
import steepest

torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
d = 64
shapes = [(d, 3 * d), (d, d), (4 * d, d), (d, 4 * d)] * 4
ps = [torch.nn.Parameter(torch.randn(m, n, generator=g) / math.sqrt(n)) for m, n in shapes]
vec = [torch.nn.Parameter(torch.zeros(d)) for _ in range(8)]
for p in ps + vec:
    p.grad = torch.randn(p.shape, generator=g) * 1e-2
opt = steepest.Muon([dict(params=ps), dict(params=vec, algorithm="adamw")], lr=0.02, weight_decay=0.1, dtype="float32")
for _ in range(5):
    opt.step()
prof = cProfile.Profile()
t0 = time.perf_counter()
prof.enable()
for _ in range(50):
    opt.step()
prof.disable()
print(f"50 steps: {time.perf_counter() - t0:.3f} s (profiled)")
for restrict in (35, "check_settings|settings|repr|check_hyperparameters|snapshot|check_lr_wd|batch_key|update_kwargs"):
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(restrict)
    print(out.getvalue())
