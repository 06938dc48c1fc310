"""The layer oracle (steepest.diagnostics.oracle) against closed forms, and the layer-oracle experiment."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from steepest.diagnostics import oracle as O
from steepest.geometry import dualize


class Quadratic(nn.Module):
    """Seed 000's f(X) = 1/2 ||A X - B||_F^2 as a module with one parameter X (float64)."""

    def __init__(self, A, B, X0):
        super().__init__()
        self.A, self.B = A, B
        self.X = nn.Parameter(X0.clone())

    def loss(self):
        return 0.5 * (self.A @ self.X - self.B).square().sum()


def _quadratic(seed=0, N=40, n=12, k=7):
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(N, n, generator=g, dtype=torch.float64) * torch.linspace(0.2, 3.0, n, dtype=torch.float64)
    B = torch.randn(N, k, generator=g, dtype=torch.float64)
    X0 = torch.randn(n, k, generator=g, dtype=torch.float64)
    return Quadratic(A, B, X0)


GEOMS = (("spectral", None), ("linf", None), ("frobenius", None), ("schatten", 3.0), ("schatten", 8.0))


def test_line_search_matches_closed_form_on_seed_000_quadratic():
    model = _quadratic()
    G = model.A.T @ (model.A @ model.X.detach() - model.B)
    search = O.LineSearch()
    res = O.layer_oracle(model, model.loss, {"X": G}, geometries=GEOMS, search=search)["X"]
    assert search.decrease_rtol() < 1e-5  # the documented bound for the defaults (7.6e-6)
    for norm, p in GEOMS:
        D = dualize(G, norm, p, dtype=torch.float64)
        exact = float((G * D).sum()) ** 2 / (2 * float((model.A @ D).square().sum()))  # <G,D>^2 / (2||AD||^2)
        eta_star = float((G * D).sum()) / float((model.A @ D).square().sum())
        got = res[O.geometry_key(norm, p)]
        # the documented tolerance, plus float64 round-off of a loss of size L0 (~1e3) at 1e-13
        assert got.decrease == pytest.approx(exact, rel=search.decrease_rtol() + 1e-12, abs=1e-9)
        assert got.decrease <= exact * (1 + 1e-12)  # a line search can never beat the exact minimum
        assert got.eta == pytest.approx(eta_star, rel=search.eta_factor() - 1)
        assert not got.at_edge
        assert got.evaluations == search.grid + search.golden


def test_grid_only_search_is_looser_and_documented():
    model = _quadratic(seed=3)
    G = model.A.T @ (model.A @ model.X.detach() - model.B)
    search = O.LineSearch(grid=25, golden=0)
    got = O.layer_oracle(model, model.loss, {"X": G}, geometries=(("spectral", None),), search=search)["X"]["spectral"]
    D = dualize(G, "spectral", dtype=torch.float64)
    exact = float((G * D).sum()) ** 2 / (2 * float((model.A @ D).square().sum()))
    assert abs(got.decrease - exact) <= search.decrease_rtol() * exact
    assert search.decrease_rtol() > 1e-3  # a 25-point grid alone is much coarser than the refined search


def test_decrease_at_given_step_size_is_exact():
    model = _quadratic(seed=1)
    G = model.A.T @ (model.A @ model.X.detach() - model.B)
    res = O.layer_oracle(model, model.loss, {"X": G}, geometries=(("linf", None),), step_sizes={"linf": 1e-3})
    D = torch.sign(G)
    L0 = float(model.loss().detach())
    X1 = model.X.detach() - 1e-3 * D
    want = L0 - 0.5 * float((model.A @ X1 - model.B).square().sum())
    assert res["X"]["linf"].decrease_at_lr == pytest.approx(want, rel=1e-12)  # same float64 arithmetic


def _bits(t):
    return t.detach().contiguous().view(torch.int32 if t.dtype == torch.float32 else torch.int64).clone()


def test_weights_and_buffers_restored_bit_for_bit():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    x, y = torch.randn(8, 2, 6, 6), torch.randint(0, 3, (8,))
    lossf = lambda: nn.functional.cross_entropy(model(x), y)  # noqa: E731 (train-mode BN: forwards move buffers)
    lossf().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.ndim >= 2}
    before = {n: _bits(t) for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_floating_point()}
    res = O.layer_oracle(model, lossf, grads, step_sizes=lambda name, key, shape: 0.01)
    assert set(res) == {"0.weight", "4.weight"}
    after = {n: _bits(t) for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_floating_point()}
    assert before.keys() == after.keys()
    for n in before:
        assert torch.equal(before[n], after[n]), n
    assert any(p.decrease > 0 for probes in res.values() for p in probes.values())


