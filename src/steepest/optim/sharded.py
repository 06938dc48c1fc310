"""torch.distributed for every steepest optimizer: each matrix is dualized once, on its owner rank.

The step of :class:`~steepest.optim.steepest.SteepestDescent` has three stages per matrix W
(:mod:`steepest.optim.functional`): 1. the direction source M (momentum), 2. the update
U = scale * dualize(M) (an SVD or Newton-Schulz: O(m n min(m, n)) flops), 3. W <- (1 - lr wd) W - lr U.
With a process group of W ranks, stages 1 and 3 run on every rank (so momentum and weights live
everywhere and checkpoint like any optimizer state), and stage 2 runs once per matrix, on an owner
chosen by greedy longest-processing-time scheduling on the cost m n min(m, n) (Graham 1969: makespan
<= 4/3 of the best). The results are shared in one collective per dtype:

* replicated parameters (plain tensors, e.g. under DDP, whose gradients are already all-reduced):
  every owner packs its updates in one buffer, ``all_gather`` gives every rank every update, and
  every rank applies the same bytes, so replicas stay bit-identical;
* sharded parameters (DTensor ``Shard(d)`` on a 1-D mesh, e.g. FSDP2 ``fully_shard``): one
  ``all_to_all`` sends every rank's shard of M to the owner, the owner dualizes the full matrix, and a
  second ``all_to_all`` returns to each rank its shard of U (uneven and empty shards included).

Entrywise geometries (frobenius, linf) on replicated parameters and AdamW-routed groups cost less to
compute than to send, so they run locally on every rank. Decisions are global: one all-reduce per
step counts, for every parameter, the ranks holding a gradient, a non-finite gradient, or an invalid
(sparse/complex) one, so no rank ever waits in a collective alone (REFERENCE.md section 5, item 3).

API: ``DistributedSteepest(params, ..., process_group=None)`` (a :class:`SteepestDescent`), or
``steepest.distributed(opt)`` for any recipe (Muon, SpecGD, ...). Without an initialised process
group (or with one rank) both step exactly like the wrapped optimizer.

Example:
    >>> import steepest, torch
    >>> model = torch.nn.Linear(8, 4)                 # wrapped in DDP or fully_shard in real use
    >>> opt = steepest.distributed(steepest.Muon(steepest.param_groups(model), lr=0.02))
"""

from __future__ import annotations

import heapq
import math
import time

import torch
import torch.distributed as dist

from steepest.norms import ENTRYWISE
from steepest.optim import functional as F
from steepest.optim.steepest import NonFiniteGradientError, SteepestDescent, update_kwargs

try:  # torch.distributed.tensor is part of torch >= 2.4; keep the module importable without it
    from torch.distributed.tensor import DTensor, Shard
except ImportError:  # pragma: no cover
    DTensor, Shard = (), ()

PARTIAL_GRADS = ("average", "skip", "raise")


def dualize_cost(shape: tuple[int, ...], norm: str = "spectral", tensor_mode: str = "flatten") -> float:
    """Work of one dualization, up to a constant: b m n min(m, n) for a (b x) m x n matrix view.

    This is the flop count of an SVD or of Newton-Schulz on the smaller Gram matrix; entrywise norms
    cost m n. Example: ``dualize_cost((384, 1536))`` is 384 * 1536 * 384.
    """
    numel = math.prod(shape)
    if norm in ENTRYWISE or len(shape) < 2:
        return float(numel)
    if len(shape) > 2 and tensor_mode == "batch":
        m, n = shape[-2], shape[-1]
    else:
        m, n = shape[0], numel // max(shape[0], 1)
    return float(numel * min(m, n))


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


def _is_dtensor(t) -> bool:
    return bool(DTensor) and isinstance(t, DTensor)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if _is_dtensor(t) else t


def _all_gather(out: torch.Tensor, inp: torch.Tensor, group) -> None:
    fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
    fn(out, inp, group=group)


