"""Shared plotting helpers (matplotlib, Agg backend): figures are drawn from result numbers only and
saved atomically as PNG next to the report.

Example:
    >>> fig, axes = subplots(1, 2)
    >>> _ = lines(axes[0], [0, 1, 2], {"GD": [3, 2, 1]}, xlabel="step", ylabel="f", logy=True)
    >>> save(fig, "runs/demo/f.png")  # writes a PNG under runs/  # doctest: +SKIP
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never open a window, never need a display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from steepest._io import atomic_write_bytes  # noqa: E402


def subplots(nrows: int = 1, ncols: int = 1, *, width: float = 5.0, height: float = 3.6, squeeze: bool = False):
    """A figure with an ``nrows x ncols`` grid of axes (always a 2-D array unless ``squeeze``)."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), squeeze=squeeze)
    return fig, (axes.ravel() if not squeeze and nrows * ncols > 0 else axes)


def audit(fig) -> list[str]:
    """What a reader could not decode in ``fig``: axes without an x or y label, drawn lines or point
    sets without a legend label, and axes with labelled artists but no legend. Colorbar axes (from
    :func:`heatmap`) and image axes are exempt from the legend rule (a colorbar is their key).

    Example:
        >>> fig, (ax,) = subplots(1, 1)
        >>> _ = ax.plot([0, 1], [0, 1])
        >>> audit(fig)[0]
        'axes 0: no x label'
    """
    problems = []
    for i, ax in enumerate(fig.axes):
        if getattr(ax, "_colorbar", None) is not None or ax.get_label() == "<colorbar>":
            continue
        if not ax.get_xlabel():
            problems.append(f"axes {i}: no x label")
        if not ax.get_ylabel():
            problems.append(f"axes {i}: no y label")
        if ax.images:
            continue
        drawn = [a for a in list(ax.lines) + list(ax.collections) if a.get_visible()]
        unlabelled = [a for a in drawn if str(a.get_label()).startswith("_")]
        if unlabelled:
            problems.append(f"axes {i}: {len(unlabelled)} line(s) without a legend label")
        if drawn and ax.get_legend() is None:
            problems.append(f"axes {i}: no legend")
    return problems


def save(fig, path: str | os.PathLike, dpi: int = 110, *, require_labels: bool = False) -> Path:
    """Write ``fig`` as PNG atomically (render to memory, then write-and-rename) and close it.

    ``require_labels=True`` raises ValueError listing :func:`audit`'s problems instead of saving a
    figure with an unlabelled axis or an unexplained line."""
    if require_labels:
        problems = audit(fig)
        if problems:
            plt.close(fig)
            raise ValueError(f"figure {path} is not self-explaining: " + "; ".join(problems))
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(path, buf.getvalue())


def _finite(values) -> np.ndarray:
    arr = np.asarray([np.nan if v is None or isinstance(v, str) else v for v in values], dtype=float)
    arr[~np.isfinite(arr)] = np.nan
    return arr


def lines(
    ax,
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    logx: bool = False,
    logy: bool = False,
    markers: bool = False,
    styles: Mapping | None = None,
):
    """One line per entry of ``series`` against ``x`` (non-finite values are left as gaps)."""
    for name, ys in series.items():
        kw = dict(styles.get(name, {})) if styles else {}
        if markers:
            kw.setdefault("marker", "o")
            kw.setdefault("markersize", 3)
        y = _finite(ys)
        if logy:
            y = np.where(y > 0, y, np.nan)
        ax.plot(np.asarray(x, dtype=float)[: len(y)], y, label=str(name), **kw)
    return _decorate(ax, xlabel, ylabel, title, logx, logy, legend=bool(series))


