"""HF Trainer and Lightning, end to end: the one-line optimizer, the monitor callbacks, checkpoint and resume
equal to an uninterrupted run, no duplicate monitor steps. Tiny GPT-2 / Llama from configs (nothing downloaded)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import steepest
from steepest.diagnostics import JSONLSink


def test_import_steepest_loads_no_trainer_framework():
    code = (
        "import sys, steepest, steepest.integrations; bad = [m for m in ('transformers', 'lightning', "
        "'pytorch_lightning') if m in sys.modules]; assert not bad, bad"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(steepest.__file__).parents[1]))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def _steps(path):
    return [json.loads(line)["step"] for line in Path(path).read_text().splitlines()]


# ------------------------------------------------------------------------------------------------ HF Trainer
def _gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(
        vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
    )
    return GPT2LMHeadModel(cfg)


class _Tokens(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randint(0, 64, (48, 16), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


def _hf_train(out, diag, resume=None, max_steps=6):
    from transformers import Trainer, TrainingArguments

    from steepest.integrations import hf

    model = _gpt2()
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=max_steps,
        save_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        lr_scheduler_type="linear",
        report_to=[],
        use_cpu=True,
        seed=0,
        logging_steps=100,
        save_only_model=False,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_Tokens(),
        optimizer_cls_and_kwargs=hf.trainer_optimizer(steepest.Muon, lr=0.02, adamw_lr=1e-3),
        callbacks=[hf.MonitorCallback(every=2, sinks=[JSONLSink(diag)], microbatches=0)],
    )
    trainer.train(resume_from_checkpoint=resume)
    return trainer


def test_hf_trainer_one_liner_routes_trains_and_resumes_exactly(tmp_path):
    pytest.importorskip("transformers")
    full = _hf_train(tmp_path / "full", tmp_path / "full.jsonl")
    opt = full.optimizer.optimizer if hasattr(full.optimizer, "optimizer") else full.optimizer
    assert isinstance(opt, steepest.Muon)
    roles = {(g["role"], g.get("transposed", False)): g["names"] for g in opt.param_groups}
    # GPT-2: Conv1D weights are hidden matrices stepped as W^T; wte (tied to lm_head) is the embedding
    assert roles[("hidden", True)] == [
        f"transformer.h.{i}.{m}.weight"
        for i in range(2)
        for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")
    ]
    assert roles[("embedding", False)] == ["transformer.wte.weight", "transformer.wpe.weight"]
    assert all(n.endswith(("bias", "weight")) and (".ln_" in n or "bias" in n) for n in roles[("vector", False)])
    # monitor: every Conv1D (and the tied lm_head) recorded at steps 0, 2, 4
    recs = [json.loads(line) for line in (tmp_path / "full.jsonl").read_text().splitlines()]
    assert sorted({r["step"] for r in recs}) == [0, 2, 4]
    assert {r["layer"] for r in recs if r["kind"] == "Conv1D"} == set(
        n[: -len(".weight")] for n in roles[("hidden", True)]
    )

    # an interrupted run: same files; resume from checkpoint-3 in a fresh Trainer
    cut = tmp_path / "cut"
    _hf_train(cut, tmp_path / "cut.jsonl", max_steps=6)
    resumed = _hf_train(cut, tmp_path / "cut.jsonl", resume=str(cut / "checkpoint-3"))
    for (n, a), (_, b) in zip(full.model.named_parameters(), resumed.model.named_parameters()):
        assert torch.equal(a, b), n  # same batches, same RNG, same optimizer state: bit-identical
    assert _steps(tmp_path / "cut.jsonl") == _steps(tmp_path / "full.jsonl")  # 4 not duplicated, 0 not restarted
    assert (tmp_path / "cut.jsonl").read_text() == (tmp_path / "full.jsonl").read_text()


def test_routed_optimizer_takes_trainer_groups_and_keeps_their_weight_decay():
    pytest.importorskip("transformers")
    from steepest.integrations.hf import RoutedOptimizer, trainer_optimizer

    model = _gpt2()
    decay = [p for n, p in model.named_parameters() if "ln_" not in n and "bias" not in n]
    nodecay = [p for n, p in model.named_parameters() if "ln_" in n or "bias" in n]
    factory, kwargs = trainer_optimizer(steepest.Muon, model, lr=0.02)
    assert factory() is factory and kwargs == {"lr": 0.02}  # transformers 5 instantiates the factory first
    opt = factory([{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}], **kwargs)
    got = {(g["role"], g["weight_decay"]) for g in opt.param_groups}
    assert got == {("hidden", 0.1), ("embedding", 0.1), ("vector", 0.0)}
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters())) - 0  # lm_head is tied
    with pytest.raises(ValueError, match="give the model"):
        RoutedOptimizer(steepest.Muon)([{"params": decay}], lr=0.02)
    with pytest.raises(TypeError, match="torch.optim.Optimizer class"):
        RoutedOptimizer("Muon")


def _trainer_groups(tmp_path, args_wd=None, **kwargs):
    """The optimizer a real Trainer builds through hf.trainer_optimizer: {role: weight decay}."""
    from transformers import Trainer, TrainingArguments

    from steepest.integrations import hf

    extra = {} if args_wd is None else dict(weight_decay=args_wd)
    args = TrainingArguments(
        output_dir=str(tmp_path), max_steps=1, report_to=[], use_cpu=True, disable_tqdm=True, **extra
    )
    trainer = Trainer(
        model=_gpt2(),
        args=args,
        train_dataset=_Tokens(),
        optimizer_cls_and_kwargs=hf.trainer_optimizer(steepest.Muon, lr=0.02, **kwargs),
    )
    opt = trainer.create_optimizer()
    opt = opt.optimizer if hasattr(opt, "optimizer") else opt
    return {g["role"]: g["weight_decay"] for g in opt.param_groups}


def test_hf_training_arguments_weight_decay_reaches_the_decaying_groups(tmp_path):
    pytest.importorskip("transformers")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        # TrainingArguments(weight_decay=0.1): hidden matrices, embeddings decay; biases and gains do not
        assert _trainer_groups(tmp_path, args_wd=0.1) == {"hidden": 0.1, "embedding": 0.1, "vector": 0.0}
        # TrainingArguments' default (0.0) is Trainer's meaning of "no decay": it wins over Muon's own 0.1
        assert _trainer_groups(tmp_path) == {"hidden": 0.0, "embedding": 0.0, "vector": 0.0}
        # an explicit weight_decay= with TrainingArguments left at its default: no conflict, it applies
        assert _trainer_groups(tmp_path, weight_decay=0.05) == {"hidden": 0.05, "embedding": 0.05, "vector": 0.0}
    # both set and different: the explicit one wins, with a warning naming both
    with pytest.warns(
        UserWarning,
        match=r"trainer_optimizer\(weight_decay=0.05\) wins over "
        r"TrainingArguments\(weight_decay=0.1\)",
    ):
        got = _trainer_groups(tmp_path, args_wd=0.1, weight_decay=0.05)
    assert got == {"hidden": 0.05, "embedding": 0.05, "vector": 0.0}


def test_hf_factory_outside_a_trainer_takes_args_explicitly():
    pytest.importorskip("transformers")
    from transformers import TrainingArguments

    from steepest.integrations.hf import trainer_optimizer

    args = TrainingArguments(output_dir="unused", weight_decay=0.3, report_to=[], use_cpu=True)
    factory, kwargs = trainer_optimizer(steepest.Muon, args=args, lr=0.02)
    opt = factory()(_gpt2(), **kwargs)
    assert {g["role"]: g["weight_decay"] for g in opt.param_groups} == {"hidden": 0.3, "embedding": 0.3, "vector": 0.0}
    factory, kwargs = trainer_optimizer(steepest.Muon, lr=0.02)  # no Trainer, no args: the optimizer's default
    assert {g["weight_decay"] for g in factory()(_gpt2(), **kwargs).param_groups if g["role"] == "hidden"} == {0.1}


# ------------------------------------------------------------------------------------------------ Lightning
def _llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=16,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(cfg)


def _lightning_fit(root, diag, ckpt=None, max_steps=6):
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from steepest.integrations.lightning import LayerMonitorCallback

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = _llama()

        def training_step(self, batch, i):
            return self.model(input_ids=batch, labels=batch).loss

        def configure_optimizers(self):
            return steepest.Muon(steepest.param_groups(self.model), lr=0.02, adamw_lr=1e-3)

    L.seed_everything(0, verbose=False)
    # 3 batches per epoch, in order: the step-3 checkpoint is at an epoch end, where Lightning resumes exactly
    # (mid-epoch it restarts the epoch unless the dataloader is stateful)
    data = torch.utils.data.DataLoader(_Tokens().x[:12], batch_size=4, shuffle=False)
    module = Module()
    trainer = L.Trainer(
        default_root_dir=str(root),
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=[
            LayerMonitorCallback(every=2, sinks=[JSONLSink(diag)], microbatches=2),
            ModelCheckpoint(dirpath=str(root / "ck"), every_n_train_steps=3, save_top_k=-1),
        ],
    )
    trainer.fit(module, data, ckpt_path=ckpt)
    return module


def test_lightning_callback_records_every_hidden_layer_and_resumes_exactly(tmp_path):
    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    full = _lightning_fit(tmp_path / "full", tmp_path / "full.jsonl")
    recs = [json.loads(line) for line in (tmp_path / "full.jsonl").read_text().splitlines()]
    linears = {n for n, m in full.named_modules() if isinstance(m, torch.nn.Linear)}
    assert len(linears) == 15  # 2 x (q, k, v, o, gate, up, down) + lm_head
    for step in (0, 2, 4):  # step(closure): every Linear recorded, none skipped
        assert {r["layer"] for r in recs if r["step"] == step} == linears
    assert all(r["nr_G"] is not None and r["st_A"] is not None for r in recs)

    cut = tmp_path / "cut"
    _lightning_fit(cut, tmp_path / "cut.jsonl")
    ckpts = sorted((cut / "ck").glob("*step=3*.ckpt"))
    assert ckpts, list((cut / "ck").iterdir())
    resumed = _lightning_fit(cut, tmp_path / "cut.jsonl", ckpt=str(ckpts[0]))
    for (n, a), (_, b) in zip(full.named_parameters(), resumed.named_parameters()):
        assert torch.equal(a, b), n
    assert _steps(tmp_path / "cut.jsonl") == _steps(tmp_path / "full.jsonl")
    assert (tmp_path / "cut.jsonl").read_text() == (tmp_path / "full.jsonl").read_text()


def _tiny_fit(root, sinks, callback: bool, ckpt=None, max_steps=6):
    """A 2-layer MLP LightningModule, 3 batches an epoch, a checkpoint every 3 steps; the LayerMonitorCallback
    (every=2) only when ``callback``."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint

    from steepest.integrations.lightning import LayerMonitorCallback

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 3))

        def training_step(self, batch, i):
            return self.net(batch).square().mean()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    L.seed_everything(0, verbose=False)
    data = torch.utils.data.DataLoader(torch.randn(12, 6, generator=torch.Generator().manual_seed(3)), batch_size=4)
    cbs = [ModelCheckpoint(dirpath=str(root / "ck"), every_n_train_steps=3, save_top_k=-1)]
    if callback:
        cbs.append(LayerMonitorCallback(every=2, sinks=sinks, microbatches=2))
    trainer = L.Trainer(
        default_root_dir=str(root),
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        callbacks=cbs,
    )
    trainer.fit(Module(), data, ckpt_path=ckpt)
    return trainer


