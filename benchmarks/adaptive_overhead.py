"""Training CPU time of steepest.Adaptive's decisions on charlm: A/B vs ``specgd``, paired in one process.

The optimizer is ``steepest compare``'s ``adaptive`` (Davis-Drusvyatskiy criterion every 10 steps, the
activation hooks on the model; :func:`steepest.app.compare.optimizers.build_optimizer`); the baseline is
compare's ``specgd`` at Adaptive's lr, Adaptive's plumbing without the choice (no decision, no hooks: with
spectral chosen everywhere the two take the same steps). Each arm trains its own copy of the charlm default
model (seed 0, same batches) in the same process; a round runs 10 steps of each arm (one decision), the order
alternating each round, timed with ``time.thread_time`` (one torch thread). Reported:

* A/B: the median over rounds of the per-round CPU ratio adaptive / specgd - 1, and the ratio of totals. Once
  Adaptive has chosen Frobenius for a layer its step is cheaper there (no Polar Express), so the A/B then
  understates the decisions' cost; the choices are reported;
* in-decision: the CPU time inside the decisions (every layer's DD scores, solved together by
  ``criteria.dd_scores_many``, ``GeometryChooser._decide`` for every layer, the activation hooks and their
  ``clear``) divided by the rest of Adaptive's training step.

Goal (issue 22): <= 2%.

Run: PYTHONPATH=src .venv/bin/python benchmarks/adaptive_overhead.py [--rounds 30]
(writes benchmarks/results/adaptive_overhead.json)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
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
from steepest.diagnostics import criteria  # noqa: E402
from steepest.optim.choosers import GeometryChooser  # noqa: E402

EVERY = 10  # compare's adaptive decides every 10 steps


from _util import Timer  # noqa: E402


class Arm:
    def __init__(self, task, name: str, lr: float, aux_lr: float) -> None:
        torch.manual_seed(0)
        self.model = task.make_model()
        self.opt = build_optimizer(name, self.model, lr, aux_lr, task.routing)
        self.task = task

    def steps(self, batches) -> float:
        c = time.thread_time()
        for b in batches:
            loss = self.task.loss(self.model, b)
            loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        return time.thread_time() - c


def _counts(opt) -> dict:
    out: dict[str, int] = {}
    for g in opt.geometries().values():
        out[g] = out.get(g, 0) + 1
    return dict(sorted(out.items()))


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30, help="rounds of 10 steps per arm (one decision each)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "adaptive_overhead.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    load0 = list(os.getloadavg())
    task = get_task("charlm", size="default")
    lrs = resolve_lrs("charlm", "default", ["adaptive"])
    timer = Timer()
    originals = (GeometryChooser._decide, capture_mod.ActivationCapture._hook, capture_mod.ActivationCapture.clear)
    many = getattr(criteria, "dd_scores_many", None)  # the batched scores (absent in code before it)
    cpu: dict[str, list[float]] = {"specgd": [], "adaptive": []}
    decisions: list[float] = []
    try:
        GeometryChooser._decide = timer.wrap(originals[0])
        capture_mod.ActivationCapture._hook = lambda self, n: timer.wrap(originals[1](self, n))
        capture_mod.ActivationCapture.clear = timer.wrap(originals[2])
        if many is not None:
            criteria.dd_scores_many = timer.wrap(many)
        # specgd at Adaptive's lr: Adaptive's plumbing without the choice
        arms = {k: Arm(task, k, lrs["adaptive"][0], lrs["adamw"][0]) for k in cpu}
        for r in range(args.rounds + 1):  # round 0: warm-up, not counted
            batches = [task.batch(0, r * EVERY + i) for i in range(EVERY)]
            order = list(cpu) if r % 2 else list(cpu)[::-1]
            for k in order:
                d0 = timer.total
                c = arms[k].steps(batches)
                if r:
                    cpu[k].append(c)
                    if k == "adaptive":
                        decisions.append(timer.total - d0)
    finally:
        GeometryChooser._decide, capture_mod.ActivationCapture._hook, capture_mod.ActivationCapture.clear = originals
        if many is not None:
            criteria.dd_scores_many = many
    ratios = sorted(a / b for a, b in zip(cpu["adaptive"], cpu["specgd"]))
    q = len(ratios) // 4
    a_tot, s_tot, d_tot = sum(cpu["adaptive"]), sum(cpu["specgd"]), sum(decisions)
    res = dict(
        ab_cpu_median=statistics.median(ratios) - 1,
        ab_cpu_iqr=[ratios[q] - 1, ratios[-1 - q] - 1],
        ab_cpu_total=a_tot / s_tot - 1,
        in_decision_share=d_tot / (a_tot - d_tot),
        adaptive_ms_per_step=1e3 * a_tot / (args.rounds * EVERY),
        specgd_ms_per_step=1e3 * s_tot / (args.rounds * EVERY),
        decision_ms_per_step=1e3 * d_tot / (args.rounds * EVERY),
        choices_at_end=_counts(arms["adaptive"].opt),
    )
    print(
        f"adaptive {res['adaptive_ms_per_step']:.1f} ms/step, specgd {res['specgd_ms_per_step']:.1f} ms/step; "
        f"A/B CPU median {res['ab_cpu_median']:+.2%} (IQR {res['ab_cpu_iqr'][0]:+.2%}..{res['ab_cpu_iqr'][1]:+.2%}), "
        f"total {res['ab_cpu_total']:+.2%}; in decisions {res['decision_ms_per_step']:.2f} ms/step = "
        f"{res['in_decision_share']:.2%} (goal <= 2%); choices {res['choices_at_end']}; load {os.getloadavg()[0]:.1f}"
    )
    atomic_write_json(
        args.out,
        {
            "benchmark": "benchmarks/adaptive_overhead.py",
            "command": " ".join(["python", "benchmarks/adaptive_overhead.py", *(argv or sys.argv[1:])]),
            "commit": _commit(),
            "rounds": args.rounds,
            "every": EVERY,
            "clock": "time.thread_time",
            "threads": 1,
            **res,
            "round_cpu_ms": {k: [1e3 * x for x in v] for k, v in cpu.items()},
            "environment": environment(),
            "load_average_start": load0,
            "load_average_end": list(os.getloadavg()),
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
