"""The norm registry: duality identities (property tests) and agreement with the float64 references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import steepest
from steepest.linalg.schatten import schatten_norm
from steepest.testing.reference import ref_dual_norm, ref_dualize, ref_matrix_norm

GEOMETRIES = [
    ("frobenius", None),
    ("spectral", None),
    ("linf", None),
    ("schatten", 1.0),
    ("schatten", 1.5),
    ("schatten", 2.0),
    ("schatten", 3.0),
    ("schatten", 8.0),
    ("schatten", 32.0),
    ("schatten", math.inf),
]
SHAPES = [(7, 7), (9, 4), (4, 9), (1, 6), (6, 1), (3, 5, 4)]


@st.composite
def matrices(draw):
    batch = draw(st.sampled_from([(), (2,)]))
    m = draw(st.integers(1, 7))
    n = draw(st.integers(1, 7))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([1e-3, 1.0, 1e3]))
    rank = draw(st.integers(1, min(m, n)))
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(*batch, m, rank, dtype=torch.float64, generator=g)
    B = torch.randn(*batch, rank, n, dtype=torch.float64, generator=g)
    return scale * (A @ B)


@settings(max_examples=60, deadline=None)
@given(G=matrices(), geometry=st.sampled_from(GEOMETRIES))
def test_duality_identities(G, geometry):
    """For G != 0: <G, dualize(G)> = dual_norm(G) and matrix_norm(dualize(G)) = 1 (seed 000, seed 003)."""
    norm, p = geometry
    D = steepest.dualize(G, norm, p, dtype=torch.float64)
    inner = (G * D).sum(dim=(-2, -1))
    dn = steepest.dual_norm(G, norm, p)
    # float64 SVD: relative accuracy ~1e-13; 1e-9 leaves room for rank-deficient G (tiny singular
    # values dropped below the 1e-15-relative cut contribute at most that much).
    torch.testing.assert_close(inner, dn, rtol=1e-9, atol=1e-9 * float(dn.abs().max()))
    unit = steepest.matrix_norm(D, norm, p)
    torch.testing.assert_close(unit, torch.ones_like(unit), rtol=1e-9, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(G=matrices(), geometry=st.sampled_from(GEOMETRIES))
def test_dualizer_is_a_maximiser(G, geometry):
    """No random unit-norm D beats dualize(G): <G, D> <= dual_norm(G) (Hoelder / von Neumann)."""
    norm, p = geometry
    dn = steepest.dual_norm(G, norm, p)
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        R = torch.randn(G.shape, dtype=torch.float64, generator=g)
        R = R / steepest.matrix_norm(R, norm, p)[..., None, None]
        assert ((G * R).sum(dim=(-2, -1)) <= dn * (1 + 1e-9) + 1e-12).all()


@pytest.mark.parametrize("geometry", GEOMETRIES)
@pytest.mark.parametrize("shape", SHAPES)
def test_against_float64_reference(geometry, shape):
    norm, p = geometry
    G = torch.randn(*shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    # float64 everywhere: agreement to ~1e-12 of the largest entry.
    np.testing.assert_allclose(steepest.matrix_norm(G, norm, p).numpy(), ref_matrix_norm(G, norm, p), rtol=1e-10)
    np.testing.assert_allclose(steepest.dual_norm(G, norm, p).numpy(), ref_dual_norm(G, norm, p), rtol=1e-10)
    torch.testing.assert_close(
        steepest.dualize(G, norm, p, dtype=torch.float64), ref_dualize(G, norm, p), atol=1e-10, rtol=0
    )


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_float32_fast_path_against_reference(geometry):
    norm, p = geometry
    G = torch.randn(5, 12, 8, generator=torch.Generator().manual_seed(8))
    D = steepest.dualize(G, norm, p)
    assert D.dtype == torch.float32
    # float32 SVD of a Gaussian matrix: ~1e-6 relative; Schatten dualizers are computed in float64.
    torch.testing.assert_close(D.double(), ref_dualize(G, norm, p), atol=3e-5, rtol=0)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_zero_maps_to_zero(geometry):
    norm, p = geometry
    Z = torch.zeros(3, 4, 5)
    assert torch.equal(steepest.dualize(Z, norm, p), Z)
    assert torch.equal(steepest.dual_norm(Z, norm, p), torch.zeros(3))
    assert torch.equal(steepest.matrix_norm(Z, norm, p), torch.zeros(3))


def test_schatten_special_cases():
    G = torch.randn(6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    torch.testing.assert_close(steepest.dualize(G, "schatten", 2.0), G / G.norm())  # p = 2: G / ||G||_F
    torch.testing.assert_close(
        steepest.dualize(G, "schatten", math.inf, dtype=torch.float64), steepest.polar(G, dtype=torch.float64)
    )  # p = inf: polar factor
    # p = 1: the top singular direction only (rank 1 for distinct singular values), nuclear norm 1.
    D1 = steepest.dualize(G, "schatten", 1.0)
    s = torch.linalg.svdvals(D1)
    assert torch.isclose(s[0], torch.tensor(1.0, dtype=torch.float64)) and s[1:].abs().max() < 1e-12
    # Multiplicity: G = diag(2, 2, 1) -> D = diag(1/2, 1/2, 0), rank 2.
    D = steepest.dualize(torch.diag(torch.tensor([2.0, 2.0, 1.0], dtype=torch.float64)), "schatten", 1.0)
    torch.testing.assert_close(D, torch.diag(torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)))
    assert math.isclose(float(schatten_norm(G, 2.0)), float(G.norm()), rel_tol=1e-12)


def test_vectors_for_entrywise_norms():
    v = torch.tensor([3.0, -4.0, 0.0])
    assert torch.equal(steepest.dualize(v, "linf"), torch.tensor([1.0, -1.0, 0.0]))
    assert float(steepest.dual_norm(v, "linf")) == 7.0
    assert float(steepest.matrix_norm(v, "frobenius")) == 5.0
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        steepest.dualize(v, "spectral")


def test_extreme_magnitudes_stay_finite():
    G = torch.randn(10, 6, generator=torch.Generator().manual_seed(10))
    for norm, p in GEOMETRIES:
        base = steepest.dualize(G, norm, p)
        for scale in (1e-30, 1e30):
            D = steepest.dualize(G * scale, norm, p)
            assert torch.isfinite(D).all()
            torch.testing.assert_close(D, base, atol=3e-5, rtol=0)  # float32 rounding of the rescale


def test_bad_arguments():
    G = torch.randn(3, 3)
    with pytest.raises(ValueError, match="norm must be one of"):
        steepest.dualize(G, "nuclear")
    with pytest.raises(ValueError, match="Schatten exponent p"):
        steepest.dualize(G, "schatten", 0.5)
    with pytest.raises(ValueError, match="Schatten exponent p"):
        steepest.dual_norm(G, "schatten")
    with pytest.raises(ValueError, match="only used with norm='schatten'"):
        steepest.matrix_norm(G, "spectral", p=3)


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_empty_matrices(geometry):
    """An empty matrix (e.g. an empty FSDP shard) has zero norms and an empty dualizer, not an error."""
    norm, p = geometry
    for shape in [(0, 5), (4, 0), (3, 0, 5), (3, 4, 0), (0, 0)]:
        batch = shape[:-2]
        for dtype in (torch.float32, torch.float64):
            E = torch.zeros(shape, dtype=dtype)
            D = steepest.dualize(E, norm, p)
            assert D.shape == E.shape and D.dtype == dtype, (shape, dtype)
            for f in (steepest.dual_norm, steepest.matrix_norm):
                v = f(E, norm, p)
                # one zero per matrix of the batch (a sum over no singular values / entries), in E's dtype
                assert v.shape == batch and v.dtype == dtype, (f.__name__, shape, dtype)
                assert torch.equal(v, torch.zeros(batch, dtype=dtype)), (f.__name__, shape)
        for method in ("svd", "newton_schulz", "polar_express"):
            assert steepest.polar(torch.zeros(shape), method).shape == shape
    # an empty parameter next to a real one: the step leaves it empty and the real one exactly as if alone
    gen = torch.Generator().manual_seed(0)
    V0 = torch.randn(5, 4, dtype=torch.float64, generator=gen)
    gV = torch.randn(5, 4, dtype=torch.float64, generator=gen)
    results = []
    for with_empty in (True, False):
        V = torch.nn.Parameter(V0.clone())
        V.grad = gV.clone()
        params = [V]
        if with_empty:
            W = torch.nn.Parameter(torch.zeros(0, 4, dtype=torch.float64))
            W.grad = torch.zeros(0, 4, dtype=torch.float64)
            params.append(W)
        steepest.SteepestDescent(params, lr=0.1, norm=norm, p=p, step_size="dual").step()
        if with_empty:
            assert W.shape == (0, 4)
        results.append(V.detach().clone())
    assert torch.equal(results[0], results[1]) and not torch.equal(results[0], V0)
