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
        self.blocks = nn.ModuleList([nn.ModuleDict(dict(ln=nn.LayerNorm(d), qkv=nn.Linear(d, 3 * d, bias=False),
                                                        proj=nn.Linear(d, d), fc=nn.Linear(d, 4 * d)))])
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
