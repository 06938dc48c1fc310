"""polar(): every method against a float64 SVD reference, over tall, wide, square, 1xn, nx1, batched."""

from __future__ import annotations

import pytest
import torch

import steepest
from steepest.linalg.coefficients import POLAR_EXPRESS_L1E3, polar_express_coefficients
from steepest.testing.reference import ref_polar

SHAPES = [(24, 24), (40, 16), (16, 40), (1, 13), (13, 1), (3, 20, 12), (2, 3, 8, 10)]


def with_spectrum(s, m, n, seed=0):
    """G = U diag(s) V^T with Haar-random U, V (float64)."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(m, m, dtype=torch.float64, generator=g))
    V, _ = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
    s = torch.as_tensor(s, dtype=torch.float64)
    return (U[:, : len(s)] * s) @ V[:, : len(s)].T


def svals(Q):
    return torch.linalg.svdvals(Q.double())


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_svd_matches_reference(shape, dtype):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    Q = steepest.polar(G, "svd", dtype=dtype)
    assert Q.dtype == dtype and Q.shape == G.shape
    # float32 SVD of a well-conditioned Gaussian matrix: ~1e-6 relative error; float64: ~1e-14.
    tol = 2e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(Q.double(), ref_polar(G), atol=tol, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_polar_express_matches_reference(shape):
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
    Q = steepest.polar(G, "polar_express", 10)
    # Gaussian matrices of these sizes have s_min/s_max >~ 1e-2 (>> l = 1e-3), so 10 Polar Express
    # steps converge to float32 rounding; 1e-4 leaves room for the ~20 float32 matmuls.
    torch.testing.assert_close(Q.double(), ref_polar(G), atol=1e-4, rtol=0)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_newton_schulz_acts_on_singular_values(shape, dtype):
    """Muon's quintic does not converge to U V^T (REFERENCE.md section 1), so allclose against U V^T
    would fail by design (~0.2 relative error). Instead: NS(G) = U p^(5)(S / ||G||_F) V^T exactly, so
    U^T NS(G) V must be diagonal and its diagonal must equal the scalar quintic iterated in float64.
    """
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    Q = steepest.polar(G.float(), "newton_schulz", dtype=dtype).double()
    U, s, Vh = torch.linalg.svd(G, full_matrices=False)
    D = U.mT @ Q @ Vh.mT
    diag = torch.diagonal(D, dim1=-2, dim2=-1)
    x = s / torch.linalg.vector_norm(s, dim=-1, keepdim=True)
    for _ in range(5):
        x = 3.4445 * x - 4.7750 * x**3 + 2.0315 * x**5
    # float32: ~1e-6 per op, amplified by the quintic's slope (<= 3.4) over 5 steps -> ~1e-3 worst case.
    # bf16: 8-bit mantissa (4e-3 per op) over 15 matmuls, amplified by the slope -> up to ~8e-2.
    tol = 2e-3 if dtype == torch.float32 else 1e-1
    torch.testing.assert_close(diag, x, atol=tol, rtol=0)
    off = D - torch.diag_embed(diag)
    assert off.abs().max() <= tol
    # The band: once a singular value is not tiny, 5 steps put it in the quintic's attracting band
    # [0.6818, 1.1343] (REFERENCE.md rounds it to [0.68, 1.13]); plus rounding.
    big = s / torch.linalg.vector_norm(s, dim=-1, keepdim=True) > 0.3
    assert ((diag[big] >= 0.6818 - tol) & (diag[big] <= 1.1343 + tol)).all()


def test_muon_quintic_stalls_and_polar_express_converges():
    """Paper claims (arXiv 2505.16932): the Muon quintic stalls at error ~0.318 from iteration 11;
    Polar Express with l = s_min has converged by iteration 11."""
    G = with_spectrum(torch.logspace(-3, 0, 96), 96, 96).float()
    for it in (11, 15, 20):
        err_ns = (svals(steepest.polar(G, "newton_schulz", it)) - 1).abs().max()
        # 0.318 = the max distance of the quintic's fixed-point band [0.68, 1.13] from 1; 5e-3 slack
        # for the band edge position on a finite spectrum.
        assert abs(float(err_ns) - 0.318) < 5e-3
        err_pe = (svals(steepest.polar(G, "polar_express", it)) - 1).abs().max()
        assert err_pe < 1e-5  # float32 rounding of 2*it matmuls
    # And 8 steps already meet the benchmark goal (max |s - 1| <= 1e-2) on this log-spaced spectrum.
    assert (svals(steepest.polar(G, "polar_express", 8)) - 1).abs().max() <= 1e-2


def test_schatten8_normalization_beats_frobenius_on_spread_spectrum():
    """Frobenius normalization shrinks the spectrum by ~sqrt(rank), pushing small singular values below
    the table's l = 1e-3; the Schatten-8 normalization shrinks it by at most rank^(1/8)."""
    G = with_spectrum(torch.logspace(-3, 0, 128), 128, 128).float()
    e_fro = (svals(steepest.polar(G, "polar_express", 8, normalization="frobenius")) - 1).abs().max()
    e_s8 = (svals(steepest.polar(G, "polar_express", 8, normalization="schatten8")) - 1).abs().max()
    assert e_s8 < 1e-4 < e_fro


