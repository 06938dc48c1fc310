"""Speed levers of the polar factor (issue 12), each against a float64 reference.

* ``POLAR_EXPRESS_L7E4``: a Polar Express table for the interval the Schatten-8 normalization reaches,
  so 6 steps (not 8) meet max |s - 1| <= 1e-2 on singular values down to 1e-3 s_max.
* Gram Newton-Schulz (``polar(..., gram=None)`` picks it for float32 rectangular inputs): the same
  iteration on the m x m Gram matrix with a restart after two steps; in bf16 (``gram=True``) the mixed form (bf16
  m x n products, float32 m x m side, restart after three).
* The eigh form (``form="eigh"``): the iteration on the eigenvalues of the small-side Gram matrix, which
  ``dtype="auto"`` picks (in float32) for wide matrices where ``precision.EIGH_RULE`` says it is faster.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

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
    old = steepest.polar(G, "polar_express", 6, coefficients=C.POLAR_EXPRESS_L1E3, dtype=torch.float32)
    assert torch.equal(new, steepest.polar(G, "polar_express", 6, dtype=torch.float32))  # the default for 6 steps
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
    # Square (slower in Gram form) and an explicit bf16 (torch.optim.Muon's arithmetic) keep the standard form,
    # bit for bit.
    assert torch.equal(steepest.polar(sq, "newton_schulz", 5), steepest.polar(sq, "newton_schulz", 5, gram=False))
    assert torch.equal(
        steepest.polar(wide, "newton_schulz", 5, dtype=torch.bfloat16),
        steepest.polar(wide, "newton_schulz", 5, dtype=torch.bfloat16, gram=False),
    )
    with pytest.raises(ValueError, match="newton_schulz"):
        steepest.polar(wide, "polar_express", gram=True)
    with pytest.raises(ValueError, match="frobenius"):
        steepest.polar(wide, "newton_schulz", 5, normalization="schatten8", gram=True)


def _spectrum_input(shape, kind: str, seed: int) -> torch.Tensor:
    """float32 (..., m, n) with a Gaussian, log-spaced (1..1e-5) or spike-plus-noise singular-value profile."""
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(shape, generator=g, dtype=torch.float64)
    if kind == "log5":
        U, _, Vh = torch.linalg.svd(G, full_matrices=False)
        G = (U * torch.logspace(0, -5, min(shape[-2:]), dtype=torch.float64)) @ Vh
    elif kind == "spike+noise":
        u, v = torch.randn(shape[:-1] + (1,), generator=g), torch.randn(shape[:-2] + (1, shape[-1]), generator=g)
        G = (u @ v).double() + 1e-2 * G
    return G.float()


@pytest.mark.parametrize("shape", [(64, 640), (640, 64), (2, 48, 400)])
@pytest.mark.parametrize("kind", ["gaussian", "log5", "spike+noise"])
def test_mixed_gram_bf16_is_as_accurate_as_the_standard_bf16_form(shape, kind):
    """The mixed form against the float64 NS5 reference: its error may not exceed the standard bf16 form's by more
    than 25% (measured 0.95-1.12x on Gaussian inputs, 0.80-0.96x on decaying spectra: both are bf16 rounding of X,
    the mixed form rounds the m x n products 4 times instead of 10, the standard form's R at every step), and it is
    bf16-accurate in absolute terms (the standard form: 1e-2 on Gaussian inputs, up to ~0.35 on spike+noise, where
    bf16 cannot resolve the noise directions that NS5 amplifies 300x)."""
    G = _spectrum_input(shape, kind, seed=4)
    ref = _ns5_ref(G)
    mixed = steepest.polar(G, "newton_schulz", 5, dtype=torch.bfloat16, gram=True)
    std = steepest.polar(G, "newton_schulz", 5, dtype=torch.bfloat16, gram=False)
    assert mixed.dtype == G.dtype and mixed.shape == G.shape
    err = float((mixed.double() - ref).norm() / ref.norm())
    err_std = float((std.double() - ref).norm() / ref.norm())
    assert err <= 1.25 * err_std, (err, err_std)
    assert err < 0.5
    assert not torch.equal(mixed, std)  # (the forms differ in rounding: the test sees both)


@settings(max_examples=25, deadline=None)
@given(
    m=st.integers(2, 24),
    aspect=st.integers(1, 6),
    restart=st.integers(1, 6),
    steps=st.integers(1, 7),
    seed=st.integers(0, 2**16),
)
def test_gram_form_is_the_standard_iteration_for_any_restart(m, aspect, restart, steps, seed):
    """The identity behind every Gram form: X_k = Q_k X_0 with Q_k a polynomial in X_0 X_0^T, so in float64 the Gram
    iteration (any restart period, the m x m side in float64 too) equals the standard iteration to round-off
    (1e-10: ~steps x 1e-16 per operation, amplified by at most the quintic's growth 3.4445^steps)."""
    from steepest.linalg.polar_forms import _iterate_gram

    g = torch.Generator().manual_seed(seed)
    X = torch.randn(m, m * aspect, generator=g, dtype=torch.float64)
    X = X / X.norm()
    table = C.schedule(C.MUON_QUINTIC, steps)
    got = _iterate_gram(X, table, restart=restart, small=torch.float64)
    want = torch.from_numpy(ref_polar_iteration(X.numpy(), table, "frobenius", 1.0))
    assert float((got - want).norm() / want.norm()) < 1e-10


@settings(max_examples=30, deadline=None)
@given(
    m=st.integers(1, 20),
    n=st.integers(1, 60),
    batch=st.sampled_from([(), (3,)]),
    method=st.sampled_from(["newton_schulz", "polar_express"]),
    steps=st.integers(0, 8),
    normalization=st.sampled_from(["frobenius", "schatten8"]),
    rank=st.integers(0, 3),
    seed=st.integers(0, 2**16),
)
def test_eigh_form_is_the_iteration(m, n, batch, method, steps, normalization, rank, seed):
    """The eigh form evaluates the same polynomial of G: in float64 it equals the standard iteration to round-off
    (1e-9: ~1e-16 per operation, amplified by at most the polynomials' growth, ~3.4445 per step), for either method,
    either normalization, wide, tall, square, batched and rank-deficient inputs (rank 0: the zero matrix)."""
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(*batch, m, n, generator=g, dtype=torch.float64)
    if rank < min(m, n):  # a rank-r G: its null directions must stay null
        G = torch.randn(*batch, m, rank, generator=g, dtype=torch.float64) @ torch.randn(
            *batch, rank, n, generator=g, dtype=torch.float64
        )
    kw = dict(dtype=torch.float64, normalization=normalization)
    got = steepest.polar(G, method, steps, form="eigh", **kw)
    want = steepest.polar(G, method, steps, form="standard", **kw)
    assert got.shape == G.shape and got.dtype == G.dtype
    assert float((got - want).norm()) <= 1e-9 * max(1.0, float(want.norm()))


@pytest.mark.parametrize("shape", [(128, 512), (512, 128), (2, 96, 640)])
@pytest.mark.parametrize("kind", ["gaussian", "log5", "spike+noise"])
def test_eigh_form_float32_is_far_more_accurate_than_the_bf16_iteration(shape, kind):
    """Against the float64 NS5 reference (benchmarks/form_sweep.py: 1e-6 to 3e-3 where the bf16 form has 1e-2 to
    0.35): <= 5e-3 absolute (float32 eigenvalues carry an absolute error ~6e-8 of the largest, which NS5's ~490x
    gain near 0 lifts in the directions below ~2e-4) and <= 0.2x the bf16 standard form's error."""
    G = _spectrum_input(shape, kind, seed=6)
    ref = _ns5_ref(G)
    got = steepest.polar(G, "newton_schulz", 5, dtype=torch.float32, form="eigh")
    bf16 = steepest.polar(G, "newton_schulz", 5, dtype=torch.bfloat16, gram=False)
    err = float((got.double() - ref).norm() / ref.norm())
    err_bf16 = float((bf16.double() - ref).norm() / ref.norm())
    assert err <= 5e-3 and err <= 0.2 * err_bf16, (err, err_bf16)


def test_eigh_form_falls_back_to_the_standard_iteration_where_eigh_fails(monkeypatch):
    """A LAPACK eigh that does not converge (or a non-finite G) gives the standard iteration's result, bit for bit."""
    G = torch.randn(64, 256, generator=torch.Generator().manual_seed(7))
    want = steepest.polar(G, "newton_schulz", 5, dtype=torch.float32, form="standard")

    def fails(*a, **k):
        raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge (test)")

    monkeypatch.setattr(torch.linalg, "eigh", fails)
    assert torch.equal(steepest.polar(G, "newton_schulz", 5, dtype=torch.float32, form="eigh"), want)
    monkeypatch.undo()
    bad = G.clone()
    bad[3, 5] = float("nan")
    assert torch.isnan(steepest.polar(bad, "newton_schulz", 5, form="eigh")).all()  # NaN in, NaN out, no raise


def test_form_argument_errors():
    G = torch.randn(16, 64)
    with pytest.raises(ValueError, match="form must be one of"):
        steepest.polar(G, "newton_schulz", 5, form="fast")
    with pytest.raises(ValueError, match="contradicts"):
        steepest.polar(G, "newton_schulz", 5, form="eigh", gram=True)
    with pytest.raises(ValueError, match="float32 or float64"):
        steepest.polar(G, "newton_schulz", 5, form="eigh", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="iterative methods"):
        steepest.polar(G, "svd", form="eigh")
    assert torch.equal(
        steepest.polar(G, "newton_schulz", 5, form="gram"), steepest.polar(G, "newton_schulz", 5, gram=True)
    )


def test_auto_picks_the_eigh_form_only_where_the_kind_measured_it(monkeypatch):
    """``dtype="auto"`` runs the matrices of its kind's ``EIGH_RULE`` in the float32 eigh form (an AVX512-BF16 CPU
    without AMX: wide ones from 128 x 1024; a CPU without bf16: from aspect 2) and everything else as before; an
    explicit dtype, AMX, CUDA and forced bf16 keep their iteration."""
    from steepest.linalg import precision as P

    monkeypatch.delenv("STEEPEST_BF16", raising=False)
    g = torch.Generator().manual_seed(5)
    wide, tall, sq = (
        torch.randn(128, 1024, generator=g),
        torch.randn(1024, 128, generator=g),
        torch.randn(128, 128, generator=g),
    )

    def ns(G, **kw):
        return steepest.polar(G, "newton_schulz", 5, **kw)

    monkeypatch.setattr(P, "_CACHE", {"cpu": ("cpu-avx512_bf16", "test")})
    for G in (wide, tall):
        assert P.auto_dtype("cpu", G.shape) == torch.float32  # the eigh form runs in float32
        assert torch.equal(ns(G, dtype="auto"), ns(G, dtype=torch.float32, form="eigh"))
        assert torch.equal(ns(G, dtype=torch.bfloat16), ns(G, dtype=torch.bfloat16, gram=False))  # explicit bf16
        assert torch.equal(ns(G, dtype=torch.float32), ns(G, dtype=torch.float32, gram=True))  # explicit float32
    assert torch.equal(ns(sq, dtype="auto"), ns(sq, dtype=torch.bfloat16, gram=False))  # square: the bf16 iteration
    for kind in ("cpu-amx", "forced-bf16", "cuda"):
        monkeypatch.setattr(P, "_CACHE", {"cpu": (kind, "test")})
        assert not torch.equal(ns(wide, dtype="auto"), ns(wide, dtype=torch.float32, form="eigh")), kind
    # without native bf16 (and its simulation) the alternative is the float32 iteration: the eigh form from
    # aspect 2 on (128 x 256 up) and on squares from side 256, the float32 iteration on smaller squares
    big = torch.randn(256, 256, generator=g)
    for kind in ("cpu-no-bf16", "forced-float32"):
        monkeypatch.setattr(P, "_CACHE", {"cpu": (kind, "test")})
        mid = torch.randn(128, 256, generator=g)
        assert torch.equal(ns(mid, dtype="auto"), ns(mid, dtype=torch.float32, form="eigh")), kind
        assert torch.equal(ns(big, dtype="auto"), ns(big, dtype=torch.float32, form="eigh")), kind
        assert torch.equal(ns(sq, dtype="auto"), ns(sq, dtype=torch.float32)), kind
    monkeypatch.setattr(P, "_CACHE", {"cpu": ("cpu-avx512_bf16", "test")})  # with native bf16 squares stay bf16
    assert torch.equal(ns(big, dtype="auto"), ns(big, dtype=torch.bfloat16, gram=False))
    # through the optimizer: the default Muon's update of a wide matrix is the eigh form's, from float32 momentum
    # (not cast to bf16 first: its error vs float64 NS5 is then float32's, < 1e-4, where bf16 momentum gives ~1e-2)
    monkeypatch.setattr(P, "_CACHE", {"cpu": ("cpu-avx512_bf16", "test")})
    W = torch.nn.Parameter(torch.zeros(128, 1024))
    opt = steepest.Muon([W], lr=1.0, momentum=0.0, weight_decay=0.0)
    W.grad = wide.clone()
    opt.step()
    torch.testing.assert_close(W.detach(), -ns(wide, dtype=torch.float32, form="eigh"), rtol=0, atol=0)
    ref = _ns5_ref(wide)
    assert float((-W.detach().double() - ref).norm() / ref.norm()) < 1e-4


# --------------------------------------------------------------------------- the best table per step count
def _spectra() -> dict[str, torch.Tensor]:
    """Two log-spaced spectra that put the smallest singular value of interest near the two ends of what the
    Schatten-8 normalization reaches on benchmarks/polar.py: 7 ones over log-spaced [1.001e-3, 1] (96
    values: floor 7.52e-4, just above the worst benchmark case 7.43e-4), and benchmarks/polar.py's own
    log-spaced [1e-6, 1] at 256 (floor 8.93e-4)."""
    return {
        "ones+log[1e-3,1] 96": torch.cat(
            [torch.ones(7, dtype=torch.float64), torch.logspace(0, math.log10(1.001e-3), 89, dtype=torch.float64)]
        ),
        "log[1e-6,1] 256": torch.logspace(0, -6, 256, dtype=torch.float64),
    }


def _floor(s: torch.Tensor) -> float:
    """Smallest singular value of interest (> 1e-3 s_max) after the schatten8 normalization with safety 1.01."""
    return float(s[s > 1e-3 * s[0]].min() / (C.POLAR_EXPRESS_SAFETY * s.pow(8).sum().pow(1 / 8)))


def test_best_table_is_the_smallest_worst_error_at_the_reached_floor():
    # The per-step choice, against the scalar bound on [7.43e-4, 1/1.01] (see best_polar_express_table).
    chosen = {n: C.best_polar_express_table(n) for n in range(1, 12)}
    assert [n for n, t in chosen.items() if t == "POLAR_EXPRESS_L7E4"] == [4, 5, 6, 7]
    for n, name in chosen.items():
        errs = {k: C.worst_error(t, n) for k, t in C.POLAR_EXPRESS_TABLES.items()}
        assert errs[name] <= min(errs.values()) + 2.0**-24  # ties below float32 round-off go to the published
    # The numbers: 6 steps of the l = 7e-4 table 7.9e-3, the published table truncated 6.3e-2.
    assert C.worst_error(C.POLAR_EXPRESS_L7E4, 6) == pytest.approx(7.92e-3, rel=1e-2)
    assert C.worst_error(C.POLAR_EXPRESS_L1E3, 6) == pytest.approx(6.32e-2, rel=1e-2)
    with pytest.raises(ValueError, match="steps"):
        C.best_polar_express_table(-1)


# Measured max |s - 1| of the default (chosen) table in float32 (this test, seeds as below):
#   steps             4      5      6        7        8       10
#   ones+log 96     0.663  0.216  7.9e-3   1.7e-6   ~4e-8   ~4e-8
#   log 256         0.663  0.216  7.9e-3   1.6e-6   3.2e-8  3.5e-8
# (the published table truncated to 6 steps: 6.1e-2 and 1.8e-2).
@pytest.mark.parametrize("spectrum", list(_spectra()))
@pytest.mark.parametrize("steps", range(1, 11))
def test_steps_get_the_best_table_against_float64_reference(spectrum, steps):
    s = _spectra()[spectrum]
    G64 = _matrix(len(s), s, seed=steps)
    G = G64.float()
    Q = steepest.polar(G, "polar_express", steps, dtype=torch.float32)  # no coefficients: the chosen table
    name = C.best_polar_express_table(steps)
    assert torch.equal(
        Q, steepest.polar(G, "polar_express", steps, coefficients=C.POLAR_EXPRESS_TABLES[name], dtype=torch.float32)
    )
    err = _max_s_minus_1(Q, G64)
    # The scalar bound on [floor, 1/1.01] holds for every singular value of interest; float32 adds rounding:
    # measured 2e-8..5e-8 once converged (2 * steps matmuls at unit roundoff 6e-8), so 1e-6 is ~20x that
    # and still far below the smallest bound that is not round-off (1.7e-6 at 7 steps).
    bound = C.worst_error(C.POLAR_EXPRESS_TABLES[name], steps, lo=_floor(s))
    assert err <= bound + 1e-6, (err, bound)
    # No table the project has does better on this spectrum by more than that rounding, except below 4 steps
    # (every table is still > 0.88 from 1 there; they differ in the 5th digit) and on the gentler log 256
    # spectrum (floor 8.9e-4, nearer the published l = 1e-3) where the published table wins at 4-5 steps
    # (0.618 vs 0.663, 0.2164 vs 0.2155): the choice is made for the worst floor.
    other = min(
        _max_s_minus_1(steepest.polar(G, "polar_express", steps, coefficients=t, dtype=torch.float32), G64)
        for t in C.POLAR_EXPRESS_TABLES.values()
    )
    if steps >= 4 and (spectrum.startswith("ones") or steps >= 6):
        assert err <= other + 1e-6, (err, other)
    if steps == 6:  # issue 22 item 3: <= 1e-2 in 6 steps, where the published table truncated misses it
        assert err <= 1e-2
        old = steepest.polar(G, "polar_express", 6, coefficients=C.POLAR_EXPRESS_L1E3, dtype=torch.float32)
        assert _max_s_minus_1(old, G64) > 1e-2
