"""Fused q/k/v and per-head blocks (issue 19 item 5): ``param_groups(split_qkv=True)`` / ``heads=True``.

Each block of a fused or per-head projection is dualized on its own, through the block layout of the matrix
view (``row_blocks``). Checked against torch.optim.Muon applied block by block (every block its own
parameter: the parity pattern torchtitan uses) on GPT-2's fused ``c_attn`` (a Conv1D, stored transposed),
Llama's separate q/k/v (heads only) and ``nn.MultiheadAttention``'s ``in_proj_weight``, through the
per-matrix, batched and distributed executors.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import steepest

STEPS = 3
LR, WD = 0.02, 0.1


def _gpt2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=64, n_positions=16, n_embd=32, n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(cfg)


def _llama():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.LlamaForCausalLM(cfg)


def _blocks_of(W: torch.Tensor, transposed: bool, r: int) -> list[torch.Tensor]:
    """The r row blocks of W's (fan_out, fan_in) view, as separate tensors."""
    X = W.T if transposed else W
    return [b.clone() for b in X.chunk(r, dim=0)]


def _reference(W0, grads, transposed, r):
    """torch.optim.Muon stepping each block as its own parameter; returns W in its stored layout."""
    ps = [nn.Parameter(b) for b in _blocks_of(W0, transposed, r)]
    opt = torch.optim.Muon(ps, lr=LR, weight_decay=WD)
    for G in grads:
        for p, g in zip(ps, _blocks_of(G, transposed, r)):
            p.grad = g
        opt.step()
    X = torch.cat([p.detach() for p in ps])
    return X.T if transposed else X


def _executor(opt, kind):
    if kind == "batched":
        opt.executor = steepest.optim.executors.Batched(cpu=True)
    elif kind == "per-matrix":
        opt.executor = "per_matrix"
    elif kind == "distributed":
        opt = steepest.distributed(opt)
    return opt


def _check(model, names, kind, **routing):
    """Step only ``names`` (random gradients) with steepest.Muon on param_groups(model, **routing) and compare
    each with the block-wise torch.optim.Muon reference."""
    groups = steepest.param_groups(model, **routing)
    where = {n: g for g in groups for n in g["names"]}
    params = dict(model.named_parameters())
    W0 = {n: params[n].detach().clone() for n in names}
    g = torch.Generator().manual_seed(3)
    grads = {n: [torch.randn(W0[n].shape, generator=g) for _ in range(STEPS)] for n in names}
    opt = _executor(steepest.Muon(groups, lr=LR, weight_decay=WD, dtype=torch.bfloat16), kind)
    for t in range(STEPS):
        opt.zero_grad()
        for n in names:
            params[n].grad = grads[n][t].clone()
        opt.step()
    for n in names:
        grp = where[n]
        r = grp.get("row_blocks", 1)
        assert r > 1, n
        expected = _reference(W0[n], grads[n], grp.get("transposed", False), r)
        # bf16 Newton-Schulz on the same block values: the batched matmul (one (r, m, n) baddbmm) against
        # torch's per-block mm, and the per-block Frobenius norm from a dim= reduction against torch's full
        # one, may round differently by one bf16 ulp (2^-8 relative) in the update of size lr * O(1); over
        # 3 steps that bounds the difference by 3 * lr * 2^-8 * (shape scale <= 1 here).
        torch.testing.assert_close(params[n].detach(), expected, atol=STEPS * LR * 2**-8, rtol=0)
        # and it is not the whole-matrix update (the test would pass vacuously if blocks were ignored)
        whole = _reference(W0[n], grads[n], grp.get("transposed", False), 1)
        assert (params[n].detach() - whole).abs().max() > 10 * STEPS * LR * 2**-8
    return groups


EXECUTORS = ["per-matrix", "batched", "distributed"]


@pytest.mark.parametrize("kind", EXECUTORS)
def test_gpt2_fused_c_attn_split_into_q_k_v(kind):
    model = _gpt2()
    groups = _check(model, ["transformer.h.0.attn.c_attn.weight"], kind, split_qkv=True)
    (g,) = [g for g in groups if "transformer.h.0.attn.c_attn.weight" in g["names"]]
    assert g["row_blocks"] == 3 and g["transposed"] is True and g["names"] == ["transformer.h.0.attn.c_attn.weight"]
    assert "q, k, v as 3 blocks" in g["reasons"][0]
    # the output projection and the MLP keep one matrix each
    assert all("row_blocks" not in h for h in groups if "transformer.h.0.attn.c_proj.weight" in h["names"])


@pytest.mark.parametrize("kind", EXECUTORS)
def test_gpt2_per_head_blocks(kind):
    groups = _check(_gpt2(), ["transformer.h.0.attn.c_attn.weight"], kind, split_qkv=True, heads=True)
    assert [g["row_blocks"] for g in groups if "transformer.h.0.attn.c_attn.weight" in g["names"]] == [6]


@pytest.mark.parametrize("kind", EXECUTORS)
def test_llama_separate_q_k_v_per_head(kind):
    names = [f"model.layers.0.self_attn.{x}_proj.weight" for x in "qkv"]
    groups = _check(_llama(), names, kind, heads=True)
    rb = {n: g["row_blocks"] for g in groups for n in g["names"] if "row_blocks" in g}
    assert rb == {names[0]: 4, names[1]: 2, names[2]: 2}  # 4 query heads, 2 kv heads (grouped-query)
    # split_qkv alone: already separate, nothing to split
    assert not any("row_blocks" in g for g in steepest.param_groups(_llama(), split_qkv=True))


