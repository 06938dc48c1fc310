"""SteepestDescent: one torch.optim.Optimizer for every norm, plus an AdamW route for the rest.

The class only collects tensors and settings; the math of a step is :func:`steepest.optim.functional.
steepest_step` (the one step kernel), and everything about a norm is in :mod:`steepest.geometry`.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from steepest import geometry as geo
from steepest.linalg.coefficients import MUON_QUINTIC
from steepest.optim import batched
from steepest.optim import functional as F
from steepest.optim.functional import NonFiniteGradientError

ALGORITHMS = ("steepest", "adamw")
NONFINITE = ("raise", "skip")
#: Group keys that configure the dualizer; checked against the group's norm when a group sets them.
_DUALIZER_KEYS = geo.POLAR_SETTINGS + ("dtype",)
#: Roles from steepest.param_groups whose default weight decay is 0 (norm gains and biases).
NO_DECAY_ROLES = ("vector",)


def _check_number(name: str, value, lo: float, hi: float = math.inf, hi_open: bool = False) -> None:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} as a tensor must have one element, got shape {tuple(value.shape)}")
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if value < lo or value > hi or (hi_open and value == hi):
        bound = f"[{lo}, {hi})" if hi_open else f"[{lo}, {hi}]"
        raise ValueError(f"{name} must be in {bound}, got {value!r}")


class SteepestDescent(torch.optim.Optimizer):
    r"""Steepest descent under a matrix norm, with momentum, weight decay and a step-size rule.

    Per parameter block W (gradient G), each step computes (lecture notes on spectral descent;
    "Steepest descent under Schatten-p norms")::

        M = G | EMA momentum B <- mu B + (1-mu) G, M = B | Nesterov M = (1-mu) G + mu B
        D = argmax_{||D|| <= 1} <M, D>                 (steepest.dualize under the group's norm)
        W <- (1 - lr * weight_decay) W - lr * scale * D

    with ``scale = shape_scale(W, scale_rule)`` for ``step_size="fixed"`` and
    ``scale = shape_scale(W, scale_rule) * ||M||^dagger`` for ``step_size="dual"``. With
    ``norm="spectral", step_size="dual", lr=1/L_*`` this is exactly the lecture notes'
    ``X <- X - (||G||_*/L_*) polar(G)``; with ``norm="frobenius", step_size="dual"`` it is gradient
    descent ``X <- X - lr G``.

    Parameter groups may set ``algorithm="adamw"`` (with ``lr``, ``betas``, ``eps``, ``weight_decay``)
    so one optimizer trains a whole model: see :func:`steepest.param_groups`. Constructor arguments
    are the defaults of every group that does not set its own (AdamW groups take ``adamw_lr``);
    groups with ``role="vector"`` (norm gains, biases) default to ``weight_decay=0``.

    Args:
        params: parameters or parameter groups (dicts; any argument below can be set per group).
        lr: learning rate (finite, >= 0).
        norm: ``"spectral"``, ``"frobenius"``, ``"linf"`` or ``"schatten"`` (needs ``p``).
        p: Schatten exponent in [1, inf] (only with ``norm="schatten"``; p = inf is spectral).
        momentum: EMA momentum in [0, 1). nesterov: Nesterov variant (needs momentum > 0).
        weight_decay: decoupled weight decay (finite, >= 0), applied as W *= 1 - lr * weight_decay.
        step_size: ``"fixed"`` or ``"dual"`` (see above).
        scale_rule: ``"none"``, ``"muon"`` sqrt(max(1, m/n)), ``"rms"`` 0.2 sqrt(max(m, n)) or
            ``"spectral"`` sqrt(fan_out / fan_in), on the (fan_out, fan_in) matrix view.
        method, steps, coefficients, normalization, ns_eps: how the polar factor is computed (spectral only;
            see :func:`steepest.polar`; ``ns_eps`` is its ``eps``, None: 1e-7); setting one for another norm
            is a ValueError.
        dtype: the dualizer's compute dtype (a torch dtype or its name); None (default) computes in
            the parameter's dtype promoted to at least float32, so float64 stays float64-accurate;
            ``"auto"``: bf16 for Newton-Schulz / Polar Express where the hardware has native bf16
            matmul, float32 elsewhere (:mod:`steepest.linalg.precision`).
        tensor_mode: ``"flatten"`` (conv kernels -> (out, in*kh*kw)) or ``"batch"`` (>= 3-D tensors
            as batches of matrices over their last two dims). A group may set ``transposed=True``
            for weights stored as (in, out) (GPT-2's Conv1D).
        nonfinite: ``"raise"`` (default) raises :class:`NonFiniteGradientError` naming the parameter
            before any weight changes; ``"skip"`` skips that parameter's step and counts it in
            ``optimizer.nonfinite_skipped`` and ``state[p]["nonfinite_skips"]``.
        adamw_lr, betas, eps: defaults for ``algorithm="adamw"`` groups (lr falls back to adamw_lr).

    Example:
        >>> model = torch.nn.Linear(8, 4, bias=False)
        >>> opt = SteepestDescent(model.parameters(), lr=0.1, norm="spectral")
        >>> model(torch.randn(2, 8)).square().sum().backward(); opt.step()
    """

    #: Step same-shape spectral matrices with one batched polar call (:mod:`steepest.optim.batched`):
    #: None (default) batches on accelerators and, on CPU, matrices of at most
    #: ``batched.CPU_MAX_NUMEL`` entries (larger ones measured no faster); True batches on every
    #: device; False never batches.
    batch_matrices: bool | None = None

    #: nesterov=True with momentum 0 is a ValueError (it would silently mean plain M = G); torch.optim.Muon's
    #: contract accepts it, so steepest.Muon sets this False.
    _nesterov_needs_momentum = True

    #: Attributes beyond torch's (defaults, state, param_groups) that copy.deepcopy and pickle keep.
    _copied_attributes = ("nonfinite", "nonfinite_skipped", "_adamw_lr", "batch_matrices")

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.02,
        norm: str = "spectral",
        p: float | None = None,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        step_size: str = "fixed",
        scale_rule: str = "none",
        method: str | None = None,
        steps: int | None = None,
        dtype: torch.dtype | str | None = None,
        coefficients: tuple | None = None,
        normalization: str | None = None,
        ns_eps: float | None = None,
        tensor_mode: str = "flatten",
        nonfinite: str = "raise",
        adamw_lr: float = 3e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
    ) -> None:
        if nonfinite not in NONFINITE:
            raise ValueError(f"nonfinite must be one of {NONFINITE}, got {nonfinite!r}")
        _check_number("adamw_lr", adamw_lr, 0.0, math.inf, hi_open=True)
        defaults = dict(
            algorithm="steepest", lr=lr, norm=norm, p=p, momentum=momentum, nesterov=nesterov,
            weight_decay=weight_decay, step_size=step_size, scale_rule=scale_rule, method=method,
            steps=steps, dtype=geo.dtype_name(dtype), coefficients=coefficients, normalization=normalization,
            ns_eps=ns_eps, tensor_mode=tensor_mode, transposed=False, betas=tuple(betas), eps=eps,
        )
        self._check_defaults(defaults)
        self.nonfinite = nonfinite
        self.nonfinite_skipped = 0
        self._adamw_lr = adamw_lr
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ validation
    def _check_defaults(self, defaults: dict) -> None:
        """The constructor's own settings must fit its norm (a recipe's preset, or the user's)."""
        geo.check_norm(defaults["norm"], defaults["p"])
        geo.check_settings(defaults["norm"], defaults["p"], **{k: defaults[k] for k in _DUALIZER_KEYS})

    def add_param_group(self, param_group: dict) -> None:
        """torch.optim's add_param_group, validated; a rejected group leaves the optimizer unchanged."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a param group must be a dict, got {type(param_group).__name__}")
        given = dict(param_group)
        group = dict(param_group)
        if group.get("algorithm") == "adamw" and "lr" not in group:
            group["lr"] = self._adamw_lr
        if group.get("role") in NO_DECAY_ROLES and "weight_decay" not in group:
            group["weight_decay"] = 0.0
        if "dtype" in group:
            group["dtype"] = geo.dtype_name(group["dtype"])
        n = len(self.param_groups)
        super().add_param_group(group)
        try:
            self._validate_group(self.param_groups[-1], n, given)
        except Exception:
            del self.param_groups[n:]  # atomic: a rejected group is not kept
            raise

    def _validate_group(self, group: dict, index: int, given: dict) -> None:
        if group["algorithm"] not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {group['algorithm']!r}")
        _check_number("lr", group["lr"], 0.0, math.inf, hi_open=True)
        _check_number("weight_decay", group["weight_decay"], 0.0, math.inf, hi_open=True)
        for p in group["params"]:
            if p.is_complex():
                raise ValueError(f"complex parameters are not supported (shape {tuple(p.shape)}, {p.dtype})")
        if group["algorithm"] == "adamw":
            b1, b2 = group["betas"]
            _check_number("betas[0]", b1, 0.0, 1.0, hi_open=True)
            _check_number("betas[1]", b2, 0.0, 1.0, hi_open=True)
            _check_number("eps", group["eps"], 0.0, math.inf, hi_open=True)
            return
        geo.check_norm(group["norm"], group["p"])
        self._check_group_settings(group, given)
        _check_number("momentum", group["momentum"], 0.0, 1.0, hi_open=True)
        if group["nesterov"] and group["momentum"] <= 0 and self._nesterov_needs_momentum:
            raise ValueError("nesterov=True needs momentum > 0")
        if group["step_size"] not in F.STEP_SIZES:
            raise ValueError(f"step_size must be one of {F.STEP_SIZES}, got {group['step_size']!r}")
        if group["scale_rule"] not in geo.SCALE_RULES:
            raise ValueError(f"scale_rule must be one of {geo.SCALE_RULES}, got {group['scale_rule']!r}")
        if group["tensor_mode"] not in geo.TENSOR_MODES:
            raise ValueError(f"tensor_mode must be one of {geo.TENSOR_MODES}, got {group['tensor_mode']!r}")
        if not isinstance(group["transposed"], bool):
            raise ValueError(f"transposed must be a bool, got {group['transposed']!r}")
        rb = group.get("row_blocks", 1)
        if rb != 1:  # the block layout of param_groups(split_qkv=/heads=): blocks of rows of the matrix view
            for p in group["params"]:
                rows = geo.matrix_shape(tuple(p.shape), group["tensor_mode"], group["transposed"])[-2:][0]
                if isinstance(rb, bool) or not isinstance(rb, int) or rb < 1 or p.ndim < 2 or rows % rb:
                    raise ValueError(f"row_blocks={rb!r} must be an int that divides the {rows} rows of the matrix "
                                     f"view of a parameter of shape {tuple(p.shape)}")
        if self._needs_matrices(group):
            names = group.get("names")
            for j, p in enumerate(group["params"]):
                if p.ndim < 2:
                    who = names[j] if names and j < len(names) else f"param_groups[{index}]['params'][{j}]"
                    raise ValueError(
                        f"parameter {who} has shape {tuple(p.shape)}, but norm={group['norm']!r} needs a "
                        "matrix (>= 2-D). Route vectors (biases, norm gains) to AdamW with "
                        "steepest.param_groups(model), or use an entrywise norm ('frobenius', 'linf') for them.")

    def _check_group_settings(self, group: dict, given: dict) -> None:
        """Dualizer settings must apply to the group's norm: all of them for a spectral group, those the
        group sets itself otherwise (settings inherited from the constructor are then unused)."""
        spectral = geo.resolve(group["norm"], group["p"])[0] == "spectral"
        keys = [k for k in _DUALIZER_KEYS if spectral or k in given]
        geo.check_settings(group["norm"], group["p"], **{k: group[k] for k in keys})

    def _needs_matrices(self, group: dict) -> bool:
        return not geo.is_entrywise(group["norm"])

    # ------------------------------------------------------------------ checkpoints
    #: Group settings that define what a step is: a state_dict saved with other values would silently
    #: change the optimizer (a SignSGD taking spectral steps), so loading one is an error.
    _GEOMETRY_KEYS = ("algorithm", "norm", "p", "tensor_mode", "transposed")
    #: Per-parameter state tensors that have the parameter's shape.
    _SHAPED_STATE = ("momentum_buffer", "exp_avg", "exp_avg_sq", "prev_grad")

    def load_state_dict(self, state_dict: dict) -> None:
        """torch.optim's load_state_dict, refusing a state_dict of another geometry or other shapes."""
        groups = state_dict.get("param_groups", [])
        if len(groups) == len(self.param_groups):
            for gi, (saved, cur) in enumerate(zip(groups, self.param_groups)):
                for key in self._GEOMETRY_KEYS:
                    if key in saved and key in cur and saved[key] != cur[key]:
                        raise ValueError(
                            f"state_dict param_groups[{gi}] has {key}={saved[key]!r} but this optimizer's has "
                            f"{key}={cur[key]!r}: it was saved by a different optimizer or routing. Build the same "
                            "optimizer (recipe, norm, param_groups) that saved it; nothing was loaded.")
                for j, idx in enumerate(saved.get("params", [])):
                    if j >= len(cur["params"]):
                        break
                    p = cur["params"][j]
                    for key, v in state_dict.get("state", {}).get(idx, {}).items():
                        if key in self._SHAPED_STATE and torch.is_tensor(v) and tuple(v.shape) != tuple(p.shape):
                            raise ValueError(
                                f"state_dict holds {key} of shape {tuple(v.shape)} for {self._name(gi, j)}: it was "
                                "saved for a model with other shapes; nothing was loaded.")
        super().load_state_dict(state_dict)

    # ------------------------------------------------------------------ copies
    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.update({k: self.__dict__[k] for k in self._copied_attributes if k in self.__dict__})
        return state

    # ------------------------------------------------------------------ stepping
    def _name(self, gi: int, j: int) -> str:
        names = self.param_groups[gi].get("names")
        p = self.param_groups[gi]["params"][j]
        who = names[j] if names and j < len(names) else f"param_groups[{gi}]['params'][{j}]"
        return f"{who} (shape {tuple(p.shape)})"

    def _blocks(self, with_missing: bool = False) -> list[F.Block]:
        """One :class:`~steepest.optim.functional.Block` per parameter with a gradient (or every one)."""
        for gi, group in enumerate(self.param_groups):
            F.check_hyperparameters(group, gi)
        return [F.Block(p, p.grad, self.state, group, self._name(gi, j))
                for gi, group in enumerate(self.param_groups) for j, p in enumerate(group["params"])
                if with_missing or p.grad is not None]

    def _count_skip(self, block: F.Block) -> None:
        block.state["nonfinite_skips"] = block.state.get("nonfinite_skips", 0) + 1
        self.nonfinite_skipped += 1

    def _check(self, blocks: list[F.Block]) -> list[bool]:
        return F.local_check(blocks)

    def _choose(self, blocks: list[F.Block]) -> None:
        """Hook for subclasses that pick each block's geometry (steepest.Adaptive); nothing here."""

    def _dualizer(self, blocks: list[F.Block]) -> list[tuple[torch.Tensor, bool]]:
        if self.batch_matrices is False:
            return F.dualize_each(blocks)
        return batched.dualize_batched(blocks, cpu=self.batch_matrices is True)

    def _after_step(self) -> None:
        """Hook run after every step (steepest.Adaptive clears its captured activations)."""

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        """Take one step; returns the closure's loss if a closure is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        F.steepest_step(self._blocks(), nonfinite=self.nonfinite, on_skip=self._count_skip, check=self._check,
                        choose=self._choose, dualizer=self._dualizer)
        self._after_step()
        return loss


__all__ = ["SteepestDescent", "NonFiniteGradientError", "MUON_QUINTIC"]
