"""Training-time overhead of LayerMonitor(every=10) on the charlm default model of ``steepest compare``.

The model, batches and loss are the real task's (``steepest.app.tasks.get_task("charlm")``, size "default":
3 blocks, d_model 128, context 64, batch 32; 13 Linear layers). Each configuration trains a fresh model
(same seed, same batches) with AdamW for ``steps`` steps, single thread; configurations are interleaved
over ``repeats`` rounds to spread machine noise, and the median per-step CPU time (time.thread_time of the
training thread, less sensitive to other jobs on the shared box than wall time; with ``--threads 1`` every
kernel runs on it) and wall time are reported. Overhead =
median(with) / median(without) - 1 (A/B; noisy on a shared box: +-10% between repeats), and, precisely,
the CPU time spent inside the monitor's optimizer hooks (where every metric is computed) divided by the
unmonitored step's CPU time (both thread_time). Goal (issue 12): <= 3% with the default monitor.

Configurations: ``none`` (no monitor), ``default`` (LayerMonitor(model, every=10), JSONL + CSV sinks),
``warm_start`` (warm_start=True: ||W||_op, ||dW||_op by block Krylov from the last record's vectors),
``spec_sign_every_record`` (spec_sign_every=1: the index on every record), ``no_spec_sign``
(microbatches=0), ``exact`` (method="exact": every norm by an SVD, the slow reference).

Run: .venv/bin/python benchmarks/monitor_overhead.py --threads 1 [--steps 50] [--repeats 3] [--configs none,default]
(writes benchmarks/results/monitor_overhead.json)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from steepest.app.runs import atomic_write_json, environment
from steepest.app.tasks import get_task
from steepest.diagnostics import LayerMonitor, default_sinks

CONFIGS = {
    "none": None,
    "default": {},
    "warm_start": {"warm_start": True},
    "spec_sign_every_record": {"spec_sign_every": 1},
    "no_spec_sign": {"microbatches": 0},
    "exact": {"method": "exact"},
}


def _timed(fn, acc: list):
    def wrapper(*args, **kwargs):
        c = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[0] += time.thread_time() - c

    return wrapper


def run(task, steps: int, options: dict | None, tmp: Path) -> tuple[float, float, float]:
    """(CPU s/step, wall s/step, CPU s/step inside the monitor's optimizer hooks) of ``steps`` AdamW
    steps, monitored with ``options`` (None: no monitor). The in-hook time is the metric computation
    (all of it runs in the step pre/post hooks); timing it directly is far less noisy than the
    difference of two runs on a shared machine."""
    torch.manual_seed(0)
    model = task.make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    in_hooks = [0.0]
    mon = None
    if options is not None:
        mon = LayerMonitor(model, every=10, sinks=default_sinks(tmp), **options)
        mon._pre, mon._post = _timed(mon._pre, in_hooks), _timed(mon._post, in_hooks)  # before attach()
        mon.attach(opt)
    batches = [task.batch(0, t) for t in range(steps)]
    c0, w0 = time.thread_time(), time.perf_counter()
    for t in range(steps):
        loss = task.loss(model, batches[t])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
    if mon is not None:
        mon.detach()
    return cpu / steps, wall / steps, in_hooks[0] / steps


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: thread_time covers every kernel)")
    args = ap.parse_args()
    names = [c for c in args.configs.split(",") if c]
    bad = [c for c in names if c not in CONFIGS]
    if bad or "none" not in names:
        raise SystemExit(f"--configs must include 'none' and use names from {list(CONFIGS)}; bad: {bad}")
    torch.set_num_threads(args.threads)
    task = get_task("charlm")
    cpu = {k: [] for k in names}
    wall = {k: [] for k in names}
    hook = {k: [] for k in names}
    with tempfile.TemporaryDirectory() as tmp:
        run(task, 5, {}, Path(tmp) / "warm")  # warm-up (allocator, MKL, data)
        for r in range(args.repeats):
            for key in names:
                c, w, h = run(task, args.steps, CONFIGS[key], Path(tmp) / f"{key}{r}")
                cpu[key].append(c)
                wall[key].append(w)
                hook[key].append(h)
                print(
                    f"repeat {r} {key:>24}: cpu {c * 1e3:7.1f} ms/step  wall {w * 1e3:7.1f} ms/step  "
                    f"in monitor {h * 1e3:6.2f} ms/step",
                    flush=True,
                )
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    med_wall = {k: statistics.median(v) for k, v in wall.items()}
    med_hook = {k: statistics.median(v) for k, v in hook.items()}
    rows = []
    print(
        "\n| monitor | CPU ms/step | in-monitor CPU ms/step | in-monitor / training CPU | A/B CPU overhead "
        "| wall ms/step | A/B wall overhead |\n|---|---|---|---|---|---|---|"
    )
    for k in names:
        oc, ow = med_cpu[k] / med_cpu["none"] - 1, med_wall[k] / med_wall["none"] - 1
        direct = med_hook[k] / med_cpu["none"]
        rows.append(
            dict(
                config=k,
                options=CONFIGS[k],
                cpu_ms=med_cpu[k] * 1e3,
                wall_ms=med_wall[k] * 1e3,
                in_monitor_cpu_ms=med_hook[k] * 1e3,
                in_monitor_overhead=direct,
                cpu_overhead=oc,
                wall_overhead=ow,
                all_cpu_ms=[x * 1e3 for x in cpu[k]],
                all_wall_ms=[x * 1e3 for x in wall[k]],
                all_in_monitor_ms=[x * 1e3 for x in hook[k]],
            )
        )
        print(
            f"| {k} | {med_cpu[k] * 1e3:.1f} | {med_hook[k] * 1e3:.2f} | {direct * 100:.1f}% | {oc * 100:+.1f}% "
            f"| {med_wall[k] * 1e3:.1f} | {ow * 100:+.1f}% |"
        )
    default = next((r for r in rows if r["config"] == "default"), None)
    if default is not None:
        print(
            f"default monitor: in-monitor CPU = {default['in_monitor_overhead'] * 100:.1f}% of the unmonitored "
            f"step, A/B CPU {default['cpu_overhead'] * 100:+.1f}% (goal <= 3%)"
        )
    out = Path(__file__).parent / "results" / "monitor_overhead.json"
    atomic_write_json(
        out,
        {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "commit": _commit(),
            "environment": environment(),
            "task": "charlm",
            "size": "default",
            "model": {k: task.info[k] for k in ("n_layer", "d_model", "n_head", "context", "batch_size")},
            "optimizer": "AdamW(lr=1e-3)",
            "threads": args.threads,
            "clock": "time.thread_time",
            "load_average_1_5_15min": list(os.getloadavg()),
            "steps": args.steps,
            "repeats": args.repeats,
            "every": 10,
            "rows": rows,
            "meets_goal": None if default is None else default["in_monitor_overhead"] <= 0.03,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
