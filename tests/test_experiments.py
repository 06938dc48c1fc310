"""Each seed reproduction in its quick form: the measured numbers, the claims drawn from them, and the
fast paths of each experiment against slow float64 references."""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import statistics

import numpy as np
import pytest
import torch

from steepest.app.reproduce import (
    base,
    claimtext,
    init_rank,
    layerwise,
    noise_scales,
    phase_aligned,
    phase_checks,
    phase_reduced,
    phase_retrieval,
    phase_t2,
    quadratic,
    scaling,
    schatten,
    schatten_p32,
    spec_sign,
    trained,
)
from steepest.app.runs import ConfigError, apply_overrides


@pytest.fixture(scope="module")
def quick_results(tmp_path_factory):
    """Each experiment's quick run, once per module (they are the expensive part of this file)."""
    torch.set_num_threads(1)
    out = {}
    for name, mod in (
        ("quadratic", quadratic),
        ("schatten", schatten),
        ("phase-retrieval", phase_retrieval),
        ("init-rank", init_rank),
        ("spec-sign", spec_sign),
        ("schatten-p32", schatten_p32),
        ("phase-checks", phase_checks),
        ("trained", trained),
        ("layerwise", layerwise),
        ("noise-scales", noise_scales),
        ("phase-t2", phase_t2),
        ("phase-aligned", phase_aligned),
    ):
        res = mod.run(mod.quick(), tmp_path_factory.mktemp(name))
        out[name] = (res, mod.claims(res))
    return out


# ---------------------------------------------------------------------------------------- shared
def _claim(claims, text):
    (c,) = [c for c in claims if text in c.statement]
    return c


def test_every_claim_is_well_formed(quick_results):
    """Seed claims name their section and quote (or mark as paraphrase) the seed; extensions say so;
    every note gives the baseline and the threshold fixed before the run."""
    for name, (_, claims) in quick_results.items():
        mod = base.get(name)
        assert claims, name
        for c in claims:
            assert c.verdict in base.VERDICTS
            assert c.seed and c.statement and c.measured and c.note
            seeds = getattr(mod, "SEEDS", (mod.SEED,))
            if claimtext.kind(c) == "seed":
                assert any(c.seed.startswith(sd + ", ") for sd in seeds), (name, c.seed)  # "seed 002, section 4.1"
                assert c.statement.startswith("\u201c") or c.statement.endswith("(paraphrase)"), c.statement
            else:
                assert c.seed in [f"extension (project's own; {sd} context)" for sd in seeds], c.seed
            assert "baseline: " in c.note and "threshold (set in Config before the run): " in c.note, c.note


#: The verdicts each quick run produces today (checked by hand against the numbers in each test below).
QUICK_VERDICTS = {
    "quadratic": ["holds"] * 5,
    # seed 001's unqualified low-stable-rank claim fails (tanh/SwiGLU grow); the rest are extensions
    "init-rank": ["fails", "holds", "holds", "holds", "holds"],
    # seed 003 on charlm gradients: first order of the local exponent holds over the resolved spectrum (within 0.02;
    # the structural null direction's float32 rounding put it 0.11-0.18 off); the stable rank at p = 32 is 0.78 of
    # spectral (below 0.8) while GD fails every decisive threshold
    "schatten": ["holds", "holds", "holds", "fails", "holds", "holds"],
    # GD's T1 ~ log d over d = 25 ... 1.6e6 (the exact reduction; over the simulated 24-192 alone d^0.15 fits better)
    "phase-retrieval": ["holds", "holds", "holds", "holds", "holds", "holds"],
    # small B favours SpecGD on the isotropic Hessian (4/4) but not on the anisotropic one (2/4); sparse-favours-sign
    # at B = inf: 1 of 2 (not more than half); the equality case and n >> m are wrong
    "spec-sign": ["fails", "fails", "holds", "holds", "fails", "fails", "holds"],
    "schatten-p32": ["holds", "holds", "holds", "holds"],
    # the Gaussian start: GD's share stays at 0.19 after 200 steps at d = 32; at sigma = 30 SpecGD never reaches
    # alignment 0.9 (GD does); online T1 at d = 32 does not settle over batches 100-1600; with the signal's variance
    # fixed SpecGD's steps grow 2.3x over d = 8-16; the last (wall-clock) verdict is timing-dependent
    "phase-checks": ["fails", "holds", "fails", "fails", "holds", "fails", None],
    # seed 003's comparison: the control schatten4 is within 2% too at quick size (decides nothing)
    "trained": ["holds", "inconclusive", "fails"],
    # the guarantees hold; simultaneous steps overshoot; the rule beats the per-layer majority (0.875 vs 0.854);
    # spectral wins the isotropic full-rank setting where the rule predicts GD (43% of steps favour spectral)
    "layerwise": ["holds", "holds", "fails", "holds", "fails"],
    # c_1 is sqrt(2/pi) = 0.80 of ||sigma||_1 (Gaussian, and ~0.8 on charlm); c_* of charlm noise 0.4 of its closed
    # form; both closed forms are upper bounds; Propositions 1-2 hold (they follow from the triangle inequality)
    "noise-scales": ["fails", "fails", "holds", "holds", "holds"],
    # SpecGD's T2 ~ (1/eta)^1.01-1.03 at d = 1e3, 1e4; but T2 eta falls with d (0.21 -> 0.13); OQ2 over d <= 1e4:
    # eta_max exponent -0.43 [-0.47, -0.39] leaves -1/2 +- 0.1 (at default size, d <= 1e5: -0.44, inside)
    "phase-t2": ["holds", "fails", "fails"],
    # spike aligned with the signal: GD recovers it in 4 steps at its best lr, SpecGD in 10
    "phase-aligned": ["holds"],
}


def test_quick_runs_give_todays_verdicts(quick_results):
    got = {name: [c.verdict for c in claims] for name, (_, claims) in quick_results.items()}
    timing = got["phase-checks"].pop()
    assert timing in ("holds", "inconclusive", "fails")  # wall clock on a shared machine
    got["phase-checks"].append(None)
    assert got == QUICK_VERDICTS, {n: [(c.statement, c.measured) for c in quick_results[n][1]] for n in got}


def test_claimtext_kinds():
    c = claimtext.seed_claim("seed 9", "section 1", "x is y", "1", True, baseline="b", threshold="t")
    assert (claimtext.kind(c), c.seed, c.statement, c.verdict) == (
        "seed",
        "seed 9, section 1",
        "\u201cx is y\u201d",
        "holds",
    )
    e = claimtext.extension_claim("seed 9", "ours", "2", None, baseline="b", threshold="t", why="w")
    assert claimtext.kind(e) == "extension" and e.verdict == "inconclusive" and e.note.endswith("; w")


def test_scaling_compare_tells_laws_apart():
    x = np.array([25, 50, 100, 200, 400, 800, 1600.0])
    for law, y in (("log", 5 + 30 * np.log(x)), ("sqrt", 5 + 3 * np.sqrt(x)), ("power", 2 * x**0.3)):
        got = scaling.compare(x, y)
        assert got["winner"] == law, (law, got["order"])
    # 1% multiplicative noise (seeded): the 95% interval covers the true 0.3 and is narrow (log-slope se ~
    # 0.01/sqrt(sum (ln x - mean)^2) ~ 0.003, times t(5) = 2.57)
    noise = np.exp(0.01 * np.random.default_rng(0).standard_normal(len(x)))
    f = scaling.fit("power", x, 2 * x**0.3 * noise)
    assert f["b_lo"] < 0.3 < f["b_hi"] and f["b_hi"] - f["b_lo"] < 0.03
    assert scaling.compare(x, 5 + 30 * np.log(x) + 0.0 * x, margin=0.2)["fits"]["log"]["rse"] < 1e-9
    assert scaling.t975(3) == pytest.approx(3.182) and scaling.t975(50) == 1.96
    with pytest.raises(ValueError, match="unknown law"):
        scaling.fit("cubic", x, x)


def test_figures_audit_flags_unlabelled_lines(tmp_path):
    from steepest.app.report import figures as F

    fig, (ax,) = F.subplots(1, 1)
    ax.plot([0, 1], [0, 1])  # no label, no axis labels
    problems = F.audit(fig)
    assert problems == [
        "axes 0: no x label",
        "axes 0: no y label",
        "axes 0: 1 line(s) without a legend label",
        "axes 0: no legend",
    ]
    with pytest.raises(ValueError, match="not self-explaining"):
        F.save(fig, tmp_path / "bad.png", require_labels=True)
    assert not (tmp_path / "bad.png").exists()
    fig, (ax,) = F.subplots(1, 1)
    F.lines(ax, [1, 2], {"a": [1, 2]}, xlabel="x", ylabel="y")
    F.hline(ax, 1.5, label="ref")
    assert F.audit(fig) == [] and F.save(fig, tmp_path / "ok.png", require_labels=True).is_file()


def test_every_quick_figure_is_labelled(quick_results, tmp_path):
    """figures() saves with require_labels=True: drawing them is the check (a missing label raises)."""
    for name, (res, _) in quick_results.items():
        paths = base.get(name).figures(res, tmp_path / name)
        assert paths and all(p.read_bytes()[:4] == b"\x89PNG" for p in paths), name


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
        apply_overrides(quadratic.Config(), ["stable_ranks=[0.5]"])  # stable rank below 1 is impossible
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
    cell = tmp_path / f"{base.cell_key('c', {'a': 1})}.json"
    cell.write_text("{torn")  # damaged file: recomputed
    base.Cells(tmp_path).get("c", {"a": 1}, f)
    assert len(calls) == 3
    # not UTF-8, a JSON list, a record of the wrong types: each recomputed and rewritten, never a traceback
    for damaged in (b"\xff\xfe{", b"[1, 2]", b'{"params": 3, "result": 1}'):
        cell.write_bytes(damaged)
        assert base.Cells(tmp_path).get("c", {"a": 1}, f)["y"] == [1.0, math.inf]
    assert len(calls) == 6 and json.loads(cell.read_text())["name"] == "c"


# ---------------------------------------------------------------------------------------- quadratic
def test_quadratic_numbers(quick_results):
    res, claims = quick_results["quadratic"]
    for r in res["cells"]:
        # float64 power iteration / alternating maximisation reach the sup to ~1e-10 here; 1e-6 is loose
        assert r["L_F_est"] == pytest.approx(r["L_F"], rel=1e-6)
        assert r["L_star_est"] == pytest.approx(r["L_star"], rel=1e-6)
        # the L_* search starts at a Gaussian Z, well below the sup (measured <= 0.51 L_*): it had to climb
        assert r["L_star_start"] < 0.6 * r["L_star"]
        assert r["sr"] == pytest.approx(r["target_sr"], rel=1e-6)  # bisection on the spectrum is exact
        for m in ("spectral", "gd"):
            assert r[m]["violations"] == 0
            assert all(b <= a * (1 + 1e-12) for a, b in zip(r[m]["f"], r[m]["f"][1:]))  # monotone descent
            # GD's measured decrease exceeds its worst-case bound by 1.27x-1.99x (quick): the bound is loose
            assert all(1.0 <= v < 2.0 + 1e-9 for v in r[m]["gd_actual_over_bound"][:-1])
    agree = quadratic.rule_agreement(res["cells"])
    assert (
        agree["n"] == 186
        and agree["rate"] == pytest.approx(162 / 186)
        and agree["majority"] == pytest.approx(115 / 186)
    )
    assert "at 0.871 of 186 iterates (majority-class rate 0.618)" in _claim(claims, "in singular directions").measured


