"""Executors: how a step's checks and its dualize stage run (one process or a process group).

The step kernel (:func:`steepest.optim.functional.steepest_step`) asks its executor two things:

* ``check(blocks) -> list[bool]``: per block, are its gradient and state finite (raising ValueError
  for sparse or complex gradients); a distributed executor decides over all ranks;
* ``dualize(blocks)``: stages 4-5, ``(U, ok)`` per block in block order (a list, or lazily);

and, for choosers that decide per layer, ``agree(codes)``: every rank takes the same decisions.
``all_blocks`` says whether the optimizer must list parameters without a gradient too (a process
group needs every rank to walk the same list).

Executors (``SteepestDescent(..., executor=...)``, visible and settable as ``opt.executor``):

* :class:`PerMatrix` (``"per_matrix"``): one :func:`~steepest.optim.functional.compute_update` per
  parameter;
* :class:`Batched` (``"batched"``): same-shape spectral matrices share one batched polar call
  (:mod:`steepest.optim.batched`); ``cpu=None`` batches on accelerators and small matrices on CPU,
  ``cpu=True`` every matrix;
* :class:`OwnerComputes` (``"distributed"``): each matrix dualized once, on its owner rank of a
  process group, for replicated (DDP) and sharded (FSDP2 DTensor) parameters (below).

``"auto"`` (the default) is :class:`Batched` with ``cpu=None``, or :class:`OwnerComputes` over the
parameters' device mesh when the parameters are DTensors (FSDP2).

Owner-computes (:class:`OwnerComputes`, also set by ``steepest.distributed(opt)``):

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
(sparse/complex) one, so no rank ever waits in a collective alone (a known failure of distributed Muon
implementations: ranks hang when a parameter has no gradient or a shard is empty).

Example:
    >>> import torch, steepest
    >>> W = torch.nn.Parameter(torch.randn(8, 4))
    >>> opt = steepest.Muon([W], executor="per_matrix")
    >>> opt.executor
    PerMatrix()
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

from steepest import geometry as geo
from steepest.optim import batched
from steepest.optim import collectives as C
from steepest.optim import functional as F
from steepest.optim.collectives import _is_dtensor, _local, assign_owners, shard_sizes

NAMES = ("auto", "per_matrix", "batched", "distributed")


class Executor:
    """The executor interface (one process, per matrix); subclasses change what they need."""

    #: True when the optimizer must list every parameter, with or without a gradient, in the same order
    #: on every rank.
    all_blocks = False
    #: True when :meth:`dualize` reads every block's M in this process, so the kernel may defer each momentum
    #: buffer's update to that read (:func:`~steepest.optim.functional.direction_source`: the buffer still in
    #: cache when M reads it). False here: a subclass that skips blocks (owner-computes) must not lose updates.
    defers_momentum = False

    def check(self, blocks: list[F.Block]) -> list[bool]:
        """Per block: is its gradient (and state) finite? (:func:`~steepest.optim.functional.local_check`)"""
        return F.local_check(blocks)

    def dualize(self, blocks: list[F.Block]):
        """``(U, ok)`` per block, in order: U = scale * dualize(M), ok False where U overflowed."""
        return F.dualize_each(blocks)

    def order(self, blocks: list[F.Block]) -> list[F.Block]:
        """The order the kernel dualizes and applies the steepest blocks in (default: as given). Any order
        gives the same parameters; an executor may group the blocks it computes together, so their
        shared buffers are freed early (:class:`Batched`)."""
        return blocks

    def agree(self, codes: torch.Tensor) -> torch.Tensor:
        """The decisions every rank takes (one process: these)."""
        return codes

    def groups_changed(self) -> None:
        """Called when the optimizer's parameter groups change (add_param_group, load_state_dict)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class PerMatrix(Executor):
    """One dualization per parameter, in this process; fixed steps lazily (each update is applied and
    freed before the next is computed: the smallest peak memory, one matrix's workspace)."""

    defers_momentum = True

    def dualize(self, blocks: list[F.Block]):
        return batched.dualize_batched(blocks, batch=False)


