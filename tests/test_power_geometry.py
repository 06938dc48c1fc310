"""The knob as an optimizer geometry: ``norm="power", power=a`` (steepest.geometry, optim.settings).

The optimizer's step is checked against an explicit float64 numpy SVD reference, W - lr D with
D = U diag(s^a) V^T / ||s^a||_2 * sqrt(rank), at the issue's four points p = 2, 4, 8, inf
(a = 1, 1/3, 1/7, 0) and past spectral (a = -0.25); its direction against seed 003's Schatten-p dualizer.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import steepest
from steepest import geometry as geo
from steepest.linalg import schatten_dualize
from steepest.optim.steepest import SteepestDescent

#: (a, Schatten p) pairs of the issue: p = 1 + 1/a.
KNOB = [(1.0, 2.0), (1.0 / 3.0, 4.0), (1.0 / 7.0, 8.0), (0.0, math.inf)]
# float64 end to end: the Gram-eigh path differs from the numpy SVD by ~eps * cond(M)^2 in the small
# directions' weights; for these Gaussian 7 x 5 matrices cond < 1e2, so 1e-10 relative to max|D| is
# far above rounding (~1e-12 measured) and far below any wrong exponent or magnitude (>= 1e-2).
TOL = 1e-10


def _ref_direction(M: np.ndarray, a: float) -> np.ndarray:
    """U diag(s^a) V^T scaled to ||.||_F = sqrt(rank) (rank: singular values above max(m,n) eps s_max)."""
    U, s, Vh = np.linalg.svd(M, full_matrices=False)
    keep = s > max(M.shape) * np.finfo(np.float64).eps * s[0]
    t = np.where(keep, s / s[0], 1.0) ** a * keep
    t = t / np.linalg.norm(t) * math.sqrt(keep.sum())
    return (U * t) @ Vh


def _grad(shape=(7, 5), seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("a,p", KNOB + [(-0.25, None)])
@pytest.mark.parametrize("method", [None, "svd"])
def test_optimizer_step_matches_float64_reference(a, p, method):
    """Two steps with Nesterov momentum and weight decay: each equals the float64 reference update."""
    W0 = _grad(seed=1)
    W = torch.nn.Parameter(W0.clone())
    lr, mu, wd = 0.05, 0.9, 0.1
    opt = SteepestDescent([W], lr=lr, norm="power", power=a, momentum=mu, nesterov=True, weight_decay=wd, method=method)
    Wr, buf = W0.numpy().copy(), np.zeros((7, 5))
    for k in range(2):
        G = _grad(seed=10 + k)
        W.grad = G.clone()
        opt.step()
        buf = mu * buf + (1 - mu) * G.numpy()  # steepest's EMA momentum; Nesterov: lerp of G toward buf
        M = (1 - mu) * G.numpy() + mu * buf
        Wr = (1 - lr * wd) * Wr - lr * _ref_direction(M, a)
        err = np.abs(W.detach().numpy() - Wr).max()
        assert err <= TOL * np.abs(Wr).max(), (a, k, err)


@pytest.mark.parametrize("a,p", KNOB[1:3])
def test_direction_is_schatten_p_steepest_direction(a, p):
    """0 < a < 1: the step's direction is seed 003's Schatten-(1 + 1/a) dualizer, rescaled to ||.||_F = sqrt(5)."""
    G = _grad()
    D = geo.dualize(G, "power", a)
    S = schatten_dualize(G, p)
    assert torch.allclose(D, S * (math.sqrt(5) / S.norm()), rtol=0, atol=TOL)


def test_end_points_are_specgd_and_scaled_gd():
    """a = 0 is SpecGD's step (same lr, exact polar factor); a = 1 is GD's direction at the polar factor's norm."""
    G = _grad()
    W1, W2 = (torch.nn.Parameter(torch.zeros(7, 5, dtype=torch.float64)) for _ in range(2))
    W1.grad, W2.grad = G.clone(), G.clone()
    SteepestDescent([W1], lr=0.1, norm="power", power=0.0).step()
    steepest.SpecGD([W2], lr=0.1, method="svd").step()
    assert torch.allclose(W1, W2, rtol=0, atol=1e-13)  # two float64 SVD routes (eigh vs gesdd): ~1e-15
    assert torch.allclose(geo.dualize(G, "power", 1.0), G * math.sqrt(5) / G.norm(), rtol=0, atol=1e-13)


