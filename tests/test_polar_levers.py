"""Speed levers of the polar factor (issue 12), each against a float64 reference.

* ``POLAR_EXPRESS_L7E4``: a Polar Express table for the interval the Schatten-8 normalization reaches,
  so 6 steps (not 8) meet max |s - 1| <= 1e-2 on singular values down to 1e-3 s_max.
"""

from __future__ import annotations

import torch

import steepest
from steepest.linalg import coefficients as C


def _matrix(n: int, s: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """float64 U diag(s) V^T with Haar-random U, V (QR of a Gaussian, sign fixed)."""
    g = torch.Generator().manual_seed(seed)

    def haar():
        Q, R = torch.linalg.qr(torch.randn(n, n, dtype=torch.float64, generator=g))
        return Q * torch.sign(torch.diagonal(R)).unsqueeze(0)

    return haar() @ torch.diag(s) @ haar().T


def _max_s_minus_1(Q: torch.Tensor, G: torch.Tensor) -> float:
    """max |u_i^T Q v_i - 1| over the float64 singular directions of G with s_i > 1e-3 s_max."""
    U, s, Vh = torch.linalg.svd(G, full_matrices=False)
    keep = s > 1e-3 * s[0]
    si = torch.einsum("ji,jk,ik->i", U[:, keep], Q.double(), Vh[keep])
    return float((si - 1).abs().max())


def test_l7e4_table_is_the_generator_output():
    # Frozen numbers must be what the documented generator gives (1e-12: float64 round-off of the
    # Remez solve, far below any effect on the iteration).
    for frozen, gen in zip(C.POLAR_EXPRESS_L7E4, C.polar_express_coefficients(7e-4, 8)):
        assert all(abs(a - b) <= 1e-12 * max(1.0, abs(b)) for a, b in zip(frozen, gen))


def test_l7e4_six_steps_reach_1e2_where_published_table_does_not():
    # benchmarks/polar.py's log-spaced spectrum over [1e-6, 1] at 256x256: after the Schatten-8
    # normalization the smallest singular value of interest sits at ~8.9e-4, below the published l.
    s = torch.logspace(-6, 0, 256, dtype=torch.float64).flip(0)
    G64 = _matrix(256, s)
    G = G64.float()
    new = steepest.polar(G, "polar_express", 6, coefficients=C.POLAR_EXPRESS_L7E4, dtype=torch.float32)
    old = steepest.polar(G, "polar_express", 6, dtype=torch.float32)
    err_new, err_old = _max_s_minus_1(new, G64), _max_s_minus_1(old, G64)
    # Goal of issue 12 (1e-2); the scalar bound of the table on [7.43e-4, 1] is 7.9e-3 and float32
    # rounding adds ~1e-6, so 1e-2 has room. The published table misses it here (measured 1.8e-2).
    assert err_new <= 1e-2, err_new
    assert err_old > 1e-2, err_old
    # And the directions stay those of U V^T: relative Frobenius distance to the float64 polar factor
    # (singular values below 1e-3 s_max are not converged by design and dominate it): no farther than
    # the published table.
    U, _, Vh = torch.linalg.svd(G64)
    ref = U @ Vh
    assert float((new.double() - ref).norm() / ref.norm()) < float((old.double() - ref).norm() / ref.norm())
