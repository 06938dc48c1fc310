"""steepest.Muon against the Muon implementations users would pick instead, side by side in one process.

Peers (the ``bench`` extra of pyproject.toml; skipped with a note when not installed):
torch.optim.Muon, heavyball.Muon, pytorch_optimizer.Muon (Newton-Schulz "original" coefficients, its
"polar_express" table, and its ``gram_newton_schulz`` method) and muon-optimizer's SingleDeviceMuon.
Every optimizer owns a copy of the same parameters with the same fixed gradients; they are timed in
interleaved rounds (a fresh random order per round and an untimed step of the same optimizer before each timed
one, ``benchmarks/_util.time_shuffled``: a rotation's fixed neighbour biased small steps by 5-15%), CPU time by
``time.thread_time()`` under one torch thread.

Equal update size: learning rates mean different update sizes across these libraries, so each
peer's lr is set to ``LR * factor`` where ``factor`` makes its first-step update RMS on a 256x64
matrix equal to steepest.Muon's (default settings, lr ``LR``); the factors and the raw RMS per unit
lr on 256x64 and 64x256 are recorded.

Accuracy: from a fresh copy, one step of each optimizer (weight decay 0) gives an update per matrix;
its error is the relative Frobenius distance between the update and the reference direction scaled to
the update's own norm (so it is scale-free, and the per-shape scalings of the libraries do not
count): against the exact polar factor U V^T (float64 SVD) and against float64 Muon-quintic NS5 (the
reference of benchmarks/step.py). Errors are aggregated as the root-mean-square over matrices.

Peak memory: in a fresh subprocess per (optimizer, set), the peak resident set size over three steps
(VmHWM, reset first through ``/proc/self/clear_refs``) minus the RSS before them, i.e. the optimizer's
state plus its largest transient, above the parameters and gradients (Linux only); and the live-tensor
peak of a fourth step (:func:`live_peak_mib`: torch.profiler's memory timeline, byte-exact run to run,
where repeats of the RSS number differ by 5-12 MiB).

Parameter sets: ``gpt`` (benchmarks/step.py's 4 blocks of 384x1152, 384x384, 1536x384, 384x1536),
``charlm`` (the hidden matrices of the charlm default model: 3 blocks of 384x128, 128x128, 512x128,
128x512) and ``conv`` (a half-width ResNet-18 without its stem, conv kernels flattened to
(out, in*k*k) for every optimizer, since torch.optim.Muon takes 2-D parameters only).

Usage::

    STEEPEST_BF16=0 .venv/bin/python benchmarks/peers.py --threads 1    # simulate a CPU without bf16
    .venv/bin/python benchmarks/peers.py --threads 1 --rounds 10 --sets gpt,charlm,conv
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import subprocess
import sys
import warnings

import torch

import _util  # noqa: F401  (puts src/ on sys.path)
import steepest
from _util import clone_params, machine, paired_ratio, summarize, table, time_shuffled
from steepest._io import atomic_write_json

LR = 0.02
SETS = {
    "gpt": [(384, 1152), (384, 384), (1536, 384), (384, 1536)] * 4,
    "charlm": [(384, 128), (128, 128), (512, 128), (128, 512)] * 3,
    "conv": [(32, 288)] * 4
    + [(64, 288), (64, 32)]
    + [(64, 576)] * 3
    + [(128, 576), (128, 64)]
    + [(128, 1152)] * 3
    + [(256, 1152), (256, 128)]
    + [(256, 2304)] * 3,
}


def _batched(opt):
    opt.executor = steepest.optim.executors.Batched(cpu=True)
    return opt


def _has(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


def builders() -> dict:
    """name -> (callable(params, lr) -> optimizer, note). Peers that are not installed are left out."""
    out = {
        "steepest.Muon default (auto)": (
            lambda ps, lr: steepest.Muon(ps, lr=lr, weight_decay=0.0),
            "dtype='auto', per-parameter",
        ),
        "steepest.Muon fp32": (
            lambda ps, lr: steepest.Muon(ps, lr=lr, weight_decay=0.0, dtype=torch.float32),
            "explicit float32",
        ),
        "steepest.Muon bf16": (
            lambda ps, lr: steepest.Muon(ps, lr=lr, weight_decay=0.0, dtype=torch.bfloat16),
            "explicit bf16",
        ),
        "steepest.Muon bf16 batched": (
            lambda ps, lr: _batched(steepest.Muon(ps, lr=lr, weight_decay=0.0, dtype=torch.bfloat16)),
            "explicit bf16, executor=Batched(cpu=True)",
        ),
        "steepest.Muon per-matrix": (
            lambda ps, lr: steepest.Muon(ps, lr=lr, weight_decay=0.0, executor="per_matrix"),
            "dtype='auto', executor='per_matrix' (no batching: the smallest peak memory)",
        ),
        "torch.optim.Muon": (lambda ps, lr: torch.optim.Muon(ps, lr=lr, weight_decay=0.0), "NS5 bf16 (forced)"),
    }
    if _has("heavyball"):
        import heavyball

        out["heavyball.Muon"] = (
            lambda ps, lr: heavyball.Muon(ps, lr=lr, compile_step=False),
            "'You' 5-step table, compile_step=False",
        )
    if _has("pytorch_optimizer"):
        import pytorch_optimizer as po

        def po_muon(**kw):
            return lambda ps, lr: po.Muon([dict(params=ps, use_muon=True)], lr=lr, **kw)

        out["pytorch_optimizer.Muon"] = (po_muon(), "ns_coeffs='original', NS5 bf16")
        out["pytorch_optimizer.Muon polar_express"] = (po_muon(ns_coeffs="polar_express"), "its Polar Express table")
        out["pytorch_optimizer.Muon gram_newton_schulz"] = (
            po_muon(ns_method="gram_newton_schulz"),
            "Gram NS, restart after 2, float16",
        )
    if _has("muon"):
        import muon

        out["muon.SingleDeviceMuon"] = (
            lambda ps, lr: muon.SingleDeviceMuon(ps, lr=lr),
            "muon-optimizer 0.1.0, NS5 bf16",
        )
    return out


def make_params(shapes, seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    ps = []
    for m, n in shapes:
        p = torch.nn.Parameter(torch.randn(m, n, generator=g) / math.sqrt(n))
        p.grad = torch.randn(m, n, generator=g) * 1e-2
        ps.append(p)
    return ps


def first_updates(build, base, lr) -> list[torch.Tensor]:
    ps = clone_params(base)
    before = [p.detach().clone() for p in ps]
    build(ps, lr).step()
    return [(p.detach() - b).double() for p, b in zip(ps, before)]


def rms_per_lr(build) -> dict[str, float]:
    """First-step update RMS per unit lr on a 256x64 and a 64x256 matrix (weight decay 0)."""
    out = {}
    for shape in ((256, 64), (64, 256)):
        (u,) = first_updates(build, make_params([shape], seed=1), LR)
        out[f"{shape[0]}x{shape[1]}"] = float(u.pow(2).mean().sqrt()) / LR
    return out


def references(base) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per matrix: (exact polar factor U V^T by float64 SVD, float64 Muon-quintic NS5) of its gradient."""
    out = []
    for p in base:
        G = p.grad.double()
        U, _, Vh = torch.linalg.svd(G, full_matrices=False)
        out.append((U @ Vh, steepest.polar(G, "newton_schulz", 5, dtype=torch.float64)))
    return out


