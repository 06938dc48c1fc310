"""StepSettings (validated once per group), loaded state validated like constructor arguments, and the
non-finite state policy at step time (issue 18 item 1, issue 23 items 3 and 5)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import steepest
from steepest.optim import settings as S
from steepest.optim.choosers import GeometryChooser


def _mats(seed=0, n=2, shape=(6, 4)):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=g)) for _ in range(n)]


def _grads(ps, seed):
    g = torch.Generator().manual_seed(seed)
    for p in ps:
        p.grad = torch.randn(p.shape, generator=g)


def _snapshot(opt):
    return copy.deepcopy((opt.param_groups, opt.state_dict()))


# ------------------------------------------------------------------ documented limits, at construction
@pytest.mark.parametrize(
    "kwargs,msg",
    [
        (dict(lr=0.5, weight_decay=3.0), r"lr \* weight_decay must be <= 1"),
        (dict(momentum=1.5), r"momentum must be in \[0.0, 1.0\), got 1.5"),
        (dict(momentum=-0.1), "momentum must be in"),
        (dict(momentum=0.9, nesterov="False"), "nesterov must be a bool, got 'False'"),
        (dict(eps=0.0), r"eps must be in \(0.0, inf\), got 0.0"),
        (dict(eps=math.nan), "eps must be a number"),
        (dict(betas=0.9), r"betas must be a pair \(beta1, beta2\) in \[0, 1\), got 0.9"),
        (dict(betas=(1.5, 0.9)), r"betas\[0\] must be in \[0.0, 1.0\), got 1.5"),
        (dict(betas=(0.9, 1.0)), r"betas\[1\] must be in"),
    ],
)
def test_documented_limits_are_refused_at_construction(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        steepest.SteepestDescent(_mats(), **kwargs)


def test_messages_name_the_group_and_its_parameters():
    ps = _mats()
    with pytest.raises(ValueError, match=r"momentum must be in .* \(param_groups\[1\] \(b.weight\)\)"):
        steepest.Muon([dict(params=ps[:1], names=["a.weight"]), dict(params=ps[1:], names=["b.weight"], momentum=1.0)])
    with pytest.raises(ValueError, match=r"eps must be in .*param_groups\[1\] \(bias\)"):
        steepest.Muon(
            [
                dict(params=ps[:1]),
                dict(params=[torch.nn.Parameter(torch.zeros(3))], names=["bias"], algorithm="adamw", eps=0.0),
            ]
        )


@pytest.mark.parametrize("mult", [math.nan, math.inf, 0.0, -1.0, True])
def test_adaptive_multipliers_must_be_finite_and_positive(mult):
    with pytest.raises(ValueError, match="lr_multipliers must map candidate geometries to finite numbers > 0"):
        steepest.Adaptive(_mats(), lr_multipliers={"spectral": mult})


# ------------------------------------------------------------------ built once; edits detected
def test_settings_are_built_once_and_rebuilt_only_when_a_group_is_edited(monkeypatch):
    ps = _mats()
    opt = steepest.Muon(ps, lr=0.02)
    calls = []
    real = S.build
    monkeypatch.setattr(S, "build", lambda *a, **k: calls.append(1) or real(*a, **k))
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    for s in range(4):
        _grads(ps, s)
        opt.step()
        sched.step()  # lr changes every step: a cheap read, no rebuild
    assert calls == []
    opt.param_groups[0]["momentum"] = 0.5
    _grads(ps, 9)
    opt.step()
    opt.step()
    assert calls == [1] and opt._settings_of(0).momentum == 0.5


def test_an_edited_setting_takes_effect_at_the_next_step():
    """scale_rule edited between steps steps exactly like an optimizer built with it."""
    a, b = _mats(), _mats()
    oa, ob = steepest.SpecGD(a, lr=0.1), steepest.SpecGD(b, lr=0.1, scale_rule="muon")
    oa.param_groups[0]["scale_rule"] = "muon"
    for ps, o in ((a, oa), (b, ob)):
        _grads(ps, 1)
        o.step()
    assert all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize(
    "key,bad,msg",
    [
        ("momentum", 1.5, "momentum must be in"),
        ("nesterov", "False", "nesterov must be a bool"),
        ("step_size", "bogus", "step_size must be one of"),
        ("weight_decay", 100.0, r"'lr'\] \* \['weight_decay'\] = 0.02 \* 100.0 > 1"),
    ],
)
def test_an_edited_group_is_validated_before_any_parameter_changes(key, bad, msg):
    ps = _mats()
    opt = steepest.Muon(ps, lr=0.02)
    before = [p.detach().clone() for p in ps]
    opt.param_groups[0][key] = bad
    _grads(ps, 0)
    with pytest.raises(ValueError, match=msg):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(ps, before)) and not opt.state


TORCH_KEY_CASES = [
    ("fused", True),
    ("fused", None),
    ("foreach", True),
    ("foreach", False),
    ("differentiable", False),
    ("capturable", False),
    ("param_names", ["w0", "w1"]),
]


def test_every_documented_torch_key_is_tested():
    assert {k for k, _ in TORCH_KEY_CASES} == set(S.TORCH_KEYS)
    doc = steepest.SteepestDescent.__doc__
    assert all(f"``{k}``" in doc for k in S.TORCH_KEYS)


@pytest.mark.parametrize("key,value", TORCH_KEY_CASES)
def test_keys_torch_trainers_inject_are_accepted_kept_and_change_nothing(key, value):
    a, b = _mats(), _mats()
    oa = steepest.Muon([dict(params=a, **{key: value})], lr=0.02, momentum=0.9)
    ob = steepest.Muon([dict(params=b)], lr=0.02, momentum=0.9)
    for s in range(3):
        for ps, o in ((a, oa), (b, ob)):
            _grads(ps, s)
            o.step()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert oa.param_groups[0][key] == value and oa.state_dict()["param_groups"][0][key] == value


# ------------------------------------------------------------------ loaded state
def _trained(make=steepest.Muon, seed=0, **kw):
    ps = _mats(seed)
    bias = torch.nn.Parameter(torch.zeros(4))
    opt = make([dict(params=ps, names=["w0", "w1"]), dict(params=[bias], names=["bias"], algorithm="adamw")], **kw)
    for s in range(2):
        _grads(ps + [bias], s)
        opt.step()
    return opt


def _check_refused(opt, sd, msg):
    before = _snapshot(opt)
    with pytest.raises(ValueError, match=msg):
        opt.load_state_dict(sd)
    after = _snapshot(opt)
    assert repr(after) == repr(before)  # nothing loaded (tensors compared by value through repr)


def test_loaded_nan_momentum_buffer_is_refused_naming_the_parameter():
    opt, sd = _trained(), _trained(seed=1).state_dict()
    sd["state"][1]["momentum_buffer"][0, 0] = math.nan
    _check_refused(opt, sd, r"non-finite momentum_buffer \(NaN or Inf\) for w1 \(shape \(6, 4\)\); nothing was loaded")


@pytest.mark.parametrize(
    "key,bad,msg",
    [
        ("momentum", 1.5, "momentum must be in"),
        ("step_size", "bogus", "step_size must be one of"),
        ("nesterov", "False", "nesterov must be a bool"),
        ("lr", math.inf, "lr must be in"),
    ],
)
def test_loaded_group_settings_are_validated_like_the_constructor(key, bad, msg):
    opt, sd = _trained(), _trained(seed=1).state_dict()
    sd["param_groups"][0][key] = bad
    _check_refused(opt, sd, f"state_dict: {msg}.*param_groups\\[0\\].*nothing was loaded")


@pytest.mark.parametrize(
    "key,bad,msg",
    [
        ("betas", (1.5, 0.9), r"betas\[0\] must be in"),
        ("eps", 0.0, "eps must be in"),
        ("betas", 0.9, "betas must be a pair"),
    ],
)
def test_loaded_adamw_settings_are_validated(key, bad, msg):
    opt, sd = _trained(), _trained(seed=1).state_dict()
    sd["param_groups"][1][key] = bad
    _check_refused(opt, sd, f"{msg}.*param_groups\\[1\\] \\(bias\\)")


def test_a_bad_second_group_loads_nothing_of_the_first():
    opt, sd = _trained(), _trained(seed=1).state_dict()
    sd["param_groups"][0]["lr"] = 0.123
    sd["param_groups"][1]["eps"] = -1.0
    _check_refused(opt, sd, "eps must be in")
    assert opt.param_groups[0]["lr"] != 0.123


@pytest.mark.parametrize(
    "mutate,msg",
    [
        (lambda st: st[0].update(momentum_buffer=st[0]["momentum_buffer"].int()), "dtype torch.int32 for w0"),
        (lambda st: st[0].update(momentum_buffer=torch.zeros(4, 6)), r"momentum_buffer of shape \(4, 6\) for w0"),
        (lambda st: st[2].pop("exp_avg"), r"no 'exp_avg' for bias"),
        (lambda st: st[2].update(step=-1), "step=-1 for bias"),
        (lambda st: st[2].update(exp_avg_sq=torch.full((4,), math.inf)), "non-finite exp_avg_sq"),
    ],
)
def test_loaded_state_tensors_are_checked(mutate, msg):
    opt, sd = _trained(), _trained(seed=1).state_dict()
    mutate(sd["state"])
    _check_refused(opt, sd, msg)


def test_older_state_without_a_key_gets_todays_default():
    """A state_dict saved before a setting existed (here tensor_mode and transposed) loads with the
    optimizer's defaults and steps like the optimizer that saved it."""
    src = _trained()
    sd = src.state_dict()
    for g in sd["param_groups"]:
        g.pop("tensor_mode"), g.pop("transposed")
    opt = _trained(seed=1)
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["tensor_mode"] == "flatten" and opt.param_groups[0]["transposed"] is False
    ps = opt.param_groups[0]["params"]
    _grads(ps, 5)
    opt.step()
    assert all(torch.isfinite(p).all() for p in ps)


