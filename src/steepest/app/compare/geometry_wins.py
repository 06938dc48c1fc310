"""Report section "Which geometry wins each layer": the measured winner against the criteria and Adaptive.

Input: a run's ``diagnostics/<optimizer>.jsonl`` records with the oracle fields of ``--oracle-every``
(:mod:`steepest.app.compare.monitor`): ``measured_winner`` (spectral vs frobenius, the larger measured
held-out decrease Delta*_g, seed 001's pairing), ``measured_winner_sign`` (spectral vs linf, seed 002's),
``measured_tie*`` (the pair within the line search's tolerance); the predictions ``dd_winner`` (the
Davis-Drusvyatskiy test nr(G) >= st(A), seed 001) and ``spec_sign_winner`` (seed 002's index), and
``choice`` (the geometry steepest.Adaptive used for the layer at that step; for a time chooser the geometry of
the pair its knob a is nearer, :func:`steepest.app.compare.monitor.knob_geometry`).

Agreement of a predictor with the measured winner of its pairing, over the cells (layer, record step)
where both are one of the pairing's two geometries: agree / cells. Baselines on the same cells: "always
spectral" (cells where the measured winner is spectral) and "majority class" (the count of the more
frequent measured winner there). A predictor is useful only where it beats both.

Example:
    >>> recs = [{"layer": "a", "step": 0, "measured_winner": "spectral", "dd_winner": "spectral"},
    ...         {"layer": "a", "step": 10, "measured_winner": "frobenius", "dd_winner": "spectral"}]
    >>> row = agreement_rows(recs)[0]
    >>> row["cells"], row["agree"], row["always_spectral"], row["majority"]
    (2, 1, 1, 1)
"""

from __future__ import annotations

from pathlib import Path

from steepest.app.report.html import Section

#: (pairing label, measured field, tie field, the two geometries, [(predictor label, record field)]).
PAIRINGS = (
    (
        "spectral vs frobenius (seed 001)",
        "measured_winner",
        "measured_tie",
        ("spectral", "frobenius"),
        (("Davis-Drusvyatskiy nr(G) >= st(A)", "dd_winner"), ("the optimizer's choice", "choice")),
    ),
    (
        "spectral vs linf (seed 002)",
        "measured_winner_sign",
        "measured_tie_sign",
        ("spectral", "linf"),
        (("Spec-Sign index", "spec_sign_winner"),),
    ),
)


def oracle_records(records: list[dict]) -> list[dict]:
    """The records that carry the measured winner (the ``--oracle-every`` steps)."""
    return [r for r in records if r.get("measured_winner") is not None]


def agreement_rows(records: list[dict]) -> list[dict]:
    """One row per (pairing, predictor) with any scorable cell: ``{"pairing", "predictor", "field", "cells",
    "agree", "agreement", "always_spectral", "majority", "majority_class", "ties"}`` (counts over the cells
    where the measured winner and the prediction are both one of the pairing's geometries; ``ties``: cells
    whose measured pair is within the search tolerance)."""
    rows = []
    for pairing, measured, tie, classes, predictors in PAIRINGS:
        for label, field in predictors:
            cells = [r for r in records if r.get(measured) in classes and r.get(field) in classes]
            if not cells:
                continue
            counts = {c: sum(r[measured] == c for r in cells) for c in classes}
            major = max(classes, key=lambda c: counts[c])  # ties in count go to the first (spectral)
            agree = sum(r[field] == r[measured] for r in cells)
            rows.append(
                dict(
                    pairing=pairing,
                    predictor=label,
                    field=field,
                    cells=len(cells),
                    agree=agree,
                    agreement=agree / len(cells),
                    always_spectral=counts["spectral"],
                    majority=counts[major],
                    majority_class=major,
                    ties=sum(bool(r.get(tie)) for r in cells),
                )
            )
    return rows


def _grid(records: list[dict], key: str, layers, steps) -> list[list]:
    cell = {(r["layer"], int(r["step"])): r.get(key) for r in records}
    return [[cell.get((l, s)) for s in steps] for l in layers]


