"""The main job: train one task with several optimizers side by side, same seed and data order, resumable.

``steepest.compare("charlm")`` (or ``steepest compare`` on the command line) runs, for each optimizer,
:func:`steepest.app.compare.loop.train_loop` from the same initial weights (``torch.manual_seed(seed)``
before ``task.make_model()``) over the same batches (``task.batch(seed, step)``), with the learning
rates of the shipped sweep (``src/steepest/app/tuned.json``) unless ``lrs`` overrides them. The run
directory holds::

    config.json  environment.json  summary.json  table.txt  report.html  figures/*.png
    metrics/<optimizer>.jsonl     train loss every step, validation loss every eval_every steps
    checkpoints/<optimizer>.pt    model, optimizer, RNG states and data position (= step), at each eval
    results/<optimizer>.json      the optimizer's final numbers (written when it finishes)
    diagnostics/<optimizer>.jsonl per-layer nr(G) / st(A) from steepest.diagnostics.LayerMonitor
    .lock                         held by the process writing the directory (steepest.app.guard.RunLock)

``resume=True`` skips finished optimizers and continues the others from their last checkpoint;
because batches are a pure function of (seed, step) and CPU kernels are deterministic for a fixed
thread count, the continued run ends with the same numbers as an uninterrupted one. Everything a
resume reads is checked first (ConfigError naming the file and the fix): config.json, results, a
checkpoint that is truncated, needs more than plain data (it is loaded with ``weights_only=True``;
nothing in it runs), of other settings or beyond ``steps``, metrics with damaged lines or a lost
evaluation, and entries of the wrong type (a file for ``checkpoints/``, a link or a directory for a
metrics file). Every value is checked before anything is created on disk.

Example:
    >>> result = steepest.compare("mnist", optimizers=["adamw", "muon"], size="quick")  # trains two optimizers (minutes)  # doctest: +SKIP
    >>> print(result.table)  # needs the result above  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from steepest.app.compare.data_parallel import check_nproc, run_distributed
from steepest.app.compare.lrs import check_seed, load_tuned, resolve_lrs
from steepest.app.compare.monitor import check_oracle_every
from steepest.app.compare.optimizers import (
    DEFAULT_OPTIMIZERS,
    NEEDS_NATIVE_BF16,
    OPTIMIZERS,
    check_optimizers,
    default_optimizers,
    routing_table,
)
from steepest.app.compare.report import write_compare_report
from steepest.app.compare.runner import run_optimizer
from steepest.app.compare.table import TABLE_COLUMNS, format_table, steps_to_reach, summarize
from steepest.app.guard import RunLock, check_output_dir, read_json, remove_stale_temps
from steepest.app.runs import MAX_THREADS, ConfigError, atomic_write_json, atomic_write_text, environment
from steepest.app.tasks import Task, TaskError, check_task, get_task, takes_size

#: Default torch thread count. One thread keeps CPU results bit-for-bit reproducible across machines
#: (``--resume`` relies on it) and avoids the 5-10x slowdown of OpenMP spin-waiting when the cores are
#: shared with other work; pass ``threads=`` / ``--threads`` to use more.
DEFAULT_THREADS = 1

#: Optimizers whose runs get a per-layer LayerMonitor by default (the baseline, Muon, the adaptive one, and the
#: time choosers, whose knob per layer the report draws beside the measured winner with ``--oracle-every``; they
#: run only when asked for by name, so the default comparison's cost is unchanged).
MONITORED = ("adamw", "muon", "adaptive", "knob-schedule", "schatten-choice", "phase-switch")


@dataclasses.dataclass
class CompareConfig:
    """Everything that determines a comparison's numbers (written to ``config.json``)."""

    task: str = "charlm"
    size: str = "default"
    optimizers: tuple[str, ...] = DEFAULT_OPTIMIZERS
    steps: int | None = None
    eval_every: int | None = None
    seed: int = 0
    lrs: dict = dataclasses.field(default_factory=dict)
    warmup: float = 0.05
    cooldown: float = 0.3
    threads: int = 1
    monitor_every: int | None = None
    monitored: tuple[str, ...] = MONITORED
    task_options: dict = dataclasses.field(default_factory=dict)
    nproc: int = 1
    oracle_every: int = 0


