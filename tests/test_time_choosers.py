"""Choosers over training time (steepest.optim.time_choosers): schedules, the phase switch, 2605.19781's choice.

Numbers are checked against explicit formulas (the schedule shapes), float64 SVD references (the step at
the scheduled knob) and the library criterion (:func:`steepest.diagnostics.schatten_choice.best_exponent`);
resumed runs against uninterrupted ones, bit for bit.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import steepest
from steepest.diagnostics.schatten_choice import best_exponent
from steepest.optim.measured_choosers import PhaseSwitch, SchattenChoice
from steepest.optim.steepest import SteepestDescent
from steepest.optim.time_choosers import Schedule, ScheduleChooser, dynmuon


def _ref_power(M: np.ndarray, a: float) -> np.ndarray:
    U, s, Vh = np.linalg.svd(M, full_matrices=False)
    t = (s / s[0]) ** a
    return (U * (t / np.linalg.norm(t) * math.sqrt(len(s)))) @ Vh


# ----------------------------------------------------------------------------------- schedules
def test_schedule_shapes():
    lin = Schedule(0.25, -0.25, total=101, shape="linear")
    assert [lin(t) for t in (0, 25, 50, 100, 500)] == [0.25, 0.125, 0.0, -0.25, -0.25]
    cos = Schedule(1.0, 0.0, total=11, shape="cosine")
    assert [round(cos(t), 12) for t in (0, 5, 10)] == [1.0, 0.5, 0.0]
    assert cos(2) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.2)), abs=1e-15)  # float64 cos
    step = Schedule(0.5, -0.1, total=11, shape="step", at=0.3)
    assert [step(t) for t in (0, 2, 3, 10)] == [0.5, 0.5, -0.1, -0.1]
    warm = Schedule(0.0, 0.0, total=100, shape="linear", warmup=10, warmup_start=1.0)
    assert [warm(t) for t in (0, 5, 10, 50)] == [1.0, 0.5, 0.0, 0.0]
    assert Schedule(0.3, total=5, shape="constant")(4) == 0.3


def test_dynmuon_end_points():
    c = dynmuon(total_steps=201)
    assert (c.schedule(0), c.schedule(100), c.schedule(200)) == (0.25, 0.0, -0.25)


@pytest.mark.parametrize(
    "make,match",
    [
        (lambda: Schedule(0.1, 0.0, total=10, shape="exp"), "shape must be one of"),
        (lambda: Schedule(0.1, 0.0, total=10, warmup=10), "warmup"),
        (lambda: Schedule(float("inf")), "start must be a finite knob"),
        (lambda: Schedule(0.1, total=0), "total must be an int >= 1"),
        (lambda: ScheduleChooser(0.25), "schedules must be"),  # type: ignore[arg-type]  # the error under test
        (lambda: PhaseSwitch(), "needs model="),
        (lambda: PhaseSwitch(statistic="srank", band=(2.0, 1.0)), "band must be"),
        (lambda: SchattenChoice(nn.Linear(3, 2), every=100, measure_every=30), "must divide"),
        (lambda: SchattenChoice(None), "needs model="),  # type: ignore[arg-type]  # the error under test
        (lambda: SchattenChoice(nn.Linear(3, 2), exponents=(0.0, 1.5)), "exponents must be"),
        (lambda: SchattenChoice(nn.Linear(3, 2), pinned=(1e-3, 0.02, 1.0)), "beta1"),
    ],
)
def test_clear_errors(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_dual_step_groups_refused():
    W = nn.Parameter(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="step_size='fixed'"):
        SteepestDescent([W], step_size="dual", chooser=dynmuon(10))


# ----------------------------------------------------------------------------------- the step
def test_schedule_steps_match_float64_reference():
    """Each step is W - lr D_a(G) at a = schedule(t) (float64 SVD reference); a = 0 is the group's own
    spectral step, so with method='svd' it is the exact polar factor as well."""
    g = torch.Generator().manual_seed(0)
    W = nn.Parameter(torch.randn(6, 4, generator=g, dtype=torch.float64))
    sched = Schedule(1.0, -0.5, total=4, shape="linear")  # a = 1, 0.5, 0, -0.5
    opt = SteepestDescent([W], lr=0.1, method="svd", chooser=ScheduleChooser(sched, record_every=1))
    Wr = W.detach().numpy().copy()
    for t in range(4):
        G = torch.randn(6, 4, generator=g, dtype=torch.float64)
        W.grad = G
        opt.step()
        Wr = Wr - 0.1 * _ref_power(G.numpy(), sched(t))
        # float64 end to end (Gram eigh / SVD vs numpy's SVD of a cond < 1e2 matrix): ~1e-15 observed
        assert np.abs(W.detach().numpy() - Wr).max() < 1e-12, t
    assert [h["knob"] for h in opt.chooser.history] == [1.0, 0.5, 0.0, -0.5]


def test_roles_get_their_own_schedule():
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    groups = steepest.param_groups(model)
    roles = {g.get("role") for g in groups if g["algorithm"] == "steepest"}
    role = sorted(roles)[0]
    c = ScheduleChooser(
        Schedule(0.5, total=10, shape="constant"), roles={role: Schedule(-0.2, total=10, shape="constant")}
    )
    opt = steepest.Muon(groups, lr=0.02, chooser=c)
    model(torch.randn(16, 4)).square().mean().backward()
    opt.step()
    assert set(opt.chooser.knobs(opt).values()) == {-0.2}  # every steepest group has that role here
    opt2 = copy.deepcopy(opt)  # roles are kept by parameter label, so a copy keeps its schedules
    for g in opt2.param_groups:
        for p in g["params"]:
            p.grad = torch.ones_like(p)
    opt2.step()
    assert set(opt2.chooser.knobs(opt2).values()) == {-0.2} and opt2.chooser.t == 2


# ----------------------------------------------------------------------------------- phase switch
def test_phase_switch_hysteresis_numbers():
    """A layer switches only after ``patience`` consecutive decisions beyond the band; inside it, the
    streak resets. The statistic comes from ``observe(stats=...)`` (a monitor's metric)."""
    W = nn.Parameter(torch.randn(5, 3, dtype=torch.float64))
    c = PhaseSwitch(statistic="ratio", band=(0.8, 1.25), above=0.0, below=1.0, every=1, patience=2)
    opt = SteepestDescent([W], lr=0.01, chooser=c)
    label = "group0.0"
    seq = [1.3, 1.0, 1.3, 1.3, 1.3, 0.7, 1.0, 0.7, 0.7]  # value seen at each decision (the previous observe)
    knobs = []
    for v in seq:
        c._stats = {label: {"ratio": v}}  # what observe(stats=...) stores for the next decision
        W.grad = torch.randn(5, 3, dtype=torch.float64)
        opt.step()
        knobs.append(c.layers[label]["a"])
    assert knobs == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def test_phase_switch_observe_stats_and_srank():
    W = nn.Parameter(torch.zeros(6, 6, dtype=torch.float64))
    c = PhaseSwitch(statistic="srank", band=(0.3, 0.6), every=1, patience=1)
    opt = SteepestDescent([W], lr=0.01, chooser=c)
    W.grad = torch.eye(6, dtype=torch.float64)  # stable rank 6 of 6: 1.0 > 0.6, above at once (patience 1)
    opt.step()
    assert c.layers["group0.0"]["stat"] == pytest.approx(1.0, abs=1e-12) and c.layers["group0.0"]["a"] == 0.0
    G = torch.zeros(6, 6, dtype=torch.float64)
    G[0, 0] = 1.0  # rank 1: 1/6 < 0.3, back below
    W.grad = G
    opt.step()
    assert c.layers["group0.0"]["a"] == 1.0
    c.observe(5, stats={"group0.0": {"x": 1.0}})
    assert c._stats == {"group0.0": {"x": 1.0}} and c.t == 6


# ----------------------------------------------------------------------------------- 2605.19781
def _linear_case(X: torch.Tensor, B: torch.Tensor):
    """A bias-free linear layer whose loss (Y * T).sum() has gradient exactly B: T^T = B X^+."""
    N = X.shape[0]
    T = (B @ torch.linalg.pinv(X)).mT
    model = nn.Linear(X.shape[1], B.shape[0], bias=False).double()
    return model, lambda: (model(X) * T).sum(), N


@pytest.mark.parametrize("case", ["spectral", "frobenius"])
def test_schatten_choice_synthetic_cases(case):
    """The criterion's limits (its end points are Davis-Drusvyatskiy's test, seed 001): a flat-spectrum
    gradient with activations of stable rank ~1 takes a = 0 (spectral); a rank-1 gradient with isotropic
    activations takes a = 1 (Frobenius). The chooser's decision equals best_exponent on the same M, G and
    activation spectrum (momentum 0, beta 0: no smoothing)."""
    g = torch.Generator().manual_seed(1)
    m, n, N = 6, 8, 256
    X = torch.randn(N, n, generator=g, dtype=torch.float64)
    B = torch.linalg.qr(torch.randn(n, m, generator=g, dtype=torch.float64))[0].mT  # flat: s = 1
    if case == "spectral":
        U, _, Vh = torch.linalg.svd(X, full_matrices=False)
        X = (U * torch.tensor([100.0] + [1.0] * (n - 1), dtype=torch.float64)) @ Vh  # st(A) ~ 1.0
    else:
        B = torch.outer(torch.randn(m, generator=g, dtype=torch.float64), B[0])  # rank 1, (m, n)
    model, loss_fn, _ = _linear_case(X, B)
    c = SchattenChoice(model, every=1, measure_every=1, beta=0.0)
    opt = SteepestDescent(model.parameters(), lr=0.0, chooser=c)  # lr 0: the weights stay, G stays B
    loss_fn().backward()
    G = model.weight.grad.clone()
    assert torch.allclose(G, B, atol=1e-9)  # pinv of a cond-100 X: ~1e-13
    opt.step()
    a = c.layers["group0.0"]["a"]  # model.parameters(): no names, the label is group0.0
    expect, f = best_exponent(G, G, torch.linalg.svdvals(X))
    assert a == expect == (0.0 if case == "spectral" else 1.0), f


def test_schatten_choice_pinned_magnitude():
    """pinned=(lr_adam, lr_muon, beta1): the step is kappa^a times the RMS-matched one."""
    model = nn.Linear(8, 4, bias=False)
    c = SchattenChoice(model, pinned=(1e-3, 0.02, 0.9))
    opt = SteepestDescent(model.parameters(), lr=0.02, chooser=c)
    kappa = 1e-3 * math.sqrt(0.1 / 1.9) * math.sqrt(8) / 0.02
    block = type("B", (), {"param": model.weight, "cfg": opt._settings_of(0)})()
    assert c._lr_scale(block, 0.5) == pytest.approx(kappa**0.5, rel=1e-15)
    assert c._lr_scale(block, 0.0) == 1.0


# ----------------------------------------------------------------------------------- resume
def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 12), nn.Tanh(), nn.Linear(12, 3))


