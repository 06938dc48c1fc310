"""The training loop of ``steepest compare``: one model, one optimizer, a deterministic data order.

Kept free of run-directory logic so it can be wrapped (e.g. by torch.distributed launchers): it takes
the model, the optimizer and the task's functions, and reports through callbacks.

Learning-rate schedule (the same for every optimizer): linear warmup over the first
``warmup`` fraction of the steps, constant, then linear decay to zero over the last ``cooldown``
fraction (the trapezoid used by the NanoGPT speedrun):

    factor(t) = min(1, (t+1)/W, (S-t)/C),  W = max(1, warmup S), C = max(1, cooldown S).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from steepest.optim.steepest import NonFiniteGradientError


def lr_factor(step: int, total: int, warmup: float = 0.05, cooldown: float = 0.3) -> float:
    """The trapezoid schedule's multiplier for 0-based ``step`` of ``total`` (see the module docstring).

    >>> [round(lr_factor(t, 10, warmup=0.2, cooldown=0.5), 2) for t in range(10)]
    [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.8, 0.6, 0.4, 0.2]
    """
    w = max(1.0, warmup * total)
    c = max(1.0, cooldown * total)
    return max(0.0, min(1.0, (step + 1) / w, (total - step) / c))


@dataclasses.dataclass
class LoopState:
    """Where a run stands: the next step, wall seconds so far (of which evaluation), CPU seconds, divergence.

    ``cpu`` is this process's CPU time (``time.process_time``) spent in training and evaluation: on a
    shared machine it is what the run would take on idle cores (with one thread).
    """

    step: int = 0
    wall: float = 0.0
    eval_wall: float = 0.0
    cpu: float = 0.0
    diverged_at: int | None = None
    diverged_reason: str | None = None


def evaluate(model: nn.Module, evaluate_fn: Callable[[nn.Module], float]) -> float:
    """``evaluate_fn(model)`` in eval mode under ``torch.no_grad()``; the model is put back in train mode."""
    model.eval()
    try:
        with torch.no_grad():
            return float(evaluate_fn(model))
    finally:
        model.train()


def train_loop(
    model: nn.Module,
    optimizer,
    batch_fn: Callable[[int], Any],
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    evaluate_fn: Callable[[nn.Module], float],
    *,
    steps: int,
    eval_every: int,
    state: LoopState | None = None,
    base_lrs: list[float] | None = None,
    warmup: float = 0.05,
    cooldown: float = 0.3,
    on_step: Callable[[int, float, float], None] | None = None,
    on_eval: Callable[[int, float, LoopState], None] | None = None,
    reduce_loss: Callable[[torch.Tensor], float] | None = None,
) -> LoopState:
    """Train from ``state.step`` to ``steps``; evaluate at step 0, every ``eval_every`` steps and at the end.

    Each step t: set every group's lr to ``base_lrs[i] * lr_factor(t, steps)``, compute
    ``loss_fn(model, batch_fn(t))``, backpropagate, step. A NaN/Inf training or validation loss (or a
    :class:`steepest.NonFiniteGradientError`) marks the run diverged at that step and stops it.
    ``on_step(t, loss, lr_factor)`` runs after each step (it may raise, e.g. KeyboardInterrupt, to stop);
    ``on_eval(step, val_loss, state)`` runs after each evaluation, ``step`` counting the steps done.
    ``reduce_loss(loss) -> float`` turns the step's loss tensor into the recorded value (default
    ``float(loss)``; data-parallel runs pass the all-reduced global mean, so every rank takes the same
    divergence decision).

    Returns the final :class:`LoopState`; wall time counts only training and evaluation.
    """
    if steps < 1 or eval_every < 1:
        raise ValueError(f"steps and eval_every must be >= 1, got {steps} and {eval_every}")
    state = state or LoopState()
    groups = optimizer.param_groups
    base_lrs = list(base_lrs) if base_lrs is not None else [float(g["lr"]) for g in groups]
    model.train()

    def run_eval(done: int) -> bool:
        t0, c0 = time.perf_counter(), time.process_time()
        val = evaluate(model, evaluate_fn)
        state.cpu += time.process_time() - c0
        spent = time.perf_counter() - t0
        state.wall += spent
        state.eval_wall += spent
        if not math.isfinite(val):
            state.diverged_at, state.diverged_reason = done, f"validation loss {val}"
        if on_eval is not None:
            on_eval(done, val, state)
        return state.diverged_at is None

    if state.step == 0 and not run_eval(0):
        return state
    while state.step < steps:
        t = state.step
        t0, c0 = time.perf_counter(), time.process_time()
        factor = lr_factor(t, steps, warmup, cooldown)
        for g, base in zip(groups, base_lrs):
            g["lr"] = base * factor
        loss = loss_fn(model, batch_fn(t))
        value = float(loss.detach()) if reduce_loss is None else float(reduce_loss(loss.detach()))
        if not math.isfinite(value):
            state.diverged_at, state.diverged_reason = t, f"training loss {value}"
            return state
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        try:
            optimizer.step()
        except NonFiniteGradientError as e:
            state.diverged_at, state.diverged_reason = t, f"non-finite gradient: {e}"
            return state
        state.step = t + 1
        state.wall += time.perf_counter() - t0
        state.cpu += time.process_time() - c0
        if on_step is not None:
            on_step(t, value, factor)
        if (state.step % eval_every == 0 or state.step == steps) and not run_eval(state.step):
            return state
    return state
