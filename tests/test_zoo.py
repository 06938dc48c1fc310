"""Routing on a zoo of real architectures (transformers, tiny configs, random weights, nothing downloaded).

For each model a table of expectations: fnmatch pattern on the parameter name -> role (and view), first
match wins, asserted for every parameter; every pattern must match something (so a table cannot go
stale silently). Then a training smoke: 5 steps of steepest.Muon(steepest.param_groups(model)) on one
fixed batch must lower the loss. The roles are found from structure; names below are only the test's
way to point at parameters.

Why the expectations are what they are (issue 10):
* GPT-2: Conv1D weights are (in, out): hidden, own group with transposed=True; head tied to wte.
* Llama: untied lm_head found as the Linear onto the vocabulary; RMSNorm gains are vectors.
* BERT: ``attention.output.dense`` and ``output.dense`` are hidden (a name pattern "*.output*" used to
  send them to AdamW); pooler is hidden; the classifier is the head (width rule / trace); MLM decoder tied.
* GPT-J: ``mlp.fc_out`` is hidden (was "*.fc_out*" head pattern).
* Mixtral (transformers v5): fused experts ``gate_up_proj`` / ``down_proj`` (E, m, n) are batches of matrices.
* Wav2Vec2: the first feature-extractor conv eats raw audio -> input layer; ``output_dense`` hidden;
  weight-normed grouped positional conv: v hidden (flattened), g a vector.
* ViT: patch embedding is the input layer, cls/position tokens are embeddings.
* ConvNeXt / MobileNetV2: depthwise convs -> AdamW ("other"); 1x1 / pointwise -> hidden.
"""

from __future__ import annotations

import fnmatch
import io
import os

import pytest
import torch
import torch.nn.functional as F

import steepest

tf = pytest.importorskip("transformers")
import zoo_models as Z  # noqa: E402  (tests/ is on sys.path under pytest's rootdir conftest)

H, HB, HT = "hidden", "hidden:batch", "hidden:T"
E, HEAD, V, O = "embedding", "head", "vector", "other"

TABLES = {
    "gpt2": (
        Z.gpt2,
        [
            ("transformer.wte.weight", E),
            ("transformer.wpe.weight", E),
            ("*.bias", V),
            ("*ln_*", V),
            ("*.c_attn.weight", HT),
            ("*.c_proj.weight", HT),
            ("*.c_fc.weight", HT),
        ],
    ),
    "llama": (
        Z.llama,
        [("model.embed_tokens.weight", E), ("lm_head.weight", HEAD), ("*norm.weight", V), ("*_proj.weight", H)],
    ),
    "bert_cls": (
        Z.bert_cls,
        [
            ("*_embeddings.weight", E),
            ("*.bias", V),
            ("*LayerNorm*", V),
            ("*.attention.output.dense.weight", H),
            ("*.layer.*.output.dense.weight", H),
            ("*.self.*.weight", H),
            ("*.intermediate.dense.weight", H),
            ("bert.pooler.dense.weight", H),
            ("classifier.weight", HEAD),
        ],
    ),
    "bert_mlm": (
        Z.bert_mlm,
        [
            ("*word_embeddings.weight", E),
            ("*_embeddings.weight", E),
            ("*bias", V),
            ("*LayerNorm*", V),
            ("*.output.dense.weight", H),
            ("*.self.*.weight", H),
            ("*.intermediate.dense.weight", H),
            ("cls.predictions.transform.dense.weight", H),
        ],
    ),
    "gptj": (
        Z.gptj,
        [
            ("transformer.wte.weight", E),
            ("lm_head.weight", HEAD),
            ("*.bias", V),
            ("*ln_*", V),
            ("*.mlp.fc_out.weight", H),
            ("*.mlp.fc_in.weight", H),
            ("*_proj.weight", H),
        ],
    ),
    "mixtral": (
        Z.mixtral,
        [
            ("model.embed_tokens.weight", E),
            ("lm_head.weight", HEAD),
            ("*norm.weight", V),
            ("*.experts.gate_up_proj", HB),
            ("*.experts.down_proj", HB),
            ("*.mlp.gate.weight", H),
            ("*_proj.weight", H),
        ],
    ),
    "wav2vec2": (
        Z.wav2vec2,
        [
            ("*.masked_spec_embed", V),
            ("*.conv_layers.0.conv.weight", E),
            ("*.bias", V),
            ("*layer_norm.weight", V),
            ("*.conv_layers.1.conv.weight", H),
            ("*.pos_conv_embed.conv.parametrizations.weight.original0", V),
            ("*.pos_conv_embed.conv.parametrizations.weight.original1", H),
            ("*.feed_forward.output_dense.weight", H),
            ("*.feed_forward.intermediate_dense.weight", H),
            ("*.attention.*_proj.weight", H),
            ("*.feature_projection.projection.weight", H),
            ("lm_head.weight", HEAD),
        ],
    ),
    "vit": (
        Z.vit,
        [
            ("vit.embeddings.cls_token", E),
            ("vit.embeddings.position_embeddings", E),
            ("*.patch_embeddings.projection.weight", E),
            ("*.bias", V),
            ("*layernorm*", V),
            ("*_proj.weight", H),
            ("*.mlp.fc*.weight", H),
            ("classifier.weight", HEAD),
        ],
    ),
    "resnet": (
        Z.resnet,
        [
            ("resnet.embedder.embedder.convolution.weight", E),
            ("*normalization*", V),
            ("*.convolution.weight", H),
            ("classifier.1.weight", HEAD),
            ("*.bias", V),
        ],
    ),
    "convnext": (
        Z.convnext,
        [
            ("convnext.embeddings.patch_embeddings.weight", E),
            ("*.dwconv.weight", O),
            ("*layer_scale_parameter", V),
            ("*.bias", V),
            ("*norm*", V),
            ("*.downsampling_layer.0.weight", V),
            ("*.downsampling_layer.1.weight", H),
            ("*.pwconv*.weight", H),
            ("classifier.weight", HEAD),
        ],
    ),
    "mobilenet": (
        Z.mobilenet,
        [
            ("*.first_conv.convolution.weight", E),
            ("*.conv_3x3.convolution.weight", O),
            ("*normalization*", V),
            ("*1x1.convolution.weight", H),
            ("classifier.weight", HEAD),
            ("*.bias", V),
        ],
    ),
}
# Models whose head is found without example_inputs (tied, declared, vocabulary or width rule): all of them.
#: Device of the training smoke (benchmarks/gpu.py runs it with STEEPEST_TEST_DEVICE=cuda); CPU by default.
DEVICE = torch.device(os.environ.get("STEEPEST_TEST_DEVICE", "cpu"))


