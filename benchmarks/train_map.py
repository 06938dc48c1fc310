"""Issue 21's measured map: where choosing the geometry over time pays, judged across tasks.

Input: per task, one or more ``benchmarks/train.py`` JSONs (a table and, e.g., an annealed-oracle run of the
same task, seeds and targets). Per task the per-seed rows of its files are merged (the first file that has an
optimizer's row for a seed keeps it; the files must agree on every shared seed's target, AdamW's final
validation loss, to 1e-12 relative, or the steps would mean different things). Then, per task:

* the best fixed geometry: the smallest mean interpolated steps to the target among ``train.FIXED``, over the
  seeds every fixed entry ran (a seed that never reaches the target counts as ``steps + eval_every``, as in
  ``train.aggregate``);
* every chooser (``train.CHOOSERS``) and schedule oracle (``train.ORACLE``): its steps / the best fixed's,
  **paired per seed** (on the seeds both ran, so an oracle run on one seed is compared on that seed), with the
  mean and the min-max over seeds; headroom = 1 - that ratio;

and across tasks, the thresholds of issue 21 (fixed in train.py's docstring before the runs): a chooser needs
<= 0.9x the best fixed geometry's steps on at least two tasks; a task whose best oracle headroom is under 10%
leaves little room for choosing the geometry over time.

Prints a markdown table, writes JSON and a figure (each entry's paired ratio per task, with its seed range).

Usage::

    .venv/bin/python benchmarks/train_map.py \\
        --task "charlm 300=benchmarks/results/train21_charlm_table21_3seeds.json,benchmarks/results/train21_charlm_annealed_oracle_3seeds.json" \\
        --task "mnist-cnn=benchmarks/results/train21_mnist-cnn_table21_3seeds.json" \\
        --out benchmarks/results/train21_map.json --figure benchmarks/results/train21_map.png
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import train  # noqa: E402  (benchmarks/train.py: puts src/ on sys.path)
from steepest.app.runs import atomic_write_json, environment  # noqa: E402

GOAL_RATIO = 0.9  # a chooser's steps / the best fixed geometry's (issue 21, item 5)
GOAL_TASKS = 2  # ... on at least this many tasks
HEADROOM = 0.10  # an oracle headroom under this leaves little room (issue 21, item 5)


class MapError(ValueError):
    """The files of a task cannot be merged (another task, another evaluation interval, another target)."""


def merge(files: list[tuple[str, dict]]) -> tuple[dict, dict, int, int]:
    """The per-seed rows ``{seed: {optimizer: row}}`` of one task's files, its targets, steps and eval_every."""
    first_name, first = files[0]
    rows: dict[str, dict[str, dict]] = {}
    targets: dict[str, float] = {}
    for name, doc in files:
        for key in ("task", "task_options", "eval_every"):
            if doc.get(key) != first.get(key):
                raise MapError(f"{name} has {key}={doc.get(key)!r}, {first_name} has {first.get(key)!r}: not one task")
        for seed, t in doc["targets"].items():
            if seed in targets and not math.isclose(t, targets[seed], rel_tol=1e-12):
                raise MapError(
                    f"seed {seed}'s target (AdamW's final val loss) is {t!r} in {name} but {targets[seed]!r} in "
                    f"{first_name}: the runs are not comparable"
                )
            targets.setdefault(seed, t)
        for seed, seed_rows in doc["rows"].items():
            for r in seed_rows:
                rows.setdefault(seed, {}).setdefault(r["optimizer"], r)
    steps = max(r["steps_done"] for seed_rows in rows.values() for r in seed_rows.values())
    return rows, targets, steps, int(first["eval_every"])


def _steps(row: dict | None, miss: int) -> float | None:
    if row is None:
        return None
    return row["steps_interp"] if row.get("steps_interp") is not None else float(miss)


def task_map(rows: dict, steps: int, eval_every: int) -> dict:
    """Best fixed geometry and every chooser's / oracle's paired ratio to it (module docstring)."""
    miss = steps + eval_every
    names = list(dict.fromkeys(n for seed_rows in rows.values() for n in seed_rows))
    fixed = [n for n in train.FIXED if n in names]
    if not fixed:
        raise MapError("no fixed geometry in the files: the map needs one (train.FIXED)")
    seeds = [s for s in rows if all(n in rows[s] for n in fixed)]
    if not seeds:
        raise MapError(f"no seed on which every fixed geometry ran ({', '.join(fixed)})")

    def mean_steps(n: str) -> float:
        return sum(_steps(rows[s][n], miss) for s in seeds) / len(seeds)

    best = min(fixed, key=lambda n: (mean_steps(n), sum(rows[s][n]["final_val"] for s in seeds)))
    entries = {}
    for n in names:
        if n in fixed or not (n in train.CHOOSERS or train.ORACLE.match(n)):
            continue
        paired = {s: _steps(rows[s].get(n), miss) / _steps(rows[s][best], miss) for s in seeds if n in rows[s]}
        if not paired:
            continue
        vals = list(paired.values())
        entries[n] = dict(
            kind="oracle" if train.ORACLE.match(n) else "chooser",
            seeds=sorted(paired),
            ratio=sum(vals) / len(vals),
            ratio_min=min(vals),
            ratio_max=max(vals),
            headroom=1 - sum(vals) / len(vals),
            never=sum(rows[s][n]["steps_to_target"] is None for s in paired),
        )
    return dict(
        best_fixed=best,
        best_fixed_steps=mean_steps(best),
        best_fixed_std=train._stats([_steps(rows[s][best], miss) for s in seeds])["std"],  # train.py's spread
        fixed={n: mean_steps(n) for n in fixed},
        seeds=seeds,
        steps=steps,
        eval_every=eval_every,
        entries=entries,
    )


