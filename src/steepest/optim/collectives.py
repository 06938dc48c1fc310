"""The collectives of the owner-computes executor (:class:`steepest.optim.executors.OwnerComputes`).

Pure functions over the step kernel's blocks and an executor ``ex`` (its ``process_group``,
``_world()`` and ``step_stats``): owner assignment, shard sizes, and the two ways updates travel
(replicated parameters: one padded ``all_gather``; sharded DTensor parameters: two ``all_to_all``).
The algorithm is described in :mod:`steepest.optim.executors`.
"""

from __future__ import annotations

import heapq
import time
from typing import TypeGuard

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, Shard  # part of torch >= 2.4 (the project needs 2.13)

from steepest.optim import functional as F


def assign_owners(costs: list[float], world_size: int) -> list[int]:
    """Owner rank of each item: greedy LPT (largest cost first, to the least-loaded rank, ties to the
    lowest rank). Deterministic, so every rank computes the same answer without communicating.

    Makespan <= (4/3 - 1/(3W)) OPT (Graham 1969, "Bounds on multiprocessing timing anomalies").
    Example: ``assign_owners([4, 3, 3, 2], 2)`` is ``[0, 1, 1, 0]`` (loads 6 and 6).
    """
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    heap = [(0.0, r) for r in range(world_size)]
    owners = [0] * len(costs)
    for i in sorted(range(len(costs)), key=lambda i: (-costs[i], i)):
        load, r = heapq.heappop(heap)
        owners[i] = r
        heapq.heappush(heap, (load + float(costs[i]), r))
    return owners


