"""Each seed reproduction in its quick form: the measured numbers, the claims drawn from them, and the
fast paths of each experiment against slow float64 references."""

from __future__ import annotations

import copy
import dataclasses
import math

import numpy as np
import pytest
import torch

import steepest
from steepest.app.reproduce import base
from steepest.app.reproduce import init_rank, phase_retrieval, quadratic, schatten, spec_sign
from steepest.app.runs import ConfigError, apply_overrides


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """Each experiment's quick run, once per module (they are the expensive part of this file)."""
    torch.set_num_threads(1)
    out = {}
    for name, mod in (("quadratic", quadratic), ("schatten", schatten), ("phase-retrieval", phase_retrieval),
                      ("init-rank", init_rank), ("spec-sign", spec_sign)):
        res = mod.run(mod.quick(), tmp_path_factory.mktemp(name))
        out[name] = (res, mod.claims(res))
    return out


def _claim(claims, text):
    (c,) = [c for c in claims if text in c.statement]
    return c


# ---------------------------------------------------------------------------------------- shared
def test_every_claim_is_well_formed(quick_results):
    for name, (_, claims) in quick_results.items():
        mod = base.get(name)
        assert claims, name
        for c in claims:
            assert c.verdict in base.VERDICTS
            assert c.seed and c.statement and c.measured and c.note
            assert c.seed == mod.SEED or c.seed.startswith("REFERENCE.md")


def test_claim_rejects_unknown_verdict():
    with pytest.raises(ValueError, match="verdict"):
        base.Claim("s", "x", "1", "maybe")


def test_configs_validate_and_override():
    for name in base.REGISTRY:
        mod = base.get(name)
        cfg = mod.Config()
        assert dataclasses.asdict(mod.quick()).keys() == dataclasses.asdict(cfg).keys()
        with pytest.raises(ConfigError, match="unknown config key"):
            apply_overrides(cfg, ["no_such_key=1"])
    with pytest.raises(ConfigError):
        apply_overrides(quadratic.Config(), ["stable_ranks=[0.5]"])   # stable rank below 1 is impossible
    assert apply_overrides(schatten.Config(), ["ps=[2,inf]"]).ps == (2.0, math.inf)


def test_cells_are_reused_and_keyed_by_parameters(tmp_path):
    cells = base.Cells(tmp_path)
    calls = []
    f = lambda: calls.append(1) or {"x": float("nan"), "y": [1.0, float("inf")]}  # noqa: E731
    r1 = cells.get("c", {"a": 1}, f)
    r2 = cells.get("c", {"a": 1}, f)
    cells.get("c", {"a": 2}, f)
    assert len(calls) == 2 and cells.hits == 1 and cells.misses == 2
    assert math.isnan(r2["x"]) and r2["y"][1] == math.inf and r1["y"] == [1.0, math.inf]
    (tmp_path / f"{base.cell_key('c', {'a': 1})}.json").write_text("{torn")   # damaged file: recomputed
    base.Cells(tmp_path).get("c", {"a": 1}, f)
    assert len(calls) == 3


# ---------------------------------------------------------------------------------------- quadratic
def test_quadratic_claims_hold_and_numbers(quick_results):
    res, claims = quick_results["quadratic"]
    assert all(c.verdict == "holds" for c in claims), [(c.statement, c.measured) for c in claims]
    for r in res["cells"]:
        # float64 power iteration / alternating maximisation reach the sup to ~1e-10 here; 1e-6 is loose
        assert r["L_F_est"] == pytest.approx(r["L_F"], rel=1e-6)
        assert r["L_star_est"] == pytest.approx(r["L_star"], rel=1e-6)
        assert r["sr"] == pytest.approx(r["target_sr"], rel=1e-6)     # bisection on the spectrum is exact
        for m in ("spectral", "gd"):
            assert r[m]["violations"] == 0 and r[m]["equiv_mismatches"] == 0
            assert all(b <= a * (1 + 1e-12) for a, b in zip(r[m]["f"], r[m]["f"][1:]))   # monotone descent


def test_quadratic_claims_follow_the_numbers(quick_results):
    res, _ = quick_results["quadratic"]
    bad = copy.deepcopy(res)
    bad["cells"][0]["gd"]["violations"] = 1
    bad["cells"][0]["L_star_est"] = 2 * bad["cells"][0]["L_star"]
    claims = quadratic.claims(bad)
    assert _claim(claims, "each step decreases").verdict == "fails"
    assert _claim(claims, "L_* = ").verdict == "fails"


