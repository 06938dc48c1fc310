"""steepest.optim.sharded and steepest.app.launch on 2 and 3 gloo processes over loopback.

Each spawned run does several scenarios (process start-up dominates the cost). Every comparison with
a one-process reference is computed inside rank 0, so both sides use the same BLAS threading.
Bounded time: init_process_group gets a 30 s timeout and launch() kills the ranks after 120 s, so a
hung collective fails the test instead of hanging the suite.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

import steepest
from steepest.app.launch import (
    init_from_env,
    launch,
    load_checkpoint,
    save_checkpoint,
    shard_batch,
)
from steepest.geometry import dualize_cost
from steepest.optim.sharded import DistributedSteepest, OwnerComputes, assign_owners, distributed, shard_sizes

# Float64 end to end: the distributed and one-process runs differ only in how the gradient of the
# global batch is summed (DDP: mean of per-rank means; reference: one mean), ~1e-16 relative. The
# polar factor amplifies a perturbation of M by at most ~ ||M|| / s_min(M) (< 1e3 for these random
# Gaussian layers), and we take 3 steps, so agreement is ~1e-12; 1e-9 leaves room for that while an
# actual bug (a lost, doubled or misplaced update) moves weights by ~lr = 1e-2.
TOL = 1e-9
DT = torch.float64
STEPS = 3


# ----------------------------------------------------------------------------------- fixtures shared
def make_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    # 2 x 5 head: shards [1, 1, 0] on 3 ranks (an empty shard); 7 x 10: uneven [3, 3, 1].
    return torch.nn.Sequential(
        torch.nn.Linear(6, 10),
        torch.nn.Tanh(),
        torch.nn.Linear(10, 7),
        torch.nn.Tanh(),
        torch.nn.Linear(7, 5, bias=False),
        torch.nn.Tanh(),
        torch.nn.Linear(5, 2, bias=False),
    ).to(DT)


def make_groups(model: torch.nn.Module) -> list[dict]:
    """Spectral matrices (owner path), one sign-descent matrix (local entrywise path), AdamW vectors."""
    mats = [model[0].weight, model[2].weight, model[6].weight]
    return [
        {"params": mats},
        {"params": [model[4].weight], "norm": "linf", "lr": 1e-3, "nesterov": False},
        {"params": [model[0].bias, model[2].bias], "algorithm": "adamw", "lr": 1e-2},
    ]


def make_opt(model, cls=steepest.Muon, **kw) -> steepest.SteepestDescent:
    kw = {"lr": 0.02, "dtype": DT, "weight_decay": 0.1, **kw}
    return cls(make_groups(model), **kw)


def batch(step: int, n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(n, 6, generator=g, dtype=DT), torch.randn(n, 2, generator=g, dtype=DT)


def loss_fn(model, x, y) -> torch.Tensor:
    return (model(x) - y).square().mean()


def reference(steps: range, model=None, opt=None) -> tuple[torch.nn.Module, list]:
    """One process, full global batch: the run every distributed run must reproduce."""
    model = model or make_model()
    opt = opt or make_opt(model)
    out = []
    for s in steps:
        x, y = batch(s)
        loss_fn(model, x, y).backward()
        opt.step()
        opt.zero_grad()
        out.append([p.detach().clone() for p in model.parameters()])
    return model, out


def full(p: torch.Tensor) -> torch.Tensor:
    return p.full_tensor() if hasattr(p, "full_tensor") else p.detach().clone()


def max_diff(a: list, b: list) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


# ----------------------------------------------------------------------------------- pure unit tests
def test_assign_owners_covers_every_matrix_once_and_balances():
    shapes = [(384, 1152), (384, 384), (1536, 384), (384, 1536)] * 4 + [(7, 10), (2, 5), (1, 1)]
    costs = [dualize_cost(s) for s in shapes]
    for world in (1, 2, 3, 8, 64):
        owners = assign_owners(costs, world)
        assert len(owners) == len(costs) and all(0 <= o < world for o in owners)  # each item exactly one owner
        loads = [sum(c for c, o in zip(costs, owners) if o == r) for r in range(world)]
        best = max(sum(costs) / world, max(costs))  # lower bound on any schedule's makespan
        assert max(loads) <= (4 / 3) * best  # Graham's LPT bound
        assert owners == assign_owners(list(costs), world)  # deterministic: every rank agrees
    assert assign_owners([4, 3, 3, 2], 2) == [0, 1, 1, 0]
    with pytest.raises(ValueError, match="world_size"):
        assign_owners([1.0], 0)


def test_dualize_cost_and_shard_sizes():
    assert dualize_cost((384, 1536)) == 384 * 1536 * 384
    assert dualize_cost((16, 3, 3, 3)) == 16 * 27 * 16  # conv kernel flattened to 16 x 27
    assert dualize_cost((4, 8, 2), tensor_mode="batch") == 4 * 8 * 2 * 2
    assert dualize_cost((8, 8), norm="linf") == 64
    for n in range(0, 12):
        for w in (1, 2, 3, 5):
            sizes = shard_sizes(n, w)
            assert sizes == [len(c) for c in torch.arange(n).chunk(w)] + [0] * (w - len(torch.arange(n).chunk(w)))


def test_single_process_fallback_equals_base_optimizer():
    """Without a process group the distributed optimizer is exactly the wrapped one."""
    a, b = make_model(), make_model()
    oa, ob0 = make_opt(a), make_opt(b)
    ob = distributed(ob0)
    assert ob is ob0 and type(ob) is steepest.Muon and isinstance(ob.executor, OwnerComputes)
    sched = torch.optim.lr_scheduler.StepLR(ob, 1, gamma=0.5)  # schedulers accept the wrapped optimizer
    for s in range(2):
        for m, o in ((a, oa), (b, ob)):
            loss_fn(m, *batch(s)).backward()
            o.step()
            o.zero_grad()
        sched.step()
        oa.param_groups[0]["lr"] *= 0.5
        oa.param_groups[1]["lr"] *= 0.5
        oa.param_groups[2]["lr"] *= 0.5
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    with pytest.raises(TypeError, match="steepest optimizer"):
        distributed(torch.optim.SGD(a.parameters(), lr=0.1))
    with pytest.raises(ValueError, match="partial_grads"):
        DistributedSteepest([a[0].weight], partial_grads="maybe")


# ----------------------------------------------------------------------------------- workers
def _ddp_run(info, steps, ddp=None, opt=None):
    from torch.nn.parallel import DistributedDataParallel as DDP

    ddp = ddp or DDP(make_model())
    model = ddp.module
    opt = opt or distributed(make_opt(model))
    out = []
    for s in steps:
        x, y = batch(s)
        loss_fn(ddp, shard_batch(x, info), shard_batch(y, info)).backward()
        opt.step()
        opt.zero_grad()
        out.append([p.detach().clone() for p in model.parameters()])
    return model, ddp, opt, out


def _fsdp_model(seed: int = 0):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = make_model(seed)
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for i in (0, 2, 4, 6):
        fully_shard(model[i], mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def _fsdp_run(info, steps, model=None, opt=None):
    model = model or _fsdp_model()
    opt = opt or distributed(make_opt(model))
    out = []
    for s in steps:
        x, y = batch(s)
        loss_fn(model, shard_batch(x, info), shard_batch(y, info)).backward()
        opt.step()
        opt.zero_grad()
        out.append([full(p) for p in model.parameters()])
    return model, opt, out


def _same_grads_step(model, opt, s, drop=()):
    """Every rank computes the full-batch gradient (identical bits), then optionally drops some."""
    loss_fn(model, *batch(s)).backward()
    for p in drop:
        p.grad = None
    opt.step()
    opt.zero_grad()


def worker(ckpt_dir: str, phase: str) -> dict:
    info = init_from_env(timeout_s=30)
    rank, world = info.rank, info.world_size
    res = {"world": world}
    if phase == "save":
        # 1. identical gradients everywhere: the distributed step is bit-identical to the local one
        model, ref_model = make_model(), make_model()
        opt, ref = distributed(make_opt(model, momentum=0.9)), make_opt(ref_model, momentum=0.9)
        for s in range(STEPS):
            _same_grads_step(model, opt, s)
            _same_grads_step(ref_model, ref, s)
        res["exact"] = all(torch.equal(a, b) for a, b in zip(model.parameters(), ref_model.parameters()))
        res["owners"] = opt.executor.last_owners
        res["stats"] = opt.executor.step_stats
        # 2. a gradient that is None on rank 1 only: averaged with zeros (default), skipped, or raised
        for policy in ("average", "skip", "raise"):
            m = make_model(1)
            o = distributed(make_opt(m), partial_grads=policy)
            r_m = make_model(1)
            r_o = make_opt(r_m)
            try:
                _same_grads_step(m, o, 0, drop=[m[2].weight] if rank == 1 else [])
                res[f"partial_{policy}"] = "stepped"
            except ValueError as e:
                res[f"partial_{policy}"] = "raised" if "some ranks only" in str(e) else repr(e)
            loss_fn(r_m, *batch(0)).backward()
            if policy == "average":
                r_m[2].weight.grad *= 1 - 1 / world  # one rank of `world` contributed zeros
            elif policy == "skip":
                r_m[2].weight.grad = None
            if policy != "raise":
                r_o.step()
            res[f"partial_{policy}_match"] = all(torch.equal(a, b) for a, b in zip(m.parameters(), r_m.parameters()))
        # 3. a NaN on rank 0 only: every rank raises (raise) or every rank skips that matrix (skip)
        for policy in ("raise", "skip"):
            m = make_model(2)
            o = distributed(make_opt(m, nonfinite=policy))
            before = [p.detach().clone() for p in m.parameters()]
            loss_fn(m, *batch(0)).backward()
            if rank == 0:
                m[0].weight.grad[0, 0] = float("nan")
            try:
                o.step()
                res[f"nan_{policy}"] = "stepped"
            except steepest.NonFiniteGradientError:
                res[f"nan_{policy}"] = "raised"
            changed = [not torch.equal(a, b) for a, b in zip(m.parameters(), before)]
            res[f"nan_{policy}_changed"] = changed
        # 4. a parameter with no gradient on any rank is left alone (no collective waits for it)
        m = make_model(3)
        o = distributed(make_opt(m, momentum=0.9))
        _same_grads_step(m, o, 0, drop=[m[6].weight])
        res["none_everywhere_state"] = len(o.state[m[6].weight])
    # 5. DDP on split batches vs the one-process full batch; checkpoint after 2 steps, resume
    if phase == "save":
        model, ddp, opt, out = _ddp_run(info, range(2))
        save_checkpoint(f"{ckpt_dir}/ddp", ddp, opt, extra={"step": 2})
        _, _, _, out2 = _ddp_run(info, range(2, 4), ddp=ddp, opt=opt)
        model_b = make_model(seed=7)  # different init: everything must come from the checkpoint
        ddp_b = torch.nn.parallel.DistributedDataParallel(model_b)
        opt_b = distributed(make_opt(model_b))
        extra = load_checkpoint(f"{ckpt_dir}/ddp", ddp_b, opt_b)
        _, _, _, out_b = _ddp_run(info, range(2, 4), ddp=ddp_b, opt=opt_b)
        res["ddp"], res["ddp_resumed_same_world"] = out + out2, out_b
        res["ddp_extra"] = extra
        res["ddp_resume_equal"] = all(torch.equal(a, b) for a, b in zip(out2[-1], out_b[-1]))
    else:  # resume on a different world size
        model_b = make_model(seed=7)
        ddp_b = torch.nn.parallel.DistributedDataParallel(model_b)
        opt_b = distributed(make_opt(model_b))
        res["ddp_extra"] = load_checkpoint(f"{ckpt_dir}/ddp", ddp_b, opt_b)
        _, _, _, out_b = _ddp_run(info, range(2, 4), ddp=ddp_b, opt=opt_b)
        res["ddp_resumed_other_world"] = out_b
    # 7. Adaptive (gradient proxy, deciding every step) under DDP and FSDP2: the one-process trajectory
    if phase == "save":
        ada = lambda m: distributed(make_opt(m, cls=steepest.Adaptive, every=1))  # noqa: E731
        from torch.nn.parallel import DistributedDataParallel as DDP

        m = make_model()
        _, _, opt, res["adaptive_ddp"] = _ddp_run(info, range(3), ddp=DDP(m), opt=ada(m))
        res["adaptive_ddp_choices"] = opt.geometries()
        res["adaptive_ddp_type"] = f"{type(opt).__name__} {type(opt.executor).__name__}"
        m = _fsdp_model()
        _, opt, res["adaptive_fsdp"] = _fsdp_run(info, range(3), model=m, opt=ada(m))
        res["adaptive_fsdp_choices"] = opt.geometries()
    # 6. FSDP2 (fully_shard, DTensor Shard(0) with uneven and empty shards)
    if phase == "save":
        model, opt, out = _fsdp_run(info, range(2))
        save_checkpoint(f"{ckpt_dir}/fsdp", model, opt)
        _, _, out2 = _fsdp_run(info, range(2, 4), model=model, opt=opt)
        res["fsdp"] = out + out2
        res["fsdp_local_shapes"] = [tuple(p.to_local().shape) for p in model.parameters()]
    else:
        model_b = _fsdp_model(seed=7)
        opt_b = distributed(make_opt(model_b))
        load_checkpoint(f"{ckpt_dir}/fsdp", model_b, opt_b)
        _, _, out_b = _fsdp_run(info, range(2, 4), model=model_b, opt=opt_b)
        res["fsdp_resumed_other_world"] = out_b
        res["fsdp_local_shapes"] = [tuple(p.to_local().shape) for p in model_b.parameters()]
        res["fsdp_momentum_is_dtensor"] = all(
            type(v["momentum_buffer"]).__name__ == "DTensor" for v in opt_b.state.values() if "momentum_buffer" in v
        )
    return res


# ----------------------------------------------------------------------------------- distributed tests
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    ckpt = str(tmp_path_factory.mktemp("ckpt"))
    two = launch(worker, 2, (ckpt, "save"), timeout_s=120)
    three = launch(worker, 3, (ckpt, "load"), timeout_s=120)
    return two, three


@pytest.mark.distributed
def test_identical_grads_give_bit_identical_step_and_owner_cover(runs):
    two, _ = runs
    for r in two:
        assert r["exact"]  # same inputs, same compute_update call on the owner: the same bits
        names = r["owners"]
        assert len(names) == 3 and set(names.values()) == {0, 1}  # 3 spectral matrices, both ranks own work
        assert r["stats"]["matrices"] == 3
    assert two[0]["owners"] == two[1]["owners"]
    assert sum(r["stats"]["owned"] for r in two) == 3  # every matrix dualized exactly once


@pytest.mark.distributed
def test_partial_and_missing_gradients_do_not_hang(runs):
    two, _ = runs
    for r in two:
        assert r["partial_average"] == "stepped" and r["partial_average_match"]
        assert r["partial_skip"] == "stepped" and r["partial_skip_match"]
        assert r["partial_raise"] == "raised" and r["partial_raise_match"]  # raised on every rank, nothing changed
        assert r["none_everywhere_state"] == 0


@pytest.mark.distributed
def test_nonfinite_policy_is_global(runs):
    two, _ = runs
    for r in two:  # the NaN is on rank 0 only, yet both ranks take the same decision
        assert r["nan_raise"] == "raised" and not any(r["nan_raise_changed"])
        assert r["nan_skip"] == "stepped"
        assert r["nan_skip_changed"] == [False, True, True, True, True, True]  # only model[0].weight skipped


@pytest.mark.distributed
def test_ddp_matches_single_process_and_replicas_identical(runs):
    two, three = runs
    _, ref = reference(range(4))
    for step in range(4):
        assert all(torch.equal(a, b) for a, b in zip(two[0]["ddp"][step], two[1]["ddp"][step]))
        assert max_diff(two[0]["ddp"][step], ref[step]) < TOL
    for step in range(2):
        assert all(
            torch.equal(a, b)
            for a, b in zip(three[0]["ddp_resumed_other_world"][step], three[2]["ddp_resumed_other_world"][step])
        )
        assert max_diff(three[0]["ddp_resumed_other_world"][step], ref[2 + step]) < TOL
        assert max_diff(two[0]["ddp_resumed_same_world"][step], ref[2 + step]) < TOL
    assert all(r["ddp_resume_equal"] for r in two)  # same world, same data: same bits as never stopping
    assert two[0]["ddp_extra"] == {"step": 2} and three[1]["ddp_extra"] == {"step": 2}


@pytest.mark.distributed
def test_fsdp2_matches_single_process_with_uneven_and_empty_shards(runs):
    two, three = runs
    _, ref = reference(range(4))
    for step in range(4):
        for r in two:
            assert max_diff(r["fsdp"][step], ref[step]) < TOL
    for step in range(2):
        for r in three:
            assert max_diff(r["fsdp_resumed_other_world"][step], ref[2 + step]) < TOL
    # model[6].weight (2 x 5) on 3 ranks: shards of 1, 1 and 0 rows
    assert [r["fsdp_local_shapes"][5] for r in three] == [(1, 5), (1, 5), (0, 5)]
    assert [r["fsdp_local_shapes"][2] for r in three] == [(3, 10), (3, 10), (1, 10)]
    assert all(r["fsdp_momentum_is_dtensor"] for r in three)


@pytest.mark.distributed
def test_adaptive_under_ddp_and_fsdp2_matches_one_process(runs):
    """Adaptive is distributed like every recipe: same choices on every rank, the one-process weights."""
    two, _ = runs
    model = make_model()
    opt = make_opt(model, cls=steepest.Adaptive, every=1)
    _, ref = reference(range(3), model, opt)
    assert two[0]["adaptive_ddp_type"] == "Adaptive OwnerComputes"
    for kind in ("ddp", "fsdp"):
        assert two[0][f"adaptive_{kind}_choices"] == two[1][f"adaptive_{kind}_choices"] == opt.geometries()
        for step in range(3):
            for r in two:
                assert max_diff(r[f"adaptive_{kind}"][step], ref[step]) < TOL, (kind, step)


def hang_worker() -> None:
    """Rank 0 enters a collective that rank 1 never joins: the hang the optimizer must never cause."""
    import time

    info = init_from_env(timeout_s=60)
    if info.rank == 0:
        dist.barrier()
    else:
        time.sleep(60)


@pytest.mark.distributed
def test_launch_turns_a_hang_into_a_timeout():
    """The harness the tests above rely on: a hung collective fails within the deadline, it does not hang."""
    with pytest.raises(TimeoutError, match="did not finish"):
        launch(hang_worker, 2, timeout_s=8)


def test_distributed_wraps_adaptive_and_refuses_optimizers_with_their_own_step():
    """steepest.Adaptive chooses geometries through its chooser, so distributed() sets its executor like any
    optimizer's; a subclass that replaces step() would bypass the executor and silently lose the
    distribution: refused."""
    W = torch.nn.Parameter(torch.randn(4, 4))
    for make in (steepest.Adaptive, steepest.Muon):
        opt = make([W])
        local = opt.executor
        assert steepest.distributed(opt) is opt and type(opt) is make
        assert isinstance(opt.executor, OwnerComputes) and opt.executor.local is local
        assert steepest.distributed(opt, partial_grads="skip") is opt  # again: re-configured, not nested
        assert opt.executor.local is local and opt.executor.partial_grads == "skip"

    class OwnStep(steepest.SpecGD):
        def step(self, closure=None):
            return None

    with pytest.raises(TypeError, match="defines its own step"):
        steepest.distributed(OwnStep([W]))


def test_distributed_optimizer_deepcopies_and_pickles_with_its_executor():
    import copy
    import pickle

    from steepest.optim import executors as E

    W = torch.nn.Parameter(torch.randn(6, 4))
    opt = steepest.distributed(steepest.Muon([W], momentum=0.9), partial_grads="skip")
    W.grad = torch.randn(6, 4)
    opt.step()
    for twin in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert type(twin) is steepest.Muon and isinstance(twin.executor, OwnerComputes)
        assert twin.executor.partial_grads == "skip" and twin.executor.process_group is None
        twin.param_groups[0]["params"][0].grad = torch.ones(6, 4)
        twin.step()  # one-process world: the local executor steps it
    # A copy made with a sub-group holds its ranks; without that group it refuses to step, naming bind().
    ex = pickle.loads(pickle.dumps(OwnerComputes()))
    ex.__setstate__(dict(ex.__getstate__(), _group=E._UNBOUND, _ranks=[1, 2]))
    assert "ranks [1, 2]" in repr(ex)
    with pytest.raises(ValueError, match=r"process group over ranks \[1, 2\].*opt.executor.bind\(group\)"):
        _ = ex.process_group
    assert ex.bind(None).process_group is None


DTENSOR_CODE = """
import tempfile, torch, torch.distributed as dist, steepest
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import distribute_tensor, Shard
dist.init_process_group("gloo", init_method="file://" + tempfile.mktemp(), rank=0, world_size=1)
mesh = init_device_mesh("cpu", (1,))
full = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
P = torch.nn.Parameter(distribute_tensor(full.clone(), mesh, [Shard(0)]))
Q = torch.nn.Parameter(full.clone())
opt, ref = steepest.Muon([P], dtype=None), steepest.Muon([Q], dtype=None)
assert type(opt.executor).__name__ == "OwnerComputes", opt.executor
g = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
P.grad, Q.grad = distribute_tensor(g, mesh, [Shard(0)]), g
opt.step(); ref.step()
assert torch.equal(P.full_tensor(), Q.detach())
try:
    steepest.Muon([P], executor="per_matrix")