def test_quadratic_measured_decreases_recomputed(quick_results):
    """The recorded one-step decreases are f(X) - f(X - D) evaluated by hand from the recorded iterates'
    problem (rebuilt from its seed) at X0, for both steps."""
    res, _ = quick_results["quadratic"]
    cfg = quadratic.quick()
    for r in res["cells"]:
        gen = torch.Generator().manual_seed(cfg.seed * 1000 + int(round(r["target_sr"] * 100)))  # run_cell's seed
        prob = quadratic.make_problem(cfg.d, r["target_sr"], gen)
        A, B, X = prob["A"], prob["B"], prob["X0"]
        G = A.T @ (A @ X - B)
        U, S, Vh = torch.linalg.svd(G)
        f0 = float(quadratic.loss(A, B, X))
        spec = f0 - float(quadratic.loss(A, B, X - float(S.sum()) / r["L_star"] * (U @ Vh)))
        gd = f0 - float(quadratic.loss(A, B, X - G / r["L_F"]))
        # two float64 evaluations (difference of losses vs closed form): ~1e-13 f0 apart; 1e-9 relative is loose
        for m in ("spectral", "gd"):
            assert r[m]["dec_spec"][0] == pytest.approx(spec, rel=1e-9) and r[m]["dec_gd"][0] == pytest.approx(
                gd, rel=1e-9
            )
        nr = float(S.sum()) ** 2 / float(S.square().sum())
        assert r["gd"]["nr"][0] == pytest.approx(nr, rel=1e-12)


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
            assert f[-1] < f[0] * (0.7 if method == "gd" else 0.2)  # both make real progress in 30 steps
    n_steps = 2 * cfg.steps * len(cfg.stable_ranks)
    assert _claim(claims, "guaranteed one-step").measured.startswith(f"0 violations in {n_steps} measured steps")
    low, high = res["cells"][0], res["cells"][-1]
    # measured winners on the GD run: the spectral step decreases f more at every iterate for sr = 1.5, never at 16
    assert (low["gd"]["frac_spectral_decrease_larger"], high["gd"]["frac_spectral_decrease_larger"]) == (1.0, 0.0)


def test_quadratic_claims_follow_the_numbers(quick_results):
    res, _ = quick_results["quadratic"]
    bad = copy.deepcopy(res)
    bad["cells"][0]["gd"]["violations"] = 1
    claims = quadratic.claims(bad)
    assert _claim(claims, "guaranteed one-step").verdict == "fails"
    # the rule must beat the majority-class rate by rule_margin = 0.05: at the majority rate it fails
    ok = copy.deepcopy(res)
    for r in ok["cells"]:
        for m in ("spectral", "gd"):
            r[m]["predicted"] = ["spec" if w == "gd" else "gd" for w in r[m]["winners"]]  # always wrong
    assert _claim(quadratic.claims(ok), "in singular directions").verdict == "fails"
    ok = copy.deepcopy(res)
    ok["cells"][0]["gd"]["frac_spectral_decrease_larger"] = ok["cells"][-1]["gd"]["frac_spectral_decrease_larger"]
    assert _claim(quadratic.claims(ok), "so more often").verdict == "fails"  # equal is not "more often"
    ok["cells"] = ok["cells"][:1]
    assert _claim(quadratic.claims(ok), "so more often").verdict == "inconclusive"  # one matrix: nothing to compare


def test_quadratic_sup_claims_judge_their_own_sup(quick_results):
    res, _ = quick_results["quadratic"]
    bad = copy.deepcopy(res)
    bad["cells"][0]["L_star_est"] = 2 * bad["cells"][0]["L_star"]  # only L_*'s estimate is wrong
    claims = quadratic.claims(bad)
    assert _claim(claims, "L_* = ").verdict == "fails"
    assert _claim(claims, "L_F = ").verdict == "holds"  # L_F's numbers are untouched
    bad = copy.deepcopy(res)
    bad["cells"][1]["L_F_est"] = bad["cells"][1]["L_F"] * (1 + 2 * quadratic.SUP_RTOL)
    claims = quadratic.claims(bad)
    assert _claim(claims, "L_F = ").verdict == "fails" and _claim(claims, "L_* = ").verdict == "holds"


def test_quadratic_one_step_decreases_match_losses():
    gen = torch.Generator().manual_seed(3)
    prob = quadratic.make_problem(10, 2.0, gen)
    A, B, X = prob["A"], prob["B"], prob["X0"]
    G = quadratic.grad(A, B, X)
    Ls, Lf = float(A.square().sum()), float(torch.linalg.matrix_norm(A, 2)) ** 2
    spec, gd = quadratic.one_step_decreases(A, G, Ls, Lf)
    U, S, Vh = np.linalg.svd(G.numpy())  # numpy float64 reference
    Xs = X.numpy() - S.sum() / Ls * (U @ Vh)
    f = lambda Y: 0.5 * float(((A.numpy() @ Y - B.numpy()) ** 2).sum())  # noqa: E731
    # closed form vs difference of two losses: rounding ~1e-15 f; 1e-9 relative to the decrease is loose
    assert spec == pytest.approx(f(X.numpy()) - f(Xs), rel=1e-9)
    assert gd == pytest.approx(f(X.numpy()) - f(X.numpy() - G.numpy() / Lf), rel=1e-9)


def test_quadratic_spectral_step_matches_svd_reference():
    gen = torch.Generator().manual_seed(0)
    prob = quadratic.make_problem(12, 3.0, gen)
    A, B, X0 = prob["A"], prob["B"], prob["X0"]
    L = float(torch.linalg.matrix_norm(A, "fro")) ** 2
    rec = quadratic.trajectory(A, B, X0, "spectral", L, 1)
    G = A.T @ (A @ X0 - B)
    U, s, Vh = torch.linalg.svd(G)
    X1 = X0 - (s.sum() / L) * (U @ Vh)  # seed 000, Proposition 4.1
    # both float64 from the same SVD up to ordering: agreement to ~1e-12 relative
    assert rec["f"][1] == pytest.approx(float(quadratic.loss(A, B, X1)), rel=1e-10)


# ---------------------------------------------------------------------------------------- schatten
def test_schatten_raw_variance_is_the_seeds_definition():
    """Proposition 5's variance is of the dualizer's singular values themselves (no division by the
    mean): numpy float64 reference t_i = (s_i/||s||_q)^(q-1)."""
    G = schatten.make_gradient("low_stable_rank", 30, 12, 1.0, torch.Generator().manual_seed(1))
    s = np.linalg.svd(G.numpy(), compute_uv=False)
    for p in (2.0, 8.0, 32.0):
        q = p / (p - 1)
        t = (s / np.linalg.norm(s, ord=q)) ** (q - 1)
        got = schatten.spread(schatten.dualizer(G, p), G, 1.0)
        # float64 SVD of the dualizer vs closed-form t: ~1e-15 absolute on values of size ~1
        assert got["var"] == pytest.approx(t.var(), rel=1e-8, abs=1e-14)
        assert got["cv2"] == pytest.approx((t / t.mean()).var(), rel=1e-8, abs=1e-14)
    t2 = s / np.linalg.norm(s)  # p = 2: raw variance below 1/k
    assert schatten.spread(schatten.dualizer(G, 2.0), G, 1.0)["var"] < 1 / 12 and t2.var() < 1 / 12


def test_schatten_numbers(quick_results):
    res, claims = quick_results["schatten"]
    ps = res["ps"]
    assert set(res["kinds"]) == {"gaussian", "low_stable_rank", "charlm_init", "charlm_trained"}
    for K in res["kinds"].values():
        var = K["var"]
        assert var[ps.index(math.inf)] < 1e-20  # p = inf: all singular values equal
        assert all(a > b for a, b in zip(var[2:], var[3:-1]))  # falls with p from p = 4 on ...
        a = K["asym_fit"]
        # asymptotically quadratic: exponent over p >= 256 measured 1.97-1.99 (intervals within +-0.12)
        assert -a["b"] == pytest.approx(2.0, abs=0.04) and -a["b_hi"] > 1.9 and -a["b_lo"] < 2.1
        # the asymptote Var(ln s)/(p-1)^2 is reached: ratio at p = 16384 within 1% (first order: 1 + 2 mu/16383)
        i = ps.index(16384.0)
        assert var[i] * 16383**2 / K["var_log_s"] == pytest.approx(1.0, abs=0.01)
        assert K["ns_match_p"] < 16
    for kind in ("gaussian", "low_stable_rank"):
        K = res["kinds"][kind]
        assert K["var"][1] > K["var"][0] * 0.9  # ... but not at first (p = 2 -> 3)
        # over the seed's range [8, 128] the raw-variance slope is ~1.7 (1.6 at default size), not 2
        assert 1.55 < K["fit"]["gamma"] < 1.8, K["fit"]
        # re-derived local exponent 2 + 2 mu/(p-1) within 0.1 from p = 32 on (measured <= 0.05)
        fin = [p for p in ps if math.isfinite(p)]
        for loc, pred, p in zip(K["local"], K["local_pred"], fin):
            if p >= 32:
                assert abs(loc - pred) < 0.1, (kind, p, loc, pred)
    for kind in ("charlm_init", "charlm_trained"):
        K = res["kinds"][kind]
        # 2 seeds x 4 hidden layers; the real spectra spread more (|mu| larger): slope over [8, 128] only 1.35-1.45
        assert K["n_gradients"] == 8 and set(K["groups"]) == {"0", "1"}
        assert 1.2 < K["fit"]["gamma"] < 1.55, K["fit"]
        # minibatch gradients of width-32 layers have stable rank ~2 of 32 (st/k 0.04-0.06)
        assert all(0.03 < g["st_frac_G"] < 0.07 for g in K["groups"].values())
    assert [c.verdict for c in claims] == QUICK_VERDICTS["schatten"]
    g, lo = res["kinds"]["gaussian"], res["kinds"]["low_stable_rank"]
    i32, iinf, i2 = ps.index(32.0), ps.index(math.inf), ps.index(2.0)
    # p = 32: stable rank 0.959 (gaussian), 0.829 (low rank, quick) of spectral; at default size 0.78 (fails)
    assert g["stable_rank"][i32] / g["stable_rank"][iinf] == pytest.approx(0.959, abs=0.01)
    assert lo["stable_rank"][i32] / lo["stable_rank"][iinf] == pytest.approx(0.829, abs=0.01)
    assert lo["ns_match_p"] > g["ns_match_p"]  # a spread-out spectrum needs a larger p to look like NS5
    # Definition 6 with the Frobenius norm: GD's dualizer G/||G||_F has ||T||_F = 1, the spectral one sqrt(k) = sqrt(48)
    assert g["rel_fro"][i2] / g["rel_fro"][iinf] == pytest.approx(1 / math.sqrt(48), rel=1e-9)  # float64 SVD
    # the raw variance is met by plain GD (below 1/k), so it is not what the p = 32 claim judges
    assert g["var"][i2] < 1 / 48 and lo["var"][i2] < 1 / 48
    # charlm at p = 32: stable rank 0.78 / 0.76 of spectral (fails 0.8); GD's spectral-norm relative size passes 0.8
    tab = schatten.close_table(res, ("charlm_init", "charlm_trained"))
    assert not tab["charlm_init"]["stable_rank"]["passes"] and tab["charlm_init"]["stable_rank"]["decisive"]
    assert not tab["charlm_init"]["rel_op"]["decisive"]
    assert schatten.close_verdict(tab) is False