class Batched(Executor):
    """Same-shape spectral matrices with equal settings share one batched polar call.

    ``cpu``: None (default) batches on accelerators and, on CPU, matrices of at most
    :data:`steepest.optim.batched.CPU_MAX_NUMEL` entries (larger ones measured no faster); True batches
    on every device.
    """

    defers_momentum = True

    def __init__(self, cpu: bool | None = None) -> None:
        if cpu not in (None, True):
            raise ValueError(f"Batched(cpu=...) must be None or True, got {cpu!r} (use PerMatrix() for no batching)")
        self.cpu = cpu

    def dualize(self, blocks: list[F.Block]):
        return batched.dualize_batched(blocks, cpu=self.cpu is True)

    def order(self, blocks: list[F.Block]) -> list[F.Block]:
        """Each bucket's members next to each other (:func:`steepest.optim.batched.bucket_order`)."""
        return batched.bucket_order(blocks, cpu=self.cpu is True)

    def __repr__(self) -> str:
        return "Batched()" if self.cpu is None else f"Batched(cpu={self.cpu!r})"


PARTIAL_GRADS = ("average", "skip", "raise")
_UNBOUND = "unbound"  #: a copied executor's group, until re-bound (see OwnerComputes.process_group)


class OwnerComputes(Executor):
    """The owner-computes executor over a process group (see the module docstring).

    Args:
        process_group: the group (default None: the world group).
        partial_grads: what to do with a parameter that has a gradient on some ranks only
            (``"average"``: the DDP mean with zeros for the missing ranks (zero shards when sharded);
            ``"skip"``: no rank steps it, counted in ``partial_skipped``; ``"raise"``: ValueError on
            every rank).
        local: the executor of a one-rank (or uninitialised) world, default :class:`Batched`.

    After each step, ``last_owners`` maps each owner-path matrix to its rank and ``step_stats`` holds
    this rank's dualization time (``compute_s``, wall; ``compute_cpu_s``, thread CPU), communication
    time and bytes, and the number of matrices it owned. Copies and pickles hold the group as the list
    of its ranks and re-bind to it when first used (:meth:`bind` re-binds by hand).
    """

    all_blocks = property(lambda self: self._world()[0] > 1)

    def __init__(self, process_group=None, partial_grads: str = "average", local: Executor | None = None) -> None:
        if partial_grads not in PARTIAL_GRADS:
            raise ValueError(f"partial_grads must be one of {PARTIAL_GRADS}, got {partial_grads!r}")
        if local is not None and not isinstance(local, Executor) or isinstance(local, OwnerComputes):
            raise TypeError(f"local must be a single-process executor (PerMatrix, Batched), got {local!r}")
        self._group, self._ranks = process_group, None
        self.partial_grads = partial_grads
        self.local = local if local is not None else Batched()
        self.partial_skipped = 0
        self.last_owners: dict[str, int] = {}
        self.step_stats: dict[str, float] = {}

    def __repr__(self) -> str:
        ranks = self._ranks if self._group is _UNBOUND else self._describe()
        return (
            f"OwnerComputes(process_group={'world' if ranks is None else f'ranks {ranks}'}, "
            f"partial_grads={self.partial_grads!r}, local={self.local!r})"
        )

    # ------------------------------------------------------------------ the process group
    def _describe(self) -> list[int] | None:
        """The group as its global ranks (None: the world group)."""
        if self._group is None or not (dist.is_available() and dist.is_initialized()):
            return None
        ranks = dist.get_process_group_ranks(self._group)
        return None if ranks == list(range(dist.get_world_size())) else ranks

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_ranks"] = self._ranks if self._group is _UNBOUND else self._describe()
        state["_group"] = _UNBOUND if state["_ranks"] is not None else None
        state["_agreed"] = False  # a copy checks again that its ranks step the same blocks
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)

    def bind(self, process_group) -> OwnerComputes:
        """Use ``process_group`` from now on (after loading a copy made with a sub-group)."""
        self._group, self._ranks = process_group, None
        return self

    @property
    def process_group(self):
        """The process group (a copy re-binds here to the group of the same ranks, or raises)."""
        if self._group is _UNBOUND:
            world = list(range(dist.get_world_size())) if dist.is_available() and dist.is_initialized() else None
            if self._ranks != world:
                raise ValueError(
                    f"this optimizer's OwnerComputes executor was saved with a process group over ranks "
                    f"{self._ranks}, which this process cannot find (world: {world}); re-bind it with "
                    "opt.executor.bind(group) (e.g. mesh.get_group()) before stepping"
                )
            self._group, self._ranks = None, None
        return self._group

    def _world(self) -> tuple[int, int]:
        if not (dist.is_available() and dist.is_initialized()):
            return 1, 0
        return dist.get_world_size(self.process_group), dist.get_rank(self.process_group)

    # ------------------------------------------------------------------ the executor interface
    def check(self, blocks: list) -> list[bool]:
        """One all-reduce of per-parameter counts (has a gradient, non-finite, invalid): every rank
        takes the same decisions, so no rank ever waits in a collective alone."""
        world, _ = self._world()
        if world == 1 and not any(_is_dtensor(b.param) for b in blocks):
            return self.local.check(blocks)
        if not self.__dict__.get("_agreed", False):
            self._agree_on_blocks(blocks)
        flags = torch.zeros(3, len(blocks), dtype=torch.int64)
        local = []
        for i, b in enumerate(blocks):
            if b.grad is None:
                continue
            flags[0, i] = 1
            if b.grad.is_sparse or b.grad.is_complex():
                flags[2, i] = 1
            else:
                local.append(i)
        finite = F.finite_blocks([blocks[i] for i in local], grads=[_local(blocks[i].grad) for i in local])
        flags[1, local] = torch.tensor([0 if ok else 1 for ok in finite], dtype=torch.int64)
        dist.all_reduce(flags, group=self.process_group)
        names = lambda idx: ", ".join(blocks[i].name for i in idx)  # noqa: E731
        invalid = flags[2].nonzero().flatten().tolist()
        if invalid:
            raise ValueError(
                f"sparse or complex gradient for {names(invalid)} on some rank: steepest needs dense real gradients"
            )
        bad = set(flags[1].nonzero().flatten().tolist())
        partial = [i for i in range(len(blocks)) if 0 < flags[0, i] < world and i not in bad]
        if partial and self.partial_grads == "raise":
            raise ValueError(
                f"{names(partial)} have a gradient on some ranks only; synchronise gradients (DDP "
                "with find_unused_parameters=True) or pass partial_grads='average' or 'skip'"
            )
        for i, b in enumerate(blocks):
            if flags[0, i] == 0 or (i in partial and self.partial_grads == "skip"):
                b.grad = None
            elif i in bad and b.grad is None:
                b.grad = torch.zeros_like(b.param)  # counted as skipped on every rank, never applied
        if partial and self.partial_grads == "skip":
            self.partial_skipped += len(partial)
        elif partial:  # "average": what DDP(find_unused_parameters=True) computes; zero shards when sharded
            for i in partial:
                b = blocks[i]
                b.grad = b.grad.clone() if b.grad is not None else torch.zeros_like(b.param)
            rep = [i for i in partial if not _is_dtensor(blocks[i].param)]
            if rep:
                flat = torch.cat([blocks[i].grad.reshape(-1).double() for i in rep])
                dist.all_reduce(flat, group=self.process_group)
                flat /= world
                for i, g in zip(rep, flat.split([blocks[i].grad.numel() for i in rep])):
                    blocks[i].grad = g.view_as(blocks[i].grad).to(blocks[i].grad.dtype)
        return [i not in bad for i in range(len(blocks))]

    def groups_changed(self) -> None:
        self._agreed = False  # the next step checks again that every rank steps the same blocks

    def _agree_on_blocks(self, blocks: list) -> None:
        """Every rank must step the same parameters in the same order (issue 23 item 6): one all_gather of
        a fingerprint per block (name, shape, dtype, settings, lr and weight decay; for replicated
        parameters also the sum of |W|, equal on replicas) on the first step and after the groups
        change. A difference raises ValueError on every rank, naming the first one, before any step."""

        def fingerprint(b) -> str:
            kw = {k: v for k, v in b.kwargs.items() if k != "check"}
            value = "" if _is_dtensor(b.param) else f" |W|_1={float(b.param.detach().double().abs().sum()):.9g}"
            return (
                f"{b.label} shape {tuple(b.param.shape)} {b.param.dtype} lr={b.lr!r} wd={b.weight_decay!r} {kw}{value}"
            )

        mine = [fingerprint(b) for b in blocks]
        world, rank = self._world()
        everyone: list = [None] * world
        dist.all_gather_object(everyone, mine, group=self.process_group)
        for r, theirs in enumerate(everyone):
            if theirs == everyone[0]:
                continue
            first = next((i for i, (a, b) in enumerate(zip(everyone[0], theirs)) if a != b), None)
            if first is None:
                diff = f"rank 0 steps {len(everyone[0])} parameters, rank {r} steps {len(theirs)}"
            else:
                diff = f"parameter {first}: rank 0 has {everyone[0][first]}; rank {r} has {theirs[first]}"
            raise ValueError(
                f"the ranks do not step the same parameters in the same order ({diff}). Build the "
                "optimizer from the same model and param_groups, in the same order, on every rank "
                "(replicated parameters must also hold equal values, as DDP makes them); no "
                "parameter was changed"
            )
        self._agreed = True

    def agree(self, codes: torch.Tensor) -> torch.Tensor:
        """Every rank takes rank 0's per-layer choices (a chooser's decisions): one broadcast."""
        world, _ = self._world()
        if world == 1:
            return codes
        codes = codes.clone()
        dist.broadcast(codes, group=self.process_group, group_src=0)
        return codes

    def dualize(self, blocks: list) -> list:
        """Entrywise updates of replicated parameters locally; every other one on its owner rank."""
        world, rank = self._world()
        if world == 1 and not any(_is_dtensor(b.param) for b in blocks):
            return self.local.dualize(blocks)
        t0 = time.perf_counter()
        out: list = [None] * len(blocks)
        owned = []
        for i, b in enumerate(blocks):
            if geo.is_entrywise(b.norm) and not _is_dtensor(b.param):
                out[i] = F.dualize_each([b])[0]
            else:
                if _is_dtensor(b.param):
                    C.check_mesh(self, b)
                owned.append(i)
        owners = assign_owners(
            [geo.dualize_cost(tuple(blocks[i].param.shape), blocks[i].norm, blocks[i].cfg.tensor_mode) for i in owned],
            world,
        )
        self.last_owners = {blocks[i].name.split(" (shape")[0]: o for i, o in zip(owned, owners)}
        self.step_stats = dict(
            local_s=time.perf_counter() - t0,
            compute_s=0.0,
            compute_cpu_s=0.0,
            comm_s=0.0,
            sent_bytes=0,
            received_bytes=0,
            owned=owners.count(rank),
            matrices=len(owned),
        )
        for dtype in sorted({blocks[i].param.dtype for i in owned}, key=str):
            items = [(i, o) for i, o in zip(owned, owners) if blocks[i].param.dtype == dtype]
            C.replicated_updates(
                self, blocks, [x for x in items if not _is_dtensor(blocks[x[0]].param)], rank, out, dtype
            )
            C.sharded_updates(
                self, blocks, [x for x in items if _is_dtensor(blocks[x[0]].param)], world, rank, out, dtype
            )
        return out