except ValueError as e:
    assert "steepest.distributed" in str(e), e
else:
    raise AssertionError("per_matrix accepted DTensors")
dist.destroy_process_group()
print("ok")
"""


def test_fsdp2_dtensor_parameters_pick_the_distributed_executor_automatically():
    """issue 19 item 3: DTensor parameters given to a plain optimizer used to die in .tolist()."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-c", DTENSOR_CODE], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]


def order_worker(named):
    """Same-shaped matrices in another order on rank 1 (with or without names): both ranks must raise
    before any parameter changes, naming the first difference."""
    init_from_env(timeout_s=30)
    torch.manual_seed(0)
    a, b = torch.nn.Parameter(torch.randn(4, 4)), torch.nn.Parameter(torch.randn(4, 4))
    ps = [a, b] if dist.get_rank() == 0 else [b, a]
    group = dict(params=ps, names=["a", "b"] if dist.get_rank() == 0 else ["b", "a"]) if named else dict(params=ps)
    opt = distributed(steepest.Muon([group], lr=0.1))
    before = [p.detach().clone() for p in (a, b)]
    for p in (a, b):
        p.grad = torch.ones(4, 4)
    try:
        opt.step()
        out = "stepped"
    except ValueError as e:
        out = str(e)
    unchanged = all(torch.equal(p, q) for p, q in zip((a, b), before))
    return out, unchanged  # launch tears the process group down after it has the result


