"""Steps each optimizer needs to reach AdamW's final validation loss on ``charlm`` (default size).

Runs ``steepest.compare("charlm")`` with the shipped tuned learning rates (``src/steepest/app/tuned.json``),
evaluating every 10 steps (evaluation does not change training, so the trajectories are those of the
default run; only the resolution of "steps to target" is finer), then checks the goals of issue 5:

* steepest's Muon needs <= 0.75x AdamW's steps;
* steepest's Muon needs no more steps than torch.optim.Muon;
* the adaptive optimizer needs no more steps than the best fixed geometry (muon, specgd, signum,
  schatten), ties broken by final validation loss.

Prints a table and writes ``benchmarks/results/train.json``. Usage::

    .venv/bin/python benchmarks/train.py                 # the recorded run (~10 min on 2 idle cores)
    .venv/bin/python benchmarks/train.py --quick         # smoke test, seconds
    .venv/bin/python benchmarks/train.py --resume --run-dir runs/bench-train   # continue an interrupted run
"""

from __future__ import annotations

import argparse
import json
import math
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
    verdicts = goals(rows)
    print()
    print(f"{'optimizer':<11}{'steps to AdamW final':>22}{'ratio':>8}{'final val':>11}{'CPU s':>8}{'wall s':>8}")
    for r in res.rows:
        s = "-" if r["steps_to_target"] is None else str(r["steps_to_target"])
        q = "-" if r["ratio_to_reference"] is None else f"{r['ratio_to_reference']:.2f}"
        print(f"{r['optimizer']:<11}{s:>22}{q:>8}{r['final_val']:>11.4f}{r['cpu_s']:>8.1f}{r['wall_s']:>8.1f}")
    for g in verdicts:
        print(f"goal: {g['goal']}: {g['verdict']} ({g['value']})")
    if not args.quick:
        atomic_write_json(args.out, {
            "benchmark": "benchmarks/train.py", "command": "python benchmarks/train.py " + " ".join(argv or sys.argv[1:]),
            "task": "charlm/default", "target": res.target, "eval_every": args.eval_every,
            "steepest_adaptive_available": hasattr(steepest, "Adaptive"), "rows": res.rows, "goals": verdicts,
            "run_dir": str(run_dir), "environment": environment()})
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
