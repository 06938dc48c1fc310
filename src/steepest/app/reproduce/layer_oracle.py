"""Seeds 001 and 002 scored against a measured per-layer oracle: which geometry really wins each layer.

Source: D. Davis, D. Drusvyatskiy, "When do spectral gradient updates help in deep learning?" (seed 001)
and H. Naganuma, L. Gomezjurado, M. Ghaznavi, I. Mitliagkas, "The Geometry of Spectral Gradient Descent:
Layerwise Criteria for SignSGD vs Spec SGD" (seed 002).

For each subject (charlm, mnist-cnn, a tiny GPT-2 and a tiny BERT on Shakespeare text; see
:mod:`._oracle_subjects`), at initialization and at checkpoints of a real AdamW run, and for each batch
size B: the gradient G_hat of a fresh B-sample batch (mean of K microbatch gradients), then for every
matrix layer and geometry g the measured best decrease Delta*_g of a held-out batch's loss when only
that layer steps along -dualize_g(G_hat) (:func:`steepest.diagnostics.oracle.layer_oracle`: a
13-point log grid plus 16 golden-section steps, fixed count), and Delta_g at the tuned step sizes of
the compare table. The criteria from the same batch: Davis-Drusvyatskiy (spectral iff nr(G) >= st(A),
predicted ratio nr/st) and the Spec-Sign index I (predicted ratio I, exact HVP curvatures).

What this measures is not seed 001's thesis as the seed states it (the one-step decrease of the *training*
loss with the gradient the step uses, per phase and batch size): it pools batch sizes and checkpoints and
scores a held-out batch, on small models. Its seed 001 claims say so in their text; the thesis as stated is
judged by :mod:`steepest.app.reproduce.oracle_strata`.

Scoring (spectral vs frobenius for DD, spectral vs sign for the index): agreement of the prediction
with the measured winner (ties within ``tie_rtol`` and undecided predictions left out), beside "always
spectral" and the majority class; Spearman between predicted and measured ratio; a calibration figure.

Example:
    >>> from steepest.app.reproduce import base, layer_oracle
    >>> out = base.run_experiment("layer-oracle", layer_oracle.quick(), "runs/lo-quick")  # trains the subjects (minutes) and writes under runs/  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import statistics

import torch

from steepest.app.reproduce import _oracle_subjects as S
from steepest.app.reproduce.base import Cells, Claim, fmt, progress, verdict
from steepest.app.runs import ConfigError
from steepest.diagnostics.oracle import (
    LineSearch,
    layer_oracle,
    measured_winner,
    parse_geometry,
    rank_sum_greater,
    spearman,
)
from steepest.geometry import rms_factor, shape_scale

SEED = "seeds 001, 002"
SOURCE = (
    'D. Davis, D. Drusvyatskiy, "When do spectral gradient updates help in deep learning?"; H. Naganuma et al., '
    '"The Geometry of Spectral Gradient Descent: Layerwise Criteria for SignSGD vs Spec SGD"'
)
TITLE = "Measured per-layer oracle vs the Davis-Drusvyatskiy test and the Spec-Sign index"
VERSION = 1
#: The pairs each criterion decides: (criterion, the other geometry, prediction field, ratio field).
PAIRS = (("dd", "frobenius", "dd_winner", "dd_ratio"), ("ss", "linf", "ss_winner", "ss_index"))


@dataclasses.dataclass
class Config:
    subjects: tuple[str, ...] = ("charlm", "mnist-cnn", "gpt2", "bert")
    checkpoints: tuple[int, ...] = (0, 100, 300)  # training steps at which the oracle runs
    batch_sizes: tuple[int, ...] = (4, 16, 64)  # B of the probed gradient G_hat
    geometries: tuple[str, ...] = ("spectral", "linf", "frobenius", "schatten-3", "schatten-8")
    microbatches: int = 4  # K, for c_1, c_* (B must be a multiple)
    heldout: int = 64  # samples of the held-out batch the oracle measures
    train_batch: int = 16
    train_lr: float = 2e-3  # AdamW (the compare table's "adamw": betas 0.9/0.95)
    # the compare table's tuned step sizes (src/steepest/app/tuned.json, charlm/default): specgd,
    # signum, schatten; frobenius gets adaptive's RMS-matched step (per-entry RMS 0.0018)
    lr_spectral: float = 0.02  # x sqrt(max(1, m/n)) (scale_rule "muon")
    lr_sign: float = 5e-4
    lr_schatten: float = 0.04  # x sqrt(max(1, m/n))
    rms_frobenius: float = 0.0018  # x sqrt(m n): unit-RMS direction
    grid: int = 11  # line search: log-grid points over `decades`
    decades: float = 6.0
    golden: int = 12  # then golden-section steps
    # thresholds of the claims, fixed before the run
    tie_rtol: float = 0.02  # |Delta_a - Delta_b| <= this x max: a tie
    agree_margin: float = 0.1  # agreement >= majority-class rate + this
    min_spearman: float = 0.5  # rank correlation of predicted vs measured ratio
    small_batch_share: float = 0.5  # spectral beats sign in > this share at the smallest B
    competitive_ratio: float = 0.8  # embeddings: median Delta*_sign / Delta*_spec >= this ...
    above_alpha: float = 0.05  # ... and above the hidden layers' by a one-sided rank-sum test at this level
    seed: int = 0
    model_size: str = "quick"  # subjects' size: "quick" or "large" (for a GPU)

    def __post_init__(self) -> None:
        bad = [s for s in self.subjects if s not in S.SUBJECTS]
        if bad or not self.subjects:
            raise ConfigError(f"subjects must be a non-empty subset of {S.SUBJECTS}, got {self.subjects}")
        if (
            not self.checkpoints
            or any(c < 0 for c in self.checkpoints)
            or list(self.checkpoints) != sorted(set(self.checkpoints))
        ):
            raise ConfigError(f"checkpoints must be increasing steps >= 0, got {self.checkpoints}")
        if self.microbatches < 2 or any(b < self.microbatches or b % self.microbatches for b in self.batch_sizes):
            raise ConfigError(
                f"microbatches >= 2 and every batch size a multiple of it, got K={self.microbatches}, "
                f"B={self.batch_sizes}"
            )
        try:
            keys = [parse_geometry(g) for g in self.geometries]
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if ("spectral", None) not in keys or ("linf", None) not in keys or ("frobenius", None) not in keys:
            raise ConfigError("geometries must include spectral, linf and frobenius (the criteria's pairs)")
        if self.model_size not in S.MODEL_SIZES:
            raise ConfigError(f"model_size must be one of {S.MODEL_SIZES}, got {self.model_size!r}")
        try:
            LineSearch(self.grid, self.decades, self.golden)
        except ValueError as e:
            raise ConfigError(str(e)) from None


def quick() -> Config:
    return Config(
        checkpoints=(0, 40),
        batch_sizes=(4, 32),
        geometries=("spectral", "linf", "frobenius", "schatten-4"),
        heldout=32,
        train_batch=16,
        grid=9,
        golden=10,
    )


# ---------------------------------------------------------------------------------------- cells
def step_sizes(cfg: Config):
    """The tuned step eta per (layer, geometry, matrix shape), as the compare optimizers scale it."""

    def eta(name, key, shape):
        norm, p = parse_geometry(key)
        if norm == "spectral":
            return cfg.lr_spectral * shape_scale(shape, "muon")
        if norm == "schatten":
            return cfg.lr_schatten * shape_scale(shape, "muon")
        if norm == "linf":
            return cfg.lr_sign
        return cfg.rms_frobenius * rms_factor(shape, "frobenius")

    return eta


def probe_cell(cfg: Config, subj: S.Subject, model, layers: dict, step: int, B: int) -> list[dict]:
    """One (checkpoint, B) cell: criteria and oracle for every matrix layer."""
    model.eval()
    batch = subj.batch(cfg.seed + 1000, step, B)
    G_hat, crit = S.criterion_inputs(model, subj.loss, batch, layers, cfg.microbatches)
    held = subj.batch(cfg.seed + 2000, step, cfg.heldout)
    geoms = [parse_geometry(g) for g in cfg.geometries]
    res = layer_oracle(
        model,
        lambda: subj.loss(model, held),
        G_hat,
        geometries=geoms,
        views=layers,
        step_sizes=step_sizes(cfg),
        search=LineSearch(cfg.grid, cfg.decades, cfg.golden),
    )
    rows = []
    for n, view in layers.items():
        rows.append(
            {
                "layer": n,
                "role": view["role"],
                "shape": list(G_hat[n].shape),
                **crit[n],
                "oracle": {k: p.as_dict() for k, p in zip(cfg.geometries, res[n].values())},
            }
        )
    return rows


def run(cfg: Config, out_dir=None, cells: Cells | None = None) -> dict:
    from steepest.app.compare.optimizers import build_optimizer

    cells = cells or Cells(None if out_dir is None else f"{out_dir}/cells")
    rows: list[dict] = []
    base = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("subjects", "checkpoints", "batch_sizes")}
    for name in progress(cfg.subjects, "layer-oracle"):
        subj = S.make_subject(name, cfg.model_size)
        torch.manual_seed(cfg.seed)
        model = subj.make_model()
        layers = S.matrix_layers(model, subj.routing)
        opt = build_optimizer("adamw", model, cfg.train_lr, cfg.train_lr, subj.routing)
        done = 0
        for ck in cfg.checkpoints:
            model.train()
            while done < ck:  # the real training run, up to this checkpoint
                opt.zero_grad(set_to_none=True)
                subj.loss(model, subj.batch(cfg.seed, done, cfg.train_batch)).backward()
                opt.step()
                done += 1
            for B in cfg.batch_sizes:
                recs = cells.get(
                    f"oracle-{name}-s{ck}-B{B}",
                    {**base, "subject": name, "step": ck, "B": B},
                    lambda B=B, ck=ck, subj=subj, model=model, layers=layers: probe_cell(
                        cfg, subj, model, layers, ck, B
                    ),
                )
                rows.extend({"subject": name, "step": ck, "batch": B, **r} for r in recs)
    return {"rows": rows, "settings": dataclasses.asdict(cfg)}


# ---------------------------------------------------------------------------------------- scoring
def _dec(r: dict, key: str) -> float:
    return float(r["oracle"][key]["decrease"])


def winner(r: dict, other: str, rtol: float) -> str:
    """Measured winner of spectral vs ``other`` on one layer record ("tie", "none" possible)."""
    return measured_winner({"spectral": _dec(r, "spectral"), other: _dec(r, other)}, rtol)


def score(rows: list[dict], crit: str, rtol: float) -> dict:
    """Agreement, baselines and Spearman of criterion ``crit`` ("dd" or "ss") on the records."""
    _, other, pred_key, ratio_key = next(p for p in PAIRS if p[0] == crit)
    pred_map = {"spectral": "spectral", "frobenius": "frobenius", "linf": "linf"}
    decided, formula = [], []
    for r in rows:
        w, p = winner(r, other, rtol), pred_map.get(r[pred_key], "none")
        if w in ("spectral", other) and p in ("spectral", other):
            decided.append((w, p))
            if crit == "dd" or r["ss_regime"] == "signal":  # the index's formula (7) applies (no fallback)
                formula.append(w == p)
    n = len(decided)
    agree = sum(w == p for w, p in decided)
    spec = sum(w == "spectral" for w, _ in decided)
    pairs = [
        (float(r[ratio_key]), _dec(r, "spectral") / _dec(r, other))
        for r in rows
        if r[ratio_key] is not None
        and math.isfinite(float(r[ratio_key]))
        and float(r[ratio_key]) > 0
        and _dec(r, other) > 0
        and _dec(r, "spectral") > 0
    ]
    rho = spearman([a for a, _ in pairs], [b for _, b in pairs]) if len(pairs) >= 3 else float("nan")
    nan = float("nan")
    return {
        "n": n,
        "agree": agree,
        "rate": agree / n if n else nan,
        "always_spectral": spec / n if n else nan,
        "majority": max(spec, n - spec) / n if n else nan,
        "majority_class": "spectral" if spec >= n - spec else other,
        "ties": sum(winner(r, other, rtol) == "tie" for r in rows),
        "undecided": sum(pred_map.get(r[pred_key], "none") == "none" for r in rows),
        "spearman": rho,
        "n_ratio": len(pairs),
        "predicts_spectral": sum(p == "spectral" for _, p in decided),
        "n_formula": len(formula),
        "rate_formula": sum(formula) / len(formula) if formula else nan,
    }


#: How each criterion's claims are stated (quoted from the seeds, with the section).
STATEMENTS = {
    "dd": (
        (
            "seed 001",
            'Abstract: "We propose a simple layerwise condition that predicts when a spectral update '
            'yields a larger decrease in the loss than a Euclidean gradient step." (spectral iff nr(G) >= st(A))',
        ),
        (
            "seed 001",
            'Findings: "Spectral updates outperform Euclidean updates when the nuclear-to-Frobenius ratio '
            'is high." (the measured advantage grows with nr(G)/st(A))',
        ),
    ),
    "ss": (
        (
            "seed 002",
            'Section 4, Decision Rule: "If I(G, B) > 1, SpecGD is preferred. If I(G, B) < 1, SignSGD is preferred."',
        ),
        (
            "seed 002",
            'Section 4, Definition 2: "I(G, B) := Delta*_spec / Delta*_sign" (the index approximates the '
            "ratio of the optimal improvements: its ranks follow the measured ratio)",
        ),
    ),
}


#: Appended to the seed 001 claims here: this is a pooled, held-out measurement, not the thesis as the seed
#: states it (the training batch's own loss, per phase and batch size: the oracle-strata experiment).
POOLED = (
    " [measured here: a held-out batch's loss, batch sizes 4-64 and checkpoints pooled, on small models; not "
    "the thesis as stated, which oracle-strata checks per phase and batch size on the training batch's loss]"
)


def claims(results: dict) -> list[Claim]:
    st, rows = results["settings"], results["rows"]
    out = []
    for crit, other, _, _ in PAIRS:
        s = score(rows, crit, st["tie_rtol"])
        (src, stmt), (src_r, stmt_r) = STATEMENTS[crit]
        if crit == "dd":  # what this experiment measures is not seed 001's thesis as stated (oracle-strata is)
            stmt, stmt_r = stmt + POOLED, stmt_r + POOLED
        ok = None if not s["n"] else s["rate"] >= s["majority"] + st["agree_margin"]
        out.append(
            Claim(
                src,
                stmt,
                f"agreement {s['agree']}/{s['n']} = {fmt(s['rate'])}; always spectral "
                f"{fmt(s['always_spectral'])}; majority class ({s['majority_class']}) {fmt(s['majority'])}; "
                f"predicts spectral in {s['predicts_spectral']}/{s['n']}; {s['ties']} measured ties and "
                f"{s['undecided']} undecided predictions left out"
                + (
                    f"; where formula (7) applies (regime 'signal'): {fmt(s['rate_formula'])} over {s['n_formula']}"
                    if crit == "ss"
                    else ""
                ),
                verdict(ok),
                f"holds if agreement >= majority-class rate + {st['agree_margin']} (spectral vs {other}, "
                "winner measured by the line-search oracle on a held-out batch)" + _why(s),
            )
        )
        ok = None if s["n_ratio"] < 3 else s["spearman"] >= st["min_spearman"]
        out.append(
            Claim(
                src_r,
                stmt_r,
                f"Spearman(predicted ratio, measured Delta*_spec/Delta*_{other}) = "
                f"{fmt(s['spearman'])} over {s['n_ratio']} layer-records",
                verdict(ok),
                f"holds if Spearman >= {st['min_spearman']} (records with a finite positive prediction and "
                "both decreases > 0)",
            )
        )
    small, large = min(st["batch_sizes"]), max(st["batch_sizes"])
    share = {}
    for B in (small, large):
        d = [
            w for w in (winner(r, "linf", st["tie_rtol"]) for r in rows if r["batch"] == B) if w in ("spectral", "linf")
        ]
        share[B] = (sum(w == "spectral" for w in d), len(d))
    (a, na), (b, nb) = share[small], share[large]
    fs = a / na if na else float("nan")
    out.append(
        Claim(
            "seed 002",
            'Section 4.1, regime 2: "SpecGD may be preferable at small batch sizes because the '
            "'spectral noise' accumulates slower than 'coordinate noise.'\"",
            f"spectral beats sign on {a}/{na} = {fmt(fs)} layer-records at B = {small}, {b}/{nb} = "
            f"{fmt(b / nb if nb else float('nan'))} at B = {large}",
            verdict(None if not na else fs > st["small_batch_share"]),
            f"holds if spectral wins more than {st['small_batch_share']} of the decided records at the smallest B",
        )
    )

    def sign_over_spec(role):
        return [_dec(r, "linf") / _dec(r, "spectral") for r in rows if r["role"] == role and _dec(r, "spectral") > 0]

    emb, hid = sign_over_spec("embedding"), sign_over_spec("hidden")
    med = statistics.median(emb) if emb else float("nan")
    med_h = statistics.median(hid) if hid else float("nan")
    # above the hidden layers by a rank test, not by the medians' order: the two medians were 1.01 vs 0.994 on
    # one CPU and 0.989 vs 0.994 on another (the same runs up to floating point), an order that decides nothing
    p_above, alpha = rank_sum_greater(emb, hid), st.get("above_alpha", Config.above_alpha)  # older runs lack it
    out.append(
        Claim(
            "seed 002",
            'Section 5: "... why sign methods remain competitive for embedding layers (where '
            'coordinate sparsity is high)"',
            f"median Delta*_sign / Delta*_spec on embedding layers = {fmt(med)} "
            f"over {len(emb)} records; on hidden layers (baseline) {fmt(med_h)} over {len(hid)}; "
            f"one-sided rank-sum p = {fmt(p_above)} that the embeddings' ratios exceed the hidden layers'",
            verdict(None if not emb or not hid else med >= st["competitive_ratio"] and p_above < alpha),
            f"baseline: hidden layers of the same runs; threshold (set in Config before the run): holds if the "
            f"embeddings' median is >= {st['competitive_ratio']} and their ratios exceed the hidden layers' "
            f"(one-sided Mann-Whitney p < {alpha}; the claim explains sign's standing by the "
            "embeddings' sparsity, so it must be better there than on hidden layers); "
            "embedding = the routing role: token and position tables, and the input layer such as mnist-cnn's "
            "first conv",
        )
    )
    return out


def _why(s: dict) -> str:
    if not s["n"] or s["rate"] >= s["majority"]:
        return ""
    return (
        f". It scores below the majority class: it predicts spectral in {s['predicts_spectral']} of {s['n']} records "
        f"while the measured majority is {s['majority_class']}"
    )


# ---------------------------------------------------------------------------------------- report
def best_geometry(r: dict, rtol: float) -> str:
    """Measured winner among every probed geometry on one layer record."""
    return measured_winner({k: float(v["decrease"]) for k, v in r["oracle"].items()}, rtol)


LAYER_HEADER = (
    "subject",
    "layer",
    "role",
    "step",
    "B",
    "measured best (all geometries)",
    "measured spectral vs frobenius",
    "DD predicts",
    "measured spectral vs sign",
    "Spec-Sign predicts",
)


def layer_table(results: dict) -> tuple[tuple, list[list]]:
    """Per layer and checkpoint: the measured winner next to each criterion's prediction, as
    ``(header, rows)`` (rows follow :data:`LAYER_HEADER`). The compare report can show it as a table
    (``Section(tables=[layer_table(results)])``) beside Adaptive's choices for the same layers."""
    rtol = results["settings"]["tie_rtol"]
    rows = [
        [
            r["subject"],
            r["layer"],
            r["role"],
            r["step"],
            r["batch"],
            best_geometry(r, rtol),
            winner(r, "frobenius", rtol),
            r["dd_winner"],
            winner(r, "linf", rtol),
            r["ss_winner"],
        ]
        for r in results["rows"]
    ]
    return LAYER_HEADER, rows