@pytest.mark.distributed
@pytest.mark.parametrize("named", [True, False])
def test_ranks_that_list_parameters_in_another_order_raise_on_every_rank(named):
    """issue 23 item 6: the replicated path used to apply one matrix's update to the other silently."""
    # Both ranks raise at the first step's all_gather (no rank waits for a collective the other never
    # joins); the launch deadline bounds start-up of two torch processes on a loaded 2-core machine too
    # (seen at ~30 s under load 13), so it is 60 s, not the step's 30 s of the issue.
    results = launch(order_worker, 2, (named,), timeout_s=60)
    for out, unchanged in results:
        assert "the ranks do not step the same parameters in the same order (parameter 0: rank 0 has " in out
        assert ("rank 0 has a shape (4, 4)" in out) == named and ("|W|_1=" in out) and unchanged


def test_distributed_steepest_refuses_an_executor_argument():
    """DistributedSteepest is SteepestDescent with OwnerComputes: an executor= of the caller's is an error
    (it used to be a 'multiple values for keyword argument' TypeError from the super call)."""
    W = torch.nn.Parameter(torch.randn(4, 3))
    with pytest.raises(TypeError, match="sets the executor itself"):
        DistributedSteepest([W], lr=0.02, executor="per_matrix")
    assert type(DistributedSteepest([W], 0.02).executor).__name__ == "OwnerComputes"  # lr positionally still
