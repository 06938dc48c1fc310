"""Whole-model routing: which parameters get matrix geometry and which go to AdamW, and why.

Default rules (REFERENCE.md section 5, item 7; the Muon-with-aux-Adam convention):

* ``nn.Embedding`` weights -> AdamW ("embedding": rows are looked up, not multiplied);
* the output head -> AdamW ("output head"): a Linear whose name matches ``head_patterns`` or whose
  weight is tied to an embedding; if no name matches, the last Linear of the model in module order;
* tensors with fewer than 2 dims (biases, norm gains) -> AdamW ("vector");
* Linear and Conv weights -> the matrix geometry (conv kernels flattened to (out, in*kh*kw));
* other >= 2-D tensors -> matrix geometry if 2-D, else AdamW unless ``batch_patterns`` names them
  (then they are batches of matrices over their last two dims).

``overrides`` maps fnmatch name patterns to ``"matrix"`` or ``"adamw"`` and wins over every rule;
``module_types`` maps module classes to a route.
"""

from __future__ import annotations

import fnmatch
from typing import Iterable

import torch
from torch import nn

ROUTES = ("matrix", "adamw")
DEFAULT_HEAD_PATTERNS = ("lm_head*", "head*", "*.head*", "output*", "*.output*", "classifier*", "*.classifier*",
                         "fc_out*", "*.fc_out*")
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _route_of(name: str, module: nn.Module, param: torch.Tensor, *, head_names: set[str],
              tied: set[int], overrides: dict, module_types: dict, batch_patterns: Iterable[str]) -> tuple[str, str, str]:
    """Return (route, reason, tensor_mode) for one parameter."""
    for pattern, route in overrides.items():
        if fnmatch.fnmatch(name, pattern):
            mode = "batch" if param.ndim > 2 and not isinstance(module, _CONV) else "flatten"
            if route == "matrix" and param.ndim < 2:
                raise ValueError(f"override {pattern!r} sends {name} (shape {tuple(param.shape)}) to matrix "
                                 "geometry, but it is not a matrix")
            return route, f"override {pattern!r}", mode
    for mtype, route in module_types.items():
        if isinstance(module, mtype) and (route == "adamw" or param.ndim >= 2):
            return route, f"module type {mtype.__name__}", "flatten"
    if isinstance(module, nn.Embedding) or isinstance(module, nn.EmbeddingBag):
        return "adamw", "embedding", "flatten"
    if param.ndim < 2:
        return "adamw", "vector (bias / norm gain)", "flatten"
    if id(param) in tied:
        return "adamw", "output head (tied to an embedding)", "flatten"
    if isinstance(module, nn.Linear) and name.rsplit(".", 1)[0] in head_names:
        return "adamw", "output head", "flatten"
    if isinstance(module, nn.Linear):
        return "matrix", "hidden Linear weight", "flatten"
    if isinstance(module, _CONV):
        return "matrix", f"{type(module).__name__} kernel, flattened to (out, in*k)", "flatten"
    if param.ndim == 2:
        return "matrix", "2-D parameter", "flatten"
    if any(fnmatch.fnmatch(name, p) for p in batch_patterns):
        return "matrix", f"{param.ndim}-D tensor as a batch of matrices", "batch"
    return "adamw", f"{param.ndim}-D tensor (name it in batch_patterns to treat it as matrices)", "flatten"


