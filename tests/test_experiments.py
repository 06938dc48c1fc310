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


#: The verdicts each quick run produces today (checked by hand against the numbers in each test below).
#: spec-sign's "large batches favour sign" fails for a measured reason (see test_spec_sign_numbers).
QUICK_VERDICTS = {
    "quadratic": ["holds"] * 5,
    "schatten": ["holds"] * 3,
    "phase-retrieval": ["holds"] * 5,
    "init-rank": ["holds"] * 4,
    "spec-sign": ["holds", "fails", "holds"],
}


def test_quick_runs_give_todays_verdicts(quick_results):
    got = {name: [c.verdict for c in claims] for name, (_, claims) in quick_results.items()}
    assert got == QUICK_VERDICTS, {n: [(c.statement, c.measured) for c in quick_results[n][1]] for n in got}


def test_verdict_maps_the_condition():
    assert base.verdict(True) == "holds" and base.verdict(False) == "fails" and base.verdict(None) == "inconclusive"
    assert base.verdict(1 > 2) == "fails" and base.verdict(bool(3)) == "holds"


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
    with pytest.raises(ConfigError, match=r"stable_ranks must be non-empty values in \[1, d=96\]"):
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


def test_quadratic_guaranteed_decrease_recomputed_independently(quick_results):
    """Rebuild each problem from its seed and run both methods by hand (float64 SVD): the recorded losses
    match, every step meets its guaranteed decrease, and the spectral step meets it with equality."""
    res, claims = quick_results["quadratic"]
    cfg = quadratic.quick()
    for r in res["cells"]:
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + int(round(r["target_sr"] * 100)))  # run_cell's seed
        prob = quadratic.make_problem(cfg.d, r["target_sr"], gen)
        A, B = prob["A"], prob["B"]
        s = torch.linalg.svdvals(A)
        L_star, L_F = float(s.square().sum()), float(s[0] ** 2)
        assert r["L_star"] == pytest.approx(L_star, rel=1e-12) and r["L_F"] == pytest.approx(L_F, rel=1e-12)
        for method, L in (("spectral", L_star), ("gd", L_F)):
            X = prob["X0"].clone()
            f = [float(quadratic.loss(A, B, X))]
            for t in range(cfg.steps):
                G = A.T @ (A @ X - B)
                U, S, Vh = torch.linalg.svd(G)
                if method == "spectral":
                    bound = float(S.sum()) ** 2 / (2 * L)
                    X = X - float(S.sum()) / L * (U @ Vh)
                else:
                    bound = float(S.square().sum()) / (2 * L)
                    X = X - G / L
                f.append(float(quadratic.loss(A, B, X)))
                dec = f[t] - f[t + 1]
                # f sums d^2 = 1024 float64 terms: worst-case error ~ d^2 eps f0 ~ 1e-13 f0 per evaluation
                # (measured ~1e-16 f0); 1e-11 f0 is 100x that, far below any real shortfall (bound ~1e-2 f0)
                assert dec >= bound - 1e-11 * f[0], (r["target_sr"], method, t)
                if method == "spectral":
                    # square full-rank G: U V^T is orthogonal, ||A U V^T||_F^2 = ||A||_F^2 = L_*, so the
                    # quadratic's exact decrease equals the bound; same rounding floor as above
                    assert dec == pytest.approx(bound, abs=1e-11 * f[0])
            # the module ran the library optimizers (SpecGD/GD), we ran SVD by hand: float64 rounding apart
            # (measured 3e-16 f0), so 1e-10 f0 flags any different step
            assert r[method]["f"] == pytest.approx(f, abs=1e-10 * f[0])
            assert f[-1] < f[0] * (0.7 if method == "gd" else 0.2)      # both make real progress in 30 steps
    n_steps = 2 * cfg.steps * len(cfg.stable_ranks)
    assert _claim(claims, "each step decreases").measured.startswith(f"0 violations in {n_steps} steps")
    # the "favourable" claim's fractions recomputed from the recorded nr(G_t) and sr(A) (nr >= sr <=> larger bound)
    low, high = res["cells"][0], res["cells"][-1]
    frac = [sum(n >= r["sr"] for n in r["gd"]["nr"]) / (cfg.steps + 1) for r in (low, high)]
    assert frac[0] == 1.0 and frac[1] == pytest.approx(9 / 31)       # today's quick numbers: 31 of 31, 9 of 31
    assert [low["gd"]["frac_spectral_bound_larger"], high["gd"]["frac_spectral_bound_larger"]] == frac
    fav = _claim(claims, "favourable")
    assert f"{base.fmt(frac[0])} at sr=" in fav.measured and f"{base.fmt(frac[1])} at sr={base.fmt(high['sr'])}" in fav.measured


