"""Whole-model routing: which parameter goes to matrix geometry and which to AdamW, and describe()."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

import steepest


class TinyGPT(nn.Module):
    def __init__(self, vocab=11, d=8, tie=False):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(
            [
                nn.ModuleDict(
                    dict(
                        ln=nn.LayerNorm(d),
                        qkv=nn.Linear(d, 3 * d, bias=False),
                        proj=nn.Linear(d, d),
                        fc=nn.Linear(d, 4 * d),
                    )
                )
            ]
        )
        self.heads_w = nn.Parameter(torch.randn(2, d, d))  # per-head 3-D parameter
        self.lm_head = nn.Linear(d, vocab, bias=False)
        if tie:
            self.lm_head.weight = self.wte.weight


def _routes(groups):
    out = {}
    for g in groups:
        for name, reason in zip(g["names"], g["reasons"]):
            out[name] = (g["algorithm"], g.get("tensor_mode"), reason)
    return out


def test_default_routing_of_a_gpt_like_model():
    r = _routes(steepest.param_groups(TinyGPT()))
    assert r["wte.weight"][0] == "adamw" and r["wte.weight"][2] == "embedding"
    assert r["lm_head.weight"][0] == "adamw" and r["lm_head.weight"][2].startswith("output head")
    assert "vocabulary" in r["lm_head.weight"][2]  # found by structure (Linear onto wte's vocabulary), not name
    assert r["blocks.0.ln.weight"][0] == "adamw" and r["blocks.0.proj.bias"][0] == "adamw"
    for name in ("blocks.0.qkv.weight", "blocks.0.proj.weight", "blocks.0.fc.weight"):
        assert r[name][:2] == ("steepest", "flatten")
    assert r["heads_w"][:2] == ("steepest", "batch")  # 3-D free tensor: a batch of matrices by default


def test_tied_head_and_batch_patterns_and_overrides():
    model = TinyGPT(tie=True)
    groups = steepest.param_groups(model, batch_patterns=["heads_w"], overrides={"blocks.0.fc.*": "adamw"})
    r = _routes(groups)
    assert r["wte.weight"][0] == "adamw"
    assert "lm_head.weight" not in r  # the tied tensor appears once, under its first owner
    assert r["heads_w"][:2] == ("steepest", "batch")
    assert r["blocks.0.fc.weight"][0] == "adamw" and "override" in r["blocks.0.fc.weight"][2]
    n_params = sum(len(g["params"]) for g in groups)
    assert n_params == len({id(p) for p in model.parameters()})  # every trainable tensor exactly once


def test_last_linear_is_the_head_by_the_width_rule_and_the_first_conv_is_the_input_layer():
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 10))
    r = _routes(steepest.param_groups(model))
    assert r["0.weight"][0] == "adamw" and "input layer" in r["0.weight"][2]  # consumes the raw 1-channel image
    assert r["2.weight"][0] == "steepest"
    assert r["4.weight"][0] == "adamw" and r["4.weight"][2].startswith("output head")
    hidden_conv = _routes(steepest.param_groups(nn.Sequential(nn.Conv2d(8, 8, 3), nn.Conv2d(8, 8, 3))))
    assert all(v[0] == "steepest" and "flattened" in v[2] for n, v in hidden_conv.items() if n.endswith("weight"))


def test_module_types_and_frozen_parameters():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    model[1].weight.requires_grad_(False)
    r = _routes(steepest.param_groups(model, module_types={nn.Linear: "matrix"}))
    assert "1.weight" not in r
    assert r["2.weight"][0] == "steepest" and "module type" in r["2.weight"][2]


def test_groups_drive_one_optimizer_with_per_route_hyperparameters():
    model = TinyGPT()
    groups = steepest.param_groups(model, adamw_lr=1e-3, adamw_weight_decay=0.05, matrix_options={"lr": 0.03})
    opt = steepest.Muon(groups)
    algos = {g["algorithm"]: g for g in opt.param_groups}
    assert algos["steepest"]["lr"] == 0.03 and algos["steepest"]["norm"] == "spectral"
    assert algos["adamw"]["lr"] == 1e-3 and algos["adamw"]["weight_decay"] == 0.05
    x = torch.randint(0, 11, (4,))
    h = model.wte(x)
    blk = model.blocks[0]
    out = model.lm_head(blk.fc(blk.ln(h))[:, :8] + blk.proj(h) + blk.qkv(h)[:, :8] + h @ model.heads_w.sum(0))
    out.sum().backward()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed == set(before)  # every parameter, matrix or not, was stepped by the one optimizer


def test_describe_lists_every_parameter_with_its_reason():
    model = TinyGPT()
    buf = io.StringIO()
    text = steepest.describe(steepest.Muon(steepest.param_groups(model)), file=buf)
    assert buf.getvalue().strip() == text
    for name, _ in model.named_parameters():
        assert name in text
    assert "spectral" in text and "embedding" in text and "output head" in text
    assert text.splitlines()[-1].startswith(f"{len(list(model.parameters()))} parameters: 4 in matrix geometry")
    assert "(optimizer default)" not in text and "batch" in text


def test_bad_routes():
    with pytest.raises(ValueError, match="must be one of"):
        steepest.param_groups(TinyGPT(), overrides={"*": "sgd"})
    with pytest.raises(ValueError, match="not a matrix"):
        steepest.param_groups(TinyGPT(), overrides={"*.bias": "matrix"})


# ---------------------------------------------------------------- structure rules (issue 10)
class FakeConv1D(nn.Module):
    """transformers.pytorch_utils.Conv1D without importing transformers: y = x @ W + b, W stored (in, out)."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        return x @ self.weight + self.bias


