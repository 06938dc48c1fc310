"""Figures of ``steepest compare``, drawn from the run directory's result files only.

* ``loss_curves``: validation loss against step and against wall time, one line per optimizer, with
  the reference (AdamW) final loss as a dashed line;
* ``layer_heatmap``: a per-layer quantity (e.g. nr(G)/st(A)) as layers x steps;
* ``choice_map``: the adaptive optimizer's geometry per layer over time (categorical layers x steps).

Example:
    >>> loss_curves({"adamw": [(0, 4.0, 0.0), (10, 3.0, 1.0)]}, 3.0, "runs/x/figures/loss.png")  # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib
import matplotlib.patches as mpatches
import numpy as np

from steepest.app.report.figures import heatmap, hline, lines, save, subplots


def loss_curves(evals: Mapping[str, Sequence[tuple[int, float, float]]], target: float | None, path) -> Path:
    """Validation loss vs step (left) and vs wall seconds (right); ``evals[name] = [(step, val, wall)]``."""
    fig, axes = subplots(1, 2, width=6.0, height=4.0)
    for name, rows in evals.items():
        s = [r[0] for r in rows]
        v = [r[1] if math.isfinite(r[1]) else math.nan for r in rows]
        w = [r[2] for r in rows]
        axes[0].plot(s, v, marker="o", markersize=2.5, label=name)
        axes[1].plot(w, v, marker="o", markersize=2.5, label=name)
    for ax, xl in zip(axes, ("step", "wall time (s)")):
        finite = [r[1] for rows in evals.values() for r in rows if math.isfinite(r[1])]
        if finite:
            lo, hi = min(finite), sorted(finite)[int(0.9 * (len(finite) - 1))]
            ax.set_ylim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
        lines(ax, [], {}, xlabel=xl, ylabel="validation loss (nats)")
        if target is not None:
            hline(ax, target, label="reference final")
        ax.legend(fontsize=8)
    return save(fig, path)


def layer_heatmap(values: Sequence[Sequence[float]], layers: Sequence[str], steps: Sequence[int], path, *,
                  title: str, cbar_label: str = "") -> Path:
    """A layers x steps heatmap (at most ~16 step columns are labelled)."""
    height = max(3.0, 0.32 * len(layers) + 1.5)
    fig, axes = subplots(1, 1, width=max(7.0, 0.45 * len(steps) + 4), height=height)
    ax = axes[0]
    heatmap(ax, values, xticklabels=list(steps), yticklabels=list(layers), xlabel="step", title=title,
            annotate=len(steps) * len(layers) <= 120)
    if len(steps) > 16:
        keep = np.linspace(0, len(steps) - 1, 16).round().astype(int)
        ax.set_xticks(keep)
        ax.set_xticklabels([str(steps[i]) for i in keep], rotation=45, fontsize=8)
    return save(fig, path)


def choice_map(choices: Sequence[Sequence[str]], layers: Sequence[str], steps: Sequence[int], path, *,
               title: str) -> Path:
    """Categorical layers x steps map of the adaptive optimizer's geometry (legend names each colour)."""
    fixed = ["spectral", "linf", "frobenius", "adamw"]  # the same colour for a geometry in every report
    seen = {c for row in choices for c in row if c}
    kinds = [k for k in fixed if k in seen] + sorted(seen - set(fixed))
    index = {k: (fixed.index(k) if k in fixed else len(fixed) + i) for i, k in enumerate(kinds)}
    arr = np.array([[index.get(c, np.nan) if c else np.nan for c in row] for row in choices], dtype=float)
    height = max(3.0, 0.32 * len(layers) + 1.5)
    fig, axes = subplots(1, 1, width=max(7.0, 0.45 * len(steps) + 4), height=height)
    ax = axes[0]
    cmap = matplotlib.colormaps.get_cmap("tab10")
    ax.imshow(np.ma.masked_invalid(arr), origin="lower", aspect="auto", cmap=cmap, vmin=0, vmax=9,
              interpolation="nearest")
    ax.set_yticks(range(len(layers)))
    ax.set_yticklabels(list(layers), fontsize=8)
    keep = np.linspace(0, len(steps) - 1, min(len(steps), 16)).round().astype(int) if steps else []
    ax.set_xticks(keep)
    ax.set_xticklabels([str(steps[i]) for i in keep], rotation=45, fontsize=8)
    ax.set_xlabel("step")
    ax.set_title(title, fontsize=10)
    ax.legend(handles=[mpatches.Patch(color=cmap(index[k]), label=k) for k in kinds], fontsize=8,
              loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return save(fig, path)