def tables(results: dict):
    rtol = results["settings"]["tie_rtol"]
    head = (
        "criterion",
        "pair",
        "decided",
        "agreement",
        "always spectral",
        "majority class",
        "majority rate",
        "Spearman",
        "ratio records",
        "ties",
        "undecided",
        "agreement where formula applies",
        "formula records",
    )
    summ = []
    for crit, other, _, _ in PAIRS:
        s = score(results["rows"], crit, rtol)
        summ.append(
            [
                {"dd": "Davis-Drusvyatskiy", "ss": "Spec-Sign index"}[crit],
                f"spectral vs {other}",
                s["n"],
                s["rate"],
                s["always_spectral"],
                s["majority_class"],
                s["majority"],
                s["spearman"],
                s["n_ratio"],
                s["ties"],
                s["undecided"],
                s["rate_formula"],
                s["n_formula"],
            ]
        )
    per = []
    for subj in results["settings"]["subjects"]:
        sel = [r for r in results["rows"] if r["subject"] == subj]
        for crit, _other, _, _ in PAIRS:
            s = score(sel, crit, rtol)
            per.append([subj, crit, s["n"], s["rate"], s["always_spectral"], s["majority"], s["spearman"]])
    geo = results["settings"]["geometries"]
    tuned = [
        [
            r["subject"],
            r["layer"],
            r["step"],
            r["batch"],
            *[r["oracle"][g]["decrease"] for g in geo],
            *[r["oracle"][g]["decrease_at_lr"] for g in geo],
        ]
        for r in results["rows"]
    ]
    return [
        (head, summ),
        (("subject", "criterion", "decided", "agreement", "always spectral", "majority", "Spearman"), per),
        layer_table(results),
        (
            ("subject", "layer", "step", "B", *[f"Delta* {g}" for g in geo], *[f"Delta at tuned lr {g}" for g in geo]),
            tuned,
        ),
    ]