def _decorate(ax, xlabel: str, ylabel: str, title: str, logx: bool, logy: bool, legend: bool):
    """Axis scales, labels, title, legend and grid, the same on every plot helper."""
    if logx:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    if legend:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def hline(ax, y: float, label: str = "", **kw) -> None:
    """A dashed horizontal reference line (give it a ``label``: figures saved with
    ``require_labels=True`` must explain every line)."""
    kw.setdefault("color", "k")
    kw.setdefault("linestyle", "--")
    kw.setdefault("linewidth", 1)
    ax.axhline(y, label=label or None, **kw)
    if label:
        ax.legend(fontsize=8)


def vline(ax, x: float, label: str = "", **kw) -> None:
    """A dotted vertical reference line, labelled in the legend."""
    kw.setdefault("color", "gray")
    kw.setdefault("linestyle", ":")
    kw.setdefault("linewidth", 1)
    ax.axvline(x, label=label or None, **kw)
    if label:
        ax.legend(fontsize=8)


def scatter(
    ax,
    groups: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
    size: float = 12,
):
    """One labelled point set per entry of ``groups`` (name -> (xs, ys)); non-finite points dropped."""
    for name, (xs, ys) in groups.items():
        x, y = _finite(xs), _finite(ys)
        ok = np.isfinite(x) & np.isfinite(y)
        if logx:
            ok &= x > 0
        if logy:
            ok &= y > 0
        ax.scatter(x[ok], y[ok], s=size, label=str(name), alpha=0.75)
    return _decorate(ax, xlabel, ylabel, title, logx, logy, legend=bool(groups))


def log_ticks(ax, values: Sequence[float], axis: str = "x", labels: Sequence[str] | None = None) -> None:
    """Ticks exactly at ``values`` on a log axis, minor tick labels off (they overlap otherwise)."""
    from matplotlib.ticker import NullFormatter

    set_ticks = ax.set_xticks if axis == "x" else ax.set_yticks
    set_labels = ax.set_xticklabels if axis == "x" else ax.set_yticklabels
    target = ax.xaxis if axis == "x" else ax.yaxis
    set_ticks(list(values))
    set_labels(list(labels) if labels is not None else [f"{v:g}" for v in values], fontsize=8)
    target.set_minor_formatter(NullFormatter())


def heatmap(
    ax,
    values: Sequence[Sequence[float]],
    *,
    xticklabels: Sequence,
    yticklabels: Sequence,
    xlabel: str = "",
    ylabel: str = "",
    title: str = "",
    vmin: float | None = None,
    vmax: float | None = None,
    marked: Sequence[Sequence[bool]] | None = None,
    mark_text: str = "x",
    annotate: bool = True,
    cmap: str = "viridis",
):
    """Heatmap of ``values[row][col]``; cells where ``marked`` is True (e.g. diverged) are hatched and
    labelled ``mark_text``; other cells show their value when ``annotate``."""
    arr = _finite([v for row in values for v in row]).reshape(len(values), -1)
    im = ax.imshow(np.ma.masked_invalid(arr), origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap=cmap)
    ax.set_xticks(range(arr.shape[1]))
    ax.set_xticklabels([str(t) for t in xticklabels], rotation=45, fontsize=8)
    ax.set_yticks(range(arr.shape[0]))
    ax.set_yticklabels([str(t) for t in yticklabels], fontsize=8)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    for i in range(arr.shape[0]):
        for j in range(arr.shape[1]):
            if marked is not None and marked[i][j]:
                ax.add_patch(
                    matplotlib.patches.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, hatch="///", color="red")
                )
                ax.text(j, i, mark_text, ha="center", va="center", color="red", fontsize=8, fontweight="bold")
            elif annotate and math.isfinite(arr[i, j]):
                ax.text(j, i, f"{arr[i, j]:.2f}", ha="center", va="center", color="w", fontsize=7)
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    return ax


def tidy_log(ax) -> None:
    """Drop the minor tick labels of log axes (2x10^1, 3x10^1, ... overlap on short axes)."""
    from matplotlib.ticker import NullFormatter

    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
        if scale == "log":
            axis.set_minor_formatter(NullFormatter())
