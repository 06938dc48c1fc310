"""Adaptive picks the geometry theory says wins, and does at least as well as the better fixed geometry."""

import copy
import functools
import math

import pytest
import torch
from torch import nn

import steepest
from optim_db import CLASS_DB
from steepest.diagnostics import criteria as C
from steepest.geometry import dual_norm, dualize


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ seed 000's quadratic
def quadratic(kind, d=16, N=64):
    """f(W) = 1/(2N) ||A W^T - Y||^2 with A of high (st = d) or low (st ~ 1) stable rank."""
    g = _gen(0)
    U = torch.linalg.qr(torch.randn(N, d, generator=g, dtype=torch.float64)).Q
    V = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64)).Q
    s = (
        torch.ones(d, dtype=torch.float64)
        if kind == "high"
        else torch.cat([torch.tensor([10.0]), torch.full((d - 1,), 0.3)]).double()
    )
    A = (U * s) @ V.T * N**0.5
    return A, torch.randn(N, d, generator=g, dtype=torch.float64)


def run_quadratic(A, Y, make, steps=15):
    lin = nn.Linear(A.shape[1], Y.shape[1], bias=False).double()
    nn.init.zeros_(lin.weight)
    opt = make(lin)
    losses = []
    for _ in range(steps):
        loss = 0.5 * (lin(A) - Y).square().sum() / A.shape[0]
        losses.append(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses, opt


@pytest.mark.parametrize("kind,winner", [("low", "spectral"), ("high", "frobenius")])
def test_quadratic_picks_davis_drusvyatskiy_winner(kind, winner):
    A, Y = quadratic(kind)
    N = A.shape[0]
    L = {
        "spectral": float(torch.linalg.matrix_norm(A, "fro")) ** 2 / N,  # L_* = ||A||_F^2 / N
        "frobenius": float(torch.linalg.matrix_norm(A, 2)) ** 2 / N,
    }  # L_F = ||A||_op^2 / N
    G0 = -(A.T @ Y).T / N
    theory = "spectral" if C.davis_drusvyatskiy(G0, A)["winner"] == "spectral" else "frobenius"
    assert theory == winner
    fixed = {
        g: run_quadratic(
            A, Y, lambda m, g=g: steepest.SteepestDescent(m.parameters(), lr=1 / L[g], norm=g, step_size="dual")
        )[0]
        for g in L
    }
    losses, opt = run_quadratic(
        A,
        Y,
        lambda m: steepest.Adaptive(
            m.parameters(),
            lr=1.0,
            model=m,
            criterion="dd",
            candidates=("spectral", "frobenius"),
            every=1,
            step_size="dual",
            lr_multipliers={g: 1 / L[g] for g in L},
        ),
    )
    assert opt.history[0]["geometry"] == winner
    best = min(fixed.values(), key=lambda v: v[-1])
    # float64 trajectories; 1e-9 relative absorbs round-off when Adaptive follows the same steps
    assert all(a <= b * (1 + 1e-9) for a, b in zip(losses, best))


# ------------------------------------------------------------------ sparse gradient, large vs small batch
N_SP, R_SP = 32, 4


def sparse_problem():
    """Row-sparse +-1 weight error (few active units) and heterogeneous input variances c_j: the
    population gradient Delta diag(c) is sparse; sign(Delta) is the Newton direction."""
    Delta = torch.zeros(N_SP, N_SP, dtype=torch.float64)
    Delta[:R_SP] = torch.randint(0, 2, (R_SP, N_SP), generator=_gen(0)).double() * 2 - 1
    return Delta, torch.logspace(-1, 1, N_SP, dtype=torch.float64)


def run_sparse(B, make, steps=20):
    Delta, c = sparse_problem()
    lin = nn.Linear(N_SP, N_SP, bias=False).double()
    with torch.no_grad():
        lin.weight.copy_(Delta)
    opt, gen, losses = make(lin), _gen(1), []
    for _ in range(steps):
        x = torch.randn(B, N_SP, generator=gen, dtype=torch.float64) * c.sqrt()
        losses.append(float(0.5 * (lin.weight.detach() ** 2 * c).sum()))  # population loss
        loss = 0.5 * lin(x).square().sum() / B
        opt.zero_grad()
        loss.backward()
        opt.step()
    return losses, opt


def theory_winner(B, draws=16):
    """Seed 002's index from population quantities: G = Delta diag(c), c_g by Monte Carlo, H = I (x) diag(c)."""
    Delta, c = sparse_problem()
    G = Delta * c
    gen = _gen(9)
    noise = {"linf": 0.0, "spectral": 0.0}
    H = {"linf": 0.0, "spectral": 0.0}
    for _ in range(draws):
        x = torch.randn(B, N_SP, generator=gen, dtype=torch.float64) * c.sqrt()
        G_hat = Delta @ (x.T @ x) / B
        for g in noise:
            noise[g] += math.sqrt(B) * float(dual_norm(G_hat - G, g)) / draws
            D = dualize(G_hat, g)
            H[g] += float((D * D * c).sum()) / draws
    return C.spec_sign_index(G, noise["spectral"], noise["linf"], B, H["linf"], H["spectral"]).winner


@pytest.mark.parametrize("B,winner", [(2048, "linf"), (8, "spectral")])
def test_sparse_gradient_batch_size_decides(B, winner):
    assert theory_winner(B) == winner
    fixed = {
        g: run_sparse(B, lambda m, g=g: steepest.SteepestDescent(m.parameters(), lr=0.5, norm=g))[0]
        for g in ("linf", "spectral")
    }
    losses, opt = run_sparse(
        B,
        lambda m: steepest.Adaptive(
            m.parameters(), lr=0.5, model=m, candidates=("spectral", "linf"), every=5, rms_match=False
        ),
    )
    assert opt.history[0]["geometry"] == winner and opt.history[0]["source"] == "spec_sign"
    best = min(fixed.values(), key=lambda v: sum(v))
    # at least as good as the better fixed geometry over the whole curve (sum of losses) and at the
    # end; 1e-9 relative covers float64 round-off when the same steps are taken
    assert sum(losses) <= sum(best) * (1 + 1e-9)
    assert losses[-1] <= best[-1] * (1 + 1e-9) + 1e-12


# ------------------------------------------------------------------ whole models, checkpoints, hysteresis
class TinyGPT(nn.Module):
    def __init__(self, vocab=11, d=16, T=8):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(T, d))
        self.ln = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.fc = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx):
        x = self.emb(idx) + self.pos[: idx.shape[1]]
        q, k, v = self.qkv(self.ln(x)).chunk(3, -1)
        att = torch.softmax((q @ k.mT) / 4 + torch.triu(torch.full((idx.shape[1],) * 2, -1e9), 1), -1)
        x = x + self.proj(att @ v)
        x = x + self.fc2(torch.relu(self.fc(self.ln(x))))
        return self.head(x)


