"""Choosers over training time: the knob a of U diag(s^a) V^T per layer as training goes.

Every chooser here steps each matrix of the optimizer's steepest groups in the ``power`` geometry
(:mod:`steepest.linalg.spectral_power`; ``norm="power"``: a = 1 Frobenius direction, 0 spectral, < 0 past
it) at the polar factor's magnitude ||D||_F = sqrt(rank), so the group's ``lr``/``scale_rule`` keep their
meaning at every a; a layer at exactly a = 0 takes the group's own spectral step (Muon's Newton-Schulz in
``steepest.Muon``: the same step up to that iteration's accuracy, at its cost).
The two measured ones (PhaseSwitch, SchattenChoice) live in :mod:`steepest.optim.measured_choosers`
(module size; they build on :class:`TimeChooser`). They plug into any recipe through ``chooser=``
(``steepest.Muon(..., chooser=ScheduleChooser(...))``); AdamW-routed groups keep AdamW. Three choosers:

* :class:`ScheduleChooser`: a as a function of the step (warm-up, then a linear / cosine / step shape
  from ``start`` to ``end``), optionally one schedule per group role. DynMuon (arXiv 2605.17109)
  schedules a from 0.25 to -0.25; REFERENCE.md gives only those end points, so :func:`dynmuon` assumes
  a linear shape over the whole run without warm-up (an assumption, not the paper's text).
* :class:`PhaseSwitch`: a measured phase switch. Every ``every`` steps each layer's statistic is measured;
  a layer moves to the knob value of the other phase only when the statistic has crossed the band
  ``(low, high)`` and stayed beyond it for ``patience`` consecutive decisions (hysteresis). Statistics:
  ``"nr_st"`` (default, needs ``model=``): nr(G) / st(A), Davis-Drusvyatskiy's ratio (seed 001: spectral
  wins iff nr(G) >= st(A)); ``"srank"``: the gradient's stable rank ||G||_F^2 / ||G||_op^2 over min(m, n)
  (no model); any other name is read from the per-layer ``stats`` a monitor passes to ``observe``
  (``{parameter name: {metric: value}}``; a layer without the metric keeps its phase).
* :class:`SchattenChoice`: arXiv 2605.19781's per-layer choice, every ``every`` (100) steps:
  a* = argmax f(a) of :mod:`steepest.diagnostics.schatten_choice` from the Nesterov momentum's
  singular values, the gradient's projections C_i = u_i^T G v_i and the incoming activations' singular
  values, the last two smoothed by EMAs over measurements every ``measure_every`` steps (their p is
  1/a). ``pinned=(lr_adam, lr_muon, beta1)`` multiplies the step by kappa^a, kappa =
  lr_adam sqrt((1 - b1) / (1 + b1)) sqrt(max(m, n)) / lr_muon: the paper's pinned magnitude
  ||dW||_F = sqrt(min(m, n)) kappa^(1/p) (equal to it for full-rank momentum).

Decisions are saved: ``state_dict()`` holds the step count, each layer's knob and hysteresis counters,
the EMAs, and ``history`` (step, layer, knob), so a resumed run continues bit for bit and a report can
draw each layer's knob over time (:meth:`TimeChooser.knobs` gives the current values).

Example:
    >>> import torch, steepest
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    >>> opt = steepest.Muon(steepest.param_groups(model), lr=0.02, chooser=dynmuon(total_steps=1000))
    >>> model(torch.randn(32, 8)).square().mean().backward(); opt.step()
    >>> opt.chooser.knobs(opt)["0.weight"]
    0.25
"""

from __future__ import annotations

import math

import torch

from steepest.linalg.spectral_power import check_exponent
from steepest.optim.choosers import Chooser
from steepest.optim.functional import param_label, steepest_params

SHAPES = ("constant", "linear", "cosine", "step")
#: Knob values are rounded to this grid: the step caches its settings per (geometry, a), so a continuous
#: schedule would otherwise grow that cache by one entry per step; 1e-3 is far below any measured effect.
RESOLUTION = 1e-3


