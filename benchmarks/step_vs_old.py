"""Step time of the current step kernel against an older commit, in one sitting, paired step by step.

Two long-lived worker processes, one importing ``steepest`` from the current tree and one from an
old tree (``--old-src``, e.g. a worktree of the commit before the kernel rewrite), each own the same
GPT-like parameters (``benchmarks/step.py``'s shapes, fixed gradients) and one optimizer per
configuration. The driver asks them for ONE step at a time, alternating old / new and rotating the
configurations each round, so they never run at the same time and load drift hits both alike. Each
step is timed inside the worker by ``time.thread_time()`` (CPU time of the calling thread: with one
torch thread it is the step's own compute, excluding time spent waiting for a shared core) and
``time.perf_counter()``. Reported per configuration: median and minimum CPU ms, median wall ms, and
the paired ratio new / old (median over rounds of the two steps taken back to back).

Both trees get EQUAL EXPLICIT settings (the defaults differ: Muon's Newton-Schulz dtype was bf16 at
aa4c33c and is "auto" now; SteepestDescent's was float32). The first update of every configuration
is also compared between the trees (max abs difference and relative Frobenius difference), so a
speed-up cannot hide a change of numerics.

Usage::

    git worktree add /tmp/old aa4c33c
    .venv/bin/python benchmarks/step_vs_old.py --old-src /tmp/old/src --rounds 20
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
SHAPES = ((384, 1152), (384, 384), (1536, 384), (384, 1536))
#: name -> (recipe, keyword arguments); identical in both trees.
CONFIGS = {
    "Muon NS5 bf16": ("Muon", {"dtype": "bfloat16"}),
    "Muon NS5 fp32": ("Muon", {"dtype": "float32"}),
    "Muon Polar Express 8 fp32": ("Muon", {"dtype": "float32", "method": "polar_express", "ns_steps": 8}),
}


# ----------------------------------------------------------------------------- worker side
def _worker(blocks: int, threads: int, configs: list[str], dump: str) -> None:
    import torch

    import steepest

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    base = []
    for _ in range(blocks):
        for m, n in SHAPES:
            w = torch.randn(m, n, generator=g) / math.sqrt(n)
            base.append((w, torch.randn(m, n, generator=g) * 1e-2))
    opts = {}
    for name in configs:
        recipe, kw = CONFIGS[name]
        kw = dict(kw, dtype=getattr(torch, kw["dtype"]))
        ps = []
        for w, gr in base:
            p = torch.nn.Parameter(w.clone())
            p.grad = gr.clone()
            ps.append(p)
        opt = getattr(steepest, recipe)(ps, lr=0.02, momentum=0.95, nesterov=True, weight_decay=0.1, **kw)
        opt.batch_matrices = False  # the CPU default path in both trees
        before = [p.detach().clone() for p in ps]
        opt.step()  # first step: its update is dumped for the cross-tree comparison, and it warms up
        torch.save([(p.detach() - b) for p, b in zip(ps, before)], f"{dump}.{name.replace(' ', '_')}.pt")
        opt.step()
        opts[name] = opt
    print(json.dumps({"ready": True, "steepest": steepest.__file__, "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        name = line.strip()
        if not name:
            break
        opt = opts[name]
        c0, t0 = time.thread_time(), time.perf_counter()
        opt.step()
        print(json.dumps({"cpu": time.thread_time() - c0, "wall": time.perf_counter() - t0}), flush=True)


# ----------------------------------------------------------------------------- driver side
def _start(src: str, args, dump: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS=str(args.threads))
    cmd = [
        sys.executable,
        str(HERE),
        "--worker",
        "--blocks",
        str(args.blocks),
        "--threads",
        str(args.threads),
        "--dump",
        dump,
        "--configs",
        ",".join(args.configs),
    ]
    proc = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    hello = json.loads(proc.stdout.readline())
    if not hello.get("ready"):
        raise RuntimeError(f"worker for {src} did not start: {hello}")
    hello["src"] = src
    return proc, hello


def _ask(proc, name: str) -> dict:
    proc.stdin.write(name + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old-src", default="/tmp/old/src", help="src/ directory of the old tree")
    ap.add_argument("--new-src", default=str(ROOT / "src"))
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--configs", type=lambda s: s.split(","), default=list(CONFIGS))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "step_vs_old.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--dump", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return _worker(args.blocks, args.threads, args.configs, args.dump)

    sys.path.insert(0, str(HERE.parent))
    import torch

    from _util import machine, table

    tmp = tempfile.mkdtemp(prefix="step_vs_old.")
    load_before = list(os.getloadavg())
    procs = {}
    for tree, src in (("old", args.old_src), ("new", args.new_src)):
        procs[tree] = _start(src, args, f"{tmp}/{tree}")
    for tree, (_, hello) in procs.items():
        print(f"{tree}: steepest from {hello['steepest']}")
    cpu = {(t, c): [] for t in procs for c in args.configs}
    wall = {(t, c): [] for t in procs for c in args.configs}
    for r in range(args.rounds):
        k = r % len(args.configs)
        for c in args.configs[k:] + args.configs[:k]:
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            for t in order:
                res = _ask(procs[t][0], c)
                cpu[(t, c)].append(res["cpu"])
                wall[(t, c)].append(res["wall"])
        print(f"round {r + 1}/{args.rounds}  load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    for proc, _ in procs.values():
        proc.stdin.write("\n")
        proc.stdin.close()
        proc.wait(timeout=60)
    rows = []
    for c in args.configs:
        uo = torch.load(f"{tmp}/old.{c.replace(' ', '_')}.pt")
        un = torch.load(f"{tmp}/new.{c.replace(' ', '_')}.pt")
        diff = max(float((a - b).abs().max()) for a, b in zip(uo, un))
        num = math.sqrt(sum(float((a.double() - b.double()).norm()) ** 2 for a, b in zip(uo, un)))
        den = math.sqrt(sum(float(a.double().norm()) ** 2 for a in uo))
        co, cn = cpu[("old", c)], cpu[("new", c)]
        rows.append(
            {
                "config": c,
                "old_cpu_median_ms": 1e3 * statistics.median(co),
                "new_cpu_median_ms": 1e3 * statistics.median(cn),
                "old_cpu_min_ms": 1e3 * min(co),
                "new_cpu_min_ms": 1e3 * min(cn),
                "old_wall_median_ms": 1e3 * statistics.median(wall[("old", c)]),
                "new_wall_median_ms": 1e3 * statistics.median(wall[("new", c)]),
                "cpu_ratio_paired": statistics.median(b / a for a, b in zip(co, cn)),
                "cpu_ratio_of_min": min(cn) / min(co),
                "wall_ratio_paired": statistics.median(b / a for a, b in zip(wall[("old", c)], wall[("new", c)])),
                "first_update_max_abs_diff": diff,
                "first_update_rel_diff": num / den,
            }
        )
    cols = [
        ("config", "config (equal explicit settings)", "{}"),
        ("old_cpu_median_ms", "old CPU ms (median)", "{:.1f}"),
        ("new_cpu_median_ms", "new CPU ms (median)", "{:.1f}"),
        ("old_cpu_min_ms", "old min", "{:.1f}"),
        ("new_cpu_min_ms", "new min", "{:.1f}"),
        ("cpu_ratio_paired", "new/old CPU (paired median)", "{:.3f}x"),
        ("cpu_ratio_of_min", "new/old of mins", "{:.3f}x"),
        ("wall_ratio_paired", "new/old wall (paired)", "{:.3f}x"),
        ("first_update_rel_diff", "first update rel. diff", "{:.1e}"),
    ]
    n = args.blocks * len(SHAPES)
    load_after = list(os.getloadavg())
    print(
        f"\n{n} matrices ({args.blocks} blocks of {', '.join(f'{m}x{n}' for m, n in SHAPES)}), {args.rounds} rounds, "
        f"{args.threads} thread(s); load average before {load_before}, after {load_after}\n"
    )
    print(table(rows, cols))
    result = {
        "machine": machine(),
        "command": "benchmarks/step_vs_old.py " + " ".join(argv or sys.argv[1:]),
        "trees": {t: h for t, (_, h) in procs.items()},
        "load_average_before": load_before,
        "load_average_after": load_after,
        "rows": rows,
        "cpu_times_s": {f"{t}|{c}": v for (t, c), v in cpu.items()},
        "wall_times_s": {f"{t}|{c}": v for (t, c), v in wall.items()},
    }
    from steepest._io import atomic_write_json

    atomic_write_json(args.out, result)
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