def param_groups(
    model: nn.Module,
    *,
    adamw_lr: float = 3e-4,
    adamw_betas: tuple[float, float] = (0.9, 0.95),
    adamw_weight_decay: float = 0.0,
    matrix_options: dict | None = None,
    head_patterns: Iterable[str] = DEFAULT_HEAD_PATTERNS,
    overrides: dict[str, str] | None = None,
    module_types: dict[type, str] | None = None,
    batch_patterns: Iterable[str] = (),
) -> list[dict]:
    """Split ``model``'s trainable parameters into matrix-geometry and AdamW groups.

    Returns a list of parameter-group dicts for any steepest optimizer: matrix groups carry
    ``algorithm="steepest"`` plus ``matrix_options`` (e.g. ``{"lr": 0.02}``); AdamW groups carry
    ``algorithm="adamw"`` with ``adamw_lr``, ``adamw_betas`` and ``adamw_weight_decay``. Every group
    also holds ``names`` and ``reasons`` (one per parameter) for :func:`describe` and error messages.

    Example:
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> [g["algorithm"] for g in param_groups(model)]
        ['steepest', 'adamw']
    """
    overrides = dict(overrides or {})
    for pattern, route in overrides.items():
        if route not in ROUTES:
            raise ValueError(f"overrides[{pattern!r}] must be one of {ROUTES}, got {route!r}")
    module_types = dict(module_types or {})
    for mtype, route in module_types.items():
        if route not in ROUTES:
            raise ValueError(f"module_types[{mtype!r}] must be one of {ROUTES}, got {route!r}")
    head_patterns = tuple(head_patterns)

    owners: dict[int, tuple[str, nn.Module]] = {}
    linear_names = []
    embed_weights = set()
    for mname, module in model.named_modules():
        if isinstance(module, nn.Linear):
            linear_names.append(mname)
        if isinstance(module, (nn.Embedding, nn.EmbeddingBag)):
            embed_weights.add(id(module.weight))
        for pname, param in module.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            owners.setdefault(id(param), (full, module))
    head_names = {n for n in linear_names if any(fnmatch.fnmatch(n, p) for p in head_patterns)}
    if not head_names and linear_names:
        head_names = {linear_names[-1]}
    tied = {pid for pid in embed_weights}

    buckets: dict[tuple[str, str], dict] = {}
    seen = set()
    for full_name, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        name, module = owners.get(id(param), (full_name, model))
        route, reason, mode = _route_of(name, module, param, head_names=head_names, tied=tied,
                                        overrides=overrides, module_types=module_types,
                                        batch_patterns=batch_patterns)
        key = (route, mode)
        if key not in buckets:
            if route == "adamw":
                buckets[key] = dict(algorithm="adamw", lr=adamw_lr, betas=tuple(adamw_betas),
                                    weight_decay=adamw_weight_decay)
            else:
                buckets[key] = dict(algorithm="steepest", tensor_mode=mode, **(matrix_options or {}))
            buckets[key].update(params=[], names=[], reasons=[])
        buckets[key]["params"].append(param)
        buckets[key]["names"].append(name)
        buckets[key]["reasons"].append(reason)
    order = {("matrix", "flatten"): 0, ("matrix", "batch"): 1, ("adamw", "flatten"): 2}
    return [buckets[k] for k in sorted(buckets, key=lambda k: order.get(k, 3))]


def describe(groups, *, file=None) -> str:
    """Print (and return) a table of which parameter went where and why.

    Accepts the list from :func:`param_groups` or an optimizer (its ``param_groups``).
    """
    if isinstance(groups, torch.optim.Optimizer):
        groups = groups.param_groups
    rows = []
    for gi, g in enumerate(groups):
        algo = g.get("algorithm", "steepest")
        geometry = "adamw" if algo == "adamw" else g.get("norm", "(optimizer default)")
        if algo != "adamw" and g.get("norm") == "schatten":
            geometry = f"schatten p={g.get('p')}"
        names = g.get("names") or [f"group{gi}[{j}]" for j in range(len(g["params"]))]
        reasons = g.get("reasons") or [""] * len(names)
        for p, n, r in zip(g["params"], names, reasons):
            rows.append((n, "x".join(map(str, p.shape)) or "scalar", geometry, r))
    header = ("parameter", "shape", "geometry", "why")
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) if rows else len(header[i]) for i in range(4)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    n_matrix = sum(1 for r in rows if r[2] != "adamw")
    lines.append(f"{len(rows)} parameters: {n_matrix} in matrix geometry, {len(rows) - n_matrix} on AdamW")
    text = "\n".join(lines)
    print(text, file=file)
    return text
