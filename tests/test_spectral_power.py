"""The spectral-power knob U diag(s^a) V^T (steepest.linalg.spectral_power) against float64 references.

References: the Schatten-p dualizer of seed 003 (steepest.linalg.schatten_dualize, an exact float64
SVD) at p = 2, 4, 8 and inf, the polar factor at a = 0, and an explicit float64 SVD for a < 0.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from steepest.linalg import polar_svd, schatten_dualize
from steepest.linalg.spectral_power import exponent_from_p, spectral_power

SHAPES = [(6, 6), (5, 9), (9, 5), (3, 7, 4)]  # square, wide, tall, batched tall
# Float64 throughout: the two paths differ by rounding of one SVD vs one Gram eigh. The Gram path's
# error is ~eps * cond(G)^2 in the small directions' weights; with the well-conditioned inputs below
# (cond < 1e3) that is < 1e-9, so 1e-8 relative to max|D| separates a right answer from a wrong one.
TOL = 1e-8


def _matrix(shape, seed=0, cond=None):
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(*shape, generator=g, dtype=torch.float64)
    if cond is None:
        return G
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    k = min(shape[-2:])
    s = torch.logspace(0, -math.log10(cond), k, dtype=torch.float64)
    return (U * s) @ Vh


def _close(A, B, tol=TOL):
    return (A - B).abs().max().item() <= tol * max(B.abs().max().item(), 1e-300)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("method", ["svd", "gram"])
@pytest.mark.parametrize("p", [2.0, 4.0, 8.0, math.inf])
def test_schatten_magnitude_is_the_schatten_dualizer(shape, method, p):
    G = _matrix(shape, seed=1, cond=100.0)
    D = spectral_power(G, exponent_from_p(p), magnitude="schatten", method=method)
    assert _close(D, schatten_dualize(G, p, torch.float64))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("method", ["svd", "gram"])
def test_zero_is_the_polar_factor_and_one_is_the_gradient(shape, method):
    G = _matrix(shape, seed=2, cond=50.0)
    assert _close(spectral_power(G, 0.0, method=method), polar_svd(G, torch.float64)[0])
    r = min(shape[-2:])
    fro = G.flatten(-2).norm(dim=-1)[..., None, None]
    assert _close(spectral_power(G, 1.0, method=method), G * math.sqrt(r) / fro)


@pytest.mark.parametrize("a", [-0.5, -0.25, 0.3, 0.75])
@pytest.mark.parametrize("magnitude", ["frobenius", "spectral"])
def test_agrees_with_an_explicit_svd(a, magnitude):
    G = _matrix((7, 5), seed=3, cond=30.0)
    U, s, Vh = torch.linalg.svd(G, full_matrices=False)
    t = s**a
    t = t * (math.sqrt(5) / t.norm() if magnitude == "frobenius" else 1 / t.max())
    ref = (U * t) @ Vh
    for method in ("svd", "gram"):
        assert _close(spectral_power(G, a, magnitude=magnitude, method=method), ref)


def test_negative_exponent_amplifies_small_directions():
    G = _matrix((6, 6), seed=4, cond=10.0)  # singular values 1 ... 0.1
    sd = torch.linalg.svdvals(spectral_power(G, -0.25, magnitude="spectral"))
    # ratio of largest to smallest singular value of D is (s_max / s_min)^0.25 = 10^0.25, the largest
    # of D sits on G's SMALLEST direction; 1e-10: float64 SVD of a 6x6 well-conditioned matrix.
    assert abs(sd.max().item() - 1.0) < 1e-10
    assert abs(sd.max().item() / sd.min().item() - 10**0.25) < 1e-10


def test_rank_deficient_and_zero():
    u = torch.randn(8, 1, dtype=torch.float64)
    v = torch.randn(1, 5, dtype=torch.float64)
    G = u @ v  # rank 1
    for method in ("svd", "gram"):
        for a in (-0.25, 0.0, 0.5):
            D = spectral_power(G, a, method=method)
            # rank 1: every exponent gives the same direction u v^T / (|u| |v|) with ||D||_F = sqrt(1)
            assert _close(D, G / G.norm())
        assert torch.equal(spectral_power(torch.zeros(4, 3), 0.5, method=method), torch.zeros(4, 3))


@settings(max_examples=40, deadline=None)
@given(
    m=st.integers(1, 9),
    n=st.integers(1, 9),
    a=st.floats(-0.5, 1.0),
    seed=st.integers(0, 10_000),
    c=st.floats(1e-20, 1e20),
)
def test_identities(m, n, a, seed, c):
    """D shares G's singular vectors (D^T G symmetric PSD), is scale-invariant and odd, and the
    Frobenius magnitude gives ||D||_F = sqrt(rank)."""
    G = _matrix((m, n), seed=seed, cond=20.0)
    D = spectral_power(G, a)
    P = D.mT @ G
    # 1e-9: float64 Gram path on a condition-20 matrix (errors ~ eps * cond^2 * size).
    assert (P - P.mT).abs().max() <= 1e-9 * P.abs().max()
    assert torch.linalg.eigvalsh((P + P.mT) / 2).min() >= -1e-9 * P.abs().max()
    assert _close(spectral_power(G * c, a), D, 1e-9)
    assert _close(spectral_power(-G, a), -D, 1e-12)
    assert abs(D.norm().item() - math.sqrt(min(m, n))) <= 1e-9 * math.sqrt(min(m, n))


def test_float32_and_dtype_kept():
    G = _matrix((16, 32), seed=5, cond=10.0)
    D64 = spectral_power(G, 0.4)
    D32 = spectral_power(G.float(), 0.4, dtype=torch.float32)
    assert D32.dtype == torch.float32
    # float32 Gram eigh: errors ~ eps32 * cond^2 = 1.2e-7 * 100; 1e-4 relative is the expected band.
    assert (D32.double() - D64).abs().max() <= 1e-4 * D64.abs().max()


def test_bad_arguments():
    G = torch.randn(3, 3)
    with pytest.raises(ValueError, match="finite number"):
        spectral_power(G, float("nan"))
    with pytest.raises(ValueError, match="a in \\[0, 1\\]"):
        spectral_power(G, -0.1, magnitude="schatten")
    with pytest.raises(ValueError, match="magnitude must be one of"):
        spectral_power(G, 0.1, magnitude="rms")
    with pytest.raises(ValueError, match="method must be one of"):
        spectral_power(G, 0.1, method="newton_schulz")
    with pytest.raises(ValueError, match="Schatten p in \\[2, inf\\]"):
        exponent_from_p(1.5)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        spectral_power(torch.randn(3), 0.0)
