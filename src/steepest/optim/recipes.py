"""Named optimizers: thin presets of :class:`SteepestDescent`. Each docstring states its update.

All recipes accept the groups of :func:`steepest.param_groups` (matrices in the recipe's geometry,
the rest on AdamW in the same optimizer) and any other :class:`SteepestDescent` keyword.
"""

from __future__ import annotations

import torch

from steepest.linalg.coefficients import MUON_QUINTIC
from steepest.optim.steepest import SteepestDescent

_MUON_ADJUST = {None: "muon", "original": "muon", "match_rms_adamw": "rms"}


class Muon(SteepestDescent):
    r"""Muon (Jordan et al. 2024): Nesterov momentum, then 5 Newton-Schulz steps, then a shape scale.

    B <- mu B + (1-mu) G;  M = (1-mu) G + mu B;  W <- (1 - lr wd) W - lr sqrt(max(1, m/n)) NS_5(M).

    Same semantics as ``torch.optim.Muon`` given the same settings (momentum 0.95, Nesterov,
    coefficients (3.4445, -4.775, 2.0315), Frobenius normalization with eps 1e-7, weight decay with the
    unadjusted lr, ``adjust_lr_fn`` "original" or "match_rms_adamw"), with three differences a user
    can see: ``dtype`` chooses the Newton-Schulz precision, conv kernels and other >= 3-D tensors are
    handled as matrices, and non-matrix parameters can ride along on AdamW (``steepest.param_groups``).
    Default ``weight_decay`` is 0 (torch's is 0.1).

    ``dtype="auto"`` (default) runs Newton-Schulz in bf16 where bf16 matmul is native (CUDA, CPUs with
    AVX512-BF16 or AMX) and in float32 elsewhere (bf16 is emulated there, 18-70x slower than float32);
    float64 parameters iterate in float64 (:mod:`steepest.linalg.precision`). ``dtype=torch.bfloat16``
    is torch.optim.Muon's forced choice and matches it bit for bit.

    Example:
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        >>> import steepest
        >>> opt = Muon(steepest.param_groups(model), lr=0.02)
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.95, nesterov: bool = True,
                 ns_steps: int = 5, ns_coefficients=MUON_QUINTIC, weight_decay: float = 0.0,
                 adjust_lr_fn: str | None = None, dtype: torch.dtype | str | None = "auto",
                 method: str = "newton_schulz", **kwargs) -> None:
        if adjust_lr_fn not in _MUON_ADJUST:
            raise ValueError(f"adjust_lr_fn must be one of {list(_MUON_ADJUST)}, got {adjust_lr_fn!r}")
        if method == "svd":
            ns_steps, ns_coefficients = None, None
        elif method == "polar_express" and ns_coefficients == MUON_QUINTIC:
            ns_coefficients = None  # Polar Express uses its own published table
        super().__init__(params, lr=lr, norm="spectral", momentum=momentum, nesterov=nesterov,
                         weight_decay=weight_decay, method=method, steps=ns_steps, coefficients=ns_coefficients,
                         dtype=dtype, scale_rule=kwargs.pop("scale_rule", _MUON_ADJUST[adjust_lr_fn]), **kwargs)


class SpecGD(SteepestDescent):
    r"""Spectral gradient descent with the exact polar factor (seeds 000, 002, 004).

    W <- W - lr polar(M) (``step_size="fixed"``), or seed 000's W <- W - lr ||M||_* polar(M)
    (``step_size="dual"``, lr = 1/L_*). M is the gradient unless ``momentum > 0``.

    Example:
        >>> W = torch.nn.Parameter(torch.randn(4, 3))
        >>> opt = SpecGD([W], lr=0.1)
    """

    def __init__(self, params, lr: float = 0.02, momentum: float = 0.0, **kwargs) -> None:
        kwargs.setdefault("method", "svd")
        super().__init__(params, lr=lr, norm="spectral", momentum=momentum, **kwargs)


class SignSGD(SteepestDescent):
    r"""Sign descent, steepest descent under the entrywise max norm (Bernstein et al. 2018).

    W <- W - lr sign(M); with ``momentum > 0`` this is Signum (sign of the EMA momentum).

    Example:
        >>> W = torch.nn.Parameter(torch.randn(4, 3))
        >>> opt = SignSGD([W], lr=1e-3, momentum=0.9)
    """

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, **kwargs) -> None:
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

    def __init__(self, params, lr: float = 0.02, p: float = 32.0, momentum: float = 0.0, **kwargs) -> None:
        super().__init__(params, lr=lr, norm="schatten", p=p, momentum=momentum, **kwargs)


class GD(SteepestDescent):
    r"""Gradient descent: steepest descent under the Frobenius norm with the dual-norm step.

    W <- W - lr M (M = G, or the EMA momentum). With lr = 1/L_F this is seed 000's GD step.

    Example:
        >>> W = torch.nn.Parameter(torch.randn(4, 3))
        >>> opt = GD([W], lr=0.1)
    """

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0, **kwargs) -> None:
        kwargs.setdefault("step_size", "dual")
        super().__init__(params, lr=lr, norm="frobenius", momentum=momentum, **kwargs)
