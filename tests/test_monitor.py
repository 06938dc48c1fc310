"""LayerMonitor never goes silent: step(closure), GPT-2 Conv1D, depthwise convs, gradient checkpointing,
compiled models, resume, attaching twice, layers that miss a gradient once. Each test failed before the fix."""

import json
import warnings

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

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
    assert all(r["nr_G"] is not None and r["update_fro"] > 0 and r["spec_sign_index"] is not None
               for r in sink.records if r["step"] == 0)
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
            self.c1 = nn.Conv1d(2, 4, 3, padding=1)            # monitored now (unfolded like a Conv2d)
            self.dw = nn.Conv2d(4, 4, 3, groups=4, padding=1)  # depthwise: skipped with the real reason
            self.gr = nn.Conv2d(4, 4, 1, groups=2)             # grouped
            self.c3 = nn.Conv3d(1, 1, 1)                        # not supported
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            h = self.c1(x)                                      # (N, 4, L)
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
    mon = LayerMonitor(model, every=2, sinks=[JSONLSink(tmp / "d.jsonl"), CSVSink(tmp / "d.csv")], microbatches=0,
                       warm_start=warm_start)
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
    assert len(sink.records) == 12 and mon._warm  # vectors kept after the first (exact) record
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
