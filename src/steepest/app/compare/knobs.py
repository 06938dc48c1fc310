"""Report section "Knob per layer over time": the geometry a time chooser gave each layer as training went.

The choosers of :mod:`steepest.optim.time_choosers` (the ``knob-schedule``, ``schatten-choice`` and
``phase-switch`` entries) keep a ``history`` of their decisions, ``{"step", "param", "knob"}`` (the knob a of
U diag(s^a) V^T: 1 the Frobenius direction, 0 spectral, < 0 past it). :func:`write_knobs` saves it at the
end of a run as ``knobs/<optimizer>.json`` (a resumed run's chooser resumes its history, so the file is
the whole run's); :func:`knob_sections` draws it as a layers x steps heatmap for ``report.html``.

Example:
    >>> recs = [{"step": 0, "layer": "a", "knob": 1.0}, {"step": 10, "layer": "a", "knob": 0.0}]
    >>> knob_grid(recs)
    (['a'], [0, 10], [[1.0, 0.0]])
"""

from __future__ import annotations

import math
from pathlib import Path

from steepest.app.guard import mapping_of, read_json
from steepest.app.report.html import Section
from steepest.app.runs import atomic_write_json


def knob_records(optimizer) -> list[dict] | None:
    """``[{"step", "layer", "knob"}]`` from ``optimizer.chooser.history`` when its chooser is a time chooser
    (has ``knobs()``); None otherwise."""
    chooser = getattr(optimizer, "chooser", None)
    if chooser is None or not callable(getattr(chooser, "knobs", None)):
        return None
    return [{"step": int(h["step"]), "layer": str(h["param"]), "knob": float(h["knob"])} for h in chooser.history]


def write_knobs(run_dir: Path, name: str, optimizer) -> Path | None:
    """Write ``run_dir/knobs/<name>.json`` (``{"records": [...]}``) for a time chooser; None for other optimizers."""
    recs = knob_records(optimizer)
    if recs is None:
        return None
    path = Path(run_dir) / "knobs" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"records": recs})
    return path


def knob_grid(records: list[dict]) -> tuple[list[str], list[int], list[list[float]]]:
    """(layers, steps, knob[layer][step]) with NaN where a layer has no record at a step."""
    layers = list(dict.fromkeys(r["layer"] for r in records))
    steps = sorted({int(r["step"]) for r in records})
    cell = {(r["layer"], int(r["step"])): float(r["knob"]) for r in records}
    return layers, steps, [[cell.get((layer, s), math.nan) for s in steps] for layer in layers]


def knob_sections(run_dir: Path, names: list[str]) -> list[Section]:
    """One section per optimizer with a ``knobs/<name>.json`` file: the heatmap and the last knob per layer."""
    from steepest.app.report.compare_figures import layer_heatmap  # lazy: matplotlib only when drawing

    out = []
    for name in names:
        path = Path(run_dir) / "knobs" / f"{name}.json"
        if not path.exists():
            continue
        data = read_json(path, "the chooser's knob history", "rerun the comparison", mapping_of({"records": list}))
        if not data["records"]:
            continue
        layers, steps, grid = knob_grid(data["records"])
        fig = layer_heatmap(
            grid,
            layers,
            steps,
            Path(run_dir) / "figures" / f"knobs_{name}.png",
            title=f"{name}: knob a per layer (1 Frobenius, 0 spectral, < 0 past spectral)",
        )
        last = {
            layer: next((v for v in reversed(row) if not math.isnan(v)), math.nan) for layer, row in zip(layers, grid)
        }
        text = [
            f"The knob a of U diag(s^a) V^T that {name}'s chooser gave each matrix layer at its decision steps "
            f"({len(steps)} recorded, steps {steps[0]}-{steps[-1]}). Last values: "
            + ", ".join(f"{layer} {v:g}" for layer, v in last.items())
            + "."
        ]
        out.append(Section(f"Knob per layer over time: {name}", text=text, figures=[str(fig)]))
    return out


__all__ = ["knob_records", "write_knobs", "knob_grid", "knob_sections"]