@pytest.mark.parametrize("kind", EXECUTORS)
@pytest.mark.parametrize("heads", [False, True])
def test_multihead_attention_in_proj(kind, heads):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.MultiheadAttention(16, 4, batch_first=True))
    groups = _check(model, ["1.in_proj_weight"], kind, split_qkv=True, heads=heads)
    assert [g["row_blocks"] for g in groups if "1.in_proj_weight" in g["names"]] == [12 if heads else 3]


class GQAFused(nn.Module):
    """A fused projection with grouped-query attention (Phi-3 style): q has 4 heads, k and v 2."""

    def __init__(self):
        super().__init__()
        self.num_heads, self.num_key_value_heads, self.head_dim = 4, 2, 4
        self.qkv_proj = nn.Linear(16, (4 + 2 + 2) * 4, bias=False)
        self.o_proj = nn.Linear(16, 16, bias=False)


def test_grouped_query_fused_projection():
    model = nn.Sequential(nn.Linear(16, 16), GQAFused(), nn.Linear(16, 5))
    with pytest.raises(ValueError, match="unequal sizes.*pass heads=True"):
        steepest.param_groups(model, split_qkv=True)
    groups = steepest.param_groups(model, heads=True)
    rb = {n: g.get("row_blocks", 1) for g in groups for n in g["names"]}
    assert rb["1.qkv_proj.weight"] == 8 and rb["1.o_proj.weight"] == 1 and rb["0.weight"] == 1


def test_fused_experts_stay_batches_and_describe_shows_blocks():
    class MoE(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2)
            self.experts = nn.Parameter(torch.randn(4, 8, 8))

    groups = steepest.param_groups(MoE(), split_qkv=True, heads=True)
    experts = [g for g in groups if "experts" in g["names"]]
    assert experts[0]["tensor_mode"] == "batch" and "row_blocks" not in experts[0]
    text = steepest.describe(steepest.Muon(groups), file=io.StringIO())
    assert "[6 blocks]" in text and "one block per head" in text


def test_row_blocks_must_divide_the_rows():
    W = nn.Parameter(torch.randn(6, 4))
    with pytest.raises(ValueError, match="row_blocks=4 must be an int that divides the 6 rows"):
        steepest.Muon([dict(params=[W], row_blocks=4)])
    steepest.Muon([dict(params=[W], row_blocks=3)])  # 3 blocks of (2, 4)


def test_geometry_view_round_trips():
    from steepest import geometry as geo

    W = torch.randn(5, 12)  # a Conv1D weight stored (in, out): the view is (12, 5) -> 3 blocks of (4, 5)
    X = geo.matrix_view(W, "flatten", True, 3)
    assert X.shape == (3, 4, 5) and torch.equal(X[1], W.T[4:8])
    assert torch.equal(geo.from_matrix(X, W.shape, True, 3), W)
    assert geo.matrix_shape((5, 12), "flatten", True, 3) == (3, 4, 5)


# ------------------------------------------------------------------------------------------ 2 gloo ranks
class _Attn(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(8, 16, bias=False)
        self.attn = nn.MultiheadAttention(16, 4, bias=False, batch_first=True)


def _dist_worker(fsdp: bool) -> dict:
    import torch.distributed as dist

    from steepest.app.launch import init_from_env

    init_from_env(timeout_s=30)
    model = _Attn()
    W0 = model.attn.in_proj_weight.detach().clone()
    groups = steepest.param_groups(model, split_qkv=True, heads=True)
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        fully_shard(model.attn, mesh=mesh)
        fully_shard(model, mesh=mesh)
        groups = steepest.param_groups(model, split_qkv=True, heads=True)
    opt = steepest.distributed(steepest.Muon(groups, lr=LR, weight_decay=WD, dtype=torch.bfloat16))
    g = torch.Generator().manual_seed(5)
    grads = [torch.randn(W0.shape, generator=g) for _ in range(STEPS)]  # the same on every rank
    p = model.attn.in_proj_weight
    for G in grads:
        opt.zero_grad()
        if fsdp:
            from torch.distributed.tensor import distribute_tensor

            p.grad = distribute_tensor(G.clone(), p.device_mesh, p.placements)
        else:
            p.grad = G.clone()
        opt.step()
    got = p.full_tensor() if hasattr(p, "full_tensor") else p.detach()
    ref = _reference(W0, grads, False, 12)
    return {"diff": float((got.detach() - ref).abs().max()), "row_blocks": [g.get("row_blocks") for g in groups]}


@pytest.mark.distributed
def test_two_gloo_ranks_fsdp2_equal_blockwise_torch_muon():
    """FSDP2 shards in_proj_weight's rows across 2 ranks (the shard boundary cuts the q/k/v blocks); the owner
    rank reassembles the matrix and dualizes its 12 head blocks (replicated parameters: the "distributed"
    executor of the tests above)."""
    from steepest.app.launch import launch

    out = launch(_dist_worker, 2, (True,), timeout_s=120)
    for r in out:
        assert 12 in r["row_blocks"]  # in_proj_weight: 4 + 4 + 4 head blocks
        # the owner rank runs the same bf16 batched Newton-Schulz as one process: the bound of _check
        assert r["diff"] <= STEPS * LR * 2**-8, r