@dataclasses.dataclass
class CompareResult:
    """What :func:`compare` returns: the table rows (dicts), the printed table and the run directory."""

    rows: list[dict]
    table: str
    run_dir: Path
    target: float | None

    def row(self, name: str) -> dict:
        return next(r for r in self.rows if r["optimizer"] == name)


# ---------------------------------------------------------------------------------------- entry point
def compare(
    task: str | Task = "charlm",
    optimizers=None,
    steps: int | None = None,
    *,
    seed: int = 0,
    lrs: dict | None = None,
    size: str = "default",
    eval_every: int | None = None,
    run_dir: str | Path | None = None,
    resume: bool = False,
    threads: int | None = None,
    warmup: float = 0.05,
    cooldown: float = 0.3,
    monitor_every: int | None = None,
    monitored=MONITORED,
    progress: bool = True,
    report: bool = True,
    task_options: dict | None = None,
    on_step: Callable[[str, int, float], None] | None = None,
    log: Callable[[str], None] | None = print,
    nproc: int = 1,
    dist_timeout_s: float | None = None,
    oracle_every: int = 0,
) -> CompareResult:
    """Train ``task`` with each optimizer in ``optimizers`` and return the comparison table.

    Args:
        task: a built-in name (``charlm``, ``mnist``, ``mnist-cnn``), ``"package.module:factory"`` or a
            :class:`steepest.app.tasks.Task`.
        optimizers: names from :data:`steepest.app.compare.optimizers.OPTIMIZERS` (default: all but ``sgd``).
        steps, eval_every: override the task's defaults. seed: model init and data order.
        lrs: ``{optimizer: lr}`` overriding the tuned table (``adamw``'s lr also drives the hybrids'
            AdamW part). size: task size (``"quick"`` for tests). threads: ``torch.set_num_threads``
            (default :data:`DEFAULT_THREADS`).
        run_dir: where results go (default ``runs/compare-<task>-<time>``); resume: continue it.
        warmup, cooldown: fractions of the trapezoid lr schedule (:func:`steepest.app.compare.loop.lr_factor`).
        monitor_every: LayerMonitor interval (default ``eval_every``; 0 switches it off); monitored: the
            optimizers that get one (default :data:`MONITORED`; the monitor never changes training).
        on_step: ``(optimizer, step, loss)`` after each step (may raise to interrupt; resume continues).
        nproc: data-parallel processes per optimizer run (DDP over gloo on 127.0.0.1, the global batch
            split evenly, rank 0 writes every file; :mod:`steepest.app.compare.data_parallel`). The task must
            be named (not a Task object), its batch size divisible by ``nproc``, and ``on_step`` picklable
            (it runs on every rank). dist_timeout_s: bound on the whole distributed job (default 7 days).

    The table (``result.rows``) per optimizer: final and best validation loss, steps to reach the
    first optimizer's (AdamW's when present) final validation loss and the ratio to its steps, wall
    time, time per step, optimizer-state memory and peak memory, and diverged-at when a loss went NaN/Inf.
    Steps to target are measured at evaluation points (an upper bound, resolution ``eval_every``).

    Example:
        >>> r = compare("mnist", ["adamw", "muon"], size="quick", report=False)  # trains two optimizers (minutes)  # doctest: +SKIP
    """
    names = check_optimizers(optimizers if optimizers is not None else default_optimizers())
    task_options = dict(task_options or {})
    check_seed(seed)
    if "size" in task_options:
        raise ConfigError("the task size is set with --size (or --quick), not --task-opt size=...")
    if run_dir is not None:
        check_output_dir(run_dir)
    if isinstance(task, Task):
        task_obj, task_name = task, task.name
        if task_options:
            raise TaskError("task_options apply to a task name, not to an already built Task")
    else:
        task_name = str(task)
        builtin = takes_size(task_name)  # built-in tasks, and user factories with a `size` parameter
        if not builtin and size != "default" and log:
            log(
                f"steepest compare: note: --size {size} (--quick) is not applied: the task factory {task_name} has "
                "no `size` parameter (give it one, e.g. def make(size='default', **options), to receive it)"
            )
        task_obj = get_task(task_name, **({"size": size} if builtin else {}), **task_options)
    check_task(task_obj, seed)
    steps = steps if steps is not None else task_obj.steps
    eval_every = eval_every if eval_every is not None else task_obj.eval_every
    if any(isinstance(v, bool) or not isinstance(v, int) for v in (steps, eval_every)):
        raise ConfigError(f"steps and eval_every must be positive integers, got {steps!r} and {eval_every!r}")
    if steps < 1 or eval_every < 1:
        raise ConfigError(f"steps and eval_every must be positive integers, got {steps} and {eval_every}")
    if not (0 <= warmup < 1 and 0 <= cooldown <= 1):
        raise ConfigError(f"warmup must be in [0, 1) and cooldown in [0, 1], got {warmup} and {cooldown}")
    threads = DEFAULT_THREADS if threads is None else threads
    if not 1 <= int(threads) <= MAX_THREADS:
        raise ConfigError(f"threads must be >= 1 and at most {MAX_THREADS}, got {threads}")
    torch.set_num_threads(int(threads))
    monitor_every = eval_every if monitor_every is None else int(monitor_every)
    if monitor_every < 0:
        raise ConfigError(
            f"monitor_every (--monitor-every) must be 0 (off) or a positive interval, got {monitor_every}"
        )
    check_oracle_every(oracle_every, monitor_every)
    lr_table = resolve_lrs(task_obj.name, size, names, lrs)
    check_nproc(task_obj, seed, nproc)
    if nproc > 1 and isinstance(task, Task):
        raise ConfigError(
            "nproc > 1 rebuilds the task in every process: give it by name (e.g. 'mnist' or "
            "'package.module:factory'), not as a Task object"
        )
    cfg = CompareConfig(
        task=task_name,
        size=size,
        optimizers=names,
        steps=steps,
        eval_every=eval_every,
        seed=seed,
        lrs={k: v[0] for k, v in lr_table.items()},
        warmup=warmup,
        cooldown=cooldown,
        threads=threads,
        monitor_every=monitor_every,
        monitored=tuple(n for n in monitored if n in names),
        task_options=task_options,
        nproc=nproc,
        oracle_every=oracle_every,
    )
    if run_dir is None:
        run_dir = _default_run_dir(task_obj, resume)
    check_output_dir(run_dir)
    if resume and not (Path(run_dir) / "config.json").exists():
        raise ConfigError(f"cannot resume {run_dir}: it holds no config.json")
    job = CompareJob(
        task_obj=task_obj,
        builtin=builtin if not isinstance(task, Task) else True,
        run_dir=Path(run_dir),
        resume=resume,
        lr_table=lr_table,
        progress=progress,
        on_step=on_step,
        log=log,
        report=report,
        dist_timeout_s=dist_timeout_s,
    )
    # one writer per run directory (--nproc ranks write under this lock); leftover temp files are removed
    # only once the directory is known to be this run's (_prepare_run_dir), not when it is refused
    with RunLock(run_dir, clean=False):
        return _compare_locked(cfg, job)


