"""``steepest sweep``: tune each optimizer's learning rate for ``steepest compare`` (cached, resumable).

    steepest sweep                                   # charlm/default, every optimizer, cache runs/sweep-cache.json
    steepest sweep --out runs/tune                   # cache in runs/tune/sweep-cache.json
    steepest sweep --write-tuned                     # also store the winners in src/steepest/app/tuned.json
                                                     # (installed package: in DIR/tuned.json; or --write-tuned FILE)
    steepest sweep --optimizers muon --grid muon=0.01,0.02,0.04

Exit codes: 0 success, 1 a run failed (traceback), 2 bad task name or option, 130 interrupted
(finished points are cached; rerunning resumes).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from steepest.app.commands.compare import add_common, split_names
from steepest.app.compare.lrs import MAX_LR, check_seed
from steepest.app.compare.optimizers import OPTIMIZERS, default_optimizers
from steepest.app.compare.sweep import TUNED_PATH, sweep
from steepest.app.guard import check_output_dir, disk_error_text
from steepest.app.runs import ConfigError
from steepest.app.tasks import TaskError


def parse_grid(items, names) -> dict[str, list[float]]:
    """``--grid muon=0.01,0.02`` items -> ``{"muon": [0.01, 0.02]}``; ConfigError for an empty grid, a
    learning rate that is not a positive finite number, or an optimizer the sweep does not run."""
    valid = names if names is not None else default_optimizers()
    grid: dict[str, list[float]] = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"--grid expects name=lr1,lr2,..., got {item!r}")
        k, v = (x.strip() for x in item.split("=", 1))
        if k not in OPTIMIZERS:
            raise ConfigError(f"--grid {item!r}: unknown optimizer {k!r}; choose from {', '.join(OPTIMIZERS)}")
        if k not in valid:
            raise ConfigError(
                f"--grid {item!r}: {k} is not swept (optimizers: {', '.join(valid)}); "
                f"add it to --optimizers or drop the --grid"
            )
        try:
            lrs = [float(x) for x in v.split(",") if x.strip()]
        except ValueError as e:
            raise ConfigError(f"--grid {k}: learning rates must be numbers, got {v!r}") from e
        if not lrs:
            raise ConfigError(f"--grid {k}= gives no learning rates; write e.g. --grid {k}=0.01,0.02")
        bad = [x for x in lrs if not (0 < x <= MAX_LR)]
        if bad:
            raise ConfigError(f"--grid {k}: learning rates must be positive numbers up to {MAX_LR:g}, got {bad}")
        grid[k] = lrs
    return grid


def source_checkout() -> bool:
    """True when steepest runs from its repository (src/steepest/app/tuned.json beside pyproject.toml), not
    from an installed wheel."""
    from steepest.app.compare.lrs import TUNED_PATH

    root = Path(TUNED_PATH).resolve().parents[3]
    return Path(TUNED_PATH).resolve().parents[2].name == "src" and (root / "pyproject.toml").exists()


def tuned_target(write_tuned, out: str) -> Path | None:
    """Where ``--write-tuned`` writes: None (not asked), the given FILE, the shipped table in a source
    checkout, or ``<out>/tuned.json`` for an installed package."""
    from steepest.app.compare.lrs import TUNED_PATH

    if not write_tuned:
        return None
    if write_tuned is not True:
        return Path(write_tuned)
    if source_checkout():
        return Path(TUNED_PATH)
    print(
        f"steepest sweep: steepest is an installed package: the winners go to {Path(out) / 'tuned.json'} "
        "(the shipped table is left alone); use them with --lr NAME=LR",
        file=sys.stderr,
    )
    return Path(out) / "tuned.json"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "sweep",
        help="tune learning rates for compare (cached, resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common(p)
    p.add_argument("--grid", action="append", metavar="NAME=LR1,LR2,...", help="explicit grid for one optimizer")
    p.add_argument(
        "--out",
        default="runs",
        metavar="DIR",
        help="output directory, holding the result cache sweep-cache.json (default runs)",
    )
    p.add_argument("--cache", metavar="FILE", help="result cache file (default DIR/sweep-cache.json)")
    p.add_argument(
        "--max-extend",
        type=int,
        default=2,
        help="extra grid points (factor 2) allowed each way while the best lr is on the edge (default 2)",
    )
    p.add_argument(
        "--write-tuned",
        nargs="?",
        const=True,
        default=None,
        metavar="FILE",
        help="merge the winners into a tuned table: FILE if given; else the shipped "
        "src/steepest/app/tuned.json in a source checkout, and DIR/tuned.json (--out) for an "
        "installed package (its site-packages copy is left alone)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    size = "quick" if args.quick else args.size
    try:
        names = split_names(args.optimizers)
        grid = parse_grid(args.grid, names)
        check_seed(args.seed)
        if not args.cache:
            check_output_dir(args.out)
        cache = Path(args.cache) if args.cache else Path(args.out) / "sweep-cache.json"
        if cache.is_dir():
            raise ConfigError(f"--cache {cache} is a directory; give a file, e.g. --cache {cache / 'sweep-cache.json'}")
        check_output_dir(cache.parent, "--cache")
        if args.max_extend < 0:
            raise ConfigError(f"--max-extend must be >= 0, got {args.max_extend}")
        if args.task_opt:
            raise ConfigError("sweep tunes the task at a named --size; --task-opt is not supported here")
        target = tuned_target(args.write_tuned, args.out)
        best = sweep(
            args.task,
            size=size,
            optimizers=names,
            steps=args.steps,
            seed=args.seed,
            cache=cache,
            grid=grid or None,
            threads=args.threads,
            max_extend=args.max_extend,
            write_tuned=target is not None,
            tuned_path=target if target is not None else TUNED_PATH,
            command="steepest " + shlex.join(sys.argv[1:]),
        )
    except (TaskError, ConfigError, ValueError) as e:
        print(f"steepest sweep: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a full disk, a read-only folder, a name too long: the file and the cause, no traceback
        text = disk_error_text(e)
        if text is None:
            raise
        print(f"steepest sweep: error: {text}", file=sys.stderr)
        return 2
    print("best learning rates: " + ", ".join(f"{k}={v:.4g}" for k, v in best.items()))
    return 0