def test_restored_when_the_closure_raises():
    model = _quadratic()
    saved = _bits(model.X)
    calls = {"n": 0}

    def bad():
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("boom")
        return model.loss()

    G = torch.ones_like(model.X)
    with pytest.raises(RuntimeError, match="boom"):
        O.layer_oracle(model, bad, {"X": G})
    assert torch.equal(_bits(model.X), saved)


def test_transposed_view_steps_the_conv1d_layout():
    """A (in, out) weight probed with transposed=True equals the (out, in) weight probed plainly."""
    g = torch.Generator().manual_seed(5)
    A = torch.randn(30, 6, generator=g, dtype=torch.float64)
    Y = torch.randn(30, 4, generator=g, dtype=torch.float64)
    W = torch.randn(4, 6, generator=g, dtype=torch.float64)
    plain, tr = nn.Module(), nn.Module()
    plain.w, tr.w = nn.Parameter(W.clone()), nn.Parameter(W.T.clone())
    lp = lambda: 0.5 * (A @ plain.w.T - Y).square().sum()  # noqa: E731
    lt = lambda: 0.5 * (A @ tr.w - Y).square().sum()  # noqa: E731
    Gp = torch.autograd.grad(lp(), plain.w)[0]
    Gt = torch.autograd.grad(lt(), tr.w)[0]
    rp = O.layer_oracle(plain, lp, {"w": Gp}, geometries=GEOMS)["w"]
    rt = O.layer_oracle(tr, lt, {"w": Gt}, geometries=GEOMS, views={"w": {"transposed": True}})["w"]
    rn = O.layer_oracle(tr, lt, {"w": Gt}, geometries=(("schatten", 3.0),))["w"]
    for key in rp:
        assert rt[key].decrease == pytest.approx(rp[key].decrease, rel=1e-9)  # same problem, float64 round-off
    # without the flag the Schatten direction is the same matrix transposed too (Schatten norms are
    # transpose-invariant), so the view matters for the flattening of >2-D tensors, not here:
    assert rn["schatten-3"].decrease == pytest.approx(rp["schatten-3"].decrease, rel=1e-9)


def test_conv_kernels_use_the_flattened_matrix_view():
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 5, 3, bias=False).double()
    x = torch.randn(4, 3, 7, 7, dtype=torch.float64)
    t = torch.randn(4, 5, 5, 5, dtype=torch.float64)
    lossf = lambda: 0.5 * (conv(x) - t).square().mean()  # noqa: E731
    G = torch.autograd.grad(lossf(), conv.weight)[0]
    res = O.layer_oracle(conv, lossf, {"weight": G}, geometries=(("spectral", None),), step_sizes={"spectral": 0.05})
    P = dualize(G.reshape(5, -1), "spectral", dtype=torch.float64).reshape(G.shape)
    with torch.no_grad():
        L0 = float(lossf())
        w0 = conv.weight.clone()
        conv.weight.sub_(0.05 * P)
        want = L0 - float(lossf())
        conv.weight.copy_(w0)
    assert res["weight"]["spectral"].decrease_at_lr == pytest.approx(want, rel=1e-10)  # same float64 ops
    assert res["weight"]["spectral"].alignment == pytest.approx(float(torch.linalg.svdvals(G.reshape(5, -1)).sum()))


def test_winners_spearman_and_bad_input():
    res = {"a": {"spectral": {"decrease": 2.0}, "frobenius": {"decrease": 1.0}},
           "b": {"spectral": {"decrease": 1.0}, "frobenius": {"decrease": 1.01}},
           "c": {"spectral": {"decrease": 0.0}, "frobenius": {"decrease": 0.0}}}
    assert O.oracle_winners(res) == {"a": "spectral", "b": "frobenius", "c": "none"}
    assert O.oracle_winners(res, rtol=0.02)["b"] == "tie"
    assert O.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6*2/(4*15)
    assert O.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)  # ties: average ranks
    assert math.isnan(O.spearman([1, 2], [2, 1]))
    assert O.parse_geometry("schatten-4") == ("schatten", 4.0)
    assert O.parse_geometry("schatten-inf") == ("spectral", None)
    with pytest.raises(ValueError, match="unknown geometry"):
        O.parse_geometry("sign")
    with pytest.raises(ValueError, match="golden"):
        O.LineSearch(golden=1)
    model = _quadratic()
    with pytest.raises(ValueError, match="names no parameter"):
        O.layer_oracle(model, model.loss, {"Y": torch.zeros(3)})
    with pytest.raises(ValueError, match="shape"):
        O.layer_oracle(model, model.loss, {"X": torch.zeros(3)})
    with pytest.raises(ValueError, match="step size"):
        O.layer_oracle(model, model.loss, {"X": torch.ones_like(model.X)}, step_sizes={"spectral": -1.0})
    with pytest.raises(TypeError):
        O.layer_oracle("model", model.loss, {})
