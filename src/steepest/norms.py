"""The norm registry: each geometry's norm, dual norm and dualizer, in one place.

For a norm ||.|| on matrices the dualizer is D = argmax_{||D|| <= 1} <G, D>, and the dual norm is the
value of that maximum, ||G||^dagger = <G, D> (seed 000 section 2; seed 003). The geometries:

============  ======================  ==========================  ==================================
name          norm ||X||              dual norm ||G||^dagger      dualize(G)
============  ======================  ==========================  ==================================
frobenius     ||X||_F                 ||G||_F                     G / ||G||_F
spectral      s_max(X)                ||G||_* = sum s_i           polar(G) = U V^T
linf          max_ij |X_ij|           ||G||_1 = sum |G_ij|        sign(G)
schatten (p)  ||s(X)||_p              ||s(G)||_q, 1/p + 1/q = 1   U diag(s^(q-1)) V^T / ||s||_q^(q-1)
============  ======================  ==========================  ==================================

For every G != 0: <G, dualize(G)> = dual_norm(G) and matrix_norm(dualize(G)) = 1; dualize(0) = 0.
All functions reduce over the last two dimensions (batch-aware); the entrywise norms (frobenius,
linf) also accept a vector, treated as one row.
"""

from __future__ import annotations

import math

import torch

from steepest.linalg.polar import _check_matrix, polar, polar_svd, prescale
from steepest.linalg.schatten import check_p, conjugate_exponent, schatten_dualize_and_singular_values, vector_pnorm

NORMS = ("frobenius", "spectral", "linf", "schatten")
ENTRYWISE = ("frobenius", "linf")


def check_norm(norm: str, p: float | None = None) -> None:
    """Raise ValueError for an unknown norm or a missing/invalid Schatten exponent."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if norm == "schatten":
        check_p(p)
    elif p is not None:
        raise ValueError(f"p is only used with norm='schatten', got p={p!r} with norm={norm!r}")


def _as_matrix(X: torch.Tensor, norm: str) -> torch.Tensor:
    if norm in ENTRYWISE and X.ndim == 1:
        return X.unsqueeze(0)
    _check_matrix(X, "X")
    return X


def _svdvals(X: torch.Tensor) -> torch.Tensor:
    if X.numel() == 0:  # every norm of an empty matrix is 0: one zero "singular value" keeps [..., 0] valid
        return X.new_zeros(X.shape[:-2] + (1,), dtype=X.dtype if X.dtype == torch.float64 else torch.float32)
    return torch.linalg.svdvals(X if X.dtype in (torch.float32, torch.float64) else X.float())


def _amax(X: torch.Tensor) -> torch.Tensor:
    return X.abs().amax(dim=(-2, -1)) if X.numel() else X.new_zeros(X.shape[:-2])


def matrix_norm(X: torch.Tensor, norm: str, p: float | None = None) -> torch.Tensor:
    """||X|| under ``norm`` (see the module table). Example: ``matrix_norm(torch.eye(3), "spectral")`` is 1."""
    check_norm(norm, p)
    squeeze = X.ndim == 1
    X = _as_matrix(X, norm)
    if norm == "frobenius":
        out = torch.linalg.matrix_norm(X, "fro")
    elif norm == "linf":
        out = _amax(X)
    elif norm == "spectral":
        out = _svdvals(X)[..., 0].to(X.dtype)
    else:
        out = vector_pnorm(_svdvals(X), p).to(X.dtype)
    return out.squeeze(0) if squeeze else out


def dual_norm(G: torch.Tensor, norm: str, p: float | None = None) -> torch.Tensor:
    """The dual norm ||G||^dagger = max_{||D|| <= 1} <G, D>: F, nuclear, l1, or Schatten-q.

    Example: ``dual_norm(torch.eye(3), "spectral")`` is 3 (the nuclear norm).
    """
    check_norm(norm, p)
    squeeze = G.ndim == 1
    G = _as_matrix(G, norm)
    if norm == "frobenius":
        out = torch.linalg.matrix_norm(G, "fro")
    elif norm == "linf":
        out = G.abs().sum(dim=(-2, -1))
    elif norm == "spectral":
        out = _svdvals(G).sum(dim=-1).to(G.dtype)
    else:
        out = vector_pnorm(_svdvals(G), conjugate_exponent(p)).to(G.dtype)
    return out.squeeze(0) if squeeze else out


def dualize(
    G: torch.Tensor,
    norm: str,
    p: float | None = None,
    *,
    method: str = "svd",
    steps: int | None = None,
    dtype: torch.dtype = torch.float32,
    coefficients: tuple | None = None,
    normalization: str | None = None,
) -> torch.Tensor:
    """argmax_{||D|| <= 1} <G, D> under ``norm`` (see the module table); 0 for G = 0.

    ``method``, ``steps``, ``dtype``, ``coefficients`` and ``normalization`` select how the spectral
    dualizer (the polar factor) is computed; see :func:`steepest.polar`. Schatten-p dualizers are
    exact (SVD). Example:

        >>> G = torch.tensor([[3.0, -1.0]])
        >>> dualize(G, "linf")
        tensor([[ 1., -1.]])
    """
    return dualize_with_dual_norm(
        G, norm, p, method=method, steps=steps, dtype=dtype, coefficients=coefficients,
        normalization=normalization, need_dual_norm=False,
    )[0]


def dualize_with_dual_norm(
    G: torch.Tensor,
    norm: str,
    p: float | None = None,
    *,
    method: str = "svd",
    steps: int | None = None,
    dtype: torch.dtype = torch.float32,
    coefficients: tuple | None = None,
    normalization: str | None = None,
    need_dual_norm: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(dualize(G), dual_norm(G))`` sharing work: the spectral SVD path computes both from one SVD.

    The dual norm has shape ``G.shape[:-2]`` (a scalar tensor for a single matrix).
    """
    check_norm(norm, p)
    squeeze = G.ndim == 1
    G = _as_matrix(G, norm)
    dn = None
    if norm == "frobenius":
        X = prescale(G)
        D = X / torch.linalg.matrix_norm(X, "fro", keepdim=True).clamp(min=torch.finfo(X.dtype).tiny)
        if need_dual_norm:
            dn = torch.linalg.matrix_norm(G, "fro")
    elif norm == "linf":
        D = torch.sign(G)
        if need_dual_norm:
            dn = G.abs().sum(dim=(-2, -1))
    elif norm == "spectral" and method == "svd":
        if steps is not None or coefficients is not None:
            raise ValueError("steps and coefficients apply only to the iterative polar methods, not 'svd'")
        D, s = polar_svd(G, dtype=torch.float64 if dtype == torch.float64 else torch.float32)
        dn = s.sum(dim=-1).to(G.dtype) if need_dual_norm else None
    elif norm == "spectral":
        D = polar(G, method, steps, dtype=dtype, coefficients=coefficients, normalization=normalization)
        dn = dual_norm(G, "spectral") if need_dual_norm else None
    else:
        if math.isinf(p):
            return dualize_with_dual_norm(
                G, "spectral", None, method=method, steps=steps, dtype=dtype,
                coefficients=coefficients, normalization=normalization, need_dual_norm=need_dual_norm,
            )
        D, s = schatten_dualize_and_singular_values(G, p)
        if need_dual_norm:  # an empty matrix has no singular values and dual norm 0
            dn = vector_pnorm(s, conjugate_exponent(p)).to(G.dtype) if s.shape[-1] else G.new_zeros(G.shape[:-2])
    if squeeze:
        D = D.squeeze(0)
        dn = dn.squeeze(0) if dn is not None else None
    return D, dn