def test_quadratic_claims_follow_the_numbers(quick_results):
    res, _ = quick_results["quadratic"]
    bad = copy.deepcopy(res)
    bad["cells"][0]["gd"]["violations"] = 1
    bad["cells"][0]["L_star_est"] = 2 * bad["cells"][0]["L_star"]
    claims = quadratic.claims(bad)
    assert _claim(claims, "each step decreases").verdict == "fails"
    assert _claim(claims, "L_* = ").verdict == "fails"
    # "favourable" compares the lowest- and highest-sr fractions: equal still holds, lower flips it
    ok = copy.deepcopy(res)
    ok["cells"][0]["gd"]["frac_spectral_bound_larger"] = ok["cells"][-1]["gd"]["frac_spectral_bound_larger"]
    assert _claim(quadratic.claims(ok), "favourable").verdict == "holds"
    ok["cells"][0]["gd"]["frac_spectral_bound_larger"] -= 0.01
    assert _claim(quadratic.claims(ok), "favourable").verdict == "fails"
    ok["cells"] = ok["cells"][:1]
    assert _claim(quadratic.claims(ok), "favourable").verdict == "inconclusive"   # one matrix: nothing to compare


@pytest.mark.xfail(strict=True, reason="library bug: quadratic.claims computes one `over` flag for both sups, so an "
                   "L_* estimate above ||A||_F^2 also fails the L_F claim (and vice versa)")
def test_quadratic_sup_claims_judge_their_own_sup(quick_results):
    res, _ = quick_results["quadratic"]
    bad = copy.deepcopy(res)
    bad["cells"][0]["L_star_est"] = 2 * bad["cells"][0]["L_star"]     # only L_*'s estimate is wrong
    claims = quadratic.claims(bad)
    assert _claim(claims, "L_* = ").verdict == "fails"
    assert _claim(claims, "L_F = ").verdict == "holds"                # L_F's numbers are untouched


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


def test_schatten_fit_and_claims_recomputed(quick_results):
    res, claims = quick_results["schatten"]
    ps = res["ps"]
    for kind, K in res["kinds"].items():
        # our own least squares of log var on log(p - 1) over the finite p >= fit_min_p = 8 (5 points)
        pts = [(math.log(p - 1), math.log(v)) for p, v in zip(ps, K["var"]) if math.isfinite(p) and p >= 8]
        assert len(pts) == 5
        slope = np.polyfit(*np.array(pts).T, 1)[0]
        assert K["fit"]["gamma"] == pytest.approx(-slope, rel=1e-12)
        # Band: t_i ~ s_i^(q-1), so var = Var(exp((q-1) ln s)) / mean^2 = (q-1)^2 Var(ln s) (1 + O(q-1)); with
        # q - 1 = 1/(p-1) <= 1/7 over the fit range the correction bends the log-log slope by at most ~1/7 of
        # its size times the skew of ln s (< 1 here): gamma = 2 +- 0.15 (measured 1.99 gaussian, 2.06 low rank)
        assert K["fit"]["gamma"] == pytest.approx(2.0, abs=0.15), kind
        assert K["fit"]["r2"] > 0.999                                   # 5 points on a near-perfect power law
        assert f"{kind}: exponent {base.fmt(K['fit']['gamma'])}" in claims[0].measured
        # the matched p is where the grid's variance curve crosses the NS variance (recomputed here)
        assert K["ns_match_p"] == pytest.approx(schatten.match_p(K["grid_p"], K["grid_var"], K["ns"]["var"]), rel=1e-12)
        # NS5 sits in Muon's [0.68, 1.13] band (REFERENCE.md 1): normalised variance < ((1.13-0.68)/2)^2 ~ 0.05
        assert 0.0 < K["ns"]["var"] < 0.05 and 2.0 < K["ns_match_p"] < 16.0
    g, lo = res["kinds"]["gaussian"], res["kinds"]["low_stable_rank"]
    i32, iinf = ps.index(32.0), ps.index(math.inf)
    for K in (g, lo):                                                   # the "close at p = 32" claim's inputs
        assert K["var"][i32] < 0.01 and K["stable_rank"][i32] / K["stable_rank"][iinf] > 0.8
    # a spread-out low-stable-rank spectrum needs a larger p to look like NS5 than a Gaussian one
    assert lo["ns_match_p"] > g["ns_match_p"]


def test_schatten_verdicts_flip_at_their_thresholds(quick_results):
    res, _ = quick_results["schatten"]
    bad = copy.deepcopy(res)
    for gamma, want in ((2.5, "holds"), (2.51, "fails"), (1.5, "holds"), (1.49, "fails"), (float("nan"), "inconclusive")):
        bad["kinds"]["gaussian"]["fit"]["gamma"] = gamma
        assert schatten.claims(bad)[0].verdict == want, gamma
    bad = copy.deepcopy(res)
    bad["kinds"]["low_stable_rank"]["ns_match_p"] = 16.0
    assert schatten.claims(bad)[2].verdict == "holds"
    bad["kinds"]["low_stable_rank"]["ns_match_p"] = 16.5
    assert schatten.claims(bad)[2].verdict == "fails"
    i = res["ps"].index(32.0)
    bad["kinds"]["gaussian"]["var"][i] = 0.011                          # above close_var = 0.01
    assert schatten.claims(bad)[1].verdict == "fails"


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