def notes(results: dict) -> list[str]:
    st = results["settings"]
    search = LineSearch(st["grid"], st["decades"], st["golden"])
    probes = [p for r in results["rows"] for p in r["oracle"].values()]
    return [
        f"Subjects {', '.join(st['subjects'])} ({st['model_size']} models); AdamW lr "
        f"{st['train_lr']}, batch {st['train_batch']}; checkpoints {st['checkpoints']}; probed batch sizes "
        f"{st['batch_sizes']} (K = {st['microbatches']} microbatches each); held-out batch {st['heldout']} samples.",
        f"Line search per (layer, geometry): {search.grid}-point log grid over {search.decades:g} decades below "
        f"{search.upper:g} x 2 L0 / <G, D>, then {search.golden} golden-section steps: {search.evaluations} loss "
        f"evaluations; eta resolved to a factor {search.eta_factor():.4f} (Delta* to {search.decrease_rtol():.1e} "
        "relative on a quadratic).",
        f"Of {len(probes)} line searches, {sum(p['at_edge'] and p['decrease'] > 0 for p in probes)} ended at an "
        "end of the bracket with a positive decrease (a lower bound on Delta* there; e.g. scale-invariant layers "
        f"under a LayerNorm keep improving as eta grows) and {sum(p['decrease'] == 0 for p in probes)} found no "
        "step that lowers the held-out loss (G_hat's direction is noise there: Delta* = 0; a record where every "
        "geometry has 0 is 'none' and left out of the scores).",
        "Criteria from the probed batch itself: DD's nr(G_hat) and st(A) of the incoming activations (one-hot rows "
        "for embeddings; undefined, so left out, for GPT-2's tied wte/lm_head); the index from c_1, c_* of the K "
        "microbatches and exact layer-restricted HVP curvatures along sign(G_hat) and polar(G_hat).",
    ]


