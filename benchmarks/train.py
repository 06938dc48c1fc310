"""Steps and time each optimizer needs to reach AdamW's final validation loss, over seeds, with the oracle bound.

For each seed, runs ``steepest.app.compare.compare(task, ...)`` with the shipped tuned learning rates
(``src/steepest/app/tuned.json``; ``adaptive-oracle`` takes ``adaptive``'s, since it is the same optimizer
with measured choices), evaluating every ``--eval-every`` steps. The target of a seed is that seed's AdamW
final validation loss. Per optimizer and seed: steps to the target (first evaluation at or below it, and a
linear interpolation between the two evaluations around the crossing, for a finer resolution), CPU and wall
seconds to it (:func:`time_to_target`), final loss. Over seeds: mean, standard deviation, min-max.

Verdicts, with the thresholds of issue 11 written here before the runs:

* Adaptive (``adaptive``, ``adaptive-sign``) needs <= 0.9x the steps of the best fixed geometry (``FIXED``: muon, specgd, signum, schatten,
  frobenius; best = smallest mean steps, a seed that never reaches the target counts as ``steps + eval_every``
  beyond the run), by mean over seeds, and no more CPU seconds to the target;
* the oracle Adaptive's headroom: 1 - oracle steps / best fixed steps; below 10% the task leaves little room
  for per-layer choice and the note says so;
* (charlm; issues 5 and 12) steepest's Muon <= 0.75x AdamW's steps, and its CPU time to the target <= 0.6x
  AdamW's. Under ``STEEPEST_BF16=0`` the Newton-Schulz dtype of the default Muon is float32 (a CPU without
  native bf16 simulated).

Issue 21, written here before its runs (the side-by-side table; thresholds fixed now, not after):

* ``schedule-oracle-h<H>`` entries (H in 1, 25, 100): the schedule oracle
  (:mod:`steepest.app.compare.schedule_oracle`): every H steps it branches from a full snapshot (weights,
  optimizer state, RNG; the data position is the step) into each candidate geometry of ``--oracle-candidates``
  (default ``specgd,schatten,frobenius``: spectral, Schatten-8 and Frobenius, each at its own tuned lr), trains
  H steps on the training stream, scores each branch by the **validation loss at the branch end**, keeps the
  best and repeats. Its steps and CPU time to the target are those of the kept path; ``oracle CPU`` is the
  whole search (all branches and scoring evaluations), and its decision overhead = oracle CPU / path CPU - 1;
* ``schedule-oracle-h<H>-a<A>``: the same with annealed scoring (each branch scored after A more steps with its
  lr decayed linearly to 0; the kept path continues from the branch end), the "upper bound that is one" for a
  run long enough that a constant-lr branch end misleads the choice (the longer task's H = 100 oracle);
* headroom per H = 1 - oracle steps / best fixed steps (best fixed: the smallest mean interpolated steps among
  ``FIXED``); under 10% the note says so with the numbers: the task leaves little room for choosing the
  geometry over time, at that horizon;
* every chooser (``CHOOSERS``: Adaptive, and the schedule / phase-switch / 2605.19781 entries where present)
  needs <= 0.9x the best fixed geometry's steps on at least two tasks (judged across the tasks' JSONs), no more
  CPU seconds to the target than it, and a decision overhead <= 3% (its CPU seconds per step over SpecGD's,
  the geometry it runs by default, minus 1; a bound: it also counts a cheaper or dearer dualizer).

The per-layer monitor is off (``monitor_every=0``): the times are the optimizers' own (Adaptive's
activation hooks and decisions included). Prints a table and writes ``benchmarks/results/train_<task>.json``.
Usage::

    .venv/bin/python benchmarks/train.py --task charlm --seeds 0,1,2        # recorded run (~30 min, 2 cores)
    .venv/bin/python benchmarks/train.py --task mnist-cnn --seeds 0,1,2     # ~8 min
    .venv/bin/python benchmarks/train.py --task charlm --task-opt routing=matrix \
        --optimizers adamw,muon,specgd,signum,adaptive-sign --lr ...        # every matrix in the geometry
    .venv/bin/python benchmarks/train.py --quick                           # smoke test, seconds
    .venv/bin/python benchmarks/train.py --task charlm --resume             # continue an interrupted run
    .venv/bin/python benchmarks/train.py --task charlm --seeds 0 \
        --optimizers adamw,schedule-oracle-h25 --resume                   # the schedule oracle at H = 25
    .venv/bin/python benchmarks/train.py --task charlm --optimizers table21   # issue 21's table (TABLE_21)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from steepest.app.commands.compare import parse_pairs  # noqa: E402
from steepest.app.compare.job import compare, resolve_lrs, steps_to_reach  # noqa: E402
from steepest.app.compare.schedule_oracle import Candidate, schedule_oracle  # noqa: E402
from steepest.app.runs import atomic_write_json, environment  # noqa: E402
from steepest.app.tasks import get_task  # noqa: E402

FIXED = ("muon", "specgd", "signum", "schatten", "frobenius", "power")
ADAPTIVE = ("adaptive", "adaptive-sign")
#: The choosers judged by issue 21's goal (those present in a run): Adaptive (DD per layer), the DynMuon-style
#: schedule of the knob, the 2605.19781 criterion, the measured phase switch.
CHOOSERS = ("adaptive", "adaptive-sign", "knob-schedule", "schatten-choice", "phase-switch")
#: Issue 21's side-by-side table (``--optimizers`` of its recorded runs).
TABLE_21 = (
    "adamw,muon,specgd,schatten,frobenius,power,adaptive,knob-schedule,schatten-choice,phase-switch,"
    "schedule-oracle-h1,schedule-oracle-h25,schedule-oracle-h100"
)
#: ``schedule-oracle-h<H>``: the schedule oracle at horizon H (run by this script, not by compare);
#: ``schedule-oracle-h<H>-a<A>``: with annealed scoring over A steps (each branch scored after its lr decays
#: linearly to 0 over A more steps; :func:`steepest.app.compare.schedule_oracle.schedule_oracle`'s ``anneal``).
ORACLE = re.compile(r"schedule-oracle-h([1-9][0-9]*)(?:-a([1-9][0-9]*))?$")
ORACLE_CANDIDATES = "specgd,schatten,frobenius"
DEFAULT = ("adamw", "muon", "specgd", "signum", "schatten", "frobenius", "adaptive", "adaptive-oracle")


def _evals(run_dir: Path, name: str) -> list[dict]:
    path = run_dir / "metrics" / f"{name}.jsonl"
    return [r for r in (json.loads(x) for x in path.read_text().splitlines() if x.strip()) if r.get("kind") == "eval"]


def interpolated_steps(evals: list[dict], target: float) -> float | None:
    """The step where the validation curve, linearly interpolated between evaluations, first reaches
    ``target`` (None if it never does). Example: evals at steps 10, 20 with losses 3.0, 1.0 and target 2.0
    give 15.0."""
    prev = None
    for r in evals:
        s, v = int(r["step"]), float(r["val_loss"])
        if math.isfinite(v) and v <= target:
            if prev is None or not (prev[1] > v):
                return float(s)
            return prev[0] + (s - prev[0]) * (prev[1] - target) / (prev[1] - v)
        prev = (s, v) if math.isfinite(v) else None
    return None


def time_to_target(run_dir: Path, rows: list[dict], target: float | None) -> None:
    """Add wall and CPU seconds to the target to each row (None if never reached).

    Wall: the cumulative training + evaluation wall time (``wall`` of the run's eval records) at the first
    evaluation whose loss is <= target. CPU: the run's total CPU seconds times the fraction of its steps
    done by then (CPU time per step is nearly constant, and unlike wall time it does not depend on how
    loaded the shared machine was at that moment). The reference reaches its own final loss at its last step.
    """
    for r in rows:
        r["wall_to_target_s"] = r["cpu_to_target_s"] = r["steps_interp"] = None
        s = r["steps_to_target"]
        if target is None or s is None:
            continue
        evals = _evals(run_dir, r["optimizer"])
        r["steps_interp"] = interpolated_steps(evals, target)
        at = [x for x in evals if x.get("step") == s]
        r["wall_to_target_s"] = float(at[-1]["wall"]) if at else None
        if r.get("cpu_s") is not None and r.get("steps_done"):
            r["cpu_to_target_s"] = float(r["cpu_s"]) * s / int(r["steps_done"])


def run_oracle(
    task_name: str,
    size: str,
    task_options: dict,
    run_dir: Path,
    name: str,
    candidates: list[Candidate],
    *,
    seed: int,
    aux_lr: float,
    eval_every: int,
    resume: bool,
) -> dict:
    """Run the schedule oracle entry ``name`` (``schedule-oracle-h<H>``) for one seed, or read its finished result
    (``results/<name>.json``) back when resuming. Writes ``metrics/<name>.jsonl`` (eval records as compare's, with
    ``wall`` = the kept path's CPU seconds so far, and one ``choice`` record per segment) and returns a row with
    compare's keys (``steps_to_target`` is filled in by the caller) plus ``cpu_total_s`` and ``overhead``."""
    m = ORACLE.match(name)
    if m is None:
        raise ValueError(
            f"{name!r} is not a schedule oracle entry (schedule-oracle-h<H>[-a<A>], e.g. schedule-oracle-h25 or "
            "schedule-oracle-h100-a100)"
        )
    result_path = run_dir / "results" / f"{name}.json"
    if resume and result_path.exists():
        done = json.loads(result_path.read_text())
        if done.get("candidates") == [dataclasses.asdict(c) for c in candidates]:
            return done
    task = get_task(task_name, size=size, **task_options)
    horizon, anneal = int(m.group(1)), int(m.group(2) or 0)
    t0 = time.perf_counter()
    r = schedule_oracle(
        task, candidates, horizon=horizon, aux_lr=aux_lr, seed=seed, eval_every=eval_every, anneal=anneal
    )
    # cumulative kept-path CPU at each evaluation (the path's share of each segment, spread over its evals)
    lines = []
    for step, val in r.evals:
        lines.append(
            {"kind": "eval", "step": step, "val_loss": val, "wall": r.cpu_path_s * step / max(r.steps_done, 1)}
        )
    for c in r.choices:
        lines.append({"kind": "choice", "step": c["start"], **c})
    metrics = run_dir / "metrics" / f"{name}.jsonl"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text("".join(json.dumps(x) + "\n" for x in lines))
    row = dict(
        optimizer=name,
        label=f"schedule oracle, H = {horizon}{f', annealed over {anneal}' if anneal else ''}, candidates "
        f"{', '.join(f'{c.key} lr {c.lr:g}' for c in candidates)}",
        horizon=horizon,
        anneal=anneal,
        candidates=[dataclasses.asdict(c) for c in candidates],
        lr=None,
        final_val=r.final_val,
        steps_done=r.steps_done,
        diverged_at=r.diverged_at,
        cpu_s=r.cpu_path_s,
        cpu_total_s=r.cpu_total_s,
        overhead=r.overhead,
        wall_s=time.perf_counter() - t0,
        winners=[c["winner"] for c in r.choices],
        evals=r.evals,
    )
    result_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(result_path, row)
    return row


def _stats(values: list[float]) -> dict:
    return dict(
        mean=statistics.fmean(values),
        std=statistics.stdev(values) if len(values) > 1 else 0.0,
        min=min(values),
        max=max(values),
        n=len(values),
    )


def aggregate(per_seed: dict[int, dict[str, dict]], steps: int, eval_every: int) -> dict[str, dict]:
    """Per optimizer over seeds: steps (a seed that never reaches the target counts as ``steps + eval_every``,
    and ``never`` counts those seeds), interpolated steps, CPU and wall seconds to the target (over the seeds
    that reach it), final validation loss."""
    names = list(dict.fromkeys(n for rows in per_seed.values() for n in rows))
    out = {}
    for n in names:
        rows = [rows[n] for rows in per_seed.values() if n in rows]
        miss = steps + eval_every
        st = [r["steps_to_target"] if r["steps_to_target"] is not None else miss for r in rows]
        si = [r["steps_interp"] if r.get("steps_interp") is not None else miss for r in rows]
        agg = dict(
            steps=_stats(st),
            steps_interp=_stats(si),
            never=sum(r["steps_to_target"] is None for r in rows),
            final_val=_stats([r["final_val"] if math.isfinite(r["final_val"]) else math.inf for r in rows]),
        )
        for k in ("cpu_to_target_s", "wall_to_target_s", "cpu_s", "cpu_total_s", "overhead"):
            vals = [r[k] for r in rows if r.get(k) is not None]
            agg[k] = _stats(vals) if vals else None
        out[n] = agg
    return out


def verdicts(agg: dict[str, dict], task: str) -> list[dict]:
    """The thresholds of the module docstring applied to the aggregate."""
    out = []
    fixed = [n for n in FIXED if n in agg]

    def key(n):
        return (agg[n]["steps_interp"]["mean"], agg[n]["final_val"]["mean"])

    best = min(fixed, key=key) if fixed else None
    for ad in (n for n in ADAPTIVE if n in agg and best):
        a, b = agg[ad]["steps_interp"]["mean"], agg[best]["steps_interp"]["mean"]
        out.append(
            dict(
                goal=f"{ad} steps <= 0.9x the best fixed geometry's ({best})",
                value=a / b,
                verdict="holds" if a / b <= 0.9 else "fails",
            )
        )
        ca, cb = agg[ad]["cpu_to_target_s"], agg[best]["cpu_to_target_s"]
        if ca and cb:
            out.append(
                dict(
                    goal=f"{ad} CPU s to target <= the best fixed geometry's ({best})",
                    value=ca["mean"] / cb["mean"],
                    verdict="holds" if ca["mean"] <= cb["mean"] else "fails",
                )
            )
    if best and "adaptive-oracle" in agg:
        o, b = agg["adaptive-oracle"]["steps_interp"]["mean"], agg[best]["steps_interp"]["mean"]
        out.append(
            dict(
                goal=f"oracle headroom 1 - oracle/best fixed ({best}) >= 10%",
                value=1 - o / b,
                verdict="holds" if 1 - o / b >= 0.10 else "fails: little room for per-layer choice",
            )
        )
    if task == "charlm" and "adamw" in agg and "muon" in agg:
        m, a = agg["muon"]["steps_interp"]["mean"], agg["adamw"]["steps_interp"]["mean"]
        out.append(
            dict(
                goal="steepest Muon <= 0.75x AdamW's steps", value=m / a, verdict="holds" if m / a <= 0.75 else "fails"
            )
        )
        cm, ca = agg["muon"]["cpu_to_target_s"], agg["adamw"]["cpu_to_target_s"]
        if cm and ca:
            x = cm["mean"] / ca["mean"]
            out.append(
                dict(
                    goal="steepest Muon's CPU time to AdamW's final loss <= 0.6x AdamW's",
                    value=x,
                    verdict="holds" if x <= 0.6 else "fails",
                )
            )
    return out


def verdicts_21(agg: dict[str, dict]) -> list[dict]:
    """Issue 21's per-task parts (module docstring): the schedule oracle's headroom per H, and per chooser its
    steps and CPU to the target against the best fixed geometry and its decision overhead vs SpecGD."""
    out: list[dict] = []
    fixed = [n for n in FIXED if n in agg]
    if not fixed:
        return out
    best = min(fixed, key=lambda n: (agg[n]["steps_interp"]["mean"], agg[n]["final_val"]["mean"]))
    b = agg[best]["steps_interp"]["mean"]
    for n in sorted((n for n in agg if ORACLE.match(n)), key=lambda n: [int(g or 0) for g in ORACLE.match(n).groups()]):
        h = 1 - agg[n]["steps_interp"]["mean"] / b
        out.append(
            dict(
                goal=f"{n} headroom 1 - oracle/best fixed ({best}) >= 10%",
                value=h,
                verdict="holds" if h >= 0.10 else "fails: under 10%, little room for choosing the geometry over time",
            )
        )
    for n in (n for n in CHOOSERS if n in agg and n != best):
        x = agg[n]["steps_interp"]["mean"] / b
        out.append(dict(goal=f"{n} steps <= 0.9x {best}'s", value=x, verdict="holds" if x <= 0.9 else "fails"))
        ca, cb = agg[n]["cpu_to_target_s"], agg[best]["cpu_to_target_s"]
        if ca and cb:
            y = ca["mean"] / cb["mean"]
            out.append(dict(goal=f"{n} CPU s to target <= {best}'s", value=y, verdict="holds" if y <= 1 else "fails"))
        if "specgd" in agg and agg[n]["cpu_s"] and agg["specgd"]["cpu_s"]:
            o = agg[n]["cpu_s"]["mean"] / agg["specgd"]["cpu_s"]["mean"] - 1
            out.append(
                dict(
                    goal=f"{n} decision overhead (CPU s per run / SpecGD's - 1) <= 3%",
                    value=o,
                    verdict="holds" if o <= 0.03 else "fails",
                )
            )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="charlm", help="charlm (default) or mnist-cnn (any compare task works)")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    ap.add_argument("--quick", action="store_true", help="tiny model and few steps (smoke test)")
    ap.add_argument("--run-dir", default=None, help="run directory (default runs/bench-train-<task>[-quick])")
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep finished runs of an interrupted benchmark (the default whenever a seed's run directory holds a "
        "run; a fresh directory starts a new one)",
    )
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--optimizers",
        help=f"comma-separated subset (default {','.join(DEFAULT)}), or table21 (issue 21's table: {TABLE_21})",
    )
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/train_<task>.json)")
    ap.add_argument(
        "--task-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="task option (e.g. routing=matrix for charlm); repeatable",
    )
    ap.add_argument("--lr", action="append", default=[], metavar="NAME=LR", help="learning rate override; repeatable")
    ap.add_argument(
        "--oracle-candidates",
        default=ORACLE_CANDIDATES,
        help=f"compare entries the schedule-oracle-h<H> entries choose among, each at its tuned (or --lr) lr "
        f"(default {ORACLE_CANDIDATES})",
    )
    args = ap.parse_args(argv)
    task_options = parse_pairs(args.task_opt, "--task-opt", numeric=False)  # as steepest compare parses them
    given = parse_pairs(args.lr, "--lr")
    size = "quick" if args.quick else "default"
    seeds = [int(s) for s in args.seeds.split(",")]
    names = (
        tuple((TABLE_21 if args.optimizers == "table21" else args.optimizers).split(","))
        if args.optimizers
        else DEFAULT
    )
    if "adamw" not in names:
        ap.error("the target is AdamW's final loss: include adamw in --optimizers")
    typos = [n for n in names if n.startswith("schedule-oracle") and not ORACLE.match(n)]
    if typos:
        ap.error(
            f"{', '.join(typos)}: a schedule oracle entry is schedule-oracle-h<H> or schedule-oracle-h<H>-a<A> "
            "(H, A >= 1 steps), e.g. schedule-oracle-h25 or schedule-oracle-h100-a100"
        )
    tag = "".join(f"-{k}-{v}" for k, v in task_options.items())
    base = Path(args.run_dir or f"runs/bench-train-{args.task}{tag}{'-quick' if args.quick else ''}")
    lrs = dict(given)
    if "adaptive-oracle" in names and "adaptive-oracle" not in lrs:  # adaptive with measured choices: its lr
        lrs["adaptive-oracle"] = given.get("adaptive", resolve_lrs(args.task, size, ["adaptive"])["adaptive"][0])
    oracles = [n for n in names if ORACLE.match(n)]
    entries = [n for n in names if n not in oracles]
    cand_names = args.oracle_candidates.split(",")
    table = resolve_lrs(args.task, size, cand_names, given)
    candidates = [Candidate(n, table[n][0]) for n in cand_names]
    eval_every = 2 if args.quick else args.eval_every
    per_seed, steps, target_by_seed = {}, None, {}
    for seed in seeds:
        run_dir = base / f"seed{seed}"
        res = compare(
            args.task,
            entries,
            size=size,
            seed=seed,
            lrs=lrs,
            eval_every=eval_every,
            run_dir=run_dir,
            task_options=task_options,
            resume=(run_dir / "config.json").exists(),  # a run there is continued; a fresh directory starts
            threads=args.threads,
            monitor_every=0,
            report=False,
            progress=not args.quick,
            log=None,
        )
        for n in oracles:
            row = run_oracle(
                args.task,
                size,
                task_options,
                run_dir,
                n,
                candidates,
                seed=seed,
                aux_lr=table["adamw"][0],
                eval_every=eval_every,
                resume=(run_dir / "config.json").exists(),  # a run there is continued; a fresh directory starts
            )
            row["steps_to_target"] = steps_to_reach([tuple(e) for e in row["evals"]], res.target)
            res.rows.append(row)
        time_to_target(run_dir, res.rows, res.target)
        per_seed[seed] = {r["optimizer"]: r for r in res.rows}
        target_by_seed[seed] = res.target
        steps = max(int(r["steps_done"]) for r in res.rows)
    agg = aggregate(per_seed, steps, eval_every)
    vs = verdicts(agg, args.task) + verdicts_21(agg)

    def f(st, spec=".0f"):
        return "-" if st is None else f"{format(st['mean'], spec)} ± {format(st['std'], spec)}"

    ref = agg["adamw"]
    print(
        f"\n{args.task} ({size}), seeds {seeds}, target = each seed's AdamW final validation loss "
        f"({', '.join(f'{t:.4f}' for t in target_by_seed.values() if t is not None)})"
    )
    print(
        f"{'optimizer':<22}{'steps (eval)':>14}{'steps (interp)':>16}{'x AdamW':>9}{'never':>7}"
        f"{'CPU s to target':>17}{'x AdamW':>9}{'final val':>18}{'CPU s':>13}{'oracle CPU s':>15}{'overhead':>10}"
    )
    for n, a in agg.items():
        x = a["steps_interp"]["mean"] / ref["steps_interp"]["mean"]
        c = a["cpu_to_target_s"]
        cx = None if (c is None or not ref["cpu_to_target_s"]) else c["mean"] / ref["cpu_to_target_s"]["mean"]
        print(
            f"{n:<22}{f(a['steps']):>14}{f(a['steps_interp'], '.1f'):>16}{x:>9.2f}{a['never']:>7}"
            f"{f(c, '.1f'):>17}{'-' if cx is None else format(cx, '.2f'):>9}{f(a['final_val'], '.4f'):>18}"
            f"{f(a['cpu_s'], '.1f'):>13}{f(a['cpu_total_s'], '.0f'):>15}"
            f"{'-' if not a['overhead'] else format(a['overhead']['mean'], '.2f'):>10}"
        )
    for g in vs:
        print(f"goal: {g['goal']}: {g['verdict']} ({g['value']:.3f})")
    if not args.quick:
        out = Path(args.out or ROOT / "benchmarks" / "results" / f"train_{args.task}{tag}.json")
        atomic_write_json(
            out,
            {
                "benchmark": "benchmarks/train.py",
                "command": "python benchmarks/train.py " + " ".join(argv or sys.argv[1:]),
                "task": f"{args.task}/{size}",
                "task_options": task_options,
                "seeds": seeds,
                "targets": target_by_seed,
                "eval_every": eval_every,
                "lrs_given": lrs,
                "oracle_candidates": [dataclasses.asdict(c) for c in candidates],
                "aggregate": agg,
                "goals": vs,
                "rows": {str(s): list(rows.values()) for s, rows in per_seed.items()},
                "run_dir": str(base),
                "environment": environment(),
                "STEEPEST_BF16": os.environ.get("STEEPEST_BF16"),
                "load_average_end": list(os.getloadavg()),
            },
        )
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