MAKERS = {
    "schedule": lambda model: ScheduleChooser(
        Schedule(0.5, -0.25, total=8, shape="cosine", warmup=2, warmup_start=0.0), record_every=1
    ),
    # nr(G)/st(A) is 0.58-0.79 here: above 0.5 at decisions 0, 2, 4, so the switch (patience 3) happens at
    # step 4, right after the resume point, from a streak saved in the checkpoint
    "phase": lambda model: PhaseSwitch(model=model, every=2, patience=3, band=(0.3, 0.5)),
    "schatten": lambda model: SchattenChoice(model, every=4, measure_every=2, beta=0.5),
}


@pytest.mark.parametrize("kind", list(MAKERS))
def test_resume_is_bit_for_bit(kind):
    """8 steps straight vs 4 steps, state_dict, a fresh model/optimizer/chooser, 4 more: equal weights, knobs
    and history (the EMAs, streaks and phases are in the chooser's state)."""
    data = [torch.randn(32, 6, generator=torch.Generator().manual_seed(s)) for s in range(8)]

    def build():
        model = _mlp()
        opt = steepest.Muon(steepest.param_groups(model), lr=0.05, chooser=MAKERS[kind](model))
        return model, opt

    def train(model, opt, steps):
        for x in steps:
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()

    m1, o1 = build()
    train(m1, o1, data)
    m2, o2 = build()
    train(m2, o2, data[:4])
    saved = copy.deepcopy((m2.state_dict(), o2.state_dict()))
    m3, o3 = build()
    m3.load_state_dict(saved[0])
    o3.load_state_dict(saved[1])
    train(m3, o3, data[4:])
    for p, q in zip(m1.parameters(), m3.parameters()):
        assert torch.equal(p, q)
    assert o1.chooser.history == o3.chooser.history
    assert o1.chooser.knobs(o1) == o3.chooser.knobs(o3)
    # the knob changes (at step 4, after the resume), or the test proves little
    assert len({h["knob"] for h in o1.chooser.history}) >= 2


