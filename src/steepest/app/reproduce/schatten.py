"""Seed 003: what the Schatten-p dualizer does to a gradient's singular values, and where Muon sits.

Source: F. L. Cesista, "Steepest Descent Under Schatten-p Norms" (blog post, 2025).

The Schatten-p dualizer is T = U diag(s^(q-1)) V^T / ||s||_q^(q-1) (1/p + 1/q = 1): p = 2 gives
G/||G||_F, p = inf gives U V^T. Its singular values are t_i proportional to s_i^(q-1), so after
normalising by their mean (which makes p = inf all ones), t_i ~ 1 + (q-1) ln(s_i/s) and the variance
shrinks like (q-1)^2 = 1/(p-1)^2 (seed 003, Proposition 5).

For Gaussian and low-stable-rank gradients (spectrum s_i = i^-decay) this module measures, over p,
the variance of the mean-normalised singular values, the relative size ||T||_F / (||T||_op sqrt(k))
(1 for U V^T) and the stable rank of T; fits the decay exponent; and finds the p whose Schatten
dualizer has the same singular-value spread as Muon's 5-step Newton-Schulz output
(``steepest.polar(G, method="newton_schulz")``).

Example:
    >>> from steepest.app.reproduce import schatten
    >>> res = schatten.run(schatten.quick(), None)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

import steepest
from steepest.app.reproduce.base import Cells, Claim, fmt, progress, stable_rank, verdict
from steepest.app.runs import ConfigError

SEED = "seed 003"
SOURCE = 'F. L. Cesista, "Steepest Descent Under Schatten-p Norms" (blog post, 2025)'
TITLE = "Schatten-p dualizers: singular-value spread vs p, and Muon's Newton-Schulz"
VERSION = 1
KINDS = ("gaussian", "low_stable_rank")


@dataclasses.dataclass
class Config:
    m: int = 256
    n: int = 128
    ps: tuple[float, ...] = (2, 3, 4, 8, 16, 32, 64, 128, math.inf)
    trials: int = 4                  # random gradients per kind (numbers are averaged)
    lowrank_decay: float = 1.0       # low-stable-rank spectrum s_i = i^-decay
    fit_min_p: float = 8.0           # the 1/(p-1)^2 law is asymptotic: fit over p >= this
    exponent_band: tuple[float, float] = (1.5, 2.5)   # "roughly 2": fitted exponent inside this band
    close_p: float = 32.0
    close_var: float = 0.01          # "close to spectral": variance of normalised values below this,
    close_stable_rank: float = 0.8   # stable rank at least this fraction of the spectral one
    small_p_max: float = 16.0        # "small p" for the Newton-Schulz match
    ns_steps: int = 5
    match_grid: int = 60             # p values (log-spaced in [1.1, 1024]) searched for the NS match
    seed: int = 3

    def __post_init__(self) -> None:
        if self.m < 2 or self.n < 2 or self.trials < 1 or self.match_grid < 4:
            raise ConfigError("m, n >= 2, trials >= 1 and match_grid >= 4 are required")
        if not self.ps or any(float(p) < 1 for p in self.ps):
            raise ConfigError(f"ps must be non-empty values >= 1 (inf allowed), got {self.ps}")
        if self.lowrank_decay <= 0:
            raise ConfigError("lowrank_decay must be > 0")


def quick() -> Config:
    return Config(m=96, n=48, trials=2, match_grid=30)


def make_gradient(kind: str, m: int, n: int, decay: float, gen: torch.Generator) -> torch.Tensor:
    """Gaussian m x n, or U diag(i^-decay) V^T with random orthonormal U, V (stable rank ~ zeta(2 decay))."""
    if kind == "gaussian":
        return torch.randn(m, n, generator=gen, dtype=torch.float64)
    k = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, k, generator=gen, dtype=torch.float64))
    V, _ = torch.linalg.qr(torch.randn(n, k, generator=gen, dtype=torch.float64))
    s = torch.arange(1, k + 1, dtype=torch.float64) ** (-decay)
    return (U * s) @ V.T


def spread(T: torch.Tensor) -> dict:
    """Variance of the mean-normalised singular values, relative size and stable rank of T."""
    t = torch.linalg.svdvals(T.double())
    k = t.numel()
    tn = t / t.mean()
    return {"var": float(tn.var(unbiased=False)),
            "relsize": float(t.norm() / (t.max() * math.sqrt(k))),
            "stable_rank": float(stable_rank(T.double())),
            "spread_minmax": [float(t.min() / t.max()), 1.0]}


def dualizer(G: torch.Tensor, p: float) -> torch.Tensor:
    return steepest.dualize(G, "schatten", p, dtype=torch.float64)  # p = inf is the exact polar factor


def run_cell(cfg: Config, kind: str, trial: int) -> dict:
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + trial * 2 + KINDS.index(kind))
    G = make_gradient(kind, cfg.m, cfg.n, cfg.lowrank_decay, gen)
    per_p = {str(p): spread(dualizer(G, float(p))) for p in cfg.ps}
    ns = steepest.polar(G.float(), method="newton_schulz", steps=cfg.ns_steps)
    grid = np.geomspace(1.1, 1024.0, cfg.match_grid)
    grid_var = [spread(dualizer(G, float(p)))["var"] for p in grid]
    return {"per_p": per_p, "ns": spread(ns), "grid_p": grid.tolist(), "grid_var": grid_var,
            "stable_rank_G": float(stable_rank(G))}


def match_p(grid_p: list, grid_var: list, target: float) -> float:
    """The p whose variance equals ``target`` (log-log interpolation; variance decreases with p)."""
    lp, lv = np.log(np.asarray(grid_p)), np.log(np.maximum(np.asarray(grid_var), 1e-300))
    lt = math.log(max(target, 1e-300))
    if lt >= lv[0]:
        return float(grid_p[0])
    if lt <= lv[-1]:
        return float(grid_p[-1])
    j = int(np.argmax(lv < lt))
    w = (lt - lv[j - 1]) / (lv[j] - lv[j - 1])
    return float(math.exp(lp[j - 1] + w * (lp[j] - lp[j - 1])))


def fit_exponent(ps: list, var: list, min_p: float) -> dict:
    """Least squares log var = c - gamma log(p - 1) over finite p >= min_p."""
    pts = [(math.log(p - 1), math.log(v)) for p, v in zip(ps, var) if math.isfinite(p) and p >= min_p and v > 0]
    if len(pts) < 2:
        return {"gamma": float("nan"), "r2": float("nan"), "n": len(pts)}
    x, y = np.array(pts).T
    slope, icpt = np.polyfit(x, y, 1)
    resid = y - (slope * x + icpt)
    r2 = 1 - resid.var() / y.var() if y.var() > 0 else float("nan")
    return {"gamma": float(-slope), "r2": float(r2), "n": len(pts)}


def run(cfg: Config, out_dir=None, cells: Cells | None = None) -> dict:
    cells = cells or Cells(None if out_dir is None else f"{out_dir}/cells")
    params = dataclasses.asdict(cfg)
    # a cell depends on what it computes, not on the sweep size or the claim thresholds
    cell_params = {k: params[k] for k in ("m", "n", "ps", "lowrank_decay", "ns_steps", "match_grid", "seed")}
    out = {"ps": [float(p) for p in cfg.ps], "kinds": {}}
    jobs = [(k, t) for k in KINDS for t in range(cfg.trials)]
    raw = {k: [] for k in KINDS}
    for kind, t in progress(jobs, "schatten"):
        raw[kind].append(cells.get(f"schatten-{kind}-{t}", {**cell_params, "kind": kind, "trial": t},
                                   lambda kind=kind, t=t: run_cell(cfg, kind, t)))
    for kind, rows in raw.items():
        agg = {key: [float(np.mean([r["per_p"][str(p)][key] for r in rows])) for p in cfg.ps]
               for key in ("var", "relsize", "stable_rank")}
        ns = {key: float(np.mean([r["ns"][key] for r in rows])) for key in ("var", "relsize", "stable_rank")}
        grid_var = np.mean([r["grid_var"] for r in rows], axis=0).tolist()
        out["kinds"][kind] = {
            **agg, "ns": ns, "grid_p": rows[0]["grid_p"], "grid_var": grid_var,
            "ns_match_p": match_p(rows[0]["grid_p"], grid_var, ns["var"]),
            "fit": fit_exponent(out["ps"], agg["var"], cfg.fit_min_p),
            "stable_rank_G": float(np.mean([r["stable_rank_G"] for r in rows])),
        }
    out["settings"] = {k: params[k] for k in ("fit_min_p", "exponent_band", "close_p", "close_var",
                                                "close_stable_rank", "small_p_max", "m", "n")}
    return out


def claims(results: dict) -> list[Claim]:
    st = results["settings"]
    lo, hi = st["exponent_band"]
    ps = results["ps"]
    K = results["kinds"]
    fits = {k: K[k]["fit"] for k in K}
    ok_fit = all(lo <= f["gamma"] <= hi for f in fits.values()) if all(math.isfinite(f["gamma"]) for f in fits.values()) else None
    out = [Claim(SEED, "the variance of the dualized singular values decays roughly like 1/(p-1)^2",
                 "; ".join(f"{k}: exponent {fmt(f['gamma'])} (R^2 {fmt(f['r2'])}, p >= {fmt(st['fit_min_p'])})" for k, f in fits.items()),
                 verdict(ok_fit), f"holds if the fitted exponent lies in [{lo}, {hi}] for every gradient kind")]
    if st["close_p"] in ps and math.inf in ps:
        i, j = ps.index(st["close_p"]), ps.index(math.inf)
        parts, oks = [], []
        for k in K:
            v, srr = K[k]["var"][i], K[k]["stable_rank"][i] / K[k]["stable_rank"][j]
            parts.append(f"{k}: variance {fmt(v)}, stable rank {fmt(srr)} of spectral, relative size {fmt(K[k]['relsize'][i])}")
            oks.append(v <= st["close_var"] and srr >= st["close_stable_rank"])
        out.append(Claim(SEED, f"at p = {fmt(st['close_p'])} the dualizer is already close to the spectral one",
                         "; ".join(parts), verdict(all(oks)),
                         f"holds if variance <= {st['close_var']} and stable rank >= {st['close_stable_rank']} x spectral for every kind"))
    else:
        out.append(Claim(SEED, "at p = 32 the dualizer is already close to the spectral one", "p = 32 or p = inf not in ps",
                         "inconclusive", "add 32 and inf to ps to measure it"))
    matches = {k: K[k]["ns_match_p"] for k in K}
    out.append(Claim(SEED, "Muon's Newton-Schulz output has a singular-value spread comparable to a small-p Schatten dualizer",
                     "; ".join(f"{k}: NS variance {fmt(K[k]['ns']['var'])} matches p = {fmt(p)}" for k, p in matches.items()),
                     verdict(all(p <= st["small_p_max"] for p in matches.values())),
                     f"holds if the matching p is <= {st['small_p_max']} for every kind"))
    return out


def tables(results: dict):
    ps = results["ps"]
    header = ["kind", "quantity"] + [("inf" if math.isinf(p) else f"{p:g}") for p in ps] + ["Muon NS5"]
    rows = []
    for k, K in results["kinds"].items():
        for q in ("var", "relsize", "stable_rank"):
            rows.append([k, q] + list(K[q]) + [K["ns"][q]])
    return [(header, rows)]


def notes(results: dict) -> list[str]:
    return ["Singular values of each dualizer are divided by their mean, so p = inf gives all ones and the "
            "variance is scale-free. Relative size = ||T||_F / (||T||_op sqrt(k)), 1 for U V^T. "
            + "; ".join(f"{k}: stable rank of G {results['kinds'][k]['stable_rank_G']:.3g}" for k in results["kinds"])]


def figures(results: dict, out_dir) -> list:
    from steepest.app.report import figures as F  # lazy: matplotlib loads only when figures are drawn

    ps = [p for p in results["ps"] if math.isfinite(p)]
    fig, axes = F.subplots(1, 3, width=4.4)
    for k, K in results["kinds"].items():
        idx = [results["ps"].index(p) for p in ps]
        F.lines(axes[0], ps, {k: [K["var"][i] for i in idx]}, xlabel="p", ylabel="variance of normalised s.v.",
                logx=True, logy=True, markers=True)
        axes[0].plot(ps, [K["var"][idx[0]] * ((ps[0] - 1) / (p - 1)) ** 2 for p in ps], ":", color="gray")
        axes[0].axhline(K["ns"]["var"], linestyle="--", linewidth=1, label=f"Muon NS5 ({k})")
        F.lines(axes[1], ps, {k: [K["relsize"][i] for i in idx]}, xlabel="p", ylabel="relative size", logx=True, markers=True)
        F.lines(axes[2], ps, {k: [K["stable_rank"][i] for i in idx]}, xlabel="p", ylabel="stable rank of dualizer",
                logx=True, markers=True)
    axes[0].legend(fontsize=7)
    axes[0].set_title("dotted: 1/(p-1)^2 reference", fontsize=9)
    return [F.save(fig, f"{out_dir}/schatten_vs_p.png")]
