"""Data-parallel plumbing for scripts and ``steepest compare --nproc``: process group, DDP, checkpoints.

Two ways to run N processes, both ending in :func:`init_from_env` inside each process:

* ``torchrun --nproc-per-node N script.py`` (torch.distributed.run sets RANK, WORLD_SIZE,
  LOCAL_RANK, MASTER_ADDR, MASTER_PORT);
* :func:`launch` (``launch(fn, N, args)``): spawns N local processes with the same variables on
  127.0.0.1 and a free port, joins them with a deadline (a hang becomes a TimeoutError) and returns
  each rank's return value.

Inside a process::

    info = init_from_env()                                   # world size 1 without the variables
    model = wrap_model(model, info)                          # DDP when world_size > 1
    opt = wrap_optimizer(steepest.Muon(steepest.param_groups(model), lr=0.02, weight_decay=0.0), info)  # steepest.distributed
    x_local = shard_batch(x_global, info)                    # this rank's slice of the global batch
    ... train; save_checkpoint(dir, model, opt) / load_checkpoint(dir, model, opt) (any world size)
    cleanup()

With equal slices, DDP's averaged gradient equals the full-batch gradient of a mean loss, so the run
matches the one-process run on the same global batch up to float summation order.
"""

from __future__ import annotations

import dataclasses
import datetime
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from steepest.app.checkpoint import load_checkpoint, save_checkpoint  # noqa: F401 (the launch API's checkpoints)
from steepest.app.guard import Terminated, raise_terminated
from steepest.app.runs import ConfigError
from steepest.optim.sharded import defines_own_step, distributed
from steepest.optim.steepest import SteepestDescent


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``; ``initialized`` if a group was set up."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise ValueError(f"environment variable {name} is not set; launch with torchrun or steepest's launch()")
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_from_env(backend: str | None = None, timeout_s: float = 300.0) -> DistInfo:
    """Initialise the default process group from torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT). Without WORLD_SIZE (or with 1) nothing is initialised and a one-process
    DistInfo is returned. ``backend`` defaults to nccl with CUDA, gloo otherwise; ``timeout_s`` bounds
    every collective (a hang raises instead of blocking forever).

    Example: ``info = init_from_env(); print(info.rank, info.world_size)``.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {world}")
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise ValueError(f"RANK must be in [0, {world}), got {rank}")
    if world == 1:
        return DistInfo(local_rank=local_rank)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        for name in ("MASTER_ADDR", "MASTER_PORT"):
            if name not in os.environ:
                raise ValueError(f"environment variable {name} is not set; launch with torchrun or launch()")
        dist.init_process_group(backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=timeout_s))
    return DistInfo(rank, world, local_rank, dist.get_backend(), True)


def wrap_model(model: torch.nn.Module, info: DistInfo, **ddp_kwargs) -> torch.nn.Module:
    """``DistributedDataParallel(model)`` when ``info.world_size > 1``, else ``model``. DDP broadcasts
    rank 0's weights at construction, so replicas start identical; pass ``find_unused_parameters=True``
    for models whose forward skips parameters on some ranks."""
    if info.world_size == 1:
        return model
    if torch.cuda.is_available() and info.backend == "nccl":
        ddp_kwargs.setdefault("device_ids", [info.local_rank])
    return DistributedDataParallel(model, **ddp_kwargs)


def wrap_optimizer(optimizer: torch.optim.Optimizer, info: DistInfo, process_group=None):
    """:func:`steepest.distributed` for steepest optimizers (steepest.Adaptive included) when
    ``world_size > 1``; other optimizers (torch.optim.AdamW, ...) and user subclasses that replace
    ``step`` are returned unchanged: DDP's averaged gradients already keep their replicas in step,
    each rank computing every update itself."""
    if info.world_size == 1 or not isinstance(optimizer, SteepestDescent) or defines_own_step(type(optimizer)):
        return optimizer
    return distributed(optimizer, process_group=process_group)


def shard(batch: Any, rank: int, world_size: int) -> Any:
    """Rank ``rank``'s contiguous slice (dim 0) of every tensor in ``batch`` (tensors, tuples, lists, dicts;
    anything else passes through): the application's one batch sharder. The caller checks that dim 0
    divides evenly (:func:`shard_batch`, ``check_nproc``), so that DDP's mean of per-rank mean losses is
    the global mean loss. Example: ``shard((x, y), 1, 2)`` is ``(x[B/2:], y[B/2:])``."""
    if isinstance(batch, torch.Tensor):
        if batch.ndim == 0:
            return batch
        per = batch.shape[0] // world_size
        return batch[rank * per : (rank + 1) * per]
    if isinstance(batch, tuple):
        parts = [shard(b, rank, world_size) for b in batch]
        return type(batch)(*parts) if hasattr(batch, "_fields") else tuple(parts)  # namedtuples keep their type
    if isinstance(batch, list):
        return [shard(b, rank, world_size) for b in batch]
    if isinstance(batch, dict):
        return {k: shard(v, rank, world_size) for k, v in batch.items()}
    return batch


def shard_batch(batch: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's contiguous slice of a global batch tensor (dim 0, :func:`shard`); ValueError unless
    the global batch divides evenly over the ranks."""
    n = batch.shape[0]
    if n % info.world_size:
        raise ValueError(
            f"global batch of {n} does not split evenly over {info.world_size} ranks; "
            "choose a batch size divisible by the number of processes"
        )
    return shard(batch, info.rank, info.world_size)