@settings(max_examples=25, deadline=None)
@given(
    a=st.floats(-0.5, 1.0),
    c=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_identities(a, c, seed):
    """Scale-free (D(cG) = D(G), c > 0), ||D||_F = sqrt(rank), and <G, D> > 0 (a descent direction)."""
    G = _grad((6, 4), seed)
    D = geo.dualize(G, "power", a)
    # float64 Gram path: the prescale makes D(cG) and D(G) differ only by the rounding of c G (~1e-15 rel)
    assert torch.allclose(geo.dualize(c * G, "power", a), D, rtol=0, atol=1e-9)
    assert abs(float(D.norm()) - 2.0) < 1e-10  # rank 4 (Gaussian): sqrt(4), to float64 rounding
    assert float((G * D).sum()) > 0


def test_rms_factor_and_cost_follow_spectral():
    assert geo.rms_factor((8, 32), "power", -0.2) == geo.rms_factor((8, 32), "spectral")
    assert geo.dualize_cost((8, 32), "power") == geo.dualize_cost((8, 32), "spectral")


def test_low_precision_parameter():
    """A float32 parameter computes in float64 by default and in float32 with dtype='float32'."""
    G = _grad().float()
    ref = torch.from_numpy(_ref_direction(G.double().numpy(), 0.25)).float()
    for dtype, tol in ((None, 1e-6), ("float32", 1e-4)):  # float32 rounding of the result / of the eigh
        W = torch.nn.Parameter(torch.zeros(7, 5))
        W.grad = G.clone()
        SteepestDescent([W], lr=1.0, norm="power", power=0.25, dtype=dtype).step()
        assert (W.detach() + ref).abs().max() < tol


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(norm="power"), "needs its exponent"),
        (dict(norm="power", power=0.5, step_size="dual"), "step_size='dual' needs a dual norm"),
        (dict(norm="power", p=0.5), "takes its exponent as power=a"),
        (dict(norm="spectral", power=0.5), "power is only used with norm='power'"),
        (dict(norm="power", power=float("nan")), "finite number"),
        (dict(norm="power", power=0.5, method="newton_schulz"), "does not apply to norm='power'"),
    ],
)
def test_clear_errors(kwargs, match):
    W = torch.nn.Parameter(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=match):
        SteepestDescent([W], **kwargs)


def test_group_errors_and_norms_refused():
    W, V = torch.nn.Parameter(torch.zeros(4, 3)), torch.nn.Parameter(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="step_size='dual' needs a dual norm"):
        SteepestDescent([{"params": [W], "norm": "power", "power": 0.1, "step_size": "dual"}])
    opt = SteepestDescent([W], norm="spectral")
    with pytest.raises(ValueError, match="power is only used"):
        opt.add_param_group({"params": [V], "power": 0.3})
    with pytest.raises(ValueError, match="no Schatten norm has this direction"):
        geo.dual_norm(torch.eye(3), "power", -0.25)
    with pytest.raises(ValueError, match="use norm='schatten', p=4.0"):
        geo.matrix_norm(torch.eye(3), "power", 1.0 / 3.0)


def test_state_dict_round_trip_and_other_power_refused():
    """A power group resumes bit for bit; a state saved at another exponent is refused (a geometry key)."""

    def run(opt, W, seeds):
        for s in seeds:
            W.grad = _grad(seed=s)
            opt.step()

    W = torch.nn.Parameter(_grad(seed=3))
    opt = SteepestDescent([W], lr=0.05, norm="power", power=-0.1, momentum=0.9)
    run(opt, W, [1, 2])
    sd, W_mid = copy.deepcopy(opt.state_dict()), W.detach().clone()  # state_dict holds live buffers
    run(opt, W, [4, 5])
    W2 = torch.nn.Parameter(W_mid)
    opt2 = SteepestDescent([W2], lr=0.05, norm="power", power=-0.1, momentum=0.9)
    opt2.load_state_dict(sd)
    run(opt2, W2, [4, 5])
    assert torch.equal(W, W2)
    other = SteepestDescent([torch.nn.Parameter(torch.zeros(7, 5))], norm="power", power=0.2)
    with pytest.raises(ValueError, match="power=-0.1"):
        other.load_state_dict(sd)


def test_groups_mix_power_with_other_norms():
    """A group with its own norm does not inherit another norm's exponent from the constructor."""
    W, V = torch.nn.Parameter(_grad(seed=1)), torch.nn.Parameter(_grad(seed=2))
    opt = steepest.SchattenDescent([{"params": [W], "norm": "power", "power": 0.5}, {"params": [V]}], lr=0.1, p=4.0)
    assert (opt.param_groups[0]["p"], opt.param_groups[1]["p"]) == (None, 4.0)
    opt = SteepestDescent([{"params": [W], "norm": "spectral"}, {"params": [V]}], norm="power", power=0.5)
    assert (opt.param_groups[0]["power"], opt.param_groups[1]["power"]) == (None, 0.5)
    G = _grad(seed=3)
    W.grad, V.grad = G.clone(), G.clone()
    W0, V0 = W.detach().clone(), V.detach().clone()
    opt.step()
    assert torch.allclose(W0 - W.detach(), 0.02 * geo.dualize(G, "spectral"), rtol=0, atol=1e-13)  # float64 SVDs
    assert torch.allclose(V0 - V.detach(), 0.02 * geo.dualize(G, "power", 0.5), rtol=0, atol=1e-13)


@pytest.mark.parametrize("a", [1.0, 0.25, -0.25])
def test_power_magnitude_spectral(a):
    """power_magnitude='spectral': the same direction at ||D||_op = 1 (float64 SVD reference)."""
    G = _grad()
    W = torch.nn.Parameter(torch.zeros(7, 5, dtype=torch.float64))
    W.grad = G.clone()
    SteepestDescent([W], lr=1.0, norm="power", power=a, power_magnitude="spectral").step()
    ref = _ref_direction(G.numpy(), a)
    ref = ref / np.linalg.norm(ref, 2)
    assert np.abs(-W.detach().numpy() - ref).max() < TOL * np.abs(ref).max()


def test_power_magnitude_errors():
    W = torch.nn.Parameter(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="only applies to norm='power'"):
        SteepestDescent([W], norm="spectral", power_magnitude="spectral")
    with pytest.raises(ValueError, match="magnitude must be one of"):
        SteepestDescent([W], norm="power", power=0.5, power_magnitude="rms")
    with pytest.raises(ValueError, match="needs a in \\[0, 1\\]"):
        SteepestDescent([W], norm="power", power=-0.5, power_magnitude="schatten")
