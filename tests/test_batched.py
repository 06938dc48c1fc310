"""The batched spectral step (steepest.optim.batched) against the per-parameter path and float64 references."""

from __future__ import annotations

import functools
import math

import pytest
import torch

import steepest
from optim_db import CLASS_DB
from steepest.optim import batched as B
from steepest.optim import functional as F
from steepest.optim.executors import Batched, PerMatrix


@pytest.fixture(autouse=True)
def _one_thread():
    """Run on one intra-op thread (restored afterwards): these are many tiny matmuls, and on the shared
    2-core machine every OpenMP parallel region waits for a preempted thread (5x slower under load)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _model_params(seed: int = 0, dtype=torch.float32):
    """Mixed shapes: two same-shape pairs (tall, wide), a square trio, a conv kernel that flattens to
    the square shape, a batch-mode 3-D tensor, a lone shape, and a parameter that never gets a grad."""
    g = torch.Generator().manual_seed(seed)

    def P(*shape):
        return torch.nn.Parameter(torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype))

    flat = [P(24, 12), P(24, 12), P(12, 24), P(12, 24), P(16, 16), P(16, 16), P(16, 16), P(16, 4, 2, 2), P(9, 5)]
    nograd = P(24, 12)
    batch3d = [P(3, 16, 16)]
    return flat, nograd, batch3d


def _groups(flat, nograd, batch3d, **extra):
    return [dict(params=flat + [nograd], **extra), dict(params=batch3d, tensor_mode="batch", **extra)]


#: the executors that the deprecated ``batch_matrices`` values None / True / False stand for
EXECUTORS = {None: Batched(), True: Batched(cpu=True), False: PerMatrix()}


def _run(make_opt, batched: bool, steps: int = 3, dtype=torch.float32, nan_at=None):
    """Run ``steps`` steps from a fixed start with fixed random gradients; return params and optimizer."""
    flat, nograd, batch3d = _model_params(dtype=dtype)
    opt = make_opt(_groups(flat, nograd, batch3d))
    opt.executor = EXECUTORS[batched]
    g = torch.Generator().manual_seed(1)
    params = flat + batch3d
    for k in range(steps):
        for i, p in enumerate(params):
            p.grad = torch.randn(p.shape, generator=g, dtype=torch.float64).to(dtype)
            if nan_at is not None and (k, i) == nan_at:
                p.grad[0, 0] = float("nan")
        opt.step()
    return params + [nograd], opt


CASES = {
    # Same kernels per matrix on CPU make the paths agree bit for bit in practice; the tolerances allow
    # a backend whose batched GEMM blocks differently: one rounding difference per matmul, amplified by
    # the Newton-Schulz steps (slope a = 3.4 per step) stays below ~1e-4 relative in float32, and below
    # a few bf16 ulps (eps 7.8e-3) in bfloat16.
    # The optimizers' arguments are optim_db.CLASS_DB's "batched_*" inputs.
    "muon_bf16": (("Muon", "batched_bf16"), 3e-2),
    "muon_fp32": (("Muon", "batched_fp32"), 1e-4),
    "muon_polar_express": (("Muon", "batched_polar_express"), 1e-4),
    # Exact SVD: batched LAPACK calls run the same per-matrix routine; float32 rounding only.
    "specgd": (("SpecGD", "batched"), 1e-5),
    "specgd_dual_momentum": (("SpecGD", "batched_dual_momentum"), 1e-5),
    "schatten_inf": (("SchattenDescent", "batched_pinf"), 1e-5),
}


@pytest.mark.parametrize("case", list(CASES))
def test_batched_matches_per_parameter(case):
    (cls_name, inputs), tol = CASES[case]
    make_opt = functools.partial(CLASS_DB[cls_name].make, inputs)
    flat0, nograd0, batch3d0 = _model_params()
    starts = flat0 + batch3d0 + [nograd0]  # _run's order
    a, _ = _run(make_opt, batched=True)
    b, _ = _run(make_opt, batched=False)
    for pa, pb, p0 in zip(a, b, starts):
        moved = (pb.detach() - p0.detach()).norm()
        diff = (pa.detach() - pb.detach()).norm()
        assert diff <= tol * max(float(moved), 1e-12), (case, tuple(pa.shape), float(diff), float(moved))
    # The parameter without a gradient was never touched.
    assert torch.equal(a[-1], starts[-1]) and torch.equal(b[-1], starts[-1])


def _bucket_shapes(opt, skip=frozenset()):
    """Shapes in each bucket the batched dualizer would form from the optimizer's current gradients
    (what the step kernel hands it: steepest blocks with a gradient, not skipped, M = G at momentum 0)."""
    blocks = [b for b in opt._blocks() if not b.adamw and id(b.param) not in skip]
    for b in blocks:
        b.M = b.grad
    return [tuple(tuple(blocks[i].param.shape) for i in idx) for idx in B.buckets(blocks, cpu=opt.executor.cpu is True)]


def test_buckets_group_same_shape_and_settings():
    flat, nograd, batch3d = _model_params()
    adam_mat = torch.nn.Parameter(torch.randn(16, 16))
    bias = torch.nn.Parameter(torch.randn(16))
    groups = _groups(flat, nograd, batch3d) + [dict(params=[adam_mat, bias], algorithm="adamw")]
    opt = steepest.Muon(groups, lr=0.02)
    # Default (None) batches CPU matrices up to CPU_MAX_NUMEL entries: these small ones, but not a
    # bucket of larger ones (checked by lowering the threshold below their size).
    for p in flat + batch3d + [adam_mat, bias]:
        p.grad = torch.ones_like(p)
    assert opt.executor.cpu is None and len(_bucket_shapes(opt)) == 3
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(B, "CPU_MAX_NUMEL", 256)  # 16x16 = 256 entries stay, 24x12 = 288 leave
        assert set(_bucket_shapes(opt)) == {((16, 16), (16, 16), (16, 16), (16, 4, 2, 2))}
    opt.executor = EXECUTORS[True]
    for p in flat + batch3d + [adam_mat, bias]:
        p.grad = torch.ones_like(p)
    found = set(_bucket_shapes(opt))
    # (16,16) x3 and the (16,4,2,2) conv flatten to 16x16 and share the group's settings; the 3-D
    # batch-mode tensor is in a different group (tensor_mode differs) and alone, the AdamW matrix is not
    # spectral, (9,5) is alone, and the (24,12) parameter without a gradient is left out.
    assert found == {
        ((24, 12), (24, 12)),
        ((12, 24), (12, 24)),
        ((16, 16), (16, 16), (16, 16), (16, 4, 2, 2)),
    }
    # Parameters being skipped (non-finite gradient) leave their bucket; a bucket of one is dropped.
    skip = {id(flat[0])}
    found = set(_bucket_shapes(opt, skip))
    assert ((24, 12), (24, 12)) not in found and ((24, 12),) not in found


def test_different_lr_groups_share_a_bucket_and_keep_their_lr():
    torch.manual_seed(0)
    p1, p2 = torch.nn.Parameter(torch.randn(8, 4)), torch.nn.Parameter(torch.randn(8, 4))
    q1, q2 = p1.detach().clone(), p2.detach().clone()
    opt = steepest.SpecGD([dict(params=[p1], lr=0.1), dict(params=[p2], lr=0.3, weight_decay=0.5)])
    opt.executor = EXECUTORS[True]
    assert len(_bucket_shapes(opt)) == 0  # no grads yet
    p1.grad, p2.grad = torch.randn(8, 4), torch.randn(8, 4)
    assert [len(b) for b in _bucket_shapes(opt)] == [2]
    opt.step()
    # Exact float64 reference: W <- (1 - lr wd) W - lr U V^T.
    for p, q, lr, wd in ((p1, q1, 0.1, 0.0), (p2, q2, 0.3, 0.5)):
        U, _, Vh = torch.linalg.svd(p.grad.double(), full_matrices=False)
        ref = (1 - lr * wd) * q.double() - lr * U @ Vh
        # float32 SVD of a well-conditioned 8x4 matrix: polar factor accurate to ~1e-6.
        torch.testing.assert_close(p.detach().double(), ref, atol=1e-5, rtol=0)


def _ns5_float64(M: torch.Tensor) -> torch.Tensor:
    """Muon's Newton-Schulz quintic written out in float64 (the slow reference)."""
    a, b, c = 3.4445, -4.7750, 2.0315
    X = M.double()
    tall = X.shape[0] > X.shape[1]
    if tall:
        X = X.T
    X = X / X.norm().clamp(min=1e-7)  # torch.optim.Muon: clamp, not + eps
    for _ in range(5):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tall else X


