"""Which point of the spectral-power knob should a layer step at? The Schatten-p decrease bound.

This is the per-layer criterion of "From SGD to Muon: Adaptive Optimization via Schatten-p Norms"
(arXiv 2605.19781), written here from its formula, in the knob's units (a in [0, 1]; the paper's p is
1/a, its step U S^(1/p) V^T is :func:`steepest.linalg.spectral_power.spectral_power` at a = 1/p, the
steepest direction of the Schatten-(1 + 1/a) norm).

For a layer whose loss is quadratic in W through its incoming activations A (rows = samples, n of
them), L(W - eta D) <= L(W) - eta <G, D> + eta^2 ||D A^T||_F^2 / (2n), and Hoelder's inequality for
Schatten norms, ||D A^T||_F <= ||D||_{S_r} ||A||_{S_k} with 1/2 = 1/r + 1/k, gives with the best eta the
guaranteed decrease

    Delta(a) = <G, D_a>^2 / (2 L_a ||D_a||_{S_r}^2),   L_a = ||A||_{S_k}^2 / n,
    r = 1 + 1/a,  k = 2 (1 + a) / (1 - a)   (a = 0: r = inf, k = 2; a = 1: r = 2, k = inf).

With D_a built from the direction source M = U diag(s) V^T (momentum) and C_i = u_i^T G v_i (the
gradient seen in M's singular directions), <G, D_a> = sum_i C_i s_i^a and ||D_a||_{S_r}^2 =
(sum_i s_i^(1+a))^(2a/(1+a)), so the score (Delta without the common factor n/2) is

    f(a) = (sum_i C_i s_i^a)^2 / (||A||_{S_k}^2 (sum_i s_i^(1+a))^(2a/(1+a))).

At the end points (M = G) it is Davis-Drusvyatskiy's pair (seed 001): f(0) = ||G||_*^2 / ||A||_F^2
(spectral) and f(1) = ||G||_F^2 / ||A||_op^2 (Frobenius), so the knob's argmax generalises their
binary test to the whole Schatten family. The paper smooths C and the singular values of A by EMAs and
re-chooses every 100 steps; those are the chooser's business, not this function's.

The paper's code (deel-ai-papers/schatten-muon at 749ba8d, read to check this reading, none of it copied)
has two criteria. ``exact_momentum`` (its optimizer's default, and its nanogpt and ViT configs) is f above,
term by term: the same numerator, ||D_a||_{S_r}^2 = (sum s^(1+1/p))^(2/(p+1)), k = 2(p+1)/(p-1), s from the
(Nesterov) momentum, C from the raw gradient; with M = G it is its gradient-only ``exact`` J(p)^2, J(p) =
||G||_{S_(1+1/p)} / ||A||_{S_k}. ``exact_tightness`` (its MNIST p* figure and its named synthetic cases,
experiments/approx_p.py) drops the Hoelder step: the exact decrease of the quadratic model along D_a,

    g(a) = (sum_i C_i s_i^a)^2 / sum_i B_i s_i^(2a),   B_i = ||A v_i||^2   (||D_a A^T||_F^2 = sum_i B_i s_i^(2a)),

:func:`tight_scores_from_spectrum` (so g >= f, equal only when Hoelder is tight). The two can disagree
sharply: for isotropic curvature along M's directions (B flat) g always prefers a = 1 (Cauchy-Schwarz),
while f follows nr(G) against the activations' Schatten norms (benchmarks/schatten_choice_cases.py).
Deliberate differences from that code: knob values on a grid (default 0, 0.1, ..., 1, ties to the smaller
a) instead of a bounded scalar search over p in [1.02, 10] (a in [0.1, 0.98]): the grid holds both ends
exactly and is a global, not a local, maximum; their p near 10 steps Muon (p >= pmax / 1.01), our a = 0 is Muon
and scored at p = inf. Singular values of M at or below the rank cut-off count as zero here (0^a = 0),
where their float32 SVD keeps them (s^(1/p) of a rounding-level s is not small for large p).

Example:
    >>> G = torch.randn(8, 16, dtype=torch.float64)
    >>> A = torch.randn(64, 16, dtype=torch.float64)
    >>> a, f = best_exponent(G, G, torch.linalg.svdvals(A))
    >>> 0.0 <= a <= 1.0 and f.shape == (len(EXPONENTS),)
    True
"""