def test_lightning_callback_counts_from_the_global_step_when_the_checkpoint_has_no_monitor_state(tmp_path):
    """A checkpoint without the callback's state (the monitor added on resume): the resumed steps 3-5 are
    recorded as steps 3-5 (step 4 recorded, with the uninterrupted run's numbers), not restarted at 0."""
    pytest.importorskip("lightning")
    from steepest.diagnostics import MemorySink

    full = MemorySink()
    _tiny_fit(tmp_path / "full", [full], callback=True)
    _tiny_fit(tmp_path / "cut", None, callback=False, max_steps=3)  # no monitor: its checkpoint holds no state
    (ckpt,) = sorted((tmp_path / "cut" / "ck").glob("*step=3*.ckpt"))
    assert not any("LayerMonitorCallback" in k for k in torch.load(ckpt, weights_only=False)["callbacks"])
    resumed = MemorySink()
    trainer = _tiny_fit(tmp_path / "cut", [resumed], callback=True, ckpt=str(ckpt))
    assert trainer.global_step == 6
    assert [(r["step"], r["layer"]) for r in full.records] == [(s, n) for s in (0, 2, 4) for n in ("net.0", "net.2")]
    assert [(r["step"], r["layer"]) for r in resumed.records] == [(4, "net.0"), (4, "net.2")]  # were (0, .) (2, .)
    assert resumed.records == [r for r in full.records if r["step"] == 4]  # same batch, weights, records
    cb = next(c for c in trainer.callbacks if type(c).__name__ == "LayerMonitorCallback")
    assert cb.state_dict()["step"] == 6
