"""LayerMonitor never goes silent: step(closure), GPT-2 Conv1D, depthwise convs, gradient checkpointing,
compiled models, resume, attaching twice, layers that miss a gradient once. Each test failed before the fix."""

import errno
import json
import math
import os
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

import monitor_scenario as S  # noqa: E402  (tests/ is on sys.path under pytest's rootdir conftest)
from steepest.diagnostics import CSVSink, JSONLSink, LayerMonitor, MemorySink


def _nr_st(G, A):
    """float64 SVD references: nr(G) = ||G||_*^2/||G||_F^2, st(A) = ||A||_F^2/||A||_op^2."""
    g, a = torch.linalg.svdvals(G.double()), torch.linalg.svdvals(A.double())
    return float(g.sum() ** 2 / g.square().sum()), float(a.square().sum() / a[0] ** 2)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(6, 12), nn.Linear(12, 3)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def _batches(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(8, 6, generator=g) for _ in range(n)]


def test_step_with_closure_records_every_layer():
    # Lightning's automatic optimization calls optimizer.step(closure): the gradients exist only inside step()
    torch.manual_seed(0)
    model, sink = MLP(), MemorySink()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = LayerMonitor(model, every=2, sinks=[sink]).attach(opt)
    for x in _batches(4):

        def closure(x=x):
            opt.zero_grad()
            loss = model(x).square().mean()
            loss.backward()
            return loss

        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "skipped" warning
            opt.step(closure)
    assert [(r["step"], r["layer"]) for r in sink.records] == [(0, "a"), (0, "b"), (2, "a"), (2, "b")]
    assert all(
        r["nr_G"] is not None and r["update_fro"] > 0 and r["spec_sign_index"] is not None
        for r in sink.records
        if r["step"] == 0
    )
    assert mon.skipped == {}


