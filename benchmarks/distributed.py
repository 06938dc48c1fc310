"""Optimizer step time per rank for a GPT-like parameter set at world sizes 1 and 2 (gloo, loopback).

Parameters: 4 blocks of (384x1152, 384x384, 1536x384, 384x1536) matrices, Muon (Nesterov momentum,
5 Newton-Schulz steps in float32), identical gradients on every rank (what DDP hands the optimizer).
Each rank is one process with one thread. Measured per rank: the whole ``opt.step()``, the
dualization compute (``step_stats["compute_s"]``: the owner-side compute_update calls) and the
communication (``step_stats["comm_s"]``, bytes sent/received), for the replicated path (plain
tensors, one all_gather) and the sharded path (DTensor Shard(0), two all_to_all).

Projection to W = 8 and 64 ranks (paper estimate, not a measurement): compute per rank = LPT makespan
of the per-matrix compute times measured at W = 1; communication from the measured loopback
all_gather latency a and bandwidth B: all_gather (ring) ~ (W-1) (a + L/B) with L the largest
per-rank payload; all_to_all pair (sharded) ~ 2 (W-1) a + 2 S/B with S ~ the bytes a rank sends.

Run: ``.venv/bin/python benchmarks/distributed.py`` (writes benchmarks/results/distributed.json and
benchmarks/results/distributed.md, recorded in benchmarks/HISTORY.md with its headline in RESULTS.md;
``--steps`` timed steps per run, ``--quick`` for a smoke run).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import steepest  # noqa: E402
from steepest.app.launch import init_from_env, launch  # noqa: E402
from steepest.app.runs import atomic_write_json, atomic_write_text, environment  # noqa: E402
from steepest.geometry import dualize_cost  # noqa: E402
from steepest.optim import functional as F  # noqa: E402
from steepest.optim.sharded import assign_owners, shard_sizes  # noqa: E402

BLOCK = [(384, 1152), (384, 384), (1536, 384), (384, 1536)]
SHAPES = BLOCK * 4


def _grads(step: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(10_000 + step)
    return [torch.randn(s, generator=g) for s in SHAPES]


def _ag(out: torch.Tensor, inp: torch.Tensor) -> None:
    (getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor)(out, inp)


def _time_collective(fn, reps: int = 5) -> float:
    dist.barrier()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def worker(mode: str, steps: int, warmup: int) -> dict:
    """One rank: time ``steps`` optimizer steps after ``warmup`` (mode "replicated" or "sharded")."""
    info = init_from_env(timeout_s=300)
    rank, world = info.rank, info.world_size
    torch.manual_seed(0)
    full = [torch.randn(s) * 0.02 for s in SHAPES]
    mesh = None
    if mode == "sharded" and world > 1:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.tensor import DTensor, Shard

        mesh = init_device_mesh("cpu", (world,))
        local = lambda t: t.split(shard_sizes(t.shape[0], world))[rank].clone()  # noqa: E731
        params = [
            torch.nn.Parameter(DTensor.from_local(local(t), mesh, [Shard(0)], shape=t.shape, stride=t.stride()))
            for t in full
        ]
    else:
        params = [torch.nn.Parameter(t) for t in full]
    opt = steepest.Muon(params, lr=0.02, weight_decay=0.0, dtype=torch.float32)
    if hasattr(opt, "executor"):  # per-matrix dualization on every side of the comparison
        per_matrix = steepest.optim.executors.PerMatrix()
        if hasattr(opt.executor, "local"):
            opt.executor.local = per_matrix
        else:
            opt.executor = per_matrix
    if world > 1:
        opt = steepest.distributed(opt)
    rows = []
    for s in range(warmup + steps):
        for p, g in zip(params, _grads(s)):
            p.grad = (
                DTensor.from_local(local(g), mesh, [Shard(0)], shape=g.shape, stride=g.stride())
                if mesh is not None
                else g
            )
        if world > 1:
            dist.barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        opt.step()
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        if s >= warmup:  # at W = 1 the whole step is the dualization (stages 1 and 3 are ~1% of it)
            st = dict(getattr(opt.executor, "step_stats", {}))
            rows.append(
                dict(
                    step_s=total,
                    step_cpu_s=cpu,
                    compute_s=st.get("compute_s", total),
                    compute_cpu_s=st.get("compute_cpu_s", cpu),
                    comm_s=st.get("comm_s", 0.0),
                    sent_bytes=st.get("sent_bytes", 0),
                    received_bytes=st.get("received_bytes", 0),
                    owned=st.get("owned", len(SHAPES)),
                )
            )
    out = {"rank": rank, "world": world, "mode": mode, "rows": rows}
    if world > 1:  # loopback all_gather latency and bandwidth, for the projection
        tiny, big = torch.zeros(1), torch.zeros(4 * 2**20)  # 4 B and 16 MiB per rank
        out["allgather_tiny_s"] = _time_collective(lambda: _ag(torch.empty(world), tiny))
        out["allgather_16MiB_s"] = _time_collective(lambda: _ag(torch.empty(world * big.numel()), big), reps=3)
    else:  # per-matrix compute times (the owners' unit of work)
        kw = opt._settings_of(0).update_kwargs()  # the kernel's own settings of the first group
        out["matrix_s"] = {}
        for shape in BLOCK:
            M = torch.randn(shape)
            F.compute_update(M, **kw)
            ts = []
            for _ in range(3):  # CPU time of this thread: what the matrix costs, whatever else runs
                t0 = time.thread_time()
                F.compute_update(M, **kw)
                ts.append(time.thread_time() - t0)
            out["matrix_s"][f"{shape[0]}x{shape[1]}"] = statistics.median(ts)
    return out


def _med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def project(matrix_s: dict, alpha: float, bw: float, worlds=(2, 8, 64)) -> list[dict]:
    """Paper projection of the per-rank step at W ranks from measured compute, latency and bandwidth."""
    per = [matrix_s[f"{m}x{n}"] for m, n in SHAPES]
    numel = [m * n for m, n in SHAPES]
    out = []
    for w in worlds:
        owners = assign_owners([dualize_cost(s) for s in SHAPES], w)
        compute = max(sum(t for t, o in zip(per, owners) if o == r) for r in range(w))
        payload = max(sum(4 * (n + 1) for n, o in zip(numel, owners) if o == r) for r in range(w))
        ag = (w - 1) * (alpha + payload / bw)
        send = 4 * sum(numel) / w  # a rank's shards of every M (and back, of every U)
        a2a = 2 * ((w - 1) * alpha + send / bw)
        out.append(
            dict(
                world=w,
                compute_s=compute,
                allgather_s=ag,
                all_to_all_s=a2a,
                replicated_step_s=compute + ag,
                sharded_step_s=compute + a2a,
                payload_bytes=payload,
            )
        )
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per run (after one warm-up step)")
    ap.add_argument("--quick", action="store_true", help="2 timed steps, for a smoke run")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "distributed.json"))
    ap.add_argument("--md", default=str(ROOT / "benchmarks" / "results" / "distributed.md"))
    args = ap.parse_args(argv)
    steps = 2 if args.quick else args.steps
    load_before = os.getloadavg()
    runs = {}
    for name, nproc, mode in [
        ("W1", 1, "replicated"),
        ("W2_replicated", 2, "replicated"),
        ("W2_sharded", 2, "sharded"),
    ]:
        print(f"running {name} ...", flush=True)
        runs[name] = launch(worker, nproc, (mode, steps, 1), timeout_s=600, threads=1)
    summary = {}
    for name, ranks in runs.items():
        summary[name] = [dict(rank=r["rank"], **{k: _med(r["rows"], k) for k in r["rows"][0]}) for r in ranks]
    w1 = summary["W1"][0]
    two = runs["W2_replicated"]
    alpha = statistics.median(r["allgather_tiny_s"] for r in two)
    t16 = statistics.median(r["allgather_16MiB_s"] for r in two)
    bw = (16 * 2**20) / max(t16 - alpha, 1e-9)  # bytes/s received per rank on loopback, W = 2
    ratios = {
        name: dict(
            compute_cpu_ratio_max_rank=max(r["compute_cpu_s"] for r in summary[name]) / w1["compute_cpu_s"],
            compute_ratio_max_rank=max(r["compute_s"] for r in summary[name]) / w1["compute_s"],
            step_ratio_max_rank=max(r["step_s"] for r in summary[name]) / w1["step_s"],
            comm_s_max_rank=max(r["comm_s"] for r in summary[name]),
            comm_fraction=max(r["comm_s"] for r in summary[name]) / max(r["step_s"] for r in summary[name]),
        )
        for name in ("W2_replicated", "W2_sharded")
    }
    proj = project(runs["W1"][0]["matrix_s"], alpha, bw)
    result = dict(
        environment=environment(),
        load_average_before=load_before,
        load_average_after=os.getloadavg(),
        command="python benchmarks/distributed.py" + (" --quick" if args.quick else ""),
        shapes=SHAPES,
        optimizer="Muon(lr=0.02, momentum=0.95, nesterov, newton_schulz 5 steps, float32)",
        steps=steps,
        summary=summary,
        ratios=ratios,
        matrix_s=runs["W1"][0]["matrix_s"],
        loopback=dict(allgather_latency_s=alpha, allgather_16MiB_s=t16, bandwidth_Bps=bw),
        projection=proj,
    )
    atomic_write_json(args.out, result)
    atomic_write_text(args.md, render(result))
    print(render(result))
    return result


def render(res: dict) -> str:
    env = res["environment"]
    lines = [
        "# Distributed optimizer step (benchmarks/distributed.py)",
        "",
        f"Machine: {env['platform']}, {env['processor']} ({env['cpu_capability']}), torch {env['torch']}, "
        f"one thread per process, gloo on loopback. Commit: {env.get('git_sha')}. Date: {env['time']}.",
        f"Command: `{res['command']}` ({res['steps']} timed steps per run after 1 warm-up; medians).",
        "",
        f"Parameters: 4 x (384x1152, 384x384, 1536x384, 384x1536), {res['optimizer']}; identical gradients "
        "on every rank (DDP's all-reduced gradients).",
        "",
        f"Load average of the shared 2-core machine (other engineers' jobs) before/after: "
        f"{', '.join(f'{x:.1f}' for x in res['load_average_before'])} / "
        f"{', '.join(f'{x:.1f}' for x in res['load_average_after'])}. Wall times are inflated by that load; "
        "the CPU-time columns (time this process or thread ran) measure the work itself.",
        "",
        "| run | rank | matrices owned | step wall (s) | step CPU (s) | dualization wall (s) | dualization CPU (s) "
        "| communication wall (s) | sent (MiB) | received (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, ranks in res["summary"].items():
        for r in ranks:
            lines.append(
                f"| {name} | {r['rank']} | {r['owned']:.0f} | {r['step_s']:.3f} | {r['step_cpu_s']:.3f} | "
                f"{r['compute_s']:.3f} | {r['compute_cpu_s']:.3f} | {r['comm_s']:.3f} | "
                f"{r['sent_bytes'] / 2**20:.1f} | {r['received_bytes'] / 2**20:.1f} |"
            )
    lines += [
        "",
        "Bytes count a rank's whole buffers, its own part included (sharded: half of each all_to_all "
        "stays on the rank at W = 2; replicated: the padded all_gather slot, one flag per matrix included).",
    ]
    lines += [
        "",
        "Ratios against W = 1 (slowest rank; the ideal dualization ratio is 1/W = 0.5):",
        "",
        "| run | dualization CPU ratio | dualization wall ratio | step wall ratio | communication wall (s) "
        "| communication / step |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in res["ratios"].items():
        lines.append(
            f"| {name} | {r['compute_cpu_ratio_max_rank']:.3f} | {r['compute_ratio_max_rank']:.3f} | "
            f"{r['step_ratio_max_rank']:.3f} | {r['comm_s_max_rank']:.3f} | {r['comm_fraction']:.3f} |"
        )
    lb = res["loopback"]
    lines += [
        "",
        "Per-matrix Newton-Schulz CPU time at W = 1: "
        + ", ".join(f"{k}: {v * 1e3:.1f} ms" for k, v in res["matrix_s"].items())
        + ".",
        f"Loopback all_gather at W = 2: latency {lb['allgather_latency_s'] * 1e6:.0f} us, 16 MiB per rank in "
        f"{lb['allgather_16MiB_s'] * 1e3:.1f} ms, i.e. {lb['bandwidth_Bps'] / 1e9:.2f} GB/s.",
        "",
        "Projection (paper estimate from the numbers above, not measured; LPT owner assignment of these 16 "
        "matrices; all_gather ring (W-1)(a + L/B); all_to_all pair 2((W-1)a + S/B)):",
        "",
        "| W | compute per rank (s) | all_gather (s) | replicated step (s) | all_to_all x2 (s) | sharded step (s) |",
        "|---|---|---|---|---|---|",
    ]
    for p in res["projection"]:
        lines.append(
            f"| {p['world']} | {p['compute_s']:.3f} | {p['allgather_s']:.3f} | {p['replicated_step_s']:.3f} | "
            f"{p['all_to_all_s']:.3f} | {p['sharded_step_s']:.3f} |"
        )
    lines += [
        "",
        "With 16 matrices, W = 64 leaves 48 ranks without a matrix: compute per rank stops at the largest "
        "single matrix, while the replicated all_gather grows like (W-1) a; the sharded path's traffic per rank "
        "falls like 1/W. Loopback bandwidth is memory bandwidth, not a network's: on a real interconnect put its "
        "a and B into `project()`.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