def _int(name: str, v, lo: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {v!r}")
    return v


def _knob(name: str, a) -> float:
    try:
        check_exponent(a)
    except ValueError:
        raise ValueError(
            f"{name} must be a finite knob value a (1 Frobenius, 0 spectral, < 0 past it), got {a!r}"
        ) from None
    return float(a)


def _grid(a: float) -> float:
    return round(round(a / RESOLUTION) * RESOLUTION, 6)


class Schedule:
    """a(step): ``warmup`` steps linear from ``warmup_start`` to ``start``, then ``shape`` from ``start`` to
    ``end`` over the remaining ``total - warmup`` steps (``"step"``: ``start`` before the fraction ``at`` of
    them, ``end`` after; ``"constant"``: ``start``); ``end`` after ``total``.

    Example:
        >>> Schedule(0.25, -0.25, total=101, shape="linear")(50)
        0.0
    """

    def __init__(
        self,
        start: float,
        end: float | None = None,
        total: int = 1,
        *,
        shape: str = "linear",
        warmup: int = 0,
        warmup_start: float | None = None,
        at: float = 0.5,
    ) -> None:
        if shape not in SHAPES:
            raise ValueError(f"shape must be one of {SHAPES}, got {shape!r}")
        self.start = _knob("start", start)
        self.end = self.start if end is None else _knob("end", end)
        self.total, self.warmup = _int("total", total, 1), _int("warmup", warmup, 0)
        if self.warmup >= self.total and shape != "constant":
            raise ValueError(f"warmup ({warmup}) must be below total ({total}) steps")
        self.warmup_start = self.start if warmup_start is None else _knob("warmup_start", warmup_start)
        if isinstance(at, bool) or not isinstance(at, (int, float)) or not 0.0 <= at <= 1.0:
            raise ValueError(f"at (the fraction where shape='step' jumps) must be in [0, 1], got {at!r}")
        self.shape, self.at = shape, float(at)

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return self.warmup_start + (self.start - self.warmup_start) * step / self.warmup
        if self.shape == "constant":
            return self.start
        u = min(1.0, (step - self.warmup) / max(1, self.total - 1 - self.warmup))
        if self.shape == "linear":
            return self.start + (self.end - self.start) * u
        if self.shape == "cosine":
            return self.end + (self.start - self.end) * 0.5 * (1.0 + math.cos(math.pi * u))
        return self.start if u < self.at else self.end

    def __repr__(self) -> str:
        return f"Schedule({self.start}, {self.end}, total={self.total}, shape={self.shape!r}, warmup={self.warmup})"


class TimeChooser(Chooser):
    """The shared part: every matrix steps in ``power`` at its layer's knob; decisions logged per layer.

    Subclasses implement ``_decide(blocks)`` (set ``self.layers[label]["a"]``) and say when it runs.
    """

    #: A layer at a = 0 takes the group's own spectral step (its polar method: Muon's Newton-Schulz), which is
    #: the power geometry's a = 0 step up to that method's accuracy (same direction, same magnitude).
    candidates = ("spectral", "power")

    def __init__(self, initial: float = 0.0, record_every: int = 1) -> None:
        super().__init__()
        self.initial = _grid(_knob("initial", initial))
        self.record_every = _int("record_every", record_every, 1)
        self.layers: dict[str, dict] = {}
        self.history: list[dict] = []
        self._roles: dict[str, str] = {}

    def attach(self, optimizer) -> None:
        for g in optimizer.param_groups:
            if g["algorithm"] == "steepest" and g["step_size"] != "fixed":
                raise ValueError(
                    f"{type(self).__name__} steps in the power geometry, which has no dual norm: the steepest "
                    "groups need step_size='fixed'"
                )
        for gi, g in enumerate(optimizer.param_groups):
            for j in range(len(g["params"])):  # by the blocks' label, not id(param): a copied optimizer keeps it
                self._roles[param_label(g, gi, j)] = str(g.get("role", ""))

    def _deciding(self) -> bool:
        return True

    def _decide(self, blocks: list, executor) -> None:
        """Set each block's knob in ``self.layers`` (default: keep)."""

    def _lr_scale(self, b, a: float) -> float:
        return 1.0

    def choose(self, blocks: list, executor) -> None:
        blocks = [b for b in blocks if b.param.ndim >= 2]
        for b in blocks:
            self.layers.setdefault(b.label, {"a": self.initial})
        deciding = self._deciding()
        if deciding:
            self._decide(blocks, executor)
        record = deciding and self.t % self.record_every == 0  # history: decision steps only, so it stays small
        for b in blocks:
            a = self.layers[b.label]["a"]
            b.norm, b.p = ("spectral", None) if a == 0 else ("power", a)
            b.lr_scale = self._lr_scale(b, a)
            if record:
                self.history.append({"step": self.t, "param": b.label, "knob": a})

    def _agree(self, blocks: list, executor, values: list[float]) -> list[float]:
        """Every rank takes rank 0's knobs (sent as integers on the RESOLUTION grid)."""
        codes = torch.tensor([round(v / RESOLUTION) for v in values], dtype=torch.int64)
        agreed = executor.agree(codes) if executor is not None else codes
        return [_grid(int(c) * RESOLUTION) for c in agreed.tolist()]

    def knobs(self, optimizer) -> dict[str, float]:
        """The current knob per matrix parameter label of ``optimizer``'s steepest groups."""
        return {
            label: self.layers.get(label, {}).get("a", self.initial)
            for label, p in steepest_params(optimizer)
            if p.ndim >= 2
        }

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        layers = {
            k: {n: (v.clone() if torch.is_tensor(v) else v) for n, v in d.items()} for k, d in self.layers.items()
        }
        return {"t": self.t, "layers": layers, "history": [dict(h) for h in self.history]}

    def check_state(self, optimizer, state_dict: dict) -> None:
        super().check_state(optimizer, state_dict)
        own = state_dict.get("chooser")
        if own is None:
            return
        layers, history = own.get("layers", {}), own.get("history", [])
        if not isinstance(layers, dict) or not isinstance(history, list):
            raise ValueError(f"{type(self).__name__}'s state needs 'layers' (a dict) and 'history' (a list)")
        for label, d in layers.items():
            a = d.get("a") if isinstance(d, dict) else None
            if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a):
                raise ValueError(
                    f"{type(self).__name__}'s state holds knob {a!r} for {label!r}, expected a finite number"
                )

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.layers = {
            k: {n: (v.clone() if torch.is_tensor(v) else v) for n, v in d.items()}
            for k, d in state.get("layers", {}).items()
        }
        self.history = [dict(h) for h in state.get("history", [])]