def test_phase_retrieval_claim_numbers_recomputed(quick_results):
    res, claims = quick_results["phase-retrieval"]
    dims = [int(d) for d in res["t1"]]
    assert dims == [40, 80, 160, 320]                                   # quick(): d doubles three times
    t1s = [res["t1"][str(d)]["specgd"] for d in dims]
    t1g = [res["t1"][str(d)]["gd"] for d in dims]
    # SpecGD flat in d: max/min 1.45 today, just under flat_ratio = 1.5 (pinned: a drift past 1.5 flips it)
    flat = max(t1s) / min(t1s)
    assert 1.0 <= flat <= 1.5 and f"(max/min {base.fmt(flat)})" in _claim(claims, "SpecGD's time").measured
    assert 3.0 < min(t1s) and max(t1s) < 10.0                          # a handful of steps at every d
    # GD like log d: each doubling of d adds the same number of steps. Measured increments 21.5, 23.4, 24.2;
    # a log law fixes them equal, a power law d^a would grow them by 2^a per doubling; 15% spread allowed
    inc = np.diff(t1g)
    assert np.all(inc > 0) and inc.max() / inc.min() < 1.15
    slope, icpt = np.polyfit(np.log(dims), t1g, 1)                     # our own fit of T1 = c0 + c1 ln d
    fit = phase_retrieval.summary(res)["fit"]["gd"]
    assert fit["slope"] == pytest.approx(slope, rel=1e-10) and fit["intercept"] == pytest.approx(icpt, rel=1e-10)
    assert slope == pytest.approx(inc.mean() / math.log(2), rel=0.05)   # the fit slope is the per-doubling step / ln 2
    assert f"{base.fmt(slope)} ln d" in _claim(claims, "GD's time to leave the growth stage grows").measured
    # heatmap: good = not diverged and final alignment >= 0.9, counted here from the cells
    good = {m: sum(not c[m]["diverged"] and c[m]["align"] >= 0.9 for c in res["heat"].values()) for m in ("specgd", "gd")}
    assert (good["specgd"], good["gd"], len(res["heat"])) == (4, 3, 6)
    assert "SpecGD 4, GD 3 of 6" in _claim(claims, "larger region").measured
    for a, r in res["power"].items():                                   # power law: SpecGD ends aligned, better than GD
        assert r["specgd"]["align"][-1] > 0.99 and r["specgd"]["align"][-1] > r["gd"]["align"][-1], a


def test_phase_retrieval_verdicts_flip_at_their_thresholds(quick_results):
    res, _ = quick_results["phase-retrieval"]
    bad = copy.deepcopy(res)
    d0 = next(iter(bad["t1"]))
    lo = min(v["specgd"] for v in bad["t1"].values())
    bad["t1"][d0]["specgd"] = 1.49 * lo
    assert _claim(phase_retrieval.claims(bad), "SpecGD's time").verdict == "holds"
    bad["t1"][d0]["specgd"] = 1.51 * lo
    assert _claim(phase_retrieval.claims(bad), "SpecGD's time").verdict == "fails"
    bad["t1"][d0]["specgd"] = math.inf                                  # never left the growth stage
    assert _claim(phase_retrieval.claims(bad), "SpecGD's time").verdict == "inconclusive"
    bad = copy.deepcopy(res)
    for d in bad["t1"]:                                                 # GD's T1 shrinking with d: negative slope
        bad["t1"][d]["gd"] = 1000.0 / float(d)
    assert _claim(phase_retrieval.claims(bad), "GD's time to leave the growth stage grows").verdict == "fails"
    bad = copy.deepcopy(res)
    for c in bad["heat"].values():                                      # equal good counts: inconclusive
        c["gd"] = copy.deepcopy(c["specgd"])
    assert _claim(phase_retrieval.claims(bad), "larger region").verdict == "inconclusive"


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