def cleanup() -> None:
    """Destroy the default process group if one is initialised."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# ------------------------------------------------------------------------------------ local launcher
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for MASTER_PORT)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent(parent: int) -> None:
    """Make this rank end when the process that launched it ends (however it ends).

    Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``; everywhere: a daemon thread that notices the parent's
    pid change (the rank is re-parented) and kills this process.
    """
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
        except Exception:  # no libc prctl: the watchdog below still covers it
            pass
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="steepest-parent-watch", daemon=True).start()


def _child(
    fn: Callable, rank: int, world: int, port: int, threads: int, out_dir: str, args: tuple, parent: int | None = None
) -> None:
    if parent is not None:
        _die_with_parent(parent)
    # SIGTERM (forwarded by the parent) unwinds like Ctrl-C, so every finally block runs
    signal.signal(signal.SIGTERM, raise_terminated)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    if threads:
        torch.set_num_threads(threads)
    try:
        result = {"ok": fn(*args)}
    except BaseException as e:  # reported to the parent, which raises
        result = {"error": traceback.format_exc(), "summary": f"{type(e).__name__}: {e}"}
        if isinstance(e, ConfigError):
            result["usage"] = str(e)
    # the result is on disk before the process group is torn down: gloo's teardown can abort a rank whose peer
    # left first ("terminate called without an active exception", SIGABRT), after the work is done
    try:
        torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        cleanup()


#: Seconds the ranks get to finish after a signal is forwarded (or after one of them failed) before they
#: are killed.
GRACE_S = 10.0


def _stop(procs, sig: int, grace_s: float) -> None:
    """Send ``sig`` to every live rank, wait up to ``grace_s`` in all, then SIGKILL the rest."""
    for p in procs:
        if p.is_alive():
            try:
                os.kill(p.pid, sig)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def launch(
    fn: Callable, nproc: int, args: tuple = (), *, timeout_s: float = 120.0, threads: int = 1, grace_s: float = GRACE_S
) -> list[Any]:
    """Run ``fn(*args)`` in ``nproc`` spawned processes with torchrun's variables on 127.0.0.1 and
    return the list of their return values (rank order). ``fn`` must be importable (module level)
    and should call :func:`init_from_env`. Raises RuntimeError with the child's traceback if a rank
    fails and TimeoutError (after killing every rank) if they do not finish within ``timeout_s``. A rank
    that returned its result and then crashed while tearing down (gloo can abort a rank whose peer left
    first) keeps its result, with a RuntimeWarning that names it.

    Robustness: no rank outlives this process (each rank dies with its parent: PR_SET_PDEATHSIG
    on Linux and a watchdog thread); SIGINT/SIGTERM received here (KeyboardInterrupt in the main
    thread; SIGTERM is turned into one while launch waits) is forwarded to every rank, which gets
    ``grace_s`` seconds before being killed, then re-raised; when a rank dies or fails the others get
    ``grace_s`` seconds and are then killed, and the error names the rank that died first (a killed
    rank, not the surviving ones whose collectives then failed).

    Example: ``launch(train, 2, (config,))``.
    """
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 1:
        raise ValueError(f"nproc must be a positive int, got {nproc!r}")
    ctx = mp.get_context("spawn")
    port = free_port()
    main_thread = threading.current_thread() is threading.main_thread()
    with tempfile.TemporaryDirectory(prefix="steepest-launch-") as out_dir:
        procs = [
            ctx.Process(target=_child, args=(fn, r, nproc, port, threads, out_dir, args, os.getpid()), daemon=True)
            for r in range(nproc)
        ]
        old_term = signal.signal(signal.SIGTERM, raise_terminated) if main_thread else None
        first_dead: list[int] = []
        finished: set[int] = set()
        try:
            for p in procs:
                p.start()
            deadline = time.monotonic() + timeout_s
            stop_at = None
            while any(p.is_alive() for p in procs):
                now = time.monotonic()
                if now >= deadline or (stop_at is not None and now >= stop_at):
                    break
                wait = min(deadline, stop_at or deadline) - now
                mp.connection.wait([p.sentinel for p in procs if p.is_alive()], timeout=min(wait, 1.0))
                newly = []
                for r, p in enumerate(procs):
                    if p.is_alive() or r in finished:
                        continue
                    finished.add(r)
                    res = _result(out_dir, r, None)
                    if (p.exitcode != 0 and not (res and "ok" in res)) or res is None or "error" in res:
                        newly.append((res is not None and "error" in res, r))  # a killed rank before its victims
                first_dead += [r for _, r in sorted(newly)]
                if first_dead and stop_at is None:
                    stop_at = time.monotonic() + grace_s  # the others' collectives will fail: let them report
        except KeyboardInterrupt as e:
            sig = signal.SIGTERM if isinstance(e, Terminated) else signal.SIGINT
            _stop(procs, sig, grace_s)
            raise
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, old_term)
        alive = [r for r, p in enumerate(procs) if p.is_alive()]
        _stop(procs, signal.SIGKILL, 0.0)
        results = [_result(out_dir, r, None) for r in range(nproc)]
    codes = [p.exitcode for p in procs]
    usage = next((res["usage"] for res in results if res and "usage" in res), None)
    if usage is not None:
        raise ConfigError(usage)
    if first_dead:
        culprit = first_dead[0]
        res = results[culprit]
        why = res["summary"] if res and "summary" in res else _exit_text(codes[culprit])
        detail = "\n".join(f"rank {r}:\n{res['error']}" for r, res in enumerate(results) if res and "error" in res)
        others = [
            f"rank {r}: "
            + (
                f"failed ({results[r]['summary'][:200]})"
                if results[r] and "summary" in results[r]
                else _exit_text(codes[r])
            )
            for r in range(nproc)
            if r != culprit
        ]
        raise RuntimeError(
            f"distributed run failed: rank {culprit} failed first ({why}); then "
            f"{', '.join(others)}" + (f"\n{detail}" if detail else "")
        )
    if alive:
        raise TimeoutError(f"ranks {alive} did not finish within {timeout_s:.0f} s (a hung collective?); killed")
    errors = [f"rank {r}:\n{res['error']}" for r, res in enumerate(results) if res and "error" in res]
    if errors:
        raise RuntimeError("distributed run failed\n" + "\n".join(errors))
    missing = [r for r, res in enumerate(results) if res is None]
    if missing:
        raise RuntimeError(
            f"ranks {missing} exited without a result ({', '.join(_exit_text(codes[r]) for r in missing)})"
        )
    late = [f"rank {r} ({_exit_text(c)})" for r, c in enumerate(codes) if c != 0]
    if late:  # every rank returned: the results stand, the crash after them is reported
        warnings.warn(
            f"{', '.join(late)} returned its result, then exited abnormally while tearing down (the process "
            "group or the interpreter); the results are kept",
            RuntimeWarning,
            stacklevel=2,
        )
    return [res["ok"] for res in results]


def _result(out_dir: str, rank: int, default):
    f = Path(out_dir) / f"rank{rank}.pt"
    if not f.exists():
        return default
    try:
        return torch.load(f, weights_only=False)
    except Exception:  # written while the rank was killed
        return default


__all__ = [
    "DistInfo",
    "init_from_env",
    "wrap_model",
    "wrap_optimizer",
    "shard",
    "shard_batch",
    "cleanup",
    "save_checkpoint",
    "load_checkpoint",
    "free_port",
    "launch",
]
