"""The spectral-power family D_a(G) = U diag(s^a) V^T: one knob from Frobenius through spectral and past it.

For G = U diag(s) V^T (compact SVD; singular values at or below the rank cut-off dropped):

* a = 1 is G itself (the Frobenius geometry's direction, up to its magnitude);
* a = 0 is the polar factor U V^T (the spectral geometry: SpecGD, Muon);
* 0 < a < 1 is the Schatten-p steepest direction with p = 1 + 1/a (seed 003, Proposition 2: the
  dualizer U diag(s^(q-1)) V^T / ||s||_q^(q-1) has q - 1 = 1/(p - 1) = a), so the knob covers every
  Schatten geometry from p = 2 (a = 1) to p = inf (a = 0) continuously;
* a < 0 amplifies the small singular directions (DynMuon's late phase, arXiv 2605.17109, which schedules
  a from 0.25 down to -0.25). No Schatten norm has this as its steepest direction (p = 1 + 1/a < 1
  is not a norm), so there is no dual norm and no ``step_size="dual"`` for it.

Magnitudes (``magnitude=``): the direction alone does not fix a step, and which magnitude makes one
learning rate transfer across the knob is a modelling choice. Three are offered:

* ``"frobenius"`` (default): ||D||_F = sqrt(r), r the numerical rank, i.e. the Frobenius norm (and so
  the RMS) of the polar factor. At a = 0 this is exactly U V^T, so it equals SpecGD/Muon's direction,
  and for every a the update has the RMS a Muon update has: the lr keeps its meaning as the step's RMS
  (the "RMS-matched" rule; arXiv 2605.19781 pins ||dW||_F = sqrt(min(m, n)) kappa^(1/p), which is this
  rule times kappa^(1/p), a factor that bridges to Adam's lr at p = 1 and is 1 at p = inf).
* ``"spectral"``: ||D||_op = 1, i.e. U diag(s^a / max_i s_i^a) V^T. The step stays in the same spectral-
  norm trust region for every a (the lecture notes' view: lr bounds ||dW||_op), so a low-stable-rank
  gradient at a = 1 gets a step sqrt(r / srank) times smaller in Frobenius norm than at a = 0.
* ``"schatten"``: ||D||_{S_p} = 1 with p = 1 + 1/a (0 <= a <= 1): exactly the Schatten-p dualizer
  :func:`steepest.linalg.schatten_dualize` (a = 0 the polar factor, a = 1 G / ||G||_F).

The optimizer geometry ``norm="power"`` (:mod:`steepest.geometry`, group key ``power=a``) uses the
``"frobenius"`` rule. Why that rule makes one lr transfer across the knob (the derivation): a step
dW = -lr D on a layer y = W x whose inputs have second moment E[x x^T] = sigma^2 I changes the outputs by
E||dW x||^2 = lr^2 sigma^2 ||D||_F^2, whatever D's singular directions are. A learning rate keeps its
meaning across a iff the same lr gives the same output change at every a, i.e. iff ||D_a||_F does not
depend on a; pinning it to sqrt(r), the polar factor's Frobenius norm, makes a = 0 exactly SpecGD/Muon
(same lr, same ``scale_rule``), so a tuned Muon lr is the knob's lr at every a. What a then changes is
only how the budget is spread: the first-order decrease lr <G, D_a> = lr sqrt(r) sum_i c_i s_i^a /
||s^a||_2 (c_i = u_i^T G v_i) is largest at a = 1 (Cauchy-Schwarz, for M = G), while small a spreads the
step evenly over the directions (robust to curvature concentrated in the top ones). arXiv 2605.19781
pins ||dW||_F = sqrt(min(m, n)) kappa^a (their p is 1/a) with kappa = lr_adam rho_adam sqrt(max(m, n)) /
lr_muon, a log-linear interpolation of the step's RMS from Muon's (a = 0) to Adam's (a = 1): it is this
rule times kappa^a (equal at a = 0 for a full-rank M), i.e. this rule is theirs with kappa = 1. Theirs
keeps two tuned lrs meaningful (Muon's and Adam's); this one keeps one. The pinned factor kappa^a is
offered by :class:`steepest.optim.time_choosers.SchattenChoice` (``pinned=``).

Where the derivation fails, measured: it assumes isotropic inputs. A layer's gradient G = dY^T X / N has its
row space in the inputs' high-variance directions, so a low-rank direction (a near 1 early in training)
puts its whole sqrt(r) Frobenius budget where the inputs are largest, and the output change
lr^2 tr(D Sigma D^T) exceeds the isotropic estimate. On charlm (default size, lr 0.02, 60 steps) the
choosers that pick a near 1 trained markedly worse under this rule than under ``"spectral"`` (mean training
loss of steps 50-59: 2.651 vs 2.479 for 2605.19781's choice, 3.202 vs 2.530 for the phase switch; SpecGD
2.381), which bounds the worst case ||dW x|| <= lr ||x|| and also makes a = 0 SpecGD. The group key
``power_magnitude`` selects the rule; steepest compare's measured choosers use ``"spectral"``.

Why the two rules differ, in one line: for a direction with singular values t_i, ||D||_F^2 = sum t_i^2
while ||D||_op = max t_i; they agree (up to sqrt(r)) only for flat spectra (a = 0). The lr that
transfers is an empirical question; benchmarks/train.py measures it.

Two methods share the signature (both batch-aware over (..., m, n)):

* ``"svd"``: ``torch.linalg.svd`` in ``dtype`` (the reference; float64 by default);
* ``"gram"``: the eigendecomposition of the small Gram matrix A = X X^T (X oriented wide, m <= n):
  A = Q diag(s^2) Q^T, then D = Q diag(s^(a-1)) Q^T X. It costs two m x m x n products and one m x m
  eigh instead of an m x n SVD. The Gram squares the condition number, so singular values below
  ``sqrt(max(m, n) * eps) * s_max`` are cut (a coarser cut than the SVD's ``max(m, n) * eps * s_max``):
  in float64 that is ~1e-7 s_max for a 1024-wide matrix, below what any training step resolves.
"""

