"""One optimizer's run inside a comparison: build, resume from a checkpoint, train, record.

Checkpoints (``checkpoints/<name>.pt``, written atomically at every evaluation) hold the model and
optimizer state dicts, the torch / numpy / Python RNG states (as plain tensors and lists: a checkpoint
is data only and loads with ``weights_only=True``), the loop state (the next step, which is
also the data position because batches are a pure function of (seed, step)) and the wall time so far.
"""

from __future__ import annotations

import json
import math
import resource
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from steepest._io import FileTooLarge, scan_jsonl
from steepest.app.checkpoint import read_checkpoint, rng_state, save_checkpoint, set_rng_state
from steepest.app.compare.knobs import write_knobs
from steepest.app.compare.loop import LoopState, train_loop
from steepest.app.compare.monitor import attach_monitor
from steepest.app.compare.optimizers import OPTIMIZERS, build_optimizer, state_bytes
from steepest.app.guard import read_json
from steepest.app.runs import ConfigError, append_jsonl, atomic_write_json, atomic_write_text

PEAK_KIND = "process peak RSS (ru_maxrss; cumulative over the whole process, so it never decreases)"


def run_key(name: str, cfg, lr: float, aux_lr: float) -> dict:
    """What a checkpoint must agree on with the run resuming it (stored in the checkpoint as ``run``)."""
    keys = ("task", "size", "seed", "steps", "eval_every", "warmup", "cooldown", "task_options")
    key = {k: getattr(cfg, k) for k in keys if hasattr(cfg, k)}
    return json.loads(json.dumps({"optimizer": name, **key, "lr": float(lr), "aux_lr": float(aux_lr)}, default=str))


def _restart_hint(path: Path) -> str:
    name = path.stem
    return (
        f"delete it (and metrics/{name}.jsonl, diagnostics/{name}.jsonl) to restart {name} from scratch, or restore it"
    )


def write_checkpoint(path: Path, model, optimizer, state: LoopState, run: dict | None = None) -> None:
    """Atomically save everything needed to continue bit for bit (see the module docstring), as data only
    (:func:`steepest.app.checkpoint.save_checkpoint`: tensors, numbers, strings; RNG states as lists)."""
    save_checkpoint(path, model, optimizer, {"loop": vars(state).copy(), "rng": rng_state(), "run": run})