def _roles(groups):
    out = {}
    for g in groups:
        for p, n, r in zip(g["params"], g["names"], g["reasons"]):
            tag = g["role"]
            if g["role"] == "hidden" and g["tensor_mode"] == "batch":
                tag = HB
            if g["role"] == "hidden" and g.get("transposed"):
                tag = HT
            out[n] = (tag, r, p)
    return out


def _check_table(model, groups, table):
    roles = _roles(groups)
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert sum(len(g["params"]) for g in groups) == len(trainable) == len(roles)
    used = set()
    for name, (tag, reason, _) in roles.items():
        match = next(((pat, want) for pat, want in table if fnmatch.fnmatch(name, pat)), None)
        assert match is not None, f"{name}: no expectation in the table ({tag}: {reason})"
        used.add(match[0])
        assert tag == match[1], f"{name}: expected {match[1]} ({match[0]}), got {tag}: {reason}"
    assert used == {pat for pat, _ in table}, f"patterns matching nothing: {set(p for p, _ in table) - used}"
    return roles


@pytest.mark.parametrize("arch", sorted(TABLES))
@pytest.mark.parametrize("traced", [False, True], ids=["structure", "example_inputs"])
def test_zoo_routing_table(arch, traced):
    build, table = TABLES[arch]
    torch.manual_seed(0)
    model, inputs = build()
    groups = steepest.param_groups(model, example_inputs=inputs if traced else None)
    roles = _check_table(model, groups, table)
    if arch == "gpt2":
        assert "tied to the output head lm_head" in roles["transformer.wte.weight"][1]
    if arch == "mixtral":
        assert roles["model.layers.0.mlp.experts.gate_up_proj"][2].ndim == 3
    text = steepest.describe(steepest.Muon(groups), file=io.StringIO())
    assert "(optimizer default)" not in text and "no output head found" not in text


def _loss(arch, model, inputs):
    out = model(**inputs).logits
    flat = out.reshape(-1, out.shape[-1])
    target = torch.randint(0, out.shape[-1], (flat.shape[0],), generator=torch.Generator().manual_seed(1))
    return F.cross_entropy(flat.float(), target.to(flat.device))


@pytest.mark.parametrize("arch", sorted(TABLES))
def test_zoo_trains_with_muon(arch):
    build, _ = TABLES[arch]
    torch.manual_seed(0)
    model, inputs = build()
    model, inputs = model.to(DEVICE), {k: v.to(DEVICE) for k, v in inputs.items()}
    model.eval()  # no dropout / masking, BatchNorm on running stats: a deterministic smoke
    opt = steepest.Muon(steepest.param_groups(model), lr=0.02, adamw_lr=3e-3)
    losses = []
    for _ in range(5):
        opt.zero_grad(set_to_none=True)
        loss = _loss(arch, model, inputs)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], losses