def _per_layer(records: list[dict], layers) -> list[list]:
    """Per layer: cells, spectral's share of the measured wins and each predictor's agreement (k/n)."""
    out = []
    for layer in layers:
        mine = [r for r in records if r["layer"] == layer]
        row = [layer]
        for _pairing, measured, _, classes, predictors in PAIRINGS:
            m = [r for r in mine if r.get(measured) in classes]
            row.append(f"{sum(r[measured] == 'spectral' for r in m)}/{len(m)}")
            for _, field in predictors:
                c = [r for r in m if r.get(field) in classes]
                row.append(f"{sum(r[field] == r[measured] for r in c)}/{len(c)}" if c else "-")
        out.append(row)
    return out


def geometry_wins_section(name: str, records: list[dict], fig_dir: Path) -> Section | None:
    """The section for one run (None when its records carry no measured winner)."""
    from steepest.app.report.compare_figures import winner_maps  # lazy: matplotlib only when drawing

    recs = oracle_records(records)
    if not recs:
        return None
    layers = list(dict.fromkeys(r["layer"] for r in recs))
    steps = sorted({int(r["step"]) for r in recs})
    panels = [
        ("measured:\nspectral vs frobenius", _grid(recs, "measured_winner", layers, steps)),
        ("Davis-Drusvyatskiy\nprediction", _grid(recs, "dd_winner", layers, steps)),
    ]
    if any(r.get("choice") for r in recs):
        label = "knob a\n(> 0.5: frobenius)" if any(r.get("knob") is not None for r in recs) else "Adaptive's\nchoice"
        panels.append((label, _grid(recs, "choice", layers, steps)))
    panels.append(("measured:\nspectral vs linf", _grid(recs, "measured_winner_sign", layers, steps)))
    if any(r.get("spec_sign_winner") for r in recs):
        panels.append(("Spec-Sign\nprediction", _grid(recs, "spec_sign_winner", layers, steps)))
    fig = winner_maps(
        panels,
        layers,
        steps,
        fig_dir / f"geometry_wins_{name}.png",
        title=f"{name}: which geometry wins each layer (measured on a held-out batch) vs predictions",
    )
    rows = agreement_rows(recs)
    header = ["pairing", "predictor", "cells", "agree", "agreement", "always spectral", "majority class", "ties"]
    table = [
        [
            r["pairing"],
            r["predictor"],
            r["cells"],
            r["agree"],
            f"{r['agreement']:.2f}",
            f"{r['always_spectral']}/{r['cells']} = {r['always_spectral'] / r['cells']:.2f}",
            f"{r['majority_class']}: {r['majority']}/{r['cells']} = {r['majority'] / r['cells']:.2f}",
            r["ties"],
        ]
        for r in rows
    ]
    layer_header = ["layer"]
    for _, _, _, classes, predictors in PAIRINGS:
        layer_header.append(f"spectral wins ({classes[0]} vs {classes[1]})")
        layer_header += [f"{label} agrees" for label, _ in predictors]
    text = [
        f"On every {steps[1] - steps[0] if len(steps) > 1 else '-'}-th step's records "
        f"({len(steps)} record steps x {len(layers)} layers) the monitor stepped each layer alone along each "
        "geometry's steepest-descent direction with a line-searched step size and measured the decrease of a "
        "held-out batch's loss (Delta*_g; steepest.diagnostics.layer_oracle, weights restored). The measured "
        "winner is the larger Delta*_g of the pair; each predictor is scored on the cells where it and the "
        "measured winner are both one of the pair's geometries (the optimizer's choice is 'adamw' on layers it "
        "routes to AdamW: not scored; a time chooser's knob a counts as the geometry it is nearer: frobenius for "
        "a > 0.5, else spectral). A predictor helps only where it beats both baselines on its cells; "
        "'ties' counts cells whose measured pair lies within the line search's tolerance "
        "(LineSearch.decrease_rtol)."
    ]
    none = sum(r.get("measured_winner") == "none" for r in recs)
    edge = sum(bool(r.get("oracle_at_edge")) for r in recs)
    text.append(
        f"Of the {len(recs)} cells, {none} have no measured winner between spectral and frobenius (no step "
        f"along either lowered the held-out loss: not scored) and {edge} have a geometry whose best step lay "
        "at an end of the line search's bracket (oracle_at_edge: its Delta* may be underestimated)."
    )
    if not any(r["field"] == "spec_sign_winner" for r in rows):
        text.append("No Spec-Sign index on these records (it needs K microbatch gradients of the step).")
    return Section(
        f"Which geometry wins each layer: {name}",
        text=text,
        figures=[str(fig)],
        tables=[(header, table), (layer_header, _per_layer(recs, layers))],
    )