def test_batched_muon_float64_matches_written_out_reference():
    """Batched Muon in float64 vs momentum + Nesterov + NS5 + shape scale + weight decay by hand."""
    g = torch.Generator().manual_seed(3)
    shapes = [(24, 12), (24, 12), (12, 24), (12, 24)]
    ps = [torch.nn.Parameter(torch.randn(*s, generator=g, dtype=torch.float64)) for s in shapes]
    ref = [p.detach().clone() for p in ps]
    bufs = [torch.zeros_like(p) for p in ps]
    lr, wd, mu = 0.02, 0.1, 0.95
    opt = steepest.Muon(ps, lr=lr, weight_decay=wd, momentum=mu, dtype=torch.float64)
    opt.executor = EXECUTORS[True]
    assert [len(b) for b in _bucket_shapes(opt)] == []  # no grads yet
    for _ in range(3):
        grads = [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]
        for p, gr in zip(ps, grads):
            p.grad = gr.clone()
        assert sorted(len(b) for b in _bucket_shapes(opt)) == [2, 2]
        opt.step()
        for i, gr in enumerate(grads):
            bufs[i] = mu * bufs[i] + (1 - mu) * gr
            M = (1 - mu) * gr + mu * bufs[i]
            m, n = shapes[i]
            ref[i] = (1 - lr * wd) * ref[i] - lr * math.sqrt(max(1, m / n)) * _ns5_float64(M)
    for p, r in zip(ps, ref):
        # float64 throughout; only summation order differs (lerp vs the written-out EMA): ~1e-15 per
        # entry, amplified by at most a^5 ~ 500 through Newton-Schulz.
        torch.testing.assert_close(p.detach(), r, atol=1e-11, rtol=0)


