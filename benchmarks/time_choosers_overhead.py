"""Training-time cost of the knob entries of ``steepest compare`` on the charlm default model (issue 21).

Entries: ``knob-schedule`` (DynMuon-style schedule), ``schatten-choice`` (arXiv 2605.19781 every 100 steps,
EMAs every 10), ``phase-switch`` (nr(G)/st(A) every 10 steps), ``power`` (a = 1/7 fixed) and, as the
baseline, ``specgd`` (their plumbing with the knob at 0). Each is built by
:func:`steepest.app.compare.optimizers.build_optimizer` at its tuned lr and trained on the real task's
batches for ``--steps`` steps on one thread; CPU time by ``time.thread_time`` (the one working thread's,
robust to other jobs on a shared machine):

* step: the whole training step (forward, backward, optimizer step), per step;
* decisions: :meth:`TimeChooser._decide` (the criterion: SVD of M, Gram eighs of A and G, EMAs) plus the
  activation hooks and their ``clear``; overhead = decisions / (step - decisions);
* step / specgd's step: what the knob costs in all (its Gram-eigh float64 directions where a != 0 instead
  of Polar Express, plus the decisions).

Run: .venv/bin/python benchmarks/time_choosers_overhead.py [--steps 100]
(writes benchmarks/results/time_choosers_overhead.json)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

from steepest.app.compare.job import resolve_lrs  # noqa: E402
from steepest.app.compare.optimizers import build_optimizer  # noqa: E402
from steepest.app.runs import atomic_write_json, environment  # noqa: E402
from steepest.app.tasks import get_task  # noqa: E402
from steepest.diagnostics import capture as capture_mod  # noqa: E402
from steepest.optim import measured_choosers as mc  # noqa: E402
from steepest.optim import time_choosers as tc  # noqa: E402

NAMES = ("specgd", "power", "knob-schedule", "schatten-choice", "phase-switch")


from _util import Timer  # noqa: E402


def run(task, name: str, steps: int) -> dict:
    torch.manual_seed(0)
    model = task.make_model()
    lrs = resolve_lrs("charlm", "default", [name, "adamw"])
    timer = Timer()
    deciders = [tc.ScheduleChooser, mc.PhaseSwitch, mc.SchattenChoice]
    originals = [c._decide for c in deciders] + [
        capture_mod.ActivationCapture._hook,
        capture_mod.ActivationCapture.clear,
    ]
    try:
        for c, f in zip(deciders, originals):
            c._decide = timer.wrap(f)
        hook, clear = originals[-2:]
        capture_mod.ActivationCapture._hook = lambda self, n: timer.wrap(hook(self, n))
        capture_mod.ActivationCapture.clear = timer.wrap(clear)
        opt = build_optimizer(name, model, lrs[name][0], lrs["adamw"][0], task.routing, steps=steps)
        total = 0.0
        for t in range(steps):
            c0 = time.thread_time()
            loss = task.loss(model, task.batch(0, t))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            total += time.thread_time() - c0
    finally:
        for c, f in zip(deciders, originals):
            c._decide = f
        capture_mod.ActivationCapture._hook, capture_mod.ActivationCapture.clear = originals[-2:]
    knobs = opt.chooser.knobs(opt) if hasattr(getattr(opt, "chooser", None), "knobs") else None
    return dict(
        step_cpu_ms=1e3 * total / steps,
        decision_cpu_ms=1e3 * timer.total / steps,
        overhead=timer.total / max(total - timer.total, 1e-12),
        final_loss=float(loss.detach()),
        knobs=knobs,
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "time_choosers_overhead.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    task = get_task("charlm", size="default")
    res = {n: run(task, n, args.steps) for n in NAMES}
    base = res["specgd"]["step_cpu_ms"]
    print(f"{'entry':<17}{'step CPU ms':>12}{'decisions ms':>14}{'overhead':>10}{'x specgd':>10}{'loss':>8}")
    for n, r in res.items():
        r["x_specgd"] = r["step_cpu_ms"] / base
        print(
            f"{n:<17}{r['step_cpu_ms']:>12.1f}{r['decision_cpu_ms']:>14.2f}{r['overhead']:>10.2%}"
            f"{r['x_specgd']:>10.2f}{r['final_loss']:>8.3f}"
        )
    atomic_write_json(
        args.out,
        {
            "benchmark": "benchmarks/time_choosers_overhead.py",
            "command": "python benchmarks/time_choosers_overhead.py " + " ".join(argv or sys.argv[1:]),
            "steps": args.steps,
            "results": res,
            "environment": environment(),
            "load_average_end": list(os.getloadavg()),
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