def test_schatten_definition6_reference():
    """Definition 6 relative size ||eta T||/||W|| against numpy, for the Frobenius and the spectral norm."""
    gen = torch.Generator().manual_seed(5)
    G, W = (
        torch.randn(20, 8, generator=gen, dtype=torch.float64),
        torch.randn(20, 8, generator=gen, dtype=torch.float64),
    )
    for p in (2.0, 32.0, math.inf):
        T = schatten.dualizer(G, p)
        got = schatten.spread(T, W, 0.5)
        Tn, Wn = T.numpy(), W.numpy()
        # float64 norms of the same matrices: agreement to rounding
        assert got["rel_fro"] == pytest.approx(0.5 * np.linalg.norm(Tn) / np.linalg.norm(Wn), rel=1e-12)
        assert got["rel_op"] == pytest.approx(0.5 * np.linalg.norm(Tn, 2) / np.linalg.norm(Wn, 2), rel=1e-10)


def test_schatten_fit_and_claims_recomputed(quick_results):
    res, claims = quick_results["schatten"]
    ps = res["ps"]
    for kind, K in res["kinds"].items():
        pts = [(math.log(p - 1), math.log(v)) for p, v in zip(ps, K["var"]) if math.isfinite(p) and 8 <= p <= 128]
        assert len(pts) == 5
        assert K["fit"]["gamma"] == pytest.approx(-np.polyfit(*np.array(pts).T, 1)[0], rel=1e-12)
        pts = [(math.log(p - 1), math.log(v)) for p, v in zip(ps, K["var"]) if math.isfinite(p) and p >= 256]
        assert K["asym_fit"]["b"] == pytest.approx(np.polyfit(*np.array(pts).T, 1)[0], rel=1e-10)
        assert K["ns_match_p"] == pytest.approx(schatten.match_p(K["grid_p"], K["grid_var"], K["ns"]["cv2"]), rel=1e-12)
        assert f"{kind}: exponent {base.fmt(-K['asym_fit']['b'])} " in claims[0].measured
        fin = [p for p in ps if math.isfinite(p)]
        for g in K["groups"].values():  # the per-seed local exponents the re-derived claim decides on
            assert len(g["local_pred"]) == len(g["local"]) == len(fin) - 1 and all(x < 2 for x in g["local_pred"])
            if kind in ("gaussian", "low_stable_rank"):  # nothing below the floor: the dualizer's own variance
                assert g["unresolved"] == [0]
                want = schatten.local_exponents(fin, [g["var"][ps.index(p)] for p in fin])
                # closed-form t_i vs the float64 SVD of the dualizer: rounding, amplified by the log differences
                assert g["local"] == pytest.approx(want, rel=1e-6, abs=1e-9)
    for kind in ("gaussian", "low_stable_rank"):
        K = res["kinds"][kind]
        # NS5 sits in Muon's [0.68, 1.13] band (REFERENCE.md 1): var/mean^2 < ((1.13-0.68)/2)^2 ~ 0.05
        assert 0.0 < K["ns"]["cv2"] < 0.05 and 2.0 < K["ns_match_p"] < 16.0


def test_schatten_verdicts_flip_at_their_thresholds(quick_results):
    res, _ = quick_results["schatten"]
    bad = copy.deepcopy(res)
    for a in (k["asym_fit"] for k in bad["kinds"].values()):
        a["b_lo"], a["b_hi"] = -2.09, -1.91
    assert schatten.claims(bad)[0].verdict == "holds"
    a = bad["kinds"]["gaussian"]["asym_fit"]
    a["b_lo"], a["b_hi"] = -2.11, -1.95  # interval leaves 2 +- 0.1
    assert schatten.claims(bad)[0].verdict == "fails"
    bad = copy.deepcopy(res)
    bad["kinds"]["low_stable_rank"]["ns_match_p"] = 16.0
    assert schatten.claims(bad)[5].verdict == "holds"
    bad["kinds"]["low_stable_rank"]["ns_match_p"] = 16.5
    assert schatten.claims(bad)[5].verdict == "fails"
    i = res["ps"].index(32.0)
    bad["kinds"]["gaussian"]["groups"]["0"]["cv2"][i] = 0.011  # one seed above close_cv2 = 0.01
    assert schatten.claims(bad)[4].verdict == "fails"
    bad = copy.deepcopy(res)
    for kind in ("gaussian", "low_stable_rank"):  # GD meets every threshold: the claim decides nothing
        for g in bad["kinds"][kind]["groups"].values():
            for key in ("cv2", "stable_rank", "rel_fro", "rel_op"):
                g[key][res["ps"].index(2.0)] = g[key][i]
    assert schatten.claims(bad)[4].verdict == "inconclusive"
    bad = copy.deepcopy(res)
    for g in bad["kinds"]["charlm_init"]["groups"].values():
        g["st_frac_G"] = 0.11  # above low_rank_frac = 0.1
    assert schatten.claims(bad)[2].verdict == "fails"
    bad = copy.deepcopy(res)
    for k in ("charlm_init", "charlm_trained"):  # every seed of the real kinds within first order: it holds
        for g in bad["kinds"][k]["groups"].values():
            g["local"] = list(g["local_pred"])
    assert schatten.claims(bad)[1].verdict == "holds"
    j = res["ps"].index(64.0) - 1  # interval (32, 64)
    gauss = bad["kinds"]["gaussian"]["groups"]
    gauss["0"]["local"][j] += 0.2  # one seed outside, two within: the threshold is inside the seeds' spread
    assert schatten.claims(bad)[1].verdict == "inconclusive"
    for g in gauss.values():
        g["local"][j] += 0.2 if g is not gauss["0"] else 0.0  # every seed of one kind outside: it fails
    assert schatten.claims(bad)[1].verdict == "fails"
    bad["kinds"]["gaussian"]["local"] = list(bad["kinds"]["gaussian"]["local_pred"])  # the mean does not decide
    assert schatten.claims(bad)[1].verdict == "fails"


def test_schatten_p32_numbers(quick_results):
    res, claims = quick_results["schatten-p32"]
    K = res["kinds"]
    for cs in K.values():
        for c in cs:
            for v in c["by_p"].values():
                assert v["measured"] == pytest.approx(v["identity"], rel=1e-9)  # exact identity, float64
            # first order exp(-2 spread/(p-1)) at p = 32: within 0.002 (measured 0.0015)
            assert abs(c["by_p"]["32"]["measured"] - c["by_p"]["32"]["first_order"]) < 0.003
    pl = [c["by_p"]["32"]["measured"] for c in K["power_law"]]
    assert pl == pytest.approx([0.885, 0.815, 0.747], abs=0.005) and all(a > b for a, b in zip(pl, pl[1:]))
    # log-spread of s_i = 1/i is mean ln i = ln k! / k ~ ln k - 1 + ln(2 pi k)/(2k): 1.92, 3.21, 4.56 for k = 16, 64, 256
    for c in K["power_law"]:
        k = c["k"]
        assert c["log_spread"] == pytest.approx(math.lgamma(k + 1) / k, rel=1e-9)
        assert c["p_needed"] == pytest.approx(1 + 2 * c["log_spread"] / math.log(1 / 0.8), rel=1e-12)
    g = [c["by_p"]["32"]["measured"] for c in K["gaussian"]]
    assert max(g) - min(g) < 0.005 and min(g) > 0.95
    assert [c.verdict for c in claims] == QUICK_VERDICTS["schatten-p32"]
    bad = copy.deepcopy(res)
    bad["kinds"]["power_law"][-1]["by_p"]["32"]["measured"] = 0.81  # close at the largest k too: a fixed p suffices
    assert schatten_p32.claims(bad)[0].verdict == "fails"
    bad = copy.deepcopy(res)
    bad["kinds"]["gaussian"][0]["by_p"]["32"]["measured"] += 0.03  # Gaussian no longer flat
    assert schatten_p32.claims(bad)[3].verdict == "fails"


def test_schatten_p32_spectrum_ratio_reference():
    s = torch.tensor([4.0, 2.0, 1.0], dtype=torch.float64)
    p = 3.0  # 2/(p-1) = 1
    assert schatten_p32.spectrum_ratio(s, p) == pytest.approx((1 + 0.5 + 0.25) / 3, rel=1e-15)
    assert schatten_p32.log_spread(s) == pytest.approx((0 + math.log(2) + math.log(4)) / 3, rel=1e-15)


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
    assert torch.allclose(g, g_ref, rtol=1e-10, atol=1e-12)  # two float64 evaluations of one formula
    mc = phase_retrieval.sample_grad(W.detach(), Q, w, 400_000, gen)
    # Monte Carlo mean of 4e5 samples: relative error ~ (heavy 8th-moment tails) / sqrt(4e5) ~ 0.01-0.03
    assert float((mc - g).norm() / g.norm()) < 0.08


def test_phase_retrieval_numbers(quick_results):
    res, claims = quick_results["phase-retrieval"]
    s = phase_retrieval.summary(res)
    # SpecGD from W0 = theta U: polar(grad) = -U exactly while every direction still grows, so a = b = c
    assert s["spec_uniform_ratio"] == pytest.approx(1.0, abs=1e-6)
    assert s["gd_spike_over_signal"] == pytest.approx(2.18, abs=0.01)
    t1s, t1g = s["t1"]["specgd"], s["t1"]["gd"]
    assert s["dims"] == [24, 32, 48, 96, 192]
    assert max(t1g) > 10 * max(t1s)  # GD's growth stage is far longer
    assert all(b > a for a, b in zip(t1g, t1g[1:]))  # and lengthens with d
    assert 5.0 < min(t1s) and max(t1s) < 6.5  # SpecGD: ~5.5 steps at every d
    assert s["diverged_cells"]["gd"] > s["diverged_cells"]["specgd"]
    assert [c.verdict for c in claims] == QUICK_VERDICTS["phase-retrieval"]


