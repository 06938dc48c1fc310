"""Choosers over training time: the knob a of U diag(s^a) V^T per layer as training goes.

Every chooser here steps each matrix of the optimizer's steepest groups in the ``power`` geometry
(:mod:`steepest.linalg.spectral_power`; ``norm="power"``: a = 1 Frobenius direction, 0 spectral, < 0 past
it) at the polar factor's magnitude ||D||_F = sqrt(rank), so the group's ``lr``/``scale_rule`` keep their
meaning at every a; a layer at exactly a = 0 takes the group's own spectral step (Muon's Newton-Schulz in
``steepest.Muon``: the same step up to that iteration's accuracy, at its cost).
They plug into any recipe through ``chooser=`` (``steepest.Muon(..., chooser=ScheduleChooser(...))``);
AdamW-routed groups keep AdamW. Three choosers:

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
from collections.abc import Iterable

import torch
from torch import nn

from steepest import geometry as geo
from steepest.diagnostics.capture import ActivationCapture
from steepest.diagnostics.metrics import gram_singular_values, stable_rank
from steepest.diagnostics.schatten_choice import EXPONENTS, scores_from_spectrum
from steepest.linalg.polar_factor import rank_tolerance
from steepest.linalg.spectral_power import check_exponent
from steepest.optim.choosers import Chooser, _full
from steepest.optim.functional import direction_source

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
        self._roles: dict[int, str] = {}

    def attach(self, optimizer) -> None:
        for g in optimizer.param_groups:
            if g["algorithm"] == "steepest" and g["step_size"] != "fixed":
                raise ValueError(
                    f"{type(self).__name__} steps in the power geometry, which has no dual norm: the steepest "
                    "groups need step_size='fixed'"
                )
            for p in g["params"]:
                self._roles[id(p)] = str(g.get("role", ""))

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
        out = {}
        for gi, g in enumerate(optimizer.param_groups):
            if g["algorithm"] != "steepest":
                continue
            names = g.get("names")
            for j, p in enumerate(g["params"]):
                if p.ndim >= 2:
                    label = names[j] if names and j < len(names) else f"group{gi}.{j}"
                    out[label] = self.layers.get(label, {}).get("a", self.initial)
        return out

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
            self.layers[b.label]["a"] = _grid(self.roles.get(self._roles.get(id(b.param), ""), self.schedule)(self.t))

    def __repr__(self) -> str:
        return f"ScheduleChooser({self.schedule!r}, roles={self.roles!r})"


def dynmuon(total_steps: int, start: float = 0.25, end: float = -0.25, shape: str = "linear") -> ScheduleChooser:
    """A DynMuon-style schedule (arXiv 2605.17109): a from 0.25 to -0.25 over ``total_steps`` (linear: assumed,
    see the module docstring)."""
    return ScheduleChooser(Schedule(start, end, total=total_steps, shape=shape))


class _Hooked(TimeChooser):
    """A chooser that reads each layer's incoming activations from ``model`` on measurement steps."""

    def __init__(self, model: nn.Module | None, initial: float, record_every: int) -> None:
        super().__init__(initial=initial, record_every=record_every)
        self.model = model
        self._capture: ActivationCapture | None = None
        self._module_of: dict[int, str] = {}

    def _measuring(self) -> bool:
        return self._deciding()

    def attach(self, optimizer) -> None:
        super().attach(optimizer)
        model, self.model = self.model, None  # the hooks hold what is needed; copies drop them
        if model is None:
            return
        wanted = {id(p) for g in optimizer.param_groups if g["algorithm"] == "steepest" for p in g["params"]}
        mods = {
            n for n, m in model.named_modules() if getattr(m, "weight", None) is not None and id(m.weight) in wanted
        }
        self._capture = ActivationCapture(model, self._measuring, grads=False, names=mods)
        self._module_of = {id(m.weight): n for n, m in self._capture.layers.items()}

    def __getstate__(self) -> dict:
        return dict(self.__dict__, _capture=None, _module_of={})

    def _activations(self, b) -> torch.Tensor | None:
        """The layer's input rows (N, fan_in) captured at this step's forward, or None."""
        name = self._module_of.get(id(b.param))
        if self._capture is None or name is None:
            return None
        rows = [A.reshape(-1, A.shape[-1]) for A, _ in self._capture.rows(name)]
        return torch.cat(rows) if rows else None

    def observe(self, step: int, loss=None, stats: dict | None = None) -> None:
        if self._capture is not None:
            self._capture.clear()
        super().observe(step, loss, stats)


def _matrix(b, M: torch.Tensor) -> torch.Tensor:
    return geo.matrix_view(M, b.cfg.tensor_mode, b.cfg.transposed).double()


