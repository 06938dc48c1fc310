"""Seed 004's quick check: the spiked covariance with the spike *aligned* with the signal (v = w*), where
the high-variance direction is the informative one. Which method aligns first, each at its best learning
rate?

Source: G. Braun, H. Bao, W. Huang, M. Imaizumi, "Spectral Gradient Descent Mitigates Anisotropy-Driven
Misalignment: A Case Study in Phase Retrieval" (arXiv 2601.22652), as summarised in seed 004 ("Quick
check: If the spike direction were aligned with (rather than orthogonal to) the signal, would the analysis
favor GD or SpecGD?"). The analysis' mechanism (GD amplifies the spike multiplicatively, SpecGD grows every
direction at the same rate) predicts GD: its amplification now grows the signal.

Population phase retrieval as in :mod:`steepest.app.reproduce.phase_retrieval` (full d x d simulation, its
``simulate``), Q = I + lambda w* w*^T, orthogonal start theta U with theta^2 = 1/(log(d) (d + lambda)).
Measured: steps until the alignment <M, w*w*^T>_F / ||M||_F first reaches ``target`` with the loss at most
``loss_frac`` of its initial value (aligned *and* recovered), for SpecGD over
eta = kappa / sqrt(d + lambda) and GD over eta = s / (16 (1 + lambda)) (grids with the best value
interior), each method at its best eta; the orthogonal spike (v ⟂ w*) at the same etas is shown beside.

Example:
    >>> from steepest.app.reproduce import phase_aligned
    >>> res = phase_aligned.run(phase_aligned.quick(), None)  # runs the experiment's quick preset (a minute)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math

import torch

from steepest.app.reproduce.base import Cells, Claim, fmt, progress
from steepest.app.reproduce.claimtext import seed_claim
from steepest.app.reproduce.phase_retrieval import _init, simulate
from steepest.app.runs import ConfigError

SEED = "seed 004"
SOURCE = (
    'G. Braun, H. Bao, W. Huang, M. Imaizumi, "Spectral Gradient Descent Mitigates Anisotropy-Driven '
    'Misalignment: A Case Study in Phase Retrieval"'
)
TITLE = "quick check: spike aligned with the signal (v = w*), GD vs SpecGD at their best lr"
VERSION = 1
SPIKES = ("aligned", "orthogonal")


@dataclasses.dataclass
class Config:
    dims: tuple[int, ...] = (16, 32)
    lam: float = 10.0
    kappas: tuple[float, ...] = (2**-4, 2**-3, 2**-2, 2**-1, 1.0, 2.0)  # SpecGD eta = kappa / sqrt(d + lam)
    gd_scales: tuple[float, ...] = (2**-4, 2**-3, 2**-2, 2**-1, 1.0, 2.0, 4.0, 8.0, 16.0)  # GD eta = s / (16 (1 + lam))
    steps: int = 1500
    target: float = 0.9
    loss_frac: float = 0.05  # ... reached together with loss <= this x the initial loss (the signal recovered)
    # thresholds, fixed before the run
    margin: float = 1.1  # "favors GD": SpecGD's best steps >= this x GD's best steps at every d
    seed: int = 4

    def __post_init__(self) -> None:
        if not self.dims or min(self.dims) < 4 or len(self.kappas) < 3 or len(self.gd_scales) < 3:
            raise ConfigError("dims >= 4 and grids of at least 3 kappas and 3 GD scales are required")
        if self.steps < 10 or not 0 < self.target < 1 or self.margin < 1:
            raise ConfigError("steps >= 10, target in (0, 1) and margin >= 1 are required")


def quick() -> Config:
    return Config(dims=(16,), kappas=(2**-5, 2**-3, 2**-1), gd_scales=(2**-5, 2**-3, 2**-1), steps=1000)


def problem(d: int, lam: float, spike: str, gen: torch.Generator) -> dict:
    """Q = I + lam v v^T with v = w* (aligned) or v ⟂ w* (orthogonal); the seed's orthogonal start."""
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    w = basis[:, 0]
    v = w if spike == "aligned" else basis[:, 1]
    Q = torch.eye(d, dtype=torch.float64) + lam * torch.outer(v, v)
    return {"Q": Q, "w": w, "v": v, "W0": _init(Q, d, gen)}


def steps_to(rec: dict, target: float, loss_frac: float) -> int | None:
    """The first step with alignment >= target and loss <= loss_frac x the initial loss (a run that aligns
    while its loss blows up, M growing along w*, has not recovered the signal); None if never."""
    l0 = rec["loss"][0]
    return next(
        (i for i, (a, lo) in enumerate(zip(rec["align"], rec["loss"])) if a >= target and lo <= loss_frac * l0), None
    )


