"""Batched spectral steps: one polar call for every same-shape matrix that shares the same settings.

A GPT block holds several matrices of equal shape (4 blocks of 384x1152, 384x384, 1536x384,
384x1536 give four stacks of four). :func:`batched_step` groups the parameters of the spectral
groups of a :class:`~steepest.optim.steepest.SteepestDescent` by (matrix shape, dtype, device,
update settings), stacks their direction sources into a ``(B, m, n)`` tensor, computes every update
with ONE call of :func:`steepest.optim.functional.compute_update` (so one batched polar factor,
``torch.baddbmm`` per Newton-Schulz / Polar Express step, or one batched SVD) and unstacks it.

The math is the per-parameter step's, reused unchanged (DESIGN.md, "math in one place")::

    M_i = direction_source(G_i)          per parameter (momentum buffers stay per parameter)
    U   = compute_update(stack(M_i))     one call; polar(.) acts per matrix over leading dims
    W_i <- (1 - lr_i wd_i) W_i - lr_i U_i  apply_update per parameter

so the batched path gives the per-parameter result up to floating-point rounding of the batched
matmul kernels (tests/test_batched.py bounds the difference against the unbatched path and a
float64 reference). Only groups with ``algorithm="steepest"`` and the spectral geometry
(``norm="spectral"`` or ``"schatten"`` with p = inf) are batched, and a bucket needs at least two
matrices; everything else stays on the per-parameter path.

When it runs: ``SteepestDescent.batch_matrices`` is None by default, which batches parameters on
accelerators only (one kernel launch per bucket instead of per matrix). On CPU, stacking measured
slower than the per-parameter loop (1.11x vs 1.02x torch.optim.Muon's step, GPT-like set,
benchmarks/RESULTS.md, "Core"): CPU GEMMs are already efficient at these sizes and the stack leaves
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

import math

import torch

from steepest.optim import functional as F


def _is_spectral(group: dict) -> bool:
    if group.get("algorithm", "steepest") != "steepest":
        return False
    if group["norm"] == "spectral":
        return True
    return group["norm"] == "schatten" and group["p"] is not None and math.isinf(float(group["p"]))


def _matrix_shape(p: torch.Tensor, tensor_mode: str) -> tuple[int, int] | None:
    """(m, n) of the matrices the update of ``p`` acts on, or None if ``p`` is not a matrix."""
    if p.ndim < 2:
        return None
    if p.ndim == 2 or tensor_mode == "batch":
        return int(p.shape[-2]), int(p.shape[-1])
    return int(p.shape[0]), int(p.numel() // p.shape[0])


def buckets(opt, skip: set[int]) -> list[list[tuple[torch.Tensor, dict]]]:
    """Lists of ``(param, group)`` whose updates can be computed by one batched call (>= 2 each).

    Parameters without a gradient and those in ``skip`` (ids of non-finite gradients) are left out,
    and so are CPU parameters when ``opt.batch_matrices`` is None (auto: accelerators only).
    Two parameters share a bucket when their matrix shape, parameter and gradient dtype, device and
    every setting of ``compute_update`` agree (learning rate and weight decay may differ: they only
    enter ``apply_update``).
    """
    from steepest.optim.steepest import update_kwargs

    table: dict = {}
    for group in opt.param_groups:
        if not _is_spectral(group):
            continue
        settings = repr(sorted(update_kwargs(group).items())) + repr((group["momentum"], group["nesterov"]))
        for p in group["params"]:
            if p.grad is None or id(p) in skip:
                continue
            if p.device.type == "cpu" and getattr(opt, "batch_matrices", True) is None:
                continue  # auto mode: batch on accelerators only (no gain measured on CPU)
            shape = _matrix_shape(p, group["tensor_mode"])
            if shape is None:
                continue
            key = (shape, p.dtype, p.grad.dtype, p.device, settings)
            table.setdefault(key, []).append((p, group))
    return [members for members in table.values() if len(members) >= 2]


def batched_step(opt, skip: set[int]) -> set[int]:
    """Step every parameter that shares a bucket with another; return the ids of those stepped.

    ``opt`` is a :class:`~steepest.optim.steepest.SteepestDescent` (its ``state``,
    ``param_groups`` and ``nonfinite_skipped`` are used exactly as its per-parameter step uses them).
    """
    from steepest.optim.steepest import update_kwargs

    done: set[int] = set()
    for members in buckets(opt, skip):
        group0 = members[0][1]
        m, n = _matrix_shape(members[0][0], group0["tensor_mode"])
        sources = []
        for p, group in members:
            M = F.direction_source(p.grad, opt.state[p], group["momentum"], group["nesterov"])
            sources.append(M.reshape(-1, m, n))
        counts = [s.shape[0] for s in sources]
        kwargs = update_kwargs(group0)
        kwargs["tensor_mode"] = "batch"  # the stack is already a batch of (m, n) matrices
        U = F.compute_update(torch.cat(sources), **kwargs)
        parts = torch.split(U, counts)
        finite = None
        if group0["step_size"] == "dual":
            # The dual norm of a finite M can overflow (see SteepestDescent._param_step): check
            # every member with one synchronisation and never write a non-finite update.
            finite = torch.stack([torch.isfinite(u).all() for u in parts]).tolist()
        for i, ((p, group), u) in enumerate(zip(members, parts)):
            done.add(id(p))
            if finite is not None and not finite[i]:
                state = opt.state[p]
                state["nonfinite_skips"] = state.get("nonfinite_skips", 0) + 1
                opt.nonfinite_skipped += 1
                continue
            F.apply_update(p, u.reshape(p.shape), float(group["lr"]), group["weight_decay"])
    return done


__all__ = ["batched_step", "buckets"]