class ScheduleChooser(TimeChooser):
    """The knob as a function of the step (:class:`Schedule`), one per group role if ``roles`` is given.

    Args:
        schedule: the :class:`Schedule` of every matrix (or of those whose group role is not in ``roles``).
        roles: ``{group role: Schedule}`` (roles from :func:`steepest.param_groups`, e.g. ``"hidden"``).
        record_every: log each layer's knob to ``history`` every this many steps.

    Example:
        >>> c = ScheduleChooser(Schedule(1.0, 0.0, total=100, shape="cosine", warmup=10, warmup_start=0.0))
    """

    def __init__(self, schedule: Schedule, roles: dict | None = None, record_every: int = 10) -> None:
        for s in [schedule, *(roles or {}).values()]:
            if not isinstance(s, Schedule):
                raise TypeError(f"schedules must be steepest.optim.time_choosers.Schedule, got {type(s).__name__}")
        super().__init__(initial=schedule(0), record_every=record_every)
        self.schedule, self.roles = schedule, dict(roles or {})

    def _decide(self, blocks: list, executor) -> None:
        for b in blocks:  # a pure function of the step: every rank computes the same value
            self.layers[b.label]["a"] = _grid(self.roles.get(self._roles.get(b.label, ""), self.schedule)(self.t))

    def __repr__(self) -> str:
        return f"ScheduleChooser({self.schedule!r}, roles={self.roles!r})"


def dynmuon(total_steps: int, start: float = 0.25, end: float = -0.25, shape: str = "linear") -> ScheduleChooser:
    """A DynMuon-style schedule (arXiv 2605.17109): a from 0.25 to -0.25 over ``total_steps`` (linear: assumed,
    see the module docstring)."""
    return ScheduleChooser(Schedule(start, end, total=total_steps, shape=shape))


__all__ = ["Schedule", "ScheduleChooser", "TimeChooser", "dynmuon", "SHAPES", "RESOLUTION"]