from __future__ import annotations

import torch

from steepest.linalg.polar_factor import rank_tolerance
from steepest.linalg.schatten import vector_pnorm

#: The default grid of knob values: a = 0 (spectral/Muon) to a = 1 (Frobenius/GD) in steps of 0.1. The
#: paper's code searches p in [1.02, 10] (a in [0.1, 0.98]) continuously and steps Muon for p > 9.9; the grid
#: holds both ends (module docstring).
EXPONENTS = tuple(round(0.1 * i, 1) for i in range(11))


#: ||s||_k of singular values s (last dim), overflow-safe; k = inf is the max: the library's one l_p norm.
schatten_k_norm = vector_pnorm


def exponent_scores(
    M: torch.Tensor, G: torch.Tensor, act_singular_values: torch.Tensor, exponents=EXPONENTS
) -> torch.Tensor:
    """f(a) for each a in ``exponents`` (module docstring), in float64.

    Args:
        M: the direction source (m, n) whose spectrum shapes the step (the momentum; G itself without one).
        G: the gradient (m, n) whose decrease is bounded.
        act_singular_values: singular values of the layer's incoming activations A (any length).
        exponents: knob values in [0, 1].
    """
    if M.shape != G.shape or M.ndim != 2:
        raise ValueError(f"M and G must be matrices of one shape, got {tuple(M.shape)} and {tuple(G.shape)}")
    M64, G64 = M.double(), G.double()
    U, s, Vh = torch.linalg.svd(M64, full_matrices=False)
    C = ((U.mT @ G64) * Vh).sum(-1)  # C_i = u_i^T G v_i
    return scores_from_spectrum(s, C, act_singular_values, exponents, rank_tolerance(M64, s[:1]))


def scores_from_spectrum(
    s: torch.Tensor, C: torch.Tensor, act_singular_values: torch.Tensor, exponents=EXPONENTS, tol=None
) -> torch.Tensor:
    """f(a) from the direction source's singular values ``s`` (descending), the gradient's projections
    ``C`` (C_i = u_i^T G v_i, same length) and the activations' singular values: the one place the
    formula is written (:func:`exponent_scores` computes s and C from M and G; a chooser may smooth C
    and the activation spectrum by EMAs first, as the paper does). ``tol``: singular values of M at or
    below it are dropped (default: none but exact zeros)."""
    if any(not 0.0 <= a <= 1.0 for a in exponents):
        raise ValueError(
            f"exponents must lie in [0, 1] (the Schatten family from spectral to Frobenius), got {exponents}"
        )
    s, C = s.double(), C.double()
    smax = s[:1].clamp(min=torch.finfo(torch.float64).tiny)
    keep = s > (0.0 if tol is None else tol)
    r = torch.where(keep, s / smax, torch.zeros_like(s))  # scale-free: f is 0-homogeneous in M
    sa = act_singular_values.double()
    out = []
    for a in exponents:
        t = torch.where(keep, r.clamp(min=torch.finfo(torch.float64).tiny).pow(a), torch.zeros_like(r))
        inner = (C * t).sum()
        dnorm2 = torch.ones((), dtype=torch.float64) if a == 0 else r.pow(1.0 + a).sum().pow(2.0 * a / (1.0 + a))
        k = float("inf") if a == 1 else 2.0 * (1.0 + a) / (1.0 - a)
        an2 = schatten_k_norm(sa, k).pow(2)
        out.append(inner.pow(2) / (an2 * dnorm2) if an2 > 0 and keep.any() else torch.zeros((), dtype=torch.float64))
    return torch.stack(out)