def test_phase_retrieval_law_comparison_recomputed(quick_results):
    res, claims = quick_results["phase-retrieval"]
    dims = [int(d) for d in res["t1"]]
    t1g = np.array([res["t1"][str(d)]["gd"] for d in dims])
    law = phase_retrieval.summary(res)["laws"]["gd"]
    # our own fits: log-linear and log-log least squares, residual standard error with n - 2 dof
    x = np.log(dims)
    for name, u, y in (("log", x, t1g), ("sqrt", np.sqrt(dims), t1g)):
        c = np.polyfit(u, y, 1)
        rse = math.sqrt(((y - np.polyval(c, u)) ** 2).sum() / (len(y) - 2))
        assert law["fits"][name]["rse"] == pytest.approx(rse, rel=1e-9) and law["fits"][name]["b"] == pytest.approx(
            c[0], rel=1e-9
        )
    c = np.polyfit(x, np.log(t1g), 1)
    assert law["fits"]["power"]["b"] == pytest.approx(c[0], rel=1e-9)
    # today: a power law d^0.149 beats log d (rse 0.26 vs 1.36): each doubling of d adds *more* steps
    # (increments grow), which a log law forbids (it fixes them equal)
    assert law["winner"] == "power" and law["fits"]["power"]["b"] == pytest.approx(0.148, abs=0.005)
    inc = np.diff(t1g[1:]) / np.diff(np.log2(dims[1:]))  # steps per doubling from d = 32
    assert np.all(np.diff(inc) > 0)
    # ... but d spans only 8x there. Over d = 25 ... 1.6e6 (the exact reduction) log d wins clearly: our own
    # fits give rse 1.69 (log) vs 23.4 (power, exponent 0.10)
    wide = [int(d) for d in res["t1_law"]]
    y = np.array([res["t1_law"][str(d)]["gd"] for d in wide])
    c = np.polyfit(np.log(wide), y, 1)
    rse_log = math.sqrt(((y - np.polyval(c, np.log(wide))) ** 2).sum() / (len(y) - 2))
    cp = np.polyfit(np.log(wide), np.log(y), 1)
    rse_pow = math.sqrt(((y - np.exp(np.polyval(cp, np.log(wide)))) ** 2).sum() / (len(y) - 2))
    assert rse_log == pytest.approx(1.69, abs=0.01) and rse_pow == pytest.approx(23.4, abs=0.1)
    assert _claim(claims, "logarithmic for GD").verdict == "holds"
    bad = copy.deepcopy(res)
    for d in bad["t1_law"]:  # an exact power law d^0.15: the claim fails
        bad["t1_law"][d]["gd"] = 110.0 * float(d) ** 0.15
    assert _claim(phase_retrieval.claims(bad), "logarithmic for GD").verdict == "fails"
    good = {
        m: sum(not c[m]["diverged"] and c[m]["align"] >= 0.9 for c in res["heat"].values()) for m in ("specgd", "gd")
    }
    assert (good["specgd"], good["gd"], len(res["heat"])) == (4, 3, 6)
    for a, r in res["power"].items():  # power law: SpecGD ends aligned, better than GD
        assert r["specgd"]["align"][-1] > 0.99 and r["specgd"]["align"][-1] > r["gd"]["align"][-1], a


def test_phase_retrieval_verdicts_flip_at_their_thresholds(quick_results):
    res, _ = quick_results["phase-retrieval"]
    bad = copy.deepcopy(res)
    for d in bad["t1"]:  # SpecGD growing at GD's rate: fails
        bad["t1"][d]["specgd"] = (
            bad["t1"][d]["gd"] / 2
        )  # slope 0.5x GD's (gd / 10 sat on the 0.1 bound: a rounding tie)
    assert _claim(phase_retrieval.claims(bad), "constant-time").verdict == "fails"
    bad["t1"][next(iter(bad["t1"]))]["specgd"] = math.inf  # never left the growth stage
    assert _claim(phase_retrieval.claims(bad), "constant-time").verdict == "inconclusive"
    bad = copy.deepcopy(res)
    for c in bad["heat"].values():  # equal good counts: inconclusive
        c["gd"] = copy.deepcopy(c["specgd"])
    assert _claim(phase_retrieval.claims(bad), "larger (lambda").verdict == "inconclusive"


def test_reduction_is_the_simulation():
    """phase_reduced's scalar recursion reproduces the full d x d simulation (both methods, orthogonal start):
    coefficients to 1e-14 (rounding over 180 steps), hence the same T1."""
    from steepest.app.reproduce import phase_reduced

    prob = phase_retrieval.spiked_problem(25, 10.0, torch.Generator().manual_seed(4))
    for m in ("specgd", "gd"):
        eta = phase_retrieval.eta_for(m, prob["Q"], 0.1, 0.25)
        assert eta == pytest.approx(phase_retrieval.eta_of(m, 35.0, 11.0, 0.1, 0.25), rel=1e-14)  # eigvalsh rounding
        full = phase_retrieval.simulate(prob, m, eta, 400, stop_at_t1=True)
        red = phase_reduced.reduced(25, 10.0, m, eta, 400, stop_at_t1=True)
        assert len(full["a"]) == len(red["a"])
        for k in "abc":
            assert max(abs(x - y) for x, y in zip(full[k], red[k])) < 1e-14
        assert phase_retrieval.growth_end(red["trCQ"]) == pytest.approx(full["t1"], rel=1e-12)


def test_growth_end_interpolates():
    assert phase_retrieval.growth_end([-1.0, -0.5, 0.5]) == pytest.approx(1.5)
    assert math.isnan(phase_retrieval.growth_end([-1.0, -0.5]))


