"""Choosers: objects that decide, as training goes, each matrix's geometry, Schatten p and lr multiplier.

Any steepest optimizer takes one (``SteepestDescent(..., chooser=...)``, ``steepest.Muon(...,
chooser=...)``); the step kernel calls it after the gradient checks. The interface (:class:`Chooser`):

* ``candidates``: the geometries it may choose (the groups' dualizer settings are validated for
  them), or None (it keeps each group's norm and only changes p or the lr multiplier);
* ``attach(optimizer)``: called once by the optimizer's constructor (hooks, checks on the groups);
* ``choose(blocks, executor)``: set ``block.norm``, ``block.p`` and ``block.lr_scale`` of this step's
  matrix blocks (:class:`steepest.optim.functional.Block`: ``label``, ``param``, ``grad``, ``state``,
  ``cfg``, ``lr``); ``executor.agree(codes)`` makes every rank take the same decisions;
* ``observe(step, loss=None, stats=None)``: called by the optimizer after every step with the index
  of the step just taken and the closure's loss (None without a closure); a monitor or training loop
  may call it with per-layer statistics (``stats``: ``{parameter name: {metric: value}}``). The base
  chooser counts steps in ``t``; a chooser over training time (a schedule, a measured phase switch)
  reads ``step``, ``loss`` and ``stats`` here and acts in the next ``choose``;
* ``state_dict()`` / ``load_state_dict(d)`` (saved in the optimizer's ``state_dict()["chooser"]``),
  and ``check_state(optimizer, state_dict)``, which refuses a state it cannot resume from before
  anything is loaded.

:class:`GeometryChooser`, the Spec-Sign / Davis-Drusvyatskiy chooser (``steepest.Adaptive`` is
:class:`~steepest.optim.steepest.SteepestDescent` with it), picks each layer's geometry (spectral,
linf, frobenius) as it trains.

Seed 002's future work ("an adaptive optimizer that switches geometries per-layer"). Every ``every``
steps, for each matrix parameter with gradient G, each candidate geometry g gets the quadratic model's
predicted decrease (seed 002, eq. 2; :func:`steepest.diagnostics.criteria.score_geometries`)

    Delta_g = (||G||_g - 2 c_g / sqrt(B))^2 / (2 H_g),   H_g = <D_g, H D_g>,  D_g = dualize(G, g)

and the layer steps with the winner, subject to hysteresis. Where the numbers come from:

* ``model=`` given (activations hooked on the decision steps only, like LayerMonitor):
  ``criterion="spec_sign"`` (default): noise scales c_g from K = ``microbatches`` disjoint chunks of the
  batch (exact per-chunk gradients from the hooked activations and output gradients) and the K-FAC
  input-factor curvature H_g = ||A D_g^T||_F^2 / N; ``criterion="dd"``: the Davis-Drusvyatskiy test,
  Delta_spec = ||G||_*^2 / ||A||_F^2 vs Delta_F = ||G||_F^2 / ||A||_op^2 (worst-case L_g of seed 000;
  spectral wins iff nr(G) >= st(A); ||G||_* from G's float64 Gram, ||A||_op's products in bf16 where bf16
  matmul is native and A is not float64 (measured within 3.1e-4 of the float32 products' value):
  :data:`~steepest.diagnostics.criteria.DD_GRAM_MAX`);
  candidates must then be spectral and frobenius;
  ``criterion="oracle"`` (the measured bound, for analysis): on a held-out batch (``oracle_loss=``, a
  callable returning the held-out loss) each layer takes the candidate that measurably lowers it most,
  without hysteresis. ``oracle_step="own"`` (default) measures the very step this optimizer would take in
  each geometry (its momentum direction, lr, schedule and scale; one loss evaluation per layer and
  candidate, :func:`steepest.diagnostics.oracle.step_decreases`); ``oracle_step="best"`` measures the
  best step along dualize_g(G) (seed 002's Delta*, a line search per layer and candidate,
  :func:`steepest.diagnostics.oracle.layer_oracle`), which is what the criteria predict, but not the step
  that is taken.
* no model (or a layer that is not an ``nn.Linear``/``nn.Conv2d``): the gradient-only proxy. The noise
  E||G_hat - G||_g is estimated by ||G_t - G_{t-1}||_g / sqrt(2) (two consecutive minibatch gradients
  differ by two independent noise draws plus the drift, so this overestimates by at most the drift),
  and the curvature uses the rows of [G_t; G_{t-1}] in place of A (Shampoo's right factor: when output
  gradients are white, E[G^T G] is proportional to A^T A). Under this proxy spectral always beats
  frobenius in the deterministic limit (by log-convexity of singular-value moments), so the proxy
  really decides spectral vs linf through noise; give ``model=`` for a frobenius verdict.

Hysteresis: every layer starts on ``initial``; at the first decision the winner replaces it if it wins
by a factor ``1 + margin`` in Delta (or in signal-to-noise ratio when every bound is vacuous); later, a
challenger must win ``patience`` consecutive decisions by that factor. Scores within 1e-9 relative
are ties, broken by the order of ``candidates``; so a last-bit difference in the gradients (thread
count, machine) cannot change a decision unless the advantage sits within rounding of 1 + margin. Every decision is appended to ``history`` and
saved in ``state_dict()``; :meth:`GeometryChooser.geometries` gives the current choice per parameter.

Learning rates: one ``lr`` cannot fit sign and spectral steps (||sign(G)||_F = sqrt(mn) while
||polar(G)||_F = sqrt(rank)). With ``rms_match=True`` (default, ``step_size="fixed"``) each direction is
scaled to unit RMS for a full-rank block (spectral x sqrt(max(m, n)), linf x 1, frobenius x sqrt(mn)),
so ``lr`` is the per-entry update size in every geometry. With ``rms_match="spectral"`` each direction
gets the RMS of a full-rank spectral step instead (factor rms_factor(g) / rms_factor(spectral), exactly 1
for spectral): a layer on spectral steps exactly as SpecGD with the same ``lr`` and ``scale_rule``
(e.g. Muon's), so an Adaptive that always chooses spectral *is* that SpecGD, and any difference comes
from its choices. ``lr_multipliers`` (a dict geometry -> float) rescale each geometry on top (e.g. 1/L_g
with ``step_size="dual"`` for seed 000's steps).

Groups with ``algorithm="adamw"`` (embeddings, heads, vectors from :func:`steepest.param_groups`) keep
their AdamW route. Momentum is shared: the geometry only changes the dualization of M.

Example:
    >>> import steepest
    >>> model = torch.nn.Linear(8, 4)
    >>> opt = steepest.Muon(steepest.param_groups(model), chooser=GeometryChooser(model=model, every=5))
    >>> opt = steepest.Adaptive(steepest.param_groups(model), lr=0.02)   # SteepestDescent + GeometryChooser
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from steepest import geometry as geo
from steepest.diagnostics import criteria as C
from steepest.diagnostics.oracle import layer_oracle, step_decreases
from steepest.diagnostics.probe import ActivationCapture, activation_matrix, microbatch_grads
from steepest.geometry import dual_norm, dualize
from steepest.optim.functional import compute_update, direction_source, steepest_params

CRITERIA = ("spec_sign", "dd", "oracle")


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a sharded (DTensor) gradient: a collective that every rank calls on a decision
    step; plain tensors as they are."""
    return t.full_tensor() if isinstance(t, DTensor) else t