def test_nonfinite_skip_in_a_bucket():
    make = lambda gs: steepest.Muon(gs, lr=0.02, dtype=torch.float32, nonfinite="skip")  # noqa: E731
    # Step 1 (k=1): the first (24, 12) parameter gets a NaN gradient; its bucket partner still steps.
    a, opt_a = _run(make, batched=True, nan_at=(1, 0))
    b, opt_b = _run(make, batched=False, nan_at=(1, 0))
    assert opt_a.nonfinite_skipped == opt_b.nonfinite_skipped == 1
    assert opt_a.state[a[0]]["nonfinite_skips"] == 1
    for pa, pb in zip(a, b):
        assert torch.isfinite(pa).all()
        # float32 Newton-Schulz, same kernels: see CASES for the 1e-4 tolerance.
        assert (pa.detach() - pb.detach()).norm() <= 1e-4 * pb.detach().norm()
    # The momentum buffer of the skipped parameter saw only the finite gradients.
    assert torch.isfinite(opt_a.state[a[0]]["momentum_buffer"]).all()


def test_nonfinite_raise_changes_nothing_with_batching():
    flat, nograd, batch3d = _model_params()
    opt = steepest.Muon(_groups(flat, nograd, batch3d), lr=0.02)
    opt.executor = EXECUTORS[True]
    before = [p.detach().clone() for p in flat + batch3d]
    for p in flat + batch3d:
        p.grad = torch.randn_like(p)
    flat[3].grad[1, 1] = float("inf")
    with pytest.raises(steepest.NonFiniteGradientError, match=r"\(shape \(12, 24\)\)"):
        opt.step()
    assert all(torch.equal(p, q) for p, q in zip(flat + batch3d, before))
    assert len(opt.state) == 0  # no momentum buffer was created either


