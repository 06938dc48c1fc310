"""Optimizer step time on a GPT-like parameter set: steepest.Muon vs torch.optim.Muon vs AdamW.

Every optimizer owns a copy of the same parameters (``--blocks`` blocks of 384x1152, 384x384,
1536x384, 384x1536) with the same fixed gradients, and all run side by side in one process: each
round calls every ``step()`` once in rotated order, so machine-load drift hits them alike. Reported:
median and minimum step time and the paired ratio to torch.optim.Muon (median over rounds of
t_opt / t_torch_muon in the same round). Same settings for both Muons: 5 Newton-Schulz steps with
Muon's quintic, momentum 0.95, Nesterov, weight decay 0.1, lr 0.02, "original" lr adjustment;
Newton-Schulz dtype bfloat16 (torch's forced choice) and float32 for steepest; steepest both on
its per-parameter path (``batch_matrices=False``) and batched (``batch_matrices=True``: one polar call
per bucket of same-shape matrices). The default ``None`` batches on accelerators and, on CPU, only
matrices up to ``batched.CPU_MAX_NUMEL`` entries (here the 384x384 ones).

Accuracy: from one common state, the first update of each Muon is compared with the float64
Newton-Schulz update (relative Frobenius error of the whole update), so speed does not hide a loss
of accuracy.

Usage::

    .venv/bin/python benchmarks/step.py            # ~1-2 minutes on 2 CPU cores
    .venv/bin/python benchmarks/step.py --quick    # a few rounds, a smoke test
    .venv/bin/python benchmarks/step.py --device cuda --out benchmarks/results/step_cuda.json
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics

import torch

import _util  # noqa: F401  (puts src/ on sys.path)
import steepest
from _util import clone_params, machine, paired_ratio, summarize, table, time_interleaved
from steepest.app.runs import atomic_write_json
from steepest.linalg.coefficients import MUON_QUINTIC

SHAPES = ((384, 1152), (384, 384), (1536, 384), (384, 1536))
LR, WD, MOMENTUM = 0.02, 0.1, 0.95


def make_params(blocks: int, device, seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    ps = []
    for _ in range(blocks):
        for m, n in SHAPES:
            w = torch.randn(m, n, generator=g) / math.sqrt(n)
            p = torch.nn.Parameter(w.to(device))
            p.grad = (torch.randn(m, n, generator=g) * 1e-2).to(device)
            ps.append(p)
    return ps


def optimizers(base: list[torch.nn.Parameter], include_fp32: bool) -> dict[str, tuple[torch.optim.Optimizer, list]]:
    """name -> (optimizer, its own parameter copies with the same gradients)."""

    def steepest_muon(dtype, batched):
        ps = clone_params(base)
        opt = steepest.Muon(ps, lr=LR, momentum=MOMENTUM, nesterov=True, ns_steps=5, weight_decay=WD, dtype=dtype)
        if hasattr(opt, "executor"):
            opt.executor = steepest.optim.executors.Batched(cpu=True) if batched else "per_matrix"
        else:  # an older tree (benchmarks/step_vs_old.py)
            opt.batch_matrices = batched
        return opt, ps

    opts = {}
    ps = clone_params(base)
    # The default: dtype="auto" (bf16 where bf16 matmul is native, float32 elsewhere; STEEPEST_BF16=0/1
    # forces it, to simulate the other CPU kind) and executor='auto' (small matrices batched on CPU).
    opts["steepest.Muon default (auto)"] = (
        steepest.Muon(ps, lr=LR, momentum=MOMENTUM, nesterov=True, ns_steps=5, weight_decay=WD),
        ps,
    )
    ps = clone_params(base)
    opts["torch.optim.Muon (bf16)"] = (
        torch.optim.Muon(
            ps, lr=LR, weight_decay=WD, momentum=MOMENTUM, nesterov=True, ns_coefficients=MUON_QUINTIC, ns_steps=5
        ),
        ps,
    )
    opts["steepest.Muon bf16 per-param"] = steepest_muon(torch.bfloat16, False)
    opts["steepest.Muon bf16 batched"] = steepest_muon(torch.bfloat16, True)
    if include_fp32:
        opts["steepest.Muon fp32 per-param"] = steepest_muon(torch.float32, False)
        opts["steepest.Muon fp32 batched"] = steepest_muon(torch.float32, True)
    ps = clone_params(base)
    opts["AdamW fused"] = (torch.optim.AdamW(ps, lr=1e-3, weight_decay=WD, fused=True), ps)
    ps = clone_params(base)
    opts["AdamW default"] = (torch.optim.AdamW(ps, lr=1e-3, weight_decay=WD), ps)
    return opts


def accuracy(base: list[torch.nn.Parameter], opts: dict) -> dict[str, float]:
    """Relative Frobenius error of each Muon's first update against the float64 Newton-Schulz update.

    Reference: W' = (1 - lr wd) W - lr sqrt(max(1, m/n)) NS5_float64(M), M = (1 - mu)^2 G + mu (1 - mu) G
    for the first Nesterov step from a zero buffer (B = (1 - mu) G, M = G.lerp(B, mu)).
    """
    ref_updates, out = [], {}
    for p in base:
        g = p.grad.double()
        M = g.lerp((1 - MOMENTUM) * g, MOMENTUM)
        m, n = p.shape
        D = steepest.polar(M, "newton_schulz", 5, dtype=torch.float64)
        ref_updates.append(-LR * WD * p.detach().double() - LR * math.sqrt(max(1.0, m / n)) * D)
    ref = torch.cat([u.flatten() for u in ref_updates])
    for name, (opt, ps) in opts.items():
        if "Muon" not in name:
            continue
        fresh = copy.deepcopy(opt.state_dict())
        before = [q.detach().clone() for q in ps]
        opt.step()
        upd = torch.cat([(q.detach().double() - b.double()).flatten() for q, b in zip(ps, before)])
        out[name] = float((upd - ref).norm() / ref.norm())
        with torch.no_grad():  # restore, so the timed runs start from the same state
            for q, b in zip(ps, before):
                q.copy_(b)
        opt.load_state_dict(fresh)
    return out


def gram_newton_schulz(G: torch.Tensor, dtype=torch.bfloat16, restart_at: int | None = 3) -> torch.Tensor:
    """EXPERIMENT (not library code): Muon's NS5 in Gram form, to see whether it buys speed on CPU.

    For a wide X_0 (m <= n) every iterate is X_k = Q_k X_0 with Q_k a polynomial in R_0 = X_0 X_0^T, so the
    iteration runs on m x m matrices: P = a I + b R + c R^2, Q <- P Q, R <- P R P, and one m x n product at
    the end (Dao-AILab gram-newton-schulz; restarting X <- Q X_0, R <- X X^T at step ``restart_at`` keeps
    bf16 rounding in Q from blowing up: without it low-rank inputs diverge).
    """
    a, b, c = MUON_QUINTIC
    X = G.to(dtype)
    tall = X.shape[-2] > X.shape[-1]
    if tall:
        X = X.mT
    X = X / torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True).clamp(min=1e-7)
    R = X @ X.mT
    eye = torch.eye(R.shape[-1], dtype=dtype, device=G.device)
    Q = None
    for k in range(5):
        if k == restart_at and Q is not None:
            X, Q = Q @ X, None
            R = X @ X.mT
        P = torch.addmm(R, R, R, beta=b, alpha=c) + a * eye
        Q = P if Q is None else P @ Q
        if k < 4 and k + 1 != restart_at:
            R = P @ (R @ P)
    X = Q @ X
    return (X.mT if tall else X).to(G.dtype)


def gram_study(repeats: int = 5) -> list[dict]:
    """CPU time and accuracy (vs float64 NS5) of standard bf16 NS5 and the Gram form, per shape."""
    from _util import time_once

    g = torch.Generator().manual_seed(0)
    rows = []
    for m, n in SHAPES:
        for kind in ("gaussian", "spike+noise"):
            G = torch.randn(m, n, generator=g)
            if kind == "spike+noise":
                G = torch.randn(m, 1, generator=g) @ torch.randn(1, n, generator=g) + 1e-2 * G
            ref = steepest.polar(G.double(), "newton_schulz", 5, dtype=torch.float64)
            fns = {
                "standard": lambda G=G: steepest.polar(G, "newton_schulz", 5, dtype=torch.bfloat16),
                "gram, restart at 3": lambda G=G: gram_newton_schulz(G),
                "gram, no restart": lambda G=G: gram_newton_schulz(G, restart_at=None),
            }
            row = {"shape": f"{m}x{n}", "input": kind}
            for name, fn in fns.items():
                row[f"err {name}"] = float((fn().double() - ref).norm() / ref.norm())
                if kind == "gaussian":
                    row[f"cpu ms {name}"] = 1e3 * statistics.median(time_once(fn)[1] for _ in range(repeats))
            rows.append(row)
    return rows


def auto_verdict(times: dict[str, list[float]], resamples: int = 2000) -> dict:
    """Default (dtype="auto") vs the faster explicit dtype (per-parameter path), from paired CPU times.

    The faster explicit choice is the one with the lower median; the verdict is the median over rounds of
    t_default / t_faster with a bootstrap 95% interval (resampling rounds). "within noise" when the
    interval reaches down to 1.0 or the median is at most 1.03 (3%: the spread of paired ratios between
    two configurations with bit-identical work, benchmarks/step_vs_old.py, on this shared machine).

    Under ``STEEPEST_BF16=0/1`` the CPU kind is SIMULATED: "auto" is forced, but the hardware is the
    same, so the faster explicit choice is still this CPU's. The verdict is then taken against the
    explicit twin of the forced choice (the choice a CPU of the simulated kind makes by itself), and the
    comparison with this CPU's faster choice is kept for the record.
    """
    import os
    import random

    d = times["steepest.Muon default (auto)"]
    explicit = {k: times[k] for k in ("steepest.Muon bf16 per-param", "steepest.Muon fp32 per-param") if k in times}
    faster = min(explicit, key=lambda k: statistics.median(explicit[k]))
    forced = os.environ.get("STEEPEST_BF16")
    target = faster
    if forced in ("0", "1"):
        target = "steepest.Muon bf16 per-param" if forced == "1" else "steepest.Muon fp32 per-param"
    ratios = [a / b for a, b in zip(d, explicit[target])]
    rnd = random.Random(0)
    meds = sorted(statistics.median(rnd.choices(ratios, k=len(ratios))) for _ in range(resamples))
    lo, hi = meds[int(0.025 * resamples)], meds[int(0.975 * resamples) - 1]
    med = statistics.median(ratios)
    out = {
        "faster_explicit_on_this_cpu": faster,
        "compared_with": target,
        "simulated": f"STEEPEST_BF16={forced}" if forced in ("0", "1") else None,
        "ratio_default_vs_compared": med,
        "ci95": [lo, hi],
        "within_noise": bool(lo <= 1.0 or med <= 1.03),
    }
    for k, v in explicit.items():
        out[f"ratio_default_vs {k}"] = paired_ratio(d, v)
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 rounds, no float32 batched run")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds (default 25; --quick 5)")
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(_util.ROOT / "benchmarks" / "results" / "step.json"))
    ap.add_argument("--gram-study", action="store_true", help="also time/check the Gram-form NS5 experiment")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = args.rounds or (5 if args.quick else 25)
    device = torch.device(args.device)

    load_before = list(__import__("os").getloadavg())
    base = make_params(args.blocks, device)
    opts = optimizers(base, include_fp32=True)
    if args.quick:
        opts.pop("steepest.Muon fp32 batched")
    acc = accuracy(base, opts)
    cpu: dict[str, list[float]] = {}
    times = time_interleaved(
        {k: opt.step for k, (opt, _) in opts.items()}, rounds, warmup=2, device=device, progress=True, cpu_times=cpu
    )
    key = "torch.optim.Muon (bf16)"
    load_after = list(__import__("os").getloadavg())
    rows = []
    for name, ts in times.items():
        row = {
            "optimizer": name,
            **summarize(ts),
            "ratio_vs_torch_muon": paired_ratio(ts, times[key]),
            "ratio_of_min": min(ts) / min(times[key]),
            "cpu_median_ms": 1e3 * statistics.median(cpu[name]),
            "cpu_ratio_vs_torch_muon": paired_ratio(cpu[name], cpu[key]),
            "rel_err_vs_fp64_ns5": acc.get(name),
        }
        rows.append(row)
    cols = [
        ("optimizer", "optimizer", "{}"),
        ("median_ms", "median ms", "{:.1f}"),
        ("min_ms", "min ms", "{:.1f}"),
        ("ratio_vs_torch_muon", "ratio (paired median)", "{:.2f}x"),
        ("ratio_of_min", "ratio of mins", "{:.2f}x"),
        ("cpu_ratio_vs_torch_muon", "CPU-time ratio", "{:.2f}x"),
        ("rel_err_vs_fp64_ns5", "update rel. err vs fp64 NS5", "{:.2e}"),
    ]
    n_params = sum(p.numel() for p in base)
    print(
        f"\n{len(base)} matrices ({args.blocks} blocks of {', '.join(f'{m}x{n}' for m, n in SHAPES)}), "
        f"{n_params / 1e6:.2f} M parameters, {rounds} rounds, device {device}, threads {torch.get_num_threads()}, "
        f"load average after the timed rounds {load_after}\n"
    )
    print(table(rows, cols))
    verdict = auto_verdict(cpu)
    from steepest.linalg.precision import auto_report

    verdict["auto"] = auto_report()
    what = (
        f"the forced choice's explicit twin, {verdict['simulated']} (simulated CPU kind)"
        if verdict["simulated"]
        else "the faster explicit choice"
    )
    print(
        f"\ndefault dtype='auto' chose {verdict['auto']}; default / {what} ({verdict['compared_with']}) CPU time: "
        f"{verdict['ratio_default_vs_compared']:.3f}x (95% CI {verdict['ci95'][0]:.3f}-{verdict['ci95'][1]:.3f}): "
        f"{'within noise' if verdict['within_noise'] else 'SLOWER'}; on this CPU the faster explicit choice is "
        f"{verdict['faster_explicit_on_this_cpu']}"
    )
    gram = None
    if args.gram_study:
        gram = gram_study()
        names = ("standard", "gram, restart at 3", "gram, no restart")
        print("\nGram-form Newton-Schulz experiment (bf16, CPU time ms and rel. error vs float64 NS5):\n")
        print(
            table(
                gram,
                [("shape", "shape", "{}"), ("input", "input", "{}")]
                + [(f"cpu ms {k}", f"ms {k}", "{:.1f}") for k in names]
                + [(f"err {k}", f"err {k}", "{:.2e}") for k in names],
            )
        )
    result = {
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after_timing": load_after,
        "command": "benchmarks/step.py " + " ".join(argv or []),
        "settings": {
            "blocks": args.blocks,
            "shapes": SHAPES,
            "rounds": rounds,
            "lr": LR,
            "weight_decay": WD,
            "momentum": MOMENTUM,
            "ns_steps": 5,
            "device": str(device),
            "threads": torch.get_num_threads(),
        },
        "rows": rows,
        "auto_verdict": verdict,
        "times_s": times,
        "cpu_times_s": cpu,
        "gram_study": gram,
    }
    atomic_write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
