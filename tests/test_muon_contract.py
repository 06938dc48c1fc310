"""steepest.Muon keeps torch.optim.Muon's contract (issue 19 item 2).

* the signature: every torch.optim.Muon argument, same name, position and default;
* bit for bit with ``dtype=torch.bfloat16`` (the one extra: torch forces bf16 Newton-Schulz) on square,
  wide and tall matrices, for every option torch has (eps with torch's meaning, momentum 0, ...);
* PyTorch's own Muon behaviour tests: the OptimizerInfo inputs and error inputs of
  ``torch/testing/_internal/common_optimizers.py`` (torch 2.13), rewritten here (not imported from torch's
  internal module), each run against both classes: the same pass/fail, and the same error types. The
  deliberate differences are in :data:`DELIBERATE` and in the README's "Differences from torch.optim.Muon".
"""

from __future__ import annotations

import copy
import inspect
import io
import warnings

import pytest
import torch
from torch.nn import Parameter

import steepest

TORCH = torch.optim.Muon


def ours(params, **kw):
    """steepest.Muon with the one extra that makes it torch's arithmetic (bf16 Newton-Schulz)."""
    return steepest.Muon(params, dtype=torch.bfloat16, **kw)


CLASSES = {"torch": TORCH, "steepest": ours}


# ------------------------------------------------------------------------------------------ signature
def test_signature_has_every_torch_argument_with_its_default():
    theirs = list(inspect.signature(TORCH.__init__).parameters.values())[1:]
    mine = inspect.signature(steepest.Muon.__init__).parameters
    positional = [p.name for p in list(mine.values())[1:] if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert positional == [p.name for p in theirs]  # same names in the same positions
    for p in theirs:
        default = mine[p.name].default
        if p.name == "eps":  # a sentinel, to tell "not given" from eps=1e-7 (the deprecation below)
            default = steepest.optim.recipes.MUON_EPS
        assert tuple(default) == tuple(p.default) if isinstance(p.default, tuple) else default == p.default, p.name


def test_default_groups_match_torch():
    W = Parameter(torch.randn(4, 3))
    a, b = steepest.Muon([W]).param_groups[0], TORCH([W]).param_groups[0]
    assert (a["lr"], a["weight_decay"], a["momentum"], a["nesterov"]) == (1e-3, 0.1, 0.95, True)
    assert (a["lr"], a["weight_decay"], a["momentum"], a["nesterov"]) == (
        b["lr"],
        b["weight_decay"],
        b["momentum"],
        b["nesterov"],
    )
    assert a["ns_eps"] == b["eps"] and a["steps"] == b["ns_steps"] and tuple(a["coefficients"]) == b["ns_coefficients"]


# ------------------------------------------------------------------------------------------ bit for bit
SHAPES = [(24, 24), (16, 40), (40, 16), (300, 40), (1, 7), (7, 1)]  # square, wide, tall, very tall, vectors-as-rows
OPTIONS = [
    {},  # torch's defaults: lr 1e-3, weight decay 0.1, momentum 0.95, Nesterov
    dict(lr=0.02, weight_decay=0.0),
    dict(lr=0.05, momentum=0.0),  # momentum 0 (torch accepts it, with nesterov=True)
    dict(lr=0.03, nesterov=False, momentum=0.8),
    dict(lr=0.02, adjust_lr_fn="original"),
    dict(lr=0.02, adjust_lr_fn="match_rms_adamw"),
    dict(lr=0.02, ns_steps=3, ns_coefficients=(3.4, -4.7, 2.0)),
    dict(lr=0.02, ns_steps=0),  # torch runs no iteration: the update is M / max(||M||_F, eps) in bf16
    dict(lr=0.02, eps=1.0),  # torch's eps: the floor of ||M||_F in the Newton-Schulz normalization
    dict(lr=torch.tensor(0.01)),
]


def _run(make, W0, grads):
    W = Parameter(W0.clone())
    opt = make([W])
    for g in grads:
        W.grad = g.clone()
        opt.step()
    return W.detach()


@pytest.mark.parametrize("kw", OPTIONS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bit_for_bit_with_torch(shape, kw):
    g = torch.Generator().manual_seed(0)
    W0 = torch.randn(*shape, generator=g)
    grads = [torch.randn(*shape, generator=g) * 0.3 for _ in range(5)]
    expected = _run(lambda ps: TORCH(ps, **kw), W0, grads)
    got = _run(lambda ps: ours(ps, **kw), W0, grads)
    assert torch.equal(got, expected), (got - expected).abs().max()


def test_batched_bf16_steps_equal_torch_too():
    """Same-shape matrices batched into one Newton-Schulz call (accelerators' default) stay torch's result
    on CPU, tall ones included (the lr * scale order does not depend on the executor)."""
    g = torch.Generator().manual_seed(1)
    W0 = [torch.randn(48, 16, generator=g) for _ in range(3)]
    grads = [[torch.randn(48, 16, generator=g) for _ in W0] for _ in range(4)]
    a, b = [Parameter(w.clone()) for w in W0], [Parameter(w.clone()) for w in W0]
    oa, ob = ours(a, lr=0.02, executor=steepest.optim.executors.Batched(cpu=True)), TORCH(b, lr=0.02)
    for gs in grads:
        for p, q, gr in zip(a, b, gs):
            p.grad, q.grad = gr.clone(), gr.clone()
        oa.step()
        ob.step()
    for p, q in zip(a, b):
        # CPU bmm and mm of bf16 run the same per-matrix kernel: equal in practice; 1 bf16-rounded update
        # ulp (lr * 2^-8 ~ 8e-5) per step would be the bound if a backend ever differed.
        torch.testing.assert_close(p.detach(), q.detach(), atol=4 * 0.02 * 2**-8, rtol=0)


def test_default_arguments_give_torchs_trajectory():
    """No argument but the parameters: the same run as torch.optim.Muon(params), on a small model's loss.
    ``dtype="auto"`` is bf16 where the hardware has native bf16 matmul and the matrix is large enough by
    the device's measured rule (``precision.BF16_RULE``; smaller matrices iterate in float32,
    faster there and more accurate: the README's "Differences from torch.optim.Muon"). The layers here are
    large enough that on such hardware no extra at all is needed."""
    from steepest.linalg.precision import auto_dtype

    torch.manual_seed(0)
    X, Y = torch.randn(64, 192), torch.randn(64, 160)
    W1, W2 = torch.randn(256, 192) / 16, torch.randn(160, 256) / 16
    runs = {}
    makers = {"torch": TORCH, "steepest-bf16": ours}
    if all(auto_dtype("cpu", shape=W.shape) == torch.bfloat16 for W in (W1, W2)):
        makers["steepest-auto"] = steepest.Muon
    for name, make in makers.items():
        ps = [Parameter(W1.clone()), Parameter(W2.clone())]
        opt = make(ps)
        for _ in range(10):
            opt.zero_grad()
            ((torch.tanh(X @ ps[0].T) @ ps[1].T - Y) ** 2).mean().backward()
            opt.step()
        runs[name] = [p.detach() for p in ps]
    for name, got in runs.items():
        assert all(torch.equal(x, y) for x, y in zip(got, runs["torch"])), name


def test_eps_has_torchs_meaning():
    """eps=1.0 floors ||M||_F at 1 (a small gradient then moves less): the result changes, as torch's does."""
    g = torch.Generator().manual_seed(2)
    W0, grads = torch.randn(8, 6, generator=g), [torch.randn(8, 6, generator=g) * 1e-2]
    base = _run(lambda ps: ours(ps, lr=0.1), W0, grads)
    big = _run(lambda ps: ours(ps, lr=0.1, eps=1.0), W0, grads)
    assert not torch.equal(base, big)
    assert torch.equal(big, _run(lambda ps: TORCH(ps, lr=0.1, eps=1.0), W0, grads))
    # In a param group dict, eps is also the Newton-Schulz eps (torch's group key).
    assert torch.equal(big, _run(lambda ps: ours([dict(params=ps, eps=1.0)], lr=0.1), W0, grads))


def test_adamw_eps_and_the_deprecated_meaning():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    groups = lambda: steepest.param_groups(model)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning: adamw_eps, or an eps with no AdamW group to mislead
        opt = steepest.Muon(groups(), adamw_eps=1e-6)
        steepest.Muon([model[0].weight], eps=1e-5)
    assert {g["eps"] for g in opt.param_groups if g["algorithm"] == "adamw"} == {1e-6}
    assert {g["ns_eps"] for g in opt.param_groups if g["algorithm"] == "steepest"} == {1e-7}
    with pytest.warns(DeprecationWarning, match="adamw_eps"):
        old = steepest.Muon(groups(), eps=1e-5)  # the old spelling of AdamW's eps, for one release
    assert {g["eps"] for g in old.param_groups if g["algorithm"] == "adamw"} == {1e-5}
    assert {g["ns_eps"] for g in old.param_groups if g["algorithm"] == "steepest"} == {1e-5}


def test_old_recipe_values_are_explicit_in_the_app():
    """compare's tuned runs relied on the old defaults (lr 0.02, weight decay 0): they pass them explicitly."""
    from steepest.app.compare import optimizers

    src = inspect.getsource(optimizers)
    assert "steepest.Muon(_groups(model, aux_lr, routing), lr=lr, weight_decay=0.0)" in src


# ------------------------------------------------------------------------------------------ PyTorch's tests
#: common_optimizers.optim_inputs_func_muon (torch 2.13), rewritten.
OPTIM_INPUTS = {
    "default": {},
    "non-default lr": {"lr": 0.01},
    "Tensor lr": {"lr": torch.tensor(0.001)},
    "non-default weight_decay": {"weight_decay": 0.2},
    "non-default momentum": {"momentum": 0.8},
    "passing alternative ns_steps": {"ns_steps": 6},
    "passing alternative ns_coefficients": {"ns_coefficients": (3.4, -4.7, 2.0)},
}


def _outcome(fn, make):
    """'pass', or the type of what it raised (assertion failures included)."""
    try:
        fn(make)
    except Exception as e:  # noqa: BLE001 - the outcome is compared, not hidden
        return type(e)
    return "pass"


def _params(dtype=torch.float32):
    torch.manual_seed(0)
    return [Parameter(torch.randn(10, 5, dtype=dtype)), Parameter(torch.randn(3, 10, dtype=dtype))]


def _loss(ps, x):
    return (ps[1] @ torch.tanh(ps[0] @ x)).pow(2).sum()


def _train(make, kw, steps=5, dtype=torch.float32, closure=False):
    ps = _params(dtype)
    x = torch.randn(5, dtype=dtype)
    opt = make(ps, **kw)
    first = float(_loss(ps, x).detach())
    for _ in range(steps):

        def step_closure():
            opt.zero_grad()
            loss = _loss(ps, x)
            loss.backward()
            return loss

        if closure:
            opt.step(step_closure)
        else:
            step_closure()
            opt.step()
    return ps, opt, first, float(_loss(ps, x).detach())


def b_forloop_goes_right_direction(make, kw):
    _, _, first, last = _train(make, kw)
    assert last < first


def b_closure_goes_right_direction(make, kw):
    _, _, first, last = _train(make, kw, closure=True)
    assert last < first


def b_float64_goes_right_direction(make, kw):
    _, _, first, last = _train(make, kw, dtype=torch.float64)
    assert last < first


def b_param_groups_weight_decay(make, kw):
    ps = _params()
    x = torch.randn(5)
    opt = make([dict(params=[ps[0]], weight_decay=0.1), dict(params=[ps[1]])], **kw)
    first = float(_loss(ps, x).detach())
    for _ in range(5):
        opt.zero_grad()
        _loss(ps, x).backward()
        opt.step()
    assert float(_loss(ps, x).detach()) < first


def b_param_groups_lr(make, kw):
    ps = _params()
    x = torch.randn(5)
    opt = make([dict(params=[ps[0]], lr=0.01), dict(params=[ps[1]])], **kw)
    first = float(_loss(ps, x).detach())
    for _ in range(5):
        opt.zero_grad()
        _loss(ps, x).backward()
        opt.step()
    assert float(_loss(ps, x).detach()) < first


def b_tensor_lr_equals_float_lr(make, kw):
    if not isinstance(kw.get("lr"), torch.Tensor):
        return
    a, _, _, _ = _train(make, kw)
    b, _, _, _ = _train(make, dict(kw, lr=float(kw["lr"])))
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def b_step_is_noop_when_params_have_no_grad(make, kw):
    ps = _params()
    before = [p.detach().clone() for p in ps]
    make(ps, **kw).step()
    assert all(torch.equal(p, q) for p, q in zip(ps, before))


def b_step_is_noop_for_zero_grads(make, kw):
    if kw.get("weight_decay", 0) != 0:  # torch's own skip: explicit decay moves the weights
        return
    ps = _params()
    before = [p.detach().clone() for p in ps]
    opt = make(ps, **kw)
    for p in ps:
        p.grad = torch.zeros_like(p)
    opt.step()
    assert all(torch.equal(p, q) for p, q in zip(ps, before))  # Muon's default decay 0.1 still applies


def b_non_empty_state(make, kw):
    _, opt, _, _ = _train(make, kw, steps=1)
    assert all(len(opt.state[p]) > 0 for g in opt.param_groups for p in g["params"])


def b_state_dict_deterministic(make, kw):
    ps, opt, _, _ = _train(make, kw, steps=3)
    ps2 = [Parameter(p.detach().clone()) for p in ps]
    opt2 = make(ps2, **kw)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    x = torch.randn(5)
    for _ in range(3):
        for params, o in ((ps, opt), (ps2, opt2)):
            o.zero_grad()
            _loss(params, x).backward()
            o.step()
    assert all(torch.equal(p, q) for p, q in zip(ps, ps2))


def b_save_load_with_weights_only(make, kw):
    ps, opt, _, _ = _train(make, kw, steps=2)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    opt2 = make([Parameter(p.detach().clone()) for p in ps], **kw)
    opt2.load_state_dict(sd)
    assert opt2.state_dict()["param_groups"][0]["lr"] == opt.state_dict()["param_groups"][0]["lr"]


def b_deepcopy_copies_all_public_attrs(make, kw):
    _, opt, _, _ = _train(make, kw, steps=1)
    dup = copy.deepcopy(opt)
    public = {k for k in vars(opt) if not k.startswith("_")}
    assert public == {k for k in vars(dup) if not k.startswith("_")}


def b_step_hooks(make, kw):
    ps, opt, _, _ = _train(make, kw, steps=0)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    for p in ps:
        p.grad = torch.ones_like(p)
    opt.step()
    assert calls == ["pre", "post"]


def b_state_dict_hooks(make, kw):
    _, opt, _, _ = _train(make, kw, steps=1)
    seen = []
    opt.register_state_dict_post_hook(lambda o, sd: seen.append("sd") or sd)
    opt.register_load_state_dict_pre_hook(lambda o, sd: seen.append("load") or sd)
    opt.load_state_dict(opt.state_dict())
    assert seen == ["sd", "load"]


def b_lr_schedulers(make, kw):
    ps = _params()
    x = torch.randn(5)
    opt = make(ps, **kw)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    lr0 = float(opt.param_groups[0]["lr"])
    for _ in range(4):
        opt.zero_grad()
        _loss(ps, x).backward()
        opt.step()
        sched.step()
    assert float(opt.param_groups[0]["lr"]) == pytest.approx(lr0 / 4)


def b_named_parameters_state_dict(make, kw):
    ps = _params()
    opt = make([("a", ps[0]), ("b", ps[1])], **kw)
    for p in ps:
        p.grad = torch.ones_like(p)
    opt.step()
    assert opt.state_dict()["param_groups"][0]["param_names"] == ["a", "b"]


def b_printable(make, kw):
    assert "lr" in repr(make(_params(), **kw))


BEHAVIOURS = {name[2:]: fn for name, fn in dict(globals()).items() if name.startswith("b_")}


@pytest.mark.parametrize("desc", list(OPTIM_INPUTS))
@pytest.mark.parametrize("behaviour", list(BEHAVIOURS))
def test_pytorch_muon_behaviour_same_outcome(behaviour, desc):
    kw = OPTIM_INPUTS[desc]
    fn = BEHAVIOURS[behaviour]
    outcomes = {name: _outcome(lambda make: fn(make, kw), make) for name, make in CLASSES.items()}
    assert outcomes["steepest"] == outcomes["torch"], outcomes


def test_behaviour_outcomes_are_not_vacuous():
    """Most of PyTorch's behaviour tests pass for both; the zero-gradient one fails for both (Muon's default
    weight decay moves the weights, which torch's own test only skips for an explicit weight_decay)."""
    kw = OPTIM_INPUTS["default"]
    for make in CLASSES.values():
        assert _outcome(lambda m: b_forloop_goes_right_direction(m, kw), make) == "pass"
        assert _outcome(lambda m: b_state_dict_deterministic(m, kw), make) == "pass"
        assert _outcome(lambda m: b_step_is_noop_for_zero_grads(m, kw), make) is AssertionError


# ------------------------------------------------------------------------------------------ error inputs
def _sample():
    torch.manual_seed(0)
    return Parameter(torch.randn(1, 1)), Parameter(torch.randn(1, 1))


def _with_grad(t):
    t.grad = torch.rand_like(t)
    return t


#: get_error_inputs_for_all_optims + optim_error_inputs_func_muon: (params builder, kwargs, error type,
#: "construction" or "step"). A UserWarning counts as the error, as torch's harness does.
ERROR_INPUTS = {
    "invalid param type": (lambda: _sample()[0], {}, TypeError, "construction"),
    "duplicate parameters in a group": (lambda: [_sample()[0]] * 2, {}, UserWarning, "construction"),
    "duplicate parameters across groups": (
        lambda: [{"params": p} for p in [_sample()[0]] * 2],
        {},
        ValueError,
        "construction",
    ),
    "Tensor lr must be 1-element": (
        lambda: [_sample()[0]],
        dict(lr=torch.tensor([0.001, 0.001])),
        ValueError,
        "construction",
    ),
    "params with/without names": (lambda: [("weight", _sample()[0]), _sample()[1]], {}, ValueError, "construction"),
    "groups with/without names": (
        lambda: [{"params": [_sample()[0]], "lr": 1e-2}, {"params": [("weight", _sample()[1])]}],
        {},
        ValueError,
        "construction",
    ),
    "only support 2D parameters": (lambda: [_with_grad(torch.rand(2, 3, 4))], {}, ValueError, "construction"),
    "unknown adjust_lr_fn": (
        lambda: [_with_grad(torch.rand(2, 3))],
        dict(adjust_lr_fn="arbitrary"),
        ValueError,
        "construction",
    ),
    "complex parameters": (lambda: [_with_grad(torch.rand(2, 3, dtype=torch.complex64))], {}, RuntimeError, "step"),
}

#: Cases where steepest.Muon deliberately behaves otherwise (one line each in the README's table).
DELIBERATE = {
    "only support 2D parameters": "pass",  # >= 3-D tensors are matrices (flattened, or batches)
}


def _error_outcome(make, case):
    build, kw, _, _ = ERROR_INPUTS[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        try:
            opt = make(build(), **kw)
            opt.step()
        except Exception as e:  # noqa: BLE001
            return type(e)
    return "pass"


@pytest.mark.parametrize("case", list(ERROR_INPUTS))
def test_pytorch_muon_error_inputs(case):
    expected = ERROR_INPUTS[case][2]
    theirs = _error_outcome(TORCH, case)
    mine = _error_outcome(ours, case)
    assert theirs is expected  # the case is rewritten faithfully: torch raises what its own test expects
    if case in DELIBERATE:
        assert mine == DELIBERATE[case]
    else:
        assert isinstance(mine, type) and issubclass(mine, expected), (case, mine, theirs)


def test_complex_parameters_refused_at_construction_with_torchs_type():
    """torch fails at the first step; steepest.Muon already at construction (nothing is half-set-up), with an
    error that is both torch's RuntimeError and steepest's usual ValueError."""
    with pytest.raises(RuntimeError, match="Muon does not support complex parameters"):
        ours([torch.rand(2, 3, dtype=torch.complex64)])
    with pytest.raises(ValueError):
        steepest.Muon([Parameter(torch.rand(2, 3, dtype=torch.complex64))])


def test_deliberate_differences_are_in_the_readme():
    import pathlib

    text = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "Differences from torch.optim.Muon" in text
    section = text.split("Differences from torch.optim.Muon", 1)[1].split("\n## ", 1)[0]
    for needle in ("3-D", "complex", "momentum", "AdamW", "eps"):
        assert needle in section, needle