class Block(nn.Module):
    """A pre-norm transformer block: its last Linear (proj) is no output head."""

    def __init__(self, d=8):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.fc = nn.Linear(d, 4 * d)
        self.proj = nn.Linear(4 * d, d)

    def forward(self, x):
        return x + self.proj(torch.relu(self.fc(self.ln(x))))


class Classifier(nn.Module):
    """Custom Module whose head maps back to the input width: only a trace or head= can find it."""

    def __init__(self, d=8):
        super().__init__()
        self.body = Block(d)
        self.out = nn.Linear(d, d)

    def forward(self, x):
        return self.out(self.body(x))


def test_a_block_passed_alone_routes_every_linear_as_hidden():
    r = _routes(steepest.param_groups(Block()))
    assert r["fc.weight"][0] == r["proj.weight"][0] == "steepest"
    # ... also with a traced forward: the residual stream reaches the output around every layer.
    r = _routes(steepest.param_groups(Block(), example_inputs=torch.randn(2, 8)))
    assert r["proj.weight"][0] == "steepest"


def test_example_inputs_find_a_head_that_no_other_rule_sees():
    assert _routes(steepest.param_groups(Classifier()))["out.weight"][0] == "steepest"  # width rule: 8 -> 8
    groups = steepest.param_groups(Classifier(), example_inputs=torch.randn(2, 8))
    r = _routes(groups)
    assert r["out.weight"][0] == "adamw" and "traced" in r["out.weight"][2]
    assert r["body.proj.weight"][0] == "steepest"
    r = _routes(steepest.param_groups(Classifier(), head="out"))
    assert r["out.weight"][0] == "adamw" and "head=" in r["out.weight"][2]


def test_conv1d_is_hidden_in_its_own_transposed_group():
    model = nn.Sequential(FakeConv1D(12, 4), nn.ReLU(), nn.Linear(12, 4), nn.ReLU(), nn.Linear(4, 3))
    groups = steepest.param_groups(model)
    (conv1d,) = [g for g in groups if g.get("transposed")]
    assert conv1d["names"] == ["0.weight"] and conv1d["role"] == "hidden" and conv1d["algorithm"] == "steepest"
    (plain,) = [g for g in groups if g["role"] == "hidden" and not g["transposed"]]
    assert plain["names"] == ["2.weight"]
    assert "W.T" in steepest.describe(steepest.Muon(groups), file=io.StringIO())


def test_input_conv_depthwise_and_grouped_conv_rules():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3),
        nn.Conv2d(8, 8, 3, groups=8),
        nn.Conv2d(8, 16, 3, groups=8),
        nn.Conv2d(16, 16, 3, groups=2),
        nn.Conv2d(16, 8, 1),
    )
    groups = steepest.param_groups(model)
    r = _routes(groups)
    assert r["0.weight"][0] == "adamw" and "input layer" in r["0.weight"][2]
    for name in ("1.weight", "2.weight"):  # depthwise (also with a channel multiplier): one input channel per filter
        assert r[name][0] == "adamw" and "depthwise" in r[name][2]
    assert {g["role"] for g in groups if "1.weight" in g["names"]} == {"other"}
    assert r["3.weight"][:2] == ("steepest", "flatten") and "grouped" in r["3.weight"][2]
    assert r["4.weight"][:2] == ("steepest", "flatten")
    # A depthwise conv can still be sent to matrix geometry (as (C, k*k)) by an override.
    r = _routes(steepest.param_groups(model, overrides={"1.weight": "matrix"}))
    assert r["1.weight"][:2] == ("steepest", "flatten")
    # Patch embedding: stride == kernel size marks the input layer even with many input channels.
    r = _routes(steepest.param_groups(nn.Sequential(nn.Conv2d(16, 8, 4, stride=4), nn.Conv2d(8, 8, 1))))
    assert r["0.weight"][0] == "adamw" and "patch embedding" in r["0.weight"][2]