class Conv1D(nn.Module):
    """GPT-2's transformers.pytorch_utils.Conv1D: y = x W + b, W stored (in, out)."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.3)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return torch.addmm(self.bias, x.reshape(-1, x.shape[-1]), self.weight).reshape(*x.shape[:-1], self.nf)


def test_gpt2_conv1d_is_monitored_as_its_transposed_matrix():
    torch.manual_seed(1)
    fc = Conv1D(10, 4)  # in 4, out 10: the matrix is W^T (10, 4)
    sink = MemorySink()
    opt = torch.optim.SGD(fc.parameters(), lr=0.1)
    LayerMonitor(fc, every=1, sinks=[sink], microbatches=2).attach(opt)
    x = torch.randn(3, 5, 4)
    fc(x).square().sum().backward()
    G = fc.weight.grad.clone()
    W0 = fc.weight.detach().clone()
    opt.step()
    (r,) = sink.records
    nr, st = _nr_st(G.T, x.reshape(-1, 4))
    assert r["kind"] == "Conv1D" and r["rows"] == 15 and r["shape"] == [4, 10]
    # float64 Gram eigenvalues for nr(G) (~1e-8), float32 Gram for st(A) (~1e-6): 1e-4 is a safe bound
    assert r["nr_G"] == pytest.approx(nr, rel=1e-4) and r["st_A"] == pytest.approx(st, rel=1e-4)
    assert r["weight_op"] == pytest.approx(float(torch.linalg.matrix_norm(W0 - 0.1 * G, 2)), rel=1e-4)
    assert r["microbatch_size"] == 1 and r["spec_sign_index"] is not None  # per-sample dY^T A works on W^T


def test_real_transformers_conv1d_is_monitored():
    pytest.importorskip("transformers")
    from transformers.pytorch_utils import Conv1D as HFConv1D

    torch.manual_seed(2)
    layer, sink = HFConv1D(8, 5), MemorySink()
    opt = torch.optim.SGD(layer.parameters(), lr=0.0)
    LayerMonitor(layer, every=1, sinks=[sink], microbatches=0).attach(opt)
    x = torch.randn(4, 3, 5)
    layer(x).sum().backward()
    opt.step()
    assert [r["kind"] for r in sink.records] == ["Conv1D"]
    assert sink.records[0]["nr_G"] == pytest.approx(_nr_st(layer.weight.grad.T, x.reshape(-1, 5))[0], rel=1e-4)


def test_depthwise_and_conv1d_are_reported_or_monitored_in_one_line():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv1d(2, 4, 3, padding=1)  # monitored now (unfolded like a Conv2d)
            self.dw = nn.Conv2d(4, 4, 3, groups=4, padding=1)  # depthwise: skipped with the real reason
            self.gr = nn.Conv2d(4, 4, 1, groups=2)  # grouped
            self.c3 = nn.Conv3d(1, 1, 1)  # not supported
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            h = self.c1(x)  # (N, 4, L)
            h = self.gr(self.dw(h.unsqueeze(-1))).squeeze(-1)
            return self.fc(h.mean(-1)) + 0 * self.c3(h[:, :1, :, None, None]).sum()

    torch.manual_seed(3)
    model, sink = Net(), MemorySink()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    mon = LayerMonitor(model, every=1, sinks=[sink], microbatches=0).attach(opt)
    x = torch.randn(5, 2, 7)
    model(x).sum().backward()
    with pytest.warns(UserWarning) as got:
        opt.step()
    lines = [str(w.message) for w in got if "LayerMonitor" in str(w.message)]
    assert len(lines) == 1  # one line lists every skipped layer and why
    assert "'dw' (depthwise Conv2d (groups=4): each filter sees one input channel" in lines[0]
    assert "'gr' (grouped Conv2d (groups=2)" in lines[0] and "'c3' (Conv3d is not monitored" in lines[0]
    assert set(mon.skipped) == {"dw", "gr", "c3"} and mon.skip_report() == lines[0]
    assert {r["layer"] for r in sink.records} == {"c1", "fc"}
    c1 = next(r for r in sink.records if r["layer"] == "c1")
    A = torch.nn.functional.unfold(x.unsqueeze(2), (1, 3), padding=(0, 1)).transpose(1, 2).reshape(-1, 6)
    assert c1["rows"] == 35 and c1["st_A"] == pytest.approx(_nr_st(torch.eye(2), A)[1], rel=1e-4)  # float32 Gram


class Ckpt(nn.Module):
    def __init__(self, reentrant):
        super().__init__()
        self.mlp, self.reentrant = MLP(), reentrant

    def forward(self, x):
        return checkpoint(self.mlp, x, use_reentrant=self.reentrant)


@pytest.mark.parametrize("reentrant", [False, True])
def test_gradient_checkpointing_counts_rows_once_and_keeps_spec_sign(reentrant):
    x = _batches(1)[0].requires_grad_(reentrant)  # reentrant checkpoints need an input that requires grad
    out = {}
    for ck in (False, True):
        torch.manual_seed(4)
        model, sink = (Ckpt(reentrant) if ck else MLP()), MemorySink()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        LayerMonitor(model, every=1, sinks=[sink], spec_sign_every=1).attach(opt)
        model(x).square().mean().backward()
        opt.step()
        out[ck] = {r["layer"].split(".")[-1]: r for r in sink.records}
    for layer in ("a", "b"):
        plain, ck = out[False][layer], out[True][layer]
        assert ck["rows"] == plain["rows"] == 8
        assert ck["spec_sign_index"] is not None and ck["c_1"] is not None
        for k in ("nr_G", "st_A", "c_1", "c_star", "spec_sign_index"):
            assert ck[k] == pytest.approx(plain[k], rel=1e-6, nan_ok=True)  # the same tensors: same numbers (an
            # index of NaN is "noise-dominated" at this tiny batch, in both runs)


def test_a_layer_missing_a_gradient_once_is_recorded_later():
    torch.manual_seed(5)
    model, sink = MLP(), MemorySink()
    extra = nn.Linear(6, 3)
    model.extra = extra
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = LayerMonitor(model, every=1, sinks=[sink], microbatches=0).attach(opt)
    for t, x in enumerate(_batches(3)):
        opt.zero_grad(set_to_none=True)
        y = model(x) + (extra(x) if t != 0 else 0)  # extra is unused at step 0 only
        y.square().mean().backward()
        if t == 0:
            with pytest.warns(UserWarning, match=r"'extra' \(no gradient at this step"):
                opt.step()
        else:
            opt.step()
    assert [r["step"] for r in sink.records if r["layer"] == "extra"] == [1, 2]
    assert mon.skipped == {}


def test_output_gradients_are_kept_only_on_records_with_the_spec_sign_index():
    """dY (the microbatch gradients' input) is held only on records whose Spec-Sign index is due (every
    spec_sign_every-th record; none with microbatches=0); A on every record; nothing between records."""
    torch.manual_seed(6)
    # every=2, spec_sign_every=2: steps 0, 2, 4 recorded, the index on steps 0 and 4 (None: nothing captured)
    for microbatches, due in ((4, {0: True, 1: None, 2: False, 3: None, 4: True}), (0, {0: False, 1: None, 2: False})):
        model = MLP()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        mon = LayerMonitor(model, every=2, microbatches=microbatches, spec_sign_every=2).attach(opt)
        held = {}
        for t, x in enumerate(_batches(max(due) + 1)):
            opt.zero_grad(set_to_none=True)
            model(x).square().mean().backward()
            calls = [c for cs in mon.capture.data.values() for c in cs]
            held[t] = None if not calls else all(c[1] is not None for c in calls)
            assert not calls or all(c[0] is not None for c in calls)
            opt.step()
        mon.detach()
        assert held == due, microbatches


def test_attaching_twice_does_not_double_count_and_a_second_optimizer_is_refused():
    model, sink = MLP(), MemorySink()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = LayerMonitor(model, every=2, sinks=[sink], microbatches=0).attach(opt)
    mon.attach(opt)
    for x in _batches(4):
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    assert mon.step == 4 and sorted({r["step"] for r in sink.records}) == [0, 2]
    with pytest.raises(ValueError, match="already attached to another optimizer"):
        mon.attach(torch.optim.SGD(model.parameters(), lr=0.1))


def _run(steps, tmp, state=None, start=0, warm_start=False):
    torch.manual_seed(6)
    model = MLP()
    if state is not None:
        model.load_state_dict(state["model"])
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    mon = LayerMonitor(
        model,
        every=2,
        sinks=[JSONLSink(tmp / "d.jsonl"), CSVSink(tmp / "d.csv")],
        microbatches=0,
        warm_start=warm_start,
    )
    mon.attach(opt)
    if state is not None:
        mon.load_state_dict(state["monitor"])
    saved = None
    for t in range(start, steps):
        opt.zero_grad()
        model(_batches(steps)[t]).sum().backward()
        opt.step()
        if t == 2:
            saved = {"model": {k: v.clone() for k, v in model.state_dict().items()}, "monitor": mon.state_dict()}
    mon.detach()
    return saved


@pytest.mark.parametrize("warm_start", [False, True])
def test_resume_continues_step_numbers_without_duplicates(tmp_path, warm_start):
    ref, run = tmp_path / "ref", tmp_path / "run"
    _run(8, ref, warm_start=warm_start)
    saved = _run(6, run, warm_start=warm_start)  # "killed" after step 5; its checkpoint was taken after step 2
    assert saved["monitor"]["step"] == 3
    # warm starts: the kept top singular vectors travel in state_dict, so the records match bit for bit
    assert bool(saved["monitor"]["warm"]) == warm_start
    _run(8, run, saved, start=3, warm_start=warm_start)
    steps = [json.loads(line)["step"] for line in (run / "d.jsonl").read_text().splitlines()]
    assert steps == [0, 0, 2, 2, 4, 4, 6, 6]  # not restarted at 0, step 4 not written twice
    assert (run / "d.jsonl").read_text() == (ref / "d.jsonl").read_text()  # the uninterrupted run's records
    assert (run / "d.csv").read_text() == (ref / "d.csv").read_text()
    with pytest.raises(ValueError, match="LayerMonitor.state_dict"):
        LayerMonitor(MLP()).load_state_dict({"step": -1})


@pytest.mark.slow  # torch.compile: 9-16 s measured on 2 shared cores
def test_compiled_model_is_monitored_under_the_plain_names():
    torch.manual_seed(7)
    model, sink = MLP(), MemorySink()
    compiled = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    LayerMonitor(compiled, every=2, sinks=[sink], microbatches=2, spec_sign_every=1).attach(opt)
    for x in _batches(3):
        opt.zero_grad()
        compiled(x).square().mean().backward()
        opt.step()
    assert [(r["step"], r["layer"]) for r in sink.records] == [(0, "a"), (0, "b"), (2, "a"), (2, "b")]
    assert all(r["rows"] == 8 and r["spec_sign_index"] is not None for r in sink.records)


def test_warm_started_norms_match_float64_svd_and_stay_lower_bounds():
    """warm_start=True: ||W||_op, ||dW||_op and st(A) against float64 SVDs on every record of a short
    training whose weights move slowly (SGD, lr 0.05), layers wide enough for the Krylov path (n = 48)."""
    torch.manual_seed(11)
    model = nn.Sequential(nn.Linear(48, 64), nn.Tanh(), nn.Linear(64, 48))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sink = MemorySink()
    mon = LayerMonitor(model, every=1, sinks=[sink], microbatches=0, warm_start=True).attach(opt)
    gen = torch.Generator().manual_seed(12)
    seen = []
    for _ in range(6):
        x = torch.randn(256, 48, generator=gen) + 0.5  # offset: a dominant activation direction
        before = [m.weight.detach().double().clone() for m in (model[0], model[2])]
        h = torch.tanh(model[0](x))
        model[2](h).square().mean().backward()
        opt.step()
        opt.zero_grad()
        after = [m.weight.detach().double() for m in (model[0], model[2])]
        seen.append((before, after, [x.double(), h.detach().double()]))
    mon.detach()
    assert len(sink.records) == 12 and mon.metrics.warm.vectors  # vectors kept after the first (exact) record
    for i, r in enumerate(sink.records):
        before, after, ins = seen[r["step"]]
        j = i % 2
        W, dW, A = after[j], after[j] - before[j], ins[j]
        op_w, op_d = (float(torch.linalg.svdvals(X)[0]) for X in (W, dW))
        s = torch.linalg.svdvals(A)
        st = float((s**2).sum() / s[0] ** 2)
        # Krylov values are Ritz values: never above the exact s_1 (1e-6: float32 Gram rounding), and from
        # the last record's vector plus a Gaussian column within 1e-4 (measured <= 2e-6 here; charlm: 1.4e-4)
        for est, ref in ((r["weight_op"], op_w), (r["update_op"], op_d)):
            assert ref * (1 - 1e-4) <= est <= ref * (1 + 1e-6)
        assert st * (1 - 1e-6) <= r["st_A"] <= st * (1 + 1e-4)


# ------------------------------------------------------------------------------------------ frozen records
def _same(a, b, rel):
    """Equal records: strings, bools, shapes and None exactly; NaN where NaN; numbers to ``rel`` relative."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        if a is None or b is None or isinstance(a, (bool, str)) or isinstance(b, (bool, str)):
            return False
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return abs(a - b) <= rel * max(abs(a), abs(b))
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("config", list(S.CONFIGS))
def test_records_equal_the_frozen_records(config):
    """Every method (fast, exact, estimate), with and without warm starts, a row cap, no Spec-Sign index and
    step(closure): the records and kept warm vectors equal the ones frozen before the monitor was split by
    concern (tests/monitor_scenario.py wrote tests/data/monitor_records_<kernel key>.json, one file per kind of
    machine: kernel_env.py).

    1e-12 relative: the split moved code, not arithmetic, so the same operations run in the same order and
    give the same bits on the machine that froze them; 1e-12 leaves room only for float64 reassociation
    (~1e-16 per operation) and catches any change of a float32 product (round-off 6e-8), an eigensolve, a
    Krylov start or step count, or a sketch seed, which all move the records by >= 1e-8."""
    path = S.data_file()
    if not path.exists():  # other float kernels (torch build, instruction set, CPU vendor, AMX) give other last bits
        pytest.skip(
            f"no records frozen for this machine ({S.environment()}); frozen for {S.frozen_environments()}: "
            "write them with `python tests/monitor_scenario.py` on the code they should guard"
        )
    frozen = json.loads(path.read_text())
    assert frozen["environment"] == S.environment()
    want, got = frozen["configs"][config], S.records(config)
    assert got["fields"] == want["fields"] and got["step"] == want["step"]
    assert len(got["rows"]) == len(want["rows"])
    for g, w in zip(got["rows"], want["rows"]):
        bad = [f for f, x, y in zip(want["fields"], g, w) if not _same(x, y, 1e-12)]
        assert not bad, (config, w[:2], {f: (x, y) for f, x, y in zip(want["fields"], g, w) if f in bad})
    assert got["warm"].keys() == want["warm"].keys()
    for k in want["warm"]:
        assert _same(got["warm"][k], want["warm"][k], 1e-12), (config, k)