def test_check_state_refuses_bad_knob():
    model = _mlp()
    opt = steepest.Muon(steepest.param_groups(model), lr=0.05, chooser=dynmuon(10))
    sd = opt.state_dict()
    sd["chooser"] = {"t": 1, "layers": {"0.weight": {"a": float("nan")}}, "history": []}
    with pytest.raises(ValueError, match="finite number"):
        opt.load_state_dict(sd)


def test_knob_history_file_and_report_section(tmp_path):
    """The compare run writes knobs/<name>.json from the chooser's history; the report draws one section."""
    from steepest.app.compare.knobs import knob_grid, knob_records, knob_sections, write_knobs

    model = _mlp()
    opt = steepest.Muon(steepest.param_groups(model), lr=0.05, chooser=dynmuon(21))
    for _ in range(21):
        opt.zero_grad()
        model(torch.randn(8, 6)).square().mean().backward()
        opt.step()
    recs = knob_records(opt)
    assert recs is not None
    layers, steps, grid = knob_grid(recs)
    assert steps == [0, 10, 20] and layers == ["0.weight", "2.weight"]  # record_every=10
    assert grid == [[0.25, 0.0, -0.25]] * 2
    assert write_knobs(tmp_path, "knob-schedule", opt) is not None
    assert write_knobs(tmp_path, "muon", steepest.Muon(steepest.param_groups(model))) is None  # no time chooser
    (section,) = knob_sections(tmp_path, ["knob-schedule", "muon"])
    assert "0.weight -0.25" in section.text[0] and (tmp_path / "figures" / "knobs_knob-schedule.png").exists()


