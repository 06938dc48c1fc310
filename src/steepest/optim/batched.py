"""Batched spectral steps: one polar call for every same-shape matrix that shares the same settings.

A GPT block holds several matrices of equal shape (4 blocks of 384x1152, 384x384, 1536x384,
384x1536 give four stacks of four). :func:`dualize_batched` is a dualizer for the step kernel
(:func:`steepest.optim.functional.steepest_step`): it groups the kernel's blocks by
:meth:`~steepest.optim.functional.Block.key` (matrix-view shape, dtype, device, update settings),
stacks their direction sources into a ``(B, m, n)`` tensor, computes every update with ONE call of
:func:`steepest.optim.functional.compute_update` (so one batched polar factor, ``torch.baddbmm``
per Newton-Schulz / Polar Express step, or one batched SVD) and unstacks it. Momentum, decay and
the update stay the kernel's, per parameter; only the grouping of the dualize calls changes, so the
batched path gives the per-parameter result up to floating-point rounding of the batched matmul
kernels (tests/test_batched.py bounds the difference against the unbatched path and a float64
reference). Only blocks in the spectral geometry (``norm="spectral"`` or ``"schatten"`` with
p = inf) are batched, whatever chose it (a group, or the adaptive optimizer), and a bucket needs at
least two matrices; everything else is dualized one by one.

When it runs: ``SteepestDescent.batch_matrices`` is None by default, which batches parameters on
accelerators only (one kernel launch per bucket instead of per matrix). On CPU, stacking measured
slower than the per-parameter loop (1.11x vs 1.02x torch.optim.Muon's step, GPT-like set,
benchmarks/RESULTS.md): CPU GEMMs are already efficient at these sizes and the stack leaves
cache. ``True`` batches on every device, ``False`` never.

Example:
    >>> import torch, steepest
    >>> ps = [torch.nn.Parameter(torch.randn(8, 4)) for _ in range(3)]
    >>> opt = steepest.Muon(ps, lr=0.02)
    >>> opt.batch_matrices = True   # default None batches on accelerators only
    >>> for p in ps: p.grad = torch.randn_like(p)
    >>> opt.step()   # one batched Newton-Schulz call for the three 8x4 matrices
"""

from __future__ import annotations

import torch

from steepest import geometry as geo
from steepest.optim import functional as F


def buckets(blocks: list[F.Block], cpu: bool = False) -> list[list[int]]:
    """Indices of blocks whose updates one batched call can compute (>= 2 per bucket).

    Spectral blocks only; CPU blocks only when ``cpu`` (the default batches accelerators only).
    """
    table: dict = {}
    for i, b in enumerate(blocks):
        if b.norm != "spectral" or b.param.ndim < 2 or (b.param.device.type == "cpu" and not cpu):
            continue
        table.setdefault(b.key(), []).append(i)
    return [idx for idx in table.values() if len(idx) >= 2]


def dualize_batched(blocks: list[F.Block], cpu: bool = False) -> list[tuple[torch.Tensor, bool]]:
    """A dualizer for the step kernel: one :func:`compute_update` per bucket, the rest one by one."""
    out: list = [None] * len(blocks)
    for idx in buckets(blocks, cpu):
        settings = blocks[idx[0]].settings()
        mode, transposed = settings.pop("tensor_mode"), settings.pop("transposed")
        views = [geo.matrix_view(blocks[i].M, mode, transposed) for i in idx]
        m, n = views[0].shape[-2:]
        stack = torch.cat([v.reshape(-1, m, n) for v in views])
        U = F.compute_update(stack, tensor_mode="batch", transposed=False, **settings)
        for i, v, u in zip(idx, views, torch.split(U, [v.numel() // (m * n) for v in views])):
            out[i] = geo.from_matrix(u.reshape(v.shape), blocks[i].M.shape, transposed)
    rest = [i for i, u in enumerate(out) if u is None]
    for i in rest:
        out[i] = F.compute_update(blocks[i].M, **blocks[i].settings())
    return F.with_ok(blocks, out)


__all__ = ["dualize_batched", "buckets"]
