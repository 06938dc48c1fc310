"""Seed 001's thesis as stated, per stratum (phase x batch size), and seed 002's early-phase claim.

Source: D. Davis, D. Drusvyatskiy, "When do spectral gradient updates help in deep learning?" (seed 001,
abstract: the condition "compares, for each parameter block, the squared nuclear-to-Frobenius ratio of the
gradient to the stable rank of the incoming activations": spectral iff nr(G) = ||G||_*^2/||G||_F^2 >= st(A),
predicted ratio nr(G)/st(A)); H. Naganuma et al. (seed 002, section 4: "spectral methods often outperform
sign methods in the early phase of training").

Protocol. For each subject (charlm and a GPT-2, both 2 layers of width 64 on 64 characters at default
size; :mod:`._oracle_subjects`) one real AdamW run of ``train_steps`` steps; the phases are its checkpoints
at fixed fractions ``phase_fractions`` of the run (init = step 0, early, late = the last step). At every
checkpoint and batch stratum (fresh training batches of each size in ``batch_sizes``, and ``full``: a fixed
training subset of ``full_subset`` windows, the same at every phase) the gradient G is the exact gradient
of that batch's own mean loss, and for every matrix layer and geometry g (spectral, frobenius, sign) the
measured best decrease Delta*_g of *that same batch's* loss when only this layer steps along
-dualize_g(G) (:func:`steepest.diagnostics.oracle.layer_oracle`: the line search of the layer-oracle
experiment, a log grid then golden-section steps). This is the one-step training-loss decrease with the
gradient the step uses, which is what the condition predicts (no held-out batch, no pooling of batch sizes).

Thresholds, fixed here before the run (Config fields in brackets):

* measured winner of spectral vs frobenius (vs sign): the larger Delta*; a tie when the two are within
  ``tie_rtol`` (0.02) relative, and ties are left out; a layer without st(A) (GPT-2's tied wte) has no
  DD prediction and is left out of the DD scores;
* per stratum (phase, batch): the condition's agreement with the measured winner is compared with the
  better of two baselines, "always spectral" and the per-phase majority (the measured majority class of
  the phase, pooled over batch sizes and subjects, predicted for every layer of the stratum). The
  condition holds in the stratum when agreement >= better baseline + ``agree_margin`` (0.1) over
  >= ``min_layers`` (12) decided layers (subjects pooled); fails when decided and below; else inconclusive;
* one claim per phase: holds when it holds in every batch stratum of the phase, fails when it fails in
  every decided one, inconclusive otherwise (mixed, or no stratum decided); the strata are its sub-rows;
* seed 002's early-phase claim: the share of decided layer-records (subjects and batch strata pooled)
  where spectral beats sign at the early phase must exceed ``often_share`` (0.5) and the late phase's
  share (the baseline) by ``early_margin`` (0.1), each share over >= ``min_layers`` records.

Example:
    >>> from steepest.app.reproduce import base, oracle_strata
    >>> out = base.run_experiment("oracle-strata", oracle_strata.quick(), "runs/os-quick")  # trains two models (about a minute) and writes under runs/  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses

import torch

from steepest.app.reproduce import _oracle_strata_report as R
from steepest.app.reproduce import _oracle_subjects as S
from steepest.app.reproduce._oracle_strata_scoring import (
    FULL,
    GEOMETRIES,
    PHASES,
    _label,
    sign_share,
    strata,
)
from steepest.app.reproduce._oracle_strata_scoring import lr_edges as lr_edges  # the registry's grid-edge check
from steepest.app.reproduce._oracle_strata_scoring import plateau as plateau
from steepest.app.reproduce._oracle_strata_scoring import winner as winner
from steepest.app.reproduce.base import Cells, fmt, progress
from steepest.app.reproduce.claimtext import seed_claim
from steepest.app.runs import ConfigError
from steepest.diagnostics.criteria import dd_winner
from steepest.diagnostics.metrics import nuclear_rank
from steepest.diagnostics.oracle import (
    LineSearch,
    layer_oracle,
    parse_geometry,
    step_decreases,
)
from steepest.geometry import dualize, from_matrix, matrix_view

SEED = "seeds 001, 002"
SOURCE = (
    'D. Davis, D. Drusvyatskiy, "When do spectral gradient updates help in deep learning?"; H. Naganuma et al., '
    '"The Geometry of Spectral Gradient Descent: Layerwise Criteria for SignSGD vs Spec SGD"'
)
TITLE = "Seed 001's condition per phase and batch size on the training batch's own loss; spectral vs sign per phase"
VERSION = 1


@dataclasses.dataclass
class Config:
    subjects: tuple[str, ...] = ("charlm", "gpt2")
    model_size: str = "large"  # width 64, 2 layers, 64 characters (_oracle_subjects.make_subject)
    train_steps: int = 300  # the AdamW run whose checkpoints are the phases
    phase_fractions: tuple[float, ...] = (0.0, 0.1, 1.0)  # init, early, late as fractions of train_steps
    batch_sizes: tuple[int, ...] = (8, 32)  # fresh training batches; plus the fixed full subset
    full_subset: int = 64  # windows of the fixed training subset whose exact gradient is the "full" stratum
    train_batch: int = 16
    train_lr: float = 2e-3  # AdamW, betas 0.9/0.95 (the compare table's "adamw")
    grid: int = 10  # line search: log-grid points over `decades` below the bracket's top
    decades: float = 7.0
    golden: int = 10  # golden-section steps: Delta* to 0.6 % relative on a quadratic, below tie_rtol
    upper: float = 64.0  # bracket top, in units of 2 L0 / <G, D> (layer-oracle's 4 is too low on the own batch)
    far: float = 100.0  # a search that ends at the top is re-probed at far x top (the plateau check)
    plateau_rtol: float = 0.005  # |Delta(far x top) - Delta*| <= this x Delta*: Delta* is the plateau value
    tie_rtol: float = 0.02
    agree_margin: float = 0.1
    min_layers: int = 12
    often_share: float = 0.5
    early_margin: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        bad = [s for s in self.subjects if s not in S.SUBJECTS]
        if bad or not self.subjects:
            raise ConfigError(f"subjects must be a non-empty subset of {S.SUBJECTS}, got {self.subjects}")
        if self.model_size not in S.MODEL_SIZES:
            raise ConfigError(f"model_size must be one of {S.MODEL_SIZES}, got {self.model_size!r}")
        fr = tuple(self.phase_fractions)
        if len(fr) != len(PHASES) or fr[0] != 0.0 or fr[-1] != 1.0 or list(fr) != sorted(set(fr)):
            raise ConfigError(
                f"phase_fractions must be 3 increasing fractions 0.0, f, 1.0 (init, early, late), got {fr}"
            )
        if self.train_steps < 1 or len(set(self.checkpoints())) != len(PHASES):
            raise ConfigError(f"train_steps={self.train_steps} is too short for 3 distinct checkpoints at {fr}")
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes) or self.full_subset < 1:
            raise ConfigError(f"batch_sizes and full_subset must be >= 1, got {self.batch_sizes}, {self.full_subset}")
        if not (self.far > 1 and 0 < self.plateau_rtol < self.tie_rtol):
            raise ConfigError(f"far must be > 1 and 0 < plateau_rtol < tie_rtol, got {self.far}, {self.plateau_rtol}")
        try:
            LineSearch(self.grid, self.decades, self.golden, self.upper)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    def checkpoints(self) -> tuple[int, ...]:
        """Training steps of the phases init, early, late: round(fraction x train_steps)."""
        return tuple(round(f * self.train_steps) for f in self.phase_fractions)


def quick() -> Config:
    """A smoke test: the quick subjects (charlm width 32, GPT-2 width 16), a 60-step run, B = 8 and full."""
    return Config(model_size="quick", train_steps=60, batch_sizes=(8,), full_subset=32, grid=8, golden=8)


# ---------------------------------------------------------------------------------------- cells
def probe_cell(cfg: Config, subj: S.Subject, model, layers: dict, batch) -> list[dict]:
    """One (checkpoint, batch) cell: G = the exact gradient of ``batch``'s mean loss, then per matrix layer
    nr(G), st(A) on the same batch, DD's prediction and the measured Delta*_g of the same batch's loss."""
    model.eval()
    params = dict(model.named_parameters())
    model.zero_grad(set_to_none=True)
    subj.loss(model, batch).backward()
    G = {n: torch.zeros_like(params[n]) if params[n].grad is None else params[n].grad.detach().clone() for n in layers}
    model.zero_grad(set_to_none=True)
    st = S.activation_stable_ranks(model, lambda: subj.loss(model, batch), list(layers))
    res = layer_oracle(
        model,
        lambda: subj.loss(model, batch),
        G,
        geometries=[parse_geometry(g) for g in GEOMETRIES],
        views=layers,
        search=LineSearch(cfg.grid, cfg.decades, cfg.golden, cfg.upper),
    )
    plateau = _plateau_checks(cfg, model, lambda: subj.loss(model, batch), G, layers, res)
    rows = []
    for n, view in layers.items():
        nr = float(nuclear_rank(matrix_view(G[n], view["tensor_mode"], view["transposed"]).double()))
        s = st[n]
        if s is not None and not s > 0:
            s = None
        rows.append(
            {
                "layer": n,
                "role": view["role"],
                "nr": nr,
                "st": s,
                "dd_ratio": None if s is None else nr / s,
                "dd_winner": "none" if s is None else dd_winner(nr, s),
                "oracle": {
                    k: {"decrease": p.decrease, "eta": p.eta, "at_edge": p.at_edge, "far": plateau.get((n, k))}
                    for k, p in res[n].items()
                },
            }
        )
    return rows


def _plateau_checks(cfg: Config, model, loss, G: dict, layers: dict, res: dict) -> dict:
    """For each search whose best step is in the top half (log scale) of the bracket and on its edge: the
    decrease at ``far`` x the bracket's top, ``{(layer, geometry): Delta(far x top)}``. Layers under a
    LayerNorm are scale-invariant as eta grows, so the loss flattens to a plateau; there Delta* is that
    plateau's value (a supremum at eta -> infinity), not a minimiser the bracket missed."""
    steps: dict[str, dict[str, torch.Tensor]] = {}
    params = dict(model.named_parameters())
    for n, probes in res.items():
        view = layers[n]
        for k, p in probes.items():
            top = cfg.upper * 2.0 * max(p.loss0, 1e-30) / p.alignment if p.alignment > 0 else 0.0
            if not (p.at_edge and p.decrease > 0 and p.eta > top * 10.0 ** (-cfg.decades / 2)):
                continue
            norm, q = parse_geometry(k)
            X = matrix_view(G[n], view["tensor_mode"], view["transposed"]).double()
            D = from_matrix(dualize(X, norm, q, dtype=torch.float64), params[n].shape, view["transposed"])
            steps.setdefault(n, {})[k] = (cfg.far * top * D).to(params[n].dtype)
    far = step_decreases(model, loss, steps) if steps else {}
    return {(n, k): v for n, d in far.items() for k, v in d.items()}