class PhaseSwitch(_Hooked):
    """A measured phase switch with hysteresis (module docstring).

    Args:
        statistic: ``"nr_st"`` (needs ``model``), ``"srank"``, or a per-layer metric name passed to ``observe``.
        band: ``(low, high)``: above ``high`` is the "above" phase (knob ``above``), below ``low`` the
            "below" phase (knob ``below``). Default (0.8, 1.25) around DD's threshold nr(G)/st(A) = 1.
        above, below: the knob values of the two phases (default 0.0 spectral above, 1.0 Frobenius below).
        initial_phase: ``"below"`` (default: Frobenius wins at initialization in the project's evidence) or ``"above"``.
        every: decide every this many steps. patience: consecutive decisions beyond the band to switch.
        model: the nn.Module whose layers' inputs give st(A) (``"nr_st"``).

    Example:
        >>> c = PhaseSwitch(statistic="srank", band=(0.05, 0.1), every=10, patience=3)
    """

    def __init__(
        self,
        statistic: str = "nr_st",
        band: tuple[float, float] = (0.8, 1.25),
        above: float = 0.0,
        below: float = 1.0,
        initial_phase: str = "below",
        every: int = 10,
        patience: int = 3,
        model: nn.Module | None = None,
        record_every: int = 1,
    ) -> None:
        if not isinstance(statistic, str) or not statistic:
            raise ValueError(f"statistic must be 'nr_st', 'srank' or a metric name, got {statistic!r}")
        if statistic == "nr_st" and model is None:
            raise ValueError("statistic='nr_st' needs model= (st(A) comes from the layers' inputs); or use 'srank'")
        lo, hi = band
        if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and 0 <= lo <= hi < math.inf):
            raise ValueError(f"band must be (low, high) with 0 <= low <= high < inf, got {band!r}")
        if initial_phase not in ("above", "below"):
            raise ValueError(f"initial_phase must be 'above' or 'below', got {initial_phase!r}")
        self.knob = {"above": _grid(_knob("above", above)), "below": _grid(_knob("below", below))}
        super().__init__(model, initial=self.knob[initial_phase], record_every=record_every)
        self.statistic, self.band, self.initial_phase = statistic, (float(lo), float(hi)), initial_phase
        self.every, self.patience = _int("every", every, 1), _int("patience", patience, 1)
        self._stats: dict = {}

    def _deciding(self) -> bool:
        return self.t % self.every == 0

    def _value(self, b) -> float | None:
        if self.statistic not in ("nr_st", "srank"):
            v = self._stats.get(b.label, {}).get(self.statistic)
            return None if v is None else float(v)
        G = _matrix(b, _full(b.G))
        G = G.reshape(-1, G.shape[-1])  # a batched view (tensor_mode="batch") as one matrix
        if self.statistic == "srank":
            return float(stable_rank(G, "gram")) / min(G.shape)
        A = self._activations(b)
        if A is None or not A.numel() or not bool(torch.isfinite(A).all()):
            return None
        # both from small Gram matrices (float64 eigh; singular values to ~1.5e-8 s_1, metrics.gram_singular_values)
        s = gram_singular_values(G)
        nr = float(s.sum() ** 2 / s.square().sum().clamp(min=1e-300))  # nuclear rank ||G||_*^2 / ||G||_F^2
        return nr / float(stable_rank(A, "gram"))

    def _decide(self, blocks: list, executor) -> None:
        lo, hi = self.band
        for b in blocks:
            L = self.layers[b.label]
            L.setdefault("phase", self.initial_phase)
            v = self._value(b)
            other = "above" if L["phase"] == "below" else "below"
            beyond = v is not None and (v > hi if other == "above" else v < lo)
            L["streak"] = L.get("streak", 0) + 1 if beyond else 0
            if L["streak"] >= self.patience:
                L["phase"], L["streak"] = other, 0
            L["a"], L["stat"] = self.knob[L["phase"]], v
        agreed = self._agree(blocks, executor, [self.layers[b.label]["a"] for b in blocks])
        for b, a in zip(blocks, agreed):
            L = self.layers[b.label]
            if a != L["a"]:  # another rank decided: take its phase
                L["a"], L["phase"] = a, "above" if a == self.knob["above"] else "below"

    def observe(self, step: int, loss=None, stats: dict | None = None) -> None:
        if stats is not None:
            self._stats = {k: dict(v) for k, v in stats.items()}
        super().observe(step, loss, stats)

    def __repr__(self) -> str:
        return f"PhaseSwitch(statistic={self.statistic!r}, band={self.band}, knobs={self.knob}, every={self.every})"