def shard_sizes(n: int, world_size: int) -> list[int]:
    """Rows of each rank's shard when ``n`` rows are split like ``torch.chunk`` (DTensor ``Shard``):
    ceil(n / W) each, the last ones smaller or empty. Example: ``shard_sizes(7, 3)`` is ``[3, 3, 1]``,
    ``shard_sizes(2, 3)`` is ``[1, 1, 0]``."""
    chunk = -(-n // world_size) if n else 0
    return [max(0, min(chunk, n - r * chunk)) for r in range(world_size)]


def _is_dtensor(t: object) -> TypeGuard[DTensor]:
    return isinstance(t, DTensor)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def _all_gather(out: torch.Tensor, inp: torch.Tensor, group) -> None:
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    fn(out, inp, group=group)


def check_mesh(ex, b) -> None:
    mesh, pl = b.param.device_mesh, b.param.placements
    ranks = dist.get_process_group_ranks(ex.process_group or dist.group.WORLD)
    if mesh.ndim != 1 or len(pl) != 1 or not isinstance(pl[0], Shard) or mesh.mesh.tolist() != ranks:
        raise ValueError(
            f"{b.name} is a DTensor with placements {pl} on mesh {mesh.mesh.tolist()}: the sharded "
            f"path supports Shard(d) on a 1-D mesh over the optimizer's process group (ranks {ranks}). "
            "Pass process_group=mesh.get_group(), or route the parameter to AdamW."
        )


def compute(ex, b, M: torch.Tensor, dtype) -> tuple[torch.Tensor, bool]:
    t0, c0 = time.perf_counter(), time.thread_time()
    U, ok = F.with_ok([b], [F.compute_update(M, **b.kwargs)])[0]
    ex.step_stats["compute_s"] += time.perf_counter() - t0
    ex.step_stats["compute_cpu_s"] += time.thread_time() - c0  # robust to a busy machine
    return U.to(dtype), ok


def replicated_updates(ex, blocks: list, items: list, rank: int, out: list, dtype) -> None:
    """Owners compute, one padded all_gather shares; every rank applies the same bytes."""
    if not items:
        return
    world = ex._world()[0]
    loads = [sum(blocks[i].param.numel() + 1 for i, o in items if o == r) for r in range(world)]
    width = max(loads)
    send = torch.zeros(width, dtype=dtype)
    off = 0
    for i, o in items:
        if o == rank:
            n = blocks[i].param.numel()
            U, ok = compute(ex, blocks[i], blocks[i].M, dtype)
            send[off : off + n] = U.reshape(-1)
            send[off + n] = 1.0 if ok else 0.0  # one flag per matrix: apply or skip
            off += n + 1
    recv = torch.empty(world * width, dtype=dtype)
    t0 = time.perf_counter()
    _all_gather(recv, send, ex.process_group)
    comm(ex, t0, width * dtype.itemsize, (world - 1) * width * dtype.itemsize)
    offs = [r * width for r in range(world)]
    for i, o in items:
        p = blocks[i].param
        out[i] = (recv[offs[o] : offs[o] + p.numel()].view(p.shape), bool(recv[offs[o] + p.numel()] != 0))
        offs[o] += p.numel() + 1


def comm(ex, t0: float, sent: int, received: int) -> None:
    ex.step_stats["comm_s"] += time.perf_counter() - t0
    ex.step_stats["sent_bytes"] += sent
    ex.step_stats["received_bytes"] += received


def sharded_updates(ex, blocks: list, items: list, world: int, rank: int, out: list, dtype) -> None:
    """all_to_all shards of M to owners, owners dualize full matrices, all_to_all shards of U back."""
    if not items:
        return
    geom = []  # per item: shard dim, rows of every rank's shard, numel of one row slice
    for i, _o in items:
        p = blocks[i].param
        d = p.placements[0].dim
        sizes = shard_sizes(p.shape[d], world)
        if sizes[rank] != p.to_local().shape[d]:
            raise ValueError(
                f"{blocks[i].name}: local shard has {p.to_local().shape[d]} rows on dim {d}, "
                f"expected torch.chunk's {sizes[rank]}; only even-chunk Shard layouts are supported"
            )
        geom.append((d, sizes, p.numel() // max(p.shape[d], 1)))
    mine = [k for k, (_, o) in enumerate(items) if o == rank]
    # forward: my shard of every M to its owner
    send: list[list[torch.Tensor]] = [[] for _ in range(world)]
    for i, o in items:
        send[o].append(_local(blocks[i].M).reshape(-1).to(dtype))
    in_splits = [sum(x.numel() for x in s) for s in send]
    out_splits = [sum(geom[k][1][s] * geom[k][2] for k in mine) for s in range(world)]
    recv = torch.empty(sum(out_splits), dtype=dtype)
    t0 = time.perf_counter()
    dist.all_to_all_single(
        recv,
        torch.cat([x for s in send for x in s]) if any(in_splits) else torch.empty(0, dtype=dtype),
        out_splits,
        in_splits,
        group=ex.process_group,
    )
    comm(ex, t0, sum(in_splits) * dtype.itemsize, sum(out_splits) * dtype.itemsize)
    pieces = [list(c.split([geom[k][1][s] * geom[k][2] for k in mine])) for s, c in enumerate(recv.split(out_splits))]
    back: list[list[torch.Tensor]] = [[] for _ in range(world)]
    flags = []
    for n, k in enumerate(mine):
        b = blocks[items[k][0]]
        d, sizes, _row = geom[k]
        shapes = [b.param.shape[:d] + (sizes[s],) + b.param.shape[d + 1 :] for s in range(world)]
        full = torch.cat([pieces[s][n].view(shapes[s]) for s in range(world)], dim=d)
        U, ok = compute(ex, b, full.to(b.M.dtype), dtype)
        flags.append(1.0 if ok else 0.0)
        for s, part in enumerate(U.split(sizes, dim=d)):
            back[s].append(part.reshape(-1))
    for s in range(world):
        back[s].append(torch.tensor(flags, dtype=dtype))
    # backward: every rank's shard of every U (then one flag per owned matrix) from its owner
    in2 = [sum(x.numel() for x in b) for b in back]
    out2 = [sum(geom[k][1][rank] * geom[k][2] + 1 for k, (_, o) in enumerate(items) if o == r) for r in range(world)]
    recv2 = torch.empty(sum(out2), dtype=dtype)
    t0 = time.perf_counter()
    dist.all_to_all_single(recv2, torch.cat([x for b in back for x in b]), out2, in2, group=ex.process_group)
    comm(ex, t0, sum(in2) * dtype.itemsize, sum(out2) * dtype.itemsize)
    chunks = recv2.split(out2)
    for r in range(world):
        ks = [k for k, (_, o) in enumerate(items) if o == r]
        parts = chunks[r].split([geom[k][1][rank] * geom[k][2] for k in ks] + [len(ks)])
        for n, k in enumerate(ks):
            p = blocks[items[k][0]].param
            local = parts[n].view(p.to_local().shape)
            U = DTensor.from_local(local, p.device_mesh, p.placements, shape=p.shape, stride=p.stride())
            out[items[k][0]] = (U, bool(parts[-1][n] != 0))


__all__ = ["assign_owners", "shard_sizes", "replicated_updates", "sharded_updates", "check_mesh"]
