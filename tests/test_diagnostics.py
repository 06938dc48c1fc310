"""Metrics and the LayerMonitor probe: exact values, zero matrices, batching, hooks that never change training."""

import json
import math
import warnings

import pytest
import torch
from torch import nn

from steepest.diagnostics import (
    CSVSink,
    JSONLSink,
    LayerMonitor,
    MemorySink,
    TensorBoardSink,
    nuclear_rank,
    stable_rank,
)
from steepest.diagnostics.sinks import tensorboard_available


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _ref(X):
    s = torch.linalg.svdvals(X.double())
    return float((s**2).sum() / s[0] ** 2), float(s.sum() ** 2 / (s**2).sum())


def test_ranks_match_float64_reference_and_batch():
    X = torch.randn(3, 20, 12, generator=_gen(0))
    st, nr = stable_rank(X), nuclear_rank(X)
    for i in range(3):
        rs, rn = _ref(X[i])
        # float32 SVD vs float64 SVD: relative error ~1e-6, 1e-4 is a comfortable bound
        assert float(st[i]) == pytest.approx(rs, rel=1e-4)
        assert float(nr[i]) == pytest.approx(rn, rel=1e-4)
    assert float(stable_rank(torch.eye(5))) == pytest.approx(5.0)
    assert float(nuclear_rank(torch.diag(torch.tensor([1.0, 0.0, 0.0])))) == pytest.approx(1.0)


def test_estimate_method_close_to_exact():
    X = torch.randn(300, 200, generator=_gen(1))
    # the estimate path's 5% norm accuracy gives at most ~10% on a squared ratio; measured ~2% here
    assert float(stable_rank(X, "estimate", _gen(2))) == pytest.approx(float(stable_rank(X)), rel=0.1)
    assert float(nuclear_rank(X, "estimate", _gen(2))) == pytest.approx(float(nuclear_rank(X)), rel=0.1)


def test_zero_matrices_are_defined():
    Z = torch.zeros(2, 4, 3)
    for method in ("exact", "estimate"):
        assert torch.equal(stable_rank(Z, method), torch.zeros(2))  # documented: rank of 0 is 0
        assert torch.equal(nuclear_rank(Z, method), torch.zeros(2))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 4 * 4, 8)
        self.frozen = nn.Linear(8, 8)
        self.out = nn.Linear(8, 2)
        self.frozen.requires_grad_(False)

    def forward(self, x):
        h = torch.relu(self.conv(x)).flatten(1)
        return self.out(torch.tanh(self.frozen(torch.relu(self.fc(h)))))


def _train(monitor_sinks=None, steps=6, every=2, bad_step=None, **kw):
    torch.manual_seed(0)
    model = Net()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    mon = LayerMonitor(model, every=every, sinks=monitor_sinks, **kw).attach(opt) if monitor_sinks is not None else None
    gen = _gen(1)
    captured = []
    for t in range(steps):
        x = torch.randn(8, 2, 4, 4, generator=gen)
        if t == bad_step:
            x[0, 0, 0, 0] = float("nan")
        loss = model(x).square().mean()
        opt.zero_grad()
        loss.backward()
        if mon is not None:
            captured.append(bool(mon.capture.data))
        opt.step()
    return model, mon, captured


def test_monitor_never_changes_training_and_records(tmp_path):
    plain, _, _ = _train()
    sink = MemorySink()
    with pytest.warns(UserWarning, match="frozen"):
        watched, mon, captured = _train([sink, JSONLSink(tmp_path / "d.jsonl"), CSVSink(tmp_path / "d.csv")])
    for a, b in zip(plain.parameters(), watched.parameters()):
        assert torch.equal(a, b)  # bit-identical trajectory
    # activations are kept only on recorded steps (0, 2, 4)
    assert captured == [True, False, True, False, True, False]
    recs = sink.records
    assert {r["step"] for r in recs} == {0, 2, 4}
    assert {r["layer"] for r in recs} == {"conv", "fc", "out"}
    assert mon.skipped == {"frozen": "frozen (requires_grad=False)"}  # the real reason
    r = next(r for r in recs if r["layer"] == "conv")
    assert r["rows"] == 8 * 16 and r["shape"] == [3, 2, 3, 3]  # unfolded: N * H * W rows
    for key in LayerMonitor.FIELDS:
        assert key in r
    assert r["dd_winner"] in ("spectral", "frobenius")  # checked against references below
    assert r["update_fro"] > 0 and r["weight_fro"] > 0 and r["spec_sign_winner"] in ("spectral", "linf")
    lines = (tmp_path / "d.jsonl").read_text().splitlines()
    assert len(lines) == len(recs) and json.loads(lines[0])["layer"] == recs[0]["layer"]
    csv_lines = (tmp_path / "d.csv").read_text().splitlines()
    assert csv_lines[0].startswith("step,layer,kind,shape") and len(csv_lines) == len(recs) + 1
    mon.detach()
    assert not any(m._forward_hooks for m in watched.modules())


