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

When it runs: the :class:`~steepest.optim.executors.Batched` executor (the default,
``executor="auto"``) with ``cpu=None`` batches every bucket on accelerators (one kernel launch per bucket instead of per matrix) and, on CPU, buckets of matrices
with at most :data:`CPU_MAX_NUMEL` entries (less those from :data:`CPU_EIGH_MIN_NUMEL` entries that run in the
float32 eigh form). On CPU a small bf16 GEMM costs a fixed ~30 us per call
(32x288 times its transpose: 36 us for 0.6 MFLOP; the oneDNN set-up) on top of its flops, so stacking 2-4 small matrices into one
``baddbmm`` roughly halves their time, while at 384x1152 and above the batched kernels measured no
faster (1.0-1.2x the per-matrix loop; 1 thread, Xeon with AMX, torch 2.13, benchmarks/RESULTS.md).
``Batched(cpu=True)`` batches on every device, ``PerMatrix()`` never.

Example:
    >>> import torch, steepest
    >>> ps = [torch.nn.Parameter(torch.randn(8, 4)) for _ in range(3)]
    >>> opt = steepest.Muon(ps, lr=0.02, executor=steepest.optim.executors.Batched(cpu=True))
    >>> for p in ps: p.grad = torch.randn_like(p)
    >>> opt.step()   # one batched Newton-Schulz call for the three 8x4 matrices
"""

from __future__ import annotations

import torch

from steepest import geometry as geo
from steepest.linalg.precision import auto_eigh
from steepest.optim import functional as F

#: Largest matrix (entries of its matrix view) that the default batches on CPU. Measured ratio
#: batched / per-matrix time for a bucket of 2-4 bf16 NS5 updates (benchmarks/RESULTS.md, "CPU batching
#: threshold"): 0.26-0.71 up to 384x128, 0.60-0.86 at 128x512, 0.75-0.96 at 256x1152 (295k entries),
#: 0.87-1.01 at 384x384, 1.00-1.10 at 256x2304, 1.05-1.07 at 384x1152, 1.14-1.22 at 1536x384.
CPU_MAX_NUMEL = 300_000
#: On CPU, matrices from this many entries whose update runs in the float32 eigh form (``dtype="auto"`` and
#: :data:`steepest.linalg.precision.EIGH_RULE`) are dualized one by one: the ``eigh`` is one LAPACK call per
#: matrix either way, so a stack saves only the fixed cost of two products per matrix, and holds the bucket's
#: float32 stack and eigenvectors at once. The GPT-like set without native bf16 (``STEEPEST_BF16=0``, its four
#: 384 x 384 matrices in the eigh form): batched 0.831x torch.optim.Muon at a 9.06 MiB live peak, one by one
#: 0.841x at 4.52 MiB (torch: 5.16; benchmarks/peers.py). Smaller eigh-form matrices (charlm's 128 x 384 and
#: 128 x 512) keep their buckets: there the fixed costs are a larger share.
CPU_EIGH_MIN_NUMEL = 100_000


def _eigh_form(b: F.Block) -> bool:
    """Does this block's polar factor run in the float32 eigh form (``dtype="auto"``, an iterative method, a
    shape in the device kind's :data:`~steepest.linalg.precision.EIGH_RULE`; the decision ``polar`` makes)?"""
    c = b.cfg
    return (
        isinstance(c.dtype, str)
        and c.dtype == "auto"
        and c.method not in (None, "svd")  # the iterative methods (as Block.source_dtype tells them)
        and auto_eigh(b.param.device, b.view_shape)
    )


def buckets(blocks: list[F.Block], cpu: bool = False) -> list[list[int]]:
    """Indices of blocks whose updates one batched call can compute (>= 2 per bucket).

    Spectral blocks only; on CPU every matrix when ``cpu``, else those with at most
    :data:`CPU_MAX_NUMEL` entries and not eigh-form ones from :data:`CPU_EIGH_MIN_NUMEL` entries
    (accelerator blocks are always batched).
    """
    table: dict = {}
    for i, b in enumerate(blocks):
        if b.norm != "spectral" or b.param.ndim < 2:
            continue
        if b.param.device.type == "cpu" and not cpu:
            n = b.param.numel()
            if n > CPU_MAX_NUMEL or (n >= CPU_EIGH_MIN_NUMEL and _eigh_form(b)):
                continue
        table.setdefault(b.key(), []).append(i)
    return [idx for idx in table.values() if len(idx) >= 2]