def test_knob_held_at_zero_is_the_recipe_bit_for_bit():
    """A layer at a = 0 takes the group's own spectral step: SpecGD (Polar Express) with a constant-0
    schedule equals SpecGD without a chooser, bit for bit, so the knob entries differ from specgd by the knob."""

    def run(chooser):
        model = _mlp()
        opt = steepest.SpecGD(
            steepest.param_groups(model), lr=0.02, momentum=0.95, nesterov=True, method="polar_express", chooser=chooser
        )
        for s in range(3):
            opt.zero_grad()
            model(torch.randn(16, 6, generator=torch.Generator().manual_seed(s))).square().mean().backward()
            opt.step()
        return list(model.parameters())

    zero = ScheduleChooser(Schedule(0.0, total=3, shape="constant"))
    for p, q in zip(run(None), run(zero)):
        assert torch.equal(p, q)


def test_phase_switch_statistic_is_dd_ratio():
    """statistic='nr_st' is nr(G)/st(A) of the layer's gradient and inputs (float64 SVD reference)."""
    torch.manual_seed(3)
    model = nn.Linear(10, 6, bias=False).double()
    c = PhaseSwitch(model=model, every=1)
    opt = SteepestDescent(model.parameters(), lr=0.01, chooser=c)
    X = torch.randn(64, 10, dtype=torch.float64) * torch.linspace(0.1, 3.0, 10, dtype=torch.float64)
    model(X).square().sum().backward()
    G = model.weight.grad.clone()
    opt.step()
    sG, sA = torch.linalg.svdvals(G), torch.linalg.svdvals(X)
    ref = float(sG.sum() ** 2 / sG.square().sum()) / float(sA.square().sum() / sA[0] ** 2)
    # criteria.dd_scores: ||A||_F and the Gram of A in float32 (~1e-6 relative), G's Gram eigh in float64
    assert c.layers["group0.0"]["stat"] == pytest.approx(ref, rel=1e-5)


