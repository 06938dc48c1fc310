"""Named optimizers: thin presets of :class:`SteepestDescent`. Each docstring states its update.

All recipes accept the groups of :func:`steepest.param_groups` (matrices in the recipe's geometry,
the rest on AdamW in the same optimizer) and any other :class:`SteepestDescent` keyword.
"""

from __future__ import annotations

import enum
import warnings

import torch
from torch.optim.optimizer import ParamsT

from steepest.linalg.coefficients import MUON_QUINTIC
from steepest.optim.steepest import SteepestDescent

_MUON_ADJUST = {None: "muon", "original": "muon", "match_rms_adamw": "rms"}
#: torch.optim.Muon's defaults (torch/optim/_muon.py), which steepest.Muon shares.
MUON_EPS = 1e-7


class _Unset(enum.Enum):
    """Muon's ``eps`` default: tells "not given" from ``eps=1e-7`` (the deprecated AdamW meaning)."""

    UNSET = enum.auto()


_UNSET = _Unset.UNSET


class ComplexParameterError(ValueError, RuntimeError):
    """steepest.Muon refuses complex parameters at construction: a ValueError like every steepest
    construction error, and a RuntimeError like torch.optim.Muon's (raised there at the first step)."""


class Muon(SteepestDescent):
    r"""Muon (Jordan et al. 2024): Nesterov momentum, then 5 Newton-Schulz steps, then a shape scale.

    B <- mu B + (1-mu) G;  M = (1-mu) G + mu B;  W <- (1 - lr wd) W - (lr sqrt(max(1, m/n))) NS_5(M / max(||M||_F, eps)).

    **torch.optim.Muon's contract**: every argument of ``torch.optim.Muon`` with the same name, position,
    meaning and default: ``lr=1e-3``, ``weight_decay=0.1`` (decoupled, with the unadjusted lr),
    ``momentum=0.95`` (0 allowed), ``nesterov=True``, ``ns_coefficients=(3.4445, -4.775, 2.0315)``,
    ``eps=1e-7`` (the floor of the Frobenius norm Newton-Schulz divides by), ``ns_steps=5``,
    ``adjust_lr_fn`` (None/"original": sqrt(max(1, m/n)); "match_rms_adamw": 0.2 sqrt(max(m, n))).
    With ``dtype=torch.bfloat16`` and no other extra it equals torch.optim.Muon bit for bit on every shape
    (tests/test_muon_contract.py); the deliberate differences are the README's table "Differences from
    torch.optim.Muon" (>= 3-D tensors are matrices, complex parameters are refused at construction, ...).

    steepest's extras are keywords of their own: ``dtype`` (Newton-Schulz precision), ``method``
    (``"newton_schulz"``, ``"polar_express"``, ``"svd"``), ``adamw_eps`` / ``adamw_lr`` / ``betas`` for the
    groups :func:`steepest.param_groups` routes to AdamW, and every :class:`SteepestDescent` keyword. In a
    param group dict, ``eps`` of a matrix group is the Newton-Schulz eps (stored as ``ns_eps``); an AdamW
    group's ``eps`` is AdamW's.

    Deprecated: ``eps`` used to be AdamW's eps. When ``eps`` is given, ``adamw_eps`` is not, and AdamW groups
    without their own eps exist, those groups still take it (with a DeprecationWarning; next release
    ``eps`` is the Newton-Schulz eps only: pass ``adamw_eps``).

    ``dtype="auto"`` (default) runs Newton-Schulz in bf16 where bf16 matmul is native (CUDA, CPUs with
    AVX512-BF16 or AMX) and in float32 elsewhere (bf16 is emulated there, 18-70x slower than float32);
    float64 parameters iterate in float64 (:mod:`steepest.linalg.precision`).

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        >>> import steepest
        >>> opt = Muon(steepest.param_groups(model), lr=0.02)
    """

    _nesterov_needs_momentum = False  # torch.optim.Muon accepts nesterov=True at momentum 0 (then M = G)

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = MUON_QUINTIC,
        eps: float | _Unset = _UNSET,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        *,
        dtype: torch.dtype | str | None = "auto",
        method: str = "newton_schulz",
        adamw_eps: float | None = None,
        **kwargs,
    ) -> None:
        # torch.optim.Muon's checks first, with its error types and messages.
        if isinstance(lr, torch.Tensor) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if adjust_lr_fn not in _MUON_ADJUST:
            raise ValueError(
                f"Adjust learning rate function {adjust_lr_fn} is not supported: use None, "
                "'original' or 'match_rms_adamw'"
            )
        if "ns_eps" in kwargs:
            raise TypeError("steepest.Muon takes the Newton-Schulz eps as eps= (torch.optim.Muon's name)")
        self._legacy_eps = None if eps is _UNSET or adamw_eps is not None else eps
        eps = MUON_EPS if eps is _UNSET else eps
        steps: int | None = ns_steps
        coefficients: tuple[float, float, float] | None = ns_coefficients
        ns_eps: float | None = eps
        if method == "svd":
            steps, coefficients, ns_eps = None, None, None
        elif method == "polar_express" and ns_coefficients == MUON_QUINTIC:
            coefficients = None  # Polar Express uses its own published table
        super().__init__(
            params,
            lr=lr,
            norm="spectral",
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            method=method,
            steps=steps,
            coefficients=coefficients,
            ns_eps=ns_eps,
            dtype=dtype,
            eps=1e-8 if adamw_eps is None else adamw_eps,
            scale_rule=kwargs.pop("scale_rule", _MUON_ADJUST[adjust_lr_fn]),
            **kwargs,
        )

    def add_param_group(self, param_group: dict) -> None:
        """:meth:`SteepestDescent.add_param_group`, reading a group's ``eps`` as torch.optim.Muon does (the
        Newton-Schulz eps) in matrix groups, and applying the deprecated AdamW meaning of ``eps``."""
        group = dict(param_group) if isinstance(param_group, dict) else param_group
        if isinstance(group, dict):
            ps = group.get("params")
            if not isinstance(ps, (torch.Tensor, set, type(None))):
                group["params"] = ps = list(ps)  # a generator is read once, here
            for p in [ps] if isinstance(ps, torch.Tensor) else ps or ():
                if isinstance(p, torch.Tensor) and p.is_complex():
                    raise ComplexParameterError(
                        f"Muon does not support complex parameters (shape {tuple(p.shape)}, "
                        f"{p.dtype}): optimize the real and imaginary parts as real tensors"
                    )
            if group.get("algorithm", "steepest") != "adamw" and "eps" in group:
                group["ns_eps"] = group.pop("eps")
            legacy = getattr(self, "_legacy_eps", None)
            if group.get("algorithm") == "adamw" and "eps" not in group and legacy is not None:
                warnings.warn(
                    f"steepest.Muon(eps={legacy}) now means torch.optim.Muon's Newton-Schulz eps; this AdamW group "
                    "still takes it as AdamW's eps for one release. Pass adamw_eps= for AdamW's eps.",
                    DeprecationWarning,
                    stacklevel=3,
                )
                group["eps"] = legacy
        super().add_param_group(group)


