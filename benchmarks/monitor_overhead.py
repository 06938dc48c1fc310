"""Training CPU time with vs without LayerMonitor(every=10): A/B, paired and alternated in one process.

Models (``--models``): ``charlm`` (``steepest compare``'s default charlm: 3 blocks, d_model 128, context 64,
batch 32; 13 Linear layers) and ``gpt2`` (the layer-oracle's GPT-2 zoo model, ``make_subject("gpt2",
"large")``: transformers' GPT2LMHeadModel, 2 layers, width 64, context 64, GPT-2 ``Conv1D`` layers and the tied
head, batch 32 of Shakespeare windows). Each arm (``none`` and every monitor configuration of ``--configs``)
trains its own copy of the same model (same seed, same batches, AdamW) in the same process. A round runs
``every`` steps of every arm, the arms' order rotated each round, so each monitored arm records exactly once
per round; the per-round CPU ratio arm / ``none`` (``time.thread_time``, one torch thread: every kernel runs
on the timed thread) is the paired A/B overhead; its median over ``--rounds`` is the headline, next to the
ratio of the totals and the CPU time spent inside the monitor's hooks (the direct, less noisy share). The
monitor never changes training, so every arm's losses must be equal to ``none``'s bit for bit (checked).
Goal (issue 22): default monitor <= 3% on both models.

Configurations: ``default`` (LayerMonitor(model, every=10), JSONL + CSV sinks), ``warm_start``,
``no_spec_sign`` (microbatches=0), ``spec_sign_every_record`` (spec_sign_every=1), ``exact``.

Run: PYTHONPATH=src .venv/bin/python benchmarks/monitor_overhead.py [--models charlm,gpt2] [--rounds 30]
[--configs default] (writes benchmarks/results/monitor_overhead.json)
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

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from steepest.app.runs import atomic_write_json, environment  # noqa: E402
from steepest.diagnostics import LayerMonitor, default_sinks  # noqa: E402

EVERY = 10
CONFIGS = {
    "default": {},
    "warm_start": {"warm_start": True},
    "no_spec_sign": {"microbatches": 0},
    "spec_sign_every_record": {"spec_sign_every": 1},
    "exact": {"method": "exact"},
}


def model_fns(name: str):
    """(make_model, batch(step), loss(model, batch), description) of a benchmark model."""
    if name == "charlm":
        from steepest.app.tasks import get_task

        task = get_task("charlm", size="default")
        info = {k: task.info[k] for k in ("n_layer", "d_model", "n_head", "context", "batch_size")}
        return task.make_model, (lambda t: task.batch(0, t)), task.loss, info
    if name == "gpt2":
        from steepest.app.reproduce._oracle_subjects import make_subject

        s = make_subject("gpt2", "large")
        return s.make_model, (lambda t: s.batch(0, t, 32)), s.loss, {**s.info, "batch_size": 32}
    raise SystemExit(f"unknown model {name!r}: use charlm or gpt2")


def _timed(fn, acc: list):
    def wrapper(*args, **kwargs):
        c = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            acc[0] += time.thread_time() - c

    return wrapper


class Arm:
    """One training run: a fresh model (seed 0), AdamW, optionally a monitor whose hooks are timed."""

    def __init__(self, make, options: dict | None, tmp: Path) -> None:
        torch.manual_seed(0)
        self.model = make()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.in_hooks = [0.0]
        self.mon = None
        if options is not None:
            self.mon = LayerMonitor(self.model, every=EVERY, sinks=default_sinks(tmp), **options)
            self.mon._pre, self.mon._post = _timed(self.mon._pre, self.in_hooks), _timed(self.mon._post, self.in_hooks)
            self.mon.attach(self.opt)
        self.losses: list[float] = []

    def steps(self, batches, loss_fn) -> tuple[float, float, float]:
        """(thread CPU s, wall s, CPU s inside the monitor's optimizer hooks) of one step per batch."""
        h0, c0, w0 = self.in_hooks[0], time.thread_time(), time.perf_counter()
        for b in batches:
            loss = loss_fn(self.model, b)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.losses.append(loss.detach())
        return time.thread_time() - c0, time.perf_counter() - w0, self.in_hooks[0] - h0


def bench(name: str, configs: list[str], rounds: int, tmp: Path) -> dict:
    make, batch, loss_fn, info = model_fns(name)
    arms = {"none": Arm(make, None, tmp / f"{name}-none")}
    arms.update({c: Arm(make, CONFIGS[c], tmp / f"{name}-{c}") for c in configs})
    names = list(arms)
    cpu = {k: [] for k in names}
    wall = {k: [] for k in names}
    hook = {k: [] for k in names}
    for r in range(rounds + 1):  # round 0: warm-up (allocator, kernels, first record), not counted
        batches = [batch(r * EVERY + i) for i in range(EVERY)]
        k = r % len(names)
        for a in names[k:] + names[:k]:
            c, w, h = arms[a].steps(batches, loss_fn)
            if r:
                cpu[a].append(c)
                wall[a].append(w)
                hook[a].append(h)
    same = {a: all(bool(x == y) for x, y in zip(arms[a].losses, arms["none"].losses)) for a in configs}
    for a in arms.values():
        if a.mon is not None:
            a.mon.detach()
    base_cpu, base_wall = sum(cpu["none"]), sum(wall["none"])
    rows = []
    for a in names:
        ratios = sorted(x / y for x, y in zip(cpu[a], cpu["none"]))
        q = len(ratios) // 4
        rows.append(
            dict(
                model=name,
                config=a,
                options=CONFIGS.get(a),
                cpu_ms_per_step=1e3 * sum(cpu[a]) / (rounds * EVERY),
                ab_cpu_median=statistics.median(ratios) - 1,
                ab_cpu_iqr=[ratios[q] - 1, ratios[-1 - q] - 1],
                ab_cpu_total=sum(cpu[a]) / base_cpu - 1,
                ab_wall_total=sum(wall[a]) / base_wall - 1,
                in_monitor_share=sum(hook[a]) / base_cpu,
                losses_equal_to_none=same.get(a, True),
                round_cpu_ms=[1e3 * x for x in cpu[a]],
            )
        )
    return dict(model=name, info=info, rows=rows)


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="charlm,gpt2")
    ap.add_argument("--rounds", type=int, default=30, help="rounds of EVERY=10 steps per arm (one record each)")
    ap.add_argument("--configs", default="default")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: thread_time covers every kernel)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "monitor_overhead.json"))
    args = ap.parse_args(argv)
    configs = [c for c in args.configs.split(",") if c]
    if not configs or any(c not in CONFIGS for c in configs):
        raise SystemExit(f"--configs: names from {list(CONFIGS)}, got {configs}")
    torch.set_num_threads(args.threads)
    load0 = list(os.getloadavg())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in [m for m in args.models.split(",") if m]:
            res = bench(m, configs, args.rounds, Path(tmp))
            results.append(res)
            print(f"\n{m}: {res['info']}  (load {os.getloadavg()[0]:.1f})")
            print(
                "| config | CPU ms/step | A/B CPU median (IQR) | A/B CPU total | A/B wall | in-monitor | losses equal |"
            )
            print("|---|---|---|---|---|---|---|")
            for row in res["rows"]:
                print(
                    f"| {row['config']} | {row['cpu_ms_per_step']:.1f} | {row['ab_cpu_median']:+.1%} "
                    f"({row['ab_cpu_iqr'][0]:+.1%}..{row['ab_cpu_iqr'][1]:+.1%}) | {row['ab_cpu_total']:+.1%} "
                    f"| {row['ab_wall_total']:+.1%} | {row['in_monitor_share']:.1%} | {row['losses_equal_to_none']} |",
                    flush=True,
                )
    default = [r for res in results for r in res["rows"] if r["config"] == "default"]
    atomic_write_json(
        args.out,
        {
            "benchmark": "benchmarks/monitor_overhead.py",
            "command": " ".join(["python", "benchmarks/monitor_overhead.py", *(argv or sys.argv[1:])]),
            "commit": _commit(),
            "environment": environment(),
            "optimizer": "AdamW(lr=1e-3)",
            "every": EVERY,
            "rounds": args.rounds,
            "threads": args.threads,
            "clock": "time.thread_time",
            "load_average_start": load0,
            "load_average_end": list(os.getloadavg()),
            "results": results,
            "meets_goal": bool(default) and all(r["ab_cpu_median"] <= 0.03 for r in default),
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
