"""Helpers shared by benchmarks/polar.py and benchmarks/step.py: timing, machine facts, tables.

Timing on a shared 2-core machine is noisy (other processes preempt a thread for a scheduler quantum,
~20 ms), so every timed callable is measured in interleaved rounds and reported as median and minimum;
ratios are taken per round (paired) and then the median, which cancels slow drifts in machine load.
"""

from __future__ import annotations

import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from steepest.app.runs import environment  # noqa: E402


def sync(device: torch.device | str) -> None:
    """Wait for queued kernels (a no-op on CPU) so wall-clock time covers the work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def clone_params(base: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    """Fresh parameter copies of ``base`` with copies of their gradients (one optimizer's own set)."""
    out = []
    for p in base:
        q = torch.nn.Parameter(p.detach().clone())
        q.grad = p.grad.clone()
        out.append(q)
    return out


def time_once(fn: Callable[[], object], device="cpu") -> tuple[float, float]:
    """(wall seconds, process CPU seconds) for one call of ``fn`` (synchronised before and after).

    CPU time is less sensitive than wall time to other processes taking the cores (it excludes the
    time this process waited to be scheduled). With one torch thread it is ``time.thread_time()`` (the
    calling thread does all the work); with several it is the process CPU time, which also counts
    OpenMP spin-waiting, so it is then a cross-check, not the headline number.
    """
    clock = time.thread_time if torch.get_num_threads() == 1 else time.process_time
    sync(device)
    c0, t0 = clock(), time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0, clock() - c0


def time_interleaved(
    fns: dict[str, Callable[[], object]],
    rounds: int,
    warmup: int = 1,
    device="cpu",
    progress: bool = False,
    cpu_times: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Time every callable once per round, rotating the order each round; return wall seconds per name.

    Pass a dict as ``cpu_times`` to also receive the process CPU seconds per name.
    """
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    rng = range(rounds)
    if progress:
        from tqdm import tqdm

        rng = tqdm(rng, desc="rounds", disable=not sys.stderr.isatty())
    for r in rng:
        k = r % len(names)
        for name in names[k:] + names[:k]:
            wall, cpu = time_once(fns[name], device)
            times[name].append(wall)
            if cpu_times is not None:
                cpu_times.setdefault(name, []).append(cpu)
    return times


def time_shuffled(
    fns: dict, rounds: int, warmup: int = 1, device="cpu", cpu_times: dict | None = None, seed: int = 0
) -> dict[str, list[float]]:
    """:func:`time_interleaved` with a fresh random order every round (seeded) instead of a rotation,
    and one untimed step of the same optimizer right before each timed one.

    At small sizes a float32 step right after a bf16 step is much slower than one after a float32 step
    (EPYC, 1 thread, 2 matrices of 32x32: 1040-1110 us against 690-900 us, whichever fp32 optimizer it
    is). A rotation keeps the cyclic order, so one optimizer (auto, in this sweep's order) always ran
    right after bf16: auto/fp32 1.15x at 32 in that order, 0.94x with auto before bf16 (the fp32 control
    then took the excess). That was the "auto 1.085x at 32, 1.061x at 48" of issue 22: with a shuffled
    order and 400 rounds auto/fp32 is 0.98-1.02x (control 0.97-1.005x). The untimed step removes the
    carry-over itself, so every timed step follows a step of its own optimizer."""
    rng = random.Random(seed)
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    wall: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name in rng.sample(names, len(names)):
            fns[name]()  # untimed: the timed step follows a step of its own optimizer
            w, c = time_once(fns[name], device)
            wall[name].append(w)
            if cpu_times is not None:
                cpu_times.setdefault(name, []).append(c)
    return wall


class Timer:
    """Accumulates thread CPU seconds of wrapped callables (re-entrant calls are counted once)."""

    def __init__(self) -> None:
        self.total, self.depth = 0.0, 0

    def wrap(self, fn):
        def wrapper(*args, **kwargs):
            if self.depth:
                return fn(*args, **kwargs)
            self.depth += 1
            c = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total += time.thread_time() - c
                self.depth -= 1

        return wrapper


def summarize(ts: list[float]) -> dict:
    """Median, minimum and count of a list of seconds, in milliseconds."""
    return {"median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts), "n": len(ts)}


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num[r] / den[r] (both measured in the same round)."""
    return statistics.median(a / b for a, b in zip(num, den))


def machine() -> dict:
    """The environment of :func:`steepest.app.runs.environment` plus the CPU model and core count."""
    env = environment()
    model = platform.processor() or ""
    flags = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
            if line.startswith("Flags:"):
                flags = line
    except (OSError, subprocess.SubprocessError):
        pass
    import os

    env["cpu_model"] = model
    env["cpu_count"] = os.cpu_count()
    env["avx512_bf16"] = "avx512_bf16" in flags
    env["amx_bf16"] = "amx_bf16" in flags
    env["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    env["torch_threads"] = torch.get_num_threads()
    env["STEEPEST_BF16"] = os.environ.get("STEEPEST_BF16")  # "0"/"1": the CPU kind is simulated (forced)
    try:
        from steepest.linalg.precision import auto_dtype

        env["auto_dtype_cpu"] = str(auto_dtype(torch.device("cpu")))
    except Exception as e:  # an old tree without dtype="auto"
        env["auto_dtype_cpu"] = f"unavailable ({type(e).__name__})"
    env["load_average_1_5_15min"] = list(os.getloadavg())  # other processes share these cores
    return env


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A Markdown table: ``columns`` are (key, header, format) with format like ``"{:.3g}"``."""
    head = "| " + " | ".join(h for _, h, _ in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    lines = [head, sep]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            v = row.get(key)
            cells.append("-" if v is None else fmt.format(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
