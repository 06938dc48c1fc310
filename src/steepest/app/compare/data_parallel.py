"""``steepest compare --nproc N``: each optimizer's run data-parallel over N local processes (gloo, loopback).

The parent process (:func:`steepest.app.compare.compare`) checks the configuration, writes the run
directory's config, spawns N ranks with :func:`steepest.app.launch.launch` (torchrun's
variables on 127.0.0.1), and writes the summary, table and report from rank 0's results. Every rank
runs :func:`steepest.app.compare.runner.run_optimizer` for each optimizer with a :class:`DataParallel`:

* the same model from the same seed, wrapped in ``DistributedDataParallel`` (its gradient all-reduce
  averages the ranks' gradients);
* the optimizer: steepest optimizers through :func:`steepest.distributed` (each matrix dualized once,
  on an owner rank, the result shared); torch.optim ones (AdamW, torch.optim.Muon + AdamW, SGD) step
  on the averaged gradients unchanged (steepest.Adaptive is a steepest optimizer like the others);
* its slice of every global batch ``task.batch(seed, step)``: rank r takes rows
  [r B/N, (r+1) B/N) of every tensor (:func:`steepest.app.launch.shard`). With equal
  slices the mean of the per-rank mean losses is the global mean loss, so

      grad_DDP = (1/N) sum_r (1/(B/N)) sum_{i in shard r} grad l_i = (1/B) sum_i grad l_i,

  the one-process gradient up to float summation order; B must divide by N (ConfigError otherwise);
* the same decisions on every rank, so no rank waits alone in a collective: the training loss is
  all-reduced (its global mean decides divergence and is what rank 0 records), every rank evaluates
  its (identical) replica and rank 0's validation loss is broadcast, and steepest.distributed decides
  non-finite gradients globally.

Rank 0 alone writes metrics, checkpoints (the plain state dicts of the unwrapped model and of the
optimizer: DDP replicas are identical, so the files are the same as a one-process run's and
``--resume`` works with any ``--nproc``), results and diagnostics; the other ranks write nothing.

What differs under DDP (documented limits):

* activation hooks (the LayerMonitor's st(A), steepest.Adaptive's Spec-Sign criterion) see only
  the local slice of the batch (B/N rows), while gradients are the global mean; the monitor runs on
  rank 0 only;
* :class:`steepest.Adaptive` decides each layer's geometry from its local activations; under
  :func:`steepest.distributed` every rank takes rank 0's choices (one broadcast per decision, inside
  the step kernel), so replicas stay identical. Its noise term uses the local batch size B/N,
  over-estimating the gradient noise of the global mean by sqrt(N);
* wall time, CPU time and peak memory in the table are rank 0's (CPU s is one rank's share);
* every rank evaluates the whole validation set (the task's ``evaluate`` cannot be split), so
  evaluation does not get faster; measured on 2 cores, default charlm, 40 steps: 129 -> 77 ms per
  AdamW step and 148 -> 99 ms per Muon step from 1 to 2 processes, while the quick models are too small
  to gain (communication dominates);
* the ranks are started with multiprocessing's "spawn": a script calling ``compare(..., nproc=2)``
  needs the usual ``if __name__ == "__main__":`` guard (the command line needs nothing).

Example:
    >>> steepest.compare("mnist", ["adamw", "muon"], size="quick", nproc=2)  # spawns 2 training processes (minutes)  # doctest: +SKIP
    $ steepest compare --task mnist --quick --nproc 2
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from steepest.app.compare.runner import run_optimizer
from steepest.app.launch import DistInfo, cleanup, init_from_env, launch, shard, wrap_model, wrap_optimizer
from steepest.app.runs import ConfigError
from steepest.app.tasks import get_task

#: Upper bound on one collective (seconds): a rank that waits longer raises instead of hanging.
COLLECTIVE_TIMEOUT_S = 300.0
#: Default bound on the whole distributed job (7 days: below the 24.8-day limit of a poll() timeout).
JOB_TIMEOUT_S = 7 * 24 * 3600.0


# ------------------------------------------------------------------------------------ batches
def _tensors(batch: Any) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, (tuple, list)):
        return [t for b in batch for t in _tensors(b)]
    if isinstance(batch, dict):
        return [t for b in batch.values() for t in _tensors(b)]
    return []


def batch_size(batch: Any) -> int:
    """The number of examples (dim 0) of a batch: a tensor or a tuple/list/dict of them, all with the same
    dim 0. ConfigError for a batch without tensors or with different dim-0 sizes (it cannot be split)."""
    sizes = {t.shape[0] for t in _tensors(batch) if t.ndim >= 1}
    if len(sizes) != 1:
        raise ConfigError(
            "--nproc > 1 splits each batch on dim 0: the task's batch(seed, step) must return a tensor "
            f"or a tuple/list/dict of tensors with the same dim 0 (found dim-0 sizes {sorted(sizes)})"
        )
    return sizes.pop()


def check_nproc(task, seed: int, nproc: int) -> None:
    """ConfigError unless ``task``'s global batch (``task.batch(seed, 0)``) splits evenly over ``nproc``."""
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"nproc must be a positive integer, got {nproc!r}")
    if nproc == 1:
        return
    n = batch_size(task.batch(seed, 0))
    if n % nproc:
        raise ConfigError(
            f"the {task.name} batch of {n} examples does not split evenly over --nproc {nproc}; "
            f"choose --nproc dividing {n} or set the batch size (e.g. --task-opt batch_size="
            f"{max(nproc, n - n % nproc)}) to a multiple of {nproc}"
        )


