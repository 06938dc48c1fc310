"""Per-layer diagnostics during ``steepest compare``: a :class:`steepest.diagnostics.LayerMonitor` per run.

Every ``every`` steps the monitor writes one record per Linear/Conv2d layer to
``diagnostics/<optimizer>.jsonl`` (nr(G), st(A), their ratio ``nr_st_ratio``, the Davis-Drusvyatskiy
winner, norms of the weight and the update; seed 001). For the adaptive optimizer each record also
gets ``choice``, the geometry that optimizer used for the layer at that step. The monitor never changes
training (hooks only read), so monitored and unmonitored runs give the same numbers.

The Spec-Sign index is switched off here (``microbatches=0``) to keep the overhead small;
``steepest.diagnostics`` computes it on request. st(A) uses every activation row: the monitor's
``method="fast"`` works on the small Gram matrix A^T A, and a row subset would bias st(A) low
(benchmarks/HISTORY.md, "LayerMonitor overhead").
Optimizers that are not one ``torch.optim.Optimizer`` (torch.optim.Muon + AdamW stepped as a pair)
are not monitored: the monitor's before/after-step hooks need a single step.
"""

from __future__ import annotations

from pathlib import Path

import torch

from steepest.app.runs import append_jsonl
from steepest.diagnostics import JSONLSink, LayerMonitor


class _ChoiceSink(JSONLSink):
    """JSONL sink that adds the adaptive optimizer's per-layer choice to each record (and rewinds like
    JSONLSink on resume, so records an interrupted run wrote after its checkpoint are dropped)."""

    def __init__(self, path: Path, choices) -> None:
        super().__init__(path)
        self.choices = choices

    def write(self, record: dict) -> None:
        rec = dict(record)
        if self.choices is not None:
            rec["choice"] = self.choices().get(rec["layer"], "adamw")  # not a matrix group: AdamW-routed
        append_jsonl(self.path, rec)


def layer_choices(optimizer, model: torch.nn.Module):
    """A function returning ``{layer name: geometry}`` for an optimizer that reports per-parameter choices.

    Uses ``optimizer.geometries()`` (``{parameter name: geometry}``, as :class:`steepest.Adaptive`
    provides) and maps ``"<layer>.weight"`` to ``"<layer>"``; returns None for optimizers without it.
    """
    if not callable(getattr(optimizer, "geometries", None)):
        return None

    def get() -> dict:
        out = {}
        for name, geometry in optimizer.geometries().items():
            layer = name[: -len(".weight")] if name.endswith(".weight") else name
            out[layer] = geometry
        return out

    return get


class CompareMonitor:
    """A LayerMonitor attached to ``optimizer`` whose step counter follows the training step."""

    def __init__(self, model, optimizer, path: Path, every: int, start_step: int = 0) -> None:
        self.monitor = LayerMonitor(model, every=every, sinks=[_ChoiceSink(path, layer_choices(optimizer, model))],
                                    microbatches=0, method="fast")
        self.monitor.load_state_dict({"step": start_step, "every": every})  # resume: no step recorded twice
        self.monitor.attach(optimizer)

    def after_step(self, step: int) -> None:
        """Keep the monitor's counter equal to the number of steps taken (it counts optimizer steps)."""
        self.monitor.step = step + 1

    def close(self) -> None:
        self.monitor.detach()


def monitorable(model: torch.nn.Module) -> bool:
    """Whether ``model`` has a layer the LayerMonitor records (nn.Linear, or nn.Conv2d with groups=1)."""
    return any(isinstance(m, torch.nn.Linear) or (isinstance(m, torch.nn.Conv2d) and m.groups == 1)
               for m in model.modules())


def attach_monitor(model, optimizer, path: Path, every: int, start_step: int = 0,
                   note=None) -> CompareMonitor | None:
    """Monitor ``model`` while ``optimizer`` trains it (None when ``optimizer`` is not one Optimizer).

    A model without a monitorable layer (:func:`monitorable`) is not monitored: ``note(text)`` says so
    and the run goes on (the diagnostics are an extra, never a reason to fail a run).
    """
    if every <= 0 or not isinstance(optimizer, torch.optim.Optimizer):
        return None
    if not monitorable(model):
        if note is not None:
            note(f"no nn.Linear or nn.Conv2d layer in {type(model).__name__}: per-layer diagnostics skipped")
        return None
    return CompareMonitor(model, optimizer, path, every, start_step)