def train_gpt(opt_fn, steps, model=None, opt=None, start=0):
    torch.manual_seed(0)
    model = model or TinyGPT()
    opt = opt or opt_fn(model)
    gen = _gen(7)
    data = torch.randint(0, 11, (steps, 8, 9), generator=gen)
    for t in range(start, steps):
        idx = data[t]
        loss = nn.functional.cross_entropy(model(idx[:, :-1]).reshape(-1, 11), idx[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model, opt


@pytest.mark.parametrize("with_model", [False, True])
def test_param_groups_construction_and_state_dict_round_trip(with_model):
    def make(m):
        return steepest.Adaptive(steepest.param_groups(m), lr=0.01, every=2, model=m if with_model else None)

    full_model, full_opt = train_gpt(make, 8)
    assert any(g["algorithm"] == "adamw" for g in full_opt.param_groups)
    geoms = full_opt.geometries()
    assert set(geoms) == {"pos", "qkv.weight", "proj.weight", "fc.weight", "fc2.weight"}  # 2-D pos: a matrix
    assert all(g in C.GEOMETRIES for g in geoms.values())
    sources = {h["param"]: h["source"] for h in full_opt.history}
    assert sources["pos"] == "gradient-proxy"  # no module feeds it: gradient-only proxy
    assert sources["fc.weight"] == ("spec_sign" if with_model else "gradient-proxy")
    # half way, checkpoint, restore into fresh objects, continue: identical weights and history
    half_model, half_opt = train_gpt(make, 4)
    sd_model, sd_opt = copy.deepcopy(half_model.state_dict()), copy.deepcopy(half_opt.state_dict())
    torch.manual_seed(1)
    resumed = TinyGPT()
    resumed.load_state_dict(sd_model)
    opt2 = make(resumed)
    opt2.load_state_dict(sd_opt)
    assert opt2.history == half_opt.history
    resumed, opt2 = train_gpt(make, 8, model=resumed, opt=opt2, start=4)
    for a, b in zip(full_model.parameters(), resumed.parameters()):
        assert torch.equal(a, b)
    assert opt2.history == full_opt.history


def test_hysteresis_prevents_flapping():
    W = nn.Parameter(torch.zeros(6, 6, dtype=torch.float64))
    opt = steepest.Adaptive([W], lr=0.0, every=1, margin=0.1, patience=3, candidates=("spectral", "frobenius"))
    gen = _gen(3)
    for _ in range(30):  # pure noise gradients: scores hover near each other
        W.grad = torch.randn(6, 6, generator=gen, dtype=torch.float64)
        opt.step()
    switches = sum(h["switched"] for h in opt.history[1:])
    raw_changes = sum(a["winner"] != b["winner"] for a, b in zip(opt.history, opt.history[1:]))
    assert switches <= raw_changes // 3 + 1  # a switch needs 3 consecutive wins


def test_adaptive_bad_arguments():
    W = [nn.Parameter(torch.zeros(3, 3))]
    with pytest.raises(ValueError, match=r"candidates must be distinct names from .*got \('spectral', 'l2'\)"):
        steepest.Adaptive(W, candidates=("spectral", "l2"))
    with pytest.raises(ValueError, match="candidates must be distinct"):
        steepest.Adaptive(W, candidates=("spectral", "spectral"))
    with pytest.raises(ValueError, match="model="):
        steepest.Adaptive(W, criterion="dd")
    with pytest.raises(ValueError, match="microbatches must be an int >= 2, got 1"):
        steepest.Adaptive(W, microbatches=1)


# ------------------------------------------------------------------ choices alone make the difference
@pytest.mark.parametrize(
    "geometry, fixed_class", [("spectral", "SpecGD"), ("linf", "SignSGD"), ("frobenius", "SteepestDescent")]
)
def test_single_candidate_is_the_fixed_optimizer_bit_for_bit(geometry, fixed_class):
    """With one candidate (and no RMS matching) Adaptive takes exactly the fixed optimizer's steps: the same
    kernel, the same settings; only the choice could differ, and there is none."""
    g = torch.Generator().manual_seed(0)
    W0, grads = torch.randn(12, 8, generator=g), [torch.randn(12, 8, generator=g) for _ in range(6)]
    out = []
    for make in (
        lambda ps, **kw: steepest.Adaptive(
            ps, candidates=(geometry,), initial=geometry, every=2, rms_match=False, **kw
        ),
        functools.partial(CLASS_DB[fixed_class].make, "single_candidate"),
    ):
        W = torch.nn.Parameter(W0.clone())
        opt = make([W], lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.1)
        for G in grads:
            W.grad = G.clone()
            opt.step()
        out.append(W.detach())
    assert torch.equal(out[0], out[1])


def test_rms_match_spectral_is_specgd_bit_for_bit_and_matches_rms():
    """rms_match="spectral": spectral layers step exactly as SpecGD (same lr, Muon's scale rule), and a
    frobenius or sign step gets the RMS of a full-rank spectral step on the same block."""
    g = torch.Generator().manual_seed(1)
    W0, grads = torch.randn(24, 8, generator=g), [torch.randn(24, 8, generator=g) for _ in range(5)]
    kw = dict(lr=0.02, momentum=0.95, nesterov=True, scale_rule="muon", method="polar_express")
    out = []
    for make in (
        lambda ps: steepest.Adaptive(ps, candidates=("spectral",), rms_match="spectral", **kw),
        lambda ps: steepest.SpecGD(ps, **kw),
    ):
        W = torch.nn.Parameter(W0.clone())
        opt = make([W])
        for G in grads:
            W.grad = G.clone()
            opt.step()
        out.append(W.detach())
    assert torch.equal(out[0], out[1])
    rms = {}
    for geom in ("spectral", "frobenius", "linf"):
        W = torch.nn.Parameter(W0.clone())
        opt = steepest.Adaptive(
            [W],
            candidates=(geom,),
            initial=geom,
            rms_match="spectral",
            lr=0.02,
            momentum=0.0,
            scale_rule="muon",
            **({"method": "svd"} if geom == "spectral" else {}),
        )
        W.grad = grads[0].clone()
        opt.step()
        rms[geom] = float((W.detach() - W0).pow(2).mean().sqrt())
    # a full-rank spectral step under Muon's rule has RMS lr / sqrt(fan_in) = 0.02 / sqrt(8); the SVD polar
    # is exact to float32 rounding (~1e-7 relative), so 1e-5 leaves room for it and nothing else
    assert rms["spectral"] == pytest.approx(0.02 / math.sqrt(8), rel=1e-5)
    assert rms["frobenius"] == pytest.approx(rms["spectral"], rel=1e-5)
    assert rms["linf"] == pytest.approx(rms["spectral"], rel=1e-5)
    with pytest.raises(ValueError, match="rms_match must be True, False or 'spectral'"):
        steepest.Adaptive([W], rms_match="unit")


def _ulp_perturbed(t: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """t with every entry moved by one ulp up or down at random."""
    up = torch.rand(t.shape, generator=g) < 0.5
    return torch.where(
        up, torch.nextafter(t, torch.full_like(t, math.inf)), torch.nextafter(t, torch.full_like(t, -math.inf))
    )


@pytest.mark.parametrize("criterion", ["proxy", "dd"])
def test_decisions_do_not_change_under_one_ulp(criterion):
    """Decisions deterministic across machines and thread counts: a 1-ulp change of every gradient entry
    (and input, for the activation criterion) leaves every decision of 16 layers x 8 decisions unchanged."""
    runs = []
    for perturb in (False, True):
        torch.manual_seed(0)
        model = nn.Sequential(*[m for _ in range(4) for m in (nn.Linear(16, 16, bias=False), nn.Tanh())])
        kw = dict(model=model, criterion="dd", candidates=("spectral", "frobenius")) if criterion == "dd" else {}
        opt = steepest.Adaptive(model.parameters(), lr=0.01, every=1, **kw)
        g = torch.Generator().manual_seed(1)
        for step in range(8):
            x = torch.randn(4 + 8 * (step % 3), 16, generator=torch.Generator().manual_seed(step))
            x = _ulp_perturbed(x, g) if perturb else x
            opt.zero_grad()
            model(x).square().mean().backward()
            if perturb:
                for p in model.parameters():
                    p.grad = _ulp_perturbed(p.grad, g)
            opt.step()
        runs.append([(h["step"], h["param"], h["geometry"]) for h in opt.history])
    assert runs[0] == runs[1]
    assert len({r[2] for r in runs[0]}) >= 1 and len(runs[0]) == 4 * 8


@pytest.mark.parametrize("eps", [1e-12, -1e-12, 0.05, -0.05])
def test_a_near_tie_never_switches_the_first_decision(eps):
    """Scores 1 +- 1e-12 apart (rounding decides which is larger) must give the same choice: the layer
    keeps ``initial`` unless the winner beats it by 1 + margin (0.05 < margin = 0.1 here too)."""
    from steepest.diagnostics.criteria import GeometryScores

    W = torch.nn.Parameter(torch.randn(6, 4))
    opt = steepest.Adaptive([W], lr=0.01, every=1, candidates=("spectral", "frobenius"))
    dec = {"spectral": 1.0, "frobenius": 1.0 + eps}
    scores = GeometryScores(decrease=dec, snr=dict(dec), winner=max(dec, key=dec.get))
    opt.chooser._scores = lambda p, G, state: (scores, "test")
    W.grad = torch.randn(6, 4)
    opt.step()
    assert opt.geometries() == {"group0.0": "spectral"}
    scores.decrease["frobenius"] = scores.snr["frobenius"] = 1.2  # a real win: switches at once
    scores.winner = "frobenius"
    opt2 = steepest.Adaptive(
        [torch.nn.Parameter(torch.randn(6, 4))], lr=0.01, every=1, candidates=("spectral", "frobenius")
    )
    opt2.chooser._scores = opt.chooser._scores
    opt2.param_groups[0]["params"][0].grad = torch.randn(6, 4)
    opt2.step()
    assert opt2.geometries() == {"group0.0": "frobenius"}


def test_oracle_adaptive_takes_the_measured_winner_and_then_the_fixed_step():
    """criterion='oracle' (the upper bound): each layer's geometry is the one whose measured one-step
    decrease on the held-out batch is largest; the step itself is the fixed optimizer's."""
    from steepest.diagnostics.oracle import layer_oracle, oracle_winners

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.Tanh(), nn.Linear(16, 4, bias=False))
    x, y = torch.randn(64, 8), torch.randn(64, 4)
    xh, yh = torch.randn(64, 8), torch.randn(64, 4)
    held_out = lambda: (model(xh) - yh).square().mean()  # noqa: E731
    opt = steepest.Adaptive(
        model.parameters(),
        lr=0.01,
        every=1,
        model=model,
        criterion="oracle",
        oracle_loss=held_out,
        rms_match=False,
        oracle_step="best",
    )
    (model(x) - y).square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    expected = oracle_winners(layer_oracle(model, held_out, grads, geometries=[(g, None) for g in opt.candidates]))
    W0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    assert opt.geometries() == {"group0.0": expected["0.weight"], "group0.1": expected["2.weight"]}
    assert all(h["source"] == "oracle" for h in opt.history)
    for n, p in model.named_parameters():  # the probes restored the weights; then one plain fixed step
        D = steepest.dualize(grads[n], expected[n])
        torch.testing.assert_close(p.detach(), W0[n] - 0.01 * D, rtol=0, atol=1e-6)  # float32 dualizer
    with pytest.raises(ValueError, match="oracle_loss"):
        steepest.Adaptive(model.parameters(), criterion="oracle", model=model)


def test_oracle_at_the_own_step_takes_the_candidate_step_that_lowers_the_held_out_loss_most():
    """oracle_step='own': each layer's candidate steps are the ones the optimizer would take (momentum,
    Nesterov, lr, RMS match); the layer takes the one with the largest measured held-out decrease, and the
    step taken is exactly that candidate step (weights, momentum untouched by the probes)."""
    from steepest.diagnostics.oracle import step_decreases

    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.Tanh(), nn.Linear(16, 4, bias=False))
    x, y = torch.randn(64, 8), torch.randn(64, 4)
    xh, yh = torch.randn(64, 8), torch.randn(64, 4)
    held_out = lambda: (model(xh) - yh).square().mean()  # noqa: E731
    kw = dict(lr=0.05, momentum=0.9, nesterov=True, scale_rule="muon", rms_match="spectral")
    opt = steepest.Adaptive(
        model.parameters(),
        every=2,
        model=model,
        criterion="oracle",
        oracle_loss=held_out,
        candidates=("spectral", "frobenius", "linf"),
        method="svd",
        **kw,
    )
    for t in range(3):
        opt.zero_grad()
        (model(x + 0.1 * t) - y).square().mean().backward()
        W0 = {n: p.detach().clone() for n, p in model.named_parameters()}
        bufs = {
            n: opt.state[p]["momentum_buffer"].clone() if "momentum_buffer" in opt.state[p] else None
            for n, p in model.named_parameters()
        }
        if t % 2 == 0:  # a decision step: compute the candidate steps by hand through fixed optimizers
            cands = {}
            for geom in opt.candidates:
                probe_model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.Tanh(), nn.Linear(16, 4, bias=False))
                probe_model.load_state_dict(model.state_dict())
                for (_, q), (_, p) in zip(probe_model.named_parameters(), model.named_parameters()):
                    q.grad = p.grad.clone()
                fixed = steepest.Adaptive(
                    probe_model.parameters(),
                    candidates=(geom,),
                    initial=geom,
                    **({"method": "svd"} if geom == "spectral" else {}),
                    **kw,
                )
                for (_, q), b in zip(probe_model.named_parameters(), bufs.values()):
                    if b is not None:
                        fixed.state[q]["momentum_buffer"] = b.clone()
                fixed.step()
                for n, q in probe_model.named_parameters():
                    cands.setdefault(n, {})[geom] = W0[n] - q.detach()
            dec = step_decreases(model, held_out, cands)
            expected = {n: max(d, key=d.get) for n, d in dec.items()}
        opt.step()
        assert opt.geometries() == {"group0.0": expected["0.weight"], "group0.1": expected["2.weight"]}
        for n, p in model.named_parameters():
            if t % 2 == 0:
                # the same float32 kernel computed both; only the order of the W - S subtraction differs
                torch.testing.assert_close(p.detach(), W0[n] - cands[n][expected[n]], rtol=0, atol=1e-6)
    assert {h["source"] for h in opt.history} == {"oracle"} and len(opt.history) == 4