class SpecGD(SteepestDescent):
    r"""Spectral gradient descent with the exact polar factor (seeds 000, 002, 004).

    W <- W - lr polar(M) (``step_size="fixed"``), or seed 000's W <- W - lr ||M||_* polar(M)
    (``step_size="dual"``, lr = 1/L_*). M is the gradient unless ``momentum > 0``.

    Example:
        >>> W = torch.nn.Parameter(torch.randn(4, 3))
        >>> opt = SpecGD([W], lr=0.1)
    """

    def __init__(self, params: ParamsT, lr: float = 0.02, momentum: float = 0.0, **kwargs) -> None:
        kwargs.setdefault("method", "svd")
        super().__init__(params, lr=lr, norm="spectral", momentum=momentum, **kwargs)


class SignSGD(SteepestDescent):
    r"""Sign descent, steepest descent under the entrywise max norm (Bernstein et al. 2018).

    W <- W - lr sign(M); with ``momentum > 0`` this is Signum (sign of the EMA momentum).

    Example:
        >>> W = torch.nn.Parameter(torch.randn(4, 3))
        >>> opt = SignSGD([W], lr=1e-3, momentum=0.9)
    """

    def __init__(self, params: ParamsT, lr: float = 1e-3, momentum: float = 0.0, **kwargs) -> None:
        super().__init__(params, lr=lr, norm="linf", momentum=momentum, **kwargs)


class SchattenDescent(SteepestDescent):
    r"""Steepest descent under the Schatten-p norm (seed 003, Theorem 4).

    W <- W - lr U diag(s^(q-1)) V^T / ||s||_q^(q-1), 1/p + 1/q = 1, for M = U diag(s) V^T.
    p = 2 is normalised gradient descent, p = inf spectral descent, p = 1 moves only along the top
    singular subspace.

    Example:
        >>> W = torch.nn.Parameter(torch.randn(4, 3))
        >>> opt = SchattenDescent([W], lr=0.1, p=8)
    """

    def __init__(self, params: ParamsT, lr: float = 0.02, p: float = 32.0, momentum: float = 0.0, **kwargs) -> None:
        super().__init__(params, lr=lr, norm="schatten", p=p, momentum=momentum, **kwargs)


class GD(SteepestDescent):
    r"""Gradient descent: steepest descent under the Frobenius norm with the dual-norm step.

    W <- W - lr M (M = G, or the EMA momentum). With lr = 1/L_F this is seed 000's GD step.

    Example:
        >>> W = torch.nn.Parameter(torch.randn(4, 3))
        >>> opt = GD([W], lr=0.1)
    """

    def __init__(self, params: ParamsT, lr: float = 0.01, momentum: float = 0.0, **kwargs) -> None:
        kwargs.setdefault("step_size", "dual")
        super().__init__(params, lr=lr, norm="frobenius", momentum=momentum, **kwargs)
