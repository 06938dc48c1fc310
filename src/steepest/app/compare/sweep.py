"""Learning-rate sweep for ``steepest compare``: a small grid per optimizer, cached and resumable.

For each optimizer the sweep trains the task with the same seed, steps and schedule as the comparison
at learning rates ``center * 2^k`` for k in {-1, 0, 1} (``center`` = the currently tuned or fallback
lr) and keeps extending the grid by factors of 2 in the direction of improvement while the best
point sits on the grid's edge (at most ``max_extend`` extra points each way). The criterion is the
final validation loss (a diverged run counts as +inf). AdamW goes first: its best lr is the ``aux_lr``
the hybrid optimizers use for their AdamW part (embeddings, head, vectors).

Every finished run is stored at once (atomic write) in a JSON cache keyed by task, size, steps,
seed, optimizer, lr and aux lr, so an interrupted sweep resumes where it stopped and a repeated sweep
costs nothing. ``write_tuned`` merges the winners, with the command that produced them, into
``src/steepest/app/tuned.json``, which the default ``steepest compare`` reads.

Example:
    >>> best = sweep("mnist", size="quick", optimizers=["adamw", "muon"], cache="/tmp/sweep.json")  # trains one run per learning rate (minutes)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from steepest._io import TEMP_PATTERN
from steepest.app.compare.job import compare
from steepest.app.compare.lrs import TUNED_PATH, load_tuned, resolve_lrs
from steepest.app.compare.optimizers import OPTIMIZERS, check_optimizers, default_optimizers
from steepest.app.guard import open_lock_file, read_json
from steepest.app.runs import atomic_write_json

DEFAULT_CACHE = Path("runs") / "sweep-cache.json"


def _key(task: str, size: str, steps: int | None, seed: int, name: str, lr: float, aux_lr: float) -> str:
    # The optimizer's label describes its construction (criterion, momentum, method...): a changed
    # recipe gets new cache entries instead of silently reusing results of the old one.
    spec = OPTIMIZERS.get(name)
    recipe = hashlib.sha1(spec.label.encode()).hexdigest()[:8] if spec is not None else "custom"
    return f"{task}/{size}/steps={steps}/seed={seed}/{name}@{recipe}/lr={lr:.6g}/aux={aux_lr:.6g}"


def _cache_check(data) -> str | None:
    if not isinstance(data, dict):
        return f"expected a JSON object of entries, got {type(data).__name__}"
    for key, entry in data.items():
        if not isinstance(entry, dict) or "final_val" not in entry or "diverged_at" not in entry:
            return f"entry {key!r} is not an object with final_val and diverged_at"
    return None


def _load_cache(path: Path) -> dict:
    """The sweep cache at ``path`` ({} when absent); ConfigError naming it when damaged."""
    if not path.exists():
        return {}
    return read_json(
        path,
        "sweep result cache",
        "delete it to recompute the sweep from scratch (each point is rerun), or restore it",
        _cache_check,
    )


@contextlib.contextmanager
def _cache_lock(cache: Path):
    """An exclusive flock on ``.<cache name>.lock`` beside the cache for one read-merge-write (blocking:
    sweeps sharing a cache take turns for the few milliseconds a write takes); leftover temporary files
    of the cache (a write cut short by SIGKILL) are removed under it."""
    import fcntl  # lazy: POSIX only

    cache.parent.mkdir(parents=True, exist_ok=True)
    fd = open_lock_file(cache.parent / f".{cache.name}.lock")  # never through a link, never a user's file
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for tmp in cache.parent.iterdir():  # the cache's own temp files, by their exact name
            m = TEMP_PATTERN.match(tmp.name)
            if m is not None and m["target"] == cache.name and not tmp.is_symlink() and tmp.is_file():
                tmp.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)


def _score(entry: dict) -> float:
    v = entry.get("final_val")
    v = float(v) if v is not None else math.inf
    return v if (entry.get("diverged_at") is None and math.isfinite(v)) else math.inf


def sweep(
    task: str = "charlm",
    *,
    size: str = "default",
    optimizers=None,
    steps: int | None = None,
    seed: int = 0,
    cache: str | Path = DEFAULT_CACHE,
    grid: dict | None = None,
    max_extend: int = 2,
    threads: int | None = None,
    write_tuned: bool = False,
    tuned_path: str | Path = TUNED_PATH,
    command: str | None = None,
    log: Callable[[str], None] | None = print,
) -> dict[str, float]:
    """Tune each optimizer's learning rate on ``task``; return ``{optimizer: best lr}``.

    ``grid`` maps an optimizer to an explicit list of lrs (no extension then). See the module docstring
    for the default grid, the cache and ``write_tuned``.
    """
    names = check_optimizers(optimizers if optimizers is not None else default_optimizers())
    names = tuple(dict.fromkeys(["adamw", *names])) if "adamw" in names else names
    cache = Path(cache)
    say = log or (lambda s: None)
    store = _load_cache(cache)
    start = resolve_lrs(task.split(":")[-1], size, names)
    aux_lr = start["adamw"][0]
    best: dict[str, float] = {}
    tried: dict[str, dict[str, float]] = {}

    def run(name: str, lr: float) -> float:
        key = _key(task, size, steps, seed, name, lr, aux_lr if name != "adamw" else lr)
        if key not in store:
            with tempfile.TemporaryDirectory(prefix="steepest-sweep-") as tmp:
                lrs = {name: lr, "adamw": aux_lr if name != "adamw" else lr}
                r = compare(
                    task,
                    [name],
                    steps,
                    seed=seed,
                    lrs=lrs,
                    size=size,
                    run_dir=Path(tmp) / "run",
                    threads=threads,
                    monitor_every=0,
                    progress=False,
                    report=False,
                    log=None,
                ).rows[0]
            store[key] = {
                "final_val": r["final_val"],
                "best_val": r["best_val"],
                "diverged_at": r["diverged_at"],
                "wall_s": r["wall_s"],
                "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
            }
            with _cache_lock(cache):  # merge with entries another sweep process may have written
                fresh = _load_cache(cache)
                fresh.update(store)
                store.update(fresh)
                atomic_write_json(cache, store)
        score = _score(store[key])
        tried.setdefault(name, {})[f"{lr:.6g}"] = score
        say(f"  {name:>10} lr={lr:.4g}: final val {score:.4f}")
        return score

    for name in names:
        if grid and name in grid:
            lrs = sorted(float(x) for x in grid[name])
            scores = {lr: run(name, lr) for lr in lrs}
        else:
            center = start[name][0]
            lrs = [center / 2, center, center * 2]
            scores = {lr: run(name, lr) for lr in lrs}
            for _ in range(max_extend):
                lo, hi = min(scores), max(scores)
                b = min(scores, key=scores.__getitem__)
                if b == lo and math.isfinite(scores[b]):
                    scores[lo / 2] = run(name, lo / 2)
                elif b == hi and math.isfinite(scores[b]):
                    scores[hi * 2] = run(name, hi * 2)
                else:
                    break
        best[name] = min(scores, key=scores.__getitem__)
        say(f"{name}: best lr {best[name]:.4g} (final val {scores[best[name]]:.4f})")
        if name == "adamw":
            aux_lr = best[name]

    if write_tuned:
        data = load_tuned(tuned_path)
        key = f"{task}/{size}"
        table = data.setdefault("tables", {}).setdefault(key, {})
        table.update({n: float(f"{v:.6g}") for n, v in best.items()})
        entry = data.setdefault("sweeps", {}).setdefault(key, {})
        command = command or f"steepest sweep --task {task} --size {size} --write-tuned"
        entry.setdefault("commands", {}).update({n: command for n in best})
        entry.update(
            {
                "command": command,
                "criterion": "final validation loss after the full run (diverged = inf)",
                "steps": steps,
                "seed": seed,
                "date": time.strftime("%Y-%m-%d"),
            }
        )
        for n in best:  # keep every point ever tried for n (earlier sweeps may have used other grids)
            entry.setdefault("tried", {}).setdefault(n, {}).update(tried.get(n, {}))
        atomic_write_json(tuned_path, data)
        say(f"wrote tuned learning rates for {key} to {tuned_path}")
    return best


__all__ = ["sweep", "DEFAULT_CACHE"]