# ------------------------------------------------------------------------------ side effects never fail a step
class _FullDisk:
    """A sink whose disk is full (what /dev/full gives every write)."""

    path = "/data/full.jsonl"

    def write(self, record):
        raise OSError(errno.ENOSPC, "No space left on device", self.path)

    def close(self):
        pass


def _train_steps(n, sinks=None, fail=None):
    """n SGD steps of MLP (each ``opt.step()`` called exactly once); the monitor (every=1) when ``sinks``."""
    torch.manual_seed(8)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    mon = None if sinks is None else LayerMonitor(model, every=1, sinks=sinks, microbatches=2).attach(opt)
    if fail is not None:
        fail(mon)
    after = []
    for x in _batches(n, seed=9):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()  # raises nothing: a failing side effect is a warning
        after.append([p.detach().clone() for p in model.parameters()])
    return after, mon


def test_a_failing_sink_warns_once_is_disabled_and_the_step_is_applied_once(tmp_path):
    (tmp_path / "dir.jsonl").mkdir()  # a JSONL target that is a directory
    (tmp_path / "dir.csv").mkdir()
    bad = [JSONLSink(tmp_path / "dir.jsonl"), CSVSink(tmp_path / "dir.csv"), _FullDisk()]
    if Path("/dev/full").exists():  # a real full disk: every write fails with ENOSPC
        bad.append(JSONLSink("/dev/full"))
    if os.geteuid() != 0:  # a read-only file (root writes through the mode bits)
        (tmp_path / "ro.jsonl").write_text("")
        (tmp_path / "ro.jsonl").chmod(0o444)
        bad.append(JSONLSink(tmp_path / "ro.jsonl"))
    good = MemorySink()
    ref, _ = _train_steps(3)
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        seen, mon = _train_steps(3, [bad[0], good, *bad[1:]])
    for step in range(3):  # after one step and after each later one: the steps of a run without the monitor
        for a, b in zip(ref[step], seen[step]):
            assert torch.equal(a, b), step  # applied exactly once (twice would differ), training untouched
    lines = [str(w.message) for w in got if "LayerMonitor" in str(w.message)]
    assert len(lines) == len(bad)  # once per failing sink, not once per record (3 steps x 2 layers)
    assert all(issubclass(w.category, RuntimeWarning) for w in got if "LayerMonitor" in str(w.message))
    for sink, line in zip(bad, lines):  # in sink order; each names its file and the error
        assert str(sink.path) in line and "this sink is disabled" in line, line
    assert "IsADirectoryError" in lines[0] and "IsADirectoryError" in lines[1]
    assert "OSError" in lines[2] and "No space left on device" in lines[2]
    # the working sink got every record; the failed ones are listed and skipped from then on
    assert [(r["step"], r["layer"]) for r in good.records] == [(s, n) for s in range(3) for n in ("a", "b")]
    assert len(mon.out.failed) == len(bad) and mon.sinks[1] is good
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # closing does not warn again
        mon.detach()


