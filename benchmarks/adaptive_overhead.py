"""Training-time overhead of steepest.Adaptive's decisions on the charlm default model (issue 11: <= 3%).

The optimizer is ``steepest compare``'s ``adaptive`` (Davis-Drusvyatskiy criterion every 10 steps, the
activation hooks on the model; :func:`steepest.app.compare.optimizers.build_optimizer`), trained on the
real task's batches for ``--steps`` steps, one thread. Measured with ``time.thread_time`` (CPU time of
the one working thread, robust to other jobs on a shared machine):

* the whole training step (forward, backward, optimizer step);
* inside the decisions: ``Adaptive._decide`` for every layer (norms, the activation matrix, the criterion)
  plus the activation hooks (which only keep references on decision steps) and their ``clear``.

Overhead = decision CPU / (training CPU - decision CPU). Also reported: compare's ``specgd`` at the same
lr (what Adaptive is with one candidate: no decision, no hooks), as an A/B cross-check (noisier, and its
dualizations differ where Adaptive chose frobenius).

Run: .venv/bin/python benchmarks/adaptive_overhead.py [--steps 100] [--repeats 2]
(writes benchmarks/results/adaptive_overhead.json)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import steepest  # noqa: E402
from steepest.app.compare.job import resolve_lrs  # noqa: E402
from steepest.app.compare.optimizers import build_optimizer  # noqa: E402
from steepest.app.runs import atomic_write_json, environment  # noqa: E402
from steepest.app.tasks import get_task  # noqa: E402
from steepest.diagnostics import capture as capture_mod  # noqa: E402


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


def run(task, name: str, steps: int, single: bool = False) -> dict:
    torch.manual_seed(0)
    model = task.make_model()
    lrs = resolve_lrs("charlm", "default", [name])
    timer = Timer()
    originals = (steepest.Adaptive._decide, capture_mod.ActivationCapture._hook, capture_mod.ActivationCapture.clear)
    try:
        steepest.Adaptive._decide = timer.wrap(originals[0])
        capture_mod.ActivationCapture._hook = lambda self, n: timer.wrap(originals[1](self, n))
        capture_mod.ActivationCapture.clear = timer.wrap(originals[2])
        # single: compare's specgd at Adaptive's lr, which is Adaptive with one candidate bit for bit
        opt = build_optimizer("specgd" if single else name, model, lrs[name][0], lrs["adamw"][0], task.routing)
        total = 0.0
        for t in range(steps):
            c = time.thread_time()
            loss = task.loss(model, task.batch(0, t))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            total += time.thread_time() - c
    finally:
        steepest.Adaptive._decide, capture_mod.ActivationCapture._hook, capture_mod.ActivationCapture.clear = originals
    return dict(
        step_cpu_s=total / steps,
        decision_cpu_s=timer.total / steps,
        overhead=timer.total / max(total - timer.total, 1e-12),
        choices=None if single else dict(sorted(_counts(opt).items())),
    )


def _counts(opt) -> dict:
    out: dict[str, int] = {}
    for g in opt.geometries().values():
        out[g] = out.get(g, 0) + 1
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "adaptive_overhead.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    task = get_task("charlm", size="default")
    rounds = []
    for _ in range(args.repeats):
        rounds.append(
            {"adaptive": run(task, "adaptive", args.steps), "single": run(task, "adaptive", args.steps, True)}
        )
    over = [r["adaptive"]["overhead"] for r in rounds]
    ab = [r["adaptive"]["step_cpu_s"] / r["single"]["step_cpu_s"] - 1 for r in rounds]
    print(
        f"{'round':<7}{'step CPU ms':>13}{'decisions ms/step':>19}{'overhead':>10}{'single-candidate ms':>21}{'A/B':>8}"
    )
    for i, r in enumerate(rounds):
        a, s = r["adaptive"], r["single"]
        print(
            f"{i:<7}{1e3 * a['step_cpu_s']:>13.1f}{1e3 * a['decision_cpu_s']:>19.2f}{a['overhead']:>10.2%}"
            f"{1e3 * s['step_cpu_s']:>21.1f}{ab[i]:>8.1%}"
        )
    print(
        f"median overhead {statistics.median(over):.2%} (goal <= 3%); choices at the end: {rounds[-1]['adaptive']['choices']}"
    )
    atomic_write_json(
        args.out,
        {
            "benchmark": "benchmarks/adaptive_overhead.py",
            "command": "python benchmarks/adaptive_overhead.py " + " ".join(argv or sys.argv[1:]),
            "steps": args.steps,
            "rounds": rounds,
            "median_overhead": statistics.median(over),
            "ab_median": statistics.median(ab),
            "environment": environment(),
            "load_average_end": list(__import__("os").getloadavg()),
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
