"""steepest.integrations.torchtitan at the container level on CPU: FSDP2 on 2 gloo ranks against one process,
a DCP checkpoint saved at 2 ranks resumed at 1, and torchtitan's zero-lr state materialization.

torchtitan is not in the default install (``tools/setup.sh --with-torchtitan`` adds it), so the module skips
without it. The ranks are started by steepest.app.launch.launch (30 s collective timeout, killed after 180 s).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("torchtitan", reason="torchtitan is not installed (optional: tools/setup.sh --with-torchtitan)")

import torch.distributed.checkpoint as dcp  # noqa: E402
from torchtitan.components.optimizer import OptimizersContainer, ParamGroupConfig  # noqa: E402

import steepest  # noqa: E402
from steepest.app.launch import init_from_env, launch, shard_batch  # noqa: E402
from steepest.integrations.torchtitan import RECIPES, SteepestOptimizersContainer, steepest_optimizer  # noqa: E402

# Float64 end to end: FSDP2 and one process differ only in how the global-batch gradient is summed (mean of
# two per-rank means vs one mean, ~1e-16 relative); Newton-Schulz / the polar factor amplify that by at most
# ~1e3 on these small random layers over 4 steps, so agreement is ~1e-12. 1e-9 leaves room for that while a
# lost, doubled or misplaced update moves a weight by ~lr = 1e-2.
TOL = 1e-9
DT = torch.float64
V, D, H = 11, 8, 12  # vocabulary 11 shards unevenly (6 + 5 rows) over 2 ranks


class Tiny(torch.nn.Module):
    """A one-block language model with torchtitan's parameter names (tok_embeddings, norm, output)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.tok_embeddings = torch.nn.Embedding(V, D)
        self.w1 = torch.nn.Linear(D, H)
        self.w2 = torch.nn.Linear(H, D, bias=False)
        self.norm = torch.nn.LayerNorm(D)
        self.output = torch.nn.Linear(D, V, bias=False)
        self.to(DT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.tok_embeddings(x)
        h = h + self.w2(torch.tanh(self.w1(h)))
        return self.output(self.norm(h))


def batch(step: int, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randint(0, V, (n, 5), generator=g), torch.randint(0, V, (n, 5), generator=g)


def loss_fn(model, x, y) -> torch.Tensor:
    return torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())


def configs() -> dict[str, OptimizersContainer.Config]:
    """Structural routing (Muon, SignSGD) and torchtitan's regex groups (steepest.SpecGD beside its AdamW)."""
    regex = [
        ParamGroupConfig(
            pattern=r"^w[12]\.weight$", optimizer_name="steepest.SpecGD", optimizer_kwargs={"lr": 0.02, "momentum": 0.9}
        ),
        ParamGroupConfig(pattern=r".*", optimizer_name="AdamW", optimizer_kwargs={"lr": 1e-2}),
    ]
    return {
        "muon": steepest_optimizer("Muon", lr=0.02, weight_decay=0.1, adamw_lr=1e-2, dtype=DT),
        "signsgd": steepest_optimizer("SignSGD", lr=1e-2, momentum=0.9, weight_decay=0.1),
        "regex": steepest_optimizer("SpecGD", param_groups=regex),
    }


def full(p: torch.Tensor) -> torch.Tensor:
    return p.full_tensor() if hasattr(p, "full_tensor") else p.detach().clone()


def weights(model) -> dict[str, torch.Tensor]:
    return {n: full(p) for n, p in model.named_parameters()}


def train(model, opt, steps, info=None) -> None:
    for s in steps:
        x, y = batch(s)
        if info is not None:
            x, y = shard_batch(x, info), shard_batch(y, info)
        loss_fn(model, x, y).backward()
        opt.step()
        opt.zero_grad()


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


def fsdp_model(world: int) -> torch.nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    model = Tiny()
    mesh = init_device_mesh("cpu", (world,))
    for m in (model.tok_embeddings, model.w1, model.w2, model.output):
        fully_shard(m, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def worker(ckpt_dir: str) -> dict:
    info = init_from_env(backend="gloo", timeout_s=30)
    res: dict = {}
    for key, cfg in configs().items():
        model = fsdp_model(info.world_size)
        opt = cfg.build(model_parts=[model])
        res[f"{key}_executors"] = sorted({type(o.executor).__name__ for o in opt if hasattr(o, "executor")})
        before = weights(model)
        sd = opt.state_dict()  # torchtitan's zero-lr materialization, under FSDP2
        res[f"{key}_materialized_moved"] = max_diff(before, weights(model))
        res[f"{key}_materialized_keys"] = sum(k.startswith("state.") for k in sd)
        train(model, opt, range(2), info)
        if key == "muon":
            dcp.save({"model": model.state_dict(), "optim": opt.state_dict()}, checkpoint_id=ckpt_dir)
            res["muon_at_save"] = weights(model)
        train(model, opt, range(2, 4), info)
        res[key] = weights(model)
        if info.rank == 0:  # the one-process reference, in the same process (same BLAS threading)
            ref = Tiny()
            ref_opt = cfg.build(model_parts=[ref])
            ref_opt.state_dict()  # the same zero-lr step (it counts as AdamW's step 1, as in torchtitan)
            train(ref, ref_opt, range(4))
            res[f"{key}_reference"] = weights(ref)
    return res


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    ckpt = str(tmp_path_factory.mktemp("dcp"))
    return launch(worker, 2, (ckpt,), timeout_s=180)[0], ckpt


# ----------------------------------------------------------------------------------- (a) FSDP2 == one process
@pytest.mark.parametrize("key", ["muon", "signsgd", "regex"])
def test_fsdp2_two_ranks_equal_one_process(runs, key):
    res, _ = runs
    # under FSDP2 the steepest optimizers run the owner-computes executor on the mesh's group
    assert "OwnerComputes" in res[f"{key}_executors"]
    ref = res[f"{key}_reference"]
    assert max_diff(res[key], ref) < TOL
    assert max_diff(ref, weights(Tiny())) > 1e-3  # the runs moved (the comparison is not vacuous)


# ----------------------------------------------------------------------------------- (b) DCP 2 ranks -> 1
def test_dcp_saved_at_two_ranks_resumes_at_one(runs):
    res, ckpt = runs
    model = Tiny(seed=7)  # other weights: everything must come from the checkpoint
    opt = configs()["muon"].build(model_parts=[model])
    sd = {"model": model.state_dict(), "optim": opt.state_dict()}
    dcp.load(sd, checkpoint_id=ckpt)  # no process group: the 2 shards are read into full tensors
    model.load_state_dict(sd["model"])
    opt.load_state_dict(sd["optim"])
    assert max_diff(weights(model), res["muon_at_save"]) == 0.0
    momenta = [s["momentum_buffer"] for o in opt for s in o.state.values() if "momentum_buffer" in s]
    assert momenta and all(m.abs().max() > 0 for m in momenta)  # the saved momenta, not fresh zeros
    train(model, opt, range(2, 4))
    assert max_diff(weights(model), res["muon"]) < TOL  # same reasoning as TOL


# ----------------------------------------------------------------------------------- (c) zero-lr state init
def test_zero_lr_materialization_under_fsdp2_moves_nothing(runs):
    res, _ = runs
    for key in configs():
        assert res[f"{key}_materialized_moved"] == 0.0
        assert res[f"{key}_materialized_keys"] > 0


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_zero_lr_materialization_every_recipe(recipe):
    """torchtitan's state_dict() runs one step with zero gradients and lr 0 (init_optim_state): no weight moves
    (bit for bit), the lrs come back, no gradient is left behind, and the state exists for DCP."""
    model = Tiny()
    opt = steepest_optimizer(recipe, lr=0.05, weight_decay=0.1, momentum=0.9).build(model_parts=[model])
    before = weights(model)
    lrs = [g["lr"] for o in opt for g in o.param_groups]
    sd = opt.state_dict()
    assert max_diff(before, weights(model)) == 0.0
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert lrs == [g["lr"] for o in opt for g in o.param_groups]
    assert all(p.grad is None for p in model.parameters())
    assert any(k.startswith("state.") for k in sd)
    # the flat FQN keys torchtitan's checkpointer writes, from param_names
    assert "param_groups.w1.weight.lr" in sd and "param_groups.tok_embeddings.weight.lr" in sd


# ----------------------------------------------------------------------------------- config and groups
def test_structural_groups_carry_param_names_and_torch_keys():
    model = Tiny()
    opt = steepest_optimizer("Muon", lr=0.02, implementation="foreach").build(model_parts=[model])
    (muon,) = opt.optimizers
    assert isinstance(opt, SteepestOptimizersContainer) and isinstance(muon, steepest.Muon)
    names = {n for g in muon.param_groups for n in g["param_names"]}
    assert names == {n for n, _ in model.named_parameters()}
    assert all(g["foreach"] is True and g["fused"] is False for g in muon.param_groups)
    hidden = {n for g in muon.param_groups if g.get("algorithm", "steepest") != "adamw" for n in g["param_names"]}
    assert hidden == {"w1.weight", "w2.weight"}  # embedding, head, norm and biases on AdamW


def test_regex_groups_mix_steepest_and_torchtitan_optimizers():
    model = Tiny()
    opt = configs()["regex"].build(model_parts=[model])
    assert [type(o).__name__ for o in opt] == ["SpecGD", "AdamW"]
    assert opt.optimizers[0].param_groups[0]["param_names"] == ["w1.weight", "w2.weight"]


def test_unknown_recipe_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown recipe 'Lion'.*Muon"):
        steepest_optimizer("Lion")


def test_module_examples_run():
    """The module's doctests (CI's doctest step skips this module, which needs the optional torchtitan)."""
    import doctest

    import steepest.integrations.torchtitan as mod

    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3 and result.failed == 0


def test_import_steepest_does_not_import_torchtitan():
    import subprocess
    import sys

    code = "import sys, steepest; print('torchtitan' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
        == "False"
    )


def test_torchtitan_lr_scheduler_scales_every_steepest_group():
    """torchtitan's LRSchedulersContainer (LambdaLR per optimizer) warms up steepest's and AdamW's groups alike."""
    from torchtitan.components.optimizer import LRSchedulersContainer

    model = Tiny()
    opt = steepest_optimizer("Muon", lr=0.02, adamw_lr=1e-2).build(model_parts=[model])
    sched = LRSchedulersContainer.Config(warmup_steps=4).build(optimizers=opt, training_steps=10)
    groups = opt.optimizers[0].param_groups
    assert sorted({g["initial_lr"] for g in groups}) == [1e-2, 0.02]  # Muon's lr and adamw_lr, both scheduled
    for _ in range(2):
        sched.step()
    ratios = {round(g["lr"] / g["initial_lr"], 12) for g in groups}  # 12 digits: float division of equal ratios
    assert len(ratios) == 1 and 0 < ratios.pop() < 1  # one warm-up factor for every group, still warming up
