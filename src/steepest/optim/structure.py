"""What a model's parameters *are*, found from its structure (not its parameter names).

Used by :mod:`steepest.optim.routing`. Nothing here imports transformers: HF-style models are
recognised by duck typing (``get_output_embeddings``, ``get_input_embeddings``; GPT-2's ``Conv1D`` by its
class name or its ``nf`` attribute with a weight stored as (in, out)).

* **Output head** (:func:`find_heads`), the first rule that finds one wins:
  (a) ``head=`` module names, when given;
  (b) the module the model declares with ``get_output_embeddings()``, and any Linear/Conv1D whose weight
      is the same tensor as an ``nn.Embedding``'s (tied head);
  (c) with ``example_inputs``: a traced forward (eval mode); the heads are the matrix layers nearest the
      output (walking the autograd graph back from the output, through parameter-free ops and norms, the
      first Linear/Conv1D/conv outputs met). Output = ``.logits`` when the output has one, else every
      tensor in it. If the output can also be reached from the input or an embedding without passing a
      matrix layer (a residual stream: the model is a block or a backbone), the trace finds no head and
      no later rule is tried;
  (d) the last Linear/Conv1D in module order mapping onto the token vocabulary (out_features ==
      ``num_embeddings`` of ``get_input_embeddings()``, else of the largest ``nn.Embedding``; not square).
      Only the last one: an MLP up-projection may have vocabulary-many outputs;
  (e) the *width rule*: the last matrix layer in module order is the head
  if it is a Linear/Conv1D whose out_features differ from the in-features (channels) of the first matrix
  layer. A residual block maps width d back to d, so ``param_groups(block)`` on a transformer or ResNet
  block routes all its layers as hidden; an MLP/CNN classifier (784 -> ... -> 10) has its head found.
  A conv is never a head by this rule. Otherwise no head: pass ``head=`` or ``example_inputs=``.
  ``example_inputs`` describes the input of the model passed: for a block passed alone its first conv
  would be called an input layer.
* **Input layers** (:func:`find_input_convs`): convs consuming the raw input. With ``example_inputs``:
  every conv whose input reaches a floating example input without passing another matrix layer. Without:
  the model's first matrix layer in module order, if it is a conv with at most 4 input channels (raw
  signal: gray, RGB(A), mono audio) or a patch embedding (stride == kernel size > 1). A Linear on raw
  features stays hidden. Embeddings (``nn.Embedding``) are input layers by type.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import torch
from torch import nn
from torch.autograd.graph import Node

CONV = nn.modules.conv._ConvNd


def is_transposed_linear(module: nn.Module) -> bool:
    """GPT-2's ``transformers.pytorch_utils.Conv1D``: y = x @ W + b with W stored as (in, out)."""
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor) or w.ndim != 2:
        return False
    if type(module).__name__ == "Conv1D" and not isinstance(module, CONV):
        return True
    return (
        isinstance(getattr(module, "nf", None), int) and w.shape[1] == module.nf and not isinstance(module, nn.Linear)
    )


def is_matrix_module(module: nn.Module) -> bool:
    return isinstance(module, (nn.Linear, CONV)) or is_transposed_linear(module)


def owners(model: nn.Module) -> dict[int, tuple[str, nn.Module, bool]]:
    """id(param) -> (full name, owning module, is that module's own ``weight``).

    A ``torch.nn.utils.parametrize`` piece (``conv.parametrizations.weight.original1``) is owned by the
    parametrized module (``conv``); pieces are not the module's plain weight.
    """
    out: dict[int, tuple[str, nn.Module, bool]] = {}
    mods = dict(model.named_modules())
    for mname, module in mods.items():
        owner, is_piece = module, False
        parts = mname.split(".")
        if len(parts) >= 2 and parts[-2] == "parametrizations":
            owner, is_piece = mods.get(".".join(parts[:-2]), module), True
        for pname, param in module.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            out.setdefault(id(param), (full, owner, pname == "weight" and not is_piece))
    return out


def _vocab_sizes(model: nn.Module) -> set[int]:
    emb = None
    get = getattr(model, "get_input_embeddings", None)
    if callable(get):
        try:
            emb = get()
        except (NotImplementedError, AttributeError):
            emb = None
    if isinstance(emb, nn.Embedding):
        return {emb.num_embeddings}
    sizes = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    return {max(sizes)} if sizes else set()


def _out_in(module: nn.Module) -> tuple[int, int]:
    w = cast(torch.Tensor, module.weight)  # nn.Module.__getattr__ is typed Tensor | Module
    return (w.shape[1], w.shape[0]) if is_transposed_linear(module) else (w.shape[0], w.shape[1])


def _flat_tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _flat_tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _flat_tensors(v)]
    return []


