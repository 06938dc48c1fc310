"""Generic contract tests over the optimizer database (tests/optim_db.py), as torch.optim does them.

Every entry must: decay exactly W <- (1 - lr wd) W on a zero gradient; continue bit-identically after
a state_dict round trip (also through ``torch.load(weights_only=True)``); return the closure's loss;
leave ``p.grad`` untouched; follow an lr scheduler; run step hooks; stay float64-accurate on float64
parameters; raise on a NaN gradient before changing anything; survive deepcopy and pickle; accept
``add_param_group`` after construction and leave itself unchanged when a group is rejected.
"""

from __future__ import annotations

import copy
import inspect
import io
import pickle

import numpy as np
import pytest
import torch

import steepest
from optim_db import DB, Net, loss_fn, reference_settings
from steepest.testing.reference import RefSteepest

IDS = [info.name for info in DB]
LR, WD = 0.01, 0.1


def _train(model, opt, steps, start=0):
    for k in range(start, start + steps):
        opt.zero_grad()
        loss_fn(model, k).backward()
        opt.step()


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_every_recipe_is_in_the_database():
    """Adding an optimizer class to steepest must add it to every generic test."""
    classes = {
        obj
        for obj in vars(steepest).values()
        if inspect.isclass(obj)
        and issubclass(obj, steepest.SteepestDescent)
        and obj is not steepest.DistributedSteepest
    }
    covered = set()
    for info in DB:
        opt = info.make(Net())
        covered |= {c for c in type(opt).__mro__ if c in classes}
    assert classes - covered == set()


@pytest.mark.parametrize("info", DB, ids=IDS)
def test_zero_gradient_is_exactly_weight_decay(info):
    model = Net()
    opt = info.make(model, lr=LR, weight_decay=WD)
    before = _params(model)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    decay = {id(p): 1.0 - g["lr"] * g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    assert {g["weight_decay"] for g in opt.param_groups} == {WD}  # the constructor's wd reaches every group
    for p, w in zip(model.parameters(), before):
        # The decay multiplies by the same float32 factor the test computes: bit-exact.
        assert torch.equal(p.detach(), w * decay[id(p)]), p.shape


@pytest.mark.parametrize("info", DB, ids=IDS)
def test_state_dict_round_trip_mid_run(info):
    model = Net()
    opt = info.make(model, lr=LR)
    _train(model, opt, 3)
    saved_model = copy.deepcopy(model.state_dict())
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    _train(model, opt, 3, start=3)
    expected = _params(model)

    model2 = Net(seed=1)  # other weights, overwritten by the checkpoint
    model2.load_state_dict(saved_model)
    opt2 = info.make(model2, lr=LR)
    buf.seek(0)
    opt2.load_state_dict(torch.load(buf, weights_only=True))  # plain data only: loads without pickle
    _train(model2, opt2, 3, start=3)
    assert _same(_params(model2), expected)


@pytest.mark.parametrize("info", DB, ids=IDS)
def test_closure_loss_and_grad_untouched(info):
    model = Net()
    opt = info.make(model, lr=LR)

    def closure():
        opt.zero_grad()
        loss = loss_fn(model, 0)
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert torch.is_tensor(loss) and float(loss.detach()) == pytest.approx(float(loss_fn(Net(), 0).detach()))
    grads = [p.grad.clone() for p in model.parameters()]
    before = _params(model)
    opt.step()
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert not _same(_params(model), before)  # the step did move the weights


@pytest.mark.parametrize("info", DB, ids=IDS)
def test_lr_scheduler_and_hooks(info):
    model = Net()
    opt = info.make(model, lr=LR)
    calls = []
    opt.register_step_pre_hook(lambda o, a, k: calls.append("pre"))
    opt.register_step_post_hook(lambda o, a, k: calls.append("post"))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 1.0 if k == 0 else 0.0)
    _train(model, opt, 1)
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [0.0] * len(opt.param_groups)
    before = _params(model)
    _train(model, opt, 1, start=1)
    assert _same(_params(model), before)  # lr 0 (and decay lr * wd = 0): nothing moves
    assert calls == ["pre", "post", "pre", "post"]


