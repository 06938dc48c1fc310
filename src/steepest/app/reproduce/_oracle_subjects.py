"""The models the layer-oracle experiment probes, and the per-layer criterion inputs it measures on them.

Subjects (each: a model factory, ``batch(seed, step, B)``, ``loss(model, batch)``, routing):

* ``charlm``, ``mnist``, ``mnist-cnn``: the built-in tasks (:mod:`steepest.app.tasks`), the batch size
  overridden per probe;
* ``gpt2``, ``bert``: tiny ``transformers`` models built from configs (random init, dropout 0),
  trained on the charlm task's Shakespeare text: GPT-2 on next-character prediction, BERT as a masked
  LM (15 % of positions replaced by an extra [MASK] id, loss on those only).

:func:`criterion_inputs` measures, for every matrix layer at one batch of size B split into K
microbatches: G_hat = mean_k G_k, nr(G_hat), st(A) of the incoming activations (one-hot rows for
embeddings: st = N / max token count), c_1, c_* (:func:`steepest.diagnostics.criteria.noise_scales`)
and exact layer-restricted curvatures H_sign, H_spec (double backward; SDPA forced to its math kernel,
the only one with a second derivative on CPU).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import steepest
from steepest.diagnostics.criteria import layer_curvatures, noise_scales, spec_sign_index
from steepest.diagnostics.metrics import nuclear_rank, stable_rank
from steepest.geometry import matrix_view

SUBJECTS = ("charlm", "mnist", "mnist-cnn", "gpt2", "bert")
#: Rows of A (evenly strided) used for st(A): exact singular values of at most this many rows.
ST_ROWS = 4096


@dataclasses.dataclass
class Subject:
    name: str
    make_model: Callable[[], nn.Module]
    batch: Callable[[int, int, int], Any]
    loss: Callable[[nn.Module, Any], torch.Tensor]
    routing: dict
    info: dict


def _task_subject(name: str, size: str, overrides: dict) -> Subject:
    from steepest.app.tasks import get_task

    tasks: dict[int, Any] = {}

    def task(B: int):
        if B not in tasks:
            tasks[B] = get_task(name, size=size, **{**overrides, "batch_size": int(B)})
        return tasks[B]

    base = task(int(overrides.get("batch_size", 16)))
    return Subject(
        name,
        base.make_model,
        lambda seed, step, B: task(B).batch(seed, step),
        base.loss,
        dict(base.routing),
        dict(base.info),
    )


def _text_windows(context: int):
    from steepest.app.tasks.charlm import encoded_splits

    train, _, vocab = encoded_splits()
    offsets = torch.arange(context)

    def windows(seed: int, step: int, B: int) -> torch.Tensor:
        starts = np.random.default_rng([seed, step, 7]).integers(0, len(train) - context - 1, size=B)
        return train[torch.from_numpy(starts)[:, None] + offsets]

    return windows, len(vocab)


def _zoo_subject(name: str, width: int, layers: int, context: int) -> Subject:
    import transformers as tf

    windows, V = _text_windows(context)
    if name == "gpt2":
        gpt2_cfg = tf.GPT2Config(
            vocab_size=V,
            n_positions=context,
            n_embd=width,
            n_layer=layers,
            n_head=2,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            bos_token_id=0,
            eos_token_id=0,
        )

        def make():
            return tf.GPT2LMHeadModel(gpt2_cfg)

        def batch(seed, step, B):
            w = windows(seed, step, B)
            return (w,)

        def loss(model, b):
            return model(input_ids=b[0], labels=b[0]).loss
    else:
        bert_cfg = tf.BertConfig(
            vocab_size=V + 1,
            hidden_size=width,
            num_hidden_layers=layers,
            num_attention_heads=2,
            intermediate_size=4 * width,
            max_position_embeddings=context,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
            pad_token_id=0,
        )

        def make():
            return tf.BertForMaskedLM(bert_cfg)

        def batch(seed, step, B):
            w = windows(seed, step, B)
            mask = torch.from_numpy(np.random.default_rng([seed, step, 11]).random(w.shape) < 0.15)
            mask[:, 0] |= ~mask.any(dim=1)  # every window predicts at least one character
            return (w.masked_fill(mask, V), w.masked_fill(~mask, -100))

        def loss(model, b):
            return model(input_ids=b[0], labels=b[1]).loss

    return Subject(
        name,
        make,
        batch,
        loss,
        {},
        dict(model=name, width=width, layers=layers, context=context, vocab=V, data="charlm Shakespeare text"),
    )


MODEL_SIZES = ("quick", "large")


def make_subject(name: str, size: str = "quick") -> Subject:
    """The subject ``name``: ``size="quick"`` is the tasks' quick models (charlm: 1 layer, width 32,
    context 32; mnist: hidden 64) and 2-layer width-16 zoo models on 16 characters; ``"large"`` is
    2 layers of width 64 on 64 characters (mnist hidden 128). ValueError for an unknown name or size."""
    if name not in SUBJECTS:
        raise ValueError(f"unknown subject {name!r}; choose from {SUBJECTS}")
    if size not in MODEL_SIZES:
        raise ValueError(f"model size must be one of {MODEL_SIZES}, got {size!r}")
    quick = size == "quick"
    if name == "charlm":
        ov = {} if quick else dict(n_layer=2, d_model=64, n_head=4, context=64)
        return _task_subject(name, "quick", ov)
    if name in ("mnist", "mnist-cnn"):
        return _task_subject(name, "quick", {} if quick else {"hidden": 128})
    return _zoo_subject(name, 16 if quick else 64, 2, 16 if quick else 64)


def matrix_layers(model: nn.Module, routing: dict) -> dict[str, dict]:
    """Every parameter with >= 2 dims: ``name -> {"role", "transposed", "tensor_mode"}`` from
    :func:`steepest.param_groups` (GPT-2 ``Conv1D`` weights come with ``transposed=True``)."""
    out = {}
    for g in steepest.param_groups(model, **routing):
        for p, n in zip(g["params"], g["names"]):
            if p.ndim >= 2:
                out[n] = {
                    "role": g["role"],
                    "transposed": bool(g.get("transposed") or False),
                    "tensor_mode": g.get("tensor_mode") or "flatten",
                }
    return out


def split(batch, K: int) -> list:
    """K equal, disjoint microbatches along dim 0 of every tensor of the batch (tuple/list)."""
    n = batch[0].shape[0]
    if n % K:
        raise ValueError(f"batch of {n} samples does not split into {K} equal microbatches")
    parts = [t.chunk(K, dim=0) for t in batch]
    return [tuple(p[k] for p in parts) for k in range(K)]


def _owners(model: nn.Module, names) -> dict[str, list[nn.Module]]:
    params = dict(model.named_parameters())
    ids = {id(params[n]): n for n in names}
    owners: dict[str, list] = {n: [] for n in names}
    for m in model.modules():
        w = m._parameters.get("weight") if hasattr(m, "_parameters") else None
        if w is not None and id(w) in ids:
            owners[ids[id(w)]].append(m)
    return owners


def _rows(m: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    """Incoming activations as (N, fan_in), or None for a module kind not handled."""
    if isinstance(m, nn.Linear):
        return x.reshape(-1, m.in_features)
    if type(m).__name__ == "Conv1D" and isinstance(m.weight, torch.Tensor):  # transformers' (in, out) linear
        return x.reshape(-1, m.weight.shape[0])
    if isinstance(m, nn.Conv2d) and m.groups == 1 and not isinstance(m.padding, str) and m.padding_mode == "zeros":
        cols = F.unfold(
            x if x.ndim == 4 else x.unsqueeze(0), m.kernel_size, dilation=m.dilation, padding=m.padding, stride=m.stride
        )
        return cols.transpose(1, 2).reshape(-1, cols.shape[1])
    return None


def activation_stable_ranks(model: nn.Module, loss_fn: Callable[[], torch.Tensor], names) -> dict[str, float | None]:
    """st(A) per layer from one forward pass; None where A is undefined (a weight shared by two modules,
    e.g. GPT-2's tied wte / lm_head, or a module kind without a rows rule)."""
    owners = _owners(model, names)
    found: dict[str, float | None] = {n: None for n in names}
    handles = []
    for n, ms in owners.items():
        if len(ms) != 1:
            continue
        m = ms[0]

        def hook(mod, inputs, output, n=n):
            x = inputs[0].detach()
            if isinstance(mod, nn.Embedding):  # one-hot rows: A^T A = diag(counts)
                counts = torch.bincount(x.reshape(-1), minlength=mod.num_embeddings)
                found[n] = float(counts.sum()) / float(counts.max()) if counts.sum() > 0 else None
                return
            A = _rows(mod, x)
            if A is not None:
                A = A[:: max(1, math.ceil(A.shape[0] / ST_ROWS))]
                found[n] = float(stable_rank(A.double()))

        handles.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            loss_fn()
    finally:
        for h in handles:
            h.remove()
    return found


def criterion_inputs(model: nn.Module, loss: Callable, batch, layers: dict[str, dict], K: int) -> tuple[dict, dict]:
    """``(G_hat per layer, criteria per layer)`` at one batch of B samples split into K microbatches.

    criteria[name] = {nr, st, dd_ratio, dd_winner, c_1, c_star, H_sign, H_spec, ss_index, ss_winner,
    ss_regime}. DD: seed 001 (spectral iff nr(G) >= st(A)); index: seed 002 eq. (7) with B = K b.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from steepest.diagnostics.criteria import dd_winner

    params = dict(model.named_parameters())
    micro = split(batch, K)
    b = micro[0][0].shape[0]
    grads: dict[str, list[torch.Tensor]] = {n: [] for n in layers}
    for mb in micro:
        model.zero_grad(set_to_none=True)
        loss(model, mb).backward()
        for n in layers:
            g = params[n].grad
            grads[n].append(torch.zeros_like(params[n]) if g is None else g.detach().clone())
    model.zero_grad(set_to_none=True)
    G_hat = {n: torch.stack(gs).mean(dim=0) for n, gs in grads.items()}
    st = activation_stable_ranks(model, lambda: loss(model, batch), list(layers))
    out = {}
    for n, view in layers.items():
        X = matrix_view(G_hat[n], view["tensor_mode"], view["transposed"]).double()
        nr = float(nuclear_rank(X))
        st_n = st[n]
        rec = {"nr": nr, "st": st_n, "dd_ratio": None, "dd_winner": "none"}
        if st_n is not None and st_n > 0:
            rec.update(dd_ratio=nr / st_n, dd_winner=dd_winner(nr, st_n))
        c = noise_scales(
            [matrix_view(g, view["tensor_mode"], view["transposed"]) for g in grads[n]],
            b,
            geometries=("linf", "spectral"),
        )
        with sdpa_kernel([SDPBackend.MATH]):
            H = layer_curvatures(lambda: loss(model, batch), params[n], G_hat[n])
        idx = spec_sign_index(X, c["spectral"], c["linf"], b * K, H_sign=H["linf"], H_spec=H["spectral"])
        rec.update(
            c_1=c["linf"],
            c_star=c["spectral"],
            H_sign=H["linf"],
            H_spec=H["spectral"],
            ss_index=idx.index,
            ss_winner=idx.winner,
            ss_regime=idx.regime,
        )
        out[n] = rec
    return G_hat, out


__all__ = [
    "SUBJECTS",
    "Subject",
    "make_subject",
    "matrix_layers",
    "criterion_inputs",
    "activation_stable_ranks",
    "split",
]