def verdicts(maps: dict[str, dict]) -> list[dict]:
    """Across tasks: each chooser's count of tasks at <= 0.9x the best fixed; each task's best oracle headroom."""
    out = []
    choosers = list(dict.fromkeys(n for m in maps.values() for n, e in m["entries"].items() if e["kind"] == "chooser"))
    for n in choosers:
        met = [t for t, m in maps.items() if n in m["entries"] and m["entries"][n]["ratio"] <= GOAL_RATIO]
        ran = [t for t, m in maps.items() if n in m["entries"]]
        out.append(
            dict(
                goal=f"{n}: <= {GOAL_RATIO}x the best fixed geometry's steps on >= {GOAL_TASKS} tasks",
                value=len(met),
                tasks=ran,
                verdict="holds" if len(met) >= GOAL_TASKS else f"fails (met on {len(met)} of {len(ran)} tasks)",
            )
        )
    for t, m in maps.items():
        oracles = {n: e for n, e in m["entries"].items() if e["kind"] == "oracle"}
        if not oracles:
            continue
        n, e = max(oracles.items(), key=lambda kv: kv[1]["headroom"])
        out.append(
            dict(
                goal=f"{t}: the best schedule oracle's headroom over {m['best_fixed']} >= {HEADROOM:.0%}",
                value=e["headroom"],
                oracle=n,
                verdict="holds"
                if e["headroom"] >= HEADROOM
                else "fails: little room for choosing the geometry over time",
            )
        )
    return out


def _columns(maps: dict[str, dict]) -> list[str]:
    """The choosers in ``train.CHOOSERS``' order, then the oracles by horizon and annealing."""
    names = set(n for m in maps.values() for n in m["entries"])
    oracles = sorted(
        (n for n in names if train.ORACLE.match(n)), key=lambda n: [int(g or 0) for g in train.ORACLE.match(n).groups()]
    )
    return [n for n in train.CHOOSERS if n in names] + oracles


def markdown(maps: dict[str, dict]) -> str:
    names = _columns(maps)
    head = ["task", "best fixed (steps, mean ± std)", *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t, m in maps.items():
        cells = [
            t,
            f"{m['best_fixed']} {m['best_fixed_steps']:.1f} ± {m['best_fixed_std']:.1f} ({len(m['seeds'])} seeds)",
        ]
        for n in names:
            e = m["entries"].get(n)
            if e is None:
                cells.append("-")
                continue
            never = f", never {e['never']}/{len(e['seeds'])}" if e["never"] else ""
            seeds = "" if len(e["seeds"]) == len(m["seeds"]) else f", seed {','.join(map(str, e['seeds']))} only"
            cells.append(f"{e['ratio']:.2f}x ({e['ratio_min']:.2f}-{e['ratio_max']:.2f}{never}{seeds})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(maps: dict[str, dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = _columns(maps)
    tasks = list(maps)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(names) * len(tasks) / 2), 4.2))
    width = 0.8 / max(1, len(tasks))
    for k, t in enumerate(tasks):
        xs, ys, lo, hi = [], [], [], []
        for i, n in enumerate(names):
            e = maps[t]["entries"].get(n)
            if e is None:
                continue
            xs.append(i + (k - (len(tasks) - 1) / 2) * width)
            ys.append(e["ratio"])
            lo.append(e["ratio"] - e["ratio_min"])
            hi.append(e["ratio_max"] - e["ratio"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=f"{t} (best fixed: {maps[t]['best_fixed']})")
    ax.axhline(1.0, color="black", lw=0.8)
    ax.axhline(GOAL_RATIO, color="tab:red", lw=0.8, ls="--", label=f"goal {GOAL_RATIO}x")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_ylabel("steps to target / best fixed's\n(paired per seed; whiskers: min-max)")
    ax.set_title("Choosing the geometry over time: chooser and oracle vs the best fixed geometry")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", action="append", required=True, help="LABEL=FILE[,FILE...] (repeat per task)")
    ap.add_argument("--out", required=True, help="the map's JSON")
    ap.add_argument("--figure", default=None, help="a PNG of the map")
    args = ap.parse_args(argv)
    maps, sources = {}, {}
    for spec in args.task:
        label, sep, files = spec.partition("=")
        if not sep or not label or not files:
            ap.error(f"--task takes LABEL=FILE[,FILE...], got {spec!r}")
        docs = []
        for f in files.split(","):
            try:
                docs.append((f, json.loads(Path(f).read_text())))
            except (OSError, json.JSONDecodeError) as e:
                ap.error(f"{f}: {e}")
        try:
            rows, _, steps, eval_every = merge(docs)
            maps[label] = task_map(rows, steps, eval_every)
        except MapError as e:
            print(f"error: {label}: {e}", file=sys.stderr)
            return 2
        sources[label] = [
            dict(path=f, command=d.get("command"), commit=d.get("environment", {}).get("git_sha")) for f, d in docs
        ]
    goals = verdicts(maps)
    print(markdown(maps))
    for g in goals:
        print(f"  {g['goal']}: {g['value']:.3g} -> {g['verdict']}")
    if args.figure:
        figure(maps, args.figure)
        print(f"wrote {args.figure}")
    atomic_write_json(
        args.out,
        dict(
            benchmark="benchmarks/train_map.py",
            command=" ".join(["python", "benchmarks/train_map.py", *(argv if argv is not None else sys.argv[1:])]),
            maps=maps,
            goals=goals,
            sources=sources,
            environment=environment(),
        ),
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
