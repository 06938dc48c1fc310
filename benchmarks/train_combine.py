"""Combine the per-seed rows of several ``benchmarks/train.py`` JSONs of one task into one table.

Use: a table whose entries ran in separate invocations (e.g. a re-run of the entries whose tuned lr changed,
beside the unchanged entries of an earlier run). Per seed, the rows of the files are merged in the order
given: a later file's row replaces an earlier file's row of the same optimizer. Checked before anything is
combined (an error says which file and seed):

* every file is of the same task, task options and evaluation interval;
* each seed's target (its AdamW final validation loss) is the same in every file that has the seed, to
  1e-12 relative: AdamW is re-run in each invocation, so equal targets show the runs are comparable (same
  code path for the reference, same data), and the steps-to-target of the kept rows mean the same thing;
* every combined seed has the same set of optimizers (no row silently missing for one seed).

The aggregate and the goals are recomputed with ``train.aggregate``, ``train.verdicts`` and
``train.verdicts_21``. The output records which file each row came from and every file's command and
commit. Prints the table as ``train.py`` does.

Usage::

    .venv/bin/python benchmarks/train_combine.py OLD.json NEW.json --out benchmarks/results/COMBINED.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import train  # noqa: E402  (benchmarks/train.py: puts src/ on sys.path)
from steepest.app.runs import atomic_write_json, environment  # noqa: E402


class CombineError(ValueError):
    """The files cannot be combined (different tasks, targets or optimizer sets)."""


def combine(docs: list[tuple[str, dict]]) -> dict:
    """The combined document from ``[(path, train.py JSON)]`` (see the module docstring)."""
    if not docs:
        raise CombineError("give at least one train.py JSON")
    first_path, first = docs[0]
    keys = ("task", "task_options", "eval_every")
    per_seed: dict[str, dict[str, dict]] = {}
    source: dict[str, dict[str, str]] = {}
    targets: dict[str, float] = {}
    for path, doc in docs:
        for k in keys:
            if doc.get(k) != first.get(k):
                raise CombineError(f"{path}: {k} = {doc.get(k)!r}, but {first_path} has {first.get(k)!r}")
        if "rows" not in doc:
            raise CombineError(f"{path} has no per-seed rows (written by an older train.py): rerun it")
        for seed, rows in doc["rows"].items():
            t = doc["targets"].get(seed)
            if seed in targets and (t is None or not math.isclose(t, targets[seed], rel_tol=1e-12)):
                raise CombineError(
                    f"{path}: seed {seed}'s target (AdamW final val) {t} differs from {targets[seed]} in an "
                    "earlier file: the runs are not comparable"
                )
            targets.setdefault(seed, t)
            for r in rows:
                per_seed.setdefault(seed, {})[r["optimizer"]] = r
                source.setdefault(seed, {})[r["optimizer"]] = path
    sets = {seed: tuple(sorted(rows)) for seed, rows in per_seed.items()}
    if len(set(sets.values())) > 1:
        raise CombineError(f"the seeds have different optimizer sets: {sets}")
    steps = max(int(r["steps_done"]) for rows in per_seed.values() for r in rows.values())
    eval_every = int(first["eval_every"])
    by_int = {int(s): rows for s, rows in per_seed.items()}
    agg = train.aggregate(by_int, steps, eval_every)
    goals = train.verdicts(agg, first["task"].split("/")[0]) + train.verdicts_21(agg)
    return {
        "benchmark": "benchmarks/train_combine.py",
        "command": "python benchmarks/train_combine.py " + " ".join(p for p, _ in docs),
        "task": first["task"],
        "task_options": first["task_options"],
        "seeds": sorted(by_int),
        "targets": targets,
        "eval_every": eval_every,
        "sources": [
            {"path": p, "command": d.get("command"), "commit": (d.get("environment") or {}).get("git_sha")}
            for p, d in docs
        ],
        "row_source": source,
        "aggregate": agg,
        "goals": goals,
        "rows": {s: list(rows.values()) for s, rows in per_seed.items()},
        "environment": environment(),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", help="train.py JSONs, earliest first (a later row replaces an earlier one)")
    ap.add_argument("--out", required=True, help="the combined JSON")
    args = ap.parse_args(argv)
    docs = []
    for f in args.files:
        try:
            docs.append((f, json.loads(Path(f).read_text())))
        except (OSError, ValueError) as e:
            print(f"train_combine: cannot read {f}: {e}", file=sys.stderr)
            return 2
    try:
        out = combine(docs)
    except CombineError as e:
        print(f"train_combine: {e}", file=sys.stderr)
        return 2
    agg = out["aggregate"]
    print(f"{out['task']}, seeds {out['seeds']}, rows from {len(docs)} files")
    print(f"{'optimizer':<22}{'steps (interp)':>18}{'never':>7}{'final val':>20}{'CPU s':>14}  source")
    for n, a in agg.items():
        src = {out["row_source"][s][n] for s in out["row_source"] if n in out["row_source"][s]}
        st, fv, cs = a["steps_interp"], a["final_val"], a["cpu_s"]
        print(
            f"{n:<22}{st['mean']:>10.1f} ± {st['std']:<5.1f}{a['never']:>7}{fv['mean']:>12.4f} ± {fv['std']:.4f}"
            f"{'-' if not cs else format(cs['mean'], '.1f'):>14}  {', '.join(sorted(src))}"
        )
    for g in out["goals"]:
        print(f"goal: {g['goal']}: {g['verdict']} ({g['value']:.3f})")
    atomic_write_json(args.out, out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