def test_init_rank_ratios_recomputed(quick_results):
    res, claims = quick_results["init-rank"]
    A = res["acts"]
    assert res["widths"] == [32, 64, 128, 256]
    for act in ("relu", "gelu"):
        for arch in init_rank.ARCHS:
            r = A[act][arch][-1] / A[act][arch][0]
            # flat: 8x the width moves st by at most the claim's 1.5 (measured 0.92-1.25)
            assert 0.67 < r <= 1.5, (act, arch, r)
            assert f"{act}/{arch}: st {base.fmt(A[act][arch][0])} -> {base.fmt(A[act][arch][-1])}" in claims[0].measured
        rf = A[act]["random_features"]
        # st(A) = ||A||_F^2/||A||_op^2 -> E[s^2]/E[s]^2 from below: the mean direction carries ||A||_op and the
        # bulk adds to it at finite width, less so as width grows (measured monotone, 10% short at w=32)
        assert all(a < b for a, b in zip(rf, rf[1:])) and rf[-1] < A[act]["limit"], act
        assert abs(rf[-1] - A[act]["limit"]) / A[act]["limit"] < 0.05   # within 5% at w=256 (measured 1.6%, 2.8%)
    assert A["gelu"]["limit"] == pytest.approx(init_rank.moment_limit("gelu"), rel=1e-12)
    for act in ("tanh", "swiglu"):
        for arch in init_rank.ARCHS:
            # growing: >= the claim's 2x over an 8x width (random features/transformer ~6-11x: st ~ width)
            assert A[act][arch][-1] / A[act][arch][0] >= 2.0, (act, arch)
        assert A[act]["random_features"][-1] / A[act]["random_features"][0] > 4.0
    r = A["relu"]
    assert all(g > s for g, s in zip(r["rf_nr_grad"], r["random_features"]))
    assert all(g > s for g, s in zip(r["mlp_nr_grad"], r["mlp_st_input"]))
    assert r["mlp_st_input"] == [layers[0] for layers in r["mlp_by_layer"]]   # layer 2's input is layer 1's output


def test_init_rank_verdicts_flip_at_their_thresholds(quick_results):
    res, _ = quick_results["init-rank"]
    bad = copy.deepcopy(res)
    v = bad["acts"]["relu"]["mlp"]
    v[-1] = 1.5 * v[0]
    assert init_rank.claims(bad)[0].verdict == "holds"
    v[-1] = 1.51 * v[0]
    assert init_rank.claims(bad)[0].verdict == "fails" and "relu/mlp (x1.51)" in init_rank.claims(bad)[0].note
    bad = copy.deepcopy(res)
    v = bad["acts"]["tanh"]["transformer"]
    v[-1] = 1.99 * v[0]
    assert init_rank.claims(bad)[1].verdict == "fails"
    bad = copy.deepcopy(res)
    rf = bad["acts"]["relu"]["random_features"]
    rf[-1] = 0.74 * bad["acts"]["relu"]["limit"]                        # 26% below the limit: outside 25%
    assert init_rank.claims(bad)[2].verdict == "fails"
    bad["acts"]["relu"]["rf_nr_grad"][0] = rf[0]                        # nr == st is not "exceeds"
    assert init_rank.claims(bad)[3].verdict == "fails"


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
    assert large.measured.startswith("SignSGD wins 1 of 4 decided cells")   # only equal, rho = 0.05, exact G
    assert [(r["magnitudes"], r["density"]) for r in sel if r["winner"] == "sign"] == [("equal", 0.05)]
    for r in rows:                                                      # the winner is the gains' comparison
        gs, gp = r["gain_sign"], r["gain_spec"]
        want = "tie" if abs(gp - gs) <= spec_sign.TIE_RTOL * max(gp, gs) else ("spec" if gp > gs else "sign")
        assert r["winner"] == want, r
    # at B = 1 the minibatch gradient is rank one: sign's gain cannot beat spec's there
    assert all(r["winner"] == "spec" for r in rows if r["batch"] == 1)
    agree = _claim(claims, "agrees")
    decided = [r for r in rows if r["winner"] != "tie" and r["index_winner"] != "none"]
    n_agree = sum(r["winner"] == r["index_winner"] for r in decided)
    assert (n_agree, len(decided)) == (30, 30)                          # today's quick run: the index is always right
    assert agree.measured.startswith(f"agreement {n_agree}/{len(decided)} = 1 ") and agree.verdict == "holds"


def test_spec_sign_agreement_verdict_flips_at_one_half(quick_results):
    res, _ = quick_results["spec-sign"]
    bad = copy.deepcopy(res)
    decided = [r for r in bad["rows"] if r["winner"] != "tie" and r["index_winner"] != "none"]
    flip = {"spec": "sign", "sign": "spec"}
    for r in decided[: len(decided) // 2]:                              # exactly half agree: not "most"
        r["index_winner"] = flip[r["winner"]]
    assert _claim(spec_sign.claims(bad), "agrees").verdict == "fails"
    decided[0]["index_winner"] = decided[0]["winner"]                   # one more than half
    assert _claim(spec_sign.claims(bad), "agrees").verdict == "holds"
    for r in bad["rows"]:
        r["index_winner"] = "none"
    assert _claim(spec_sign.claims(bad), "agrees").verdict == "inconclusive"