def trace(model: nn.Module, example_inputs, matrix_names: dict[nn.Module, str]) -> tuple[dict, dict]:
    """Run one forward on ``example_inputs`` (a tensor, a tuple of positional args or a dict of kwargs)
    in eval mode and return ({head name: reason}, {input conv name: reason})."""
    args, kwargs = (
        ((), dict(example_inputs))
        if isinstance(example_inputs, dict)
        else ((tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)), {})
    )
    raw = []

    def leaf(x):
        if isinstance(x, torch.Tensor) and x.is_floating_point():
            x = x.detach().clone().requires_grad_(True)
            raw.append(x)
        return x

    args = tuple(leaf(a) for a in args)
    kwargs = {k: leaf(v) for k, v in kwargs.items()}
    out_node: dict = {}  # grad_fn of a matrix layer's output -> layer name
    in_of: dict[str, torch.Tensor] = {}
    hooks = []
    for mod, name in matrix_names.items():

        def pre(m, a, name=name):
            if a and isinstance(a[0], torch.Tensor):
                in_of.setdefault(name, a[0])

        def post(m, a, o, name=name):
            if isinstance(o, torch.Tensor) and o.grad_fn is not None:
                out_node.setdefault(o.grad_fn, name)

        hooks += [mod.register_forward_pre_hook(pre), mod.register_forward_hook(post)]
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            out = model(*args, **kwargs)
    finally:
        model.train(was)
        for h in hooks:
            h.remove()
    logits = getattr(out, "logits", None)
    outs = [logits] if isinstance(logits, torch.Tensor) else _flat_tensors(out)
    heads, bypass = {}, False
    raw_ids = {id(x) for x in raw}
    embed_ids = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))}
    seen: set[Node] = set()
    stack: list[Node | None] = [t.grad_fn for t in outs if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in out_node:
            heads[out_node[node]] = "output head (nearest matrix layer to the output in a traced forward)"
            continue
        if id(getattr(node, "variable", None)) in raw_ids | embed_ids:
            bypass = True
        stack += [nxt for nxt, _ in node.next_functions]
    if bypass:
        heads = {}
    inputs = {}
    for name, x in in_of.items():
        if not isinstance(next(m for m, n in matrix_names.items() if n == name), CONV):
            continue
        seen, hit = set(), id(x) in raw_ids
        stack = [x.grad_fn]
        while stack and not hit:
            node = stack.pop()
            if node is None or node in seen or node in out_node:
                continue
            seen.add(node)
            if id(getattr(node, "variable", None)) in raw_ids:
                hit = True
            stack += [nxt for nxt, _ in node.next_functions]
        if hit:
            inputs[name] = "input layer (consumes the raw input in a traced forward)"
    return heads, inputs


def find_heads(
    model: nn.Module, matrix_names: dict[nn.Module, str], head: Iterable[str] | None, traced: dict | None
) -> dict[str, str]:
    """Module name -> reason for every output head (rules (a)-(e) and the fallback in the module doc)."""
    if head is not None:
        names = [head] if isinstance(head, str) else list(head)
        known = set(matrix_names.values())
        for n in names:
            if n not in known:
                raise ValueError(
                    f"head={n!r} is not a Linear/Conv1D/conv module of this model "
                    f"(matrix layers: {sorted(known)[:8]}...)"
                )
        return {n: "output head (head= argument)" for n in names}
    heads: dict[str, str] = {}
    get = getattr(model, "get_output_embeddings", None)
    if callable(get):
        try:
            declared = get()
        except (NotImplementedError, AttributeError):
            declared = None
        if declared in matrix_names:
            heads[matrix_names[declared]] = "output head (declared by the model's get_output_embeddings())"
    embed_w = {id(m.weight): n for n, m in model.named_modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))}
    for mod, name in matrix_names.items():
        if not isinstance(mod, CONV) and id(mod.weight) in embed_w:
            heads.setdefault(name, f"output head (weight tied to embedding {embed_w[id(mod.weight)]})")
    if heads:
        return heads
    if traced is not None:
        return dict(traced)
    vocab = _vocab_sizes(model)
    onto_vocab = [
        (mod, name)
        for mod, name in matrix_names.items()
        if not isinstance(mod, CONV) and _out_in(mod)[0] in vocab and _out_in(mod)[0] != _out_in(mod)[1]
    ]
    if onto_vocab:
        mod, name = onto_vocab[-1]
        return {name: f"output head (last Linear onto the {_out_in(mod)[0]}-token vocabulary of the input embedding)"}
    if matrix_names:
        mods = list(matrix_names)
        first, last = mods[0], mods[-1]
        width = first.in_channels if isinstance(first, CONV) else _out_in(first)[1]
        if not isinstance(last, CONV) and _out_in(last)[0] != width:
            heads[matrix_names[last]] = (
                f"output head (last layer in module order; its {_out_in(last)[0]} outputs "
                f"differ from the input width {width}: not a residual block)"
            )
    return heads


def find_input_convs(model: nn.Module, matrix_names: dict[nn.Module, str], traced: dict | None) -> dict[str, str]:
    if traced is not None:
        return dict(traced)
    first = next(iter(matrix_names), None)
    if isinstance(first, CONV):
        k, s = tuple(first.kernel_size), tuple(first.stride)
        if first.in_channels <= 4:
            return {
                matrix_names[first]: f"input layer (first conv, {first.in_channels} input channels: the raw signal)"
            }
        if k == s and max(k) > 1:
            return {matrix_names[first]: "input layer (first conv is a patch embedding: stride == kernel size)"}
    return {}