def dualize_batched(blocks: list[F.Block], cpu: bool = False, batch: bool = True):
    """A dualizer for the step kernel: one :func:`compute_update` per bucket, the rest one by one.

    With only fixed-step blocks (no finiteness check needed) it is lazy: the updates come in block
    order, each computed when the kernel asks for it, so the kernel applies one (or one bucket's) update
    before the next exists and the step holds one update at a time, not all of them (the GPT-like set
    of benchmarks/peers.py: 19 MiB less peak memory). With :func:`bucket_order` (the kernel's order under
    :class:`~steepest.optim.executors.Batched`) a bucket's members are applied one after the other, so its
    stack is freed before the next matrix is computed. Steps with ``step_size="dual"`` blocks return a
    list (their finiteness is checked with one synchronisation for all). ``batch=False``: no buckets (every
    block dualized alone, lazily: :class:`~steepest.optim.executors.PerMatrix`).
    """
    groups = buckets(blocks, cpu) if batch else []
    if any(b.cfg.step_size == "dual" for b in blocks):
        return F.with_ok(blocks, [u for u, _ in _updates(blocks, groups)])
    return _updates(blocks, groups)


def bucket_order(blocks: list[F.Block], cpu: bool = False) -> list[F.Block]:
    """``blocks`` with each bucket's members moved next to its first member (the rest keep their order).

    The kernel applies the updates in this order, so a bucket's stacked update is freed as soon as its
    members are applied, before the next matrix's update is computed: the step then holds one bucket's
    (or one matrix's) update at a time, not a bucket's stack across every matrix between its members.
    The order of application does not change any parameter's value (each is updated from its own
    update only).
    """
    groups = buckets(blocks, cpu)
    if not groups:
        return blocks
    first = {idx[0]: idx for idx in groups}
    members = {i for idx in groups for i in idx}
    order: list[int] = []
    for i in range(len(blocks)):
        if i in first:
            order.extend(first[i])
        elif i not in members:
            order.append(i)
    return [blocks[i] for i in order]


def _updates(blocks: list[F.Block], groups: list[list[int]]):
    """``(update, True)`` for every block, in block order; a bucket is computed when its first block is
    reached. Nothing here keeps a yielded update referenced while the next one is computed (no loop
    variable holds it), so the kernel's release of an applied update frees it."""
    first = {idx[0]: idx for idx in groups}
    ready: dict = {}
    for i, b in enumerate(blocks):
        if i in first:
            ready.update(_bucket(blocks, first[i]))
        yield (ready.pop(i) if i in ready else _one(b)), True


def _one(b: F.Block):
    """One block's update; a fresh M of the step's own (:attr:`~steepest.optim.functional.Block.M_owned`)
    is normalized in place by the polar iteration."""
    M = b.M
    return F.compute_update(M, overwrite_input=b.M_owned, **b.kwargs)


def _bucket(blocks: list[F.Block], idx: list[int]) -> dict:
    """{block index: update} for one bucket, from one batched compute_update."""
    settings = dict(blocks[idx[0]].kwargs)
    mode, transposed, rb = settings.pop("tensor_mode"), settings.pop("transposed"), settings.pop("row_blocks")
    if not transposed and rb == 1 and all(blocks[i].param.ndim == 2 or mode != "batch" for i in idx):
        return _bucket_direct(blocks, idx, settings, mode)
    return _bucket_views(blocks, idx, settings, mode, transposed, rb)


def _bucket_views(blocks: list[F.Block], idx: list[int], settings: dict, mode: str, transposed: bool, rb: int) -> dict:
    """:func:`_bucket` for any matrix view (transposed, row blocks, 3-D batches): the views of every M,
    concatenated into the stack."""
    views = [geo.matrix_view(blocks[i].M, mode, transposed, rb) for i in idx]
    m, n = views[0].shape[-2:]
    stack = torch.cat([v.reshape(-1, m, n) for v in views])
    shapes = [(blocks[i].M.shape, v.shape, v.numel() // (m * n)) for i, v in zip(idx, views)]
    del views
    for i in idx:
        blocks[i].M = None  # the stack holds them now
    U = F.compute_update(stack, tensor_mode="batch", transposed=False, overwrite_input=True, **settings)
    return {
        i: geo.from_matrix(u.reshape(vs), ms, transposed, rb)
        for i, (ms, vs, _), u in zip(idx, shapes, torch.split(U, [k for _, _, k in shapes]))
    }


def _bucket_direct(blocks: list[F.Block], idx: list[int], settings: dict, mode: str) -> dict:
    """:func:`_bucket` where every block is one (m, n) matrix view that is a reshape of the parameter (no
    transpose, no row blocks): each block writes its M straight into its slice of the stack
    (:meth:`~steepest.optim.functional.Block.write_M`), so no block has an M tensor of its own."""
    first = blocks[idx[0]]
    m, n = first.view_shape[-2:]
    stack = torch.empty((len(idx), m, n), dtype=first.M_dtype, device=first.param.device)
    for k, i in enumerate(idx):
        blocks[i].write_M(stack[k].view(blocks[i].param.shape))
    # the stack is ours: the polar iteration normalizes it in place (one stack-sized buffer less at the peak)
    U = F.compute_update(stack, tensor_mode="batch", transposed=False, overwrite_input=True, **settings)
    return {i: U[k].view(blocks[i].param.shape) for k, i in enumerate(idx)}


__all__ = ["dualize_batched", "bucket_order", "buckets", "CPU_MAX_NUMEL", "CPU_EIGH_MIN_NUMEL"]
