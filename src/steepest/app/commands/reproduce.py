"""``steepest reproduce NAME [--quick] [--out DIR] [--set key=value ...] [--config FILE] [--jobs N]``.

Runs one seed reproduction (or ``all``) into a run directory: config.json, environment.json,
results.json, claims.json, PNG figures and report.html with the claims table on top. Rerunning into
the same directory reuses the finished sweep cells. Exit codes: 0 done (whatever the verdicts),
1 an experiment raised (with ``all`` the others still run and the failed one is a red row with its
error in the combined report), 2 bad usage (unknown experiment, bad config key or value), 130 interrupted.

``--quick`` is a smoke test: its claims show their numbers, and a verdict only where the quick size was
shown to decide the claim (:mod:`steepest.app.reproduce.verdicts`), else ``not decided at this size``.

With ``all``, ``--set`` keys may be prefixed by an experiment (``--set quadratic.steps=50``); an
unprefixed key is applied to every experiment that has it. ``--config`` takes a YAML/TOML mapping
(for ``all``, a mapping of experiment name to mapping). ``all --jobs N`` runs N experiments at a time in
separate processes (each with ``--threads`` threads); the results and verdicts are those of ``--jobs 1``,
since every experiment seeds its own generators and writes only its own folder.

Example::

    steepest reproduce quadratic --quick --out runs/q
    steepest reproduce all --set phase-retrieval.dims=[50,100]
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import sys
import traceback
from pathlib import Path

from steepest.app.guard import RunLock, check_output_dir, disk_error_text, read_json
from steepest.app.reproduce import base
from steepest.app.runs import MAX_THREADS, ConfigError, apply_overrides, atomic_write_json, read_mapping


def register(subparsers) -> None:
    names = " | ".join(base.REGISTRY)
    p = subparsers.add_parser(
        "reproduce",
        help="reproduce a seed's claims with figures and verdicts",
        description=f"Reproduce the seed results ({len(base.REGISTRY)} experiments): {', '.join(base.REGISTRY)}, or all.",
    )
    p.add_argument("name", metavar="NAME", help=f"{names} | all")
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, a smoke test (each experiment well under a minute): numbers shown, verdicts only "
        "where the quick size was shown to decide them, else 'not decided at this size'",
    )
    p.add_argument(
        "--out",
        "--run-dir",
        dest="out",
        default=None,
        metavar="DIR",
        help="output (run) directory (default runs/reproduce-NAME[-quick]); --run-dir is an alias",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field (repeatable); with 'all' prefix it: quadratic.steps=50",
    )
    p.add_argument("--config", default=None, help="YAML/TOML file with config fields")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the experiments are many small matrix operations)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="with 'all': run N experiments at a time, each in its own process (default 1; use the number of "
        "cores divided by --threads). Same results as one at a time",
    )
    p.set_defaults(func=main)


def build_configs(names: list[str], quick: bool, overrides: list[str], config_file: str | None) -> dict:
    """Config per experiment: defaults (or quick()), then the file, then ``--set`` overrides."""
    file_data = read_mapping(config_file) if config_file is not None else {}
    multi = len(names) > 1
    pairs = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, value = (s.strip() for s in item.split("=", 1))
        pairs.append((key, value))
    configs = {}
    for name in names:
        mod = base.get(name)
        cfg = mod.quick() if quick else mod.Config()
        fields = {f.name for f in dataclasses.fields(cfg)}
        data = file_data.get(name, {}) if multi else file_data
        if multi and not isinstance(data, dict):
            raise ConfigError(f"config file section {name!r} must be a mapping")
        if data:
            cfg = apply_overrides(cfg, dict(data))
        mine = {}
        for key, value in pairs:
            if "." in key and key.split(".", 1)[0] in base.REGISTRY:
                target, field = key.split(".", 1)
                if target == name:
                    mine[field] = value
            elif not multi or key in fields:
                mine[key] = value
        if mine:
            cfg = apply_overrides(cfg, mine)
        configs[name] = cfg
    if multi:  # an unprefixed key that no experiment has is a typo, not a no-op
        known = {f.name for c in configs.values() for f in dataclasses.fields(c)}
        for key, _ in pairs:
            if "." in key and key.split(".", 1)[0] not in base.REGISTRY:
                raise ConfigError(f"unknown experiment prefix in {key!r}; choose one of {', '.join(base.REGISTRY)}")
            if "." not in key and key not in known:
                raise ConfigError(
                    f"unknown config key {key!r}: no experiment has it; valid keys: {', '.join(sorted(known))}"
                )
    return configs


def _check_not_another_run(run_dir: Path, name: str | None) -> None:
    """ConfigError when ``run_dir`` holds another run's ``config.json`` (a compare run, another
    experiment, or for ``all``'s root (``name`` None) any run): reproducing there would overwrite its
    config, results and report. Rerunning the same experiment into its own directory is fine."""
    cfg = run_dir / "config.json"
    if not (cfg.exists() or cfg.is_symlink()):
        return
    data = read_json(cfg, "the run's configuration", "choose another --out")
    mine = name is not None and isinstance(data, dict) and data.get("experiment") == name
    if not mine:
        what = (
            f"the reproduction {data['experiment']!r}"
            if isinstance(data, dict) and "experiment" in data
            else "another run (steepest compare?)"
            if isinstance(data, dict) and "config" in data
            else "a config.json"
        )
        raise ConfigError(
            f"--out {run_dir} holds {what}; reproducing there would overwrite its files: choose another --out"
        )


def _print_claims(outcome) -> None:
    print(
        f"\n== {outcome.name}: {outcome.run_dir} "
        f"(cells: {outcome.cells_computed} computed, {outcome.cells_reused} reused)"
    )
    for c in outcome.claims:
        shown = f"{c.verdict} ({c.at_size} here)" if c.at_size else c.verdict
        print(f"  [{shown:>12}] {c.statement}\n                 measured: {c.measured}")


def _run_one(task: tuple) -> tuple[str, str, object]:
    """Run one experiment: ``(name, kind, payload)`` with kind ``ok`` (payload the Outcome), ``config``
    (bad configuration: exit 2), ``disk`` (a full or read-only disk: exit 2) or ``failed`` (the traceback).
    Module level, so that ``--jobs`` worker processes can run it."""
    name, cfg, run_dir, threads, size = task
    try:
        return name, "ok", base.run_experiment(name, cfg, run_dir, threads=threads, size=size)
    except ConfigError as e:
        return name, "config", str(e)
    except OSError as e:
        text = disk_error_text(e)
        if text is not None:
            return name, "disk", text
        return name, "failed", traceback.format_exc()
    except Exception:  # one broken experiment must not hide the others' results
        return name, "failed", traceback.format_exc()


def _quiet_worker() -> None:
    base.QUIET_PROGRESS = True


def _results(tasks: list, jobs: int):
    """Yield :func:`_run_one`'s answers, one process at a time or ``jobs`` worker processes (spawned: no
    state forked from this process). Leaving early (an error, Ctrl-C) terminates the workers: none is
    left running."""
    if jobs == 1 or len(tasks) == 1:
        for task in tasks:
            yield _run_one(task)
        return
    pool = multiprocessing.get_context("spawn").Pool(min(jobs, len(tasks)), initializer=_quiet_worker)
    try:
        yield from pool.imap_unordered(_run_one, tasks)
        pool.close()
    finally:
        pool.terminate()
        pool.join()


def _run_experiments(names: list[str], configs: dict, root: Path, args) -> tuple[int | None, list, list]:
    """Run each experiment into its folder: ``(exit code to return at once or None, outcomes, failures)``,
    outcomes and failures in the registry's order whatever order they finish in."""
    size = "quick" if args.quick else "default"
    tasks = [(n, configs[n], root / n if args.name == "all" else root, args.threads, size) for n in names]
    done: dict[str, tuple[str, object]] = {}
    results = _results(tasks, args.jobs)
    try:
        for name, kind, payload in results:
            if kind in ("config", "disk"):
                what = "bad configuration: " if kind == "config" else "error: "
                print(f"steepest reproduce {name}: {what}{payload}", file=sys.stderr)
                return 2, [], []
            if kind == "failed":
                print(payload, file=sys.stderr, end="")
            else:
                _print_claims(payload)
            done[name] = (kind, payload)
    finally:
        results.close()  # terminates the workers when leaving early
    outcomes = [done[n][1] for n in names if n in done and done[n][0] == "ok"]
    failed = [
        base.Failure(n, str(done[n][1]).strip().splitlines()[-1]) for n in names if done.get(n, ("",))[0] == "failed"
    ]
    return None, outcomes, failed