COLORS = {"spectral": "tab:blue", "linf": "tab:orange", "frobenius": "tab:green", "tie": "lightgray", "none": "white"}


def figures(results: dict, out_dir) -> list:
    from steepest.app.report import figures as F  # lazy: matplotlib loads only when figures are drawn

    st, rows = results["settings"], results["rows"]
    fig, axes = F.subplots(1, 2, width=5.4, height=4.4)
    markers = "osD^v<>"
    for ax, (crit, other, _, ratio_key) in zip(axes, PAIRS):
        allv = []
        for i, subj in enumerate(st["subjects"]):
            pts = [
                (float(r[ratio_key]), _dec(r, "spectral") / _dec(r, other))
                for r in rows
                if r["subject"] == subj
                and r[ratio_key] is not None
                and math.isfinite(float(r[ratio_key]))
                and float(r[ratio_key]) > 0
                and _dec(r, other) > 0
                and _dec(r, "spectral") > 0
            ]
            if pts:
                ax.scatter(
                    [p for p, _ in pts],
                    [m for _, m in pts],
                    s=14,
                    marker=markers[i % len(markers)],
                    alpha=0.7,
                    label=subj,
                )
                allv += [v for pt in pts for v in pt]
        if allv:
            lo, hi = min(allv) / 1.5, max(allv) * 1.5
            ax.plot([lo, hi], [lo, hi], "k--", linewidth=0.8, label="y = x")
        ax.axhline(1.0, color="gray", linewidth=0.5)
        ax.axvline(1.0, color="gray", linewidth=0.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("predicted ratio " + ("nr(G)/st(A)" if crit == "dd" else "index I(G, B)"))
        ax.set_ylabel(f"measured Delta*_spectral / Delta*_{other}")
        ax.set_title({"dd": "Davis-Drusvyatskiy (vs frobenius)", "ss": "Spec-Sign index (vs sign)"}[crit], fontsize=10)
        ax.legend(fontsize=7)
    paths = [F.save(fig, f"{out_dir}/layer_oracle_calibration.png")]
    paths.append(layer_heatmap(results, f"{out_dir}/layer_oracle_winners.png"))
    return paths


def layer_heatmap(results: dict, path, batch: int | None = None):
    """Heatmap per subject: rows = layers, columns = checkpoints (at batch size ``batch``, default the
    largest); colour = the measured winner among spectral/sign/frobenius, text = "DD/SS" predictions
    (s = spectral, f = frobenius, l = sign, - = undecided). Returns the PNG path."""
    from matplotlib.patches import Patch, Rectangle

    from steepest.app.report import figures as F

    st, rows = results["settings"], results["rows"]
    B = batch if batch is not None else max(st["batch_sizes"])
    short = {"spectral": "s", "frobenius": "f", "linf": "l", "none": "-"}
    subjects = st["subjects"]
    fig, axes = F.subplots(
        1,
        len(subjects),
        width=3.6,
        height=0.28 * max(len({r["layer"] for r in rows if r["subject"] == s}) for s in subjects) + 1.8,
    )
    for ax, subj in zip(axes, subjects):
        sel = [r for r in rows if r["subject"] == subj and r["batch"] == B]
        names = list(dict.fromkeys(r["layer"] for r in sel))
        steps = list(st["checkpoints"])
        for r in sel:
            i, j = names.index(r["layer"]), steps.index(r["step"])
            w = measured_winner({k: _dec(r, k) for k in ("spectral", "linf", "frobenius")}, st["tie_rtol"])
            ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, color=COLORS[w]))
            ax.text(
                j,
                i,
                f"{short.get(r['dd_winner'], '-')}/{short.get(r['ss_winner'], '-')}",
                ha="center",
                va="center",
                fontsize=7,
            )
        ax.set_xlim(-0.5, len(steps) - 0.5)
        ax.set_ylim(-0.5, len(names) - 0.5)
        ax.set_xticks(range(len(steps)))
        ax.set_xticklabels([str(s) for s in steps], fontsize=8)
        ax.set_yticks(range(len(names)))
        ax.set_yticklabels([n.replace(".weight", "")[-28:] for n in names], fontsize=6)
        ax.set_xlabel("training step")
        ax.set_title(f"{subj} (B = {B})", fontsize=9)
    axes[-1].legend(
        handles=[
            Patch(facecolor=c, edgecolor="gray", label=k if k != "none" else "none lowers the loss")
            for k, c in COLORS.items()
        ],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        title="measured (text: DD/SS)",
        title_fontsize=7,
    )
    return F.save(fig, path)