def run_cell(cfg: Config, d: int, spike: str) -> dict:
    out: dict[str, list] = {"specgd": [], "gd": []}
    for method, grid in (("specgd", cfg.kappas), ("gd", cfg.gd_scales)):
        for x in grid:
            prob = problem(d, cfg.lam, spike, torch.Generator().manual_seed(cfg.seed * 1000 + d))
            eta = x / math.sqrt(d + cfg.lam) if method == "specgd" else x / (16 * (1 + cfg.lam))
            r = simulate(prob, method, eta, cfg.steps)
            out[method].append({"x": x, "eta": eta, "steps": steps_to(r, cfg.target, cfg.loss_frac)})
    return out


def run(cfg: Config, out_dir=None, cells: Cells | None = None) -> dict:
    cells = cells or Cells(None if out_dir is None else f"{out_dir}/cells")
    p = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "margin"}
    res: dict[str, dict] = {s: {} for s in SPIKES}
    for d, spike in progress([(d, s) for d in cfg.dims for s in SPIKES], "phase-aligned"):
        res[spike][str(d)] = cells.get(
            f"aligned-{spike}-d{d}", {**p, "d": d, "spike": spike}, lambda d=d, spike=spike: run_cell(cfg, d, spike)
        )
    return {"spikes": res, "settings": dataclasses.asdict(cfg)}


def best(rows: list) -> dict:
    """The grid point with the fewest steps to the target (None steps: never reached)."""
    ok = [r for r in rows if r["steps"] is not None]
    return min(ok, key=lambda r: r["steps"]) if ok else {"x": None, "eta": None, "steps": None}


def lr_grids(results: dict) -> list[tuple[str, list, float]]:
    out = []
    for spike, D in results["spikes"].items():
        for d, cell in D.items():
            for method, rows in cell.items():
                b = best(rows)
                if b["x"] is not None:
                    out.append((f"{spike} d={d} {method} lr", [r["x"] for r in rows], b["x"]))
    return out


def claims(results: dict) -> list[Claim]:
    st = results["settings"]
    parts, oks = [], []
    for spike in SPIKES:
        for d, cell in results["spikes"][spike].items():
            bs, bg = best(cell["specgd"]), best(cell["gd"])
            parts.append(
                f"{spike}, d = {d}: SpecGD {bs['steps']} steps (kappa {fmt(bs['x'])}), GD {bg['steps']} (s {fmt(bg['x'])})"
            )
            if spike == "aligned":
                if bs["steps"] is None or bg["steps"] is None:
                    oks.append(None if bg["steps"] is None else True)
                else:
                    oks.append(bs["steps"] >= st["margin"] * bg["steps"])
    verdict = None if any(o is None for o in oks) else all(oks)
    return [
        seed_claim(
            SEED,
            "Foundational learning, spiked covariance (quick check)",
            "If the spike direction were aligned with (rather than orthogonal to) the signal, would the analysis "
            "favor GD or SpecGD? [the mechanism's answer: GD]",
            "steps to alignment " + str(st["target"]) + " at each method's best lr: " + "; ".join(parts),
            verdict,
            baseline="the orthogonal spike (the seed's setting, where SpecGD is favoured) at the same grids",
            threshold=f"aligned spike: SpecGD's best steps >= {st['margin']} x GD's best at every d (GD favoured); "
            "SpecGD never aligning while GD does counts as GD favoured",
        )
    ]


def tables(results: dict):
    rows = []
    for spike, D in results["spikes"].items():
        for d, cell in D.items():
            for method, rs in cell.items():
                for r in rs:
                    rows.append([spike, int(d), method, r["x"], r["eta"], r["steps"]])
    return [(("spike", "d", "method", "kappa or s", "eta", "steps to target"), rows)]


def figures(results: dict, out_dir) -> list:
    from steepest.app.report import figures as F  # lazy: matplotlib loads only when figures are drawn

    fig, axes = F.subplots(1, 2, width=4.8, height=4.0)
    for ax, spike in zip(axes, SPIKES):
        for j, (d, cell) in enumerate(results["spikes"][spike].items()):
            for method, style in (("specgd", "o-"), ("gd", "s--")):
                rs = [r for r in cell[method] if r["steps"] is not None]
                ax.plot(
                    [r["eta"] for r in rs], [r["steps"] for r in rs], style, color=f"C{j}", label=f"{method}, d = {d}"
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("learning rate eta")
        ax.set_ylabel(f"steps to alignment {results['settings']['target']}")
        ax.set_title(f"spike {spike} with the signal" if spike == "aligned" else "spike orthogonal (seed's setting)")
        ax.grid(alpha=0.3)
        F.tidy_log(ax)
        ax.legend(fontsize=6)
    return [F.save(fig, f"{out_dir}/phase_aligned.png", require_labels=True)]
