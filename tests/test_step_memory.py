"""What the optimizer step holds at once (issue 22's memory item): every update is freed before the next
is computed, a bucket's members are applied together, the polar iteration overwrites only temporaries
of the step's own, and the per-matrix executor's live-tensor peak is no larger than torch.optim.Muon's."""

from __future__ import annotations

import weakref

import pytest
import torch

import steepest
from steepest.optim import batched as B
from steepest.optim import functional as F
from steepest.optim.executors import Batched, Executor, OwnerComputes, PerMatrix

#: The charlm default model's hidden matrices (benchmarks/peers.py's "charlm" set), and a GPT-like block.
CHARLM = [(384, 128), (128, 128), (512, 128), (128, 512)] * 3
GPT_BLOCK = [(384, 1152), (384, 384), (1536, 384), (384, 1536)]
MIXED = [(12, 8), (40, 30), (12, 8), (30, 50), (40, 30), (16, 16)]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _params(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(*s, generator=g)) for s in shapes]
    grads = [torch.randn(*s, generator=g) for s in shapes]
    return ps, grads


def _step(opt, ps, grads):
    for p, gr in zip(ps, grads):
        p.grad = gr.clone()
    opt.step()


@pytest.mark.parametrize("executor", [Batched(), Batched(cpu=True), PerMatrix()], ids=repr)
def test_no_update_outlives_its_application(executor, monkeypatch):
    """When an update is computed, no earlier update of the step is still referenced (the kernel iterates
    with next() and del, not zip, whose reused result tuple kept the previous one alive; the lazy
    dualizer binds no loop variable to it)."""
    ps, grads = _params(MIXED)
    opt = steepest.Muon(ps, lr=0.02, executor=executor)
    made: list[weakref.ref] = []
    alive_at_call = []
    real = F.compute_update

    def spy(M, **kw):
        alive_at_call.append(sum(r() is not None for r in made))
        U = real(M, **kw)
        made.append(weakref.ref(U))
        return U

    monkeypatch.setattr(F, "compute_update", spy)
    for _ in range(2):
        made.clear()
        _step(opt, ps, grads)
    assert alive_at_call and max(alive_at_call) == 0, alive_at_call


def test_bucket_order_puts_members_together_and_changes_no_value(monkeypatch):
    """Batched's order: each bucket's members next to its first, the rest in place; the parameters equal
    those of the same executor without the reordering bit for bit (the same kernels on the same stacks)."""
    ps, grads = _params(MIXED)
    opt = steepest.Muon(ps, lr=0.02, executor=Batched(cpu=True))
    seen = []
    real = B.bucket_order

    def spy(bl, cpu=False):
        out = real(bl, cpu)
        seen.append([tuple(b.param.shape) for b in out])
        return out

    monkeypatch.setattr(B, "bucket_order", spy)
    _step(opt, ps, grads)
    assert seen[0] == [(12, 8), (12, 8), (40, 30), (40, 30), (30, 50), (16, 16)]
    after = [p.detach().clone() for p in ps]

    ps2, _ = _params(MIXED)
    opt2 = steepest.Muon(ps2, lr=0.02, executor=Batched(cpu=True))
    monkeypatch.setattr(B, "bucket_order", lambda bl, cpu=False: bl)
    _step(opt2, ps2, grads)
    for a, b in zip(after, ps2):
        assert torch.equal(a, b.detach())


def test_polar_overwrite_input_same_result_and_default_leaves_input():
    """overwrite_input=True gives the same factor (the same operations, the division in place); without it
    G is left unchanged; with it a bf16 input that no cast copies is the iteration's first buffer."""
    g = torch.Generator().manual_seed(0)
    G = torch.randn(3, 48, 32, generator=g).bfloat16()
    G0 = G.clone()
    for method in ("newton_schulz", "polar_express"):
        ref = steepest.polar(G, method, dtype=torch.bfloat16)
        assert torch.equal(G, G0)
        H = G.clone()
        out = steepest.polar(H, method, dtype=torch.bfloat16, overwrite_input=True)
        assert torch.equal(out, ref)
        assert not torch.equal(H, G0)  # overwritten: the normalization ran in place