def test_a_failing_rewind_or_metric_is_a_warning_and_the_step_stands(tmp_path, monkeypatch):
    class NoRewind(MemorySink):
        path = tmp_path / "gone.jsonl"

        def rewind(self, step):
            raise PermissionError(errno.EACCES, "Permission denied", str(self.path))

    sink = NoRewind()
    mon = LayerMonitor(MLP(), every=1, sinks=[sink])
    with pytest.warns(RuntimeWarning, match=r"rewind to NoRewind\('.*gone.jsonl'\) failed \(PermissionError"):
        mon.load_state_dict({"step": 4})
    assert mon.step == 4 and mon.out.failed

    # a metric that raises at step 1: that step is not recorded, with a warning; the step itself is applied once
    def fail(mon):
        real = mon.metrics.solve

        def solve(layers, step, spec):
            if step == 1:
                raise torch.linalg.LinAlgError("linalg.eigh: the algorithm failed to converge")
            return real(layers, step, spec)

        monkeypatch.setattr(mon.metrics, "solve", solve)

    ref, _ = _train_steps(3)
    good = MemorySink()
    with pytest.warns(RuntimeWarning, match=r"LayerMonitor step 1: not recorded \(_?LinAlgError: linalg.eigh"):
        seen, mon = _train_steps(3, [good], fail=fail)
    assert all(torch.equal(a, b) for s in range(3) for a, b in zip(ref[s], seen[s]))
    assert sorted({r["step"] for r in good.records}) == [0, 2] and mon.step == 3