def run(cfg: Config, out_dir=None, cells: Cells | None = None) -> dict:
    from steepest.app.compare.optimizers import build_optimizer

    cells = cells or Cells(None if out_dir is None else f"{out_dir}/cells")
    rows: list[dict] = []
    base = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("subjects", "batch_sizes")}
    strata: list[int | str] = [*cfg.batch_sizes, FULL]
    for name in progress(cfg.subjects, "oracle-strata"):
        subj = S.make_subject(name, cfg.model_size)
        torch.manual_seed(cfg.seed)
        model = subj.make_model()
        layers = S.matrix_layers(model, subj.routing)
        opt = build_optimizer("adamw", model, cfg.train_lr, cfg.train_lr, subj.routing)
        full = subj.batch(cfg.seed + 3000, 0, cfg.full_subset)  # the fixed training subset
        done = 0
        for phase, ck in zip(PHASES, cfg.checkpoints()):
            model.train()
            while done < ck:  # the real training run, up to this checkpoint
                opt.zero_grad(set_to_none=True)
                subj.loss(model, subj.batch(cfg.seed, done, cfg.train_batch)).backward()
                opt.step()
                done += 1
            opt.zero_grad(set_to_none=True)
            for b in strata:
                batch = full if b == FULL else subj.batch(cfg.seed + 1000, ck, int(b))
                recs = cells.get(
                    f"strata-{name}-s{ck}-{b}",
                    {**base, "subject": name, "step": ck, "batch": b},
                    lambda batch=batch, subj=subj, model=model, layers=layers: probe_cell(
                        cfg, subj, model, layers, batch
                    ),
                )
                rows.extend({"subject": name, "phase": phase, "step": ck, "batch": b, **r} for r in recs)
    return {"rows": rows, "settings": {**dataclasses.asdict(cfg), "checkpoints": list(cfg.checkpoints())}}