def test_quadratic_spectral_step_matches_svd_reference():
    gen = torch.Generator().manual_seed(0)
    prob = quadratic.make_problem(12, 3.0, gen)
    A, B, X0 = prob["A"], prob["B"], prob["X0"]
    L = float(torch.linalg.matrix_norm(A, "fro")) ** 2
    rec = quadratic.trajectory(A, B, X0, "spectral", L, 1)
    G = A.T @ (A @ X0 - B)
    U, s, Vh = torch.linalg.svd(G)
    X1 = X0 - (s.sum() / L) * (U @ Vh)                                # seed 000, Proposition 4.1
    # both float64 from the same SVD up to ordering: agreement to ~1e-12 relative
    assert rec["f"][1] == pytest.approx(float(quadratic.loss(A, B, X1)), rel=1e-10)


# ---------------------------------------------------------------------------------------- schatten
def test_schatten_numbers(quick_results):
    res, claims = quick_results["schatten"]
    for kind, K in res["kinds"].items():
        var = K["var"]
        assert all(a > b for a, b in zip(var, var[1:])), kind          # spread shrinks monotonically in p
        assert var[-1] < 1e-20                                          # p = inf: all singular values equal
        assert 1.5 <= K["fit"]["gamma"] <= 2.5, K["fit"]                # seed 003: ~1/(p-1)^2
        assert K["ns_match_p"] < 16
    assert all(c.verdict == "holds" for c in claims), [(c.statement, c.measured) for c in claims]


def test_schatten_p2_spread_is_the_gradient_spread():
    gen = torch.Generator().manual_seed(1)
    G = schatten.make_gradient("low_stable_rank", 20, 10, 1.0, gen)
    s = torch.linalg.svdvals(G)
    ref = float((s / s.mean()).var(unbiased=False))                   # p = 2 dualizer is G/||G||_F
    assert schatten.spread(schatten.dualizer(G, 2.0))["var"] == pytest.approx(ref, rel=1e-9)


def test_schatten_match_p_interpolates():
    grid = [2.0, 4.0, 8.0]
    var = [1e-1, 1e-2, 1e-3]
    assert schatten.match_p(grid, var, 1e-2) == pytest.approx(4.0)
    assert schatten.match_p(grid, var, math.sqrt(1e-1 * 1e-2)) == pytest.approx(math.sqrt(8.0))  # log-log midpoint
    assert schatten.match_p(grid, var, 1.0) == 2.0 and schatten.match_p(grid, var, 1e-9) == 8.0


# ---------------------------------------------------------------------------------------- phase retrieval
def test_population_gradient_matches_autograd_and_samples():
    gen = torch.Generator().manual_seed(2)
    prob = phase_retrieval.spiked_problem(6, 5.0, gen)
    Q, w = prob["Q"], prob["w"]
    W = (0.3 * torch.randn(6, 6, generator=gen, dtype=torch.float64)).requires_grad_()
    CQ = (W @ W.T - torch.outer(w, w)) @ Q
    (g_ref,) = torch.autograd.grad(2 * torch.trace(CQ @ CQ) + torch.trace(CQ) ** 2, W)
    g = phase_retrieval.population_grad(W.detach(), Q, w)
    assert torch.allclose(g, g_ref, rtol=1e-10, atol=1e-12)           # two float64 evaluations of one formula
    mc = phase_retrieval.sample_grad(W.detach(), Q, w, 400_000, gen)
    # Monte Carlo mean of 4e5 samples: relative error ~ (heavy 8th-moment tails) / sqrt(4e5) ~ 0.01-0.03
    assert float((mc - g).norm() / g.norm()) < 0.08