# ---------------------------------------------------------------------------------------- init rank
def test_moment_limits():
    assert init_rank.moment_limit("relu") == pytest.approx(math.pi, rel=1e-7)  # E[relu^2]/E[relu]^2 = pi
    g = torch.randn(2_000_000, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * math.sqrt(2)
    s = torch.nn.functional.gelu(g)
    mc = float(s.square().mean() / s.mean() ** 2)
    assert init_rank.moment_limit("gelu") == pytest.approx(mc, rel=0.01)  # MC error ~ 1e-3 at 2e6 samples
    assert math.isinf(init_rank.moment_limit("tanh")) and math.isinf(init_rank.moment_limit("swiglu"))


def test_init_rank_numbers(quick_results):
    res, claims = quick_results["init-rank"]
    A = res["acts"]
    assert res["widths"] == [32, 64, 128, 256]
    for act in ("relu", "gelu"):
        for arch in init_rank.ARCHS:
            r = A[act][arch][-1] / A[act][arch][0]
            assert 0.67 < r <= 1.5, (act, arch, r)  # flat: measured 0.92-1.24
        rf = A[act]["random_features"]
        # st -> E[s^2]/E[s]^2 from below, monotone; within 5% at w = 256 (measured 1.6%, 2.9%)
        assert all(a < b for a, b in zip(rf, rf[1:])) and rf[-1] < A[act]["limit"]
        assert abs(rf[-1] - A[act]["limit"]) / A[act]["limit"] < 0.035
    for act in ("tanh", "swiglu"):
        for arch in init_rank.ARCHS:
            assert A[act][arch][-1] / A[act][arch][0] >= 2.0, (act, arch)  # grows: x3.9 to x11.2 over 8x width
    r = A["relu"]
    assert all(g > s for g, s in zip(r["rf_nr_grad"], r["random_features"]))
    assert all(g > s for g, s in zip(r["mlp_nr_grad"], r["mlp_st_input"]))
    assert r["mlp_st_input"] == [layers[0] for layers in r["mlp_by_layer"]]  # layer 2's input is layer 1's output
    seed = claims[0]
    assert seed.seed == "seed 001, abstract" and seed.verdict == "fails"
    assert "refuted for swiglu, tanh" in seed.note  # the report says so, with the growth


def test_init_rank_verdicts_flip_at_their_thresholds(quick_results):
    res, _ = quick_results["init-rank"]
    only = copy.deepcopy(res)
    only["acts"] = {a: v for a, v in only["acts"].items() if a in ("relu", "gelu")}
    assert init_rank.claims(only)[0].verdict == "holds"  # the seed claim fails only for tanh/SwiGLU
    bad = copy.deepcopy(res)
    v = bad["acts"]["relu"]["mlp"]
    v[-1] = 1.5 * v[0]
    assert init_rank.claims(bad)[1].verdict == "holds"
    v[-1] = 1.51 * v[0]
    assert init_rank.claims(bad)[1].verdict == "fails"
    bad = copy.deepcopy(res)
    v = bad["acts"]["tanh"]["transformer"]
    v[-1] = 1.99 * v[0]
    assert init_rank.claims(bad)[2].verdict == "fails"
    bad = copy.deepcopy(res)
    rf = bad["acts"]["relu"]["random_features"]
    rf[-1] = 0.94 * bad["acts"]["relu"]["limit"]  # 6% below the limit: outside 5%
    assert init_rank.claims(bad)[3].verdict == "fails"
    bad["acts"]["relu"]["rf_nr_grad"][0] = rf[0]  # nr == st is not "exceeds"
    assert init_rank.claims(bad)[4].verdict == "fails"


# ---------------------------------------------------------------------------------------- spec-sign
def test_line_search_matches_closed_form():
    cfg = spec_sign.Config(n=10, m=10, input_decay=1.0)
    layer = spec_sign.Layer(cfg, 0.3, "gaussian", torch.Generator().manual_seed(4))
    gen = torch.Generator().manual_seed(5)
    dirs = [spec_sign.direction(layer.minibatch_grad(8, gen), "spec") for _ in range(4)]
    got = spec_sign.measured_gain(layer, dirs, 241)["gain"]
    a = np.mean([float((layer.G * D).sum()) for D in dirs])
    h = np.mean([float((D * D * layer.sigma_in).sum()) for D in dirs])  # <D, H D>, H[D] = D Sigma
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
    st = res["settings"]
    assert all(r["gain_sign"] >= 0 and r["gain_spec"] >= 0 for r in rows)
    exact_equal = [r for r in rows if r["magnitudes"] == "equal" and math.isinf(r["batch"])]
    # exact equal-magnitude G: sign(G) = G / g is G's own direction, so SignSGD must win
    assert all(r["winner"] == "sign" for r in exact_equal)
    for r in rows:  # the winner is the gains' comparison
        gs, gp = r["gain_sign"], r["gain_spec"]
        want = "tie" if abs(gp - gs) <= spec_sign.TIE_RTOL * max(gp, gs) else ("spec" if gp > gs else "sign")
        assert r["winner"] == want, r
    assert all(r["winner"] == "spec" for r in rows if r["batch"] == 1)  # rank-one G_hat at B = 1
    # deterministic limit: of the sparse (rho = 0.05) exact-gradient cells only the equal-magnitude one goes to sign
    exact = [r for r in rows if math.isinf(r["batch"]) and r["density"] <= st["sparse_density"]]
    assert sorted((r["magnitudes"], r["winner"]) for r in exact) == [("equal", "sign"), ("gaussian", "spec")]
    assert _claim(claims, "favoring SignSGD deterministically)\u201d").verdict == "fails"  # 1 of 2 is not > 1/2
    small = _claim(claims, "SpecGD may be preferable at small batch")
    assert (
        "isotropic Hessian: SpecGD wins 4 of 4" in small.measured and "diag(j^-1)): 2 of 4 at B <= 4" in small.measured
    )
    assert small.verdict == "fails"  # holds on the isotropic Hessian only
    iso_only = copy.deepcopy(res)
    for r in iso_only["aniso_rows"]:
        r["winner"] = "spec" if r["batch"] <= 4 else "sign"
    assert _claim(spec_sign.claims(iso_only), "SpecGD may be preferable at small batch").verdict == "holds"
    # finite large B: sign never wins, and the index says so in both cells
    large = [r for r in rows if r["density"] <= st["sparse_density"] and 1024 <= r["batch"] < math.inf]
    assert [r["winner"] for r in large] == ["spec", "spec"] and all(r["index_winner"] == "spec" for r in large)
    agree = _claim(claims, "If I(G, B) > 1")
    decided = [r for r in rows if r["winner"] != "tie" and r["index_winner"] != "none"]
    n_agree = sum(r["winner"] == r["index_winner"] for r in decided)
    major = max(sum(r["winner"] == w for r in decided) for w in ("spec", "sign"))
    assert (n_agree, major, len(decided)) == (30, 25, 30)  # the index beats always-"spec" (25/30)
    assert agree.measured.startswith("the index names the measured winner in 30/30 = 1 ") and agree.verdict == "holds"
    assert "majority-class rate 0.833" in agree.measured and "noise-dominated: 18/18" in agree.measured


def test_spec_sign_seed_math(quick_results):
    res, claims = quick_results["spec-sign"]
    m = res["math"]
    eq = m["equality"]
    # diag(3, 1): rank 2 with ||G||_nuc = ||G||_1 = 4, against the seed's "only for rank-1 diagonal matrices"
    assert eq["diag(3, 1)"] == {"nuc": pytest.approx(4.0, rel=1e-14), "l1": 4.0, "rank": 2}
    assert (
        eq["scaled 6x6 permutation"]["nuc"] == pytest.approx(21.0, rel=1e-13)
        and eq["scaled 6x6 permutation"]["rank"] == 6
    )
    c = _claim(claims, "equality only for rank-1")
    assert c.verdict == "fails" and "the seed is wrong here" in c.note
    for t in m["tall"]:  # n >> m: ||G||_nuc / ||G||_F ~ sqrt(m) (3.96, 3.99 of 4), not ~1
        assert t["nuc_over_fro"] == pytest.approx(math.sqrt(t["m"]), rel=0.02)
    assert _claim(claims, "naturally low-rank").verdict == "fails"
    f = m["noise_fits"]
    # c_1 = E||E||_1 = N^2 sqrt(2/pi) exactly; c_* ~ (8/(3 pi)) N^1.5 (quarter-circle law): exponents 2 and 1.5
    for r in m["noise"]:
        assert r["c_1"] == pytest.approx(r["N"] ** 2 * math.sqrt(2 / math.pi), rel=0.05)
        assert r["c_star"] == pytest.approx(8 / (3 * math.pi) * r["N"] ** 1.5, rel=0.08)
    assert f["c_1"]["b"] == pytest.approx(2.0, abs=0.03) and f["c_star"]["b"] == pytest.approx(1.5, abs=0.05)
    assert _claim(claims, "c_1 ~ N^2").verdict == "holds"


def test_spec_sign_agreement_verdict_uses_the_majority_rate(quick_results):
    res, _ = quick_results["spec-sign"]
    bad = copy.deepcopy(res)
    decided = [r for r in bad["rows"] if r["winner"] != "tie" and r["index_winner"] != "none"]
    flip = {"spec": "sign", "sign": "spec"}
    for r in decided:  # the index says "spec" everywhere:
        r["index_winner"] = "spec"  # it equals the majority rate, no more
    assert _claim(spec_sign.claims(bad), "If I(G, B) > 1").verdict == "fails"
    for r in decided:  # right everywhere: holds
        r["index_winner"] = r["winner"]
    assert _claim(spec_sign.claims(bad), "If I(G, B) > 1").verdict == "holds"
    decided[0]["index_winner"] = flip[decided[0]["winner"]]
    decided[1]["index_winner"] = flip[decided[1]["winner"]]  # 28/30 = 0.933 >= 0.833 + 0.05: holds
    assert _claim(spec_sign.claims(bad), "If I(G, B) > 1").verdict == "holds"
    for r in decided[:3]:
        r["index_winner"] = flip[r["winner"]]  # 27/30 = 0.9 >= 0.883: holds
    assert _claim(spec_sign.claims(bad), "If I(G, B) > 1").verdict == "holds"
    decided[3]["index_winner"] = flip[decided[3]["winner"]]  # 26/30 = 0.867 < 0.883: fails
    assert _claim(spec_sign.claims(bad), "If I(G, B) > 1").verdict == "fails"
    for r in bad["rows"]:
        r["index_winner"] = "none"
    assert _claim(spec_sign.claims(bad), "If I(G, B) > 1").verdict == "inconclusive"


# ---------------------------------------------------------------------------------------- phase checks
def test_phase_checks_numbers(quick_results):
    res, claims = quick_results["phase-checks"]
    I = res["init"]
    assert max(I["orthogonal"][m]["off_manifold_t1"] for m in ("specgd", "gd")) < 1e-12  # exact manifold
    # the Gaussian start theta Z / sqrt(d) is far off the manifold (0.726; the audit's 0.705 at d = 100) and below
    # the barrier (tr(CQ) < 0: a growth stage, as from theta U); the share falls by T1 (0.28, 0.20) and SpecGD's to
    # 0.013 by the end while GD's stays at 0.19 at this size
    G = I["gaussian"]
    assert G["specgd"]["off_manifold_0"] == pytest.approx(0.726, abs=0.001) and all(G[m]["trCQ0"] < 0 for m in G)
    assert [round(G[m][k], 3) for k in ("off_manifold_t1", "off_manifold_end") for m in ("specgd", "gd")] == [
        0.278,
        0.198,
        0.013,
        0.193,
    ]
    # steps to alignment 0.9: SpecGD 28 / 30, GD 114 / 147 (orthogonal / Gaussian start)
    assert [I[n][m]["to_aligned"] for n in ("orthogonal", "gaussian") for m in ("specgd", "gd")] == [28, 114, 30, 147]
    N = res["noise"]
    assert N["0"]["specgd"]["final_align"] > 0.99 and N["30"]["specgd"]["final_align"] < N["30"]["gd"]["final_align"]
    T, pop = res["t1_online"], res["t1_population"]
    assert all(T[b]["specgd"] > 5 * pop["specgd"] for b in T)  # online noise: growth stage 7-12x longer
    assert all(abs(T[b]["gd"] / pop["gd"] - 1) < 0.06 for b in T)  # GD's T1 barely moves online (<= 5%)
    s = phase_checks.summary(res)
    assert s["best_kappa"] == {16: 1.0, 32: 1.0}  # 10x the theory's kappa still aligns
    assert all(res["lr"][f"{d}|10"]["final_align"] < 0.9 for d in (16, 32))
    # the signal on coordinate 4 at every d (its variance fixed; on coordinate d/2 GD's steps were 45, 108, 203,
    # d^2.2, mostly the weaker signal): GD 45, 57, 65 (log d fits best over this 2x), SpecGD 3, 7, 6
    gd = [res["power"][str(d)]["gd"] for d in (8, 12, 16)]
    assert gd == [45.0, 57.0, 65.0] and s["laws"]["gd"]["winner"] == "log"
    assert [res["power"][str(d)]["specgd"] for d in (8, 12, 16)] == [3.0, 7.0, 6.0]
    for c in res["cost"].values():
        assert (
            all(c[m]["sec_per_step"] > 0 for m in ("specgd", "gd"))
            and c["specgd"]["to_aligned"] < c["gd"]["to_aligned"]
        )


def test_phase_checks_verdicts_follow_the_numbers(quick_results):
    res, _ = quick_results["phase-checks"]
    bad = copy.deepcopy(res)
    for b in bad["t1_online"]:  # excess ~ batch^-1/2 exactly: holds
        bad["t1_online"][b]["specgd"] = bad["t1_population"]["specgd"] + 100 / math.sqrt(int(b))
    assert _claim(phase_checks.claims(bad), "open question 1").verdict == "holds"
    for c in bad["cost"].values():  # equal wall clock: inside the noise band
        c["specgd"]["sec_per_step"] = c["gd"]["sec_per_step"] * c["gd"]["to_aligned"] / c["specgd"]["to_aligned"]
    assert _claim(phase_checks.claims(bad), "Measure wall-clock").verdict == "inconclusive"
    for c in bad["cost"].values():
        c["specgd"]["sec_per_step"] *= 2  # SpecGD twice as slow to alignment
    assert _claim(phase_checks.claims(bad), "Measure wall-clock").verdict == "fails"
    N = bad["noise"]  # noise: ratio of times to alignment 0.9
    assert _claim(phase_checks.claims(bad), "noise variance").verdict == "fails"  # sigma=30: only GD gets there
    N["30"]["specgd"]["to_aligned"] = 170.0  # SpecGD 170 vs GD 175: 1.03x sooner
    assert _claim(phase_checks.claims(bad), "noise variance").verdict == "holds"
    N["30"]["gd"]["to_aligned"] = math.nan  # GD never: counts as SpecGD sooner
    assert _claim(phase_checks.claims(bad), "noise variance").verdict == "holds"
    N["3"]["gd"]["to_aligned"] = N["3"]["specgd"]["to_aligned"]  # a tie is not "sooner"
    assert _claim(phase_checks.claims(bad), "noise variance").verdict == "fails"
    bad["lr"]["32|1"]["final_align"] = 0.5  # only kappa = 0.1 aligns at d = 32
    assert _claim(phase_checks.claims(bad), "larger learning rate").verdict == "fails"


def test_gaussian_start_has_the_orthogonal_starts_scale():
    """Seed 004 Next Check 1: W0 = theta Z / sqrt(d) has the expected ||W0||_F of theta U (theta sqrt(d)); the
    bug this pins drew theta Z, sqrt(d) too large, which starts above the barrier (tr(CQ) > 0, T1 = 0)."""
    cfg = phase_checks.Config(d=64, steps=0)
    gen = torch.Generator().manual_seed(cfg.seed)
    prob = phase_retrieval.spiked_problem(cfg.d, cfg.lam, gen)
    out = phase_checks.init_cell(cfg)
    assert out["gaussian"]["gd"]["trCQ0"] < 0 and out["orthogonal"]["gd"]["trCQ0"] < 0
    # tr(CQ0) = tr(W0^T Q W0) - w^T Q w: equal in expectation for both starts; 0.1: one draw of a 64 x 64 Z
    assert out["gaussian"]["gd"]["trCQ0"] == pytest.approx(out["orthogonal"]["gd"]["trCQ0"], rel=0.1)
    assert float(prob["W0"].norm()) ** 2 * 64 > 1 + out["gaussian"]["gd"]["trCQ0"]  # theta Z would give ~64x


def test_off_manifold_reference():
    d = 6
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    w, v = basis[:, 0], basis[:, 1]
    P = torch.eye(d, dtype=torch.float64) - torch.outer(w, w) - torch.outer(v, v)
    M = 2 * torch.outer(w, w) + 3 * torch.outer(v, v) + 0.5 * P
    assert phase_checks.off_manifold(M, w, v) < 1e-14  # on the manifold
    E = torch.outer(basis[:, 2], basis[:, 3])
    E = E + E.T  # orthogonal to all three basis matrices
    assert phase_checks.off_manifold(M + E, w, v) == pytest.approx(float(E.norm() / (M + E).norm()), rel=1e-12)


# ---------------------------------------------------------------------------------------- trained
def test_trained_numbers(quick_results):
    res, claims = quick_results["trained"]
    best = res["best"]
    assert set(best) == {"svd", "muon_quintic", "schatten4"}
    # 30 quick steps from loss ln(81) = 4.39: every variant learns (val 3.05-3.11)
    assert all(2.9 < b["val"] < 3.2 for b in best.values())
    # exact polar's updates are (nearly) orthogonal; NS5 spreads them; Schatten-4 keeps much of G's spectrum
    assert (
        best["svd"]["spread"] > 0.95
        and 0.4 < best["muon_quintic"]["spread"] < 0.8
        and best["schatten4"]["spread"] < 0.3
    )
    rec = res["runs"]["svd|0.02"]["records"]
    assert {r["step"] for r in rec} == {0, 10, 20} and len({r["layer"] for r in rec}) == 4
    for r in rec:
        if r["update_op"]:
            # the recorded spread is ||dW||_F^2/||dW||_op^2/min(shape), in (0, 1]
            assert 0 < trained.update_spread(r) <= 1 + 1e-6
    assert trained.spearman([1, 2, 3], [3, 1, 2]) == pytest.approx(-0.5)  # the shared diagnostics.ranks one
    assert [c.verdict for c in claims] == QUICK_VERDICTS["trained"]
    # stable rank against its value at init: every layer fell (8 -> 2.13 etc.), all far below 0.1 x width
    assert trained.claims(res)[0].verdict == "holds"
    low = copy.deepcopy(res)
    recs = low["runs"]["svd|0.02"]["records"]
    last = [r for r in recs if r["step"] == 20 and r["layer"] == "blocks.0.qkv"][0]
    last["st_A"] = 0.1 * 32 * 1.05  # inside the +-10% band: decides nothing
    assert trained.claims(low)[0].verdict == "inconclusive"
    last["st_A"] = 0.1 * 32 * 1.2  # clearly above the limit
    assert trained.claims(low)[0].verdict == "fails"
    last["st_A"] = 2.0
    first = [r for r in recs if r["step"] == 0 and r["layer"] == "blocks.0.qkv"][0]
    first["st_A"] = 1.0  # doubled since init: not "remains"
    assert trained.claims(low)[0].verdict == "fails"
    # seed 003's comparison over seeds: the control schatten4 (gap 1.8% at quick size) is inside 2%: decides nothing
    over = res["over_seeds"]
    assert over["schatten4"]["vals"][0] / over["svd"]["vals"][0] - 1 == pytest.approx(0.018, abs=0.003)
    bad = copy.deepcopy(res)
    bad["over_seeds"]["schatten4"]["vals"] = [over["svd"]["vals"][0] * 1.05]  # control 5% worse: decisive
    assert trained.claims(bad)[1].verdict == "holds"
    bad["over_seeds"]["muon_quintic"]["vals"] = [over["svd"]["vals"][0] * 1.03]  # 3% worse than exact: outside 2%
    assert trained.claims(bad)[1].verdict == "fails"
    assert [x for x in trained.lr_grids(res) if "mean over seeds" in x[0]] == [
        (f"{v} lr (mean over seeds)", [0.02], over[v]["lr"]) for v in ("svd", "muon_quintic", "schatten4")
    ]


# ---------------------------------------------------------------------------------------- layerwise (seed 000 s. 8)
@pytest.fixture(scope="module")
def layerwise_tiny():
    torch.set_num_threads(1)
    cfg = layerwise.Config(
        width=8, samples=16, sweeps=12, settings=tuple(layerwise.SETTINGS)[:2] + tuple(layerwise.SETTINGS)[3:]
    )
    res = layerwise.run(cfg, None)
    return cfg, res


def test_layerwise_gradient_and_constants_are_exact():
    """G_i is autograd's gradient of f in W_i; L_F is the layer Hessian's norm (A^T A (x) B B^T / n, computed
    as a Kronecker matrix); L_* bounds the Hessian's op -> nuclear norm from above and equals the seed's
    ||A||_F^2 / n when B = I (section 7)."""
    g = torch.Generator().manual_seed(1)
    d, n = 5, 5
    Ws = [torch.randn(d, d, generator=g, dtype=torch.float64) for _ in range(3)]
    X, Y = torch.randn(d, n, generator=g, dtype=torch.float64), torch.randn(d, n, generator=g, dtype=torch.float64)
    for i in range(3):
        t = layerwise.layer_terms(Ws, i, X, Y)
        Wg = [W.clone().requires_grad_(j == i) for j, W in enumerate(Ws)]
        R = Wg[2] @ Wg[1] @ Wg[0] @ X - Y
        ((R * R).sum() / (2 * n)).backward()
        assert torch.allclose(t["G"], Wg[i].grad, rtol=1e-12, atol=1e-12)
        A = layerwise._chain(Ws, i + 1, 3, d)
        B = layerwise._chain(Ws, 0, i, d) @ X
        H = torch.kron(A.T @ A, B @ B.T) / n  # vec(A^T A Z B B^T) for row-major vec(Z)
        assert t["LF"] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=1e-10)
        for _ in range(20):  # random Z on the op-norm sphere never beat L_*
            Z = layerwise.polar_svd(torch.randn(d, d, generator=g, dtype=torch.float64), dtype=torch.float64)[0]
            HZ = A.T @ A @ Z @ B @ B.T / n
            assert float(torch.linalg.matrix_norm(HZ, "nuc")) <= t["Ls"] * (1 + 1e-12)
    # B = I: the first layer with X = I; L_* = ||A||_F^2 / n exactly, attained at Z = I
    t = layerwise.layer_terms(Ws, 0, torch.eye(d, dtype=torch.float64), Y)
    A = layerwise._chain(Ws, 1, 3, d)
    assert t["Ls"] == pytest.approx(float((A * A).sum()) / d, rel=1e-10)