@dataclasses.dataclass
class CompareJob:
    """How one :func:`compare` call runs, beside what determines its numbers (:class:`CompareConfig`):
    the built task (and whether it was named as a built-in), the run directory, the learning rates with their sources, and the
    callbacks and switches for progress, logging, the report and the distributed deadline."""

    task_obj: Task
    builtin: bool
    run_dir: Path
    resume: bool
    lr_table: dict
    progress: bool = True
    on_step: Callable | None = None
    log: Callable[[str], None] | None = print
    report: bool = True
    dist_timeout_s: float | None = None


def _compare_locked(cfg: CompareConfig, job: CompareJob) -> CompareResult:
    names = cfg.optimizers
    run_dir = _prepare_run_dir(cfg, job.task_obj, job.run_dir, job.resume)
    say = job.log or (lambda s: None)
    say(
        f"steepest compare: task {job.task_obj.name} ({cfg.size}), {cfg.steps} steps, seed {cfg.seed}, "
        f"run dir {run_dir}"
    )
    left_out = [n for n in DEFAULT_OPTIMIZERS if n not in names and n in NEEDS_NATIVE_BF16]
    if left_out and set(names) == set(default_optimizers()):
        say(
            f"steepest compare: {', '.join(left_out)} left out: it forces bf16 Newton-Schulz, which this CPU "
            f"emulates (18-70x slower than float32); add it with --optimizers to run it anyway"
        )

    results = {}
    lr_table = job.lr_table
    if cfg.nproc > 1:
        say(f"steepest compare: {cfg.nproc} data-parallel processes (gloo), global batch split evenly")
        options = {"size": cfg.size, **cfg.task_options} if job.builtin else cfg.task_options
        results = run_distributed(
            cfg.task,
            options,
            cfg,
            run_dir,
            lr_table,
            resume=job.resume,
            progress=job.progress,
            on_step=job.on_step,
            log=job.log is not None,
            timeout_s=job.dist_timeout_s,
        )
    else:
        for name in names:
            lr, src = lr_table[name]
            results[name] = run_optimizer(
                name,
                job.task_obj,
                cfg,
                run_dir,
                lr=lr,
                lr_source=src,
                aux_lr=lr_table["adamw"][0],
                resume=job.resume,
                progress=job.progress,
                on_step=job.on_step,
                log=say,
            )
    rows, target = summarize(results, names)
    reference = "adamw" if "adamw" in names else names[0]
    table = format_table(rows, target, reference)
    atomic_write_json(run_dir / "summary.json", {"target": target, "reference": reference, "rows": rows})
    atomic_write_text(run_dir / "table.txt", table + "\n")
    say(table)
    if job.report:
        path = write_compare_report(run_dir)
        say(f"report: {path}")
    return CompareResult(rows=rows, table=table, run_dir=run_dir, target=target)