def test_float16_dual_norm_above_65504_steps_in_float32():
    """issue 23 item 4: a float16 nuclear norm above 65504 used to overflow and skip that member silently; the
    dual norm and dn * D are now float32, so both members of the bucket step, as the float32 step would."""
    big = torch.nn.Parameter(torch.zeros(8, 8, dtype=torch.float16))
    small = torch.nn.Parameter(torch.zeros(8, 8, dtype=torch.float16))
    opt = steepest.SpecGD([big, small], lr=1e-4, step_size="dual")
    opt.executor = EXECUTORS[True]
    gbig = torch.full((8, 8), 3e4, dtype=torch.float16) + torch.eye(8, dtype=torch.float16) * 3e4  # ||.||_* ~ 5.1e5
    big.grad, small.grad = gbig, torch.eye(8, dtype=torch.float16)
    assert [len(b) for b in _bucket_shapes(opt)] == [2]
    opt.step()
    assert opt.nonfinite_skipped == 0 and torch.isfinite(big).all()
    ref = -1e-4 * torch.linalg.matrix_norm(gbig.float(), "nuc") * steepest.polar(gbig.float(), "svd")
    # float16 keeps 11 significant bits: 1e-3 relative to the largest entry (~48) bounds its rounding
    torch.testing.assert_close(big.detach().float(), ref, atol=1e-3 * ref.abs().max().item(), rtol=0)
    # small: W = -lr * ||I||_* * I = -8e-4 I (float16 resolves 8e-4 to 0.05%).
    torch.testing.assert_close(small.detach().float(), -8e-4 * torch.eye(8), atol=0, rtol=1e-3)


@pytest.mark.parametrize("policy", ["raise", "skip"])
def test_dual_step_overflow_raises_before_any_change_or_skips_only_that_member(policy):
    """A finite float32 gradient whose nuclear norm overflows float32 (8 x 8 entries of 1e38): under the default
    nonfinite='raise' the step raises naming it before any weight (the AdamW-routed one included) changes; with
    'skip' only that member is skipped and counted."""
    big, small = (torch.nn.Parameter(torch.zeros(8, 8)) for _ in range(2))
    vec = torch.nn.Parameter(torch.zeros(3))
    opt = steepest.SpecGD(
        [dict(params=[big, small]), dict(params=[vec], algorithm="adamw")], lr=1e-4, step_size="dual", nonfinite=policy
    )
    opt.executor = EXECUTORS[True]
    big.grad, small.grad, vec.grad = torch.full((8, 8), 1e38), torch.eye(8), torch.ones(3)
    if policy == "raise":
        with pytest.raises(steepest.NonFiniteGradientError, match=r"the update of .*\(shape \(8, 8\)\) is not finite"):
            opt.step()
        assert all(torch.equal(p, torch.zeros_like(p)) for p in (big, small, vec)) and opt.nonfinite_skipped == 0
        return
    opt.step()
    assert torch.equal(big.detach(), torch.zeros(8, 8)) and opt.state[big]["nonfinite_skips"] == 1
    assert opt.nonfinite_skipped == 1 and not torch.equal(vec.detach(), torch.zeros(3))
    torch.testing.assert_close(small.detach(), -8e-4 * torch.eye(8), atol=0, rtol=1e-6)  # float32 rounding