def test_layerwise_numbers_and_verdicts(layerwise_tiny):
    cfg, res = layerwise_tiny
    s = layerwise.summary(res)
    assert s["violations"] == {"spectral": 0, "gd": 0}  # a theorem up to rounding
    assert s["worst_margin"]["spectral"] > -1e-12
    for k in cfg.settings:  # both methods descend on block sweeps
        for m in layerwise.METHODS:
            L = res["runs"][f"{k}|{m}|block"]["loss"]
            assert all(b <= a * (1 + 1e-12) for a, b in zip(L, L[1:])) and L[-1] < 0.5 * L[0]
    claims = layerwise.claims(res)
    assert [c.verdict for c in claims][:2] == ["holds", "holds"]
    bad = copy.deepcopy(res)  # one step short of its guarantee: fails
    r = bad["runs"][f"{cfg.settings[0]}|spectral|block"]["steps"][3]
    r["dec"] = r["guarantee"] - 1e-6 * r["f"]
    assert layerwise.claims(bad)[0].verdict == "fails" and layerwise.claims(bad)[1].verdict == "holds"
    for v in bad["runs"].values():  # the rule predicting every winner: holds
        for r in v["steps"]:
            if "nr" in r:
                r["ratio"] = r["nr"] / 2 if r["dec_spectral"] > r["dec_gd"] else r["nr"] * 2
    assert layerwise.summary(bad)["rule_agree"] == 1.0 and layerwise.summary(bad)["majority_agree"] < 1.0
    assert _claim(layerwise.claims(bad), "section 7's comparison").verdict == "holds"
    for _k, v in layerwise.summary(res)["settings"].items():  # the trajectory verdict reads winner vs rule
        assert v["winner"] == min(v["final"], key=v["final"].get)


def test_embedding_claim_is_judged_against_hidden_layers(tmp_path):
    """Seed 002 section 5 explains sign's standing on embeddings by their sparsity: the embeddings' median
    Delta*_sign / Delta*_spec must beat the hidden layers' of the same runs, not only a fixed threshold."""
    from steepest.app.reproduce import layer_oracle as LO
    from test_oracle import tiny

    torch.set_num_threads(1)
    res = LO.run(tiny(), tmp_path)
    res = {**res, "settings": {**res["settings"], "competitive_ratio": 0.0}}  # the threshold alone always passes
    for scale, want in ((0.0, "holds"), (1e6, "fails")):  # hidden layers far worse / far better for sign
        bad = copy.deepcopy(res)
        for r in bad["rows"]:
            if r["role"] == "hidden":
                r["oracle"]["linf"]["decrease"] = scale * r["oracle"]["spectral"]["decrease"]
        assert LO.claims(bad)[5].verdict == want, LO.claims(bad)[5].measured
    # medians in order but the samples interleaved: embeddings all at 1.01, hidden layers at 0.5 and 1.5 in turn
    # (median <= 1.0). The medians' order alone said "holds"; the rank test sees no shift (p ~ 0.5): it fails
    bad = copy.deepcopy(res)
    hidden = [r for r in bad["rows"] if r["role"] == "hidden"]
    for i, r in enumerate(hidden):
        r["oracle"]["linf"]["decrease"] = (0.5 if i % 2 else 1.5) * r["oracle"]["spectral"]["decrease"]
    for r in bad["rows"]:
        if r["role"] == "embedding":
            r["oracle"]["linf"]["decrease"] = 1.01 * r["oracle"]["spectral"]["decrease"]
    c = LO.claims(bad)[5]
    assert c.verdict == "fails" and "p = 0." in c.measured, c.measured
    med_h = statistics.median(1.5 if i % 2 == 0 else 0.5 for i in range(len(hidden)))
    assert len(hidden) >= 4 and med_h < 1.01  # the old rule (median above the hidden median) would hold


