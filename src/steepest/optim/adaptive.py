"""Adaptive: steepest descent that picks each layer's geometry (spectral, linf, frobenius) as it trains.

A preset: :class:`~steepest.optim.steepest.SteepestDescent` with the
:class:`~steepest.optim.choosers.GeometryChooser` (Spec-Sign / Davis-Drusvyatskiy criteria, the
measured oracle, the gradient-only proxy; the formulas are in :mod:`steepest.optim.choosers`). The
same chooser can be given to any steepest optimizer: ``steepest.Muon(..., chooser=GeometryChooser(...))``.

Example:
    >>> import steepest, torch
    >>> model = torch.nn.Linear(8, 4)
    >>> opt = Adaptive(steepest.param_groups(model), lr=0.02)                # gradient-only proxy
    >>> opt = Adaptive(steepest.param_groups(model), lr=0.02, model=model)   # activation-based criterion
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.optim.optimizer import ParamsT

from steepest.diagnostics import criteria as C
from steepest.optim.choosers import CRITERIA, GeometryChooser
from steepest.optim.steepest import SteepestDescent

#: The chooser's settings that Adaptive shows as its own attributes (read only).
_SHOWN = (
    "candidates",
    "every",
    "criterion",
    "microbatches",
    "margin",
    "patience",
    "lr_multipliers",
    "rms_match",
    "initial",
    "oracle_step",
    "history",
)


class Adaptive(SteepestDescent):
    """:class:`SteepestDescent` whose matrices each step in the geometry a
    :class:`~steepest.optim.choosers.GeometryChooser` picks among ``candidates``.

    Args (beyond :class:`steepest.SteepestDescent`'s, which apply to the matrix groups): those of
    :class:`~steepest.optim.choosers.GeometryChooser` (candidates, every, model, criterion, microbatches,
    margin, patience, lr_multipliers, rms_match, initial, oracle_loss, oracle_step). The groups' default
    norm is ``initial``. The chooser is ``opt.chooser``; its settings and ``history`` are also shown as
    attributes of the optimizer.

    Example:
        >>> import torch
        >>> W = torch.nn.Parameter(torch.randn(8, 4))
        >>> opt = Adaptive([W], lr=0.01, every=5)
        >>> opt.geometries()
        {'group0.0': 'spectral'}
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.02,
        candidates: Iterable[str] = C.GEOMETRIES,
        every: int = 10,
        model: nn.Module | None = None,
        criterion: str = "spec_sign",
        microbatches: int = 4,
        margin: float = 0.1,
        patience: int = 2,
        lr_multipliers: dict | None = None,
        rms_match: bool | str = True,
        initial: str | None = None,
        oracle_loss: Callable[[], torch.Tensor] | None = None,
        oracle_step: str = "own",
        **kwargs,
    ) -> None:
        chooser = GeometryChooser(
            candidates,
            every=every,
            model=model,
            criterion=criterion,
            microbatches=microbatches,
            margin=margin,
            patience=patience,
            lr_multipliers=lr_multipliers,
            rms_match=rms_match,
            initial=initial,
            oracle_loss=oracle_loss,
            oracle_step=oracle_step,
        )
        kwargs.setdefault("norm", chooser.initial)
        super().__init__(params, lr=lr, chooser=chooser, **kwargs)

    def __getattr__(self, name: str):
        if name in _SHOWN and "chooser" in self.__dict__:
            return getattr(self.__dict__["chooser"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def geometries(self) -> dict[str, str]:
        """Current geometry per matrix parameter name."""
        return self.chooser.geometries(self)

    def remove_hooks(self) -> None:
        """Remove the activation hooks placed on ``model`` (the optimizer then uses the gradient-only proxy)."""
        self.chooser.remove_hooks()


__all__ = ["Adaptive", "CRITERIA"]