def test_step_decreases_restores_weights_and_buffers_bit_for_bit():
    from steepest.diagnostics.oracle import step_decreases

    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(5, 5), nn.BatchNorm1d(5), nn.Linear(5, 2))
    x = torch.randn(16, 5)
    loss = lambda: model(x).square().mean()  # noqa: E731  (train mode: BatchNorm updates its running stats)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    W = model[0].weight.detach()
    d = step_decreases(model, loss, {"0.weight": {"zero": torch.zeros_like(W), "grad-ish": 0.1 * W}})
    assert d["0.weight"]["zero"] == 0.0  # the same weights, the same batch: the same loss
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="names no parameter"):
        step_decreases(model, loss, {"nope": {}})


@pytest.mark.parametrize("products", ["float32", "bf16"])
@pytest.mark.parametrize("d", [96, 320])
def test_fast_dd_scores_agree_with_the_float64_svd_reference(d, products, monkeypatch):
    """The Davis-Drusvyatskiy decreases from the cheap norms (Gram eigenvalues, block Krylov above
    DD_GRAM_MAX) against exact float64 SVD norms on a layer-like A (N x d, decaying spectrum), with ||A||_op's
    products in float32 (no native bf16, float64 inputs) and in bf16 (native bf16: criteria.dd_product_dtype),
    forced here so both paths run on every machine."""
    from steepest.diagnostics import criteria as C

    low = None if products == "float32" else torch.bfloat16
    monkeypatch.setattr(C, "dd_product_dtype", lambda A: low)
    # ||A||_op's error on Delta_F = ||G||_F^2 / (2 ||A||_op^2 / N): float32 ~1e-6; bf16 rounds A and each product
    # to 2^-9 relative, measured <= 2.8e-4 on Delta_F (the errors average over N d terms); 2e-3 = 2^-9, one
    # entry's worst rounding, is 7x the measured error and 50x below a wrong Gram (half the rows: 2x)
    rel = 1e-5 if low is None else 2e-3

    g = torch.Generator().manual_seed(d)
    A = (torch.randn(1024, d, generator=g) * torch.logspace(0, -1.5, d)) @ torch.linalg.qr(
        torch.randn(d, d, generator=g)
    ).Q
    G = torch.randn(48, d, generator=g)
    fast = C.dd_scores(G, A).decrease
    Ad, Gd = A.double(), G.double()
    exact = C.score_geometries(
        {"spectral": float(torch.linalg.svdvals(Gd).sum()), "frobenius": float(Gd.norm())},
        None,
        None,
        {"spectral": float(Ad.norm()) ** 2 / 1024, "frobenius": float(torch.linalg.svdvals(Ad)[0]) ** 2 / 1024},
    ).decrease
    # spectral: float32 Gram eigenvalues and sums, ~1e-6 relative; 1e-5 leaves a margin for the squares
    assert fast["spectral"] == pytest.approx(exact["spectral"], rel=1e-5)
    # a rank-1 gradient (up to its float32 rounding): the small singular values are ~1e-7 s_1, which a
    # float32 Gram would turn into ~3e-4 s_1 each; G's Gram is formed in float64, so ||G||_* is exact to ~1e-7
    u, v = torch.randn(48, 1, generator=g), torch.randn(1, d, generator=g)
    nuc2 = 2 * C.dd_scores(u @ v, A).decrease["spectral"] * (float(A.double().norm()) ** 2 / 1024)  # Delta = s^2/(2L)
    # 1e-5: the decrease also carries the float32 ||A||_F (~1e-6); a float32 Gram of G would be ~1e-2 off
    assert math.sqrt(nuc2) == pytest.approx(float(torch.linalg.svdvals((u @ v).double()).sum()), rel=1e-5)
    low_side = 1e-6 if low is None else rel  # float32: a Ritz value never above ||A||_op; bf16: up to rounding
    if d <= C.DD_GRAM_MAX:
        assert fast["frobenius"] == pytest.approx(exact["frobenius"], rel=rel)
    else:  # the block Krylov ||A||_op is never above the exact value and within 2.5%: Delta_F 0..5.1% high
        assert exact["frobenius"] * (1 - low_side) <= fast["frobenius"] <= exact["frobenius"] * 1.051
        A_off = A + 3.0 * torch.randn(d, generator=g)  # activations with a shared offset: the mean start
        s_fast = C.dd_scores(G, A_off).decrease["frobenius"]
        s_exact = float(G.double().norm()) ** 2 / (2 * float(torch.linalg.svdvals(A_off.double())[0]) ** 2 / 1024)
        assert s_exact * (1 - low_side) <= s_fast <= s_exact * 1.051
    A[3, 4] = float("nan")
    assert C.dd_scores(G, A) is None  # a non-finite activation: no DD verdict (the caller falls back)


