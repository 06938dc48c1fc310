"""Schatten-p norms and the Schatten-p dualizer (seed 003).

||A||_{S_p} = (sum_i s_i^p)^(1/p) over the singular values s of A; p = 1 nuclear, p = 2 Frobenius,
p = inf spectral. The dual norm of S_p is S_q with 1/p + 1/q = 1, and (seed 003, Proposition 2)

    dualizer_{S_p}(X) = U diag(s^(q-1)) V^T / ||s||_q^(q-1),

the unique maximiser of <X, T> over ||T||_{S_p} <= 1 for 1 < p < inf. The end points:
p = inf gives U V^T (the polar factor); p = 1 gives a maximiser supported on the top singular
subspace, (1/k) sum_{i <= k} u_i v_i^T with k the multiplicity of the top singular value.
"""

from __future__ import annotations

import math

import torch

from steepest.linalg.polar_factor import _check_matrix, polar_svd, prescale_with_scale, rank_tolerance, svd_or_fallback

#: Relative gap under which two singular values count as equal when finding the multiplicity of the
#: top singular value for p = 1. Float32 SVD resolves singular values to ~1e-6 relative; 1e-4 keeps
#: exactly repeated values together while separating genuinely distinct ones.
TOP_MULTIPLICITY_RTOL = 1e-4


def conjugate_exponent(p: float) -> float:
    """q with 1/p + 1/q = 1 (q = inf for p = 1, q = 1 for p = inf)."""
    check_p(p)
    if p == 1:
        return math.inf
    if math.isinf(p):
        return 1.0
    return p / (p - 1.0)


def check_p(p) -> None:
    if p is None or isinstance(p, bool) or not isinstance(p, (int, float)) or math.isnan(p) or p < 1:
        raise ValueError(f"Schatten exponent p must be a number in [1, inf], got {p!r}")


def vector_pnorm(s: torch.Tensor, p: float) -> torch.Tensor:
    """l_p norm of the last dimension, overflow-safe for large p (scaled by the max entry)."""
    if math.isinf(p):
        return s.amax(dim=-1)
    smax = s.amax(dim=-1, keepdim=True)
    safe = torch.where(smax > 0, smax, torch.ones_like(smax))
    return (((s / safe) ** p).sum(dim=-1) ** (1.0 / p)) * smax.squeeze(-1)


def schatten_norm(A: torch.Tensor, p: float) -> torch.Tensor:
    """||A||_{S_p} over the last two dims (exact, from the singular values)."""
    _check_matrix(A, "A")
    check_p(p)
    s = torch.linalg.svdvals(A if A.dtype in (torch.float32, torch.float64) else A.float())
    return vector_pnorm(s, p).to(A.dtype)


def schatten_dualize(G: torch.Tensor, p: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Maximiser of <G, T> over ||T||_{S_p} <= 1; 0 for G = 0. Batch-aware over (..., m, n).

    Computed from one SVD in ``dtype`` (float64 by default: the power s^(q-1) amplifies rounding
    for q close to 1 and large q alike). Example:

        >>> G = torch.randn(6, 4, dtype=torch.float64)
        >>> T = schatten_dualize(G, 2.0)
        >>> torch.allclose(T, G / G.norm())
        True
    """
    return schatten_dualize_and_singular_values(G, p, dtype)[0]


def schatten_dualize_and_singular_values(
    G: torch.Tensor, p: float, dtype: torch.dtype = torch.float64
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(schatten_dualize(G, p), s)`` with ``s`` the singular values of G, from the same single SVD.

    Lets a caller that also needs the dual norm ||s||_q (``step_size="dual"``) skip a second SVD.
    """
    _check_matrix(G)
    check_p(p)
    if math.isinf(p) or G.numel() == 0:
        return polar_svd(G, dtype=dtype)
    X, amax = prescale_with_scale(G)
    X = X.to(dtype)
    U, s, Vh = svd_or_fallback(X)  # a LinAlgError (gesdd not converging) takes the stable float64 path
    smax = s[..., :1]
    tol = rank_tolerance(X, smax)
    if p == 1:
        top = (s >= smax * (1 - TOP_MULTIPLICITY_RTOL)) & (s > tol)
        k = top.sum(dim=-1, keepdim=True).clamp(min=1)
        t = top.to(dtype) / k
    else:
        q = conjugate_exponent(p)
        safe = torch.where(smax > 0, smax, torch.ones_like(smax))
        r = torch.where(s > tol, s / safe, torch.zeros_like(s))  # in [0, 1]: no overflow in r^(q-1)
        num = r ** (q - 1)
        den = vector_pnorm(r, q).unsqueeze(-1) ** (q - 1)
        t = num / torch.where(den > 0, den, torch.ones_like(den))
    amax = amax.to(dtype)  # undo the prescale for the singular values
    return ((U * t.unsqueeze(-2)) @ Vh).to(G.dtype), s * amax.unsqueeze(-1)