from __future__ import annotations

import math

import torch

from steepest.linalg.polar_factor import _check_matrix, prescale_with_scale, rank_tolerance, svd_or_fallback
from steepest.linalg.schatten import vector_pnorm

METHODS = ("svd", "gram")
MAGNITUDES = ("frobenius", "spectral", "schatten")


def check_exponent(a, magnitude: str = "frobenius") -> None:
    """a must be a finite real number; with ``magnitude="schatten"`` it must lie in [0, 1] (p = 1 + 1/a >= 2)."""
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a):
        raise ValueError(f"the spectral-power exponent a must be a finite number, got {a!r}")
    if magnitude not in MAGNITUDES:
        raise ValueError(f"magnitude must be one of {MAGNITUDES}, got {magnitude!r}")
    if magnitude == "schatten" and not 0.0 <= a <= 1.0:
        raise ValueError(
            f"magnitude='schatten' needs a in [0, 1] (Schatten p = 1 + 1/a >= 2), got a={a!r}; "
            "use magnitude='frobenius' or 'spectral' for other exponents"
        )


def exponent_from_p(p: float) -> float:
    """The knob value a = 1 / (p - 1) of the Schatten-p steepest direction (p >= 2; p = inf gives 0)."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or math.isnan(p) or p < 2:
        raise ValueError(f"the knob covers Schatten p in [2, inf], got p={p!r}")
    return 0.0 if math.isinf(p) else 1.0 / (p - 1.0)


def _spectrum_svd(X: torch.Tensor):
    """(left factor applied later, s, kept) from an SVD of the wide X: returns U, s, Vh and the cut mask."""
    U, s, Vh = svd_or_fallback(X)  # a LinAlgError (gesdd not converging) takes the stable float64 path
    tol = rank_tolerance(X, s[..., :1])
    return U, s, Vh, s > tol


def _weights(s: torch.Tensor, keep: torch.Tensor, a: float, magnitude: str) -> torch.Tensor:
    """Per singular value, the factor t_i with D = U diag(t) V^T, on the kept values only.

    Computed from r = s / s_max in [0, 1] so that no power overflows (s^a for tiny s and a < 0 is
    bounded by (cut-off)^a)."""
    smax = s.amax(dim=-1, keepdim=True)
    safe = torch.where(smax > 0, smax, torch.ones_like(smax))
    r = torch.where(keep, s / safe, torch.ones_like(s))
    t = torch.where(keep, r**a, torch.zeros_like(s))
    if magnitude == "frobenius":
        rank = keep.sum(dim=-1, keepdim=True).to(s.dtype)
        den = t.norm(dim=-1, keepdim=True) / rank.sqrt().clamp(min=1)
    elif magnitude == "spectral":
        den = t.amax(dim=-1, keepdim=True)
    else:  # schatten: ||t||_p = 1 with p = 1 + 1/a (a = 0: p = inf, the max)
        den = vector_pnorm(t, math.inf if a == 0 else 1.0 + 1.0 / a).unsqueeze(-1)
    return t / torch.where(den > 0, den, torch.ones_like(den))


def spectral_power(
    G: torch.Tensor, a: float, *, magnitude: str = "frobenius", method: str = "gram", dtype: torch.dtype = torch.float64
) -> torch.Tensor:
    """D = U diag(t(s)) V^T with t proportional to s^a and the magnitude rule above; 0 for G = 0.

    Args:
        G: (..., m, n) real matrix or batch.
        a: the knob (1 Frobenius, 0 spectral, in between Schatten p = 1 + 1/a, < 0 past spectral).
        magnitude: ``"frobenius"`` (||D||_F = sqrt(rank), the polar factor's), ``"spectral"``
            (||D||_op = 1) or ``"schatten"`` (||D||_{S_p} = 1: the Schatten-p dualizer).
        method: ``"gram"`` (eigh of the small Gram matrix; default) or ``"svd"`` (reference).
        dtype: compute dtype (float64 default: s^(a-1) amplifies rounding in small directions;
            float32 is allowed for speed). The result has G's dtype.

    Example:
        >>> G = torch.randn(6, 4, dtype=torch.float64)
        >>> U, s, Vh = torch.linalg.svd(G, full_matrices=False)
        >>> torch.allclose(spectral_power(G, 0.0), U @ Vh)      # a = 0: the polar factor
        True
        >>> D = spectral_power(G, 1.0)                          # a = 1: G rescaled to ||D||_F = sqrt(4)
        >>> torch.allclose(D, G * 2 / G.norm())
        True
    """
    _check_matrix(G)
    check_exponent(a, magnitude)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if G.numel() == 0:
        return G.clone()
    tall = G.shape[-2] > G.shape[-1]
    X, _ = prescale_with_scale(G.mT if tall else G)  # scale-free: D(cG) = D(G) for c > 0
    X = X.to(dtype)
    if method == "svd":
        U, s, Vh, keep = _spectrum_svd(X)
        D = (U * _weights(s, keep, a, magnitude).unsqueeze(-2)) @ Vh
    else:
        lam, Q = torch.linalg.eigh(X @ X.mT)  # ascending eigenvalues of the m x m Gram
        lam = lam.clamp(min=0)
        s = lam.sqrt()
        tol = math.sqrt(max(X.shape[-2:]) * torch.finfo(dtype).eps) * s[..., -1:]
        keep = s > tol
        t = _weights(s, keep, a, magnitude)
        inv = torch.where(keep, t / torch.where(keep, s, torch.ones_like(s)), torch.zeros_like(s))
        D = (Q * inv.unsqueeze(-2)) @ (Q.mT @ X)  # Q diag(t / s) Q^T X = U diag(t) V^T
    return (D.mT if tall else D).to(G.dtype)


__all__ = ["spectral_power", "exponent_from_p", "check_exponent", "METHODS", "MAGNITUDES"]
