"""The report of the oracle-strata experiment (:mod:`steepest.app.reproduce.oracle_strata`): its tables, notes
and figure, drawn from the results only (the measurement and the verdicts live in that module).

Example:
    >>> from steepest.app.reproduce import _oracle_strata_report as R
    >>> [h for h, _ in R.STRATA_COLUMNS][:4]
    ['phase', 'batch', 'decided layers', 'DD agreement']
"""

from __future__ import annotations

from steepest.app.reproduce._oracle_strata_scoring import (
    FULL,
    GEOMETRIES,
    PHASES,
    _dec,
    _label,
    _ratios,
    lr_edges,
    plateau,
    strata,
    winner,
)
from steepest.diagnostics.oracle import LineSearch

#: The strata table: (column header, key of :func:`strata`'s records).
STRATA_COLUMNS = (
    ("phase", "phase"),
    ("batch", "batch"),
    ("decided layers", "n"),
    ("DD agreement", "agreement"),
    ("always spectral", "always_spectral"),
    ("phase majority", "phase_majority"),
    ("majority class", "majority_class"),
    ("verdict", "verdict"),
    ("ties", "ties"),
    ("no prediction", "no_prediction"),
    ("DD predicts spectral", "predicts_spectral"),
    ("Spearman(nr/st, measured ratio)", "spearman"),
    ("spectral beats sign", "spec_over_sign"),
    ("sign records", "n_sign"),
)
LAYER_COLUMNS = ("subject", "phase", "batch", "layer", "role", "nr(G)", "st(A)", "DD predicts", "spec vs frob")


def tables(results: dict):
    rtol = results["settings"]["tie_rtol"]
    per = [
        [
            r["subject"],
            r["phase"],
            _label(r["batch"]),
            r["layer"],
            r["role"],
            r["nr"],
            r["st"],
            r["dd_winner"],
            winner(r, "frobenius", rtol),
            winner(r, "linf", rtol),
            *[_dec(r, g) for g in GEOMETRIES],
        ]
        for r in results["rows"]
    ]
    head = tuple(h for h, _ in STRATA_COLUMNS)
    return [
        (head, [[s[k] for _, k in STRATA_COLUMNS] for s in strata(results)]),
        (
            ("layers",) + head,
            [["hidden only"] + [s[k] for _, k in STRATA_COLUMNS] for s in strata(results, ("hidden",))],
        ),
        (LAYER_COLUMNS + ("spec vs sign",) + tuple(f"Delta* {g}" for g in GEOMETRIES), per),
    ]


def notes(results: dict) -> list[str]:
    st = results["settings"]
    s = LineSearch(st["grid"], st["decades"], st["golden"], st["upper"])
    probes = [p for r in results["rows"] for p in r["oracle"].values()]
    return [
        f"Subjects {', '.join(st['subjects'])} ({st['model_size']} models); one AdamW run each (lr {st['train_lr']}, "
        f"batch {st['train_batch']}, {st['train_steps']} steps); phases init / early / late at steps "
        f"{st['checkpoints']}; batch strata B = {st['batch_sizes']} (fresh training batches) and full (a fixed "
        f"subset of {st['full_subset']} training windows, its exact gradient).",
        f"Line search per (layer, geometry) on the batch's own loss: {s.grid}-point log grid over {s.decades:g} "
        f"decades below {s.upper:g} x 2 L0 / <G, D>, then {s.golden} golden-section steps ({s.evaluations} "
        f"evaluations; Delta* to {s.decrease_rtol():.1e} relative on a quadratic). A search whose best step is at the "
        f"bracket's top is re-probed at {st['far']:g} x the top: {sum(plateau(p, st['plateau_rtol']) for p in probes)} "
        f"of {len(probes)} searches reached a plateau there (the loss changes by <= {st['plateau_rtol']} x Delta*: "
        "scale invariance under a LayerNorm, Delta* is the plateau's value); "
        f"{len(lr_edges(results))} ended at an edge otherwise.",
        "Predicted ratio nr(G)/st(A) with nr(G) = ||G||_*^2 / ||G||_F^2 (seed 001: the squared nuclear-to-Frobenius "
        "ratio against the stable rank); st(A) from the same batch's incoming activations (one-hot rows for "
        "embeddings; none for GPT-2's tied wte, left out of the DD scores).",
        "The second table repeats the strata on hidden layers only (no embeddings or head): the claims pool every "
        "matrix layer, as the seed's condition is stated per parameter block.",
        "The older layer-oracle experiment measures something else (held-out loss, batch sizes pooled, quick-size "
        "models); this experiment is the thesis as stated.",
    ]


PHASE_COLORS = {"init": "tab:green", "early": "tab:orange", "late": "tab:purple"}


def figures(results: dict, out_dir) -> list:
    from steepest.app.report import figures as F  # lazy: matplotlib loads only when figures are drawn

    st, rows = results["settings"], results["rows"]
    markers = dict(zip([*st["batch_sizes"], FULL], "o^sDv"))
    fig, (ax, bx) = F.subplots(1, 2, width=5.4, height=4.4)
    allv: list[float] = []
    for phase in PHASES:
        for b, m in markers.items():
            pts = _ratios([r for r in rows if r["phase"] == phase and r["batch"] == b])
            if pts:
                ax.scatter(
                    *zip(*pts), s=16, marker=m, color=PHASE_COLORS[phase], alpha=0.75, label=f"{phase}, {_label(b)}"
                )
                allv += [v for pt in pts for v in pt]
    if allv:
        lo, hi = min(allv) / 1.5, max(allv) * 1.5
        ax.plot([lo, hi], [lo, hi], "k--", linewidth=0.8, label="y = x")
    ax.axhline(1.0, color="gray", linewidth=0.5, label="measured tie (ratio 1)")
    ax.axvline(1.0, color="gray", linestyle=":", linewidth=0.8, label="DD threshold nr = st")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("predicted ratio nr(G)/st(A)")
    ax.set_ylabel("measured Delta*_spectral / Delta*_frobenius")
    ax.set_title("seed 001 on the training batch's loss", fontsize=10)
    ax.legend(fontsize=6, ncol=2)
    table = strata(results)
    x = list(range(len(table)))
    bx.plot(x, [s["agreement"] for s in table], "o-", label="DD agreement")
    bx.plot(x, [s["better_baseline"] for s in table], "s--", label="better baseline")
    bx.plot(x, [s["spec_over_sign"] for s in table], "^:", label="share spectral beats sign")
    bx.set_xticks(x)
    bx.set_xticklabels([f"{s['phase']}\n{_label(s['batch'])}" for s in table], fontsize=7)
    bx.set_ylim(0, 1.05)
    bx.set_xlabel("stratum (phase, batch)")
    bx.set_ylabel("rate over decided layers")
    bx.set_title("per stratum", fontsize=10)
    bx.legend(fontsize=7)
    return [F.save(fig, f"{out_dir}/oracle_strata.png", require_labels=True)]
