"""Figures of ``steepest compare``, drawn from the run directory's result files only.

* ``loss_curves``: validation loss against step and against wall time, one line per optimizer, with
  the reference (AdamW) final loss as a dashed line;
* ``layer_heatmap``: a per-layer quantity (e.g. nr(G)/st(A)) as layers x steps;
* ``choice_map``: the adaptive optimizer's geometry per layer over time (categorical layers x steps);
* ``winner_maps``: several such categorical maps side by side (the measured winner, each criterion's
  prediction and Adaptive's choice), one colour per geometry across all panels and reports.

Example:
    >>> loss_curves({"adamw": [(0, 4.0, 0.0), (10, 3.0, 1.0)]}, 3.0, "runs/x/figures/loss.png")  # writes a PNG under runs/  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

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


def layer_heatmap(
    values: Sequence[Sequence[float]],
    layers: Sequence[str],
    steps: Sequence[int],
    path,
    *,
    title: str,
    cbar_label: str = "",
) -> Path:
    """A layers x steps heatmap (at most ~16 step columns are labelled)."""
    height = max(3.0, 0.32 * len(layers) + 1.5)
    fig, axes = subplots(1, 1, width=max(7.0, 0.45 * len(steps) + 4), height=height)
    ax = axes[0]
    heatmap(
        ax,
        values,
        xticklabels=list(steps),
        yticklabels=list(layers),
        xlabel="step",
        title=title,
        annotate=len(steps) * len(layers) <= 120,
    )
    if len(steps) > 16:
        keep = np.linspace(0, len(steps) - 1, 16).round().astype(int)
        ax.set_xticks(keep)
        ax.set_xticklabels([str(steps[i]) for i in keep], rotation=45, fontsize=8)
    return save(fig, path)


#: The same colour for a geometry in every categorical map (tab10 indices); other values follow.
FIXED_CATEGORIES = ("spectral", "linf", "frobenius", "adamw", "none")


def _categories(grids) -> tuple[list[str], dict[str, int]]:
    seen = {c for grid in grids for row in grid for c in row if c}
    kinds = [k for k in FIXED_CATEGORIES if k in seen] + sorted(seen - set(FIXED_CATEGORIES))
    n = len(FIXED_CATEGORIES)
    return kinds, {k: (FIXED_CATEGORIES.index(k) if k in FIXED_CATEGORIES else n + i) % 10 for i, k in enumerate(kinds)}


def _categorical(ax, grid, index, layers, steps, title: str, ylabels: bool = True) -> None:
    arr = np.array([[index.get(c, np.nan) if c else np.nan for c in row] for row in grid], dtype=float)
    ax.imshow(
        np.ma.masked_invalid(arr),
        origin="lower",
        aspect="auto",
        cmap=matplotlib.colormaps.get_cmap("tab10"),
        vmin=0,
        vmax=9,
        interpolation="nearest",
    )
    ax.set_yticks(range(len(layers)))
    ax.set_yticklabels(list(layers) if ylabels else [], fontsize=8)
    keep: Any = np.linspace(0, len(steps) - 1, min(len(steps), 16)).round().astype(int) if len(steps) else []
    ax.set_xticks(keep)
    ax.set_xticklabels([str(steps[i]) for i in keep], rotation=45, fontsize=8)
    ax.set_xlabel("step")
    ax.set_title(title, fontsize=9)


def choice_map(
    choices: Sequence[Sequence[str]], layers: Sequence[str], steps: Sequence[int], path, *, title: str
) -> Path:
    """Categorical layers x steps map of the adaptive optimizer's geometry (legend names each colour)."""
    kinds, index = _categories([choices])
    height = max(3.0, 0.32 * len(layers) + 1.5)
    fig, axes = subplots(1, 1, width=max(7.0, 0.45 * len(steps) + 4), height=height)
    ax = axes[0]
    _categorical(ax, choices, index, layers, steps, title)
    ax.set_title(title, fontsize=10)
    cmap = matplotlib.colormaps.get_cmap("tab10")
    ax.legend(
        handles=[mpatches.Patch(color=cmap(index[k]), label=k) for k in kinds],
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    return save(fig, path)


def winner_maps(
    panels: Sequence[tuple[str, Sequence[Sequence[str]]]],
    layers: Sequence[str],
    steps: Sequence[int],
    path,
    *,
    title: str,
) -> Path:
    """Categorical layers x steps maps side by side, ``panels = [(panel title, grid[layer][step])]``; a cell
    without a value (None) is blank. One legend for all panels (the same colour per geometry everywhere)."""
    if not panels:
        raise ValueError("winner_maps needs at least one panel")
    kinds, index = _categories([g for _, g in panels])
    height = max(3.0, 0.32 * len(layers) + 1.8)
    width = 1.2 + len(panels) * max(1.8, 0.25 * len(steps) + 1.0) + 1.8
    fig, axes = subplots(1, len(panels), width=width / len(panels), height=height)
    for i, (ax, (name, grid)) in enumerate(zip(axes, panels)):  # subplots returns the axes as a flat array
        _categorical(ax, grid, index, layers, steps, name, ylabels=i == 0)
    cmap = matplotlib.colormaps.get_cmap("tab10")
    axes[len(panels) - 1].legend(
        handles=[mpatches.Patch(color=cmap(index[k]), label=k) for k in kinds],
        fontsize=8,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
    )
    fig.suptitle(title, fontsize=10)
    return save(fig, path)