# ------------------------------------------------------------------------------------------ attention
_HEAD_ATTRS = ("num_heads", "n_head", "num_attention_heads", "n_heads")
_KV_ATTRS = ("num_key_value_heads", "n_kv_heads", "num_kv_heads", "n_head_kv")


def _int_attr(objs, names) -> int | None:
    for obj in objs:
        for name in names:
            v = getattr(obj, name, None)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
    return None


def attention_layout(module: nn.Module) -> tuple[int, int, int | None] | None:
    """``(heads, kv_heads, head_dim)`` of an attention module, or None for a module that is not one.

    An attention module carries its head count itself (``num_heads``, ``n_head``, ``num_attention_heads``,
    ``n_heads``) or a ``head_dim`` with the counts in its ``config`` (HF's Llama-style modules); an MLP with a
    ``config`` is not one. kv heads (grouped-query attention) default to the head count."""
    own_heads = _int_attr([module], _HEAD_ATTRS)
    head_dim = _int_attr([module], ("head_dim", "attention_head_size"))
    if own_heads is None and head_dim is None:
        return None
    cfg = getattr(module, "config", None)
    objs = [module] + ([cfg] if cfg is not None else [])
    heads = own_heads or _int_attr(objs, _HEAD_ATTRS)
    if heads is None:
        return None
    return heads, _int_attr(objs, _KV_ATTRS) or heads, head_dim or _int_attr(objs[1:], ("head_dim",))


def attention_blocks(model: nn.Module, split_qkv: bool, heads: bool) -> dict[int, tuple[int, str]]:
    """id(weight) -> (row_blocks, reason) for the q/k/v projections of every attention module, found by structure.

    Projections: ``nn.MultiheadAttention``'s ``in_proj_weight`` (or its separate q/k/v weights); otherwise the
    attention module's own Linear/Conv1D children in registration order: one fused projection with
    (H + 2 KV) * head_dim outputs (GPT-2's ``c_attn``, Phi-3's ``qkv_proj``), or three with H, KV, KV heads'
    outputs (Llama's q/k/v), optionally followed by the output projection (H * head_dim inputs). The fused
    layout is [q; k; v] rows (head-interleaved layouts such as GPT-NeoX's are right with ``heads=True``
    only). ``split_qkv``: q, k and v of a fused projection as 3 blocks (equal sizes: no grouped-query
    attention; otherwise pass ``heads=True``). ``heads``: every head's block of head_dim rows (q, k and v
    heads; separate projections too). Output projections keep one matrix.
    """
    out: dict[int, tuple[int, str]] = {}
    for module in model.modules():
        kind = type(module).__name__
        if isinstance(module, nn.MultiheadAttention):
            H = module.num_heads
            if module.in_proj_weight is not None:
                _fused(out, module.in_proj_weight, H, H, module.head_dim, split_qkv, heads, kind)
            elif heads:
                for w in (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight):
                    out[id(w)] = (H, f"{kind}: one block per head ({H})")
            continue
        layout = attention_layout(module)
        if layout is None:
            continue
        H, KV, hd = layout
        kids = [m for m in module.children() if isinstance(m, nn.Linear) or is_transposed_linear(m)]
        if not kids:
            continue
        shapes = [_out_in(m) for m in kids]
        proj = kids
        if len(kids) >= 2 and shapes[-1][0] == shapes[0][1] and all(i == shapes[0][1] for _, i in shapes[:-1]):
            total = sum(o for o, _ in shapes[:-1])
            d = hd or total // (H + 2 * KV)
            if total == (H + 2 * KV) * d and shapes[-1][1] == H * d:
                proj, hd = kids[:-1], d  # the last child maps the heads back to the model width: the output
        outs = [_out_in(m)[0] for m in proj]
        if hd is None:
            hd = sum(outs) // (H + 2 * KV)
        if len(proj) == 1 and outs[0] == (H + 2 * KV) * hd:
            _fused(out, proj[0].weight, H, KV, hd, split_qkv, heads, kind)
        elif len(proj) == 3 and outs == [H * hd, KV * hd, KV * hd] and heads:
            for m, n in zip(proj, (H, KV, KV)):
                out[id(m.weight)] = (n, f"{kind}: one block per head ({n} of {hd} rows)")
    return out


def _fused(out, weight, H, KV, hd, split_qkv, heads, kind) -> None:
    if heads:
        out[id(weight)] = (H + 2 * KV, f"fused q/k/v of {kind}: one block per head ({H}+{KV}+{KV} of {hd} rows)")
    elif split_qkv:
        if KV != H:
            raise ValueError(
                f"split_qkv: {kind}'s fused projection has q, k, v of unequal sizes ({H}, {KV}, {KV} "
                "heads: grouped-query attention), which are not one batch of blocks; pass heads=True "
                "to split it per head instead"
            )
        out[id(weight)] = (3, f"fused q/k/v of {kind}: q, k, v as 3 blocks")
