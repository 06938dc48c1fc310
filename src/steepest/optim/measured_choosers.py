"""The measured choosers over training time: a phase switch with hysteresis and arXiv 2605.19781's choice.

Both step each matrix in the ``power`` geometry at a per-layer knob a, on the shared base
:class:`steepest.optim.time_choosers.TimeChooser` (whose module docstring describes the three choosers,
their magnitudes and their state); they read each layer's incoming activations from ``model`` through
forward hooks on their measurement steps only. Also importable from :mod:`steepest.optim.time_choosers`.

Example:
    >>> import torch, steepest
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    >>> opt = steepest.SpecGD(steepest.param_groups(model), lr=0.02, chooser=PhaseSwitch(model=model))
    >>> model(torch.randn(32, 8)).square().mean().backward(); opt.step()
    >>> sorted(set(opt.chooser.knobs(opt).values()))     # every layer starts in the "below" phase: a = 1
    [1.0]
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from steepest import geometry as geo
from steepest.diagnostics import criteria
from steepest.diagnostics._batched_metrics import gram
from steepest.diagnostics.capture import ActivationCapture
from steepest.diagnostics.metrics import stable_rank
from steepest.diagnostics.schatten_choice import EXPONENTS, scores_from_spectrum, tight_scores_from_spectrum
from steepest.optim.choosers import _full
from steepest.optim.functional import direction_source
from steepest.optim.time_choosers import TimeChooser, _grid, _int, _knob


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


def _spectrum(M: torch.Tensor, G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(s, C, cut-off) of :func:`_spectrum_v` (its docstring)."""
    s, C, tol, _ = _spectrum_v(M, G, right=False)
    return s, C, tol


