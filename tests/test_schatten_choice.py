"""The Schatten-p decrease criterion (arXiv 2605.19781 in the knob's units) on random-feature regression.

L(W) = ||W A^T - Y||_F^2 / (2n) is exactly quadratic, so every claim is checkable exactly: the bound is a
lower bound on the real decrease, its end points are Davis-Drusvyatskiy's two scores, and its argmax
lands on the side DD predicts in the two regimes of seed 001.
"""

from __future__ import annotations

import math

import pytest
import torch

from steepest.diagnostics.schatten_choice import EXPONENTS, best_exponent, exponent_scores, schatten_k_norm
from steepest.linalg.spectral_power import spectral_power


def _problem(A, m=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    n, d = A.shape
    W = torch.randn(m, d, generator=g, dtype=torch.float64)
    Y = torch.randn(m, n, generator=g, dtype=torch.float64)
    loss = lambda W: ((W @ A.mT - Y) ** 2).sum() / (2 * n)  # noqa: E731
    G = (W @ A.mT - Y) @ A / n
    return W, G, loss


def _gauss(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bound_is_a_lower_bound_on_the_real_decrease(seed):
    A = _gauss(40, 12, seed) * torch.logspace(0, -1, 12, dtype=torch.float64)  # anisotropic features
    W, G, loss = _problem(A, seed=seed)
    M = G + 0.3 * _gauss(8, 12, seed + 10)  # a momentum that differs from G
    n = A.shape[0]
    f = exponent_scores(M, G, torch.linalg.svdvals(A))
    for a, fa in zip(EXPONENTS, f.tolist()):
        D = spectral_power(M, a, magnitude="spectral" if a == 0 else "frobenius", method="svd")
        r = math.inf if a == 0 else 1 + 1 / a
        k = 2 * (1 + a) / (1 - a) if a < 1 else math.inf
        Dn = torch.linalg.svdvals(D)
        dnorm = Dn.max() if r == math.inf else Dn.pow(r).sum().pow(1 / r)
        L = schatten_k_norm(torch.linalg.svdvals(A), k) ** 2 / n
        inner = (G * D).sum()
        eta = inner / (L * dnorm**2)
        real = (loss(W) - loss(W - eta * D)).item()
        guaranteed = fa * n / 2
        # f is the decrease bound times 2/n; the real decrease of this exact quadratic is >= the bound
        # (Hoelder), and equal only in degenerate cases. 1e-12 relative: float64 rounding of the sums.
        assert real >= guaranteed * (1 - 1e-12)
        assert guaranteed > 0


def test_end_points_are_davis_drusvyatskiy():
    A = _gauss(50, 16, 3)
    _, G, _ = _problem(A, seed=3)
    f = exponent_scores(G, G, torch.linalg.svdvals(A), exponents=(0.0, 1.0))
    nuc = torch.linalg.matrix_norm(G, "nuc")
    # 1e-10: float64 SVDs of 8x16 and 50x16 matrices.
    assert f[0].item() == pytest.approx((nuc**2 / A.norm() ** 2).item(), rel=1e-10)
    assert f[1].item() == pytest.approx((G.norm() ** 2 / torch.linalg.matrix_norm(A, 2) ** 2).item(), rel=1e-10)


def test_low_stable_rank_activations_pick_spectral():
    # A ~ one dominant feature direction (stable rank ~1), G a full-rank gradient (nuclear rank ~6 of 8):
    # DD says spectral, and so must the knob.
    u = _gauss(60, 1, 4)
    v = _gauss(1, 16, 5)
    A = 10 * u @ v + 0.01 * _gauss(60, 16, 6)
    G = _gauss(8, 16, 7)
    a, f = best_exponent(G, G, torch.linalg.svdvals(A))
    assert a == 0.0
    assert f[0] > 2 * f[-1]


def test_isotropic_activations_and_rank_one_gradient_pick_frobenius():
    # A isotropic (stable rank ~ d / (1 + sqrt(d/n))^2 ~ 10) and G rank one (nuclear rank 1): DD says
    # Frobenius; every a gives the same direction, so the activation norm decides: a = 1.
    A = _gauss(400, 16, 8)
    G = _gauss(8, 1, 9) @ _gauss(1, 16, 10)
    a, f = best_exponent(G, G, torch.linalg.svdvals(A))
    assert a == 1.0
    assert torch.all(f[1:] >= f[:-1])  # monotone: ||A||_{S_k} shrinks as k grows


def test_intermediate_optimum_exists():
    # Between the regimes the best a is interior: A of moderate stable rank, G with a decaying spectrum.
    A = _gauss(200, 16, 11) * torch.logspace(0, -0.6, 16, dtype=torch.float64)
    U, _, Vh = torch.linalg.svd(_gauss(8, 16, 12), full_matrices=False)
    G = (U * torch.logspace(0, -1.2, 8, dtype=torch.float64)) @ Vh
    a, f = best_exponent(G, G, torch.linalg.svdvals(A), exponents=tuple(i / 20 for i in range(21)))
    assert 0.0 < a < 1.0, (a, f)


def test_bad_input():
    G = torch.randn(4, 5)
    with pytest.raises(ValueError, match="one shape"):
        exponent_scores(G, torch.randn(5, 4), torch.ones(3))
    with pytest.raises(ValueError, match="must lie in \\[0, 1\\]"):
        exponent_scores(G, G, torch.ones(3), exponents=(-0.25,))