def _nr_st_float64(G, A):
    """nr(G) = ||G||_*^2/||G||_F^2 and st(A) = ||A||_F^2/||A||_op^2 from a float64 SVD (the definitions)."""
    g, a = torch.linalg.svdvals(G.double()), torch.linalg.svdvals(A.double())
    return float(g.sum() ** 2 / g.square().sum()), float(a.square().sum() / a[0] ** 2)


class Offset(nn.Module):
    """Inputs with a common offset: st(A) near 1, so the spectral side of the DD rule is reached."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        return self.fc(x.flatten(1)[:, :6] + 3.0)


@pytest.mark.filterwarnings("ignore:LayerMonitor step .* 'frozen' \\(frozen")  # Net's frozen layer, by design
@pytest.mark.parametrize("method", ["fast", "exact"])
def test_monitor_nr_st_and_winner_match_independent_reference(method):
    """nr(G) from the layer's own .grad and st(A) from its input captured by our own forward pre-hook
    (conv inputs unfolded by hand), both by float64 SVD; the DD winner is spectral iff nr(G) >= st(A)."""
    winners = {}
    for model_fn, names in ((Net, ("conv", "fc", "out")), (Offset, ("fc",))):
        torch.manual_seed(0)
        model = model_fn()
        seen = {}
        for name in names:
            getattr(model, name).register_forward_pre_hook(
                lambda m, args, name=name, seen=seen: seen.__setitem__(name, args[0].detach())
            )
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        sink = MemorySink()
        LayerMonitor(model, every=1, sinks=[sink], microbatches=0, method=method).attach(opt)
        gen = _gen(5)
        for step in range(4):
            out = model(torch.randn(16, 2, 4, 4, generator=gen))
            loss = (out - torch.randn(out.shape, generator=gen)).square().mean()
            opt.zero_grad()
            loss.backward()
            grads = {n: getattr(model, n).weight.grad.detach().clone() for n in names}
            ins = dict(seen)
            opt.step()
            recs = {r["layer"]: r for r in sink.records if r["step"] == step}
            assert set(recs) == set(names)
            for name, r in recs.items():
                x = ins[name]
                if name == "conv":
                    A = torch.nn.functional.unfold(x, 3, padding=1).transpose(1, 2).reshape(-1, 2 * 9)
                else:
                    A = x.reshape(-1, x.shape[-1])
                G = grads[name].reshape(grads[name].shape[0], -1)
                nr, st = _nr_st_float64(G, A)
                assert r["rows"] == A.shape[0]
                # monitor: float64 Gram eigenvalues of the float32 G (fast) or float32 SVD (exact), ~1e-6
                # relative at worst; st(A) from a float32 Gram / SVD, ~1e-6 relative; 1e-4 is 100x either
                assert r["nr_G"] == pytest.approx(nr, rel=1e-4), (step, name)
                assert r["st_A"] == pytest.approx(st, rel=1e-4), (step, name)
                assert r["grad_fro"] == pytest.approx(float(G.double().norm()), rel=1e-5)
                assert r["nr_st_ratio"] == pytest.approx(nr / st, rel=2e-4)
                assert 1.0 <= nr <= min(G.shape) and 1.0 <= st <= min(A.shape)  # both lie in [1, rank]
                assert abs(nr - st) > 1e-3 * st  # no near-tie: the winner is decided
                assert r["dd_winner"] == ("spectral" if nr >= st else "frobenius"), (step, name, nr, st)
                winners[model_fn.__name__, r["dd_winner"]] = True
    # both branches of the rule are exercised (each model reaches both across its layers and steps)
    assert {w for _, w in winners} == {"spectral", "frobenius"}


def test_conv_rows_match_manual_unfold():
    conv = nn.Conv2d(2, 3, 3, padding=1)
    x = torch.randn(4, 2, 5, 5, generator=_gen(3))
    opt = torch.optim.SGD(conv.parameters(), lr=0.0)
    sink = MemorySink()
    LayerMonitor(conv, every=1, sinks=[sink], microbatches=0).attach(opt)
    conv(x).sum().backward()
    opt.step()
    A = torch.nn.functional.unfold(x, 3, padding=1).transpose(1, 2).reshape(-1, 18)
    assert sink.records[0]["st_A"] == pytest.approx(_ref(A)[0], rel=1e-4)  # float32 vs float64 SVD


def test_nonfinite_is_flagged_not_raised():
    sink = MemorySink()
    with pytest.warns(UserWarning):
        _train([sink], steps=1, every=1, bad_step=0)
    assert any(r["nonfinite_activation"] or r["nonfinite_grad"] for r in sink.records)
    assert all(r["nr_G"] is None for r in sink.records if r["nonfinite_grad"])


def test_bad_input():
    with pytest.raises(ValueError, match="no supported layer"):
        LayerMonitor(nn.Sequential(nn.ReLU()), every=1)
    with pytest.raises(ValueError, match="every must be a positive int"):
        LayerMonitor(nn.Linear(2, 2), every=0)
    with pytest.raises(ValueError, match="microbatches must be 0 .* or an int >= 2"):
        LayerMonitor(nn.Linear(2, 2), microbatches=1)
    with pytest.raises(ValueError, match="method must be one of"):
        LayerMonitor(nn.Linear(2, 2), method="svd")
    assert float(stable_rank(torch.ones(3, 3))) == pytest.approx(1.0)  # rank one: st = 1
    assert float(nuclear_rank(torch.ones(3, 3))) == pytest.approx(1.0)


def test_tensorboard_sink_without_tensorboard(tmp_path, monkeypatch):
    import importlib.util
    import sys

    sinks = sys.modules[TensorBoardSink.__module__]
    # not installed (on this machine, or simulated): a clear ImportError naming the extra, no sink in the defaults
    real_find = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a, **k: None if name == "tensorboard" else real_find(name, *a, **k)
    )
    assert tensorboard_available() is False
    with pytest.raises(ImportError, match=r"needs the 'tensorboard' package: pip install 'steepest\[tensorboard\]'"):
        TensorBoardSink(tmp_path / "tb")
    got = sinks.default_sinks(tmp_path)
    assert [type(x).__name__ for x in got] == ["JSONLSink", "CSVSink"]
    assert not (tmp_path / "tensorboard").exists()


def test_tensorboard_sink_writes_scalars_through_summary_writer(tmp_path, monkeypatch):
    import sys
    import types

    sinks = sys.modules[TensorBoardSink.__module__]
    calls = []

    class FakeWriter:
        def __init__(self, log_dir):
            calls.append(("init", log_dir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def close(self):
            calls.append(("close",))

    fake = types.ModuleType("torch.utils.tensorboard")
    fake.SummaryWriter = FakeWriter
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", fake)  # the sink imports SummaryWriter from here
    monkeypatch.setattr(sinks, "tensorboard_available", lambda: True)
    sink = TensorBoardSink(tmp_path / "tb")
    assert calls == [("init", str(tmp_path / "tb"))]
    sink.write(
        {
            "step": 7,
            "layer": "fc",
            "kind": "Linear",
            "shape": [3, 4],
            "nr_G": 2.5,
            "st_A": 1,
            "nonfinite_grad": False,
            "nonfinite_activation": True,
            "c_1": None,
            "spec_sign_index": float("nan"),
            "update_op": float("inf"),
            "dd_winner": "spectral",
        }
    )
    sink.close()
    # grouped by metric (<metric>/<layer>); numbers as floats, booleans as 0/1, the DD verdict as 1 (spectral);
    # other strings, lists, None and non-finite values skipped; step passed through (the fake has no add_text)
    assert calls[1:] == [
        ("nr_G/fc", 2.5, 7),
        ("st_A/fc", 1.0, 7),
        ("nonfinite_grad/fc", 0.0, 7),
        ("nonfinite_activation/fc", 1.0, 7),
        ("dd_winner/fc", 1.0, 7),
        ("close",),
    ]
    assert all(type(c[1]) is float for c in calls[1:-1])
    # default_sinks adds it under <dir>/tensorboard when the package is there
    calls.clear()
    got = sinks.default_sinks(tmp_path)
    assert [type(x).__name__ for x in got] == ["JSONLSink", "CSVSink", "TensorBoardSink"]
    assert calls == [("init", str(tmp_path / "tensorboard"))]


# ------------------------------------------------------------------ fast paths against float64 references
from steepest.diagnostics.criteria import kfac_curvature, kfac_polar_curvature, noise_scales  # noqa: E402
from steepest.diagnostics.metrics import gram_singular_values  # noqa: E402
from steepest.geometry import dualize  # noqa: E402


def test_gram_singular_values_match_float64_svd():
    X = torch.randn(3, 40, 25, generator=_gen(7), dtype=torch.float64)
    L = torch.randn(30, 2, generator=_gen(8), dtype=torch.float64) @ torch.randn(
        2, 50, generator=_gen(9), dtype=torch.float64
    )
    for M in (X, X.mT, L):
        ref = torch.linalg.svdvals(M)
        s = gram_singular_values(M)
        # large values: relative ~eps; every value within sqrt(eps) s_1 ~ 1.5e-8 s_1 (Weyl on the Gram), 1e-7 slack
        assert torch.allclose(s, ref, rtol=1e-10, atol=1e-7 * float(ref.max()))
        assert torch.allclose(s.sum(-1), ref.sum(-1), rtol=1e-7)
    # float32 Gram: the top value keeps ~eps_32 relative accuracy (what the monitor's operator norms use)
    s32 = gram_singular_values(X.float(), torch.float32)
    assert torch.allclose(s32[..., 0].double(), torch.linalg.svdvals(X)[..., 0], rtol=1e-5)
    Y = X.clone()
    Y[1, 0, 0] = float("inf")
    out = gram_singular_values(Y)
    assert torch.isnan(out[1]).all() and torch.isfinite(out[0]).all()  # documented: NaN per bad matrix only
    for f in (stable_rank, nuclear_rank):
        assert torch.allclose(f(X, "gram"), f(X), rtol=1e-6)  # float64 Gram vs float64 SVD


def test_fast_spec_sign_parts_match_references():
    grads = torch.randn(4, 12, 30, generator=_gen(10), dtype=torch.float64)
    a, b = noise_scales(grads, 8, method="gram"), noise_scales(grads, 8)
    for g in a:
        assert a[g] == pytest.approx(b[g], rel=1e-9)  # same estimator, nuclear norms by Gram vs SVD (float64)
    A = torch.randn(64, 30, generator=_gen(11), dtype=torch.float64)
    for G in (
        torch.randn(12, 30, generator=_gen(12), dtype=torch.float64),  # wide: V = G^T U S^-1
        torch.randn(30, 12, generator=_gen(13), dtype=torch.float64),
    ):  # tall: V from G^T G
        A_ = A if G.shape[1] == 30 else A[:, :12]
        ref = kfac_curvature(dualize(G, "spectral", dtype=torch.float64), A_)
        # both float64; the reference's SVD polar and our eigh route differ by rounding only
        assert kfac_polar_curvature(G, A_) == pytest.approx(ref, rel=1e-9)
    assert kfac_polar_curvature(torch.zeros(3, 4), A[:, :4]) == 0.0


class Wide(nn.Module):
    """A layer with > GRAM_MAX_COLS inputs (block-Krylov st path) fed activations with a dominant direction."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(300, 6)

    def forward(self, x):
        return self.fc(x + 3.0)  # a common offset: the top singular value stands well clear of the bulk


