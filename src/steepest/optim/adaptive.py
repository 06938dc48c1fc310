"""Adaptive: steepest descent that picks each layer's geometry (spectral, linf, frobenius) as it trains.

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
  spectral wins iff nr(G) >= st(A)); candidates must then be spectral and frobenius;
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
saved in ``state_dict()``; :meth:`Adaptive.geometries` gives the current choice per parameter.

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
    >>> opt = Adaptive(steepest.param_groups(model), lr=0.02)                # gradient-only proxy
    >>> opt = Adaptive(steepest.param_groups(model), lr=0.02, model=model)   # activation-based criterion
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterable

import torch
from torch import nn

from steepest import geometry as geo
from steepest.diagnostics import criteria as C
from steepest.diagnostics.oracle import layer_oracle, step_decreases
from steepest.diagnostics.probe import ActivationCapture, activation_matrix, microbatch_grads
from steepest.geometry import dual_norm, dualize
from steepest.optim.functional import compute_update, direction_source
from steepest.optim.steepest import SteepestDescent

CRITERIA = ("spec_sign", "dd", "oracle")


def _full(t: torch.Tensor | None) -> torch.Tensor | None:
    """The whole tensor of a sharded (DTensor) gradient: a collective that every rank calls on a decision
    step; plain tensors as they are."""
    return t.full_tensor() if t is not None and hasattr(t, "full_tensor") else t


def _geometry(state: dict) -> str | None:
    """The layer's current geometry; stored as an index into GEOMETRIES so state_dict holds plain ints
    (torch's load_state_dict would mangle strings inside per-parameter state)."""
    code = state.get("geometry")
    return None if code is None else C.GEOMETRIES[int(code)]


class Adaptive(SteepestDescent):
    """Per-layer geometry choice among ``candidates`` by the Spec-Sign / Davis-Drusvyatskiy criteria.

    Args (beyond :class:`steepest.SteepestDescent`'s, which apply to the matrix groups):
        candidates: geometries to choose from, a subset of ("spectral", "linf", "frobenius").
        every: decide every ``every`` steps (steps 0, every, ...). initial: the geometry every layer starts
            on (default: spectral if it is a candidate, else the first candidate).
        model: optional nn.Module whose Linear/Conv2d layers are hooked for the activation criterion.
        criterion: "spec_sign" or "dd" (the latter needs ``model``; see the module docstring).
        microbatches: K >= 2 chunks for the noise scales. margin, patience: hysteresis.
        lr_multipliers: dict geometry -> multiplier. rms_match: True (unit RMS per geometry), "spectral"
            (every geometry at a full-rank spectral step's RMS; spectral unscaled) or False.

    See the module docstring for the formulas. Example:
        >>> W = torch.nn.Parameter(torch.randn(8, 4))
        >>> opt = Adaptive([W], lr=0.01, every=5)
    """

    def __init__(self, params: Iterable, lr: float = 0.02, candidates: Iterable[str] = C.GEOMETRIES, every: int = 10,
                 model: nn.Module | None = None, criterion: str = "spec_sign", microbatches: int = 4,
                 margin: float = 0.1, patience: int = 2, lr_multipliers: dict | None = None,
                 rms_match: bool | str = True, initial: str | None = None, oracle_loss=None,
                 oracle_step: str = "own", **kwargs) -> None:
        candidates = tuple(candidates)
        if not candidates or any(g not in C.GEOMETRIES for g in candidates) or len(set(candidates)) != len(candidates):
            raise ValueError(f"candidates must be distinct names from {C.GEOMETRIES}, got {candidates!r}")
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
        if criterion == "dd" and (model is None or set(candidates) - {"spectral", "frobenius"}):
            raise ValueError("criterion='dd' compares spectral with frobenius from activations: pass model= and "
                             "candidates=('spectral', 'frobenius')")
        if criterion == "oracle" and (model is None or not callable(oracle_loss)):
            raise ValueError("criterion='oracle' measures each layer's decrease on a held-out batch: pass model= and "
                             "oracle_loss=a callable returning the held-out loss at the model's current weights")
        if oracle_step not in ("own", "best"):
            raise ValueError(f"oracle_step must be 'own' (the optimizer's step) or 'best' (line search), got {oracle_step!r}")
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
            if g not in candidates or not isinstance(v, (int, float)) or v < 0:
                raise ValueError(f"lr_multipliers must map candidate geometries to numbers >= 0, got {g!r}: {v!r}")
            mult[g] = float(v)
        kwargs.setdefault("norm", initial)
        self._candidates_pending = candidates
        super().__init__(params, lr=lr, **kwargs)
        del self._candidates_pending
        self.candidates, self.every, self.criterion, self.microbatches = candidates, every, criterion, microbatches
        self.margin, self.patience, self.lr_multipliers, self.rms_match = float(margin), patience, mult, rms_match
        self.initial, self.oracle_step = initial, oracle_step
        self.history: list[dict] = []
        self._t = 0
        self._capture, self._module_of = None, {}
        self._oracle_model, self._oracle_loss = (model, oracle_loss) if criterion == "oracle" else (None, None)
        if model is not None and criterion != "oracle" and len(candidates) > 1:  # one candidate: nothing to decide
            wanted = {id(p) for g in self.param_groups if g["algorithm"] == "steepest" for p in g["params"]}
            mods = {n: m for n, m in model.named_modules() if getattr(m, "weight", None) is not None
                    and id(m.weight) in wanted}
            try:
                self._capture = ActivationCapture(model, self._deciding, grads=criterion == "spec_sign", names=mods)
            except ValueError:
                if criterion == "dd":
                    raise
                self._capture = None  # no supported layer: every parameter uses the gradient-only proxy
            if self._capture is not None:
                self._module_of = {id(m.weight): n for n, m in self._capture.layers.items()}

    _copied_attributes = SteepestDescent._copied_attributes + (
        "candidates", "every", "criterion", "microbatches", "margin", "patience", "lr_multipliers", "rms_match",
        "initial", "oracle_step", "history", "_t", "_oracle_model", "_oracle_loss")

    def __getstate__(self) -> dict:
        # the activation hooks belong to the original model: a copy uses the gradient-only proxy
        state = super().__getstate__()
        state.update(_capture=None, _module_of={})
        return state

    def _check_defaults(self, defaults: dict) -> None:
        """Dualizer settings must apply to at least one candidate geometry (they are used for those only)."""
        for g in getattr(self, "_candidates_pending", (defaults["norm"],)):
            try:
                geo.check_settings(g, None, **{k: defaults[k] for k in ("method", "steps", "coefficients",
                                                                         "normalization", "dtype")})
                return
            except ValueError as e:
                err = e
        raise err

    def _check_group_settings(self, group: dict, given: dict) -> None:
        pending = getattr(self, "_candidates_pending", None) or getattr(self, "candidates", (group["norm"],))
        if "spectral" in pending:
            geo.check_settings("spectral", None, **{k: group[k] for k in ("method", "steps", "coefficients",
                                                                          "normalization", "dtype")})

    @property
    def _names(self) -> dict[int, str]:
        """Parameter id -> name, from the groups' ``names`` (so copies and added groups stay right)."""
        out = {}
        for gi, group in enumerate(self.param_groups):
            names = group.get("names")
            for j, p in enumerate(group["params"]):
                out[id(p)] = names[j] if names and j < len(names) else f"group{gi}.{j}"
        return out

    def _deciding(self) -> bool:
        return self._t % self.every == 0

    # ------------------------------------------------------------------------------- decisions
    def _scores(self, p: torch.Tensor, G: torch.Tensor, state: dict) -> tuple[C.GeometryScores, str]:
        name = self._module_of.get(id(p))
        calls = self._capture.rows(name) if (self._capture is not None and name is not None) else []
        A = activation_matrix(calls) if calls else None
        if self.criterion == "dd" and A is not None and A.numel():
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
        prev = _full(state.get("prev_grad"))
        rows = Gm if prev is None else torch.cat([Gm, geo.matrix_view(prev).double()])
        H = {g: C.kfac_curvature(dualize(Gm, g), rows) for g in self.candidates}
        noise = None
        if prev is not None:
            diff = Gm - geo.matrix_view(prev).double()
            noise = {g: float(dual_norm(diff, g)) / math.sqrt(2.0) for g in self.candidates}
        return C.score_geometries(norms, noise, 1 if noise else None, H), "gradient-proxy"

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
        self.history.append({"step": self._t, "param": name, "geometry": current,
                             "winner": s.winner, "switched": switched, "regime": s.regime, "source": source,
                             "decrease": {g: float(v) for g, v in s.decrease.items()}})

    def _measure(self, blocks: list) -> dict:
        """The oracle on every block: ``{id(param): {geometry: measured decrease}}`` (see ``oracle_step``)."""
        model = self._oracle_model
        by_id = {id(p): n for n, p in model.named_parameters()}
        if self.oracle_step == "own":
            steps, ids = {}, {}
            for b in blocks:
                name = by_id.get(id(b.param))
                if name is None or b.grad is None:
                    continue
                g = b.group
                trial = {k: v.clone() for k, v in b.state.items() if k == "momentum_buffer"}  # state untouched
                M = direction_source(_full(b.grad), trial, g["momentum"], g["nesterov"])
                W, lr = b.param.detach(), float(g["lr"])
                steps[name], ids[name] = {}, id(b.param)
                for cand in self.candidates:
                    U = compute_update(M, **dataclasses.replace(b, norm=cand, p=None).settings())
                    steps[name][cand] = (lr * self._lr_scale(b, cand)) * U.to(W.dtype) + (lr * g["weight_decay"]) * W
            result = step_decreases(model, self._oracle_loss, steps)
            return {ids[n]: dec for n, dec in result.items()}
        grads, views, ids = {}, {}, {}
        for b in blocks:
            name = by_id.get(id(b.param))
            if name is None:
                continue
            grads[name], ids[name] = _full(b.grad), id(b.param)
            views[name] = {"transposed": bool(b.group.get("transposed", False)), "tensor_mode": b.group["tensor_mode"]}
        result = layer_oracle(model, self._oracle_loss, grads, geometries=[(g, None) for g in self.candidates],
                              views=views)
        return {ids[n]: {g: probes[g].decrease for g in self.candidates} for n, probes in result.items()}

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
        self.history.append({"step": self._t, "param": name, "geometry": winner, "winner": winner,
                             "switched": winner != current, "regime": "measured", "source": "oracle",
                             "decrease": {g: float(v) for g, v in (decrease or {}).items()}})

    # ------------------------------------------------------------------------------- stepping
    def _agree(self, codes: torch.Tensor) -> torch.Tensor:
        """Make every rank take the same choices (the distributed version broadcasts rank 0's)."""
        return codes

    def _choose(self, blocks: list) -> None:
        """The kernel's ``choose`` stage: each matrix block's geometry and lr multiplier, nothing else
        (vectors in an entrywise group keep the group's norm)."""
        blocks = [b for b in blocks if b.param.ndim >= 2]
        deciding = self._deciding()
        if deciding:
            start = len(self.history)
            names = self._names
            measured = self._measure(blocks) if self.criterion == "oracle" else {}
            for b in blocks:
                if self.criterion == "oracle":
                    self._decide_measured(b, measured.get(id(b.param)), names.get(id(b.param), "?"))
                else:
                    self._decide(b.param, _full(b.grad), b.state, names.get(id(b.param), "?"))
                b.state.pop("prev_grad", None)
            codes = torch.tensor([int(b.state.get("geometry", C.GEOMETRIES.index(self.initial))) for b in blocks],
                                 dtype=torch.int64)
            agreed = self._agree(codes)
            if not torch.equal(agreed, codes):
                for b, code in zip(blocks, agreed.tolist()):
                    b.state["geometry"] = code
                chosen = {names.get(id(b.param)): C.GEOMETRIES[c] for b, c in zip(blocks, agreed.tolist())}
                for h in self.history[start:]:
                    h["geometry"] = chosen.get(h["param"], h["geometry"])
        # the gradient-only proxy needs the previous gradient at a decision; the oracle and one candidate don't
        keep_prev = ((self._t + 1) % self.every == 0 and self.criterion != "oracle" and len(self.candidates) > 1)
        for b in blocks:
            if keep_prev and id(b.param) not in self._module_of:
                b.state["prev_grad"] = b.grad.detach().clone()
            g = _geometry(b.state) or self.initial
            b.norm, b.p = g, None
            b.lr_scale = self._lr_scale(b, g)

    def _lr_scale(self, b, g: str) -> float:
        """The block's lr multiplier in geometry ``g``: ``lr_multipliers[g]`` times the RMS match."""
        scale = self.lr_multipliers[g]
        if self.rms_match and b.group["step_size"] == "fixed":
            shape = geo.matrix_shape(tuple(b.param.shape), b.group["tensor_mode"], bool(b.group.get("transposed", False)))
            if self.rms_match == "spectral":
                if g != "spectral":
                    scale *= geo.rms_factor(shape, g) / geo.rms_factor(shape, "spectral")
            else:
                scale *= geo.rms_factor(shape, g)
        return scale

    def _after_step(self) -> None:
        if self._capture is not None:
            self._capture.clear()
        self._t += 1

    # ------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict:
        sd = super().state_dict()
        sd["adaptive"] = {"t": self._t, "history": [dict(h, decrease=dict(h["decrease"])) for h in self.history]}
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        state_dict = dict(state_dict)
        extra = state_dict.pop("adaptive", None)
        super().load_state_dict(state_dict)
        if extra is not None:
            self._t = int(extra["t"])
            self.history = [dict(h, decrease=dict(h["decrease"])) for h in extra["history"]]

    def geometries(self) -> dict[str, str]:
        """Current geometry per matrix parameter name."""
        names = self._names
        return {names[id(p)]: _geometry(self.state[p]) or self.initial
                for g in self.param_groups if g["algorithm"] == "steepest" for p in g["params"]}

    def remove_hooks(self) -> None:
        """Remove the activation hooks placed on ``model`` (the optimizer then uses the gradient-only proxy)."""
        if self._capture is not None:
            self._capture.remove()
            self._capture, self._module_of = None, {}


__all__ = ["Adaptive", "CRITERIA"]