class SchattenChoice(_Hooked):
    """arXiv 2605.19781's per-layer exponent (module docstring), in the knob's units a = 1/p.

    Args:
        model: the nn.Module whose layers' inputs give the activation singular values (required: the
            criterion's curvature is ||A||_{S_k}).
        every: decide every this many steps (paper: 100). measure_every: update the EMAs every this many
            steps (a divisor of ``every``). beta: the EMAs' decay (0: the decision step's values only).
        exponents: the grid of knob values in [0, 1] (default 0, 0.1, ..., 1: Muon to SGD's direction).
        initial: the knob before the first decision (steps 0..every-1 use the step-0 decision anyway).
        pinned: ``(lr_adam, lr_muon, beta1)``: the paper's pinned magnitude (kappa^a per layer); None:
            the power geometry's RMS-matched magnitude (kappa = 1).

    Example:
        >>> model = torch.nn.Linear(8, 4)
        >>> c = SchattenChoice(model, every=100)
    """

    def __init__(
        self,
        model: nn.Module,
        every: int = 100,
        measure_every: int = 10,
        beta: float = 0.9,
        exponents: Iterable[float] = EXPONENTS,
        initial: float = 0.0,
        pinned: tuple[float, float, float] | None = None,
        record_every: int = 1,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError("SchattenChoice needs model= (the activation spectrum enters the criterion)")
        self.every, self.measure_every = _int("every", every, 1), _int("measure_every", measure_every, 1)
        if every % measure_every:
            raise ValueError(f"measure_every ({measure_every}) must divide every ({every})")
        if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not 0.0 <= beta < 1.0:
            raise ValueError(f"beta must be in [0, 1), got {beta!r}")
        self.exponents = tuple(float(a) for a in exponents)
        if not self.exponents or any(not 0.0 <= a <= 1.0 for a in self.exponents):
            raise ValueError(f"exponents must be knob values in [0, 1], got {self.exponents}")
        if pinned is not None:
            if len(pinned) != 3 or not all(isinstance(x, (int, float)) and x > 0 for x in pinned[:2]):
                raise ValueError(f"pinned must be (lr_adam > 0, lr_muon > 0, beta1 in [0, 1)), got {pinned!r}")
            if not 0.0 <= pinned[2] < 1.0:
                raise ValueError(f"pinned's beta1 must be in [0, 1), got {pinned[2]!r}")
        super().__init__(model, initial=initial, record_every=record_every)
        self.beta, self.pinned = float(beta), pinned

    def _deciding(self) -> bool:
        return self.t % self.measure_every == 0

    def _decide(self, blocks: list, executor) -> None:
        """Measure (EMAs of C and the activation spectrum); on ``every`` steps, take the argmax of f(a)."""
        deciding = self.t % self.every == 0
        for b in blocks:
            A = self._activations(b)
            if A is None or not A.numel() or not bool(torch.isfinite(A).all()):
                continue  # no activations for this layer (not hooked, or frozen input): keep its knob
            c = b.cfg
            trial = {k: v.clone() for k, v in b.state.items() if k == "momentum_buffer"}  # state untouched
            G = _full(b.G)
            M = _matrix(b, direction_source(G, trial, c.momentum, c.nesterov))
            Gm = _matrix(b, G)
            if M.ndim != 2:
                continue  # batched tensor views: the criterion is per matrix; keep the knob
            U, s, Vh = torch.linalg.svd(M, full_matrices=False)
            C = ((U.mT @ Gm) * Vh).sum(-1)
            sA = gram_singular_values(A)  # from the small Gram matrix A^T A: no SVD of the N x n rows
            L = self.layers[b.label]
            for key, new in (("C", C), ("sA", sA)):
                old = L.get(key)
                L[key] = new if old is None or old.shape != new.shape else old.lerp(new, 1.0 - self.beta)
            if deciding:
                f = scores_from_spectrum(s, L["C"], L["sA"], self.exponents, rank_tolerance(M, s[:1]))
                L["a"] = _grid(self.exponents[int(torch.argmax(f))])  # ties: the first (smaller a)
        if deciding:
            agreed = self._agree(blocks, executor, [self.layers[b.label]["a"] for b in blocks])
            for b, a in zip(blocks, agreed):
                self.layers[b.label]["a"] = a

    def _lr_scale(self, b, a: float) -> float:
        if self.pinned is None:
            return 1.0
        lr_adam, lr_muon, b1 = self.pinned
        m, n = geo.matrix_shape(tuple(b.param.shape), b.cfg.tensor_mode, b.cfg.transposed)[-2:]
        kappa = lr_adam * math.sqrt((1.0 - b1) / (1.0 + b1)) * math.sqrt(max(m, n)) / lr_muon
        return kappa**a

    def __repr__(self) -> str:
        return f"SchattenChoice(every={self.every}, measure_every={self.measure_every}, beta={self.beta})"


__all__ = ["Schedule", "ScheduleChooser", "PhaseSwitch", "SchattenChoice", "TimeChooser", "dynmuon", "SHAPES"]