@pytest.mark.parametrize("model_fn,shape", [(Net, (16, 2, 4, 4)), (Wide, (64, 300))])
def test_fast_monitor_matches_exact_monitor(model_fn, shape):
    recs = {}
    for method in ("fast", "exact"):
        torch.manual_seed(0)
        model = model_fn()
        opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        sink = MemorySink()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the frozen layer's skip warning
            mon = LayerMonitor(model, every=1, sinks=[sink], method=method, spec_sign_every=2).attach(opt)
            gen = _gen(1)
            for _ in range(3):
                loss = model(torch.randn(*shape, generator=gen)).square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        mon.detach()
        recs[method] = sink.records
    assert len(recs["fast"]) == len(recs["exact"]) > 0
    for f, e in zip(recs["fast"], recs["exact"]):
        assert (f["step"], f["layer"]) == (e["step"], e["layer"])
        # Gram-eigenvalue paths vs float32 SVD: both ~1e-6 relative; the wide layer's block-Krylov ||A||_op
        # on activations with a dominant direction converges to ~1e-7 (gap s_2/s_1 < 0.2); 1e-4 covers both
        for key in (
            "nr_G",
            "st_A",
            "grad_nuclear",
            "grad_fro",
            "weight_op",
            "update_op",
            "c_1",
            "c_star",
            "H_sign",
            "H_spec",
            "spec_sign_index",
        ):
            if e[key] is None or math.isnan(e[key]):  # NaN: documented noise-dominated index
                assert f[key] is None if e[key] is None else math.isnan(f[key]), key
            else:
                assert f[key] == pytest.approx(e[key], rel=1e-4, abs=1e-9), key
        assert f["dd_winner"] == e["dd_winner"] and f["spec_sign_winner"] == e["spec_sign_winner"]
    # the Spec-Sign index runs on every spec_sign_every-th record only (steps 0 and 2 here)
    assert {r["step"] for r in recs["fast"] if r["spec_sign_index"] is not None} == {0, 2}