@pytest.mark.parametrize("method", ["svd", "newton_schulz", "polar_express"])
def test_zero_and_extreme_scales(method):
    Z = torch.zeros(2, 5, 3)
    assert torch.equal(steepest.polar(Z, method), Z)
    G = torch.randn(12, 7, generator=torch.Generator().manual_seed(4))
    base = steepest.polar(G, method)
    for scale in (1e-30, 1e30):
        Q = steepest.polar(G * scale, method)
        assert torch.isfinite(Q).all()
        # Same direction as the rescaled problem: the prescale by max|G| makes the computation
        # identical up to float32 rounding of G * scale / max|G * scale|.
        torch.testing.assert_close(Q, base, atol=5e-6, rtol=0)


@pytest.mark.parametrize("method", ["svd", "newton_schulz", "polar_express"])
def test_batched_equals_loop_and_transpose(method):
    G = torch.randn(4, 9, 6, generator=torch.Generator().manual_seed(5))
    batched = steepest.polar(G, method)
    looped = torch.stack([steepest.polar(g, method) for g in G])
    # Same arithmetic, but bmm and mm block the sums differently: float32 rounding (~1e-7) amplified
    # by the iteration's slope over 5-8 steps.
    torch.testing.assert_close(batched, looped, atol=2e-5, rtol=0)
    torch.testing.assert_close(steepest.polar(G.mT, method), batched.mT, atol=1e-6, rtol=0)