def tight_scores_from_spectrum(
    s: torch.Tensor, C: torch.Tensor, B: torch.Tensor, exponents=EXPONENTS, tol=None
) -> torch.Tensor:
    """g(a) = (sum_i C_i s_i^a)^2 / sum_i B_i s_i^(2a) for each a (the module docstring's tightness
    criterion): ``s`` M's singular values (descending), ``C_i = u_i^T G v_i``, ``B_i = ||A v_i||^2`` (its
    right singular vectors through the activations, rows = samples); the one place g is written.
    ``tol``: singular values of M at or below it are dropped. Float64; 0 where the denominator is 0.

    Example:
        >>> s = torch.tensor([2.0, 1.0]); C = s.clone(); B = torch.ones(2)   # flat curvature: a = 1 wins
        >>> g = tight_scores_from_spectrum(s, C, B, exponents=(0.0, 1.0)); bool(g[1] > g[0])
        True
    """
    if any(not 0.0 <= a <= 1.0 for a in exponents):
        raise ValueError(
            f"exponents must lie in [0, 1] (the Schatten family from spectral to Frobenius), got {exponents}"
        )
    if not s.shape == C.shape == B.shape:
        raise ValueError(f"s, C and B must have one shape, got {tuple(s.shape)}, {tuple(C.shape)}, {tuple(B.shape)}")
    s, C, B = s.double(), C.double(), B.double().clamp(min=0)
    keep = s > (0.0 if tol is None else tol)
    r = torch.where(keep, s / s[:1].clamp(min=torch.finfo(torch.float64).tiny), torch.zeros_like(s))
    out = []
    for a in exponents:
        t = torch.where(keep, r.clamp(min=torch.finfo(torch.float64).tiny).pow(a), torch.zeros_like(r))
        den = (B * t * t).sum()
        out.append((C * t).sum().pow(2) / den if den > 0 else torch.zeros((), dtype=torch.float64))
    return torch.stack(out)


def tight_exponent_scores(M: torch.Tensor, G: torch.Tensor, A: torch.Tensor, exponents=EXPONENTS) -> torch.Tensor:
    """g(a) for each a from the direction source M (m, n), the gradient G and the activations A (N, n).

    Example:
        >>> M = torch.randn(8, 16, dtype=torch.float64); A = torch.randn(64, 16, dtype=torch.float64)
        >>> bool((tight_exponent_scores(M, M, A) >= exponent_scores(M, M, torch.linalg.svdvals(A))).all())
        True
    """
    if M.shape != G.shape or M.ndim != 2 or A.ndim != 2 or A.shape[-1] != M.shape[-1]:
        raise ValueError(
            f"need M, G of one shape (m, n) and A (N, n), got {tuple(M.shape)}, {tuple(G.shape)}, {tuple(A.shape)}"
        )
    M64, G64 = M.double(), G.double()
    U, s, Vh = torch.linalg.svd(M64, full_matrices=False)
    C = ((U.mT @ G64) * Vh).sum(-1)
    B = (A.double() @ Vh.mT).pow(2).sum(0)  # B_i = ||A v_i||^2
    return tight_scores_from_spectrum(s, C, B, exponents, rank_tolerance(M64, s[:1]))


def best_exponent(
    M: torch.Tensor, G: torch.Tensor, act_singular_values: torch.Tensor, exponents=EXPONENTS
) -> tuple[float, torch.Tensor]:
    """(argmax_a f(a), f over ``exponents``); ties go to the smaller a (the more spectral step)."""
    f = exponent_scores(M, G, act_singular_values, exponents)
    return float(exponents[int(torch.argmax(f))]), f


__all__ = [
    "exponent_scores",
    "scores_from_spectrum",
    "tight_exponent_scores",
    "tight_scores_from_spectrum",
    "best_exponent",
    "schatten_k_norm",
    "EXPONENTS",
]