def test_phase_retrieval_numbers(quick_results):
    res, claims = quick_results["phase-retrieval"]
    s = phase_retrieval.summary(res)
    # SpecGD from W0 = theta U: polar(grad) = -U exactly while every direction still grows, so a = b = c
    assert s["spec_uniform_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert s["gd_spike_over_signal"] > 2.0
    t1s, t1g = s["t1"]["specgd"], s["t1"]["gd"]
    assert max(t1g) > 10 * max(t1s)                                    # GD's growth stage is far longer
    assert all(b > a for a, b in zip(t1g, t1g[1:]))                    # and lengthens with d
    assert s["fit"]["gd"]["slope"] > 0 and s["fit"]["gd"]["r2"] > 0.95
    assert s["diverged_cells"]["gd"] > s["diverged_cells"]["specgd"]
    assert all(c.verdict == "holds" for c in claims), [(c.statement, c.measured) for c in claims]


def test_growth_end_interpolates():
    assert phase_retrieval.growth_end([-1.0, -0.5, 0.5]) == pytest.approx(1.5)
    assert math.isnan(phase_retrieval.growth_end([-1.0, -0.5]))


# ---------------------------------------------------------------------------------------- init rank
def test_moment_limits():
    assert init_rank.moment_limit("relu") == pytest.approx(math.pi, rel=1e-7)   # E[relu^2]/E[relu]^2 = pi
    g = torch.randn(2_000_000, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * math.sqrt(2)
    s = torch.nn.functional.gelu(g)
    mc = float(s.square().mean() / s.mean() ** 2)
    assert init_rank.moment_limit("gelu") == pytest.approx(mc, rel=0.01)         # MC error ~ 1e-3 at 2e6 samples
    assert math.isinf(init_rank.moment_limit("tanh")) and math.isinf(init_rank.moment_limit("swiglu"))


def test_init_rank_numbers(quick_results):
    res, claims = quick_results["init-rank"]
    A = res["acts"]
    assert A["relu"]["random_features"][-1] == pytest.approx(math.pi, rel=0.25)
    for act in ("tanh", "swiglu"):
        assert A[act]["random_features"][-1] > 4 * A[act]["random_features"][0]   # widths grow 8x
    for arch in init_rank.ARCHS:
        assert A["relu"][arch][-1] < 5.0                                # O(1) at every width
    assert all(c.verdict == "holds" for c in claims), [(c.statement, c.measured) for c in claims]


# ---------------------------------------------------------------------------------------- spec-sign
def test_line_search_matches_closed_form():
    cfg = spec_sign.Config(n=10, m=10, input_decay=1.0)
    layer = spec_sign.Layer(cfg, 0.3, "gaussian", torch.Generator().manual_seed(4))
    gen = torch.Generator().manual_seed(5)
    dirs = [spec_sign.direction(layer.minibatch_grad(8, gen), "spec") for _ in range(4)]
    got = spec_sign.measured_gain(layer, dirs, 241)["gain"]
    a = np.mean([float((layer.G * D).sum()) for D in dirs])
    h = np.mean([float((D * D * layer.sigma_in).sum()) for D in dirs])            # <D, H D>, H[D] = D Sigma
    # quadratic: best gain a^2/(2h); a 241-point grid over 5 decades misses the optimum by < 0.1%
    assert got == pytest.approx(a * a / (2 * h), rel=1e-3)


def test_minibatch_gradient_is_unbiased():
    cfg = spec_sign.Config(n=6, m=5, input_decay=0.5)
    layer = spec_sign.Layer(cfg, 0.5, "equal", torch.Generator().manual_seed(6))
    g = layer.minibatch_grad(200_000, torch.Generator().manual_seed(7))
    # entries have std ~ sqrt((||Delta row||^2 + sigma^2)/B) ~ 5e-3 at B = 2e5: 0.03 is > 5 sigma
    assert torch.allclose(g, layer.G, atol=0.03)


def test_spec_sign_numbers(quick_results):
    res, claims = quick_results["spec-sign"]
    rows = res["rows"]
    assert all(r["gain_sign"] >= 0 and r["gain_spec"] >= 0 for r in rows)
    exact_equal = [r for r in rows if r["magnitudes"] == "equal" and math.isinf(r["batch"])]
    # exact equal-magnitude G: sign(G) = G / g is G's own direction, so SignSGD must win
    assert all(r["winner"] == "sign" for r in exact_equal)
    assert _claim(claims, "small batches").verdict == "holds"
    # Fails at quick size (and default size): any sampling noise on the zero entries of a sparse G makes
    # sign(G_hat) a dense +-1 step; SignSGD wins only with the exact gradient. The verdict is the rule's:
    large = _claim(claims, "large batches")
    st = res["settings"]
    sel = [r for r in rows if r["batch"] >= st["large_batch"] and r["density"] <= st["sparse_density"] and r["winner"] != "tie"]
    assert large.verdict == base.verdict(sum(r["winner"] == "sign" for r in sel) > len(sel) / 2)
    assert large.verdict == "fails"
    agree = _claim(claims, "agrees")
    assert "agreement" in agree.measured and agree.verdict in ("holds", "fails")