def test_dtype_handling():
    G = torch.randn(10, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    assert steepest.polar(G, "newton_schulz", dtype=torch.bfloat16).dtype == torch.float64
    assert steepest.polar(G.float(), "polar_express", dtype=torch.float64).dtype == torch.float32
    Q = steepest.polar(G, "polar_express", 12, dtype=torch.float64)
    torch.testing.assert_close(Q, ref_polar(G), atol=1e-9, rtol=0)  # float64 iteration converges to ~1e-13


def test_rank_deficient_svd_is_compact():
    G = with_spectrum([3.0, 1.0], 8, 6)
    Q = steepest.polar(G, "svd", dtype=torch.float64)
    s = svals(Q)
    assert torch.allclose(s[:2], torch.ones(2, dtype=torch.float64), atol=1e-12)
    assert s[2:].abs().max() < 1e-12  # null space dropped: ||polar||_* = rank
    assert torch.isclose((G * Q).sum(), s.new_tensor(4.0), atol=1e-12)  # <G, polar G> = ||G||_*


def test_bad_arguments():
    G = torch.randn(4, 3)
    with pytest.raises(ValueError, match="method must be one of"):
        steepest.polar(G, "qr")
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        steepest.polar(torch.randn(5))
    with pytest.raises(TypeError, match="complex"):
        steepest.polar(torch.randn(3, 3, dtype=torch.complex64))
    with pytest.raises(ValueError, match="steps"):
        steepest.polar(G, "svd", steps=3)
    with pytest.raises(ValueError, match="steps"):
        steepest.polar(G, "newton_schulz", steps=-1)
    with pytest.raises(ValueError, match="normalization"):
        steepest.polar(G, "polar_express", normalization="max")
    with pytest.raises(TypeError, match="floating-point"):
        steepest.polar(torch.ones(3, 3, dtype=torch.int64))


def test_coefficient_generator_reproduces_published_table():
    table = polar_express_coefficients(1e-3, 8)
    for ours, published in zip(table, POLAR_EXPRESS_L1E3):
        # The published digits are float64 output of the same Remez construction; ours agree to the
        # Remez solver's convergence (~1e-9 relative).
        assert ours == pytest.approx(published, rel=1e-6, abs=1e-6)


def test_generated_table_for_smaller_l_converges_on_wider_spectrum():
    G = with_spectrum(torch.logspace(-5, 0, 64), 64, 64).float()
    table = polar_express_coefficients(1e-5, 12)
    Q = steepest.polar(G, "polar_express", 12, coefficients=table)
    assert (svals(Q) - 1).abs().max() < 1e-2


# ---------------------------------------------------------------------------------------- svd fallback
@pytest.mark.parametrize("fails", [1, 2])  # 1: the float64 transpose's SVD, 2: the Gram eigh path
@pytest.mark.parametrize("shape", [(7, 4), (4, 7), (3, 6, 6)])
def test_polar_svd_falls_back_when_lapack_does_not_converge(monkeypatch, fails, shape):
    """A LinAlgError from torch.linalg.svd (gesdd not converging) gives the same polar factor from the
    float64 fallback, with an SVDFallbackWarning a caller can record."""
    from steepest.linalg.polar_factor import SVDFallbackWarning, polar_svd

    G = torch.randn(*shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    G[..., -1] = G[..., 0]  # rank-deficient: the cut-off must still drop the null part
    want_q, want_s = polar_svd(G, dtype=torch.float64)
    real_svd, calls = torch.linalg.svd, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) <= fails:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
        return real_svd(*a, **k)

    monkeypatch.setattr(torch.linalg, "svd", flaky)
    with pytest.warns(SVDFallbackWarning, match="float64 fallback"):
        q, s = polar_svd(G, dtype=torch.float64)
    # 1e-7: the eigh path squares the spectrum, so the factor is accurate to about sqrt(eps64) ~ 1.5e-8
    # times the condition of the kept part (about 10 here); the SVD path agrees to rounding
    assert torch.allclose(q, want_q, atol=1e-7) and torch.allclose(s, want_s, atol=1e-7)
    assert len(calls) == fails + (fails == 1)  # path 1 succeeds on its second call, path 2 never calls again


@pytest.mark.parametrize("which", ["schatten", "spectral_power"])
def test_schatten_and_knob_svds_take_the_fallback_too(monkeypatch, which):
    """The Schatten-p dualizer and the knob's SVD path use the same fallback as polar_svd (one LinAlgError)."""
    from steepest.linalg.polar_factor import SVDFallbackWarning
    from steepest.linalg.schatten import schatten_dualize
    from steepest.linalg.spectral_power import spectral_power

    G = torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    run = (lambda: schatten_dualize(G, 4.0)) if which == "schatten" else (lambda: spectral_power(G, 0.5, method="svd"))
    want = run()
    real_svd, calls = torch.linalg.svd, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
        return real_svd(*a, **k)

    monkeypatch.setattr(torch.linalg, "svd", flaky)
    with pytest.warns(SVDFallbackWarning, match="float64 fallback"):
        got = run()
    assert torch.allclose(got, want, atol=1e-12)  # float64 SVD of the transpose: the same factors to rounding


@pytest.mark.parametrize("shape", [(40, 16), (16, 40), (24, 24), (3, 20, 12), (3, 12, 20)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("schatten8", [False, True])
def test_buffered_iteration_is_the_plain_loop_bit_for_bit(shape, dtype, schatten8):
    """The eager loop with out= buffers (``_iterate_buffered``) runs the same kernels in the same order as
    the functional loop (fresh tensors per step, written out here): equal up to the GEMM's own rounding."""
    from steepest.linalg.coefficients import MUON_QUINTIC, schedule
    from steepest.linalg.polar_forms import _addmm, _iterate_buffered

    X0 = torch.randn(*shape, generator=torch.Generator().manual_seed(3)).to(dtype)
    X0 = X0 / torch.linalg.vector_norm(X0, dim=(-2, -1), keepdim=True)
    tall = shape[-2] > shape[-1]
    table = schedule(MUON_QUINTIC, 5)

    def gram(X):
        return X.mT @ X if tall else X @ X.mT

    A0 = AA0 = None
    if schatten8:  # _iterate's Schatten-8 path hands over the first step's A and A^2
        A0 = gram(X0)
        AA0 = A0 @ A0
    X = X0.clone()
    for k, (a, b, c) in enumerate(table):
        if k == 0 and schatten8:
            B = b * A0 + c * AA0
        else:
            A = gram(X)
            B = _addmm(A, A, A, beta=b, alpha=c)
        X = _addmm(X, X, B, beta=a, alpha=1.0) if tall else _addmm(X, B, X, beta=a, alpha=1.0)
    got = _iterate_buffered(X0.clone(), table, tall, None if A0 is None else A0.clone(), AA0)
    # Equal in 300 of 300 stress runs, but once a float32 case differed: MKL's GEMM may pick its summation
    # order by the output's memory alignment (no conditional-numerical-reproducibility mode is set), and
    # the buffers are other allocations than the loop's. Such a difference is an ulp or so of an O(1)
    # entry, which 5 contracting steps keep at that size: 4 eps of the iteration dtype.
    tol = 4 * torch.finfo(dtype).eps
    torch.testing.assert_close(got, X, rtol=0, atol=tol)
