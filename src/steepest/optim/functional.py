"""The per-parameter step of every steepest-descent optimizer, as plain functions.

One step for a parameter block W with gradient G (DESIGN.md, "One idea"):

1. direction source M: ``G`` (no momentum), the EMA ``B <- mu B + (1 - mu) G`` or Nesterov
   ``(1 - mu) G + mu B`` (torch.optim.Muon's convention);
2. D = dualize(M) under the block's norm (:mod:`steepest.norms`);
3. W <- (1 - lr * wd) W - lr * scale * D, where scale is a shape rule (``step_size="fixed"``) or the
   dual norm of M (``step_size="dual"``: with lr = 1/L this is seed 000's X - (||G||_*/L) polar(G)).

The three stages are separate functions so that torch.distributed code can run stage 2 on an owner
rank and stages 1 and 3 everywhere without rewriting the math.
"""

from __future__ import annotations

import math

import torch

from steepest.norms import ENTRYWISE, dualize_with_dual_norm

SCALE_RULES = ("none", "muon", "rms", "spectral")
STEP_SIZES = ("fixed", "dual")
TENSOR_MODES = ("flatten", "batch")


def shape_scale(shape: tuple[int, ...], rule: str) -> float:
    """The fixed step multiplier for a block of matrix shape ``(m, n)`` = (fan_out, fan_in).

    ``none``: 1; ``muon``: sqrt(max(1, m/n)) (KellerJordan/Muon); ``rms``: 0.2 sqrt(max(m, n))
    (Moonshot's AdamW RMS match, "Muon is Scalable for LLM Training"); ``spectral``:
    sqrt(fan_out / fan_in) (Yang, Simon & Bernstein 2023, spectral condition for feature learning).
    """
    if rule not in SCALE_RULES:
        raise ValueError(f"scale_rule must be one of {SCALE_RULES}, got {rule!r}")
    if rule == "none":
        return 1.0
    m, n = (1, shape[0]) if len(shape) == 1 else (shape[-2], shape[-1])
    if rule == "muon":
        return math.sqrt(max(1.0, m / n))
    if rule == "rms":
        return 0.2 * math.sqrt(max(m, n))
    return math.sqrt(m / n)


def matrix_view(t: torch.Tensor, tensor_mode: str = "flatten") -> torch.Tensor:
    """View a parameter-shaped tensor as a matrix (or a batch of matrices).

    2-D tensors are returned as is; >= 3-D tensors are flattened to (shape[0], prod(rest)) (conv kernels
    (out, in, kh, kw) -> (out, in*kh*kw)) or, with ``tensor_mode="batch"``, kept as a batch of
    matrices over the last two dims. 1-D tensors (entrywise norms only) are returned as is.
    """
    if t.ndim <= 2:
        return t
    if tensor_mode == "batch":
        return t
    return t.reshape(t.shape[0], -1)


def direction_source(
    grad: torch.Tensor, state: dict, momentum: float, nesterov: bool
) -> torch.Tensor:
    """Stage 1: update the momentum buffer in ``state`` and return the direction source M.

    With momentum mu > 0: B <- B + (1 - mu)(G - B) (EMA); M = B, or (1 - mu) G + mu B with Nesterov.
    ``grad`` is never modified.
    """
    if momentum == 0.0:
        return grad
    buf = state.get("momentum_buffer")
    if buf is None:
        buf = state["momentum_buffer"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
    buf.lerp_(grad, 1.0 - momentum)
    return grad.lerp(buf, momentum) if nesterov else buf


def compute_update(
    M: torch.Tensor,
    *,
    norm: str,
    p: float | None = None,
    step_size: str = "fixed",
    scale_rule: str = "none",
    tensor_mode: str = "flatten",
    method: str = "svd",
    steps: int | None = None,
    dtype: torch.dtype = torch.float32,
    coefficients: tuple | None = None,
    normalization: str | None = None,
) -> torch.Tensor:
    """Stage 2: ``scale * dualize(M)`` in M's shape (the expensive, owner-computed part).

    ``scale`` is ``shape_scale(matrix shape, scale_rule)`` times, for ``step_size="dual"``, the dual
    norm of M (one per matrix in batch mode).
    """
    X = matrix_view(M, tensor_mode)
    if X.ndim == 1 and norm not in ENTRYWISE:
        raise ValueError(f"norm {norm!r} needs a matrix, got shape {tuple(M.shape)}")
    D, dn = dualize_with_dual_norm(
        X, norm, p, method=method, steps=steps, dtype=dtype, coefficients=coefficients,
        normalization=normalization, need_dual_norm=step_size == "dual",
    )
    scale = shape_scale(tuple(X.shape), scale_rule)
    if step_size == "dual":
        dn = dn.to(D.dtype)
        D = D * (dn.unsqueeze(-1).unsqueeze(-1) if X.ndim >= 2 and dn.ndim > 0 else dn)
    if scale != 1.0:
        D = D * scale
    return D.reshape(M.shape)


def apply_update(param: torch.Tensor, update: torch.Tensor, lr: float, weight_decay: float) -> None:
    """Stage 3: W <- (1 - lr * wd) W - lr * update (decoupled weight decay with the unadjusted lr)."""
    if weight_decay != 0.0:
        param.mul_(1.0 - lr * weight_decay)
    param.add_(update.to(param.dtype), alpha=-lr)


def adamw_step(
    param: torch.Tensor, grad: torch.Tensor, state: dict, *, lr: float, betas: tuple[float, float],
    eps: float, weight_decay: float,
) -> None:
    """AdamW (Loshchilov & Hutter 2019) for the parameters routed away from matrix geometry.

    m <- b1 m + (1 - b1) g; v <- b2 v + (1 - b2) g^2; W <- (1 - lr wd) W - lr m_hat / (sqrt(v_hat) + eps).
    """
    if "step" not in state:
        state["step"] = 0
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    state["step"] += 1
    b1, b2 = betas
    t = state["step"]
    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
    exp_avg.lerp_(grad, 1.0 - b1)
    exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
    bias1 = 1.0 - b1**t
    bias2 = 1.0 - b2**t
    denom = (exp_avg_sq.sqrt() / math.sqrt(bias2)).add_(eps)
    if weight_decay != 0.0:
        param.mul_(1.0 - lr * weight_decay)
    param.addcdiv_(exp_avg, denom, value=-lr / bias1)