def test_compare_entries_build():
    """The compare entries: knob-schedule needs the run's steps (a clear error without them); the measured
    choosers step at ||D||_op = 1 (power_magnitude='spectral'); power holds a = 1/7."""
    from steepest.app.compare.optimizers import build_optimizer

    model = _mlp()
    with pytest.raises(ValueError, match="pass steps="):
        build_optimizer("knob-schedule", model, 0.02, 1e-3)
    assert build_optimizer("knob-schedule", model, 0.02, 1e-3, steps=50).chooser.schedule.total == 50
    for name in ("schatten-choice", "phase-switch"):
        opt = build_optimizer(name, model, 0.02, 1e-3)
        assert {g.get("power_magnitude") for g in opt.param_groups if g["algorithm"] == "steepest"} == {"spectral"}
    opt = build_optimizer("power", model, 0.02, 1e-3)
    assert {g.get("power") for g in opt.param_groups if g["algorithm"] == "steepest"} == {1.0 / 7.0}


@pytest.mark.parametrize("shape", [(5, 9), (9, 5)])
def test_spectrum_from_gram_matches_svd(shape):
    """SchattenChoice's s and C_i = u_i^T G v_i from M's Gram eigh equal the float64 SVD's."""
    from steepest.optim.measured_choosers import _spectrum

    g = torch.Generator().manual_seed(4)
    M, G = (torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(2))
    s, C, _ = _spectrum(M, G)
    U, s_ref, Vh = torch.linalg.svd(M, full_matrices=False)
    C_ref = ((U.mT @ G) * Vh).sum(-1)
    # Gram eigh: eigenvalues to ~eps s_1^2, so s_i and C_i to ~eps cond(M)^2 relative (cond < 30 here)
    assert torch.allclose(s, s_ref, rtol=1e-10, atol=0) and torch.allclose(C, C_ref, rtol=1e-9, atol=1e-12)


def test_muon_default_dtype_steps_the_knob_in_float64():
    """steepest.Muon's dtype="auto" picks Newton-Schulz's dtype; a knob chooser's U s^a V^T step must still be
    the float64 one: a float32 Gram eigh loses a square matrix's small directions (3.7e-2 relative at a = 0.1
    on 256 x 256 Gaussian inputs before the fix)."""
    g = torch.Generator().manual_seed(0)
    W = nn.Parameter(torch.zeros(256, 256))
    opt = steepest.Muon(
        [W],
        lr=1.0,
        momentum=0.0,
        nesterov=False,
        weight_decay=0.0,
        adjust_lr_fn="original",
        chooser=ScheduleChooser(Schedule(0.1, 0.1, total=1)),
    )
    G = torch.randn(256, 256, generator=g)
    W.grad = G.clone()
    opt.step()
    ref = _ref_power(G.double().numpy(), 0.1)
    scale = np.abs(W.detach().numpy()).max() / np.abs(ref).max()  # Muon's own lr scale rule, whatever it is
    err = np.abs(-W.detach().double().numpy() / scale - ref).max() / np.abs(ref).max()
    # float64 direction, float32 weights: the float32 rounding of the update (~1e-7) dominates
    assert err < 1e-5, err