def resume_checkpoint(path: Path, model, optimizer, run: dict | None = None, steps: int | None = None) -> LoopState:
    """Restore model, optimizer and RNG states from ``path``; return the loop state to continue from.

    ConfigError naming ``path`` when it is truncated or not a checkpoint, needs more than plain data to
    load (a pickled object: refused, nothing in it runs), was written by a run with another ``run`` key
    (:func:`run_key`), does not fit ``model``/``optimizer``, or its step is beyond ``steps``.
    """
    path = Path(path)
    fix = _restart_hint(path)
    payload = read_checkpoint(path, fix)
    need = {"model": dict, "optimizer": dict, "loop": dict, "rng": dict}
    if not isinstance(payload, dict) or any(not isinstance(payload.get(k), t) for k, t in need.items()):
        raise ConfigError(f"{path} is not a steepest compare checkpoint (expected keys {sorted(need)}): {fix}")
    saved = payload.get("run")
    if run is not None and saved is not None and saved != run:
        diff = sorted(k for k in set(run) | set(saved) if run.get(k) != saved.get(k))
        raise ConfigError(
            f"{path} was written by a run with other settings ({', '.join(diff)}: "
            f"{ {k: saved.get(k) for k in diff} } there, { {k: run.get(k) for k in diff} } here): {fix}"
        )
    try:
        state = LoopState(**payload["loop"])
    except TypeError as e:
        raise ConfigError(f"{path} holds a damaged loop state ({e}): {fix}") from None
    bad = _loop_state_problem(state)
    if bad:
        raise ConfigError(f"{path} holds a damaged loop state ({bad}): {fix}")
    if not isinstance(state.step, int) or state.step < 0 or (steps is not None and state.step > steps):
        raise ConfigError(
            f"{path} is at step {state.step}, beyond this run's {steps} steps (a checkpoint of a longer run?): {fix}"
        )
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        set_rng_state(payload["rng"])
    except (RuntimeError, ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
        raise ConfigError(
            f"{path} does not fit this run's model or optimizer ({type(e).__name__}: {str(e)[:300]}): {fix}"
        ) from None
    return state


def _loop_state_problem(state: LoopState) -> str | None:
    """What is wrong with a loaded loop state's types and values (None when it is fine): a string where a
    number belongs would otherwise fail mid-run, a NaN wall time would spoil the table."""

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0

    for key in ("wall", "eval_wall", "cpu"):
        if not number(getattr(state, key)):
            return f"{key} = {getattr(state, key)!r} is not a finite number >= 0"
    if state.diverged_at is not None and not (isinstance(state.diverged_at, int) and state.diverged_at >= 0):
        return f"diverged_at = {state.diverged_at!r} is not a step"
    if state.diverged_reason is not None and not isinstance(state.diverged_reason, str):
        return f"diverged_reason = {state.diverged_reason!r} is not text"
    return None


#: Largest metrics/diagnostics JSONL a resume reads back (a 3000-step run writes well under 1 MB).
MAX_JSONL_BYTES = 512 * 2**20


def check_entries(run_dir: Path, name: str) -> None:
    """ConfigError naming the entry when a folder of ``run_dir`` a run writes is not a directory (a file or a
    symbolic link, whose target steepest would write into) or one of ``name``'s files (checkpoint, metrics,
    diagnostics, result) is not a regular file (a directory, or a link: appends would go to its target)."""
    for folder in ("checkpoints", "metrics", "results", "diagnostics", "figures"):
        sub = run_dir / folder
        if (sub.exists() or sub.is_symlink()) and (sub.is_symlink() or not sub.is_dir()):
            raise ConfigError(
                f"{sub} is not a directory (steepest keeps its {folder} there): move it away, or choose another --out"
            )
        if folder == "figures":
            continue
        entry = sub / f"{name}{'.pt' if folder == 'checkpoints' else '.json' if folder == 'results' else '.jsonl'}"
        if (entry.exists() or entry.is_symlink()) and (entry.is_symlink() or not entry.is_file()):
            raise ConfigError(
                f"{entry} is not a regular file (a directory or a link): move it away, or delete "
                "it to rerun this optimizer"
            )


def _records(path: Path, fix: str, keys=("step", "kind")) -> list[dict]:
    """The records of a metrics/diagnostics JSONL file; ConfigError naming the damaged lines otherwise."""
    try:
        records, bad = scan_jsonl(path, MAX_JSONL_BYTES)
    except FileTooLarge as e:
        raise ConfigError(f"{e}: {fix}") from None
    offsets = [i for i, r in enumerate(records) if not (isinstance(r.get("step"), int) and all(k in r for k in keys))]
    if bad or offsets:
        what = f"{len(bad) + len(offsets)} damaged record(s)"
        if bad:
            what += f" (unreadable line(s) {', '.join(map(str, bad[:10]))})"
        raise ConfigError(f"{path} has {what}; resuming would lose them: {fix}")
    return records


def expected_evals(step: int, steps: int, eval_every: int) -> list[int]:
    """The evaluation steps a run has recorded once it reached ``step``: 0, every ``eval_every``, the last."""
    done = list(range(0, step + 1, eval_every))
    if step == steps and done[-1] != steps:
        done.append(steps)
    return done


def _truncate_metrics(
    path: Path,
    step: int,
    diagnostics: bool = False,
    *,
    steps: int | None = None,
    eval_every: int | None = None,
    fix: str = "",
) -> None:
    """Keep the records a checkpoint at ``step`` has already seen (train steps and diagnostics < step,
    evaluations <= step; at step 0 none, because the loop evaluates step 0 again). Damaged records, or
    evaluations missing before ``step``, raise ConfigError (resuming would silently lose them)."""
    records = _records(path, fix, keys=("step",) if diagnostics else ("step", "kind"))
    keep = [
        r
        for r in records
        if r["step"] < step or (not diagnostics and step > 0 and r["kind"] == "eval" and r["step"] == step)
    ]
    if not diagnostics and steps is not None and eval_every is not None and step > 0:
        have = [r["step"] for r in keep if r["kind"] == "eval"]
        want = expected_evals(step, steps, eval_every)
        if have != want:
            lost = sorted(set(want) - set(have))
            raise ConfigError(
                f"{path} lacks the evaluation(s) at step(s) {lost or have} that its checkpoint "
                f"(step {step}) has seen; resuming would lose them: {fix}"
            )
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def _result_check(data) -> str | None:
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    for key in ("final_val", "best_val", "evals", "steps_done", "diverged_at", "wall_s", "label", "lr"):
        if key not in data:
            return f"no key {key!r}"
    try:
        float(data["final_val"]), float(data["best_val"])
        [(int(s), float(v)) for s, v in data["evals"]]
    except (TypeError, ValueError):
        return "final_val, best_val or evals are not numbers"
    return None


def load_result(path: Path) -> dict:
    """Read ``results/<name>.json`` back, turning the strings "nan"/"inf" of strict JSON into floats.

    ConfigError naming the file when it is damaged or of the wrong shape."""
    path = Path(path)
    r = read_json(
        path,
        f"the finished result of {path.stem}",
        f"delete it to rerun {path.stem} (its checkpoint resumes it), or restore it",
        _result_check,
    )
    for key in ("final_val", "best_val"):
        r[key] = float(r[key])
    r["evals"] = [(int(s), float(v)) for s, v in r["evals"]]
    return r


def peak_mb() -> float:
    """Process peak resident memory in MB (ru_maxrss is KB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


class HeldOutLoss:
    """``held_out()``: the task's loss on a held-out training batch at the model's current weights.

    The batch for training step ``t`` is ``task.batch((HELD_OUT_SEED - seed) mod 2**63, t)``: drawn like the
    training batches but from another stream (the tasks' batches are pure functions of (seed, step)), so it
    is new at every step and never trained on (s -> (C - s) mod 2**63 with C odd never maps a seed to itself,
    and stays in the seed range [0, 2**63 - 1] for every seed). Used by the layer oracle (``adaptive-oracle``), which calls it at the
    step's weights before the step is taken. ``step`` is set by the training loop's callback; on resume it
    starts from the checkpoint's step.
    """

    HELD_OUT_SEED = 2**31 - 1

    def __init__(self, task, model: torch.nn.Module, seed: int, step: int = 0) -> None:
        self.task, self.model, self.seed, self.step = task, model, int(seed), int(step)

    def __call__(self) -> torch.Tensor:
        with torch.no_grad():
            return self.task.loss(self.model, self.task.batch((self.HELD_OUT_SEED - self.seed) % 2**63, self.step))


def run_optimizer(
    name: str,
    task,
    cfg,
    run_dir: Path,
    *,
    lr: float,
    lr_source: str,
    aux_lr: float,
    resume: bool,
    progress: bool = True,
    on_step: Callable | None = None,
    log: Callable[[str], None] = print,
    dp=None,
) -> dict:
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
    check_entries(run_dir, name)
    if resume and result_path.exists():
        log(f"{name}: finished earlier, kept ({result_path})")
        return load_result(result_path)

    torch.manual_seed(cfg.seed)
    model = task.make_model()
    held_out = HeldOutLoss(task, model, cfg.seed)
    optimizer = build_optimizer(name, model, lr, aux_lr, task.routing, held_out=held_out, steps=cfg.steps)
    base_lrs = [float(g["lr"]) for g in optimizer.param_groups]
    state = LoopState()
    run = run_key(name, cfg, lr, aux_lr)
    if resume and ckpt.exists():
        state = resume_checkpoint(ckpt, model, optimizer, run=run, steps=cfg.steps)
        if main:
            fix = _restart_hint(ckpt)
            _truncate_metrics(metrics, state.step, steps=cfg.steps, eval_every=cfg.eval_every, fix=fix)
            _truncate_metrics(diag, state.step, diagnostics=True, fix=fix)
            log(f"{name}: resuming from step {state.step}")
        held_out.step = state.step
    elif main:
        for p in (metrics, diag, ckpt):
            if p.exists():
                p.unlink()
    train_model, batch_fn, evaluate_fn, reduce_loss = model, (lambda t: task.batch(cfg.seed, t)), task.evaluate, None
    if dp is not None:  # a collective: every rank has checked the files above before rank 0 writes any
        train_model, optimizer = dp.wrap(model, optimizer)
        batch_fn, evaluate_fn, reduce_loss = dp.batch_fn(batch_fn), dp.evaluate_fn(evaluate_fn), dp.reduce_loss
    every = cfg.monitor_every if (name in cfg.monitored and main) else 0
    monitor = attach_monitor(
        model,
        optimizer,
        diag,
        every,
        state.step,
        note=lambda t: log(f"{name}: {t}"),
        oracle_every=getattr(cfg, "oracle_every", 0),
        held_out=held_out,
    )

    bar = None
    if progress and main:
        bar = tqdm(
            total=cfg.steps, initial=state.step, desc=f"{name:>10}", leave=True, dynamic_ncols=True, disable=None
        )

    def step_cb(t: int, loss: float, factor: float) -> None:
        held_out.step = t + 1
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
            write_checkpoint(ckpt, model, optimizer, st, run)

    try:
        state = train_loop(
            train_model,
            optimizer,
            batch_fn,
            task.loss,
            evaluate_fn,
            steps=cfg.steps,
            eval_every=cfg.eval_every,
            state=state,
            base_lrs=base_lrs,
            warmup=cfg.warmup,
            cooldown=cfg.cooldown,
            on_step=step_cb,
            on_eval=eval_cb,
            reduce_loss=reduce_loss,
        )
    finally:
        if bar is not None:
            bar.close()
        if monitor is not None:
            monitor.close()
    if not main:
        return {}

    evals = [(r["step"], float(r["val_loss"])) for r in _records(metrics, _restart_hint(ckpt)) if r["kind"] == "eval"]
    finite = [v for _, v in evals if math.isfinite(v)]
    train_steps = max(state.step, 1)
    result = dict(
        optimizer=name,
        label=OPTIMIZERS[name].label,
        lr=lr,
        lr_source=lr_source,
        aux_lr=aux_lr,
        evals=evals,
        final_val=evals[-1][1] if evals and state.diverged_at is None else float("nan"),
        best_val=min(finite) if finite else float("nan"),
        steps_done=state.step,
        diverged_at=state.diverged_at,
        diverged_reason=state.diverged_reason,
        wall_s=state.wall,
        cpu_s=state.cpu,
        ms_per_step=1000.0 * (state.wall - state.eval_wall) / train_steps,
        state_mb=state_bytes(optimizer) / 2**20,
        peak_mb=peak_mb(),
        peak_kind=PEAK_KIND,
    )
    atomic_write_json(result_path, result)
    write_knobs(run_dir, name, optimizer)  # a time chooser's knob per layer over the run (report section)
    status = "ok" if state.diverged_at is None else f"DIVERGED at step {state.diverged_at} ({state.diverged_reason})"
    log(f"{name}: final val {result['final_val']:.4f}, best {result['best_val']:.4f}, {state.wall:.1f}s, {status}")
    return result