# ---------------------------------------------------------------------------------------- scoring
def claims(results: dict) -> list:
    st, rows = results["settings"], results["rows"]
    table = strata(results)
    ck = dict(zip(PHASES, st["checkpoints"]))
    out = []
    for phase in PHASES:
        sub = [s for s in table if s["phase"] == phase]
        decided = [s["verdict"] for s in sub if s["verdict"] != "inconclusive"]
        ok = True if decided and len(decided) == len(sub) and all(v == "holds" for v in decided) else None
        if decided and all(v == "fails" for v in decided):
            ok = False
        measured = "; ".join(
            f"{_label(s['batch'])}: agreement {fmt(s['agreement'])} vs always spectral {fmt(s['always_spectral'])}, "
            f"phase majority ({s['majority_class']}) {fmt(s['phase_majority'])}, n = {s['n']} -> {s['verdict']}"
            for s in sub
        )
        out.append(
            seed_claim(
                "seed 001",
                f"abstract; phase {phase} (step {ck[phase]} of {st['train_steps']})",
                "We propose a simple layerwise condition that predicts when a spectral update yields a larger "
                "decrease in the loss than a Euclidean gradient step.",
                measured,
                ok,
                baseline="always spectral, and the phase's measured majority class",
                threshold=f"per batch stratum, agreement >= the better baseline + {st['agree_margin']} over >= "
                f"{st['min_layers']} decided layers (ties within {st['tie_rtol']} left out); the phase holds if "
                "every stratum holds, fails if every decided one fails, else inconclusive",
                why="winner = larger line-searched one-step decrease of the training batch's own loss, with that "
                "batch's exact gradient; charlm and GPT-2 layers pooled",
            )
        )
    share = {p: sign_share([r for r in rows if r["phase"] == p], st["tie_rtol"]) for p in PHASES}
    frac = {p: (a / n if n else float("nan")) for p, (a, n) in share.items()}
    enough = all(share[p][1] >= st["min_layers"] for p in ("early", "late"))
    ok2 = (
        None if not enough else frac["early"] > st["often_share"] and frac["early"] >= frac["late"] + st["early_margin"]
    )
    out.append(
        seed_claim(
            "seed 002",
            f"section 4 (Discussion); early = step {ck['early']} of {st['train_steps']}",
            "spectral methods often outperform sign methods in the early phase of training",
            "; ".join(f"{p}: spectral beats sign on {share[p][0]}/{share[p][1]} = {fmt(frac[p])}" for p in PHASES),
            ok2,
            baseline=f"the late phase's share (step {ck['late']})",
            threshold=f"early share > {st['often_share']} and >= the late share + {st['early_margin']}, each over >= "
            f"{st['min_layers']} decided layer-records",
            why="one-step decrease of the training batch's own loss, line-searched; subjects and batch strata pooled, "
            "ties left out",
        )
    )
    return out


# ---------------------------------------------------------------------------------------- report
def tables(results: dict):
    """The strata table (all layers, then hidden layers only) and the per-layer records."""
    return R.tables(results)


def notes(results: dict) -> list[str]:
    return R.notes(results)


def figures(results: dict, out_dir) -> list:
    """oracle_strata.png: predicted nr(G)/st(A) vs measured Delta*_spec/Delta*_frob (log-log, colour = phase,
    marker = batch stratum), and the per-stratum agreement beside the better baseline."""
    return R.figures(results, out_dir)
