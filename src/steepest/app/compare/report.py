"""``report.html`` of a ``steepest compare`` run, built from the run directory's files only.

Reads ``config.json``, ``environment.json``, ``summary.json``, ``routing.txt``, ``metrics/*.jsonl`` and
``diagnostics/*.jsonl`` (LayerMonitor records ``{"step", "layer", "nr_G", "st_A", "nr_st_ratio", ...}``
plus ``"choice"`` for the adaptive optimizer, written by :mod:`steepest.app.compare.monitor`; with
``--oracle-every`` also the measured winner, scored in :mod:`steepest.app.compare.geometry_wins`), draws the
figures into ``figures/`` and writes the page with
:func:`steepest.app.report.html.write_report`. Rebuild it any time with ``write_compare_report(run_dir)``.
"""

from __future__ import annotations

import math
from pathlib import Path

from steepest.app.compare.knobs import knob_sections
from steepest.app.guard import mapping_of, read_json
from steepest.app.report.html import Section, write_report
from steepest.app.runs import read_jsonl


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _grid(records: list[dict], key: str) -> tuple[list[str], list[int], list[list]]:
    """(layers, steps, values[layer][step]) from diagnostics records (missing cells are NaN / None)."""
    layers = list(dict.fromkeys(r["layer"] for r in records))
    steps = sorted({int(r["step"]) for r in records})
    cell = {(r["layer"], int(r["step"])): r.get(key) for r in records}
    return layers, steps, [[cell.get((l, s)) for s in steps] for l in layers]


def _diagnostics_sections(run_dir: Path, names: list[str]) -> list[Section]:
    from steepest.app.compare.geometry_wins import geometry_wins_section
    from steepest.app.report.compare_figures import choice_map, layer_heatmap  # lazy: matplotlib only when drawing

    sections = []
    fig_dir = run_dir / "figures"
    for name in names:
        records = read_jsonl(run_dir / "diagnostics" / f"{name}.jsonl")
        if not records:
            continue
        layers, steps, ratio = _grid(records, "nr_st_ratio")
        ratio = [[math.log10(_num(v)) if _num(v) > 0 else math.nan for v in row] for row in ratio]
        figs = [
            str(
                layer_heatmap(
                    ratio,
                    layers,
                    steps,
                    fig_dir / f"diag_ratio_{name}.png",
                    title=f"{name}: log10 nr(G)/st(A) per layer (> 0: spectral geometry favoured)",
                )
            )
        ]
        for key, label in (("nr_G", "nuclear rank nr(G) of the gradient"), ("st_A", "stable rank st(A) of the input")):
            _, _, vals = _grid(records, key)
            figs.append(
                str(
                    layer_heatmap(
                        [[_num(v) for v in row] for row in vals],
                        layers,
                        steps,
                        fig_dir / f"diag_{key}_{name}.png",
                        title=f"{name}: {label}",
                    )
                )
            )
        text = [
            f"Per-layer diagnostics while training with {name} (steepest.diagnostics.LayerMonitor, every "
            f"{steps[1] - steps[0] if len(steps) > 1 else 1} steps). Davis-Drusvyatskiy criterion (seed 001): a "
            "spectral step beats a Euclidean one on a layer when nr(G) exceeds st(A) (ratio > 1)."
        ]
        _, _, choices = _grid(records, "choice")
        if any(c for row in choices for c in row):
            figs.append(
                str(
                    choice_map(
                        choices,
                        layers,
                        steps,
                        fig_dir / f"choices_{name}.png",
                        title=f"{name}: geometry chosen per layer",
                    )
                )
            )
            final = {l: next((c for c in reversed(row) if c), "-") for l, row in zip(layers, choices)}
            counts: dict[str, int] = {}
            for c in final.values():
                counts[c] = counts.get(c, 0) + 1
            text.append(
                "Geometry chosen per layer at the last record: "
                + ", ".join(f"{k}: {v} layer(s)" for k, v in sorted(counts.items()))
                + "."
            )
        sections.append(Section(f"Layer diagnostics: {name}", text=text, figures=figs))
        wins = geometry_wins_section(name, records, fig_dir)  # --oracle-every runs: measured winner vs predictions
        if wins is not None:
            sections.append(wins)
    return sections