# ------------------------------------------------------------------------------------ inside one rank
class DataParallel:
    """What :func:`steepest.app.compare.runner.run_optimizer` needs to train as one rank of a data-parallel run."""

    def __init__(self, info: DistInfo) -> None:
        self.info = info

    @property
    def is_main(self) -> bool:
        return self.info.is_main

    def wrap(self, model: torch.nn.Module, optimizer) -> tuple[torch.nn.Module, Any]:
        """``(DDP(model), distributed optimizer)``; a collective (DDP broadcasts rank 0's weights), so it
        also orders every rank's earlier file checks before rank 0's first write."""
        return wrap_model(model, self.info), wrap_optimizer(optimizer, self.info)

    def batch_fn(self, batch_fn: Callable[[int], Any]) -> Callable[[int], Any]:
        return lambda t: shard(batch_fn(t), self.info.rank, self.info.world_size)

    def reduce_loss(self, loss: torch.Tensor) -> float:
        """The global batch's mean loss (mean of the equal-size shards' means), the same on every rank."""
        x = loss.detach().double().reshape(1).clone()
        dist.all_reduce(x)
        return float(x) / self.info.world_size

    def evaluate_fn(self, evaluate: Callable[[torch.nn.Module], float]) -> Callable[[torch.nn.Module], float]:
        """Every rank evaluates its replica (no collective inside, DDP's forward is bypassed); rank 0's value
        is broadcast so every rank takes the same divergence decision."""

        def run(model: torch.nn.Module) -> float:
            val = torch.tensor([float(evaluate(getattr(model, "module", model)))], dtype=torch.float64)
            dist.broadcast(val, src=0)
            return float(val)

        return run


def _rank_main(job: dict) -> dict | None:
    """One rank: every optimizer of the comparison in turn; rank 0 returns ``{name: result}``."""
    info = init_from_env(backend="gloo", timeout_s=job["collective_timeout_s"])
    try:
        dp = DataParallel(info)
        task = get_task(job["task"], **job["task_kwargs"])
        say = print if (job["log"] and info.is_main) else (lambda s: None)
        results = {}
        for name in job["names"]:
            lr, src = job["lr_table"][name]
            results[name] = run_optimizer(
                name,
                task,
                job["cfg"],
                job["run_dir"],
                lr=lr,
                lr_source=src,
                aux_lr=job["lr_table"]["adamw"][0],
                resume=job["resume"],
                progress=job["progress"] and info.is_main,
                on_step=job["on_step"],
                log=say,
                dp=dp,
            )
        return results if info.is_main else None
    finally:
        cleanup()


def run_distributed(
    task_name: str,
    task_kwargs: dict,
    cfg,
    run_dir: Path,
    lr_table: dict,
    *,
    resume: bool,
    progress: bool,
    on_step: Callable | None,
    log: bool,
    timeout_s: float | None = None,
) -> dict:
    """Run every optimizer of ``cfg`` on ``cfg.nproc`` ranks; return rank 0's ``{name: result}``.

    ``task_name``/``task_kwargs`` rebuild the task in each rank (``get_task(task_name, **task_kwargs)``).
    ``on_step(name, step, loss)`` runs on every rank with the global loss (so an exception it raises stops
    every rank at the same step); it must be picklable (a module-level function). ``timeout_s`` bounds
    the whole job (default :data:`JOB_TIMEOUT_S`); each collective is bounded by
    min(:data:`COLLECTIVE_TIMEOUT_S`, ``timeout_s``). Raises RuntimeError with the failing rank's
    traceback, TimeoutError if the ranks do not finish in time.
    """
    if on_step is not None:
        try:
            pickle.dumps(on_step)
        except Exception as e:
            raise ConfigError(f"with nproc > 1, on_step must be picklable (a module-level function): {e}") from e
    timeout = JOB_TIMEOUT_S if timeout_s is None else float(timeout_s)
    job = dict(
        task=task_name,
        task_kwargs=dict(task_kwargs),
        cfg=cfg,
        run_dir=Path(run_dir),
        lr_table=lr_table,
        names=list(cfg.optimizers),
        resume=resume,
        progress=progress,
        on_step=on_step,
        log=log,
        collective_timeout_s=min(COLLECTIVE_TIMEOUT_S, timeout),
    )
    results = launch(_rank_main, cfg.nproc, (job,), timeout_s=timeout, threads=int(cfg.threads))
    return results[0]


__all__ = [
    "DataParallel",
    "run_distributed",
    "check_nproc",
    "batch_size",
    "shard",
    "COLLECTIVE_TIMEOUT_S",
    "JOB_TIMEOUT_S",
]
