"""Warm-started block Krylov top eigen/singular pairs (LayerMonitor's ||W||_op, ||dW||_op, ||A||_op)
against exact float64 references (eigvalsh / svdvals)."""

import math

import pytest
import torch

from steepest.diagnostics._batched_metrics import grouped_top_eigen
from steepest.linalg.estimate import top_eigenpair, top_singular_pair


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _with_spectrum(s, m, n, seed):
    """m x n float64 matrix with singular values s (descending) and random singular vectors."""
    g = _gen(seed)
    k = len(s)
    U = torch.linalg.qr(torch.randn(m, k, generator=g, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(n, k, generator=g, dtype=torch.float64)).Q
    return (U * torch.as_tensor(s, dtype=torch.float64)) @ V.T


def test_full_krylov_space_is_exact_and_every_estimate_is_a_lower_bound():
    g = _gen(0)
    X = torch.randn(5, 40, 16, generator=g, dtype=torch.float64)
    M = X.mT @ X
    exact = torch.linalg.eigvalsh(M)[..., -1]
    # block 2 x (7 + 1) = 16 = n columns: the Krylov space is R^n, Rayleigh-Ritz is exact up to float64 rounding
    lam, v = top_eigenpair(M, iters=7, block=2, generator=_gen(1))
    assert torch.allclose(lam, exact, rtol=1e-12)
    assert torch.allclose((M @ v[..., None]).squeeze(-1), lam[:, None] * v, atol=1e-10 * float(exact.max()))
    for iters in range(0, 5):  # a Ritz value never exceeds lambda_1 (Courant-Fischer); 1e-12: float64 rounding
        lam, _ = top_eigenpair(M, iters=iters, block=1, generator=_gen(iters))
        assert (lam <= exact * (1 + 1e-12)).all()
    s, _ = top_singular_pair(X, iters=7, block=2, generator=_gen(2))
    assert torch.allclose(s, torch.linalg.svdvals(X)[..., 0], rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_warm_start_from_the_exact_vector_is_exact_to_working_precision(dtype):
    X = _with_spectrum(torch.linspace(2.0, 0.1, 32), 64, 32, seed=3)
    M = (X.T @ X).to(dtype)
    lam_ref, V = torch.linalg.eigh(X.T @ X)
    lam, _ = top_eigenpair(M, V[:, -1].to(dtype), iters=0, block=1)
    # Rayleigh quotient of an exact eigenvector: error ~ n eps ||M||; 1e-5 for float32 (eps 6e-8, n 32), 1e-12 float64
    assert float(lam) == pytest.approx(float(lam_ref[-1]), rel=1e-5 if dtype == torch.float32 else 1e-12)


def test_near_degenerate_top_pair_value_error_is_bounded_by_the_gap():
    # s_1 = 1, s_2 = 1 - 1e-6: the top vector is ill-determined, the value is not. Any unit start in the
    # span of the top two right singular vectors has Rayleigh quotient in [s_2^2, s_1^2]: relative error
    # of s_1 <= 1e-6, and Krylov steps only raise it (monotone Ritz values)
    s = torch.tensor([1.0, 1.0 - 1e-6] + torch.linspace(0.9, 0.01, 30).tolist(), dtype=torch.float64)
    g = _gen(4)
    U = torch.linalg.qr(torch.randn(80, 32, generator=g, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(32, 32, generator=g, dtype=torch.float64)).Q
    X = (U * s) @ V.T
    v0 = 0.6 * V[:, 0] + 0.8 * V[:, 1]  # a bad mix of the top pair
    for iters in (0, 2, 6):
        est, _ = top_singular_pair(X, v0, iters=iters, block=2, generator=_gen(5))
        assert 1.0 - 1e-6 * (1 + 1e-9) <= float(est) <= 1.0 + 1e-12
    # a Marchenko-Pastur edge (pure noise, no gap at the top) cold: 8 steps x 4 columns on 128 x 384 noise are
    # within 1e-3 (measured 1e-3 for 24 such matrices in float32; gap-free bound ~ (log n / k)^2 is looser)
    N = torch.randn(4, 384, 128, generator=_gen(6), dtype=torch.float64) / 384**0.5
    exact = torch.linalg.svdvals(N)[..., 0]
    est, _ = top_singular_pair(N, iters=8, block=4, generator=_gen(7))
    assert ((exact - est) / exact).max() < 2e-3 and (est <= exact * (1 + 1e-12)).all()


def test_a_warm_start_orthogonal_to_the_new_top_direction_is_caught_by_the_random_column():
    # the top singular values swapped between records: v0 is exactly the old top, now the second direction
    s = [3.0, 2.0, 1.0, 0.5] + [0.1] * 20
    X = _with_spectrum(s, 60, 24, seed=8)
    V = torch.linalg.svd(X).Vh.T
    v0 = V[:, 1]  # orthogonal to the true top vector
    alone, _ = top_singular_pair(X, v0, iters=4, block=1)
    # with block 1 the Krylov space of an exact singular vector is that vector: the estimate is s_2, a
    # lower bound (documented: why the monitor's block has a Gaussian column next to v0)
    assert float(alone) == pytest.approx(2.0, rel=1e-10)
    est, v = top_singular_pair(X, v0, iters=4, block=2, generator=_gen(9))
    # gap s_2/s_1 = 2/3: Saad's bound with a Gaussian start (tan phi_0 ~ sqrt(n)) after 4 steps
    # is ~1e-6 relative; 1e-6 with margin (measured ~1e-9)
    assert float(est) == pytest.approx(3.0, rel=1e-6)
    assert abs(float(v @ V[:, 0])) == pytest.approx(1.0, abs=1e-4)


def test_warm_starts_track_a_slowly_changing_matrix():
    # W_t = W_{t-1} + small steps (the weights between two records); carrying v from record to record, a few
    # steps stay within 5e-6 of the exact s_1 although the cold estimate with as many steps is far off
    g = _gen(10)
    W = _with_spectrum(torch.linspace(1.0, 0.2, 64), 192, 64, seed=11)
    v, errs_warm, errs_cold = None, [], []
    for t in range(12):
        W = W + 1e-3 * torch.randn(W.shape, generator=g, dtype=torch.float64) / 192**0.5
        exact = float(torch.linalg.svdvals(W)[0])
        if v is None:
            _, V = torch.linalg.eigh(W.T @ W)
            v = V[:, -1]
            continue
        s, v = top_singular_pair(W, v, iters=3, block=2, generator=_gen(100 + t))
        cold, _ = top_singular_pair(W, iters=3, block=2, generator=_gen(200 + t))
        errs_warm.append((exact - float(s)) / exact)
        errs_cold.append((exact - float(cold)) / exact)
    # linear spectrum, relative gap 1.3% at the top: a Gaussian start needs far more than 3 steps
    # (measured cold errors 8e-3 to 6e-2); the warm vector is nearly converged and each record refines
    # it (measured warm errors <= 8e-7): 5e-6 leaves margin; the lower bound holds to float64 rounding
    assert max(errs_warm) < 5e-6 and min(errs_warm) > -1e-12
    assert max(errs_cold) > 100 * max(max(errs_warm), 1e-12)


def test_grouped_top_eigen_pads_groups_keeps_nan_rows_and_solves_cold_keys_exactly():
    g = _gen(12)
    Xs = {
        "a": torch.randn(50, 16, generator=g),
        "b": torch.randn(40, 9, generator=g),
        "c": torch.randn(30, 16, generator=g),
    }
    mats = {k: X.mT @ X for k, X in Xs.items()}
    bad = mats["c"].clone()
    bad[2, 2] = float("nan")
    mats["bad"] = bad
    cold = grouped_top_eigen(mats, {})
    assert math.isnan(float(cold["bad"][0])) and cold["bad"][1] is None
    for k, X in Xs.items():
        exact = float(torch.linalg.svdvals(X.double())[0]) ** 2
        # cold keys: float32 eigh of the float32 Gram, relative ~eps_32 n (Weyl); 1e-5
        assert float(cold[k][0]) == pytest.approx(exact, rel=1e-5)
    warm = {k: v for k, (_, v) in cold.items() if v is not None}
    # iters 1 x block 2: n > 2 (1 + 1) 2 = 8, so all three take the Krylov path ("b", n = 9, padded to 16)
    out = grouped_top_eigen(mats, warm, _gen(13), iters=1, block=2)
    assert out["b"][1].shape == (9,) and math.isnan(float(out["bad"][0]))
    for k, X in Xs.items():
        exact = float(torch.linalg.svdvals(X.double())[0]) ** 2
        # started from the exact float32 vector: Rayleigh quotient in float64 of float32 products, ~1e-6
        assert float(out[k][0]) == pytest.approx(exact, rel=1e-5) and float(out[k][0]) <= exact * (1 + 1e-5)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="square"):
        top_eigenpair(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="v0 must have shape"):
        top_singular_pair(torch.zeros(5, 4), torch.zeros(5))
    with pytest.raises(ValueError, match="iters"):
        top_eigenpair(torch.eye(3), iters=-1)
    lam, v = top_eigenpair(torch.zeros(2, 4, 4), generator=_gen(0))  # zero matrices: 0, finite vector
    assert (lam == 0).all() and torch.isfinite(v).all()