# ---------------------------------------------------------------- the two fast paths edited for speed
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf"), None])
def test_nonfinite_check_flags_exactly_the_nonfinite(dtype, bad):
    """The kernel's check (finite_flags: a sum, then min/max where the sum is not finite) against the
    obvious reference, isfinite(g).all(); gradient 0's entries are finite but their sum overflows."""
    ps = [torch.nn.Parameter(torch.zeros(4, 3, dtype=dtype)) for _ in range(3)]
    big = torch.finfo(dtype).max / 2  # huge but finite: must not be flagged
    for i, p in enumerate(ps):
        p.grad = torch.full((4, 3), big if i == 0 else 1.0, dtype=dtype)
    if bad is not None:
        ps[1].grad[2, 1] = bad
    expected = {id(p) for p in ps if not torch.isfinite(p.grad).all()}
    flags = F.finite_flags([p.grad for p in ps])
    assert {id(p) for p, ok in zip(ps, flags) if not ok} == expected


def test_iterative_polar_on_cpu_is_torch_muon_bit_for_bit_and_leaves_input_alone():
    """The CPU shortcut (no multiply by 1) keeps bf16 Newton-Schulz op-for-op equal to torch.optim.Muon's."""
    from torch.optim._muon import _zeropower_via_newtonschulz

    g = torch.Generator().manual_seed(5)
    for shape in ((24, 12), (12, 24), (16, 16)):
        G = torch.randn(*shape, generator=g)
        G0 = G.clone()
        ours = steepest.polar(G, "newton_schulz", 5, dtype=torch.bfloat16)
        theirs = _zeropower_via_newtonschulz(G, (3.4445, -4.7750, 2.0315), 5, 1e-7)
        assert torch.equal(ours, theirs.to(ours.dtype))  # same kernels, same order: exact
        assert torch.equal(G, G0)
    # Outside the safe range the prescale still runs: a 1e-30 gradient gives the rescaled direction.
    G = torch.randn(16, 8, generator=g)
    a = steepest.polar(G * 1e-30, "polar_express")
    b = steepest.polar(G, "polar_express")
    # float32 Polar Express on a rescaled input: the rescale rounds each entry once (~6e-8 relative);
    # 8 steps keep the result within ~1e-5 of the unscaled one.
    assert torch.isfinite(a).all() and (a - b).abs().max() < 1e-4


def test_polar_range_fallback_matches_the_unscaled_input():
    """The eager CPU path checks ||X||_F after the cast; outside its safe range it prescales first."""
    g = torch.Generator().manual_seed(11)
    G = torch.randn(24, 12, generator=g)
    ref = steepest.polar(G, "newton_schulz", 5, dtype=torch.bfloat16)
    for scale in (1e25, 1e-25):  # ||G||_F^2 overflows / underflows float32 without the prescale
        out = steepest.polar(G * scale, "newton_schulz", 5, dtype=torch.bfloat16)
        # bf16 NS5 from a rescaled input: the prescale changes each entry's bf16 rounding (2^-9
        # relative), which NS5 carries to ~1e-2 absolute at most on O(0.3) entries.
        assert torch.isfinite(out).all() and (out - ref).abs().max() < 3e-2
    assert torch.equal(steepest.polar(torch.zeros(6, 4), "newton_schulz", 5, dtype=torch.bfloat16), torch.zeros(6, 4))
    # An input already in the iteration dtype is divided out of place: never modified (either path).
    for H in (G.bfloat16(), (G * 1e25).bfloat16()):
        H0 = H.clone()
        steepest.polar(H, "newton_schulz", 5, dtype=torch.bfloat16)
        assert torch.equal(H, H0)


