"""Speed levers of the polar factor (issue 12), each against a float64 reference.

* ``POLAR_EXPRESS_L7E4``: a Polar Express table for the interval the Schatten-8 normalization reaches,
  so 6 steps (not 8) meet max |s - 1| <= 1e-2 on singular values down to 1e-3 s_max.
* Gram Newton-Schulz (``polar(..., gram=None)`` picks it for float32 rectangular inputs): the same
  iteration on the m x m Gram matrix with a restart after two steps.
"""

from __future__ import annotations

import pytest
import torch

import steepest
from steepest.linalg import coefficients as C
from steepest.testing.reference import ref_polar_iteration


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
    # Frozen numbers must be what the documented generator gives (1e-10: float64 round-off of the
    # Remez solve, which differs between CPUs: 2.6e-12 on the last step's coefficients on an Intel Xeon
    # against the AMD EPYC that froze them; still far below any effect on a float32 iteration, ~1e-7).
    for frozen, gen in zip(C.POLAR_EXPRESS_L7E4, C.polar_express_coefficients(7e-4, 8)):
        assert all(abs(a - b) <= 1e-10 * max(1.0, abs(b)) for a, b in zip(frozen, gen))


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


def _ns5_ref(G: torch.Tensor) -> torch.Tensor:
    table = C.schedule(C.MUON_QUINTIC, 5)
    return torch.from_numpy(ref_polar_iteration(G.double().numpy(), table, "frobenius", 1.0))


@pytest.mark.parametrize("shape", [(96, 300), (300, 96), (3, 40, 130)])
@pytest.mark.parametrize("kind", ["gaussian", "spike+noise"])
def test_gram_newton_schulz_float32_matches_float64_reference(shape, kind):
    g = torch.Generator().manual_seed(1)
    G = torch.randn(shape, generator=g)
    if kind == "spike+noise":  # the low-stable-rank input on which an unrestarted Gram form diverges
        u, v = torch.randn(shape[:-1] + (1,), generator=g), torch.randn(shape[:-2] + (1, shape[-1]), generator=g)
        G = u @ v + 1e-2 * G
    ref = _ns5_ref(G)
    gram = steepest.polar(G, "newton_schulz", 5)  # auto: aspect ratio >= 2 in float32 -> Gram form
    std = steepest.polar(G, "newton_schulz", 5, gram=False)
    err = float((gram.double() - ref).norm() / ref.norm())
    err_std = float((std.double() - ref).norm() / ref.norm())
    # float32 rounding through 5 steps: the standard form measures 1e-6 to 2e-5 here; the Gram form may
    # lose up to ~2x of that (measured 1.4x on spike+noise, benchmarks/RESULTS.md), far from bf16's 1e-2.
    assert err <= max(3 * err_std, 1e-5), (err, err_std)
    assert not torch.equal(gram, std)  # the auto rule really took the Gram path


def test_gram_float64_is_the_same_iteration():
    # In float64 the Gram form is the standard iteration reassociated: equal to ~1e-12 (round-off).
    G = torch.randn(50, 170, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    a = steepest.polar(G, "newton_schulz", 5, dtype=torch.float64, gram=True)
    b = steepest.polar(G, "newton_schulz", 5, dtype=torch.float64, gram=False)
    assert float((a - b).norm() / b.norm()) < 1e-12


def test_gram_auto_rule_and_errors():
    g = torch.Generator().manual_seed(3)
    sq, wide = torch.randn(64, 64, generator=g), torch.randn(64, 256, generator=g)
    # Square (slower in Gram form) and bf16 (twice the error) keep the standard form, bit for bit.
    assert torch.equal(steepest.polar(sq, "newton_schulz", 5), steepest.polar(sq, "newton_schulz", 5, gram=False))
    assert torch.equal(steepest.polar(wide, "newton_schulz", 5, dtype=torch.bfloat16),
                       steepest.polar(wide, "newton_schulz", 5, dtype=torch.bfloat16, gram=False))
    with pytest.raises(ValueError, match="newton_schulz"):
        steepest.polar(wide, "polar_express", gram=True)
    with pytest.raises(ValueError, match="frobenius"):
        steepest.polar(wide, "newton_schulz", 5, normalization="schatten8", gram=True)