def _default_run_dir(task: Task, resume: bool) -> Path:
    if resume:
        found = sorted(
            (p for p in Path("runs").glob(f"compare-{task.name}-*") if p.is_dir() and not p.is_symlink()),
            key=lambda p: p.stat().st_mtime,
        )
        if not found:
            raise ConfigError(f"--resume found no earlier run under runs/compare-{task.name}-*; name it with --out")
        return found[-1]
    return Path("runs") / f"compare-{task.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _config_check(data) -> str | None:
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    inner = data.get("config", data)
    if not isinstance(inner, dict) or not isinstance(inner.get("lrs", {}), dict):
        return "'config' must be an object with an 'lrs' object"
    return None


#: Config fields added later, with the value an older config.json (without them) had: resumable.
_ADDED = {"oracle_every": 0}


def _prepare_run_dir(cfg: CompareConfig, task: Task, run_dir, resume: bool) -> Path:
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    mine = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    if cfg_path.exists():
        if not resume:
            raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
        old = read_json(
            cfg_path,
            "the run's configuration",
            "restore it, or start a new --out (the run cannot be resumed without it)",
            _config_check,
        )
        old_cfg = old.get("config", old)
        # nproc may change on resume: checkpoints hold plain state dicts, and the data-parallel step equals
        # the one-process step up to float summation order (steepest.app.compare.data_parallel).
        diff = [
            k
            for k in mine
            if k not in ("optimizers", "lrs", "monitored", "nproc") and old_cfg.get(k, _ADDED.get(k)) != mine[k]
        ]
        diff += [
            f"lrs[{n}]" for n in mine["lrs"] if n in old_cfg.get("lrs", {}) and old_cfg["lrs"][n] != mine["lrs"][n]
        ]
        if diff:
            raise ConfigError(
                f"cannot resume {run_dir}: its config differs in {', '.join(diff)}; "
                "rerun with the same options or start a new --out"
            )
    elif resume:
        raise ConfigError(f"cannot resume {run_dir}: it holds no config.json")
    remove_stale_temps(run_dir)  # under the lock, in a directory holding this run's config.json only
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    atomic_write_text(run_dir / "routing.txt", routing_table(task.make_model(), task.routing) + "\n")
    atomic_write_json(
        cfg_path,
        {"config": mine, "task_info": task.info, "optimizer_labels": {n: OPTIMIZERS[n].label for n in cfg.optimizers}},
    )
    atomic_write_json(run_dir / "environment.json", environment())
    return run_dir


__all__ = [
    "compare",
    "CompareConfig",
    "CompareJob",
    "CompareResult",
    "resolve_lrs",
    "load_tuned",
    "summarize",
    "format_table",
    "steps_to_reach",
    "TABLE_COLUMNS",
]