def errors(updates, refs) -> dict[str, float]:
    """RMS over matrices of the scale-free error against the exact polar factor and against fp64 NS5."""
    e_exact, e_ns5 = [], []
    for u, (exact, ns5) in zip(updates, refs):
        for ref, acc in ((exact, e_exact), (ns5, e_ns5)):
            ref = ref * (-u.norm() / ref.norm())  # the update is -lr * scale * direction
            acc.append(float((u - ref).norm() / ref.norm()))
    rms = lambda v: math.sqrt(sum(x * x for x in v) / len(v))  # noqa: E731
    return {"err_vs_exact_polar": rms(e_exact), "err_vs_fp64_ns5": rms(e_ns5)}


def peak_memory(name: str, set_name: str, threads: int) -> dict | None:
    """``{"peak_rise_mib": peak RSS rise over 3 steps, "live_peak_mib": peak live-tensor rise of a later step}``
    from a fresh process (see the module docstring and :func:`live_peak_mib`)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--mem-worker", name, "--sets", set_name, "--threads", str(threads)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError, KeyError):
        print(f"memory worker failed for {name}/{set_name}: {res.stderr[-500:]}", file=sys.stderr)
        return None


def _mem_worker(name: str, set_name: str) -> None:
    build = builders()[name][0]
    ps = make_params(SETS[set_name])
    step = _stepper(build(ps, LR), ps)
    base = _status_kib("VmRSS")
    _reset_peak_rss()
    for _ in range(3):
        step()
    rss = (_status_kib("VmHWM") - base) / 1024
    print(json.dumps({"peak_rise_mib": rss, "live_peak_mib": live_peak_mib(step)}))


def live_peak_mib(step) -> float:
    """The peak rise of live CPU tensor bytes during one call of ``step`` (a later step: the state exists),
    from torch.profiler's memory timeline (every allocation and free of the step, in order).

    Unlike the peak RSS rise this does not depend on what glibc keeps mapped or returns between steps
    (repeats of one RSS measurement differ by 5-12 MiB on the GPT-like set; this is the same to the byte):
    it is what the optimizer itself holds at once (its temporaries and stacks beyond the parameters,
    gradients and state)."""
    import numpy as np
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline  # private: the API the profiler's plots use

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    total = np.asarray(sizes, dtype=np.float64).sum(axis=1) if len(sizes) else np.zeros(1)
    return float(total.max() - total[0]) / 2**20


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak_rss() -> None:
    """Reset VmHWM (the peak RSS) to the current RSS: Linux's clear_refs value 5."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _stepper(opt, ps):
    """opt.step with the fixed gradients put back first (heavyball sets p.grad to None after a step,
    muon-optimizer overwrites it in place); the same few attribute writes for every optimizer."""
    grads = [p.grad.clone() for p in ps]

    def step():
        for p, g in zip(ps, grads):
            p.grad = g
        opt.step()

    return step


