"""Seed 001's trained-model claim and seed 003's account of approximate orthogonalization, on a real
charlm training run (:mod:`steepest.app.tasks.charlm`), from :class:`steepest.diagnostics.LayerMonitor`
records.

Sources: D. Davis and D. Drusvyatskiy, "When do spectral gradient updates help in deep learning?"
(seed 001); F. L. Cesista, "Steepest Descent Under Schatten-p Norms" (seed 003).

Each variant trains the same model from the same seed on the same batches, hidden matrices by the
variant's dualizer (Nesterov 0.95, Muon's shape scale), everything else by AdamW:

* ``svd``: exact polar factor (:class:`steepest.SpecGD`, method="svd");
* ``polar_express``: Polar Express iterations (SpecGD, method="polar_express");
* ``muon_quintic``: Muon's 5-step Newton-Schulz quintic (:class:`steepest.Muon`, float32);
* ``schatten<p>``: the Schatten-p dualizer (:class:`steepest.SchattenDescent`).

Each variant's learning rate is the best of ``lrs`` by final validation loss (a small sweep: "tuned").
Seed 003's comparison repeats every (variant, lr) for each of ``approx_seeds`` and takes each variant at
the lr best on average; Schatten p < 16 variants are its control (a dualizer far from orthogonal must
fall outside the threshold, else the threshold decides nothing).
Recorded every ``monitor_every`` steps per hidden layer: st(A) of its input activation, nr(G), and
the update's stable rank ||dW||_F^2/||dW||_op^2 divided by min(shape) (1 for an exactly orthogonal
update: the update's singular-value spread).

Example:
    >>> from steepest.app.reproduce import trained
    >>> res = trained.run(trained.quick(), None)  # runs the experiment's quick preset (minutes)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import statistics

import torch

import steepest
from steepest.app.reproduce.base import Cells, Claim, fmt, progress
from steepest.app.reproduce.claimtext import extension_claim, seed_claim
from steepest.app.runs import ConfigError
from steepest.diagnostics.ranks import spearman

SEED = "seed 001"
SEED_003 = "seed 003"
SEEDS = (SEED, SEED_003)  # this experiment checks claims of two seeds
SOURCE = (
    'D. Davis and D. Drusvyatskiy, "When do spectral gradient updates help in deep learning?"; '
    'F. L. Cesista, "Steepest Descent Under Schatten-p Norms"'
)
TITLE = "trained charlm: activation stable rank, and exact vs approximate orthogonalization"
VERSION = 1
EXACT = "svd"


@dataclasses.dataclass
class Config:
    n_layer: int = 2
    d_model: int = 64
    n_head: int = 4
    context: int = 64
    batch_size: int = 16
    steps: int = 150
    aux_lr: float = 3e-3  # AdamW for embeddings, norms, head
    lrs: tuple[float, ...] = (0.01, 0.02, 0.04, 0.08, 0.16)  # extended until every best lr is interior
    variants: tuple[str, ...] = ("svd", "polar_express", "muon_quintic", "schatten32", "schatten4")
    monitor_every: int = 25
    # thresholds, fixed before the run
    low_frac: float = 0.1  # seed 001 "low": st(A) <= this x the activation's width at the last record
    low_band: float = 0.1  # ... a layer within +-this (relative) of that limit decides nothing
    grow_max: float = 1.5  # ... "remains": no layer's st(A) above this x its value at initialization
    approx_gap: float = 0.02  # seed 003: an approximate dualizer within this (relative) of exact polar's loss
    rank_corr: float = 0.7  # extension: Spearman(update spread, -loss) at least this
    seed: int = 0
    approx_seeds: tuple[int, ...] = (0, 1, 2)  # seeds of seed 003's comparison (lr chosen by the mean over them)

    def __post_init__(self) -> None:
        bad = [v for v in self.variants if v not in ("svd", "polar_express", "muon_quintic") and not _schatten_p(v)]
        if bad or EXACT not in self.variants:
            raise ConfigError(
                f"variants must include 'svd' and be svd, polar_express, muon_quintic or schatten<p>; got {bad}"
            )
        if self.steps < 2 or self.monitor_every < 1 or not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise ConfigError("steps >= 2, monitor_every >= 1 and positive lrs are required")
        if not self.approx_seeds:
            raise ConfigError("approx_seeds needs at least one seed (seed 003's comparison)")


def quick() -> Config:
    return Config(
        n_layer=1,
        d_model=32,
        n_head=2,
        context=32,
        batch_size=8,
        steps=30,
        lrs=(0.02,),
        variants=("svd", "muon_quintic", "schatten4"),
        monitor_every=10,
        approx_seeds=(0,),
    )


def _schatten_p(name: str) -> float | None:
    if name.startswith("schatten"):
        try:
            return float(name[len("schatten") :])
        except ValueError:
            return None
    return None


def build(variant: str, model, lr: float, aux_lr: float, routing: dict):
    """The optimizer of one variant over ``steepest.param_groups(model)`` (AdamW for the rest)."""
    groups = steepest.param_groups(model, adamw_lr=aux_lr, adamw_betas=(0.9, 0.95), **routing)
    common = dict(lr=lr, momentum=0.95, nesterov=True)
    if variant == "svd":
        return steepest.SpecGD(groups, method="svd", scale_rule="muon", **common)
    if variant == "polar_express":
        return steepest.SpecGD(groups, method="polar_express", scale_rule="muon", **common)
    if variant == "muon_quintic":
        return steepest.Muon(groups, lr=lr, weight_decay=0.0, dtype=torch.float32)
    p = _schatten_p(variant)
    if p is None:
        raise ValueError(f"unknown variant {variant!r}: expected svd, polar_express, muon_quintic or schatten<p>")
    return steepest.SchattenDescent(groups, p=p, scale_rule="muon", **common)


def train(cfg: Config, variant: str, lr: float) -> dict:
    from steepest.app.tasks.charlm import charlm_task
    from steepest.diagnostics import LayerMonitor
    from steepest.diagnostics.sinks import MemorySink

    task = charlm_task(
        "quick",
        n_layer=cfg.n_layer,
        d_model=cfg.d_model,
        n_head=cfg.n_head,
        context=cfg.context,
        batch_size=cfg.batch_size,
        steps=cfg.steps,
    )
    torch.manual_seed(cfg.seed)
    model = task.make_model()
    opt = build(variant, model, lr, cfg.aux_lr, task.routing)
    sink = MemorySink()
    hidden = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and n.startswith("blocks.")]
    monitor = LayerMonitor(model, every=cfg.monitor_every, sinks=[sink], optimizer=opt, microbatches=0, layers=hidden)
    losses = []
    for step in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        loss = task.loss(model, task.batch(cfg.seed, step))
        if not torch.isfinite(loss):
            break
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    monitor.detach()
    model.eval()
    with torch.no_grad():
        val = task.evaluate(model) if len(losses) == cfg.steps else math.inf
    recs = [
        {k: r.get(k) for k in ("step", "layer", "shape", "st_A", "nr_G", "update_fro", "update_op")}
        for r in sink.records
    ]
    return {"val": val if math.isfinite(val) else math.inf, "train": losses, "records": recs}


def update_spread(rec: dict) -> float:
    """||dW||_F^2 / ||dW||_op^2 / min(shape): 1 for an orthogonal update, near 1/k for a rank-one one."""
    if not rec.get("update_op"):
        return math.nan
    return (rec["update_fro"] / rec["update_op"]) ** 2 / min(rec["shape"])


def run(cfg: Config, out_dir=None, cells: Cells | None = None) -> dict:
    cells = cells or Cells(None if out_dir is None else f"{out_dir}/cells")
    base = {
        k: v
        for k, v in dataclasses.asdict(cfg).items()
        if k in ("n_layer", "d_model", "n_head", "context", "batch_size", "steps", "aux_lr", "monitor_every", "seed")
    }
    runs = {}
    for v, lr in progress([(v, lr) for v in cfg.variants for lr in cfg.lrs], "trained"):
        runs[f"{v}|{lr:g}"] = cells.get(
            f"trained-{v}-{lr:g}", {**base, "v": v, "lr": lr}, lambda v=v, lr=lr: train(cfg, v, lr)
        )
    best = {}
    for v in cfg.variants:
        lr = min(cfg.lrs, key=lambda lr: runs[f"{v}|{lr:g}"]["val"])
        r = runs[f"{v}|{lr:g}"]
        last = max(x["step"] for x in r["records"]) if r["records"] else None
        spread = [update_spread(x) for x in r["records"] if x["step"] == last]
        best[v] = {"lr": lr, "val": r["val"], "spread": statistics.fmean(spread) if spread else math.nan}
    # seed 003's comparison over approx_seeds: each variant at the lr with the best mean final val loss
    vals: dict[str, float] = {}
    for v, lr, sd in progress([(v, lr, s) for v in cfg.variants for lr in cfg.lrs for s in cfg.approx_seeds], "seeds"):
        c = dataclasses.replace(cfg, seed=sd)
        vals[f"{v}|{lr:g}|{sd}"] = cells.get(
            f"trained-{v}-{lr:g}", {**base, "seed": sd, "v": v, "lr": lr}, lambda c=c, v=v, lr=lr: train(c, v, lr)
        )["val"]
    over_seeds = {}
    for v in cfg.variants:
        lr = min(cfg.lrs, key=lambda lr: statistics.fmean(vals[f"{v}|{lr:g}|{sd}"] for sd in cfg.approx_seeds))
        over_seeds[v] = {"lr": lr, "vals": [vals[f"{v}|{lr:g}|{sd}"] for sd in cfg.approx_seeds]}
    return {"runs": runs, "best": best, "vals": vals, "over_seeds": over_seeds, "settings": dataclasses.asdict(cfg)}


def lr_grids(results: dict) -> list[tuple[str, list, float]]:
    """(what, grid, chosen value) for every learning-rate choice, for the grid-edge check."""
    lrs = list(results["settings"]["lrs"])
    return [(f"{v} lr", lrs, b["lr"]) for v, b in results["best"].items()] + [
        (f"{v} lr (mean over seeds)", lrs, b["lr"]) for v, b in results.get("over_seeds", {}).items()
    ]


def claims(results: dict) -> list[Claim]:
    st = results["settings"]
    best = results["best"]
    ex = results["runs"][f"{EXACT}|{best[EXACT]['lr']:g}"]["records"]
    steps = sorted({r["step"] for r in ex})
    first, last = (steps[0], steps[-1]) if steps else (None, None)

    def at(step):
        return [r for r in ex if r["step"] == step and r["st_A"] is not None]

    lows = [(r["layer"], r["st_A"], r["shape"][1]) for r in at(last)]
    init = {r["layer"]: r["st_A"] for r in at(first)}
    band = st["low_band"]
    limit = {l: st["low_frac"] * w for l, _, w in lows}
    over = [l for l, s, _ in lows if s > limit[l] * (1 + band)]  # clearly above the limit
    near = [l for l, s, _ in lows if limit[l] * (1 - band) < s <= limit[l] * (1 + band)]
    grew = [l for l, s, _ in lows if l in init and s > st["grow_max"] * init[l]]

    def share(rs):
        rs = [r for r in rs if r["nr_G"] is not None]
        return sum(r["nr_G"] >= r["st_A"] for r in rs) / len(rs) if rs else math.nan

    s0, s1 = share(at(first)), share(at(last))
    if not lows or not math.isfinite(s1):
        low_ok = None
    elif over or grew or s1 <= 0.5:
        low_ok = False
    else:
        low_ok = None if near else True
    out = [
        seed_claim(
            SEED,
            "Findings",
            "In trained models, activation stable rank remains low, favoring spectral methods",
            f"charlm trained {st['steps']} steps (exact polar, lr {best[EXACT]['lr']:g}): st(A)/width at step "
            f"{first} -> {last}: "
            + ", ".join(f"{l} {fmt(init.get(l, math.nan))} -> {fmt(s)}/{w}" for l, s, w in lows)
            + f"; share of layers with nr(G) >= st(A): {fmt(s1)} (at step {first}: {fmt(s0)})",
            low_ok,
            baseline="each layer's st(A) at initialization, and the activation's width (a full-rank activation)",
            threshold=f"holds if at the last record every hidden layer has st(A) <= {st['low_frac']} x width (outside "
            f"a +-{band:g} band around that limit), none grew above {st['grow_max']:g}x its value at init, and "
            f"nr(G) >= st(A) in more than half; fails if one is clearly above the limit, grew, or the share <= 1/2; "
            "else inconclusive (a layer inside the band decides nothing)",
        ),
    ]
    over = results["over_seeds"]
    n_seeds = len(over[EXACT]["vals"])
    far = [v for v in over if v != EXACT and (_schatten_p(v) or math.inf) < 16]  # the control: far from orthogonal
    approx = [v for v in over if v != EXACT and v not in far]

    def gaps(v):  # per seed, against exact polar on the same seed
        return [a / b - 1 for a, b in zip(over[v]["vals"], over[EXACT]["vals"])]

    def rng(xs):
        return f"{fmt(statistics.fmean(xs))} [{fmt(min(xs))}, {fmt(max(xs))}]"

    decisive = bool(far) and all(statistics.fmean(gaps(v)) > st["approx_gap"] for v in far)
    ok = all(g <= st["approx_gap"] for v in approx for g in gaps(v)) if approx else None
    out.append(
        seed_claim(
            SEED_003,
            "What Does the Dualizer Actually Do?",
            "optimizers that merely approximately "
            "semi-orthogonalize the gradients like Sketching and Muon work so well in practice despite "
            "resulting in (relatively) high-variance of singular values post-dualization",
            f"final val loss, mean [min, max] over {n_seeds} seeds, each variant at the lr best on average: "
            + ", ".join(f"{v} {rng(b['vals'])} (lr {b['lr']:g})" for v, b in over.items())
            + "; gap to exact polar (same seed): "
            + ", ".join(f"{v} {rng(gaps(v))}" for v in approx + far),
            (ok if decisive else None) if ok is not None else None,
            baseline="exact polar (svd) at its best lr; the control "
            + ", ".join(far)
            + " (a dualizer far from orthogonal) must be outside the threshold for it to decide anything",
            threshold=f"every approximate dualizer (Newton-Schulz, Polar Express, Schatten p >= 16) within "
            f"{st['approx_gap']:.0%} of exact polar's final validation loss on every seed",
        )
    )
    vs = list(best)
    rho = spearman([best[v]["spread"] for v in vs], [-best[v]["val"] for v in vs])
    out.append(
        extension_claim(
            SEED_003,
            "the update's singular-value spread predicts the loss: variants whose updates "
            "are closer to orthogonal (higher update stable rank / min shape) end lower",
            "update spread at the last record: "
            + ", ".join(f"{v} {fmt(best[v]['spread'])}" for v in vs)
            + f"; Spearman(spread, -loss) = {fmt(rho)} over {len(vs)} variants",
            rho >= st["rank_corr"] if math.isfinite(rho) else None,
            baseline="no association (rank correlation 0)",
            threshold=f"rank correlation >= {st['rank_corr']} (needs >= 3 variants)",
        )
    )
    return out


def tables(results: dict):
    rows = [
        [k.split("|")[0], float(k.split("|")[1]), r["val"], r["train"][-1] if r["train"] else math.nan]
        for k, r in results["runs"].items()
    ]
    return [(("variant", "lr", "final val loss", "final train loss"), rows)]


def figures(results: dict, out_dir) -> list:
    from steepest.app.report import figures as F  # lazy: matplotlib loads only when figures are drawn

    best = results["best"]
    fig, axes = F.subplots(1, 3, width=4.6)
    F.lines(
        axes[0],
        range(results["settings"]["steps"]),
        {f"{v} (lr {b['lr']:g})": results["runs"][f"{v}|{b['lr']:g}"]["train"] for v, b in best.items()},
        xlabel="step",
        ylabel="train loss (nats)",
        title="charlm, each variant at its best lr",
    )
    ex = results["runs"][f"{EXACT}|{best[EXACT]['lr']:g}"]["records"]
    layers = sorted({r["layer"] for r in ex})
    series = {}
    for l in layers:
        rs = sorted((r for r in ex if r["layer"] == l and r["st_A"] is not None), key=lambda r: r["step"])
        series[f"st(A) {l}"] = ([r["step"] for r in rs], [r["st_A"] for r in rs])
        series[f"nr(G) {l}"] = ([r["step"] for r in rs], [r["nr_G"] for r in rs])
    F.scatter(
        axes[1],
        series,
        xlabel="step",
        ylabel="stable rank / nuclear rank",
        title="exact-polar run: st(A), nr(G)",
        logy=True,
        size=10,
    )
    axes[1].legend(fontsize=5, ncol=2)
    F.scatter(
        axes[2],
        {v: ([b["spread"]], [b["val"]]) for v, b in best.items()},
        xlabel="update stable rank / min(shape) (last record)",
        ylabel="final validation loss",
        title="does the update's spread predict the loss?",
        size=30,
    )
    return [F.save(fig, f"{out_dir}/trained_charlm.png", require_labels=True)]