def test_default_step_holds_one_direction_source_at_a_time():
    """Stage 3's M is deferred and the default (lazy) dualizer computes updates in block order, so
    when an update is computed only its own M exists (a bucket's M are released once stacked): peak
    memory holds neither one M nor one update per parameter. The result equals the per-matrix dualizer's."""
    g = torch.Generator().manual_seed(3)
    shapes = [(12, 8), (40, 30), (12, 8), (30, 50)]
    start = [torch.randn(*s, generator=g) for s in shapes]
    grads = [torch.randn(*s, generator=g) for s in shapes]
    seen = []
    real = F.compute_update

    def spy(M, **kw):
        seen.append(sum(b._M is not None for b in current))
        return real(M, **kw)

    results = []
    for batched in (None, False):
        ps = [torch.nn.Parameter(w.clone()) for w in start]
        opt = steepest.Muon(ps, lr=0.02)
        opt.executor = EXECUTORS[batched]
        current = []
        orig = opt._blocks

        def blocks(*a, orig=orig, current=current, **k):
            current[:] = orig(*a, **k)
            return current

        opt._blocks = blocks
        seen.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(F, "compute_update", spy)
            for _ in range(2):
                for p, gr in zip(ps, grads):
                    p.grad = gr.clone()
                opt.step()
        results.append([p.detach().clone() for p in ps])
        if batched is None:
            # The 12x8 pair is one bucket (released once stacked: 0 left), then 40x30 and 30x50 alone.
            assert seen == [0, 1, 1] * 2
        else:
            # PerMatrix: lazy too (one M at a time; it was the eager list dualizer with all four alive)
            assert seen == [1, 1, 1, 1] * 2
    for a, b in zip(*results):
        # Same float32 updates; the bucket's batched GEMM may round differently from the per-matrix one
        # (bf16 NS5 through "auto" where native: ~1e-2 relative on a 0.02-lr step).
        torch.testing.assert_close(a, b, atol=1e-3, rtol=0)


# ------------------------------------------------------------------ the executor API
def test_executor_is_chosen_by_argument_and_visible():
    W = torch.nn.Parameter(torch.randn(4, 3))
    assert repr(steepest.Muon([W]).executor) == "Batched()"  # "auto" on plain tensors
    assert isinstance(steepest.Muon([W], executor="per_matrix").executor, PerMatrix)
    assert steepest.Muon([W], executor="batched").executor.cpu is None
    ex = Batched(cpu=True)
    assert steepest.SignSGD([W], executor=ex).executor is ex
    with pytest.raises(ValueError, match="executor must be one of"):
        steepest.Muon([W], executor="gpu")
    with pytest.raises(ValueError, match="use PerMatrix"):
        Batched(cpu=False)