def test_dd_product_dtype_follows_the_device_and_keeps_float64(monkeypatch):
    """bf16 products for ||A||_op only where bf16 matmul is native (STEEPEST_BF16 simulates both kinds) and
    never for a float64 A (a float64 model keeps its decisions' float32 products: Adaptive's frozen float64
    trajectories are unchanged)."""
    from steepest.diagnostics import criteria as C
    from steepest.linalg import precision

    try:
        for forced, want in (("1", torch.bfloat16), ("0", None)):
            monkeypatch.setenv("STEEPEST_BF16", forced)
            precision.clear_cache()
            assert C.dd_product_dtype(torch.zeros(4, 4)) is want
            assert C.dd_product_dtype(torch.zeros(4, 4, dtype=torch.bfloat16)) is want
            assert C.dd_product_dtype(torch.zeros(4, 4, dtype=torch.float64)) is None
    finally:
        monkeypatch.delenv("STEEPEST_BF16")
        precision.clear_cache()


def test_dd_scores_many_equals_dd_scores_layer_by_layer_bit_for_bit():
    """Adaptive's decisions solve every layer's Gram matrices in one batched call per size
    (criteria.dd_scores_many); a batched LAPACK call runs the same routine per matrix, so every layer's
    decreases equal the one-layer dd_scores bit for bit (narrow A: exact Gram; wide A: the seeded Krylov;
    a non-finite A: None), whatever the mix of sizes in the batch."""
    from steepest.diagnostics import criteria as C

    g = torch.Generator().manual_seed(5)
    pairs = {
        "a": (torch.randn(24, 16, generator=g), torch.randn(64, 16, generator=g)),
        "b": (torch.randn(16, 24, generator=g), torch.randn(64, 16, generator=g)),  # same Gram sizes as "a"
        "c": (torch.randn(8, 300, generator=g), torch.randn(400, 300, generator=g)),  # d > DD_GRAM_MAX: Krylov
        "d": (torch.randn(8, 12, generator=g), torch.full((5, 12), float("nan"))),
    }
    many = C.dd_scores_many(pairs)
    assert many["d"] is None and C.dd_scores(*pairs["d"]) is None
    for k in "abc":
        one = C.dd_scores(*pairs[k])
        assert many[k].decrease == one.decrease and many[k].winner == one.winner, k


def test_single_non_spectral_candidate_needs_no_initial():
    W = torch.nn.Parameter(torch.randn(6, 4))
    opt = steepest.Adaptive([W], candidates=("frobenius",), lr=0.01)
    W.grad = torch.randn(6, 4)
    opt.step()
    assert opt.geometries() == {"group0.0": "frobenius"} and opt.initial == "frobenius"
    assert steepest.Adaptive([W], candidates=("linf", "spectral")).initial == "spectral"