def main(args) -> int:
    if args.name != "all" and args.name not in base.REGISTRY:
        print(
            f"steepest reproduce: unknown experiment {args.name!r}; choose one of {', '.join(base.REGISTRY)} or all",
            file=sys.stderr,
        )
        return 2
    if not 1 <= args.threads <= MAX_THREADS:
        print(
            f"steepest reproduce: --threads must be >= 1 and at most {MAX_THREADS}, got {args.threads}", file=sys.stderr
        )
        return 2
    if args.jobs < 1:
        print(f"steepest reproduce: --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    names = list(base.REGISTRY) if args.name == "all" else [args.name]
    try:
        configs = build_configs(names, args.quick, args.overrides, args.config)
    except ConfigError as e:
        print(f"steepest reproduce: bad configuration: {e}", file=sys.stderr)
        return 2
    suffix = "-quick" if args.quick else ""
    root = Path(args.out) if args.out else Path("runs") / f"reproduce-{args.name}{suffix}"
    try:
        check_output_dir(root)
    except ConfigError as e:
        print(f"steepest reproduce: {e}", file=sys.stderr)
        return 2
    root_lock = RunLock(root, clean=False) if args.name == "all" else None  # the experiments lock their own
    try:
        for name in names:
            _check_not_another_run(root / name if args.name == "all" else root, name)
        if root_lock is not None:
            _check_not_another_run(root, None)
            root_lock.acquire()  # held for the whole run: a .lock link or a second writer is refused up front
    except ConfigError as e:
        print(f"steepest reproduce: {e}", file=sys.stderr)
        return 2
    try:
        code, outcomes, failed = _run_experiments(names, configs, root, args)
        if code is not None:
            return code
        report = None
        if root_lock is not None and (outcomes or failed):
            report = base.write_combined_report(root / "report.html", outcomes, failed)
            atomic_write_json(
                root / "claims.json", {o.name: [dataclasses.asdict(c) for c in o.claims] for o in outcomes}
            )
            if failed:
                atomic_write_json(root / "failed.json", {f.name: f.error for f in failed})
        elif root_lock is None and outcomes:
            report = outcomes[0].run_dir / "report.html"
    except OSError as e:  # the combined report on a full disk
        text = disk_error_text(e)
        if text is None:
            raise
        print(f"steepest reproduce: error: {text}", file=sys.stderr)
        return 2
    finally:
        if root_lock is not None:
            root_lock.release()
    if report is not None:  # only a report this run wrote
        print(f"\nreport: {report}")
    if failed:
        print(f"steepest reproduce: failed: {', '.join(f.name for f in failed)}", file=sys.stderr)
        return 1
    return 0