@pytest.mark.parametrize("value,expected", [(None, "Batched()"), (True, "Batched(cpu=True)"), (False, "PerMatrix()")])
def test_batch_matrices_is_a_deprecated_alias_that_sets_the_executor(value, expected):
    opt = steepest.Muon([torch.nn.Parameter(torch.randn(4, 3))])
    with pytest.warns(DeprecationWarning, match="batch_matrices is deprecated"):
        opt.batch_matrices = value
    assert repr(opt.executor) == expected
    with pytest.warns(DeprecationWarning, match="batch_matrices is deprecated"):
        assert opt.batch_matrices is value


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("nesterov", [True, False])
def test_direct_stack_equals_the_concatenated_views(monkeypatch, dtype, nesterov):
    """Blocks whose matrix view is a reshape write M straight into the stack (``_bucket_direct``); the
    generic path (``_bucket_views``: each M, then torch.cat) gives the same bits, conv kernels and bf16
    iteration included, over two steps (the second reads the momentum buffer)."""
    g = torch.Generator().manual_seed(5)
    shapes = [(6, 2, 3, 3)] * 3 + [(6, 18)] * 2 + [(5, 9)] * 2
    base = [torch.randn(s, generator=g) for s in shapes]
    grads = [[torch.randn(s, generator=g) for s in shapes] for _ in range(2)]
    out = {}
    for path in ("direct", "views"):
        if path == "views":
            monkeypatch.setattr(
                B,
                "_bucket_direct",
                lambda blocks, idx, settings, mode: B._bucket_views(blocks, idx, settings, mode, False, 1),
            )
        ps = [torch.nn.Parameter(t.clone()) for t in base]
        opt = steepest.Muon(ps, lr=0.1, nesterov=nesterov, dtype=dtype, executor=Batched(cpu=True))
        for gs in grads:
            for p, gr in zip(ps, gs):
                p.grad = gr.clone()
            opt.step()
        out[path] = [p.detach().clone() for p in ps]
    for a, b in zip(out["direct"], out["views"]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_source_written_into_out_is_the_cast_source(nesterov, momentum):
    """``source_from_buffer(..., out=)`` (a bf16 or float32 slice) holds what ``.to(dtype)`` of M holds."""
    g = torch.Generator().manual_seed(1)
    G, buf = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    for dtype in (torch.bfloat16, torch.float32):
        want = F.source_from_buffer(G, buf if momentum else None, momentum, nesterov, dtype)
        out = torch.empty(2, 7, 5, dtype=dtype)[1]
        got = F.source_from_buffer(G, buf if momentum else None, momentum, nesterov, dtype, out=out)
        assert got.data_ptr() == out.data_ptr() and torch.equal(out, want)


def test_narrow_update_is_added_as_its_float32_copy_would_be():
    """apply_update adds a bf16 update to a float32 parameter without the float32 copy: same bits."""
    g = torch.Generator().manual_seed(2)
    W = torch.randn(9, 4, generator=g)
    U = torch.randn(9, 4, generator=g).to(torch.bfloat16)
    got, want = W.clone(), W.clone()
    F.apply_update(got, U, 0.03, 0.1, 0.7)
    want.mul_(1 - 0.03 * 0.1).add_(U.to(torch.float32), alpha=-0.03 * 0.7)
    assert torch.equal(got, want)


def test_large_eigh_form_matrices_are_dualized_one_by_one_on_cpu(monkeypatch):
    """On CPU the default leaves out of its buckets the matrices from CPU_EIGH_MIN_NUMEL entries whose update runs
    in the float32 eigh form (its eigh is one LAPACK call per matrix anyway; a stack only holds more memory):
    without native bf16 the 384 x 384 squares, with avx512_bf16 the 128 x 1152 wide ones; smaller eigh-form
    matrices, the bf16 iteration's and AMX's keep theirs. The updates equal the one-by-one executor's."""
    from steepest.linalg import precision as P

    sizes = [(384, 384)] * 2 + [(128, 512)] * 2 + [(128, 128)] * 2 + [(128, 1152)] * 2
    want = {
        "forced-float32": {(128, 512), (128, 128)},
        "cpu-no-bf16": {(128, 512), (128, 128)},
        "cpu-avx512_bf16": {(384, 384), (128, 512), (128, 128)},
        "cpu-amx": {(384, 384), (128, 512), (128, 128), (128, 1152)},
    }
    g = torch.Generator().manual_seed(4)
    for kind, bucketed in want.items():
        monkeypatch.setattr(P, "_CACHE", {"cpu": (kind, "test")})
        ps = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in sizes]
        opt = steepest.Muon(ps, lr=0.02)
        for p in ps:
            p.grad = torch.randn(p.shape, generator=g)
        found = _bucket_shapes(opt)
        assert {s[0] for s in found} == bucketed and all(len(s) == 2 for s in found), kind
    # the eigh-form matrices left out step exactly as with executor="per_matrix"
    monkeypatch.setattr(P, "_CACHE", {"cpu": ("forced-float32", "test")})
    ps = [torch.nn.Parameter(torch.randn(384, 384, generator=g)) for _ in range(2)]
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    a, b = steepest.Muon(ps, lr=0.02), steepest.Muon(qs, lr=0.02, executor="per_matrix")
    for p, q in zip(ps, qs):
        p.grad = torch.randn(p.shape, generator=g)
        q.grad = p.grad.clone()
    a.step()
    b.step()
    assert all(torch.equal(p, q) for p, q in zip(ps, qs))