@pytest.mark.parametrize("info", DB, ids=IDS)
def test_float64_parameters_stay_float64_accurate(info):
    """One step on float64 parameters against the float64 reference written from the definitions."""
    model = Net(dtype=torch.float64)
    opt = info.make(model, lr=LR, weight_decay=WD)
    names = dict(zip(("lin1.weight", "mix", "lin2.weight"), model.matrices()))
    starts = {n: p.detach().clone() for n, p in names.items()}
    opt.zero_grad()
    loss_fn(model, 0).backward()
    grads = {n: p.grad.detach().clone() for n, p in names.items()}
    opt.step()
    for n, p in names.items():
        assert p.dtype == torch.float64
        settings = reference_settings(info, opt, n, p)
        group = next(g for g in opt.param_groups if any(q is p for q in g["params"]))
        settings.setdefault("tensor_mode", group["tensor_mode"])
        ref = RefSteepest(starts[n], lr=LR, weight_decay=WD, **settings).step(grads[n])
        step = p.detach().numpy() - starts[n].numpy() * (1 - LR * WD)
        ref_step = ref - starts[n].numpy() * (1 - LR * WD)
        # float64 SVDs and matmuls: ~1e-15 relative per operation, a few hundred operations -> 1e-10.
        tol = info.float64_tol or 1e-10
        assert np.abs(step - ref_step).max() <= tol * np.abs(ref_step).max(), n


@pytest.mark.parametrize("info", DB, ids=IDS)
def test_nan_gradient_raises_before_anything_changes(info):
    model = Net()
    opt = info.make(model, lr=LR, weight_decay=WD)
    _train(model, opt, 1)
    before = _params(model)
    state = copy.deepcopy(opt.state_dict())
    opt.zero_grad()
    loss_fn(model, 1).backward()
    model.lin2.weight.grad[0, 0] = float("nan")
    with pytest.raises(steepest.NonFiniteGradientError, match="lin2.weight"):
        opt.step()
    assert _same(_params(model), before)
    after = opt.state_dict()
    for k, st in state["state"].items():
        for key, v in st.items():
            assert torch.equal(torch.as_tensor(after["state"][k][key]), torch.as_tensor(v)), (k, key)


@pytest.mark.parametrize("info", DB, ids=IDS)
@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_deepcopy_and_pickle(info, how):
    model = Net()
    opt = info.make(model, lr=LR)
    _train(model, opt, 2)
    if how == "pickle" and getattr(getattr(opt, "chooser", None), "_capture", None):
        opt.remove_hooks()  # hooks are closures on the model: torch cannot pickle such a model at all
    model2, opt2 = copy.deepcopy((model, opt)) if how == "deepcopy" else pickle.loads(pickle.dumps((model, opt)))
    assert type(opt2) is type(opt) and opt2.nonfinite == opt.nonfinite
    _train(model, opt, 2, start=2)
    _train(model2, opt2, 2, start=2)
    if not getattr(opt, "_capture", None):  # an activation criterion's hooks stay on the original model
        assert _same(_params(model2), _params(model))
    if hasattr(opt, "geometries"):
        assert list(opt2.geometries()) == list(opt.geometries())
    opt2.zero_grad()
    loss_fn(model2, 9).backward()
    model2.lin1.weight.grad[0, 0] = float("inf")
    with pytest.raises(
        steepest.NonFiniteGradientError, match=r"non-finite gradient \(NaN or Inf\) in .*no parameter was changed"
    ):
        opt2.step()
    extra = torch.nn.Parameter(torch.randn(3, 5))
    opt2.add_param_group(dict(params=[extra]))
    assert opt2.param_groups[-1]["params"][0] is extra


@pytest.mark.parametrize("info", DB, ids=IDS)
def test_add_param_group_after_construction_and_atomic_rejection(info):
    model = Net()
    opt = info.make(model, lr=LR)
    n = len(opt.param_groups)
    vector = torch.nn.Parameter(torch.randn(5))
    with pytest.raises(ValueError, match="needs a matrix"):
        opt.add_param_group(dict(params=[vector], norm="spectral", p=None))
    with pytest.raises(ValueError, match="lr"):
        opt.add_param_group(dict(params=[torch.nn.Parameter(torch.randn(3, 3))], lr=float("inf")))
    assert len(opt.param_groups) == n  # rejected groups are not kept
    extra = torch.nn.Parameter(torch.randn(3, 5))
    opt.add_param_group(
        dict(
            params=[extra, vector],
            names=["extra", "vector"],
            norm="linf",
            p=None,
            lr=0.1,
            step_size="fixed",
            scale_rule="none",
            momentum=0.0,
            nesterov=False,
            weight_decay=0.0,
        )
    )  # Muon's default decay is 0.1 (torch.optim.Muon's)
    x0, v0 = extra.detach().clone(), vector.detach().clone()
    opt.zero_grad()
    loss_fn(model, 0).backward()
    extra.grad, vector.grad = torch.ones(3, 5), -torch.ones(5)
    opt.step()
    chosen = opt.geometries().get("extra", "linf") if hasattr(opt, "geometries") else "linf"
    if chosen == "linf":  # Adaptive may pick another geometry for the new matrix
        torch.testing.assert_close(vector.detach(), v0 + 0.1, rtol=0, atol=1e-6)
    assert not torch.equal(extra.detach(), x0)