#: heads=True on the transformer zoo (issue 19 item 5): the q/k/v projections found by structure and their
#: head blocks (every model has 2 query heads; Llama and Mixtral have 1 kv head, so k/v stay whole matrices).
#: Nothing else gets blocks: output projections, MLPs, fused experts (already batches), convs.
HEAD_BLOCKS = {
    "gpt2": {"*.attn.c_attn.weight": 6},  # fused q/k/v: 2 + 2 + 2 heads
    "llama": {"*.self_attn.q_proj.weight": 2},
    "mixtral": {"*.self_attn.q_proj.weight": 2},
    "bert_cls": {
        "*.attention.self.query.weight": 2,
        "*.attention.self.key.weight": 2,
        "*.attention.self.value.weight": 2,
    },
    "bert_mlm": {
        "*.attention.self.query.weight": 2,
        "*.attention.self.key.weight": 2,
        "*.attention.self.value.weight": 2,
    },
    "gptj": {"*.attn.[qkv]_proj.weight": 2},
    "wav2vec2": {"*.attention.[qkv]_proj.weight": 2},
    "vit": {"*.attention.[qkv]_proj.weight": 2},
}


@pytest.mark.parametrize("arch", sorted(TABLES))
def test_zoo_head_blocks_and_training(arch):
    build, _ = TABLES[arch]
    torch.manual_seed(0)
    model, inputs = build()
    model.eval()
    groups = steepest.param_groups(model, heads=True)
    got = {n: g["row_blocks"] for g in groups if "row_blocks" in g for n in g["names"]}
    want = HEAD_BLOCKS.get(arch, {})
    for name, r in got.items():
        assert any(fnmatch.fnmatch(name, pat) and r == want[pat] for pat in want), (name, r)
    for pat in want:  # every expectation matches something
        assert any(fnmatch.fnmatch(n, pat) for n in got), pat
    opt = steepest.Muon(groups, lr=0.02, adamw_lr=3e-3)
    losses = []
    for _ in range(5):
        opt.zero_grad(set_to_none=True)
        loss = _loss(arch, model, inputs)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses


BLOCKS = {
    "llama_layer": (Z.llama, "model.layers.0"),
    "bert_layer": (Z.bert_cls, "bert.encoder.layer.0"),
    "gpt2_block": (Z.gpt2, "transformer.h.0"),
    "gptj_block": (Z.gptj, "transformer.h.0"),
    "resnet_block": (Z.resnet, "resnet.encoder.stages.1.layers.0"),
    "convnext_layer": (Z.convnext, "convnext.encoder.stages.0.layers.0"),
}


@pytest.mark.parametrize("block", sorted(BLOCKS))
def test_a_block_passed_alone_has_no_head(block):
    build, path = BLOCKS[block]
    sub = build()[0].get_submodule(path)
    groups = steepest.param_groups(sub)
    assert "head" not in {g["role"] for g in groups}
    assert "embedding" not in {g["role"] for g in groups}  # no input conv inside a block
    for g in groups:
        for p, n in zip(g["params"], g["names"]):
            if n.endswith("weight") and p.ndim >= 2 and "dwconv" not in n:
                assert g["role"] == "hidden", (n, g["role"])
    assert "no output head found" in steepest.describe(groups, file=io.StringIO())


def test_traced_backbone_without_head_finds_none():
    model, inputs = Z.bert_cls()
    groups = steepest.param_groups(model.bert, example_inputs=inputs)
    roles = _roles(groups)
    # The output (last_hidden_state, pooler) bypasses every layer through the residual stream: no head.
    assert "head" not in {g["role"] for g in groups}
    assert roles["encoder.layer.1.output.dense.weight"][0] == H and roles["pooler.dense.weight"][0] == H


def test_head_argument_names_the_head():
    model, _ = Z.bert_cls()
    roles = _roles(steepest.param_groups(model, head="bert.pooler.dense"))
    assert roles["bert.pooler.dense.weight"][0] == HEAD
    assert roles["classifier.weight"][0] == H  # head= replaces the structural search
    with pytest.raises(ValueError, match="not a Linear"):
        steepest.param_groups(model, head="bert.nope")


@pytest.mark.slow
def test_lightning_trainer_drives_muon_on_a_zoo_model(tmp_path):
    lightning = pytest.importorskip("lightning")

    class Module(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.model, self.inputs = Z.llama()

        def training_step(self, batch, _):
            return _loss("llama", self.model, self.inputs)

        def configure_optimizers(self):
            return steepest.Muon(steepest.param_groups(self.model), lr=0.02, adamw_lr=3e-3)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(4, 1)), batch_size=1)
    m = Module()
    before = _loss("llama", m.model, m.inputs).detach().item()
    trainer = lightning.Trainer(
        max_steps=4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        accelerator="cpu",
    )
    trainer.fit(m, data)
    assert _loss("llama", m.model, m.inputs).item() < before
