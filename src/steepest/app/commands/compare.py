"""``steepest compare``: train a task with several optimizers side by side and write a report.

    steepest compare                                   # charlm, all optimizers, tuned lrs (<= 8 min, 2 cores)
    steepest compare --quick --task mnist-cnn          # tiny version
    steepest compare --optimizers adamw,muon --lr muon=0.03 --steps 500
    steepest compare --task mypkg.tasks:make_task      # your own Task (see steepest.app.tasks)
    steepest compare --resume --out runs/X             # continue an interrupted run (--run-dir: same)
    steepest compare --tune                            # sweep lrs first (cached), then compare
    steepest compare --nproc 2                         # each run data-parallel on 2 processes (DDP, gloo)
    steepest compare --optimizers adamw,adaptive --oracle-every 50   # + measured per-layer winner (slow: ~21 s/record)

Exit codes: 0 success, 1 a run failed (traceback), 2 bad task name, option or configuration (also: a
damaged run file, or the run directory in use by another process), 130 interrupted, 143 terminated
(SIGTERM; with --nproc forwarded to every rank); finished work is saved and ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import sys

from steepest.app.compare.job import compare
from steepest.app.compare.lrs import check_seed
from steepest.app.compare.sweep import sweep
from steepest.app.guard import check_output_dir, disk_error_text
from steepest.app.runs import ConfigError, load_yaml
from steepest.app.tasks import TaskError


def parse_pairs(items, what: str, numeric: bool = True) -> dict:
    """``["a=1", "b=2"]`` -> ``{"a": 1.0, "b": 2.0}``; ConfigError for a malformed item."""
    out = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"{what} expects name=value, got {item!r}")
        k, v = (s.strip() for s in item.split("=", 1))
        if numeric:
            try:
                v = float(v)
            except ValueError as e:
                raise ConfigError(f"{what} {k}: expected a number, got {v!r}") from e
        else:
            v = load_yaml(v, f"{what} {k}")
        out[k] = v
    return out


def split_names(text: str | None):
    return None if text is None else tuple(n.strip() for n in text.split(",") if n.strip())


def add_common(p: argparse.ArgumentParser) -> None:
    """Options shared by ``compare`` and ``sweep``."""
    p.add_argument("--task", default="charlm", help="charlm (default), mnist, mnist-cnn, or package.module:factory")
    p.add_argument("--size", default="default", help="task size: default or quick")
    p.add_argument("--quick", action="store_true", help="same as --size quick (tiny model, few steps)")
    p.add_argument(
        "--optimizers",
        help="comma-separated names (default: adamw,torch-muon,muon,specgd,signum,"
        "schatten,adaptive; also available: sgd)",
    )
    p.add_argument("--steps", type=int, help="training steps (default: the task's)")
    p.add_argument("--seed", type=int, default=0, help="model init and data order (default 0)")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default 1: reproducible, robust on shared CPUs)")
    p.add_argument(
        "--task-opt", action="append", metavar="KEY=VALUE", help="task option, e.g. --task-opt n_layer=4 (repeatable)"
    )


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "compare",
        help="train a task with each geometry side by side",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)
    p.add_argument("--eval-every", type=int, help="validation interval in steps (default: the task's)")
    p.add_argument("--lr", action="append", metavar="NAME=LR", help="learning rate override (repeatable)")
    p.add_argument(
        "--out",
        "--run-dir",
        dest="out",
        metavar="DIR",
        help="output (run) directory (default runs/compare-<task>-<time>); --run-dir is an alias",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out (or the latest)")
    p.add_argument("--tune", action="store_true", help="run the cached lr sweep first and use its winners")
    p.add_argument("--monitor-every", type=int, help="per-layer diagnostics interval (0: off)")
    p.add_argument(
        "--oracle-every",
        type=int,
        default=0,
        metavar="K",
        help="every K steps (a multiple of --monitor-every; default 0: off) measure per layer which "
        "geometry (spectral, frobenius, linf) lowers a held-out batch's loss most, on the runs "
        "with per-layer choices (adaptive, adaptive-oracle, frobenius, and the time choosers knob-schedule, "
        "schatten-choice, phase-switch); the report scores the criteria and the optimizer's choices against it. Cost on charlm default: ~21 s CPU per oracle record (13 layers x 3 geometries x 17 held-out forwards); K=50 took the adaptive run from 49 to 179 s CPU (1 thread).",
    )
    p.add_argument("--no-report", action="store_true", help="skip report.html")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="data-parallel processes per run (DDP on gloo, 127.0.0.1; the batch size must divide by it; "
        "rank 0 writes the files; default 1)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    size = "quick" if args.quick else args.size
    try:
        lrs = parse_pairs(args.lr, "--lr")
        task_options = parse_pairs(args.task_opt, "--task-opt", numeric=False)
        names = split_names(args.optimizers)
        check_seed(args.seed)
        if args.out is not None:
            check_output_dir(args.out)  # before a --tune sweep or anything else touches the disk
        if args.tune:
            tuned = sweep(
                args.task, size=size, optimizers=names, steps=args.steps, seed=args.seed, threads=args.threads
            )
            lrs = {**tuned, **lrs}
        compare(
            args.task,
            names,
            args.steps,
            seed=args.seed,
            lrs=lrs,
            size=size,
            eval_every=args.eval_every,
            run_dir=args.out,
            resume=args.resume,
            threads=args.threads,
            monitor_every=args.monitor_every,
            progress=not args.no_progress,
            report=not args.no_report,
            task_options=task_options,
            nproc=args.nproc,
            oracle_every=args.oracle_every,
        )
    except (TaskError, ConfigError, ValueError) as e:
        print(f"steepest compare: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only folder, a name too long: the file and the cause, no traceback
        text = disk_error_text(e)
        if text is None:
            raise
        print(f"steepest compare: error: {text}", file=sys.stderr)
        return 2
    return 0
