"""Replay a schedule oracle's kept path with one geometry: is its gain the geometry or the step size?

The schedule oracle (:mod:`steepest.app.compare.schedule_oracle`) picks, per segment of H steps, a candidate
geometry *at that candidate's own tuned lr*. A switch from SpecGD (lr 0.01) to Frobenius (lr 0.0025, whose
step has a full-rank spectral step's RMS times its lr: ``steepest compare``'s ``frobenius``) is then also a
4x smaller step. This script trains the oracle's path again with one entry (``--as``, default ``specgd``)
in every segment, at the lr of the candidate the oracle chose there: the same step sizes on the hidden
matrices (the AdamW groups keep the aux lr), the same trapezoid schedule, batches, momentum carried across
segments, seed and evaluations; only the geometry differs. If the replay reaches the target as early as the
oracle, the oracle's "headroom" was the step-size schedule, not the choice of geometry.

Check built in: until the oracle's first switch away from the ``--as`` entry, the replay is the oracle's path,
so its evaluations there must equal the oracle's bit for bit (the script stops with an error otherwise).

Usage::

    .venv/bin/python benchmarks/oracle_replay.py --run-dir RUN/seed0 --oracle schedule-oracle-h100-a100 \\
        --out benchmarks/results/oracle_replay_seed0.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import train  # noqa: E402  (benchmarks/train.py: puts src/ on sys.path)
from steepest.app.compare.loop import evaluate, lr_factor  # noqa: E402
from steepest.app.compare.optimizers import build_optimizer  # noqa: E402
from steepest.app.compare.schedule_oracle import _step  # noqa: E402
from steepest.app.runs import atomic_write_json, environment  # noqa: E402
from steepest.app.tasks import get_task  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", required=True, help="a train.py seed directory holding results/<oracle>.json")
    ap.add_argument("--oracle", default="schedule-oracle-h100-a100", help="the oracle entry to replay")
    ap.add_argument("--as", dest="entry", default="specgd", help="the compare entry trained in every segment")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    run = Path(args.run_dir)
    cfg = json.loads((run / "config.json").read_text())["config"]
    res = json.loads((run / "results" / f"{args.oracle}.json").read_text())
    target = json.loads((run / "results" / "adamw.json").read_text())["final_val"]
    task = get_task(cfg["task"], size=cfg["size"], **cfg["task_options"])  # the run's own task and options
    steps, every, seed, aux = res["steps_done"], cfg["eval_every"], cfg["seed"], cfg["lrs"]["adamw"]
    lr_of = {c["name"]: c["lr"] for c in res["candidates"]}
    H, winners = res["horizon"], res["winners"]
    if args.entry not in lr_of:
        ap.error(f"--as {args.entry}: not one of the oracle's candidates ({', '.join(lr_of)}); its lr is the build lr")
    torch.manual_seed(seed)
    model = task.make_model()
    build_lr = lr_of[args.entry]
    opt = build_optimizer(args.entry, model, build_lr, aux, task.routing)
    base = [float(g["lr"]) for g in opt.param_groups]
    steep = [g.get("algorithm") == "steepest" for g in opt.param_groups]
    model.train()
    evals = [(0, evaluate(model, task.evaluate))]
    c0 = time.process_time()
    for t in range(steps):
        chosen = winners[t // H]
        scale = lr_of[chosen] / build_lr
        bases = [b * scale if s else b for b, s in zip(base, steep)]
        if not _step(model, opt, bases, lr_factor(t, steps, cfg["warmup"], cfg["cooldown"]), task, seed, t):
            print(f"diverged at step {t}", file=sys.stderr)
            break
        if (t + 1) % every == 0 or t + 1 == steps:
            evals.append((t + 1, evaluate(model, task.evaluate)))
            if (t + 1) % (10 * every) == 0:
                print(f"step {t + 1}: val {evals[-1][1]:.4f} ({chosen}'s lr)", flush=True)
    oracle_evals = dict(tuple(e) for e in res["evals"])
    first_switch = next((k * H for k, w in enumerate(winners) if w != args.entry), steps)
    for s, v in evals:
        if s <= first_switch and s in oracle_evals and oracle_evals[s] != v:
            raise SystemExit(
                f"replay differs from the oracle's path at step {s} before any switch: {v} vs {oracle_evals[s]}"
            )
    ev = [dict(step=s, val_loss=v) for s, v in evals]
    st = train.interpolated_steps(ev, target)
    ost = train.interpolated_steps([dict(step=s, val_loss=v) for s, v in res["evals"]], target)
    out = dict(
        benchmark="benchmarks/oracle_replay.py",
        command=" ".join(["python", "benchmarks/oracle_replay.py", *(argv if argv is not None else sys.argv[1:])]),
        oracle=args.oracle,
        replayed_as=args.entry,
        winners=winners,
        horizon=H,
        lrs=lr_of,
        target=target,
        steps_to_target=st,
        oracle_steps_to_target=ost,
        final_val=evals[-1][1],
        oracle_final_val=res["final_val"],
        first_switch=first_switch,
        cpu_s=time.process_time() - c0,
        evals=evals,
        environment=environment(),
    )
    atomic_write_json(args.out, out)
    print(
        f"replay as {args.entry}: steps to target {st}, final {evals[-1][1]:.4f}; oracle: {ost}, {res['final_val']:.4f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