# ---------------------------------------------------------------------------------------- oracle-strata
def _strata_tiny():
    """charlm's quick model only, a 10-step run (phases at steps 0, 1, 10), B = 4 and a 8-window full subset."""
    from steepest.app.reproduce import oracle_strata as OS

    return OS.Config(
        subjects=("charlm",), model_size="quick", train_steps=10, batch_sizes=(4,), full_subset=8, grid=6, golden=4
    )


@pytest.fixture(scope="module")
def strata_run(tmp_path_factory):
    torch.set_num_threads(1)
    return base.run_experiment("oracle-strata", _strata_tiny(), tmp_path_factory.mktemp("os"))


def test_strata_run_measures_every_layer_per_phase_and_batch(strata_run):
    res = strata_run.results
    # 3 phases x 2 batch strata (B = 4, full) cells; charlm quick has 7 matrix layers
    assert strata_run.cells_computed == 6 and len(res["rows"]) == 6 * 7
    assert res["settings"]["checkpoints"] == [0, 1, 10]
    assert {(r["phase"], r["batch"]) for r in res["rows"]} == {
        (p, b) for p in ("init", "early", "late") for b in (4, "full")
    }
    for r in res["rows"]:
        assert set(r["oracle"]) == {"spectral", "frobenius", "linf"}
        assert all(p["decrease"] >= 0 for p in r["oracle"].values())
        assert r["dd_ratio"] == pytest.approx(r["nr"] / r["st"])  # charlm: every layer has its own input
    assert len(strata_run.claims) == 4 and [c.seed[:8] for c in strata_run.claims] == ["seed 001"] * 3 + ["seed 002"]
    assert all(c.note.startswith("baseline: ") for c in strata_run.claims)
    assert (strata_run.run_dir / "oracle_strata.png").stat().st_size > 10_000
    tabs = base.get("oracle-strata").tables(res)
    assert len(tabs) == 3 and len(tabs[0][1]) == len(tabs[1][1]) == 6 and len(tabs[2][1]) == len(res["rows"])


def test_strata_decrease_is_the_training_batchs_own_loss():
    """Recomputed by hand: the gradient of batch b's own mean loss, one layer stepped along -polar(G) at the
    recorded eta, the drop of the same batch's loss equals the record's Delta*_spectral (and the frobenius
    step along -G/||G||_F likewise)."""
    from steepest.app.reproduce import _oracle_subjects as S
    from steepest.app.reproduce import oracle_strata as OS

    torch.set_num_threads(1)
    cfg = _strata_tiny()
    subj = S.make_subject("charlm", "quick")
    torch.manual_seed(0)
    model = subj.make_model()
    layers = S.matrix_layers(model, subj.routing)
    batch = subj.batch(5, 0, 4)
    recs = {r["layer"]: r for r in OS.probe_cell(cfg, subj, model, layers, batch)}
    W = model.blocks[0].fc.weight
    model.zero_grad()
    subj.loss(model, batch).backward()
    G = W.grad.detach().double()
    model.zero_grad(set_to_none=True)
    U, _, Vh = torch.linalg.svd(G, full_matrices=False)
    rec = recs["blocks.0.fc.weight"]
    for key, D in (("spectral", U @ Vh), ("frobenius", G / G.norm())):
        p = rec["oracle"][key]
        with torch.no_grad():
            L0 = float(subj.loss(model, batch))
            W0 = W.detach().clone()
            W.sub_((p["eta"] * D).float())
            dec = L0 - float(subj.loss(model, batch))
            W.copy_(W0)
        # float32 losses of ~4.4 (ulp 5e-7) and a step rounded once more here than in the oracle
        assert dec == pytest.approx(p["decrease"], rel=1e-3, abs=1e-5)
    # nr(G) = ||G||_*^2 / ||G||_F^2: the seed's squared nuclear-to-Frobenius ratio
    s = torch.linalg.svdvals(G)
    assert rec["nr"] == pytest.approx(float(s.sum() ** 2 / (s**2).sum()), rel=1e-9)  # float64 both ways


def _srow(phase, batch, pred, spec, frob, linf=1.0, ratio=1.0, layer="w"):
    return {
        "subject": "s",
        "phase": phase,
        "batch": batch,
        "layer": layer,
        "role": "hidden",
        "nr": ratio,
        "st": 1.0,
        "dd_ratio": ratio,
        "dd_winner": pred,
        "oracle": {
            k: {"decrease": v, "eta": 1.0, "at_edge": False, "far": None}
            for k, v in (("spectral", spec), ("frobenius", frob), ("linf", linf))
        },
    }


def _sresults(rows, **settings):
    from steepest.app.reproduce import oracle_strata as OS

    st = {**dataclasses.asdict(OS.Config(batch_sizes=(8,))), "checkpoints": [0, 30, 300], **settings}
    return {"rows": rows, "settings": st}


def test_strata_scores_against_both_baselines_by_hand():
    from steepest.app.reproduce import oracle_strata as OS

    # init, B=8: 10 frobenius wins, 2 spectral wins, 1 tie (within 2 %); DD right on 11 of 12
    rows = [_srow("init", 8, "frobenius", 1.0, 2.0) for _ in range(9)] + [_srow("init", 8, "spectral", 1.0, 2.0)]
    rows += [_srow("init", 8, "spectral", 2.0, 1.0) for _ in range(2)] + [_srow("init", 8, "spectral", 1.0, 1.01)]
    # init, full: 12 spectral wins; DD says frobenius on all: agreement 0
    rows += [_srow("init", "full", "frobenius", 2.0, 1.0) for _ in range(12)]
    (b8, full) = [s for s in OS.strata(_sresults(rows)) if s["phase"] == "init"]
    assert (b8["n"], b8["ties"]) == (12, 1)
    assert b8["agreement"] == pytest.approx(11 / 12) and b8["always_spectral"] == pytest.approx(2 / 12)
    # the phase's majority (pooled over both strata: 14 spectral, 10 frobenius) is spectral
    assert b8["majority_class"] == "spectral" and b8["phase_majority"] == pytest.approx(2 / 12)
    assert b8["verdict"] == "holds"  # 0.917 >= 0.167 + 0.1
    assert full["agreement"] == 0.0 and full["better_baseline"] == 1.0 and full["verdict"] == "fails"
    init_claim = OS.claims(_sresults(rows))[0]
    assert init_claim.verdict == "inconclusive"  # mixed strata
    assert "B=8: agreement 0.917" in init_claim.measured and "full: agreement 0" in init_claim.measured
    # the margin is the threshold: at agreement - better + eps the stratum fails
    gap = b8["agreement"] - b8["better_baseline"]
    for margin, want in ((gap - 1e-9, "holds"), (gap + 1e-9, "fails")):
        assert [s["verdict"] for s in OS.strata(_sresults(rows, agree_margin=margin))][0] == want
    # a role filter: no embedding rows here, so nothing is decided
    assert all(s["n"] == 0 and s["verdict"] == "inconclusive" for s in OS.strata(_sresults(rows), ("embedding",)))
    # fewer decided layers than min_layers: inconclusive
    assert OS.strata(_sresults(rows, min_layers=13))[0]["verdict"] == "inconclusive"
    # every stratum of a phase fails -> the phase fails; every one holds -> holds
    fail = [r for r in rows if r["batch"] == "full"] + [
        _srow("init", 8, "frobenius", 2.0, 1.0, layer=str(i)) for i in range(12)
    ]
    assert OS.claims(_sresults(fail))[0].verdict == "fails"
    good = [
        _srow("init", b, "spectral" if i % 3 else "frobenius", *((2.0, 1.0) if i % 3 else (1.0, 2.0)))
        for b in (8, "full")
        for i in range(12)
    ]
    assert OS.claims(_sresults(good))[0].verdict == "holds"
    assert OS.claims(_sresults(good))[1].verdict == "inconclusive"  # no early-phase records


def test_strata_early_phase_claim_against_the_late_share():
    from steepest.app.reproduce import oracle_strata as OS

    def rows(early_spec, late_spec):  # 20 records per phase: spectral beats sign on the first k
        return [
            _srow(p, 8, "spectral", 1.0, 1.0, linf=0.5 if i < k else 2.0)
            for p, k in (("early", early_spec), ("late", late_spec))
            for i in range(20)
        ]

    assert OS.claims(_sresults(rows(16, 12)))[3].verdict == "holds"  # 0.8 > 0.5 and >= 0.6 + 0.1
    assert OS.claims(_sresults(rows(16, 15)))[3].verdict == "fails"  # 0.8 < 0.75 + 0.1
    assert OS.claims(_sresults(rows(9, 0)))[3].verdict == "fails"  # 0.45: not "often"
    assert OS.claims(_sresults(rows(16, 12), min_layers=21))[3].verdict == "inconclusive"
    assert "early: spectral beats sign on 16/20 = 0.8" in OS.claims(_sresults(rows(16, 12)))[3].measured


def test_strata_plateau_check_and_edges():
    from steepest.app.reproduce import oracle_strata as OS

    r = _srow("late", 8, "spectral", 1.0, 2.0)
    r["oracle"]["spectral"].update(at_edge=True, far=1.004)  # flat beyond the top: the plateau value
    r["oracle"]["frobenius"].update(at_edge=True, far=2.5)  # still falling at far x top: a real edge
    res = _sresults([r])
    assert OS.plateau(r["oracle"]["spectral"], 0.005) and not OS.plateau(r["oracle"]["frobenius"], 0.005)
    assert OS.lr_edges(res) == ["s late B=8 w frobenius: best step at the bracket's edge"]
    assert base.grid_edges("oracle-strata", res) == OS.lr_edges(res)


def test_strata_config_rejects_bad_values():
    from steepest.app.reproduce import oracle_strata as OS

    with pytest.raises(ConfigError, match="phase_fractions"):
        OS.Config(phase_fractions=(0.0, 0.5))
    with pytest.raises(ConfigError, match="too short"):
        OS.Config(train_steps=4, phase_fractions=(0.0, 0.1, 1.0))
    with pytest.raises(ConfigError, match="subjects"):
        OS.Config(subjects=("cifar",))
    with pytest.raises(ConfigError, match="plateau_rtol"):
        OS.Config(plateau_rtol=0.05)
    assert OS.Config().checkpoints() == (0, 30, 300) and OS.quick().checkpoints() == (0, 6, 60)


# ---------------------------------------------------------------------------------------- unchecked claims
def test_unchecked_counts_are_consistent():
    """Every unchecked claim of the audit's 23 is itemized (one row, one claim) or named as checked since, by an
    experiment that exists; the sentence in the report says so."""
    from steepest.app.reproduce import unchecked

    assert len(unchecked.UNCHECKED) == unchecked.AUDIT_UNCHECKED - len(unchecked.CHECKED_SINCE_AUDIT) == 14
    for entry in unchecked.CHECKED_SINCE_AUDIT:
        assert entry.endswith("]") and entry.rsplit("[", 1)[1][:-1] in base.REGISTRY, entry
    assert all(len(r) == len(unchecked.HEADER) and all(r) for r in unchecked.rows())
    assert "so 14 remain: all 14 are listed here" in unchecked.counts_text()
    assert len({r[1] for r in unchecked.UNCHECKED}) == 14  # no claim listed twice