def test_grouped_eigensolves_match_per_matrix_and_svd():
    from steepest.diagnostics._batched_metrics import gram, grouped_eigvalsh, singular_values

    Xs = {
        "a": torch.randn(30, 12, generator=_gen(20)),
        "b": torch.randn(12, 40, generator=_gen(21)),
        "c": torch.randn(50, 12, generator=_gen(22)),
        "d": torch.randn(7, 9, generator=_gen(23)),
    }
    bad = Xs["c"].clone()
    bad[3, 4] = float("inf")
    mats = {k: gram(X, torch.float64) for k, X in Xs.items()}
    mats["bad"] = gram(bad, torch.float64)
    mats["f32"] = gram(Xs["a"], torch.float32)  # same size, other dtype: its own group
    out = grouped_eigvalsh(mats, vectors=["a"])
    assert torch.isnan(out["bad"][0]).all() and out["bad"][1] is None  # documented: NaN for that matrix only
    for k, X in Xs.items():
        lam, V = out[k]
        # batched and single LAPACK calls run the same routine per matrix: equal up to float64 rounding
        assert torch.allclose(lam, torch.linalg.eigvalsh(mats[k]), rtol=1e-12, atol=1e-12 * float(lam.abs().max()))
        ref = torch.linalg.svdvals(X.double())
        s = singular_values(lam)[: ref.numel()]
        # float64 Gram: top values relative ~eps, all within sqrt(eps) s_1 ~ 1.5e-8 s_1 (Weyl); 1e-7 slack
        assert torch.allclose(s, ref, rtol=1e-10, atol=1e-7 * float(ref[0]))
        assert (V is not None) == (k == "a")
    lam, V = out["a"]
    assert torch.allclose(mats["a"] @ V, V * lam, atol=1e-10 * float(lam[-1]))  # eigenpairs, float64 rounding
    # float32 Gram: the top singular value keeps ~eps_32 relative accuracy (what the operator norms use)
    assert float(singular_values(out["f32"][0])[0]) == pytest.approx(
        float(torch.linalg.svdvals(Xs["a"].double())[0]), rel=1e-5
    )
    # the polar curvature fed with these eigenvectors equals its own eigendecomposition (same float64 Gram)
    A = torch.randn(64, 12, generator=_gen(24), dtype=torch.float64)
    assert kfac_polar_curvature(Xs["a"], A, eig=out["a"]) == pytest.approx(kfac_polar_curvature(Xs["a"], A), rel=1e-12)


def test_wide_layer_nonfinite_activation_flagged_by_its_norm():
    # > GRAM_MAX_COLS inputs and >= 2**16 entries: the fast path flags A from ||A||_F (no separate scan)
    fc = nn.Linear(300, 4)
    opt = torch.optim.SGD(fc.parameters(), lr=0.0)
    sink = MemorySink()
    LayerMonitor(fc, every=1, sinks=[sink], microbatches=0).attach(opt)
    for bad in (False, True):
        x = torch.randn(256, 300, generator=_gen(30))
        if bad:
            x[5, 7] = float("inf")
        opt.zero_grad()
        fc(x).nan_to_num(posinf=0.0, neginf=0.0).sum().backward()
        opt.step()
    ok, nan = sink.records
    assert not ok["nonfinite_activation"] and ok["st_A"] > 1 and nan["nonfinite_activation"] and nan["st_A"] is None