def write_compare_report(run_dir: str | Path) -> Path:
    """Draw the figures and write ``run_dir/report.html``; returns its path."""
    from steepest.app.report.compare_figures import loss_curves  # lazy: matplotlib only when drawing

    run_dir = Path(run_dir)
    fix = "rerun the comparison with --resume to rewrite it, or restore it"
    config = read_json(run_dir / "config.json", "the run's configuration", fix, mapping_of({"config": dict}))
    cfg = config["config"]
    summary = read_json(run_dir / "summary.json", "the comparison table", fix, mapping_of({"rows": list}))
    env_path = run_dir / "environment.json"
    env = read_json(env_path, "the run's environment", fix, mapping_of({})) if env_path.exists() else {}
    rows = summary["rows"]
    names = [r["optimizer"] for r in rows]
    target = summary.get("target")
    target = None if target is None else _num(target)

    evals = {}
    for name in names:
        recs = [r for r in read_jsonl(run_dir / "metrics" / f"{name}.jsonl") if r.get("kind") == "eval"]
        evals[name] = [(int(r["step"]), _num(r["val_loss"]), _num(r["wall"])) for r in recs]
    fig = loss_curves(evals, target, run_dir / "figures" / "val_loss.png")

    header = [
        "optimizer",
        "lr",
        "lr source",
        "final val",
        "best val",
        "steps to target",
        "x reference",
        "s to target",
        "x reference (time)",
        "wall s",
        "CPU s",
        "ms/step",
        "state MB",
        "peak MB",
        "status",
    ]
    table = [
        [
            r["optimizer"],
            _num(r["lr"]),
            r["lr_source"],
            _num(r["final_val"]),
            _num(r["best_val"]),
            r["steps_to_target"] if r["steps_to_target"] is not None else "-",
            _num(r["ratio_to_reference"]) if r["ratio_to_reference"] is not None else "-",
            _num(r["time_to_target_s"]) if r.get("time_to_target_s") is not None else "-",
            _num(r["time_ratio_to_reference"]) if r.get("time_ratio_to_reference") is not None else "-",
            _num(r["wall_s"]),
            _num(r.get("cpu_s")),
            _num(r["ms_per_step"]),
            _num(r["state_mb"]),
            _num(r["peak_mb"]),
            "ok" if r["diverged_at"] is None else f"diverged at step {r['diverged_at']}: {r['diverged_reason']}",
        ]
        for r in rows
    ]
    labels = config.get("optimizer_labels", {})
    tgt = "none: the reference diverged" if target is None else f"{target:.4f}"
    sections = [
        Section(
            "Results",
            text=[
                f"Task {cfg['task']} (size {cfg['size']}), {cfg['steps']} steps, seed {cfg['seed']}, validation every "
                f"{cfg['eval_every']} steps, lr schedule: warmup {cfg['warmup']:.0%}, linear cooldown over the last "
                f"{cfg['cooldown']:.0%}; {cfg.get('threads')} CPU thread(s).",
                f"Target: the reference's ({summary.get('reference')}; AdamW when it ran) final validation loss {tgt}. "
                "Steps to target are the first evaluation at or below it (resolution: the evaluation interval).",
                f"peak MB: {rows[0]['peak_kind'] if rows else ''}; state MB: bytes of optimizer state tensors.",
            ],
            tables=[(header, table), (["optimizer", "what it is"], [[n, labels.get(n, "")] for n in names])],
        ),
        Section(
            "Validation loss",
            text=[
                "Left: against training step (same data order for every optimizer). "
                "Right: against wall time (training plus evaluation)."
            ],
            figures=[str(fig)],
        ),
    ]
    sections += _diagnostics_sections(run_dir, names)
    sections += knob_sections(run_dir, names)  # the time choosers' knob per layer over time
    routing = run_dir / "routing.txt"
    if routing.exists():
        sections.append(
            Section(
                "Routing of parameters (steepest.describe)",
                text=[
                    "Matrix-geometry optimizers apply their norm to the parameters marked below; the rest (embeddings, "
                    "the output head, biases and norm gains) are trained by AdamW with AdamW's tuned learning rate. "
                    "torch.optim.Muon takes 2-D matrices only (conv kernels go to its AdamW)."
                ],
                preformatted=routing.read_text(encoding="utf-8"),
            )
        )
    sections.append(
        Section(
            "Task and environment",
            tables=[
                (["key", "value"], [[k, str(v)] for k, v in config.get("task_info", {}).items()]),
                (["key", "value"], [[k, str(v)] for k, v in env.items()]),
            ],
        )
    )
    return write_report(
        run_dir / "report.html", f"steepest compare: {cfg['task']}", sections, subtitle=f"run directory {run_dir}"
    )