# ---------------------------------------------------------------------------------------- noise-scales (seed 002 s. 3)
def test_noise_scales_numbers(quick_results):
    res, claims = quick_results["noise-scales"]
    subs = res["subjects"]
    assert set(subs) == {"gaussian_iid", "gaussian_rows", "charlm_blocks.0.fc"}
    for s in ("gaussian_iid", "gaussian_rows"):
        for v in subs[s]["by_B"].values():
            # Gaussian: c_1 = sqrt(2/pi) ||sigma||_1 exactly; 60 draws of 24 x 64 |e| sums: SE ~0.3%, so 2% is ~6 SE
            assert v["c1"][0] / subs[s]["sigma_l1"] == pytest.approx(math.sqrt(2 / math.pi), rel=0.02)
            # ... and c_* below its closed form (24 x 64 isotropic: ~0.95; rows i^-1: ~0.96)
            assert 0.9 < v["cs"][0] / subs[s]["tr_sqrt"] < 1.0
    real = subs["charlm_blocks.0.fc"]
    assert real["shape"] == [128, 32]
    assert all(0.3 < v["cs"][0] / real["tr_sqrt"] < 0.5 for v in real["by_B"].values())  # measured 0.40-0.43
    assert [c.verdict for c in claims] == QUICK_VERDICTS["noise-scales"]
    bad = copy.deepcopy(res)
    for S in bad["subjects"].values():  # the closed forms matching the constants: eqs. (3)-(4) hold
        for v in S["by_B"].values():
            v["c1"][0], v["cs"][0] = S["sigma_l1"], S["tr_sqrt"]
    assert [c.verdict for c in noise_scales.claims(bad)][:3] == ["holds", "holds", "holds"]
    bad = copy.deepcopy(res)
    v = bad["subjects"]["gaussian_iid"]["by_B"]["64"]
    v["sign"][0] = bad["subjects"]["gaussian_iid"]["G_l1"]  # noiseless alignment ||G||_1: far above the bound
    v["spec"][0] = -1e9  # far below Proposition 2's bound
    assert [c.verdict for c in noise_scales.claims(bad)][3:] == ["holds", "fails"]


def test_noise_scales_closed_forms_reference():
    """||sigma||_1 and tr((E[xi xi^T])^(1/2)) from per-sample noise against numpy (float64)."""
    X = torch.randn(50, 6, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    got = noise_scales.approximations(X)
    xi = X.numpy() - X.numpy().mean(axis=0)
    C = np.einsum("kij,klj->il", xi, xi) / 50
    # eigvalsh vs numpy's eigvalsh of the same symmetric matrix: rounding only
    assert got["sigma_l1"] == pytest.approx(np.sqrt((xi**2).mean(axis=0)).sum(), rel=1e-12)
    assert got["tr_sqrt"] == pytest.approx(np.sqrt(np.clip(np.linalg.eigvalsh(C), 0, None)).sum(), rel=1e-10)


# ---------------------------------------------------------------------------------------- phase-t2 (seed 004 stage 2)
def test_phase_t2_numbers(quick_results):
    res, claims = quick_results["phase-t2"]
    fits = phase_t2.t2_fits(res)
    for d, f in fits.items():
        assert f is not None and f["winner"] == "power", d
        # T2 ~ 1/eta: exponents 1.03 (d = 1e3) and 1.01 (d = 1e4) with intervals inside 1 +- 0.1
        assert f["fits"]["power"]["b"] == pytest.approx(1.0, abs=0.05)
        for r in res["dims"][d]["specgd"]:
            # the end of growth comes first, then alignment; T2 eta 0.21 (d = 1e3), 0.13 (d = 1e4): of order 1/eta
            assert 0 < r["t1"] < r["t_align"] and 0.1 < (r["t_align"] - r["t1"]) * r["eta"] < 0.3
    assert [c.verdict for c in claims] == QUICK_VERDICTS["phase-t2"]
    bad = copy.deepcopy(res)
    for r in bad["dims"]["1000"]["specgd"]:  # T2 ~ 1/eta^2 at one d: the claim fails
        r["t_align"] = r["t1"] + int(1e-3 / r["eta"] ** 2)
    assert phase_t2.claims(bad)[0].verdict == "fails"
    bad["dims"]["1000"]["specgd"][0]["t_align"] = None  # a run that never aligned: not decided
    assert phase_t2.claims(bad)[0].verdict == "inconclusive"
    # OQ2: largest aligning kappa 0.906 (d = 25) ... 1.35 (d = 1e4), bisection to 2^-20 relative
    k = {int(d): v for d, v in res["oq2"].items()}
    assert k[25] == pytest.approx(0.906, abs=0.01) and k[10000] == pytest.approx(1.35, abs=0.01)
    assert phase_t2.aligns(100, 10.0, 0.99 * k[100], 0.9, 20.0) and not phase_t2.aligns(
        100, 10.0, 1.05 * k[100], 0.9, 20.0
    )
    bad = copy.deepcopy(res)
    bad["oq2"] = {d: 0.5 for d in bad["oq2"]}  # constant kappa_max: eta_max ~ (d + lam)^(-1/2) exactly
    assert phase_t2.claims(bad)[2].verdict == "holds"


def test_phase_t2_stops_at_the_alignment_target():
    """reduced(stop_at_alignment=x) stops at the first step whose alignment a/||M||_F reaches x, and the
    alignment formula is the Frobenius one on the manifold (w*, v, P of rank d - 2)."""
    d, lam, eta = 100, 10.0, 2**-5 / math.sqrt(110)
    full = phase_reduced.reduced(d, lam, "specgd", eta, 3000)
    al = [phase_t2.alignment(a, b, c, d) for a, b, c in zip(full["a"], full["b"], full["c"])]
    first = next(i for i, x in enumerate(al) if x >= 0.9)
    cut = phase_reduced.reduced(d, lam, "specgd", eta, 3000, stop_at_alignment=0.9)
    assert len(cut["a"]) == first + 1 and cut["a"] == full["a"][: first + 1]
    a, b, c = 2.0, 0.5, 0.1
    M = np.diag([a, b] + [c] * (d - 2))
    assert phase_t2.alignment(a, b, c, d) == pytest.approx(a / np.linalg.norm(M), rel=1e-12)


# ---------------------------------------------------------------------------------------- phase-aligned (seed 004)
def test_phase_aligned_numbers(quick_results):
    res, claims = quick_results["phase-aligned"]
    al, orth = res["spikes"]["aligned"]["16"], res["spikes"]["orthogonal"]["16"]
    # aligned spike: GD 4 steps (s = 1/8), SpecGD 10 (kappa = 1/2); orthogonal (the seed's case): SpecGD 8, GD 112
    assert (phase_aligned.best(al["gd"])["steps"], phase_aligned.best(al["specgd"])["steps"]) == (4, 10)
    assert (phase_aligned.best(orth["specgd"])["steps"], phase_aligned.best(orth["gd"])["steps"]) == (8, 112)
    assert al["gd"][-1]["steps"] is None  # GD at s = 1/2 aligns but its loss blows up: not recovered
    assert [c.verdict for c in claims] == QUICK_VERDICTS["phase-aligned"]
    bad = copy.deepcopy(res)
    bad["spikes"]["aligned"]["16"]["gd"][1]["steps"] = 10  # GD's best no faster than SpecGD's: not favoured
    assert phase_aligned.claims(bad)[0].verdict == "fails"
    for r in bad["spikes"]["aligned"]["16"]["gd"]:
        r["steps"] = None  # GD never recovers the signal: not decided
    assert phase_aligned.claims(bad)[0].verdict == "inconclusive"


def test_phase_aligned_problem_and_stopping_rule():
    d = 8
    p = phase_aligned.problem(d, 10.0, "aligned", torch.Generator().manual_seed(0))
    assert torch.allclose(p["Q"] @ p["w"], 11.0 * p["w"], atol=1e-12)  # w* is the spike (eigenvalue 1 + lambda)
    q = phase_aligned.problem(d, 10.0, "orthogonal", torch.Generator().manual_seed(0))
    assert abs(float(q["v"] @ q["w"])) < 1e-12
    rec = {"align": [0.1, 0.95, 0.95, 0.97], "loss": [1.0, 2.0, 0.04, 0.01]}
    assert phase_aligned.steps_to(rec, 0.9, 0.05) == 2  # aligned at step 1, recovered (loss <= 5%) at step 2


def test_resolved_spectrum_is_the_gradients_not_the_roundings():
    """A gradient with a structural null direction (inputs with zero mean, as after LayerNorm): float32 rounds
    its singular value to ~1e-8 of the largest, float64 to ~1e-16. Over the resolved spectrum the variance and mu
    agree between the two; over the whole spectrum mu differs by the log of that rounding."""
    from steepest.app.reproduce._schatten_subjects import resolved_spectrum

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 32, generator=gen, dtype=torch.float64)
    x = x - x.mean(dim=1, keepdim=True)  # every input orthogonal to the ones vector: G @ 1 = 0 exactly
    d = torch.randn(200, 48, generator=gen, dtype=torch.float64)
    G64 = d.T @ x
    G32 = (d.float().T @ x.float()).double()
    sv64, sv32 = torch.linalg.svdvals(G64), torch.linalg.svdvals(G32)
    assert sv64[-1] / sv64[0] < 1e-14 and 1e-10 < sv32[-1] / sv32[0] < 1e-6  # the rounding, not the gradient
    ps = (2.0, 8.0, 32.0, 128.0, math.inf)
    r64, r32 = resolved_spectrum(sv64, ps, 1e-6), resolved_spectrum(sv32, ps, 1e-6)
    assert r64["rank"] == r32["rank"] == 31
    for p in ("2.0", "8.0", "32.0", "128.0"):
        # float32 inputs: relative error ~1e-7 per singular value, ~1e-6 through the q-norm and the variance
        assert r32["var"][p] == pytest.approx(r64["var"][p], rel=1e-4)
        assert r32["mu"][p] == pytest.approx(r64["mu"][p], rel=1e-5)
    full = {n: float(torch.log(s).mean()) for n, s in (("64", sv64), ("32", sv32))}
    assert abs(full["64"] - full["32"]) > 0.1  # the whole spectrum's mean log: ln(1e-8 / 1e-16) / 32 apart
    # the closed form t_i = (s_i/||s||_q)^(q-1) against the float64 dualizer's singular values on the kept part
    t = torch.linalg.svdvals(schatten.dualizer(G64, 32.0))
    keep = sv64 > 1e-6 * sv64[0]
    assert float(t[keep].var(unbiased=False)) == pytest.approx(r64["var"]["32.0"], rel=1e-9)  # float64, one SVD
