"""The table of ``steepest compare``: steps to the reference's final validation loss, and its plain-text form.

The rows come from the per-optimizer results of :func:`steepest.app.compare.job.compare` (``summarize``);
``format_table`` is what the command prints and writes to ``table.txt``.

Example:
    >>> steps_to_reach([(0, 3.0), (10, 2.1), (20, 1.9)], 2.0)
    20
"""

from __future__ import annotations

import math
from typing import Any


def steps_to_reach(evals: list[tuple[int, float]], target: float | None) -> int | None:
    """First evaluated step whose validation loss is <= ``target`` (None if never)."""
    if target is None:
        return None
    return next((s for s, v in evals if math.isfinite(v) and v <= target), None)


def summarize(results: dict[str, dict], names) -> tuple[list[dict], float | None]:
    """Table rows from per-optimizer results; the target is the reference optimizer's final val loss.

    The reference is ``adamw`` when it ran and did not diverge, else the first optimizer.
    """
    ref = "adamw" if "adamw" in results else names[0]
    r0 = results[ref]
    target = r0["final_val"] if r0["diverged_at"] is None else None
    ref_steps = steps_to_reach(r0["evals"], target)
    ref_time = ref_steps * r0["ms_per_step"] / 1e3 if ref_steps is not None and r0.get("ms_per_step") else None
    rows = []
    for name in names:
        r = results[name]
        s = steps_to_reach(r["evals"], target)
        # training time to the target: steps to it x the run's mean training step time (evaluations excluded)
        t = s * r["ms_per_step"] / 1e3 if s is not None and r.get("ms_per_step") else None
        rows.append(
            dict(
                optimizer=name,
                label=r["label"],
                lr=r["lr"],
                lr_source=r["lr_source"],
                final_val=r["final_val"],
                best_val=r["best_val"],
                steps_to_target=s,
                ratio_to_reference=(s / ref_steps) if (s is not None and ref_steps) else None,
                time_to_target_s=t,
                time_ratio_to_reference=(t / ref_time) if (t is not None and ref_time) else None,
                wall_s=r["wall_s"],
                cpu_s=r.get("cpu_s"),
                ms_per_step=r["ms_per_step"],
                state_mb=r["state_mb"],
                peak_mb=r["peak_mb"],
                peak_kind=r["peak_kind"],
                steps_done=r["steps_done"],
                diverged_at=r["diverged_at"],
                diverged_reason=r["diverged_reason"],
            )
        )
    return rows, target


def _fmt(v: Any, spec: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return format(v, spec)


TABLE_COLUMNS = (
    "optimizer",
    "lr",
    "final val",
    "best val",
    "steps to target",
    "x ref",
    "s to target",
    "x ref s",
    "wall s",
    "CPU s",
    "ms/step",
    "state MB",
    "peak MB",
    "status",
)


def format_table(rows: list[dict], target: float | None, reference: str) -> str:
    """The plain-text table printed at the end of ``steepest compare`` (columns: :data:`TABLE_COLUMNS`)."""
    body = []
    for r in rows:
        status = "ok" if r["diverged_at"] is None else f"diverged at step {r['diverged_at']}"
        body.append(
            (
                r["optimizer"],
                _fmt(r["lr"], ".3g"),
                _fmt(r["final_val"], ".4f"),
                _fmt(r["best_val"], ".4f"),
                _fmt(r["steps_to_target"], "d"),
                _fmt(r["ratio_to_reference"], ".2f"),
                _fmt(r.get("time_to_target_s"), ".1f"),
                _fmt(r.get("time_ratio_to_reference"), ".2f"),
                _fmt(r["wall_s"], ".1f"),
                _fmt(r["cpu_s"], ".1f"),
                _fmt(r["ms_per_step"], ".1f"),
                _fmt(r["state_mb"], ".2f"),
                _fmt(r["peak_mb"], ".0f"),
                status,
            )
        )
    widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(TABLE_COLUMNS)]
    lines = ["  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(TABLE_COLUMNS, widths)))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in body]
    ref_row = next(
        (r for r in rows if r["optimizer"] == ("adamw" if any(x["optimizer"] == "adamw" for x in rows) else reference)),
        rows[0],
    )
    hit = [r for r in rows if r["diverged_at"] is None and r["steps_to_target"] is not None]
    reached = {r["steps_to_target"] for r in hit}
    if len(hit) > 1 and len(reached) == 1:
        who = "every optimizer" if len(hit) == len(rows) else f"the {len(hit)} optimizers that reached it"
        lines.append(
            f"cannot rank: {who} reached the target at the same evaluation (step {reached.pop()}), "
            "so steps to target do not tell them apart; train longer or evaluate more often "
            "(--steps, --eval-every; --quick is a smoke test)"
        )
    tgt = "none (reference diverged)" if target is None else f"{target:.4f}"
    peak = rows[0]["peak_kind"] if rows else ""
    lines.append(
        f"target = {ref_row['optimizer']}'s final validation loss {tgt}; steps counted at evaluations. "
        f"s to target: steps to target x mean training step time. peak MB: {peak}. state MB: optimizer state tensors. CPU s: process CPU time (what idle cores would take)."
    )
    return "\n".join(lines)


__all__ = ["steps_to_reach", "summarize", "format_table", "TABLE_COLUMNS"]
