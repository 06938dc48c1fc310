"""One optimizer's run inside a comparison: build, resume from a checkpoint, train, record.

Checkpoints (``checkpoints/<name>.pt``, written atomically at every evaluation) hold the model and
optimizer state dicts, the torch / numpy / Python RNG states, the loop state (the next step, which is
also the data position because batches are a pure function of (seed, step)) and the wall time so far.
"""

from __future__ import annotations

import json
import math
import os
import random
import resource
import sys
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from steepest.app.compare.loop import LoopState, train_loop
from steepest.app.compare.monitor import attach_monitor
from steepest.app.compare.optimizers import OPTIMIZERS, build_optimizer, state_bytes
from steepest.app.runs import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl

PEAK_KIND = "process peak RSS (ru_maxrss; cumulative over the whole process, so it never decreases)"


def save_checkpoint(path: Path, model, optimizer, state: LoopState) -> None:
    """Atomically save everything needed to continue bit for bit (see the module docstring)."""
    payload = {
        "model": model.state_dict(), "optimizer": optimizer.state_dict(), "loop": vars(state).copy(),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: Path, model, optimizer) -> LoopState:
    """Restore model, optimizer and RNG states from ``path``; return the loop state to continue from."""
    payload = torch.load(path, map_location="cpu", weights_only=False)
    model.load_state_dict(payload["model"])
    optimizer.load_state_dict(payload["optimizer"])
    torch.set_rng_state(payload["rng"]["torch"])
    np.random.set_state(payload["rng"]["numpy"])
    random.setstate(payload["rng"]["python"])
    return LoopState(**payload["loop"])


def _truncate_metrics(path: Path, step: int, diagnostics: bool = False) -> None:
    """Keep the records a checkpoint at ``step`` has already seen (train steps and diagnostics < step,
    evaluations <= step)."""
    keep = [r for r in read_jsonl(path)
            if r["step"] < step or (not diagnostics and r["kind"] == "eval" and r["step"] == step)]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def load_result(path: Path) -> dict:
    """Read ``results/<name>.json`` back, turning the strings "nan"/"inf" of strict JSON into floats."""
    r = json.loads(Path(path).read_text(encoding="utf-8"))
    for key in ("final_val", "best_val"):
        r[key] = float(r[key])
    r["evals"] = [(int(s), float(v)) for s, v in r["evals"]]
    return r


def peak_mb() -> float:
    """Process peak resident memory in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def run_optimizer(name: str, task, cfg, run_dir: Path, *, lr: float, lr_source: str, aux_lr: float,
                  resume: bool, progress: bool = True, on_step: Callable | None = None,
                  log: Callable[[str], None] = print, dp=None) -> dict:
    """Train ``task`` with optimizer ``name`` and return its result dict (also ``results/<name>.json``).

    ``dp``: a :class:`steepest.app.compare.data_parallel.DataParallel` when this process is one rank of a
    data-parallel run (``--nproc``): every rank trains its shard of each batch, rank 0 alone writes
    files and returns the result (the other ranks return ``{}``).
    """
    main = dp is None or dp.is_main
    result_path = run_dir / "results" / f"{name}.json"
    ckpt = run_dir / "checkpoints" / f"{name}.pt"
    metrics = run_dir / "metrics" / f"{name}.jsonl"
    diag = run_dir / "diagnostics" / f"{name}.jsonl"
    if resume and result_path.exists():
        log(f"{name}: finished earlier, kept ({result_path})")
        return load_result(result_path)

    torch.manual_seed(cfg.seed)
    model = task.make_model()
    optimizer = build_optimizer(name, model, lr, aux_lr, task.routing)
    base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
    state = LoopState()
    if resume and ckpt.exists():
        state = load_checkpoint(ckpt, model, optimizer)
        if main:
            _truncate_metrics(metrics, state.step)
            _truncate_metrics(diag, state.step, diagnostics=True)
            log(f"{name}: resuming from step {state.step}")
    elif main:
        for p in (metrics, diag, ckpt):
            if p.exists():
                p.unlink()
    train_model, batch_fn, evaluate_fn, reduce_loss = model, (lambda t: task.batch(cfg.seed, t)), task.evaluate, None
    if dp is not None:  # a collective: every rank has checked the files above before rank 0 writes any
        train_model, optimizer = dp.wrap(model, optimizer)
        batch_fn, evaluate_fn, reduce_loss = dp.batch_fn(batch_fn), dp.evaluate_fn(evaluate_fn), dp.reduce_loss
    every = cfg.monitor_every if (name in cfg.monitored and main) else 0
    monitor = attach_monitor(model, optimizer, diag, every, state.step)

    bar = None
    if progress and main:
        bar = tqdm(total=cfg.steps, initial=state.step, desc=f"{name:>10}", leave=True, dynamic_ncols=True,
                   disable=None)

    def step_cb(t: int, loss: float, factor: float) -> None:
        if main:
            append_jsonl(metrics, {"kind": "train", "step": t, "loss": loss, "lr_factor": factor})
        if monitor is not None:
            monitor.after_step(t)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        if on_step is not None:
            on_step(name, t, loss)

    def eval_cb(step: int, val: float, st: LoopState) -> None:
        if not main:
            return
        append_jsonl(metrics, {"kind": "eval", "step": step, "val_loss": val, "wall": st.wall})
        if st.diverged_at is None:
            save_checkpoint(ckpt, model, optimizer, st)

    try:
        state = train_loop(train_model, optimizer, batch_fn, task.loss, evaluate_fn,
                           steps=cfg.steps, eval_every=cfg.eval_every, state=state, base_lrs=base_lrs,
                           warmup=cfg.warmup, cooldown=cfg.cooldown, on_step=step_cb, on_eval=eval_cb,
                           reduce_loss=reduce_loss)
    finally:
        if bar is not None:
            bar.close()
        if monitor is not None:
            monitor.close()
    if not main:
        return {}

    evals = [(r["step"], float(r["val_loss"])) for r in read_jsonl(metrics) if r["kind"] == "eval"]
    finite = [v for _, v in evals if math.isfinite(v)]
    train_steps = max(state.step, 1)
    result = dict(
        optimizer=name, label=OPTIMIZERS[name].label, lr=lr, lr_source=lr_source, aux_lr=aux_lr,
        evals=evals, final_val=evals[-1][1] if evals and state.diverged_at is None else float("nan"),
        best_val=min(finite) if finite else float("nan"), steps_done=state.step,
        diverged_at=state.diverged_at, diverged_reason=state.diverged_reason, wall_s=state.wall, cpu_s=state.cpu,
        ms_per_step=1000.0 * (state.wall - state.eval_wall) / train_steps,
        state_mb=state_bytes(optimizer) / 2**20, peak_mb=peak_mb(), peak_kind=PEAK_KIND,
    )
    atomic_write_json(result_path, result)
    status = "ok" if state.diverged_at is None else f"DIVERGED at step {state.diverged_at} ({state.diverged_reason})"
    log(f"{name}: final val {result['final_val']:.4f}, best {result['best_val']:.4f}, {state.wall:.1f}s, {status}")
    return result