def run_set(set_name: str, rounds: int, threads: int, memory: bool, max_step_s: float) -> dict:
    base = make_params(SETS[set_name])
    blds = builders()
    ref_rms = rms_per_lr(blds["steepest.Muon default (auto)"][0])["256x64"]
    refs = references(base)
    rows, fns, info = [], {}, {}
    load_before = list(os.getloadavg())
    for name, (build, note) in blds.items():
        rms = rms_per_lr(build)
        factor = ref_rms / rms["256x64"]
        lr = LR * factor
        err = errors(first_updates(build, base, lr), refs)
        ps = clone_params(base)
        step = _stepper(build(ps, lr), ps)
        _, cpu = _util.time_once(step)
        info[name] = dict(note=note, lr=lr, lr_factor=factor, rms_per_lr=rms, **err)
        if cpu > max_step_s:
            info[name]["skipped_timing"] = f"first step took {cpu:.1f} s CPU (> {max_step_s} s)"
            continue
        fns[name] = step
    cpu_times: dict[str, list[float]] = {}
    times = time_shuffled(fns, rounds, warmup=1, cpu_times=cpu_times)
    load = list(os.getloadavg())
    key = "torch.optim.Muon"
    for name, i in info.items():
        row = {"optimizer": name, **i}
        if name in times:
            row.update(summarize(times[name]))
            row["cpu_median_ms"] = 1e3 * statistics.median(cpu_times[name])
            row["cpu_min_ms"] = 1e3 * min(cpu_times[name])
            row["cpu_ratio_vs_torch_muon"] = paired_ratio(cpu_times[name], cpu_times[key])
        if memory:
            mem = peak_memory(name, set_name, threads) or {}
            row["peak_mem_rise_mib"] = mem.get("peak_rise_mib")
            row["live_peak_mib"] = mem.get("live_peak_mib")
        rows.append(row)
    shapes = SETS[set_name]
    return {
        "set": set_name,
        "n_matrices": len(shapes),
        "n_params": sum(m * n for m, n in shapes),
        "rows": rows,
        "load_average_before": load_before,
        "load_average_after_timing": load,
        "cpu_times_s": cpu_times,
        "wall_times_s": times,
    }


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", default="gpt,charlm,conv")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--max-step-s", type=float, default=20.0, help="skip timing an optimizer slower than this")
    ap.add_argument(
        "--out", default=None, help="default benchmarks/results/peers.json (peers_nobf16.json under STEEPEST_BF16=0)"
    )
    ap.add_argument("--mem-worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    if args.mem_worker:
        return _mem_worker(args.mem_worker, args.sets)
    out = args.out or str(
        _util.ROOT
        / "benchmarks"
        / "results"
        / ("peers_nobf16.json" if os.environ.get("STEEPEST_BF16") == "0" else "peers.json")
    )
    results = {"machine": machine(), "command": "benchmarks/peers.py " + " ".join(argv or []), "sets": []}
    from steepest.linalg.precision import auto_report

    print(f"dtype='auto': {auto_report()}; load average {os.getloadavg()}")
    cols = [
        ("optimizer", "optimizer", "{}"),
        ("lr_factor", "lr factor (equal RMS)", "{:.3f}"),
        ("median_ms", "median ms", "{:.1f}"),
        ("min_ms", "min ms", "{:.1f}"),
        ("cpu_median_ms", "CPU ms (median)", "{:.1f}"),
        ("cpu_ratio_vs_torch_muon", "CPU x torch (paired)", "{:.2f}x"),
        ("err_vs_exact_polar", "err vs exact U V^T", "{:.3f}"),
        ("err_vs_fp64_ns5", "err vs fp64 NS5", "{:.2e}"),
        ("peak_mem_rise_mib", "peak RSS rise MiB", "{:.1f}"),
        ("live_peak_mib", "live-tensor peak MiB", "{:.2f}"),
    ]
    for s in args.sets.split(","):
        res = run_set(s, args.rounds, args.threads, not args.no_memory, args.max_step_s)
        results["sets"].append(res)
        print(
            f"\nset {s}: {res['n_matrices']} matrices, {res['n_params'] / 1e6:.2f} M parameters, {args.rounds} rounds, "
            f"load average after timing {res['load_average_after_timing']}\n"
        )
        print(table(res["rows"], cols))
        for r in res["rows"]:
            if "skipped_timing" in r:
                print(f"  {r['optimizer']}: not timed, {r['skipped_timing']}")
        atomic_write_json(out, results)
    print(f"\nwrote {out}")
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