def _spectrum_v(
    M: torch.Tensor, G: torch.Tensor, right: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(s, C, cut-off): M's singular values (descending) and C_i = u_i^T G v_i from the float64 eigh of M's
    small Gram matrix (two m n k products and a k x k eigh, k = min(m, n), instead of an m x n SVD):
    with M M^T = U diag(s^2) U^T, v_i = M^T u_i / s_i, so C_i = u_i^T G M^T u_i / s_i (tall M: the same with
    M^T M's eigenvectors v_i). Values at or below sqrt(max(m, n) eps) s_1 (the Gram's resolution) get C = 0.
    ``right``: also return V (n, k), M's right singular vectors as columns (zero for the dropped values;
    one more m n k product), else None."""
    wide = M.shape[-2] <= M.shape[-1]
    X, Y = (M, G) if wide else (M.mT, G.mT)  # X wide: X X^T is the small Gram; Y the gradient in X's layout
    lam, Q = torch.linalg.eigh(X @ X.mT)
    lam, Q = lam.flip(-1).clamp(min=0), Q.flip(-1)
    s = lam.sqrt()
    tol = math.sqrt(max(M.shape) * torch.finfo(torch.float64).eps) * s[:1]
    keep = s > tol
    proj = ((Q.mT @ (Y @ X.mT)) * Q.mT).sum(-1)  # q_i^T Y X^T q_i
    C = torch.where(keep, proj / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
    if not right:
        return s, C, tol, None
    if wide:  # v_i = M^T u_i / s_i
        V = torch.where(keep, (X.mT @ Q) / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
    else:
        V = torch.where(keep, Q, torch.zeros_like(Q))
    return s, C, tol, V


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
        if A is None or not A.numel():
            return None
        # Adaptive's cheap Davis-Drusvyatskiy scores (criteria.dd_scores: float64 Gram eigh of G; a Gram or block
        # Krylov for ||A||_op, in bf16 where native: criteria.DD_GRAM_MAX); their ratio Delta_spectral /
        # Delta_frobenius is nr(G) / st(A)
        scores = criteria.dd_scores(G, A)
        if scores is None:  # a non-finite activation
            return None
        ratio = scores.decrease["spectral"] / scores.decrease["frobenius"] if scores.decrease["frobenius"] else 0.0
        return ratio if math.isfinite(ratio) else None

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
        criterion: ``"holder"`` (default: f of :mod:`steepest.diagnostics.schatten_choice`, the paper's
            ``exact_momentum``, its optimizer's default) or ``"tight"`` (g, its ``exact_tightness``: EMAs of
            C and B_i = ||A v_i||^2 instead of the activation spectrum).

    Checked against the paper's code (deel-ai-papers/schatten-muon at 749ba8d; benchmarks/
    schatten_choice_cases.py): the same source M (the Nesterov combination of the updated momentum and G),
    the same EMA'd quantities (C and the activation spectrum; M's spectrum instantaneous; an EMA restarts
    when its length changes), the decision applied in the step that measures it, the first decision at step
    0 (their initial p = pmax steps Muon, as ``initial=0.0`` here). Deliberate differences:

    * EMA cadence: the paper updates its EMAs on decision steps only, with decay 0.95 (its optimizer's
      default), 0.99 (its nanogpt and ViT configs; interval 100 and 10) or 0.9 (its deep linear script).
      At 0.99 every 100 steps the step-0 measurement still weighs 0.99^19 = 83% at its 2000-step nanogpt
      run's last decision. Here the EMAs see ``every / measure_every`` (10) measurements per decision at
      decay 0.9, so a decision reflects about its own window; ``measure_every=every, beta=0.99`` is theirs.
    * Momentum: steepest's buffer is the plain EMA; theirs is bias-corrected by 1 / (1 - beta^t), which
      changes M's mix of old and new gradients in the first ~1 / (1 - beta) steps only.
    * Magnitude: ``pinned=None`` (||D||_F = sqrt(rank) at every a) is their default (``moment_type="none"``:
      ||dW||_F = sqrt(min(m, n)) at every p, the kappa pin switched off). ``pinned=`` applies their
      kappa^(1/p) pin, which their code applies only together with a diagonal second-moment
      preconditioner that steepest does not have: that combination is ours, not a setting they run.
    * Activations: rows (N, fan_in) of the layer's input (convs unfolded), as their Gram path and their
      tightness path; their exact_momentum raw-activation path flattens a Linear's (B, T, d) input to
      (B, T d), a different matrix (the same for 2-D inputs, as in their synthetic cases).
    * The knob grid and rank cut-off: :mod:`steepest.diagnostics.schatten_choice`'s docstring.

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
        criterion: str = "holder",
    ) -> None:
        if criterion not in ("holder", "tight"):
            raise ValueError(f"criterion must be 'holder' (the paper's exact_momentum) or 'tight', got {criterion!r}")
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
        self.beta, self.pinned, self.criterion = float(beta), pinned, criterion

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
            tight = self.criterion == "tight"
            s, Cp, tol, V = _spectrum_v(M, Gm, right=tight)
            if V is not None:
                if V.shape[0] != A.shape[-1]:
                    continue  # the activations' columns are not the matrix view's: keep the knob
                curv = (A.float() @ V.float()).double().pow(2).sum(0)  # B_i = ||A v_i||^2
            else:
                # the activation spectrum from A^T A in float32 (N d^2 flops; as dd_scores): the Schatten-k
                # norms, k >= 2, weigh s^k, so the float32 Gram's ~1e-3 s_1 floor on small values does not matter
                curv = torch.linalg.eigvalsh(gram(A, torch.float32).double()).flip(-1).clamp(min=0).sqrt()
            L = self.layers[b.label]
            for key, new in (("C", Cp), ("B" if tight else "sA", curv)):
                old = L.get(key)
                L[key] = new if old is None or old.shape != new.shape else old.lerp(new, 1.0 - self.beta)
            if deciding:
                if tight:
                    f = tight_scores_from_spectrum(s, L["C"], L["B"], self.exponents, tol)
                else:
                    f = scores_from_spectrum(s, L["C"], L["sA"], self.exponents, tol)
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
        return (
            f"SchattenChoice(every={self.every}, measure_every={self.measure_every}, beta={self.beta}, "
            f"criterion={self.criterion!r})"
        )


__all__ = ["PhaseSwitch", "SchattenChoice"]
