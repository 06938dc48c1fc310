"""SteepestDescent: one torch.optim.Optimizer for every norm, plus an AdamW route for the rest."""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch

from steepest.linalg.coefficients import MUON_QUINTIC
from steepest.linalg.polar import METHODS, NORMALIZATIONS
from steepest.norms import ENTRYWISE, check_norm
from steepest.optim import functional as F
from steepest.optim.batched import batched_step

ALGORITHMS = ("steepest", "adamw")
NONFINITE = ("raise", "skip")
DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64, "float16": torch.float16}


class NonFiniteGradientError(FloatingPointError):
    """Raised by ``step()`` when a gradient holds NaN or Inf (nothing has been changed)."""


def _dtype_name(dtype) -> str:
    if isinstance(dtype, str):
        if dtype not in DTYPE_NAMES:
            raise ValueError(f"dtype must be one of {sorted(DTYPE_NAMES)}, got {dtype!r}")
        return dtype
    for name, d in DTYPE_NAMES.items():
        if d == dtype:
            return name
    raise ValueError(f"dtype must be one of {sorted(DTYPE_NAMES)}, got {dtype!r}")


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

    Per parameter block W (gradient G), each step computes (DESIGN.md "One idea"; seed 000, seed 003)::

        M = G | EMA momentum B <- mu B + (1-mu) G, M = B | Nesterov M = (1-mu) G + mu B
        D = argmax_{||D|| <= 1} <M, D>                 (steepest.dualize under the group's norm)
        W <- (1 - lr * weight_decay) W - lr * scale * D

    with ``scale = shape_scale(W, scale_rule)`` for ``step_size="fixed"`` and
    ``scale = shape_scale(W, scale_rule) * ||M||^dagger`` for ``step_size="dual"``. With
    ``norm="spectral", step_size="dual", lr=1/L_*`` this is exactly seed 000's
    ``X <- X - (||G||_*/L_*) polar(G)``; with ``norm="frobenius", step_size="dual"`` it is gradient
    descent ``X <- X - lr G``.

    Parameter groups may set ``algorithm="adamw"`` (with ``lr``, ``betas``, ``eps``, ``weight_decay``)
    so one optimizer trains a whole model: see :func:`steepest.param_groups`.

    Args:
        params: parameters or parameter groups (dicts; any argument below can be set per group).
        lr: learning rate (>= 0).
        norm: ``"spectral"``, ``"frobenius"``, ``"linf"`` or ``"schatten"`` (needs ``p``).
        p: Schatten exponent in [1, inf] (only with ``norm="schatten"``).
        momentum: EMA momentum in [0, 1). nesterov: Nesterov variant (needs momentum > 0).
        weight_decay: decoupled weight decay (>= 0), applied as W *= 1 - lr * weight_decay.
        step_size: ``"fixed"`` or ``"dual"`` (see above).
        scale_rule: ``"none"``, ``"muon"`` sqrt(max(1, m/n)), ``"rms"`` 0.2 sqrt(max(m, n)) or
            ``"spectral"`` sqrt(fan_out / fan_in).
        method, steps, dtype, coefficients, normalization: how the polar factor is computed (see
            :func:`steepest.polar`); ``dtype`` may be a torch dtype or its name.
        tensor_mode: ``"flatten"`` (conv kernels -> (out, in*kh*kw)) or ``"batch"`` (>= 3-D tensors
            as batches of matrices over their last two dims).
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
    #: None (default) batches parameters on accelerators only (on CPU it measured no faster,
    #: benchmarks/RESULTS.md, "Core"); True batches on every device; False never batches.
    batch_matrices: bool | None = None

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
        method: str = "svd",
        steps: int | None = None,
        dtype: torch.dtype | str = torch.float32,
        coefficients: tuple | None = None,
        normalization: str | None = None,
        tensor_mode: str = "flatten",
        nonfinite: str = "raise",
        adamw_lr: float = 3e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
    ) -> None:
        if nonfinite not in NONFINITE:
            raise ValueError(f"nonfinite must be one of {NONFINITE}, got {nonfinite!r}")
        _check_number("adamw_lr", adamw_lr, 0.0)
        defaults = dict(
            algorithm="steepest", lr=lr, norm=norm, p=p, momentum=momentum, nesterov=nesterov,
            weight_decay=weight_decay, step_size=step_size, scale_rule=scale_rule, method=method,
            steps=steps, dtype=_dtype_name(dtype), coefficients=coefficients, normalization=normalization,
            tensor_mode=tensor_mode, betas=tuple(betas), eps=eps,
        )
        self.nonfinite = nonfinite
        self.nonfinite_skipped = 0
        self._adamw_lr = adamw_lr
        super().__init__(params, defaults)

    # ------------------------------------------------------------------ validation
    def add_param_group(self, param_group: dict) -> None:
        if param_group.get("algorithm") == "adamw" and "lr" not in param_group:
            param_group = dict(param_group, lr=self._adamw_lr)
        if "dtype" in param_group:
            param_group = dict(param_group, dtype=_dtype_name(param_group["dtype"]))
        super().add_param_group(param_group)
        self._validate_group(self.param_groups[-1], len(self.param_groups) - 1)

    def _validate_group(self, group: dict, index: int) -> None:
        if group["algorithm"] not in ALGORITHMS:
            raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {group['algorithm']!r}")
        _check_number("lr", group["lr"], 0.0)
        _check_number("weight_decay", group["weight_decay"], 0.0)
        for p in group["params"]:
            if p.is_complex():
                raise ValueError(f"complex parameters are not supported (shape {tuple(p.shape)}, {p.dtype})")
        if group["algorithm"] == "adamw":
            b1, b2 = group["betas"]
            _check_number("betas[0]", b1, 0.0, 1.0, hi_open=True)
            _check_number("betas[1]", b2, 0.0, 1.0, hi_open=True)
            _check_number("eps", group["eps"], 0.0)
            return
        check_norm(group["norm"], group["p"])
        _check_number("momentum", group["momentum"], 0.0, 1.0, hi_open=True)
        if group["nesterov"] and group["momentum"] <= 0:
            raise ValueError("nesterov=True needs momentum > 0")
        if group["step_size"] not in F.STEP_SIZES:
            raise ValueError(f"step_size must be one of {F.STEP_SIZES}, got {group['step_size']!r}")
        if group["scale_rule"] not in F.SCALE_RULES:
            raise ValueError(f"scale_rule must be one of {F.SCALE_RULES}, got {group['scale_rule']!r}")
        if group["method"] not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {group['method']!r}")
        if group["normalization"] is not None and group["normalization"] not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {NORMALIZATIONS} or None, got {group['normalization']!r}")
        if group["steps"] is not None and (not isinstance(group["steps"], int) or group["steps"] < 0):
            raise ValueError(f"steps must be a non-negative int or None, got {group['steps']!r}")
        if group["method"] == "svd" and (group["steps"] is not None or group["coefficients"] is not None):
            raise ValueError("steps/coefficients need method='newton_schulz' or 'polar_express', not 'svd'")
        if group["tensor_mode"] not in F.TENSOR_MODES:
            raise ValueError(f"tensor_mode must be one of {F.TENSOR_MODES}, got {group['tensor_mode']!r}")
        if group["norm"] not in ENTRYWISE:
            names = group.get("names")
            for j, p in enumerate(group["params"]):
                if p.ndim < 2:
                    who = names[j] if names and j < len(names) else f"param_groups[{index}]['params'][{j}]"
                    raise ValueError(
                        f"parameter {who} has shape {tuple(p.shape)}, but norm={group['norm']!r} needs a "
                        "matrix (>= 2-D). Route vectors (biases, norm gains) to AdamW with "
                        "steepest.param_groups(model), or use an entrywise norm ('frobenius', 'linf') for them."
                    )

    # ------------------------------------------------------------------ stepping
    def _name(self, gi: int, j: int) -> str:
        names = self.param_groups[gi].get("names")
        p = self.param_groups[gi]["params"][j]
        who = names[j] if names and j < len(names) else f"param_groups[{gi}]['params'][{j}]"
        return f"{who} (shape {tuple(p.shape)})"

    def _check_grads(self) -> set[int]:
        """Check every gradient before anything changes; return ids of parameters to skip."""
        found = []
        for gi, group in enumerate(self.param_groups):
            for j, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise ValueError(f"sparse gradient for {self._name(gi, j)}: steepest needs dense gradients")
                if p.grad.is_complex():
                    raise ValueError(f"complex gradient for {self._name(gi, j)} is not supported")
                found.append((gi, j, p))
        if not found:
            return set()
        # min and max of g are finite iff every entry is (both propagate NaN); one read-only reduction
        # per gradient is ~15x faster on CPU than isfinite(g).all() (benchmarks/RESULTS.md, "Core").
        flags = torch.isfinite(torch.stack([
            torch.stack(tuple(torch.aminmax(p.grad))) if p.grad.numel() else p.grad.new_zeros(2)
            for _, _, p in found
        ])).all(dim=-1)
        if bool(flags.all()):
            return set()
        bad = [(gi, j, p) for (gi, j, p), ok in zip(found, flags.tolist()) if not ok]
        if self.nonfinite == "raise":
            names = ", ".join(self._name(gi, j) for gi, j, _ in bad)
            raise NonFiniteGradientError(
                f"non-finite gradient (NaN or Inf) in {names}; no parameter was changed. Lower the "
                "learning rate, clip gradients, or pass nonfinite='skip' to skip such steps."
            )
        for _, _, p in bad:
            st = self.state[p]
            st["nonfinite_skips"] = st.get("nonfinite_skips", 0) + 1
        self.nonfinite_skipped += len(bad)
        return {id(p) for _, _, p in bad}

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        """Take one step; returns the closure's loss if a closure is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        skip = self._check_grads()
        if self.batch_matrices is not False:
            # Same-shape spectral matrices: one batched polar call per bucket (optim/batched.py).
            skip = skip | batched_step(self, skip)
        for group in self.param_groups:
            lr = float(group["lr"])
            for p in group["params"]:
                if p.grad is None or id(p) in skip:
                    continue
                self._param_step(p, p.grad, self.state[p], group, lr)
        return loss

    def _param_step(self, p: torch.Tensor, grad: torch.Tensor, state: dict, group: dict, lr: float) -> None:
        if group["algorithm"] == "adamw":
            F.adamw_step(p, grad, state, lr=lr, betas=group["betas"], eps=group["eps"],
                         weight_decay=group["weight_decay"])
            return
        M = F.direction_source(grad, state, group["momentum"], group["nesterov"])
        update = F.compute_update(M, **update_kwargs(group))
        if group["step_size"] == "dual" and not bool(torch.isfinite(update).all()):
            # The dual norm of a finite M can still overflow (e.g. a float16 nuclear norm): never
            # write it into the weight. Count it like a non-finite gradient.
            state["nonfinite_skips"] = state.get("nonfinite_skips", 0) + 1
            self.nonfinite_skipped += 1
            return
        F.apply_update(p, update, lr, group["weight_decay"])


def update_kwargs(group: dict, norm: str | None = None, p: float | None = None) -> dict:
    """The keyword arguments of :func:`steepest.optim.functional.compute_update` for ``group``.

    ``norm``/``p`` override the group's geometry (used by the adaptive optimizer).
    """
    return dict(
        norm=norm or group["norm"], p=p if norm else group["p"], step_size=group["step_size"],
        scale_rule=group["scale_rule"], tensor_mode=group["tensor_mode"], method=group["method"],
        steps=group["steps"], dtype=DTYPE_NAMES[group["dtype"]], coefficients=group["coefficients"],
        normalization=group["normalization"],
    )


__all__ = ["SteepestDescent", "NonFiniteGradientError", "update_kwargs", "MUON_QUINTIC"]
