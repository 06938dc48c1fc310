"""Activation capture for the LayerMonitor: which layers can be monitored, and their (A, dY) rows.

Monitored kinds: ``nn.Linear``, GPT-2's ``Conv1D`` (y = x W + b with W stored (in, out); its matrix is
W^T, :func:`steepest.geometry.matrix_view` with ``transposed=True``), ``nn.Conv2d`` and ``nn.Conv1d``
with ``groups=1`` (inputs unfolded so that A has one row per output position and ``in*k`` columns,
matching the flattened kernel). Everything else that has a weight matrix is reported with the reason
(:func:`unsupported_reason`): depthwise and grouped convs, 3-D and transposed convs.

Gradient checkpointing: with ``use_reentrant=False`` a checkpointed layer runs forward twice, once in
the forward pass (its output is in the autograd graph, so its output gradient arrives) and once
recomputed inside backward (its output is not in the graph: no gradient). With ``use_reentrant=True``
the first forward runs without autograd (not captured) and only the recomputation is differentiated.
A call made while the autograd engine runs (``torch._C._current_graph_task_id() != -1``) is marked as a
recomputation; per layer, the recomputed calls are used only when there is no ordinary call, so every
row is counted once and the output gradients are the ones that really flowed.

Example:
    >>> cap = ActivationCapture(torch.nn.Linear(3, 2), when=lambda: True)
    >>> _ = cap.layers  # {"": Linear(3, 2)}
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn

SUPPORTED = (nn.Linear, nn.Conv2d, nn.Conv1d)
_CONV = nn.modules.conv._ConvNd


def is_transposed_linear(module: nn.Module) -> bool:
    """GPT-2's ``transformers.pytorch_utils.Conv1D`` (duck typed: the class name, or an ``nf`` attribute
    equal to the weight's second dim). The same rule as the optimizer's router, kept here because the
    diagnostics sit below the optimizer."""
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor) or w.ndim != 2 or isinstance(module, (nn.Linear, _CONV)):
        return False
    return type(module).__name__ == "Conv1D" or (
        isinstance(getattr(module, "nf", None), int) and w.shape[1] == module.nf
    )


def unsupported_reason(module: nn.Module) -> str | None:
    """Why a module with a weight matrix is not monitored (None: it is monitored, or has no weight matrix)."""
    kind = type(module).__name__
    if isinstance(module, (nn.Conv2d, nn.Conv1d)) and module.groups != 1:
        if module.in_channels == module.groups:
            return (
                f"depthwise {kind} (groups={module.groups}): each filter sees one input channel, so the "
                "weight is a stack of separate filters with no matrix across channels (param_groups routes "
                "it to AdamW)"
            )
        return (
            f"grouped {kind} (groups={module.groups}): a block-diagonal weight; per-group activations are not monitored"
        )
    if isinstance(module, _CONV) and not isinstance(module, (nn.Conv2d, nn.Conv1d)):
        return f"{kind} is not monitored (only Linear, GPT-2 Conv1D, Conv1d and Conv2d with groups=1)"
    return None


def monitorable(module: nn.Module) -> bool:
    return (isinstance(module, SUPPORTED) or is_transposed_linear(module)) and unsupported_reason(module) is None


def conv_rows(module: nn.modules.conv._ConvNd, x: torch.Tensor) -> torch.Tensor:
    """(N, L, C*k...) unfolded input of a Conv2d or Conv1d (as a Conv2d of height 1), honouring its padding."""
    one_d = isinstance(module, nn.Conv1d)
    if x.ndim == (2 if one_d else 3):
        x = x.unsqueeze(0)
    as2 = (lambda t: (1, *t)) if one_d else (lambda t: tuple(t))
    if one_d:
        x = x.unsqueeze(2)
    kernel, dilation, stride = as2(module.kernel_size), as2(module.dilation), as2(module.stride)
    pad: str | tuple[int, ...] = module.padding
    if isinstance(pad, str):
        if pad == "valid":
            pad = (0, 0)
        else:  # 'same' (stride 1): total padding d*(k-1), the extra one on the right/bottom like torch
            tot = [d * (k - 1) for d, k in zip(dilation, kernel)]
            x = F.pad(x, (tot[1] // 2, tot[1] - tot[1] // 2, tot[0] // 2, tot[0] - tot[0] // 2))
            pad = (0, 0)
    pad = (0, *pad) if one_d and len(pad) == 1 else tuple(pad)
    if module.padding_mode != "zeros" and any(pad):
        x = F.pad(x, (pad[1], pad[1], pad[0], pad[0]), mode=module.padding_mode)
        pad = (0, 0)
    cols = F.unfold(x, kernel, dilation=dilation, padding=pad, stride=stride)
    return cols.transpose(1, 2)


def _per_sample(t: torch.Tensor, features: int) -> torch.Tensor:
    """(N, L, features) view of a Linear input/output-gradient of shape (..., features)."""
    if t.ndim == 1:
        return t.reshape(1, 1, features)
    return t.reshape(t.shape[0], -1, features)


def _in_backward() -> bool:
    """True while the autograd engine runs (a checkpointed layer recomputed inside backward)."""
    return torch._C._current_graph_task_id() != -1


class ActivationCapture:
    """Forward hooks that keep (input, output-gradient) references of the monitorable layers.

    ``when()`` is asked at every forward; only then (and only in training mode with autograd on)
    are references kept. ``grads`` (a bool, or a callable asked at those forwards): whether the output
    gradients are kept too (the LayerMonitor asks for them only on records with the Spec-Sign index). ``layers`` maps names to modules; ``unsupported`` maps the names of layers
    with a weight matrix that cannot be monitored to the reason. A ``torch.compile``-d model is
    unwrapped (its ``_orig_mod``), so the names are the plain model's. Raises ValueError when the model
    has no supported layer.
    """

    def __init__(
        self,
        model: nn.Module,
        when: Callable[[], bool],
        grads: bool | Callable[[], bool] = True,
        names: Iterable[str] | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        while isinstance(inner := getattr(model, "_orig_mod", None), nn.Module):  # torch.compile's OptimizedModule
            model = inner
        wanted = None if names is None else set(names)
        self.layers: dict[str, nn.Module] = {}
        self.unsupported: dict[str, str] = {}
        self.transposed: dict[str, bool] = {}
        for name, m in model.named_modules():
            if wanted is not None and name not in wanted:
                continue
            reason = unsupported_reason(m)
            if reason:
                self.unsupported[name] = reason
            elif monitorable(m):
                self.layers[name] = m
                self.transposed[name] = is_transposed_linear(m)
        if not self.layers:
            raise ValueError(
                f"no supported layer (Linear, GPT-2 Conv1D, Conv1d or Conv2d with groups=1) found in "
                f"{type(model).__name__}; diagnostics need at least one such module"
            )
        self.skipped: dict[str, str] = dict(self.unsupported)  # name -> why not recorded at the last record
        self._warned: dict[str, str] = {}
        self._step: int | None = None  # the last recording step
        self.when = when
        self.grads = grads
        self.data: dict[str, list[list]] = {}
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.layers.items()]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if not (module.training and torch.is_grad_enabled() and inputs and self.when()):
                return None
            entry = [inputs[0].detach(), None, _in_backward()]
            self.data.setdefault(name, []).append(entry)
            keep_grad = self.grads() if callable(self.grads) else self.grads
            if keep_grad and isinstance(output, torch.Tensor) and output.requires_grad:

                def keep(grad, entry=entry):
                    entry[1] = grad.detach()

                output.register_hook(keep)
            return None

        eager = torch.compiler.disable(hook)  # runs eagerly under torch.compile (a Python side effect)

        def dispatch(module, inputs, output):
            # the disable wrapper costs ~20 us per call in eager mode (charlm: 120 forwards between two decisions,
            # 0.15% of Adaptive's step), so it is entered only while dynamo traces the model
            return eager(module, inputs, output) if torch.compiler.is_compiling() else hook(module, inputs, output)

        return dispatch

    def weight(self, name: str) -> torch.Tensor:
        """The weight of layer ``name`` (a Linear, Conv or Conv1D module: its ``weight`` is a tensor)."""
        return cast(torch.Tensor, self.layers[name].weight)  # nn.Module.__getattr__ is typed Tensor | Module

    def calls(self, name: str) -> list[list]:
        """The captured calls used for ``name``: ordinary forwards, else the checkpoint recomputations."""
        data = self.data.get(name, [])
        plain = [e for e in data if not e[2]]
        return plain if plain else data

    def rows(self, name: str) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """Per forward call: (A (N, L, in_features), dY (N, L, out_features) or None)."""
        m = self.layers[name]
        out = []
        for x, dy, _ in self.calls(name):
            if isinstance(m, _CONV):
                A = conv_rows(m, x)
                if dy is not None and dy.ndim < (3 if isinstance(m, nn.Conv1d) else 4):  # unbatched input
                    dy = dy.unsqueeze(0)
                D = None if dy is None else dy.flatten(2).transpose(1, 2)
            else:
                w = self.weight(name)
                fan_in, fan_out = (w.shape[0], w.shape[1]) if self.transposed[name] else (w.shape[1], w.shape[0])
                A = _per_sample(x, fan_in)
                D = None if dy is None else _per_sample(dy, fan_out)
            out.append((A, D))
        return out

    def skip_report(self) -> str:
        """One line: every layer not recorded at the last recording step, and why ('' when none)."""
        if not self.skipped:
            return ""
        parts = "; ".join(f"{n!r} ({why})" for n, why in self.skipped.items())
        return f"LayerMonitor step {self._step}: {len(self.skipped)} layer(s) not recorded: {parts}"

    def report_skips(self, skipped: dict[str, str], step: int) -> None:
        """Keep this step's skipped layers (and the unsupported ones); warn, in one line listing all of them,
        when the set or a reason changed since the last warning."""
        self.skipped, self._step = {**self.unsupported, **skipped}, step
        if self.skipped and self.skipped != self._warned:
            warnings.warn(self.skip_report(), stacklevel=4)
        self._warned = dict(self.skipped)

    def clear(self) -> None:
        self.data = {}

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.clear()


__all__ = ["ActivationCapture", "SUPPORTED", "is_transposed_linear", "unsupported_reason", "monitorable", "conv_rows"]