def test_loaded_adaptive_state_outside_the_candidates_is_refused():
    W = _mats(n=1)
    full = steepest.Adaptive(W, every=1, candidates=("linf",), norm="spectral")  # same group norm as below
    _grads(W, 0)
    full.step()
    assert full.geometries() == {"group0.0": "linf"}
    narrow = steepest.Adaptive(_mats(n=1), every=1, candidates=("spectral", "frobenius"))
    _check_refused(
        narrow,
        full.state_dict(),
        r"w?.*saved on geometry 'linf', which is not among this optimizer's candidates "
        r"\('spectral', 'frobenius'\)",
    )


# ------------------------------------------------------------------ non-finite state at step time
@pytest.mark.parametrize("cls", [steepest.Muon, steepest.SignSGD, steepest.SpecGD])
def test_a_nan_state_set_by_hand_raises_before_any_parameter_changes(cls):
    ps = _mats(n=3)
    opt = cls([dict(params=ps, names=["a", "b", "c"])], momentum=0.9)
    _grads(ps, 0)
    opt.step()
    opt.state[ps[1]]["momentum_buffer"][0, 0] = math.nan
    before = [p.detach().clone() for p in ps]
    bufs = [opt.state[p]["momentum_buffer"].clone() for p in ps]
    _grads(ps, 1)
    with pytest.raises(
        steepest.NonFiniteGradientError,
        match=r"optimizer state \(NaN or Inf\) in b \(shape "
        r"\(6, 4\)\): momentum_buffer",
    ):
        opt.step()
    assert all(torch.equal(p, b) for p, b in zip(ps, before))
    assert all(
        torch.equal(
            opt.state[p]["momentum_buffer"],
            b,
        )
        or p is ps[1]
        for p, b in zip(ps, bufs)
    )