class _DistributedStep:
    """The distributed ``step``; mixed into a :class:`SteepestDescent` subclass (see the module doc)."""

    def _setup_distributed(self, process_group, partial_grads: str) -> None:
        if partial_grads not in PARTIAL_GRADS:
            raise ValueError(f"partial_grads must be one of {PARTIAL_GRADS}, got {partial_grads!r}")
        self.process_group = process_group
        self.partial_grads = partial_grads
        self.partial_skipped = 0
        self.last_owners: dict[str, int] = {}
        self.step_stats: dict[str, float] = {}

    def _world(self) -> tuple[int, int]:
        if not (dist.is_available() and dist.is_initialized()):
            return 1, 0
        return dist.get_world_size(self.process_group), dist.get_rank(self.process_group)

    # ------------------------------------------------------------------ global decisions
    def _decide(self, entries: list, world: int) -> list:
        """One all-reduce of per-parameter counts -> the gradient each parameter steps with (or None)."""
        flags = torch.zeros(3, len(entries), dtype=torch.int64)  # has grad, non-finite, invalid
        local = []
        for i, (_, _, _, p) in enumerate(entries):
            if p.grad is None:
                continue
            flags[0, i] = 1
            if p.grad.is_sparse or p.grad.is_complex():
                flags[2, i] = 1
            else:
                local.append((i, _local(p.grad)))
        if local:
            flags[1, [i for i, _ in local]] = (~torch.stack([torch.isfinite(g).all() for _, g in local])).long()
        dist.all_reduce(flags, group=self.process_group)
        names = lambda idx: ", ".join(self._name(entries[i][0], entries[i][1]) for i in idx)  # noqa: E731
        invalid = flags[2].nonzero().flatten().tolist()
        if invalid:
            raise ValueError(f"sparse or complex gradient for {names(invalid)} on some rank: steepest needs "
                             "dense real gradients")
        bad = flags[1].nonzero().flatten().tolist()
        if bad and self.nonfinite == "raise":
            raise NonFiniteGradientError(
                f"non-finite gradient (NaN or Inf) in {names(bad)} on some rank; no parameter was changed. "
                "Lower the learning rate, clip gradients, or pass nonfinite='skip' to skip such steps.")
        partial = [i for i in range(len(entries)) if 0 < flags[0, i] < world and i not in bad]
        if partial and self.partial_grads == "raise":
            raise ValueError(f"{names(partial)} have a gradient on some ranks only; synchronise gradients (DDP "
                             "with find_unused_parameters=True) or pass partial_grads='average' or 'skip'")
        for i in bad:
            st = self.state[entries[i][3]]
            st["nonfinite_skips"] = st.get("nonfinite_skips", 0) + 1
        self.nonfinite_skipped += len(bad)
        grads = [p.grad if flags[0, i] == world and i not in bad else None for i, (*_, p) in enumerate(entries)]
        if partial and self.partial_grads == "skip":
            self.partial_skipped += len(partial)
        elif partial:  # "average": what DDP(find_unused_parameters=True) computes; zero shards when sharded
            rep = [i for i in partial if not _is_dtensor(entries[i][3])]
            for i in partial:
                p = entries[i][3]
                grads[i] = p.grad.clone() if p.grad is not None else torch.zeros_like(p)
            if rep:
                flat = torch.cat([grads[i].reshape(-1).double() for i in rep])
                dist.all_reduce(flat, group=self.process_group)
                flat /= world
                for i, g in zip(rep, flat.split([grads[i].numel() for i in rep])):
                    grads[i] = g.view_as(grads[i]).to(grads[i].dtype)
        return grads

    # ------------------------------------------------------------------ stepping
    @torch.no_grad()
    def step(self, closure=None):
        """Take one step on every rank (a collective: every rank of the group must call it)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        world, rank = self._world()
        if world == 1:  # exactly the wrapped optimizer's step (without running its step hooks twice)
            base = super().step
            base = getattr(base, "__func__", base)
            base = base.__wrapped__ if getattr(base, "hooked", False) else base
            base(self)  # the closure ran above
            return loss
        entries = [(gi, j, g, p) for gi, g in enumerate(self.param_groups) for j, p in enumerate(g["params"])]
        grads = self._decide(entries, world)
        owned, t0 = [], time.perf_counter()
        for i, (gi, j, group, p) in enumerate(entries):
            if grads[i] is None:
                continue
            sharded = _is_dtensor(p)
            if group["algorithm"] == "adamw" or (group["norm"] in ENTRYWISE and not sharded):
                self._param_step(p, grads[i], self.state[p], group, float(group["lr"]))
                continue
            if sharded:
                self._check_mesh(p, gi, j)
            M = F.direction_source(grads[i], self.state[p], group["momentum"], group["nesterov"])
            owned.append((gi, j, group, p, M))
        owners = assign_owners([dualize_cost(tuple(e[3].shape), e[2]["norm"], e[2]["tensor_mode"]) for e in owned],
                               world)
        self.last_owners = {self._name(gi, j): o for (gi, j, *_), o in zip(owned, owners)}
        self.step_stats = dict(local_s=time.perf_counter() - t0, compute_s=0.0, compute_cpu_s=0.0, comm_s=0.0,
                               sent_bytes=0, received_bytes=0, owned=owners.count(rank), matrices=len(owned))
        for dtype in sorted({e[3].dtype for e in owned}, key=str):
            items = [(e, o) for e, o in zip(owned, owners) if e[3].dtype == dtype]
            self._replicated([x for x in items if not _is_dtensor(x[0][3])], world, rank, dtype)
            self._sharded([x for x in items if _is_dtensor(x[0][3])], world, rank, dtype)
        return loss

    def _check_mesh(self, p, gi: int, j: int) -> None:
        mesh, pl = p.device_mesh, p.placements
        ranks = dist.get_process_group_ranks(self.process_group or dist.group.WORLD)
        if mesh.ndim != 1 or len(pl) != 1 or not isinstance(pl[0], Shard) or mesh.mesh.tolist() != ranks:
            raise ValueError(
                f"{self._name(gi, j)} is a DTensor with placements {pl} on mesh {mesh.mesh.tolist()}: the sharded "
                f"path supports Shard(d) on a 1-D mesh over the optimizer's process group (ranks {ranks}). "
                "Pass process_group=mesh.get_group(), or route the parameter to AdamW.")

    def _apply(self, p, U: torch.Tensor, group: dict, ok: bool) -> None:
        if not ok:  # the dual norm overflowed on the owner: skipped on every rank, like the local step
            st = self.state[p]
            st["nonfinite_skips"] = st.get("nonfinite_skips", 0) + 1
            self.nonfinite_skipped += 1
            return
        F.apply_update(p, U, float(group["lr"]), group["weight_decay"])

    def _compute(self, group: dict, M: torch.Tensor, dtype) -> tuple[torch.Tensor, bool]:
        t0, c0 = time.perf_counter(), time.thread_time()
        U = F.compute_update(M, **update_kwargs(group))
        ok = group["step_size"] != "dual" or bool(torch.isfinite(U).all())
        self.step_stats["compute_s"] += time.perf_counter() - t0
        self.step_stats["compute_cpu_s"] += time.thread_time() - c0  # robust to a busy machine
        return U.to(dtype), ok

    def _replicated(self, items: list, world: int, rank: int, dtype) -> None:
        """Owners compute, one padded all_gather shares; every rank applies the same bytes."""
        if not items:
            return
        loads = [sum(e[3].numel() + 1 for e, o in items if o == r) for r in range(world)]
        width = max(loads)
        send = torch.zeros(width, dtype=dtype)
        off = 0
        for (gi, j, group, p, M), o in items:
            if o == rank:
                U, ok = self._compute(group, M, dtype)
                send[off:off + p.numel()] = U.reshape(-1)
                send[off + p.numel()] = 1.0 if ok else 0.0  # one flag per matrix: apply or skip
                off += p.numel() + 1
        recv = torch.empty(world * width, dtype=dtype)
        t0 = time.perf_counter()
        _all_gather(recv, send, self.process_group)
        self._comm(t0, width * dtype.itemsize, (world - 1) * width * dtype.itemsize)
        offs = [r * width for r in range(world)]
        for (gi, j, group, p, M), o in items:
            U = recv[offs[o]:offs[o] + p.numel()].view(p.shape)
            self._apply(p, U, group, bool(recv[offs[o] + p.numel()] != 0))
            offs[o] += p.numel() + 1

    def _comm(self, t0: float, sent: int, received: int) -> None:
        self.step_stats["comm_s"] += time.perf_counter() - t0
        self.step_stats["sent_bytes"] += sent
        self.step_stats["received_bytes"] += received

    def _sharded(self, items: list, world: int, rank: int, dtype) -> None:
        """all_to_all shards of M to owners, owners dualize full matrices, all_to_all shards of U back."""
        if not items:
            return
        geo = []  # per item: shard dim, rows of every rank's shard, numel of one row slice
        for (gi, j, group, p, M), o in items:
            d = p.placements[0].dim
            sizes = shard_sizes(p.shape[d], world)
            if sizes[rank] != p.to_local().shape[d]:
                raise ValueError(f"{self._name(gi, j)}: local shard has {p.to_local().shape[d]} rows on dim {d}, "
                                 f"expected torch.chunk's {sizes[rank]}; only even-chunk Shard layouts are supported")
            geo.append((d, sizes, p.numel() // max(p.shape[d], 1)))
        mine = [k for k, (_, o) in enumerate(items) if o == rank]
        # forward: my shard of every M to its owner
        send = [[] for _ in range(world)]
        for k, ((gi, j, group, p, M), o) in enumerate(items):
            send[o].append(_local(M).reshape(-1).to(dtype))
        in_splits = [sum(x.numel() for x in s) for s in send]
        out_splits = [sum(geo[k][1][s] * geo[k][2] for k in mine) for s in range(world)]
        recv = torch.empty(sum(out_splits), dtype=dtype)
        t0 = time.perf_counter()
        dist.all_to_all_single(recv, torch.cat([x for s in send for x in s]) if any(in_splits) else
                               torch.empty(0, dtype=dtype), out_splits, in_splits, group=self.process_group)
        self._comm(t0, sum(in_splits) * dtype.itemsize, sum(out_splits) * dtype.itemsize)
        pieces = [list(c.split([geo[k][1][s] * geo[k][2] for k in mine])) for s, c in enumerate(recv.split(out_splits))]
        back = [[] for _ in range(world)]
        flags = []
        for n, k in enumerate(mine):
            (gi, j, group, p, M), _ = items[k]
            d, sizes, _row = geo[k]
            shape = lambda s: p.shape[:d] + (sizes[s],) + p.shape[d + 1:]  # noqa: E731
            full = torch.cat([pieces[s][n].view(shape(s)) for s in range(world)], dim=d)
            U, ok = self._compute(group, full.to(M.dtype), dtype)
            flags.append(1.0 if ok else 0.0)
            for s, part in enumerate(U.split(sizes, dim=d)):
                back[s].append(part.reshape(-1))
        for s in range(world):
            back[s].append(torch.tensor(flags, dtype=dtype))
        # backward: every rank's shard of every U (then one flag per owned matrix) from its owner
        in2 = [sum(x.numel() for x in b) for b in back]
        out2 = [sum(geo[k][1][rank] * geo[k][2] + 1 for k, (_, o) in enumerate(items) if o == r) for r in range(world)]
        recv2 = torch.empty(sum(out2), dtype=dtype)
        t0 = time.perf_counter()
        dist.all_to_all_single(recv2, torch.cat([x for b in back for x in b]), out2, in2, group=self.process_group)
        self._comm(t0, sum(in2) * dtype.itemsize, sum(out2) * dtype.itemsize)
        chunks = recv2.split(out2)
        for r in range(world):
            ks = [k for k, (_, o) in enumerate(items) if o == r]
            parts = chunks[r].split([geo[k][1][rank] * geo[k][2] for k in ks] + [len(ks)])
            for n, k in enumerate(ks):
                (gi, j, group, p, M), _ = items[k]
                local = parts[n].view(p.to_local().shape)
                U = DTensor.from_local(local, p.device_mesh, p.placements, shape=p.shape, stride=p.stride())
                self._apply(p, U, group, bool(parts[-1][n] != 0))


class DistributedSteepest(_DistributedStep, SteepestDescent):
    """:class:`SteepestDescent` whose dualizations are computed once per matrix across a process group.

    Takes every :class:`SteepestDescent` argument plus ``process_group`` (default: the world group)
    and ``partial_grads``: what to do with a parameter that has a gradient on some ranks only
    (``"average"``: the DDP mean with zeros for the missing ranks (zero shards when sharded);
    ``"skip"``: no rank steps it, counted in ``partial_skipped``; ``"raise"``: ValueError on every rank).
    ``step()`` is a collective. After each step, ``last_owners`` maps each owner-path matrix to its
    rank and ``step_stats`` holds this rank's dualization time (``compute_s``, wall; ``compute_cpu_s``,
    thread CPU), communication time and bytes, and the number of matrices it owned.
    See the module docstring for the algorithm.

    Example:
        >>> model = torch.nn.Linear(8, 4, bias=False)   # DDP(model) after init_process_group
        >>> opt = DistributedSteepest(model.parameters(), lr=0.02, norm="spectral", momentum=0.9)
    """

    def __init__(self, params, *args, process_group=None, partial_grads: str = "average", **kwargs) -> None:
        if partial_grads not in PARTIAL_GRADS:
            raise ValueError(f"partial_grads must be one of {PARTIAL_GRADS}, got {partial_grads!r}")
        super().__init__(params, *args, **kwargs)
        self._setup_distributed(process_group, partial_grads)


_CLASSES: dict[type, type] = {}


def _unwrap(fn):
    while hasattr(fn, "__wrapped__"):  # torch.optim wraps each class's step for its hooks
        fn = fn.__wrapped__
    return fn


def defines_own_step(cls: type) -> bool:
    """True when a SteepestDescent subclass replaces SteepestDescent.step (e.g. steepest.Adaptive)."""
    base = _unwrap(vars(SteepestDescent)["step"])
    return any("step" in vars(c) and _unwrap(vars(c)["step"]) is not base
               for c in cls.__mro__ if isinstance(c, type) and issubclass(c, SteepestDescent))


def distributed(optimizer: SteepestDescent, process_group=None, partial_grads: str = "average") -> SteepestDescent:
    """Return a distributed version of ``optimizer`` (any :class:`SteepestDescent`, e.g. Muon, SpecGD).

    The result is an instance of ``Distributed<Class>``, a subclass of the optimizer's class, sharing
    its param_groups and state; use the result (and schedulers built on it) from here on.
    Arguments as in :class:`DistributedSteepest`.

    Example:
        >>> opt = distributed(Muon(model.parameters(), lr=0.02))   # after init_process_group
    """
    if not isinstance(optimizer, SteepestDescent):
        raise TypeError(f"distributed() needs a steepest optimizer (SteepestDescent, Muon, ...), "
                        f"got {type(optimizer).__name__}")
    if isinstance(optimizer, _DistributedStep):
        raise ValueError("this optimizer is already distributed")
    base = type(optimizer)
    if defines_own_step(base):
        # A subclass with its own step (e.g. steepest.Adaptive's per-layer geometry) would silently lose
        # that logic under the owner-computes step below: refuse instead of changing its semantics.
        raise TypeError(f"distributed() cannot wrap {base.__name__}: it defines its own step(), which the "
                        "owner-computes step would replace. Run it without distributed() under DDP (every rank "
                        "then dualizes every matrix itself and replicas stay in step).")
    cls = _CLASSES.get(base)
    cls = _CLASSES.get(base)
    if cls is None:
        cls = _CLASSES[base] = type(f"Distributed{base.__name__}", (_DistributedStep, base),
                                    {"__doc__": base.__doc__, "__module__": __name__})
    new = cls.__new__(cls)
    new.__dict__.update(optimizer.__dict__)
    new._patch_step_function()  # torch.optim step hooks and lr-scheduler bookkeeping, as in Optimizer.__init__
    new._setup_distributed(process_group, partial_grads)
    return new


__all__ = ["DistributedSteepest", "distributed", "assign_owners", "dualize_cost", "shard_sizes", "PARTIAL_GRADS"]