class _FreeingSGD(torch.optim.Optimizer):
    """Plain SGD that frees the gradients inside its step (as a ZeRO-style wrapper does after using them).
    Not a subclass of torch's SGD: a subclass's step calls SGD.step, whose patched wrapper runs the hooks again."""

    def __init__(self, params, lr):
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad, alpha=-group["lr"])
                p.grad = None


def test_gradients_are_read_before_a_step_without_closure():
    # torch passes the optimizer itself as args[0] to a step pre-hook: it was taken for a closure, so every
    # record's gradients were read after the step, and an optimizer that frees them got none recorded
    torch.manual_seed(10)
    model, sink = MLP(), MemorySink()
    opt = _FreeingSGD(model.parameters(), lr=0.1)
    LayerMonitor(model, every=1, sinks=[sink], microbatches=2).attach(opt)
    grads = []
    for x in _batches(2):
        model(x).square().mean().backward()
        grads.append({n: model.get_submodule(n).weight.grad.clone() for n in ("a", "b")})
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "no gradient at this step" warning
            opt.step()
    assert [(r["step"], r["layer"]) for r in sink.records] == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]
    for r in sink.records:  # the gradient that was there before the step; 1e-5: float32 sums in another order
        assert r["grad_fro"] == pytest.approx(float(grads[r["step"]][r["layer"]].double().norm()), rel=1e-5)