def test_a_nan_state_is_skipped_and_counted_under_skip():
    ps = _mats(n=2)
    opt = steepest.Muon(ps, nonfinite="skip")
    _grads(ps, 0)
    opt.step()
    opt.state[ps[0]]["momentum_buffer"].fill_(math.inf)
    before = [p.detach().clone() for p in ps]
    _grads(ps, 1)
    opt.step()
    assert torch.equal(ps[0], before[0]) and not torch.equal(ps[1], before[1])
    assert opt.nonfinite_skipped == 1 and opt.state[ps[0]]["nonfinite_skips"] == 1


# ------------------------------------------------------------------ choosers on any optimizer
def test_a_chooser_on_muon_and_schatten_descent():
    a, b = _mats(), _mats()
    plain = steepest.Muon(a, lr=0.02)
    chosen = steepest.Muon(b, lr=0.02, chooser=GeometryChooser(candidates=("spectral",), rms_match="spectral"))
    for s in range(3):
        for ps, o in ((a, plain), (b, chosen)):
            _grads(ps, s)
            o.step()
    assert all(torch.equal(x, y) for x, y in zip(a, b))  # one spectral candidate at unit multiplier: Muon itself
    assert chosen.state_dict()["chooser"]["t"] == 3
    c = _mats()
    opt = steepest.SchattenDescent(
        c, p=4.0, chooser=GeometryChooser(candidates=("linf", "frobenius"), every=1, margin=0.0, patience=1)
    )
    _grads(c, 0)
    opt.step()
    assert set(opt.chooser.geometries(opt).values()) <= {"linf", "frobenius"} and opt.chooser.history