def resolve(spec, params: list[torch.Tensor]) -> Executor:
    """An executor from ``spec`` (a name from :data:`NAMES` or an instance) for these parameters."""
    if isinstance(spec, Executor):
        return spec
    if spec not in NAMES:
        raise ValueError(
            f"executor must be one of {NAMES} or an executor instance (steepest.optim.executors), got {spec!r}"
        )
    dtensors = [p for p in params if _is_dtensor(p)]
    if spec == "per_matrix":
        local: Executor = PerMatrix()
    elif spec in ("batched", "auto"):
        local = Batched()
    if spec == "distributed" or (spec == "auto" and dtensors):
        group = None
        if dtensors:
            mesh = dtensors[0].device_mesh
            if mesh.ndim != 1:
                raise ValueError(
                    f"the parameters are DTensors on a {mesh.ndim}-D device mesh: steepest's distributed step "
                    "needs a 1-D mesh. Build the optimizer with executor=steepest.optim.executors.OwnerComputes("
                    "process_group=...) for the mesh dimension that shards them, or see steepest.distributed."
                )
            group = mesh.get_group()
        return OwnerComputes(process_group=group, local=Batched() if spec == "distributed" else local)
    if dtensors:  # an explicit single-process executor cannot step sharded parameters
        raise ValueError(
            f"executor={spec!r} steps each parameter in this process, but the parameters are DTensors "
            "(FSDP2): use executor='auto' or steepest.distributed(optimizer)"
        )
    return local


__all__ = [
    "Executor",
    "PerMatrix",
    "Batched",
    "OwnerComputes",
    "resolve",
    "assign_owners",
    "shard_sizes",
    "NAMES",
    "PARTIAL_GRADS",
]
