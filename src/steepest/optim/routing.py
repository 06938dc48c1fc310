"""Whole-model routing: which parameters get matrix geometry and which go to AdamW, and why.

Routing is by structure (:mod:`steepest.optim.structure` finds the output head and input layers), not by
parameter names; name patterns are only the user's ``overrides``. Rules, first match wins:

1. ``overrides`` (fnmatch name pattern -> ``"matrix"`` or ``"adamw"``), then ``module_types``.
2. ``nn.Embedding`` weights -> role ``"embedding"`` (rows are looked up, not multiplied); a weight tied
   to the output head is the same tensor and is listed once, under the embedding.
3. tensors with < 2 dims, or (other than a Linear/conv's own weight) with at most one dim > 1 (norm
   gains, biases, weight-norm gains) -> role ``"vector"``.
4. the output head (see structure.py: ``head=``, tied weights, ``get_output_embeddings()``, a Linear onto
   the token vocabulary, a traced forward with ``example_inputs=``, else the width rule) -> ``"head"``.
5. input layers: the conv consuming the raw input (stem, patch embedding) -> ``"embedding"``.
6. GPT-2 ``Conv1D`` (weight stored (in, out)) -> ``"hidden"`` in its own group with ``transposed=True``:
   the kernel must dualize and scale it as W.T.
7. Linear weights -> ``"hidden"``.
8. convs: depthwise (each filter sees one input channel: weight (C*m, 1, k...)) have no matrix structure
   across channels -> AdamW, role ``"other"``. Grouped convs (1 < groups, > 1 channel per group) and
   ordinary convs -> ``"hidden"``, ``tensor_mode="flatten"``: (out, in/groups*k...); for grouped convs
   that stacks the groups' (out/groups, in/groups*k) blocks as rows of one matrix.
9. other parameters: leading dim 1 and >= 3-D (broadcast over the batch: learned position / class
   tokens) -> ``"embedding"``; 2-D -> ``"hidden"``; >= 3-D (fused MoE experts, per-head weights) ->
   ``"hidden"`` with ``tensor_mode="batch"`` (a batch of matrices over the last two dims).

Roles ``"hidden"`` use ``algorithm="steepest"``; ``"embedding"``, ``"head"``, ``"vector"``, ``"other"``
use ``algorithm="adamw"``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from typing import TextIO

import torch
from torch import nn

from steepest.optim import structure as S

ROUTES = ("matrix", "adamw")
ROLES = ("hidden", "embedding", "head", "vector", "other")
_ORDER = {r: i for i, r in enumerate(ROLES)}


def _route_of(name, module, is_weight, param, *, st, overrides, module_types):
    """Return (role, reason, tensor_mode, transposed) for one parameter."""
    conv = isinstance(module, S.CONV)
    nd_mode = "batch" if param.ndim > 2 and not conv else "flatten"
    for pattern, route in overrides.items():
        if fnmatch.fnmatch(name, pattern):
            if route == "matrix" and param.ndim < 2:
                raise ValueError(
                    f"override {pattern!r} sends {name} (shape {tuple(param.shape)}) to matrix "
                    "geometry, but it is not a matrix"
                )
            if route == "matrix":
                return "hidden", f"override {pattern!r}", nd_mode, is_weight and S.is_transposed_linear(module)
            role = _structural(name, module, is_weight, param, st)[0]
            return (role if role != "hidden" else "other"), f"override {pattern!r}", "flatten", False
    for mtype, route in module_types.items():
        if isinstance(module, mtype) and (route == "adamw" or param.ndim >= 2):
            role = "hidden" if route == "matrix" else _structural(name, module, is_weight, param, st)[0]
            role = "other" if route == "adamw" and role == "hidden" else role
            return role, f"module type {mtype.__name__}", nd_mode, route == "matrix" and S.is_transposed_linear(module)
    return _structural(name, module, is_weight, param, st)


def _structural(name, module, is_weight, param, st):
    mname = st["module_name"].get(module, "")
    if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
        tied = st["tied"].get(id(param))
        return "embedding", "embedding" + (f" (tied to the output head {tied})" if tied else ""), "flatten", False
    shape = tuple(param.shape)
    token = param.ndim >= 3 and shape[0] == 1 and not S.is_matrix_module(module)  # rule 9's broadcast token
    if param.ndim < 2 or (not is_weight and sum(d > 1 for d in shape) <= 1 and not token):
        return "vector", "vector (bias / norm gain)", "flatten", False
    if is_weight and mname in st["heads"]:
        return "head", st["heads"][mname], "flatten", False
    if is_weight and mname in st["inputs"]:
        return "embedding", st["inputs"][mname], "flatten", False
    if is_weight and S.is_transposed_linear(module):
        return "hidden", "hidden Conv1D weight, stored (in, out): transposed=True", "flatten", True
    if is_weight and isinstance(module, nn.Linear):
        return "hidden", "hidden Linear weight", "flatten", False
    if isinstance(module, S.CONV):
        kind = type(module).__name__
        if param.ndim >= 3 and shape[1] == 1 and module.groups > 1:
            return (
                "other",
                f"depthwise {kind} (groups={module.groups}): one input channel per filter, no matrix",
                "flatten",
                False,
            )
        if module.groups > 1:
            return (
                "hidden",
                (
                    f"grouped {kind} (groups={module.groups}), flattened to (out, in/groups*k): "
                    "group blocks stacked as rows"
                ),
                "flatten",
                False,
            )
        return "hidden", f"{kind} kernel, flattened to (out, in*k)", "flatten", False
    if param.ndim >= 3 and shape[0] == 1:
        return (
            "embedding",
            "embedding (leading dim 1: broadcast over the batch, e.g. a position/class token)",
            "flatten",
            False,
        )
    if param.ndim == 2:
        return "hidden", "2-D parameter", "flatten", False
    return (
        "hidden",
        f"{param.ndim}-D tensor as a batch of matrices over the last two dims (fused experts / heads)",
        "batch",
        False,
    )


def param_groups(
    model: nn.Module,
    *,
    hidden: dict | None = None,
    embedding: dict | None = None,
    head: dict | str | Iterable[str] | None = None,
    vector: dict | None = None,
    other: dict | None = None,
    head_modules: str | Iterable[str] | None = None,
    example_inputs: torch.Tensor | tuple | dict | None = None,
    split_qkv: bool = False,
    heads: bool = False,
    adamw_lr: float | None = None,
    adamw_betas: tuple[float, float] | None = None,
    adamw_weight_decay: float | None = None,
    matrix_options: dict | None = None,
    head_patterns: Iterable[str] | None = None,
    overrides: dict[str, str] | None = None,
    module_types: dict[type, str] | None = None,
    batch_patterns: Iterable[str] = (),
) -> list[dict]:
    """Split ``model``'s trainable parameters into one group per role (module docstring: the rules).

    Groups: role ``"hidden"`` (``algorithm="steepest"``, one group per ``tensor_mode`` and one for
    transposed Conv1D weights, ``transposed=True``), ``"embedding"``, ``"head"``, ``"vector"`` and
    ``"other"`` (``algorithm="adamw"``). Each group holds ``role``, ``names`` and ``reasons`` (one per
    parameter) for :func:`describe` and error messages.

    Hyperparameters: **none are set unless given**, so the optimizer's constructor arguments (``lr``,
    ``adamw_lr``, ``betas``, ``weight_decay``, ...) apply to every group that does not set its own.
    Per role: ``hidden=dict(lr=0.02)``, ``embedding=dict(lr=1e-3)``, ``head=dict(...)``,
    ``vector=dict(...)``, ``other=dict(...)``. Older explicit settings still work: ``matrix_options``
    (hidden groups), ``adamw_lr`` / ``adamw_betas`` / ``adamw_weight_decay`` (every AdamW group); a
    per-role dict wins over them.

    Structure: ``head_modules`` (module name or names; ``head="lm_head"`` or a list of names also works)
    says which modules are the output head; ``head_patterns`` adds modules by fnmatch name pattern;
    ``example_inputs`` (a tensor, a tuple of args or a dict of kwargs) lets one traced forward find the
    head and input convs. ``batch_patterns`` is kept for compatibility (>= 3-D tensors are batches of
    matrices by default now).

    Attention blocks (:func:`steepest.optim.structure.attention_blocks`, found by structure):
    ``split_qkv=True`` dualizes q, k and v of a fused projection (GPT-2's ``c_attn``, ``qkv_proj``,
    ``nn.MultiheadAttention``'s ``in_proj_weight``) as three matrices; ``heads=True`` dualizes every head's
    block of q, k and v (fused or separate projections, e.g. Llama's q/k/v_proj) on its own. Such weights get
    their own hidden group with ``row_blocks`` (the number of row blocks of the matrix view,
    :func:`steepest.geometry.matrix_view`), so batching and distribution treat the blocks as a batch of
    matrices. Output projections and fused MoE experts (already batches) are unchanged.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> [(g["role"], g["algorithm"]) for g in param_groups(model)]
        [('hidden', 'steepest'), ('head', 'adamw'), ('vector', 'adamw')]
    """
    if not isinstance(model, nn.Module):
        what = type(model).__name__
        raise TypeError(
            f"param_groups(model) routes by the model's structure, so it takes the nn.Module itself; got "
            f"a {what}. Pass `model`, not `model.parameters()`; a plain list of tensors can go to the "
            "optimizer directly (steepest.Muon(params))."
        )
    if isinstance(head, (str, list, tuple)):
        head_modules, head = head, None
    if head is not None and not isinstance(head, dict):
        raise ValueError(f"head= takes module name(s) or a dict of hyperparameters, got {type(head).__name__}")
    overrides = dict(overrides or {})
    for pattern, route in overrides.items():
        if route not in ROUTES:
            raise ValueError(f"overrides[{pattern!r}] must be one of {ROUTES}, got {route!r}")
    module_types = dict(module_types or {})
    for mtype, route in module_types.items():
        if route not in ROUTES:
            raise ValueError(f"module_types[{mtype!r}] must be one of {ROUTES}, got {route!r}")

    owners = S.owners(model)
    module_name = {m: n for n, m in model.named_modules()}
    matrix_names = {m: n for n, m in model.named_modules() if S.is_matrix_module(m)}
    traced = S.trace(model, example_inputs, matrix_names) if example_inputs is not None else (None, None)
    head_names = S.find_heads(model, matrix_names, head_modules, traced[0])
    for pattern in head_patterns or ():
        for n in matrix_names.values():
            if fnmatch.fnmatch(n, pattern):
                head_names.setdefault(n, f"output head (head_patterns {pattern!r})")
    inputs = S.find_input_convs(model, matrix_names, traced[1])
    embed_ids = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Embedding, nn.EmbeddingBag))}
    tied = {id(m.weight): n for m, n in matrix_names.items() if n in head_names and id(m.weight) in embed_ids}
    st = dict(heads=head_names, inputs=inputs, tied=tied, module_name=module_name)
    blocks = S.attention_blocks(model, split_qkv, heads) if (split_qkv or heads) else {}

    adamw_legacy: dict[str, object] = {
        k: v for k, v in (("lr", adamw_lr), ("weight_decay", adamw_weight_decay)) if v is not None
    }
    if adamw_betas is not None:
        adamw_legacy["betas"] = tuple(adamw_betas)
    per_role = dict(hidden=dict(matrix_options or {}, **(hidden or {})))
    for role, opts in (("embedding", embedding), ("head", head), ("vector", vector), ("other", other)):
        per_role[role] = dict(adamw_legacy, **(opts or {}))

    buckets: dict[tuple, dict] = {}
    seen = set()
    for full_name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        name, module, is_weight = owners.get(id(param), (full_name, model, False))
        role, reason, mode, transposed = _route_of(
            name, module, is_weight, param, st=st, overrides=overrides, module_types=module_types
        )
        rb = 1
        if role == "hidden" and id(param) in blocks:
            rb, why = blocks[id(param)]
            reason = f"{reason}; {why}"
        key = (role, mode, transposed, rb)
        if key not in buckets:
            if role == "hidden":
                buckets[key] = dict(
                    per_role["hidden"],
                    algorithm="steepest",
                    role=role,
                    tensor_mode=mode,
                    transposed=transposed,
                    **({"row_blocks": rb} if rb != 1 else {}),
                )
            else:
                buckets[key] = dict(per_role[role], algorithm="adamw", role=role)
            buckets[key].update(params=[], names=[], reasons=[])
        buckets[key]["params"].append(param)
        buckets[key]["names"].append(name)
        buckets[key]["reasons"].append(reason)
    return [buckets[k] for k in sorted(buckets, key=lambda k: (_ORDER[k[0]], k[1] != "flatten", k[2], k[3]))]


def _geometry(g: dict) -> str:
    if g.get("algorithm", "steepest") == "adamw":
        return "adamw"
    norm = g.get("norm")
    text = (
        "steepest (norm set by the optimizer)"
        if norm is None
        else (f"schatten p={g.get('p')}" if norm == "schatten" else str(norm))
    )
    if g.get("tensor_mode") == "batch":
        text += " [batch]"
    if g.get("transposed"):
        text += " [W.T]"
    if g.get("row_blocks", 1) != 1:
        text += f" [{g['row_blocks']} blocks]"
    return text


def describe(groups: list[dict] | torch.optim.Optimizer, *, file: TextIO | None = None) -> str:
    """Print (and return) a table of which parameter went where and why.

    Accepts the list from :func:`param_groups` or an optimizer (its ``param_groups``; then the geometry
    column is the norm each group actually uses).
    """
    if isinstance(groups, torch.optim.Optimizer):
        groups = groups.param_groups
    rows = []
    for gi, g in enumerate(groups):
        geometry = _geometry(g)
        role = g.get("role", "")
        names = g.get("names") or [f"group{gi}[{j}]" for j in range(len(g["params"]))]
        reasons = g.get("reasons") or [""] * len(names)
        for p, n, r in zip(g["params"], names, reasons):
            rows.append((n, "x".join(map(str, p.shape)) or "scalar", role, geometry, r))
    header = ("parameter", "shape", "role", "geometry", "why")
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) if rows else len(header[i]) for i in range(5)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    has_head = any(
        g.get("role") == "head" or any("tied to the output head" in r for r in g.get("reasons") or ()) for g in groups
    )
    if any(g.get("role") for g in groups) and not has_head:
        lines.append(
            "no output head found (no tied/declared head, no Linear onto a vocabulary, width rule did "
            "not apply): pass head= or example_inputs= if the model has one"
        )
    n_matrix = sum(1 for r in rows if r[3] != "adamw")
    lines.append(f"{len(rows)} parameters: {n_matrix} in matrix geometry, {len(rows) - n_matrix} on AdamW")
    text = "\n".join(lines)
    print(text, file=file)
    return text