def test_adaptive_state_saved_before_choosers_existed_still_loads():
    W = _mats(n=1)
    opt = steepest.Adaptive(W, every=1)
    for s in range(3):
        _grads(W, s)
        opt.step()
    sd = opt.state_dict()
    sd["adaptive"] = sd.pop("chooser")  # the old key
    new = steepest.Adaptive(_mats(n=1), every=1)
    new.load_state_dict(sd)
    assert new.chooser.t == 3 and new.history == opt.history and new.geometries() == opt.geometries()


def test_observe_gets_the_step_and_the_closure_loss():
    seen = []

    class Recorder(steepest.optim.choosers.Chooser):
        def observe(self, step, loss=None, stats=None):
            seen.append((step, None if loss is None else float(loss)))
            super().observe(step, loss, stats)

    ps = _mats(n=1)
    opt = steepest.SignSGD(ps, chooser=Recorder())
    for s in range(3):

        def closure(s=s):
            opt.zero_grad()
            loss = (ps[0] ** 2).sum() * (s + 1)
            loss.backward()
            return loss

        opt.step(closure if s else None)
    assert [t for t, _ in seen] == [0, 1, 2] and seen[0][1] is None and seen[1][1] is not None
    opt2 = steepest.SignSGD(_mats(n=1), chooser=Recorder())
    opt2.load_state_dict(opt.state_dict())
    assert opt2.chooser.t == 3


@pytest.mark.parametrize(
    "make", [steepest.Muon, steepest.SpecGD, steepest.SignSGD, steepest.SteepestDescent], ids=lambda c: c.__name__
)
def test_maximize_is_refused_not_silently_minimized(make):
    """torch.optim's maximize=True would flip the step; steepest only descends, so maximize=True in the
    constructor, in a group or in an added group is an error that says to negate the loss."""
    ps = _mats()
    before = [p.detach().clone() for p in ps]
    with pytest.raises(S.SettingsError, match=r"maximize=True is not supported: steepest minimizes.*negate the loss"):
        make(ps, maximize=True)
    with pytest.raises(ValueError, match=r"steepest minimizes.*negate the loss.*param_groups\[1\]"):
        make([{"params": ps[:1]}, {"params": ps[1:], "maximize": True}])
    opt = make(ps[:1], maximize=False)  # torch's default is accepted
    with pytest.raises(S.SettingsError, match="negate the loss"):
        opt.add_param_group({"params": ps[1:], "maximize": True})
    assert len(opt.param_groups) == 1
    _grads(ps, 1)
    opt.step()
    assert all(torch.equal(p, b) for p, b in zip(ps[1:], before[1:]))  # the refused group was not added
