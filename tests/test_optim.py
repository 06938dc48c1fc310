"""SteepestDescent and its recipes: reference agreement, torch.optim.Muon parity, seed 000's guarantees,
the torch.optim contract, frozen values, convergence, and bad input."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import steepest
from optim_db import CLASS_DB
from steepest.testing.reference import RefSteepest

CONFIGS = [
    dict(norm="spectral"),
    dict(norm="spectral", momentum=0.9, nesterov=True, scale_rule="muon", weight_decay=0.1),
    dict(norm="spectral", step_size="dual", scale_rule="spectral"),
    dict(norm="frobenius", step_size="dual", momentum=0.5),
    dict(norm="frobenius", scale_rule="rms"),
    dict(norm="linf", momentum=0.9),
    dict(norm="linf", step_size="dual"),
    dict(norm="schatten", p=3.0, momentum=0.8, nesterov=True),
    dict(norm="schatten", p=1.0, step_size="dual"),
    dict(norm="schatten", p=16.0, weight_decay=0.01),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("shape", [(6, 4), (3, 8), (4, 2, 3, 3)])
def test_matches_float64_reference(cfg, shape):
    g = torch.Generator().manual_seed(0)
    W0 = torch.randn(*shape, dtype=torch.float64, generator=g)
    W = torch.nn.Parameter(W0.clone())
    opt = steepest.SteepestDescent([W], lr=0.05, dtype=torch.float64, **cfg)
    ref = RefSteepest(W0, lr=0.05, **cfg)
    for _ in range(4):
        grad = torch.randn(*shape, dtype=torch.float64, generator=g)
        W.grad = grad.clone()
        opt.step()
        expected = ref.step(grad)
        # float64 SVD in both: agreement to ~1e-13; 1e-10 covers 4 steps of accumulation.
        torch.testing.assert_close(W.detach(), torch.from_numpy(expected), atol=1e-10, rtol=0)


@pytest.mark.parametrize("adjust", [None, "match_rms_adamw"])
@pytest.mark.parametrize("nesterov", [True, False])
def test_muon_matches_torch_muon(adjust, nesterov):
    g = torch.Generator().manual_seed(1)
    shapes = [(32, 48), (64, 16), (24, 24)]
    W0 = [torch.randn(*s, generator=g) for s in shapes]
    ours = [torch.nn.Parameter(w.clone()) for w in W0]
    theirs = [torch.nn.Parameter(w.clone()) for w in W0]
    # dtype=torch.bfloat16: torch.optim.Muon's forced choice, the same settings (the default "auto" takes
    # float32 for matrices this small, where bf16 is slower: steepest.linalg.precision.BF16_RULE).
    a = steepest.Muon(ours, lr=0.02, weight_decay=0.1, nesterov=nesterov, adjust_lr_fn=adjust, dtype=torch.bfloat16)
    b = torch.optim.Muon(theirs, lr=0.02, weight_decay=0.1, nesterov=nesterov, adjust_lr_fn=adjust)
    for _ in range(8):
        grads = [torch.randn(*s, generator=g) for s in shapes]
        for p, gr in zip(ours, grads):
            p.grad = gr.clone()
        for p, gr in zip(theirs, grads):
            p.grad = gr.clone()
        a.step()
        b.step()
    for p, q in zip(ours, theirs):
        # dtype="auto" runs Newton-Schulz in bf16 on hardware with native bf16 matmul, with torch's ops in
        # torch's order (the shape scale folded into lr), so the runs are equal there;
        # tests/test_muon_contract.py asserts bit-for-bit equality with dtype=torch.bfloat16 on every shape.
        # The tolerance is this test's original bound (8 steps of ~1e-8 from a float32 rounding).
        torch.testing.assert_close(p.detach(), q.detach(), atol=1e-6, rtol=0)


def _quadratic(seed=0, d=12, decay=0.5):
    """f(X) = 1/2 ||AX - B||_F^2 with A of spectrum decay**j (controls the stable rank)."""
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=g))
    V, _ = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=g))
    A = (U * decay ** torch.arange(d, dtype=torch.float64)) @ V.T
    B = torch.randn(d, d, dtype=torch.float64, generator=g)
    X0 = torch.randn(d, d, dtype=torch.float64, generator=g)
    return A, B, X0


def f_quad(A, B, X):
    return 0.5 * ((A @ X - B) ** 2).sum()


@pytest.mark.parametrize("decay", [0.3, 0.9])
def test_seed000_quadratic_guaranteed_decrease(decay):
    """Seed 000 section 7: L_F = ||A||_op^2, L_* = ||A||_F^2; each step decreases f by at least
    ||G||_*^2 / (2 L_*) (spectral, step ||G||_*/L_*) and ||G||_F^2 / (2 L_F) (GD, step 1/L_F)."""
    A, B, X0 = _quadratic(decay=decay)
    s = torch.linalg.svdvals(A)
    L_F, L_star = float(s[0] ** 2), float((s**2).sum())
    # The closed forms against the definitions: sup ||M Z|| / ||Z|| over random Z never exceeds them,
    # and Z = top singular pair (F) / Z = I (spectral) attains them.
    M = A.T @ A
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        Z = torch.randn(12, 12, dtype=torch.float64, generator=g)
        assert float((M @ Z).norm() / Z.norm()) <= L_F * (1 + 1e-12)
        assert float(torch.linalg.svdvals(M @ Z).sum() / torch.linalg.svdvals(Z)[0]) <= L_star * (1 + 1e-12)
    assert float(torch.linalg.svdvals(M).sum()) == pytest.approx(L_star, rel=1e-12)

    for geometry, lr, bound in [
        ("spectral", 1 / L_star, lambda G: torch.linalg.svdvals(G).sum() ** 2 / (2 * L_star)),
        ("frobenius", 1 / L_F, lambda G: (G**2).sum() / (2 * L_F)),
    ]:
        X = torch.nn.Parameter(X0.clone())
        opt = steepest.SteepestDescent([X], lr=lr, norm=geometry, step_size="dual", dtype=torch.float64)
        for _ in range(15):
            opt.zero_grad()
            loss = f_quad(A, B, X)
            loss.backward()
            G = X.grad.detach().clone()
            before = loss.item()
            opt.step()
            after = float(f_quad(A, B, X.detach()))
            # The guarantee is exact math; 1e-10 relative slack for float64 rounding of f.
            assert before - after >= float(bound(G)) * (1 - 1e-10) - 1e-12


def test_state_dict_round_trip_gives_identical_trajectory():
    def make(params):
        return steepest.Muon(params, lr=0.05, weight_decay=0.01, dtype=torch.float32)

    g = torch.Generator().manual_seed(4)
    W = torch.nn.Parameter(torch.randn(8, 5, generator=g))
    grads = [torch.randn(8, 5, generator=g) for _ in range(6)]
    opt = make([W])
    for gr in grads[:3]:
        W.grad = gr.clone()
        opt.step()
    saved_W, saved_state = W.detach().clone(), copy.deepcopy(opt.state_dict())
    for gr in grads[3:]:
        W.grad = gr.clone()
        opt.step()
    W2 = torch.nn.Parameter(saved_W.clone())
    opt2 = make([W2])
    opt2.load_state_dict(saved_state)
    assert opt2.param_groups[0]["dtype"] == "float32" and isinstance(opt2.param_groups[0]["norm"], str)
    for gr in grads[3:]:
        W2.grad = gr.clone()
        opt2.step()
    assert torch.equal(W.detach(), W2.detach())


def test_lr_scheduler_closure_and_grad_untouched():
    W = torch.nn.Parameter(torch.randn(5, 5, generator=torch.Generator().manual_seed(5)))
    opt = steepest.SpecGD([W], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    lrs = []
    for _ in range(3):

        def closure():
            opt.zero_grad()
            loss = (W**2).sum()
            loss.backward()
            return loss

        loss = opt.step(closure)
        assert torch.is_tensor(loss) and loss.item() > 0
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    assert lrs == [0.1, 0.05, 0.025]
    # p.grad is never modified: the step reads it only.
    W.grad = torch.ones(5, 5)
    before = W.grad.clone()
    steepest.Muon([W], lr=0.1, momentum=0.9).step()
    assert torch.equal(W.grad, before)


def test_step_post_hook_runs():
    W = torch.nn.Parameter(torch.randn(4, 4))
    opt = steepest.SpecGD([W], lr=0.1)
    calls = []
    handle = opt.register_step_post_hook(lambda o, a, k: calls.append(1))
    W.grad = torch.randn(4, 4)
    opt.step()
    handle.remove()
    opt.step()
    assert calls == [1]


FROZEN = {  # W.sum(), ||W||_F, W[0, 0] after 3 steps of the fixed problem below (computed at commit time)
    "Muon": [1.166512, 4.705166, 0.205759],
    "SpecGD": [1.058746, 4.575369, 0.251677],
    "SignSGD": [1.799497, 4.869164, 0.03737],
    "SchattenDescent": [0.877572, 4.601747, 0.29685],
    "GD": [1.449388, 4.673637, 0.263369],
}


@pytest.mark.parametrize("name", list(FROZEN))
def test_frozen_values(name):
    g = torch.Generator().manual_seed(123)
    W = torch.nn.Parameter(torch.randn(6, 4, generator=g))
    opt = CLASS_DB[name].make("frozen", [W])
    for _ in range(3):
        W.grad = torch.randn(6, 4, generator=g)
        opt.step()
    got = [float(W.detach().sum()), float(W.detach().norm()), float(W.detach()[0, 0])]
    # Values were printed rounded to 6 decimals; float32 arithmetic reproduces them to ~1e-6.
    assert got == pytest.approx(FROZEN[name], abs=2e-6)


def _mlp_problem():
    g = torch.Generator().manual_seed(6)
    X = torch.randn(256, 10, generator=g)
    teacher = torch.nn.Sequential(torch.nn.Linear(10, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    torch.manual_seed(6)
    for p in teacher.parameters():
        p.requires_grad_(False)
    Y = teacher(X)
    torch.manual_seed(7)
    model = torch.nn.Sequential(
        torch.nn.Linear(10, 32), torch.nn.Tanh(), torch.nn.Linear(32, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3)
    )
    return model, X, Y


@pytest.mark.parametrize("name", [n for n, info in CLASS_DB.items() if "mlp" in info.inputs])
def test_convergence_small_mlp(name):
    """Every recipe trains a small MLP (hidden matrix on the recipe, the rest on AdamW) to a fraction
    of its initial loss on a teacher problem."""
    frac = 0.3
    model, X, Y = _mlp_problem()
    opt = CLASS_DB[name].make("mlp", steepest.param_groups(model, adamw_lr=3e-3))
    first = None
    for _ in range(150):
        opt.zero_grad()
        loss = ((model(X) - Y) ** 2).mean()
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < frac * first, (first, loss.item())


@pytest.mark.parametrize("name", ["SpecGD", "GD", "SchattenDescent", "Muon"])
def test_convergence_matrix_least_squares(name):
    A, _, Xstar = _quadratic(decay=0.8)
    B = A @ Xstar  # consistent system: min f = 0 at X = X*, ||X*||_op ~ 7
    X = torch.nn.Parameter(torch.zeros(12, 12))
    opt = CLASS_DB[name].make("least_squares", [X])
    A, B = A.float(), B.float()
    f0 = float(f_quad(A, B, X.detach()))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=300)
    for _ in range(300):
        opt.zero_grad()
        f_quad(A, B, X).backward()
        opt.step()
        sched.step()
    assert float(f_quad(A, B, X.detach())) < 0.05 * f0


def test_adamw_route_matches_torch_adamw():
    g = torch.Generator().manual_seed(8)
    v0 = torch.randn(10, generator=g)
    a, b = torch.nn.Parameter(v0.clone()), torch.nn.Parameter(v0.clone())
    ours = steepest.SteepestDescent([dict(params=[a], algorithm="adamw", lr=1e-2, weight_decay=0.1)])
    theirs = torch.optim.AdamW([b], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    for _ in range(5):
        gr = torch.randn(10, generator=g)
        a.grad, b.grad = gr.clone(), gr.clone()
        ours.step()
        theirs.step()
    torch.testing.assert_close(a.detach(), b.detach(), atol=1e-6, rtol=0)  # float32 op-order differences


def test_conv_kernels_are_flattened_and_batch_mode():
    W = torch.nn.Parameter(torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(9)))
    W.grad = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(10))
    before = W.detach().clone()
    steepest.SpecGD([W], lr=1.0).step()
    step = (before - W.detach()).reshape(4, 27)
    torch.testing.assert_close(step @ step.T, torch.eye(4), atol=1e-5, rtol=0)  # orthonormal rows
    V = torch.nn.Parameter(torch.zeros(2, 5, 3))
    V.grad = torch.randn(2, 5, 3, generator=torch.Generator().manual_seed(11))
    steepest.SpecGD([V], lr=1.0, tensor_mode="batch").step()
    for k in range(2):  # each head's slice is its own polar factor
        torch.testing.assert_close(V.detach()[k].T @ V.detach()[k], torch.eye(3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["svd", "newton_schulz", "polar_express"])
def test_zero_and_extreme_gradients(method):
    W = torch.nn.Parameter(torch.randn(6, 4))
    before = W.detach().clone()
    W.grad = torch.zeros(6, 4)
    steepest.SteepestDescent([W], lr=0.1, method=method).step()
    assert torch.equal(W.detach(), before)  # zero gradient: zero update
    G = torch.randn(6, 4, generator=torch.Generator().manual_seed(12))
    steps = {}
    for scale in (1.0, 1e-30, 1e30):
        P = torch.nn.Parameter(before.clone())
        P.grad = G * scale
        steepest.SteepestDescent([P], lr=0.1, method=method).step()
        assert torch.isfinite(P).all()
        steps[scale] = before - P.detach()
    for scale in (1e-30, 1e30):
        torch.testing.assert_close(steps[scale], steps[1.0], atol=1e-6, rtol=0)  # float32 rescale rounding


def test_nonfinite_gradient_raise_and_skip():
    a = torch.nn.Parameter(torch.randn(4, 4))
    b = torch.nn.Parameter(torch.randn(4, 4))
    a.grad = torch.randn(4, 4)
    b.grad = torch.randn(4, 4)
    b.grad[1, 2] = float("nan")
    before = [a.detach().clone(), b.detach().clone()]
    opt = steepest.SteepestDescent([dict(params=[a, b], names=["enc.weight", "dec.weight"])], lr=0.1, momentum=0.9)
    with pytest.raises(steepest.NonFiniteGradientError, match="dec.weight"):
        opt.step()
    assert torch.equal(a.detach(), before[0]) and torch.equal(b.detach(), before[1])  # nothing changed
    assert not opt.state[a]  # and no momentum was accumulated
    opt = steepest.SteepestDescent([a, b], lr=0.1, nonfinite="skip")
    b.grad[0, 0] = float("inf")
    opt.step()
    assert torch.equal(b.detach(), before[1]) and not torch.equal(a.detach(), before[0])
    assert opt.nonfinite_skipped == 1 and opt.state[b]["nonfinite_skips"] == 1
    assert torch.isfinite(b).all()


def test_bad_construction_arguments():
    W = torch.nn.Parameter(torch.randn(3, 3))
    cases = [
        (dict(lr=-1.0), "lr must be in"),
        (dict(momentum=1.0), "momentum must be in"),
        (dict(norm="schatten", p=0.5), "Schatten exponent p"),
        (dict(norm="nuclear"), "norm must be one of"),
        (dict(method="qr"), "method must be one of"),
        (dict(step_size="armijo"), "step_size must be one of"),
        (dict(scale_rule="big"), "scale_rule must be one of"),
        (dict(nesterov=True), "nesterov=True needs momentum"),
        (dict(nonfinite="ignore"), "nonfinite must be one of"),
        (dict(dtype="int8"), "dtype must be one of"),
        (dict(method="svd", steps=5), "steps/coefficients"),
    ]
    for kwargs, msg in cases:
        with pytest.raises(ValueError, match=msg):
            steepest.SteepestDescent([W], **kwargs)
    with pytest.raises(ValueError, match="param_groups"):
        steepest.SpecGD([torch.nn.Parameter(torch.randn(5))], lr=0.1)
    with pytest.raises(ValueError, match=r"shape \(\)"):
        steepest.Muon([torch.nn.Parameter(torch.tensor(1.0))])
    with pytest.raises(ValueError, match="complex"):
        steepest.SpecGD([torch.nn.Parameter(torch.randn(3, 3, dtype=torch.complex64))])
    # Entrywise geometries accept vectors (Signum on biases is common).
    steepest.SignSGD([torch.nn.Parameter(torch.randn(5))], lr=0.1)


def test_sparse_gradient_error():
    emb = torch.nn.Embedding(10, 4, sparse=True)
    opt = steepest.SignSGD(emb.parameters(), lr=0.1)
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(ValueError, match="sparse gradient"):
        opt.step()


# ------------------------------------------------------------------ bad input that used to pass silently
def test_load_state_dict_of_another_geometry_or_shape_is_refused():
    W = torch.nn.Parameter(torch.randn(3, 3))
    sign, spec = steepest.SignSGD([W], momentum=0.9), steepest.SpecGD([torch.nn.Parameter(torch.randn(3, 3))])
    with pytest.raises(ValueError, match="norm='spectral'.*norm='linf'"):
        sign.load_state_dict(spec.state_dict())
    assert sign.param_groups[0]["norm"] == "linf"  # nothing was loaded
    other = steepest.SignSGD([torch.nn.Parameter(torch.randn(4, 2))], momentum=0.9)
    other.param_groups[0]["params"][0].grad = torch.ones(4, 2)
    other.step()
    with pytest.raises(ValueError, match=r"momentum_buffer of shape \(4, 2\)"):
        sign.load_state_dict(other.state_dict())


def test_infinite_or_nan_hyperparameters_never_reach_the_weights():
    W = torch.nn.Parameter(torch.randn(3, 3))
    for kw in (dict(lr=math.inf), dict(weight_decay=math.inf), dict(lr=math.nan)):
        with pytest.raises(ValueError, match="lr|weight_decay"):
            steepest.Muon([W], **kw)
    opt = steepest.Muon([W], lr=0.1)
    W0 = W.detach().clone()
    W.grad = torch.randn(3, 3)
    for key, bad in (("lr", math.nan), ("lr", math.inf), ("weight_decay", math.inf), ("lr", -1.0)):
        opt.param_groups[0][key] = bad
        with pytest.raises(ValueError, match=f"'{key}'.*no parameter was changed"):
            opt.step()
        opt.param_groups[0].update(lr=0.1, weight_decay=0.0)
    assert torch.equal(W.detach(), W0)


@pytest.mark.parametrize("scale", [1e-30, 1e19, 1e30])
def test_gd_applies_extreme_gradients_like_sgd(scale):
    """GD is W - lr G for every finite G (torch.optim.SGD's behaviour): no skip at 1e19, no zero at 1e-30."""
    g = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    W = torch.nn.Parameter(torch.zeros(4, 3))
    opt = steepest.GD([W], lr=1e-3)
    W.grad = g * scale
    opt.step()
    assert opt.nonfinite_skipped == 0
    # the Frobenius dual-norm step is D * ||G||_F with both from the prescaled matrix: float32 rounding only
    torch.testing.assert_close(W.detach(), -1e-3 * g * scale, rtol=1e-5, atol=0)


@pytest.mark.parametrize("shape", [(0, 5), (5, 0), (2, 0, 3)])
def test_zero_size_matrices_step_in_every_recipe(shape):
    for cls in (steepest.Muon, steepest.SpecGD, steepest.SignSGD, steepest.GD, steepest.SchattenDescent):
        W = torch.nn.Parameter(torch.zeros(shape))
        opt = cls([W], tensor_mode="batch")
        W.grad = torch.zeros(shape)
        opt.step()
        assert W.shape == shape


def test_memory_stays_linear_at_extreme_aspect_ratios():
    """Adaptive's gradient-only proxy used to form an m x m float64 matrix (80 GB for 100000 x 1). Under a
    4 GB address-space limit every optimizer must step 100000 x 1 and 1 x 100000 weights."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import resource, torch, steepest
        resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))
        for shape in ((100000, 1), (1, 100000)):
            for make in (steepest.Muon, steepest.SpecGD, steepest.SignSGD, steepest.GD,
                         lambda ps: steepest.SchattenDescent(ps, p=4), lambda ps: steepest.Adaptive(ps, every=1)):
                W = torch.nn.Parameter(torch.randn(shape))
                opt = make([W])
                for _ in range(3):
                    W.grad = torch.randn(shape)
                    opt.step()
                assert torch.isfinite(W).all()
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