def test_split_qkv_needs_an_attention_module():
    """TinyGPT's qkv Linear sits in a ModuleDict with no head count: nothing says where q, k, v or the heads
    are, so split_qkv/heads leave it whole (tests/test_qkv.py covers real attention modules)."""
    plain = steepest.param_groups(TinyGPT())
    for kw in (dict(split_qkv=True), dict(heads=True)):
        split = steepest.param_groups(TinyGPT(), **kw)
        assert [g["names"] for g in split] == [g["names"] for g in plain]
        assert not any("row_blocks" in g for g in split)


def test_param_groups_of_a_generator_is_a_clear_type_error():
    model = TinyGPT()
    with pytest.raises(TypeError, match=r"got a generator\. Pass `model`, not `model.parameters\(\)`"):
        steepest.param_groups(model.parameters())
    with pytest.raises(TypeError, match="got a list"):
        steepest.param_groups(list(model.parameters()))


def test_groups_per_role_carry_no_hyperparameters_unless_given():
    groups = steepest.param_groups(TinyGPT())
    assert {g["role"] for g in groups} == {"hidden", "embedding", "head", "vector"}
    for g in groups:
        assert not {"lr", "betas", "weight_decay"} & set(g), g["role"]
        assert len(g["names"]) == len(g["reasons"]) == len(g["params"])
    groups = steepest.param_groups(
        TinyGPT(),
        embedding=dict(lr=1e-3),
        head=dict(lr=2e-3, weight_decay=0.1),
        vector=dict(weight_decay=0.0),
        hidden=dict(lr=0.05),
        adamw_lr=5e-4,
    )
    by = {(g["role"], g["tensor_mode"] if g["role"] == "hidden" else None): g for g in groups}
    assert by["embedding", None]["lr"] == 1e-3 and by["head", None]["lr"] == 2e-3
    assert by["head", None]["weight_decay"] == 0.1 and by["vector", None]["lr"] == 5e-4
    assert by["hidden", "flatten"]["lr"] == by["hidden", "batch"]["lr"] == 0.05


def test_optimizer_arguments_reach_every_routed_group():
    opt = steepest.Muon(steepest.param_groups(TinyGPT()), lr=0.03, adamw_lr=1e-3, betas=(0.8, 0.9))
    for g in opt.param_groups:
        assert g["lr"] == (0.03 if g["role"] == "hidden" else 1e-3)
        if g["algorithm"] == "adamw":
            assert tuple(g["betas"]) == (0.8, 0.9)


def test_optimizer_gives_vectors_no_weight_decay_by_default():
    opt = steepest.Muon(steepest.param_groups(TinyGPT()), lr=0.03, weight_decay=0.1)
    wd = {g["role"]: g["weight_decay"] for g in opt.param_groups}
    assert wd["vector"] == 0.0 and wd["hidden"] == 0.1 and wd["embedding"] == 0.1


def test_transposed_group_uses_the_shape_scale_of_the_transpose():
    torch.manual_seed(0)
    a, b = FakeConv1D(16, 4), nn.Linear(4, 16, bias=False)  # the same (16 out, 4 in) map
    b.weight.data.copy_(a.weight.data.T)
    opt_a = steepest.Muon([dict(params=[a.weight], transposed=True)], lr=0.1, dtype=torch.float32)
    opt_b = steepest.Muon([b.weight], lr=0.1, dtype=torch.float32)
    g = torch.randn(16, 4)
    a.weight.grad, b.weight.grad = g.T.clone(), g.clone()
    opt_a.step()
    opt_b.step()
    torch.testing.assert_close(a.weight.data.T, b.weight.data)


def test_describe_shows_the_geometry_actually_used():
    groups = steepest.param_groups(TinyGPT())
    text = steepest.describe(groups, file=io.StringIO())
    assert "(optimizer default)" not in text and "norm set by the optimizer" in text
    text = steepest.describe(steepest.SchattenDescent(groups, lr=0.01, p=4), file=io.StringIO())
    assert "schatten p=4" in text and "role" in text.splitlines()[0]


def test_mlp_raw_input_linear_stays_hidden_as_the_readme_says():
    """README: the conv that reads the raw input goes to `embedding`; a Linear on raw features stays `hidden`,
    with or without example_inputs (only the output head is found from the trace)."""
    mlp = nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    for kw in ({}, dict(example_inputs=torch.randn(2, 784))):
        r = _routes(steepest.param_groups(mlp, **kw))
        assert r["0.weight"][0] == "steepest" and r["2.weight"][0] == "steepest"
        assert r["4.weight"][2].startswith("output head")
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))
    assert _routes(steepest.param_groups(cnn))["0.weight"][0] == "adamw"
