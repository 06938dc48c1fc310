"""Steps each optimizer needs to reach AdamW's final validation loss on ``charlm`` (default size).

Runs ``steepest.compare("charlm")`` with the shipped tuned learning rates (``src/steepest/app/tuned.json``),
evaluating every 10 steps (evaluation does not change training, so the trajectories are those of the
default run; only the resolution of "steps to target" is finer), then checks the goals of issue 5:

* steepest's Muon needs <= 0.75x AdamW's steps;
* steepest's Muon needs no more steps than torch.optim.Muon;
* the adaptive optimizer needs no more steps than the best fixed geometry (muon, specgd, signum,
  schatten), ties broken by final validation loss;
* (issue 12) steepest's Muon reaches AdamW's final loss in <= 0.6x AdamW's time: the table gives CPU
  and wall seconds to the target beside the steps (:func:`time_to_target`). Under ``STEEPEST_BF16=0``
  the Newton-Schulz dtype of the default Muon is forced to float32 (a CPU without native bf16 simulated).

Prints a table and writes ``benchmarks/results/train.json``. Usage::

    .venv/bin/python benchmarks/train.py                 # the recorded run (~10 min on 2 idle cores)
    .venv/bin/python benchmarks/train.py --quick         # smoke test, seconds
    .venv/bin/python benchmarks/train.py --resume --run-dir runs/bench-train   # continue an interrupted run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import steepest  # noqa: E402
from steepest.app.compare.job import compare  # noqa: E402
from steepest.app.compare.optimizers import default_optimizers  # noqa: E402
from steepest.app.runs import atomic_write_json, environment  # noqa: E402

FIXED = ("muon", "specgd", "signum", "schatten")


def time_to_target(run_dir: Path, rows: list[dict], target: float | None) -> None:
    """Add wall and CPU seconds to AdamW's final validation loss to each row (None if never reached).

    Wall: the cumulative training + evaluation wall time (``wall`` of the run's eval records, runner.py)
    at the first evaluation whose loss is <= target. CPU: the run's total CPU seconds times the fraction
    of its steps done by then (CPU time per step is nearly constant, and unlike wall time it does not
    depend on how loaded the shared machine was at that moment; the eval records hold no CPU time).
    The reference (AdamW) reaches its own final loss at its last step, so its times are its totals.
    """
    for r in rows:
        r["wall_to_target_s"] = r["cpu_to_target_s"] = None
        s = r["steps_to_target"]
        if target is None or s is None:
            continue
        recs = [json.loads(line) for line in (run_dir / "metrics" / f"{r['optimizer']}.jsonl").read_text().splitlines()
                if line.strip()]
        evals = [x for x in recs if x.get("kind") == "eval" and x.get("step") == s]
        r["wall_to_target_s"] = float(evals[-1]["wall"]) if evals else None
        if r.get("cpu_s") is not None and r.get("steps_done"):
            r["cpu_to_target_s"] = float(r["cpu_s"]) * s / int(r["steps_done"])
    ref = next((r for r in rows if r["optimizer"] == "adamw"), None)
    for r in rows:
        for k in ("wall", "cpu"):
            a, b = r[f"{k}_to_target_s"], ref and ref[f"{k}_to_target_s"]
            r[f"{k}_to_target_x_adamw"] = a / b if (a is not None and b) else None


def goals(rows: dict[str, dict]) -> list[dict]:
    """The issue's three goals as verdicts ("holds", "fails", "n/a") with the numbers behind them."""
    def steps(n):
        r = rows.get(n)
        return None if r is None else r["steps_to_target"]

    out = []
    a, m, t = steps("adamw"), steps("muon"), steps("torch-muon")
    ratio = m / a if (a and m is not None) else None
    out.append(dict(goal="steepest Muon <= 0.75x AdamW's steps", value=ratio,
                    verdict="n/a" if a is None else ("holds" if ratio is not None and ratio <= 0.75 else "fails")))
    out.append(dict(goal="steepest Muon no worse than torch.optim.Muon", value=[m, t],
                    verdict="n/a" if "torch-muon" not in rows else
                    ("holds" if m is not None and (t is None or m <= t) else "fails")))
    fixed = [n for n in FIXED if n in rows]
    if "adaptive" in rows and fixed:
        def key(n):
            s = steps(n)
            return (s if s is not None else math.inf, rows[n]["final_val"] if math.isfinite(rows[n]["final_val"]) else math.inf)
        best = min(fixed, key=key)
        ok = key("adaptive") <= key(best)
        out.append(dict(goal="adaptive no worse than the best fixed geometry", value=[steps("adaptive"), best, steps(best)],
                        verdict="holds" if ok else "fails"))
    else:
        why = "not run" if hasattr(steepest, "Adaptive") else "steepest.Adaptive not available"
        out.append(dict(goal="adaptive no worse than the best fixed geometry", value=None, verdict=f"n/a ({why})"))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny model and few steps (smoke test)")
    ap.add_argument("--run-dir", default=None, help="run directory (default runs/bench-train[-quick])")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--optimizers", help="comma-separated subset (to build a run up piece by piece with --resume)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train.json"))
    args = ap.parse_args(argv)
    size = "quick" if args.quick else "default"
    run_dir = Path(args.run_dir or f"runs/bench-train{'-quick' if args.quick else ''}")
    names = tuple(args.optimizers.split(",")) if args.optimizers else default_optimizers()
    # Diagnostics at the default run's interval (25 steps) so the trajectories and costs are the default run's.
    res = compare("charlm", names, size=size, eval_every=2 if args.quick else args.eval_every, run_dir=run_dir,
                  resume=args.resume, threads=args.threads, monitor_every=None if args.quick else 25)
    rows = {r["optimizer"]: r for r in res.rows}
    time_to_target(run_dir, res.rows, res.target)
    verdicts = goals(rows)
    m = rows.get("muon", {})
    x = m.get("cpu_to_target_x_adamw")
    verdicts.append(dict(goal="steepest Muon's time to AdamW's final loss <= 0.6x AdamW's (CPU time)", value=x,
                         verdict="n/a" if x is None else ("holds" if x <= 0.6 else "fails")))

    def f(v, spec):
        return "-" if v is None else format(v, spec)

    print()
    print(f"{'optimizer':<11}{'steps to AdamW final':>22}{'ratio':>8}{'CPU s to it':>13}{'x AdamW':>9}"
          f"{'wall s to it':>14}{'x AdamW':>9}{'final val':>11}{'CPU s':>8}{'wall s':>8}")
    for r in res.rows:
        print(f"{r['optimizer']:<11}{f(r['steps_to_target'], 'd'):>22}{f(r['ratio_to_reference'], '.2f'):>8}"
              f"{f(r['cpu_to_target_s'], '.1f'):>13}{f(r['cpu_to_target_x_adamw'], '.2f'):>9}"
              f"{f(r['wall_to_target_s'], '.1f'):>14}{f(r['wall_to_target_x_adamw'], '.2f'):>9}"
              f"{r['final_val']:>11.4f}{r['cpu_s']:>8.1f}{r['wall_s']:>8.1f}")
    for g in verdicts:
        print(f"goal: {g['goal']}: {g['verdict']} ({g['value']})")
    if not args.quick:
        atomic_write_json(args.out, {
            "benchmark": "benchmarks/train.py", "command": "python benchmarks/train.py " + " ".join(argv or sys.argv[1:]),
            "task": "charlm/default", "target": res.target, "eval_every": args.eval_every,
            "steepest_adaptive_available": hasattr(steepest, "Adaptive"), "rows": res.rows, "goals": verdicts,
            "run_dir": str(run_dir), "environment": environment(), "STEEPEST_BF16": os.environ.get("STEEPEST_BF16"),
            "load_average_end": list(os.getloadavg())})
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
