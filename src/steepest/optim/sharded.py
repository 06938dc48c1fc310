"""torch.distributed for every steepest optimizer: ``steepest.distributed(opt)`` and ``DistributedSteepest``.

Both give the optimizer the owner-computes executor (:class:`steepest.optim.executors.OwnerComputes`:
each matrix is dualized once, on its owner rank, for replicated (DDP) and sharded (FSDP2 DTensor)
parameters; the algorithm is described there). Without an initialised process group (or with one
rank) the step is exactly the local one.

Example:
    >>> import steepest, torch
    >>> model = torch.nn.Linear(8, 4)                 # wrapped in DDP or fully_shard in real use
    >>> opt = steepest.distributed(steepest.Muon(steepest.param_groups(model), lr=0.02))
    >>> type(opt).__name__, type(opt.executor).__name__
    ('Muon', 'OwnerComputes')
"""

from __future__ import annotations

from typing import Any

import torch.distributed as dist
from torch.optim.optimizer import ParamsT

from steepest.optim.executors import PARTIAL_GRADS, OwnerComputes, assign_owners, shard_sizes
from steepest.optim.steepest import SteepestDescent


class DistributedSteepest(SteepestDescent):
    """:class:`SteepestDescent` with the :class:`OwnerComputes` executor: each matrix's dualization is
    computed once, on its owner rank of ``process_group`` (default: the world group). ``step()`` is a
    collective. ``partial_grads`` as in :class:`OwnerComputes`; statistics on ``opt.executor``.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(8, 4, bias=False)   # DDP(model) after init_process_group
        >>> opt = DistributedSteepest(model.parameters(), lr=0.02, norm="spectral", momentum=0.9)
        >>> type(opt.executor).__name__
        'OwnerComputes'
    """

    def __init__(
        self,
        params: ParamsT,
        *args: Any,
        process_group: dist.ProcessGroup | None = None,
        partial_grads: str = "average",
        **kwargs: Any,
    ) -> None:
        if "executor" in kwargs:
            raise TypeError("DistributedSteepest sets the executor itself (OwnerComputes over process_group)")
        kwargs["executor"] = OwnerComputes(process_group, partial_grads)
        super().__init__(params, *args, **kwargs)


def _unwrap(fn):
    while hasattr(fn, "__wrapped__"):  # torch.optim wraps each class's step for its hooks
        fn = fn.__wrapped__
    return fn


def defines_own_step(cls: type) -> bool:
    """True when a SteepestDescent subclass replaces SteepestDescent.step (its step may bypass the executor)."""
    base = _unwrap(vars(SteepestDescent)["step"])
    return any(
        "step" in vars(c) and _unwrap(vars(c)["step"]) is not base
        for c in cls.__mro__
        if isinstance(c, type) and issubclass(c, SteepestDescent)
    )


def distributed(
    optimizer: SteepestDescent, process_group: dist.ProcessGroup | None = None, partial_grads: str = "average"
) -> SteepestDescent:
    """Make ``optimizer`` (any :class:`SteepestDescent`: Muon, SpecGD, Adaptive, ...) step over a process
    group: sets ``optimizer.executor`` to :class:`OwnerComputes` (keeping its single-process executor
    for a one-rank world) and returns the same optimizer; an optimizer that already has one gets a new
    one with these arguments. Arguments as in :class:`OwnerComputes`.

    Example:
        >>> import steepest, torch
        >>> W = torch.nn.Parameter(torch.randn(8, 4))
        >>> opt = steepest.Muon([W], lr=0.02)
        >>> distributed(opt) is opt                 # after init_process_group in real use
        True
    """
    if not isinstance(optimizer, SteepestDescent):
        raise TypeError(
            f"distributed() needs a steepest optimizer (SteepestDescent, Muon, ...), got {type(optimizer).__name__}"
        )
    base = type(optimizer)
    if defines_own_step(base):
        # A subclass that replaces step() bypasses the kernel and its executor.
        raise TypeError(
            f"distributed() cannot make {base.__name__} distributed: it defines its own step(), which "
            "bypasses the step kernel and its executor. Pass executor= to the constructor and keep "
            "SteepestDescent.step, or override the executor's check/dualize instead of step()."
        )
    local = optimizer.executor
    if isinstance(local, OwnerComputes):  # chosen by executor="auto" for DTensors, or distributed twice
        local = local.local
    optimizer.executor = OwnerComputes(process_group, partial_grads, local=local)
    return optimizer


__all__ = [
    "OwnerComputes",
    "DistributedSteepest",
    "distributed",
    "assign_owners",
    "shard_sizes",
    "PARTIAL_GRADS",
    "defines_own_step",
]