def test_only_the_steps_own_direction_source_is_overwritten():
    """M_owned is True for a fresh M (a Nesterov combination or a cast) and False for the momentum buffer
    itself or the gradient itself, so the polar iteration never writes state or gradients; the contract
    (p.grad and the buffer as the torch rule leaves them) holds on every path."""
    for nesterov, momentum, dtype, owned in (
        (True, 0.95, torch.float32, True),  # grad.lerp(buf): fresh
        (False, 0.95, torch.float32, False),  # M is the buffer
        (False, 0.0, torch.float32, False),  # M is the gradient
        (False, 0.95, torch.bfloat16, True),  # buf.to(bf16): fresh
    ):
        ps, grads = _params([(24, 16)])
        opt = steepest.Muon(ps, lr=0.02, nesterov=nesterov, momentum=momentum, dtype=dtype, executor=PerMatrix())
        flags = []
        real = F.compute_update

        def spy(M, overwrite_input=False, flags=flags, real=real, **kw):
            flags.append(overwrite_input)
            return real(M, overwrite_input=overwrite_input, **kw)

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(F, "compute_update", spy)
            g = grads[0].clone()
            ps[0].grad = g
            opt.step()
            buf = opt.state[ps[0]].get("momentum_buffer")
            buf0 = None if buf is None else buf.clone()
            ps[0].grad = g
            opt.step()
        assert flags == [owned, owned], (nesterov, momentum, dtype)
        assert torch.equal(g, grads[0])  # the gradient is never written
        if buf is not None:  # the buffer is the EMA, not the normalized iterate
            torch.testing.assert_close(buf, buf0.lerp(grads[0], 1 - momentum), rtol=0, atol=0)


def test_buffers_wait_for_the_read_of_M_only_under_executors_that_read_every_M():
    """The kernel defers a block's momentum update to the read of its M (``direction_source``: the buffer still in
    cache when M reads it back) only under an executor that declares it reads every block's M
    (``defers_momentum``: PerMatrix, Batched). One that does not (owner-computes reads only its own matrices'
    M) still gets every buffer updated before it dualizes; were the flag ignored, a block whose M is never read
    here would keep its old buffer, which the second case shows."""
    assert PerMatrix.defers_momentum and Batched.defers_momentum
    assert not Executor.defers_momentum and not OwnerComputes.defers_momentum

    class FirstOnly(Executor):
        """Reads block 0's M only (the others' updates are zeros, as a non-owner's before its broadcast)."""

        def dualize(self, blocks):
            return [
                (F.compute_update(b.M, **b.kwargs) if i == 0 else torch.zeros_like(b.param), True)
                for i, b in enumerate(blocks)
            ]

    for declares, second_updated in ((False, True), (True, False)):
        ps, grads = _params([(24, 16), (24, 16)])
        ex = FirstOnly()
        ex.defers_momentum = declares
        opt = steepest.Muon(ps, lr=0.02, executor=ex)
        _step(opt, ps, grads)
        first, second = (opt.state[p].get("momentum_buffer") for p in ps)
        torch.testing.assert_close(first, 0.05 * grads[0], rtol=0, atol=0)  # EMA from zero: (1 - 0.95) g
        assert (second is not None) == second_updated, declares
        if second is not None:
            torch.testing.assert_close(second, 0.05 * grads[1], rtol=0, atol=0)


def _live_peak_mib(step) -> float:
    """Peak rise of live CPU tensor bytes during one call (torch.profiler's memory timeline; the measure of
    benchmarks/peers.py, byte-exact run to run)."""
    import numpy as np
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    total = np.asarray(sizes, dtype=np.float64).sum(axis=1)
    return float(total.max() - total[0]) / 2**20


@pytest.mark.parametrize("shapes", [CHARLM, GPT_BLOCK], ids=["charlm", "gpt-block"])
def test_per_matrix_peak_no_larger_than_torch_muon(shapes):
    """The issue's memory goal, byte-exact: steepest.Muon(executor=PerMatrix()) holds no more live tensor
    bytes at its step's peak than torch.optim.Muon (same shapes, same gradients, the third step, state
    existing). (On shapes where dtype="auto" keeps float32 for speed, below ~128 on native-bf16 CPUs, its
    iteration buffers are twice torch's forced bf16 ones.) The default executor batches same-shape matrices on CPU for speed (a bucket's stack is
    larger than one matrix; benchmarks/RESULTS.md has both numbers); PerMatrix is the low-memory choice."""
    peaks = {}
    for name in ("steepest", "torch"):
        ps, grads = _params(shapes)
        if name == "steepest":
            opt = steepest.Muon(ps, lr=0.02, weight_decay=0.0, executor=PerMatrix())
        else:
            opt = torch.optim.Muon(ps, lr=0.02, weight_decay=0.0)
        for _ in range(2):
            _step(opt, ps, grads)
        for p, gr in zip(ps, grads):
            p.grad = gr.clone()
        peaks[name] = _live_peak_mib(opt.step)
    assert peaks["steepest"] <= peaks["torch"], peaks