class _QKV(nn.Module):
    """q, k, v projections of one input (as in Llama), narrow (24 inputs: A's Gram) and wide (300: Krylov); h sees
    a slice of the same input (same memory address, another shape: not the same activations)."""

    def __init__(self, share: bool):
        super().__init__()
        self.share = share
        self.q, self.k, self.v = nn.Linear(24, 8), nn.Linear(24, 8), nn.Linear(24, 8)
        self.wq, self.wk = nn.Linear(300, 6), nn.Linear(300, 6)
        self.h = nn.Linear(12, 8)

    def forward(self, x, z):
        same = (lambda t: t) if self.share else (lambda t: t.clone())  # clones: equal values, other tensors
        y = self.q(same(x)) * self.k(same(x)) + self.v(same(x)) + self.h(same(x)[:, :12])
        return y.square().mean() + (self.wq(same(z)) * self.wk(same(z))).mean()


@pytest.mark.parametrize("warm_start", [False, True])
def test_layers_fed_the_same_activations_get_the_records_of_separate_inputs(warm_start, monkeypatch):
    """The activations' Gram (and, without warm starts, the wide layers' ||A||_op) is computed once for layers
    fed the same tensor: the records are those of the same values held in separate tensors, bit for bit."""
    import steepest.diagnostics._fast as M

    out, calls = {}, {True: [], False: []}
    for share in (True, False):
        real_gram, real_top = M.gram, M.top_singular_pair
        monkeypatch.setattr(
            M, "gram", lambda X, dtype, c=calls[share], g=real_gram: c.append(X.dtype == dtype) or g(X, dtype)
        )
        monkeypatch.setattr(M, "top_singular_pair", lambda *a, c=calls[share], t=real_top: c.append("krylov") or t(*a))
        torch.manual_seed(12)
        model, sink = _QKV(share), MemorySink()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        LayerMonitor(model, every=1, sinks=[sink], spec_sign_every=2, warm_start=warm_start).attach(opt)
        gen = torch.Generator().manual_seed(13)
        for _ in range(3):
            opt.zero_grad()
            model(torch.randn(64, 24, generator=gen) + 1.0, torch.randn(256, 300, generator=gen) + 0.5).backward()
            opt.step()
        out[share] = json.dumps(sink.records)  # exact: every float by repr, NaN as NaN
        monkeypatch.setattr(M, "gram", real_gram)
        monkeypatch.setattr(M, "top_singular_pair", real_top)
    assert out[True] == out[False]
    assert len(json.loads(out[True])) == 18
    # per step: A's float32 Gram once for q, k, v, not 3 times (the others here are G's, float64); ||A||_op of
    # the wide pair once without warm starts (with them each layer keeps its own vector)
    assert calls[True].count(True) == calls[False].count(True) - 3 * 2
    assert calls[True].count("krylov") == 3 * (2 if warm_start else 1) and calls[False].count("krylov") == 3 * 2