def _geometry(state: dict) -> str | None:
    """The layer's current geometry; stored as an index into GEOMETRIES so state_dict holds plain ints
    (torch's load_state_dict would mangle strings inside per-parameter state)."""
    code = state.get("geometry")
    return None if code is None else C.GEOMETRIES[int(code)]


def _whole(v, lo: int, hi: float = math.inf) -> bool:
    x = v.item() if torch.is_tensor(v) and v.numel() == 1 else v
    return not isinstance(x, bool) and isinstance(x, (int, float)) and x == int(x) and lo <= x <= hi


class Chooser:
    """The chooser interface (see the module docstring); this base decides nothing and counts steps."""

    #: Geometries this chooser may give a matrix (None: each group's own norm).
    candidates: tuple | None = None

    def __init__(self) -> None:
        self.t = 0

    def attach(self, optimizer) -> None:
        """Called once by the optimizer's constructor, after its groups are validated."""

    def choose(self, blocks: list, executor) -> None:
        """Set ``norm``/``p``/``lr_scale`` of this step's steepest blocks (default: leave them)."""

    def observe(self, step: int, loss=None, stats: dict | None = None) -> None:
        """After step ``step`` (0-based) with its closure's ``loss``; ``stats``: per-layer statistics."""
        self.t = step + 1

    def state_dict(self) -> dict:
        return {"t": self.t}

    def check_state(self, optimizer, state_dict: dict) -> None:
        """Raise ValueError if ``state_dict`` (the optimizer's) cannot be resumed by this chooser."""
        own = state_dict.get("chooser", state_dict.get("adaptive"))
        if own is not None and (not isinstance(own, dict) or not _whole(own.get("t", 0), 0)):
            raise ValueError(f"the chooser's state must be a dict with a step count t >= 0, got {own!r}")

    def load_state_dict(self, state: dict) -> None:
        self.t = int(state.get("t", 0))

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class GeometryChooser(Chooser):
    """Per-layer geometry choice among ``candidates`` by the Spec-Sign / Davis-Drusvyatskiy criteria.

    Args:
        candidates: geometries to choose from, a subset of ("spectral", "linf", "frobenius").
        every: decide every ``every`` steps (steps 0, every, ...). initial: the geometry every layer starts
            on (default: spectral if it is a candidate, else the first candidate).
        model: optional nn.Module whose Linear/Conv2d layers are hooked for the activation criterion.
        criterion: "spec_sign", "dd" (needs ``model``) or "oracle" (needs ``model`` and ``oracle_loss``);
            see the module docstring. oracle_step: "own" or "best".
        microbatches: K >= 2 chunks for the noise scales. margin, patience: hysteresis.
        lr_multipliers: dict geometry -> finite multiplier > 0. rms_match: True (unit RMS per geometry),
            "spectral" (every geometry at a full-rank spectral step's RMS; spectral unscaled) or False.

    Example:
        >>> import steepest
        >>> W = torch.nn.Parameter(torch.randn(8, 4))
        >>> opt = steepest.Muon([W], chooser=GeometryChooser(candidates=("spectral", "linf"), every=5))
    """

    candidates: tuple[str, ...]  #: never None here: validated, non-empty

    def __init__(
        self,
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
    ) -> None:
        super().__init__()
        candidates = tuple(candidates)
        if not candidates or any(g not in C.GEOMETRIES for g in candidates) or len(set(candidates)) != len(candidates):
            raise ValueError(f"candidates must be distinct names from {C.GEOMETRIES}, got {candidates!r}")
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        if criterion == "dd" and (model is None or set(candidates) - {"spectral", "frobenius"}):
            raise ValueError(
                "criterion='dd' compares spectral with frobenius from activations: pass model= and "
                "candidates=('spectral', 'frobenius')"
            )
        if criterion == "oracle" and (model is None or not callable(oracle_loss)):
            raise ValueError(
                "criterion='oracle' measures each layer's decrease on a held-out batch: pass model= and "
                "oracle_loss=a callable returning the held-out loss at the model's current weights"
            )
        if oracle_step not in ("own", "best"):
            raise ValueError(
                f"oracle_step must be 'own' (the optimizer's step) or 'best' (line search), got {oracle_step!r}"
            )
        if oracle_loss is not None and criterion != "oracle":
            raise ValueError("oracle_loss is only used with criterion='oracle'")
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}")
        if isinstance(microbatches, bool) or not isinstance(microbatches, int) or microbatches < 2:
            raise ValueError(f"microbatches must be an int >= 2, got {microbatches!r}")
        if not (isinstance(margin, (int, float)) and margin >= 0):
            raise ValueError(f"margin must be a number >= 0, got {margin!r}")
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 1:
            raise ValueError(f"patience must be a positive int, got {patience!r}")
        if rms_match not in (True, False, "spectral"):
            raise ValueError(f"rms_match must be True, False or 'spectral', got {rms_match!r}")
        if initial is None:  # spectral when it is a candidate, else the first candidate
            initial = "spectral" if "spectral" in candidates else candidates[0]
        if initial not in candidates:
            raise ValueError(f"initial must be one of the candidates {candidates}, got {initial!r}")
        mult = {g: 1.0 for g in candidates}
        for g, v in (lr_multipliers or {}).items():
            if g not in candidates or isinstance(v, bool) or not isinstance(v, (int, float)) or not (0 < v < math.inf):
                raise ValueError(
                    f"lr_multipliers must map candidate geometries to finite numbers > 0, got {g!r}: {v!r}"
                )
            mult[g] = float(v)
        self.candidates, self.every, self.criterion, self.microbatches = candidates, every, criterion, microbatches
        self.margin, self.patience, self.lr_multipliers, self.rms_match = float(margin), patience, mult, rms_match
        self.initial, self.oracle_step = initial, oracle_step
        self.history: list[dict] = []
        self.model = model
        self._capture: ActivationCapture | None = None
        self._module_of: dict[int, str] = {}
        self._dd: dict[int, C.GeometryScores | None] = {}  # a decision's DD scores, id(param) -> scores
        self.oracle_model: nn.Module | None = model if criterion == "oracle" else None
        self.oracle_loss: Callable[[], torch.Tensor] | None = oracle_loss if criterion == "oracle" else None

    def __repr__(self) -> str:
        return (
            f"GeometryChooser(candidates={self.candidates!r}, criterion={self.criterion!r}, every={self.every}, "
            f"initial={self.initial!r})"
        )

    def attach(self, optimizer) -> None:
        """Hook ``model``'s layers that hold the optimizer's steepest matrices (activation criteria)."""
        model, self.model = self.model, None  # the hooks hold what the criteria need; copies drop them
        if model is None or self.criterion == "oracle" or len(self.candidates) == 1:  # nothing to hook
            return
        wanted = {id(p) for g in optimizer.param_groups if g["algorithm"] == "steepest" for p in g["params"]}
        mods = {
            n: m for n, m in model.named_modules() if getattr(m, "weight", None) is not None and id(m.weight) in wanted
        }
        try:
            self._capture = ActivationCapture(model, self._deciding, grads=self.criterion == "spec_sign", names=mods)
        except ValueError:
            if self.criterion == "dd":
                raise
            self._capture = None  # no supported layer: every parameter uses the gradient-only proxy
        if self._capture is not None:
            self._module_of = {id(m.weight): n for n, m in self._capture.layers.items()}

    def __getstate__(self) -> dict:
        # the activation hooks belong to the original model: a copy uses the gradient-only proxy
        return dict(self.__dict__, _capture=None, _module_of={})

    def _deciding(self) -> bool:
        return self.t % self.every == 0

    # ------------------------------------------------------------------------------- decisions
    def _activations(self, p: torch.Tensor) -> tuple[list, torch.Tensor | None]:
        """The captured calls of ``p``'s layer at this decision and their rows A (None: not hooked)."""
        name = self._module_of.get(id(p))
        calls: list = self._capture.rows(name) if (self._capture is not None and name is not None) else []
        return calls, activation_matrix(calls) if calls else None

    def _scores(self, p: torch.Tensor, G: torch.Tensor, state: dict) -> tuple[C.GeometryScores, str]:
        # DD: every layer's scores were solved together in choose() (the same numbers as dd_scores alone);
        # None there (a non-finite A) falls through to the fallbacks below, as dd_scores' None does
        solved = self._dd.get(id(p))
        if solved is not None:
            return solved, "dd"
        calls, A = self._activations(p)
        if self.criterion == "dd" and id(p) not in self._dd and A is not None and A.numel():
            scores = C.dd_scores(G, A)
            if scores is not None:
                return scores, "dd"
        Gm = geo.matrix_view(G).double()
        norms = {g: float(dual_norm(Gm, g)) for g in self.candidates}
        if A is not None and A.numel() and bool(torch.isfinite(A).all()):
            A = A.double()
            H = {g: C.kfac_curvature(dualize(Gm, g), A) for g in self.candidates}
            mb = microbatch_grads(calls, self.microbatches)
            if mb is None:
                return C.score_geometries(norms, None, None, H), "activations"
            grads, b = mb
            noise = C.noise_scales(grads, b, self.candidates)
            return C.score_geometries(norms, noise, b * self.microbatches, H), "spec_sign"
        prev_grad = state.get("prev_grad")
        prev = None if prev_grad is None else _full(prev_grad)
        rows = Gm if prev is None else torch.cat([Gm, geo.matrix_view(prev).double()])
        H = {g: C.kfac_curvature(dualize(Gm, g), rows) for g in self.candidates}
        if prev is None:
            return C.score_geometries(norms, None, None, H), "gradient-proxy"
        diff = Gm - geo.matrix_view(prev).double()
        spread = {g: float(dual_norm(diff, g)) / math.sqrt(2.0) for g in self.candidates}
        return C.score_geometries(norms, spread, 1 if spread else None, H), "gradient-proxy"

    @staticmethod
    def _advantage(s: C.GeometryScores, new: str, old: str) -> float:
        """How much ``new`` beats ``old``: the ratio of their predicted decreases (or SNRs when every bound
        is vacuous)."""
        a, b = (s.snr[new], s.snr[old]) if s.regime == "noise-dominated" else (s.decrease[new], s.decrease[old])
        if b == 0:
            return math.inf if a > 0 else 1.0
        if math.isinf(a) and math.isinf(b):
            return 1.0
        return a / b

    #: Scores within this relative distance count as tied, and ties go to the first candidate: a
    #: last-bit difference (another thread count, another machine) cannot change the winner.
    TIE_RTOL = 1e-9

    def _winner(self, s: C.GeometryScores) -> str:
        if s.winner == "none":
            return "none"
        vals = s.snr if s.regime == "noise-dominated" else s.decrease
        best = max(vals[g] for g in self.candidates)
        return next(g for g in self.candidates if vals[g] >= best * (1 - self.TIE_RTOL))

    def _decide(self, p: torch.Tensor, G: torch.Tensor, state: dict, name: str) -> None:
        """Hysteresis: the layer starts on ``initial``; a challenger replaces the current geometry when it
        wins by a factor 1 + margin (the first decision at once, later ones ``patience`` times in a row),
        so a near-tie, where rounding could decide, never switches. One candidate: nothing to score."""
        if len(self.candidates) == 1:
            state["geometry"] = C.GEOMETRIES.index(self.initial)
            return
        s, source = self._scores(p, G, state)
        current = _geometry(state)
        target, switched = self._winner(s), False
        if target == "none":
            target = current or self.initial
        if current is None:
            current = self.initial
            if target != current and self._advantage(s, target, current) > 1.0 + self.margin:
                current, switched = target, True
            state["streak"], state["challenger"] = 0, -1
        elif target != current and self._advantage(s, target, current) > 1.0 + self.margin:
            same = state.get("challenger", -1) == C.GEOMETRIES.index(target)
            state["streak"] = state.get("streak", 0) + 1 if same else 1
            state["challenger"] = C.GEOMETRIES.index(target)
            if state["streak"] >= self.patience:
                current, switched = target, True
                state["challenger"], state["streak"] = -1, 0
        else:
            state["challenger"], state["streak"] = -1, 0
        state["geometry"] = C.GEOMETRIES.index(current)
        self.history.append(
            {
                "step": self.t,
                "param": name,
                "geometry": current,
                "winner": s.winner,
                "switched": switched,
                "regime": s.regime,
                "source": source,
                "decrease": {g: float(v) for g, v in s.decrease.items()},
            }
        )

    def _measure(self, blocks: list) -> dict:
        """The oracle on every block: ``{id(param): {geometry: measured decrease}}`` (see ``oracle_step``)."""
        model, loss = self.oracle_model, self.oracle_loss
        if model is None or loss is None:  # criterion="oracle" is constructed with both
            raise RuntimeError("the oracle criterion needs model= and oracle_loss=")
        by_id = {id(p): n for n, p in model.named_parameters()}
        if self.oracle_step == "own":
            steps: dict[str, dict[str, torch.Tensor]] = {}
            ids: dict[str, int] = {}
            for b in blocks:
                name = by_id.get(id(b.param))
                if name is None or b.grad is None:
                    continue
                c = b.cfg
                trial = {k: v.clone() for k, v in b.state.items() if k == "momentum_buffer"}  # state untouched
                M = direction_source(_full(b.G), trial, c.momentum, c.nesterov)
                W, lr = b.param.detach(), b.lr
                steps[name], ids[name] = {}, id(b.param)
                for cand in self.candidates:
                    U = compute_update(M, **c.update_kwargs(cand, None))
                    steps[name][cand] = (lr * self._lr_scale(b, cand)) * U.to(W.dtype) + (lr * b.weight_decay) * W
            result = step_decreases(model, loss, steps)
            return {ids[n]: dec for n, dec in result.items()}
        grads: dict[str, torch.Tensor] = {}
        views: dict[str, dict] = {}
        ids = {}
        for b in blocks:
            name = by_id.get(id(b.param))
            if name is None or b.grad is None:
                continue
            grads[name], ids[name] = _full(b.grad), id(b.param)
            views[name] = {"transposed": b.cfg.transposed, "tensor_mode": b.cfg.tensor_mode}
        probed = layer_oracle(model, loss, grads, geometries=[(g, None) for g in self.candidates], views=views)
        return {ids[n]: {g: probes[g].decrease for g in self.candidates} for n, probes in probed.items()}

    def _decide_measured(self, b, decrease: dict | None, name: str) -> None:
        """The oracle Adaptive: the geometry with the largest measured decrease, no hysteresis (an upper
        bound for what a criterion can capture); a layer where nothing decreases keeps its geometry."""
        current = _geometry(b.state) or self.initial
        winner = current
        if decrease:
            best = max(decrease.values())
            if best > 0:
                winner = next(g for g in self.candidates if decrease[g] >= best * (1 - self.TIE_RTOL))
        b.state["geometry"] = C.GEOMETRIES.index(winner)
        self.history.append(
            {
                "step": self.t,
                "param": name,
                "geometry": winner,
                "winner": winner,
                "switched": winner != current,
                "regime": "measured",
                "source": "oracle",
                "decrease": {g: float(v) for g, v in (decrease or {}).items()},
            }
        )

    # ------------------------------------------------------------------------------- stepping
    def choose(self, blocks: list, executor) -> None:
        """Each matrix block's geometry and lr multiplier, nothing else (vectors in an entrywise group keep
        the group's norm)."""
        blocks = [b for b in blocks if b.param.ndim >= 2]
        if self._deciding():
            start = len(self.history)
            measured = self._measure(blocks) if self.criterion == "oracle" else {}
            grads: dict = {}
            if self.criterion == "dd" and len(self.candidates) > 1:  # one batched eigensolve per size for all
                grads = {id(b.param): _full(b.G) for b in blocks}
                acts = {id(b.param): self._activations(b.param)[1] for b in blocks}
                self._dd = C.dd_scores_many({k: (grads[k], A) for k, A in acts.items() if A is not None and A.numel()})
            for b in blocks:
                if self.criterion == "oracle":
                    self._decide_measured(b, measured.get(id(b.param)), b.label)
                else:
                    G = grads[id(b.param)] if id(b.param) in grads else _full(b.G)
                    self._decide(b.param, G, b.state, b.label)
                b.state.pop("prev_grad", None)
            self._dd = {}
            codes = torch.tensor(
                [int(b.state.get("geometry", C.GEOMETRIES.index(self.initial))) for b in blocks], dtype=torch.int64
            )
            agreed = executor.agree(codes) if executor is not None else codes
            if not torch.equal(agreed, codes):
                for b, code in zip(blocks, agreed.tolist()):
                    b.state["geometry"] = code
                chosen = {b.label: C.GEOMETRIES[c] for b, c in zip(blocks, agreed.tolist())}
                for h in self.history[start:]:
                    h["geometry"] = chosen.get(h["param"], h["geometry"])
        # the gradient-only proxy needs the previous gradient at a decision; the oracle and one candidate don't
        keep_prev = (self.t + 1) % self.every == 0 and self.criterion != "oracle" and len(self.candidates) > 1
        for b in blocks:
            if keep_prev and id(b.param) not in self._module_of:
                b.state["prev_grad"] = b.grad.detach().clone()
            g = _geometry(b.state) or self.initial
            b.norm, b.p = g, None
            b.lr_scale = self._lr_scale(b, g)

    def _lr_scale(self, b, g: str) -> float:
        """The block's lr multiplier in geometry ``g``: ``lr_multipliers[g]`` times the RMS match."""
        scale = self.lr_multipliers[g]
        if self.rms_match and b.cfg.step_size == "fixed":
            shape = geo.matrix_shape(tuple(b.param.shape), b.cfg.tensor_mode, b.cfg.transposed)
            if self.rms_match == "spectral":
                if g != "spectral":
                    scale *= geo.rms_factor(shape, g) / geo.rms_factor(shape, "spectral")
            else:
                scale *= geo.rms_factor(shape, g)
        return scale

    def observe(self, step: int, loss=None, stats: dict | None = None) -> None:
        if self._capture is not None:
            self._capture.clear()
        super().observe(step, loss, stats)

    # ------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        return {"t": self.t, "history": [dict(h, decrease=dict(h["decrease"])) for h in self.history]}

    def check_state(self, optimizer, state_dict: dict) -> None:
        """Every layer's saved geometry must be one of the candidates (and the hysteresis counters sane)."""
        super().check_state(optimizer, state_dict)
        own = state_dict.get("chooser", state_dict.get("adaptive"))
        if own is not None and not isinstance(own.get("history", []), list):
            raise ValueError("the chooser's history must be a list")
        n = len(C.GEOMETRIES)
        for gi, group in enumerate(state_dict["param_groups"]):
            for j, idx in enumerate(group["params"]):
                st = state_dict["state"].get(idx) or {}
                who = optimizer._name(gi, j)
                code = st.get("geometry")
                if code is not None:
                    if not _whole(code, 0, n - 1):
                        raise ValueError(f"{who} has geometry code {code!r}, not an index into {C.GEOMETRIES}")
                    g = C.GEOMETRIES[int(code)]
                    if g not in self.candidates:
                        raise ValueError(
                            f"{who} was saved on geometry {g!r}, which is not among this optimizer's "
                            f"candidates {self.candidates}; add it to candidates to resume this state"
                        )
                if "challenger" in st and not _whole(st["challenger"], -1, n - 1):
                    raise ValueError(f"{who} has challenger {st['challenger']!r}, expected -1 or an index < {n}")
                if "streak" in st and not _whole(st["streak"], 0):
                    raise ValueError(f"{who} has streak {st['streak']!r}, expected a whole number >= 0")

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.history = [dict(h, decrease=dict(h["decrease"])) for h in state.get("history", [])]

    def geometries(self, optimizer) -> dict[str, str]:
        """Current geometry per matrix parameter name of ``optimizer``'s steepest groups."""
        return {name: _geometry(optimizer.state[p]) or self.initial for name, p in steepest_params(optimizer)}

    def remove_hooks(self) -> None:
        """Remove the activation hooks placed on ``model`` (the chooser then uses the gradient-only proxy)."""
        if self._capture is not None:
            self._capture.remove()
            self._capture, self._module_of = None, {}


__all__ = ["Chooser", "GeometryChooser", "CRITERIA"]
