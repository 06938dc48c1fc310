"""One CUDA device, one run, one JSON: steepest's GPU numbers (issue 22 item 5). Driver: benchmarks/gpu.sh.

Sections (``--sections``, default all, in this order; each is timed and a failing section is recorded
as an error, not fatal to the others):

* ``env``: device name, capability, memory, torch / CUDA versions, ``dtype="auto"``'s rule
  (``precision.auto_report``), the machine record of ``benchmarks/_util.machine``.
* ``matmul``: the device's measured bf16 matmul rate: the best of square ``n x n @ n x n`` products at
  n = 4096 and 8192, 2 n^3 flops each, timed with CUDA events (the reference for every "fraction").
* ``zoo``: ``pytest tests/test_zoo.py -k trains_with_muon`` with ``STEEPEST_TEST_DEVICE=cuda`` (every zoo
  model, 5 steps of ``steepest.Muon`` on the device, the loss must fall), in a subprocess.
* ``accuracy``: the polar accuracy table in bf16 (and float32 beside it), benchmarks/polar_steps.py's:
  max |s - 1| over singular values > 1e-3 s_max and the relative Frobenius error to the float64 polar
  factor, per method and step count (Newton-Schulz 5; Polar Express 4-8 with the table ``steps=N`` picks,
  and the published table truncated), on benchmarks/polar.py's spectra at 1024 x 1024 and 1024 x 4096.
* ``polar``: time of Newton-Schulz (5 steps, Muon's quintic), Polar Express (8 and 6 steps) and Gram
  Newton-Schulz (5 steps, restart after 2) in bf16 at 1024, 2048, 4096, 8192 square and 4096 x 16384,
  as CUDA-event medians, and each as a fraction of the measured matmul rate. The flops counted are the
  standard form's, ``steps * (4 m^2 n + 2 m^3)`` for an m x n input (m <= n), for every method, so the
  Gram form's "fraction" is a standard-form-equivalent rate and may exceed its own kernel utilisation.
  Goal (issue 22): Newton-Schulz bf16 at 4096 >= 70% of the matmul rate.
* ``step``: ``steepest.Muon`` (default ``dtype="auto"``, and explicit bf16) against ``torch.optim.Muon``
  and the installed peers of benchmarks/peers.py on its GPT-like set (``peers.SETS["gpt"]``, 16 matrices,
  7.1 M parameters), equal update RMS as in peers.py: median step time (wall between synchronizations,
  interleaved rounds), paired ratio to torch.optim.Muon, error of the first update against the exact
  polar factor and float64 NS5, and the peak memory rise of three steps
  (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` minus the allocation before).
  Goal: steepest's step <= torch.optim.Muon's.
* ``dtype``: benchmarks/dtype_sweep.py's fp32 / bf16 / auto Muon step per size (32 .. 4096) on the device.

``--smoke`` runs every section at tiny sizes on the CPU when no CUDA device is present (the zoo section
is then only assembled, not run: importing transformers alone takes longer than the whole smoke run),
so the script is exercised by the test suite (tests/test_gpu_script.py). Without ``--smoke`` a CUDA
device is required. Timing is on the device (CUDA events, or synchronize around wall-clock time).

Usage::

    bash benchmarks/gpu.sh                                   # full run, < 8 min on one H100
    .venv/bin/python benchmarks/gpu.py --smoke --out /tmp/gpu_smoke.json
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
import warnings

import torch

import _util  # noqa: F401  (puts src/ on sys.path)
import steepest
from _util import clone_params, machine, paired_ratio, table, time_interleaved
from steepest._io import atomic_write_json
from steepest.linalg import precision

SECTIONS = ("env", "matmul", "zoo", "accuracy", "polar", "step", "dtype")
GOAL_NS_FRACTION = 0.70

FULL = dict(
    matmul_sides=(4096, 8192),
    polar_shapes=((1024, 1024), (2048, 2048), (4096, 4096), (8192, 8192), (4096, 16384)),
    accuracy_shapes=((1024, 1024), (1024, 4096)),
    accuracy_steps=(4, 5, 6, 7, 8),
    polar_reps=10,
    step_set="gpt",
    step_rounds=20,
    dtype_sizes="32,64,128,256,512,1024,2048,4096",
    dtype_rounds=7,
    peers=True,
)
SMOKE = dict(
    matmul_sides=(64,),
    polar_shapes=((32, 32), (16, 64)),
    accuracy_shapes=((12, 40),),
    accuracy_steps=(5, 6),
    polar_reps=2,
    step_set=None,
    step_rounds=2,
    dtype_sizes="16",
    dtype_rounds=1,
    peers=False,
)
SMOKE_STEP_SHAPES = [(24, 72), (24, 24), (96, 24)]  # one tiny GPT-like block


# --------------------------------------------------------------------------- timing on the device
def device_time_ms(fn, device: torch.device, reps: int, warmup: int = 2) -> list[float]:
    """Milliseconds per call of ``fn``: CUDA events around each call on CUDA (the work queued by the call,
    measured on the device), perf_counter between synchronizations elsewhere."""
    for _ in range(warmup):
        fn()
    out = []
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        for _ in range(reps):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            out.append(start.elapsed_time(end))
    else:
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            out.append(1e3 * (time.perf_counter() - t0))
    return out


def polar_flops(shape) -> float:
    """Flops of one standard-form odd-quintic step on an m x n matrix (m <= n): X X^T (2 m^2 n), the
    polynomial b A + c A^2 (2 m^3) and B X (2 m^2 n)."""
    m, n = sorted(shape[-2:])
    return math.prod(shape[:-2]) * (4.0 * m * m * n + 2.0 * m**3)


# --------------------------------------------------------------------------- sections
def section_env(device: torch.device, cfg: dict) -> dict:
    out = {
        "machine": machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "auto_dtype": precision.auto_report([device.type]),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(
            device_name=props.name,
            capability=f"{props.major}.{props.minor}",
            total_memory_gib=props.total_memory / 2**30,
            multiprocessors=props.multi_processor_count,
            bf16_supported=torch.cuda.is_bf16_supported(),
            allow_tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        )
    else:
        out["device_name"] = f"cpu ({out['machine'].get('cpu_model', '')})"
    return out


def section_matmul(device: torch.device, cfg: dict) -> dict:
    rows = []
    for n in cfg["matmul_sides"]:
        g = torch.Generator(device=device).manual_seed(0)
        a = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=g)
        b = torch.randn(n, n, device=device, dtype=torch.bfloat16, generator=g)
        ms = device_time_ms(lambda a=a, b=b: a @ b, device, reps=cfg["polar_reps"] + 10)
        best = min(ms)
        rows.append(
            {
                "n": n,
                "median_ms": statistics.median(ms),
                "min_ms": best,
                "tflops_at_min": 2.0 * n**3 / (best * 1e-3) / 1e12,
                "tflops_at_median": 2.0 * n**3 / (statistics.median(ms) * 1e-3) / 1e12,
            }
        )
        del a, b
    rate = max(r["tflops_at_median"] for r in rows)
    return {
        "rows": rows,
        "bf16_tflops": rate,
        "note": "rate = best over sizes of 2 n^3 / median time (CUDA events); reference for the fractions",
    }


def zoo_command(device: torch.device) -> tuple[list[str], dict]:
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        str(_util.ROOT / "tests" / "test_zoo.py"),
        "-k",
        "trains_with_muon",
    ]
    env = dict(os.environ, STEEPEST_TEST_DEVICE=str(device), PYTHONPATH=str(_util.ROOT / "src"))
    return cmd, env


def section_zoo(device: torch.device, cfg: dict, smoke: bool) -> dict:
    cmd, env = zoo_command(device)
    out = {"command": " ".join(cmd[1:]), "env": {"STEEPEST_TEST_DEVICE": env["STEEPEST_TEST_DEVICE"]}}
    if smoke:
        out["skipped"] = "smoke mode: command assembled, not run (transformers' import alone exceeds the smoke budget)"
        return out
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=str(_util.ROOT))
    tail = (res.stdout + res.stderr).strip().splitlines()
    out.update(
        returncode=res.returncode,
        seconds=time.perf_counter() - t0,
        summary=tail[-1] if tail else "",
        tail=tail[-30:],
        passed=res.returncode == 0,
    )
    return out


def accuracy_methods(steps_list) -> dict:
    """name -> callable(G, dtype) of the accuracy table (benchmarks/polar_steps.py's methods)."""
    import polar_steps

    return polar_steps.methods(steps_list)


def section_accuracy(device: torch.device, cfg: dict) -> dict:
    import polar_steps

    spectra = list(polar_steps.polar_bench.SPECTRA)
    rows = polar_steps.accuracy_rows(
        device, cfg["accuracy_shapes"], spectra, accuracy_methods(cfg["accuracy_steps"]), ("bfloat16", "float32")
    )
    return {
        "rows": rows,
        "worst_over_shapes": polar_steps.worst_over_shapes(rows, spectra),
        "spectra": spectra,
        "metric": "max |u_i^T Q v_i - 1| over s_i > 1e-3 s_max vs the float64 SVD of the float32 input",
    }


def polar_methods() -> dict:
    bf = torch.bfloat16
    return {
        "newton_schulz 5": lambda G: steepest.polar(G, "newton_schulz", 5, dtype=bf, gram=False),
        # in bf16 the mixed Gram form (bf16 m x n products, float32 m x m side, restarted after 3 steps)
        "gram_newton_schulz 5": lambda G: steepest.polar(G, "newton_schulz", 5, dtype=bf, gram=True),
        "polar_express 8": lambda G: steepest.polar(G, "polar_express", 8, dtype=bf),
        "polar_express 6": lambda G: steepest.polar(G, "polar_express", 6, dtype=bf),
    }


def section_polar(device: torch.device, cfg: dict, rate_tflops: float | None) -> dict:
    rows = []
    for shape in cfg["polar_shapes"]:
        G = torch.randn(*shape, device=device, generator=torch.Generator(device=device).manual_seed(1))
        for name, fn in polar_methods().items():
            steps = int(name.split()[-1])
            ms = device_time_ms(lambda fn=fn, G=G: fn(G), device, reps=cfg["polar_reps"])
            med = statistics.median(ms)
            tflops = steps * polar_flops(shape) / (med * 1e-3) / 1e12
            rows.append(
                {
                    "shape": "x".join(map(str, shape)),
                    "method": name,
                    "median_ms": med,
                    "min_ms": min(ms),
                    "std_form_tflops": tflops,
                    "fraction_of_matmul": tflops / rate_tflops if rate_tflops else None,
                }
            )
        del G
    ns4096 = next((r for r in rows if r["shape"] == "4096x4096" and r["method"] == "newton_schulz 5"), None)
    goal = (
        None
        if ns4096 is None or ns4096["fraction_of_matmul"] is None
        else ns4096["fraction_of_matmul"] >= GOAL_NS_FRACTION
    )
    return {
        "rows": rows,
        "matmul_bf16_tflops": rate_tflops,
        "goal_ns_4096_fraction": GOAL_NS_FRACTION,
        "goal_met": goal,
    }


def step_builders(with_peers: bool) -> dict:
    """name -> (build(params, lr), note): steepest.Muon default and bf16, torch.optim.Muon, and the
    installed peers of benchmarks/peers.py when ``with_peers``."""
    import peers

    blds = peers.builders()
    keep = ("steepest.Muon default (auto)", "steepest.Muon bf16", "torch.optim.Muon")
    return {k: v for k, v in blds.items() if with_peers or k in keep}


def _to_device(ps: list[torch.nn.Parameter], device: torch.device) -> list[torch.nn.Parameter]:
    out = []
    for p in ps:
        q = torch.nn.Parameter(p.detach().to(device))
        q.grad = p.grad.to(device)
        out.append(q)
    return out


def _peak_rise_mib(build, base, lr, device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    ps = clone_params(base)
    opt = build(ps, lr)
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    grads = [p.grad.clone() for p in ps]
    for _ in range(3):
        for p, g in zip(ps, grads):
            p.grad = g
        opt.step()
    torch.cuda.synchronize(device)
    rise = (torch.cuda.max_memory_allocated(device) - before) / 2**20
    del opt, ps, grads
    return rise


def section_step(device: torch.device, cfg: dict) -> dict:
    import peers

    shapes = peers.SETS[cfg["step_set"]] if cfg["step_set"] else SMOKE_STEP_SHAPES
    base = _to_device(peers.make_params(shapes), device)
    blds = step_builders(cfg["peers"])
    ref_rms = peers.rms_per_lr(blds["steepest.Muon default (auto)"][0])["256x64"]  # on the CPU: lr only
    refs = peers.references(base)
    fns, rows = {}, []
    for name, (build, note) in blds.items():
        try:  # a peer that fails on this device is recorded, not fatal to the comparison
            factor = ref_rms / peers.rms_per_lr(build)["256x64"]
            lr = peers.LR * factor
            err = peers.errors(peers.first_updates(build, base, lr), refs)
            ps = clone_params(base)
            step = peers._stepper(build(ps, lr), ps)
            step()
            mem = _peak_rise_mib(build, base, lr, device)
        except Exception as e:
            if name != "torch.optim.Muon" and not name.startswith("steepest"):
                rows.append({"optimizer": name, "note": note, "error": f"{type(e).__name__}: {e}"})
                continue
            raise
        fns[name] = step
        rows.append({"optimizer": name, "note": note, "lr_factor": factor, **err, "peak_mem_rise_mib": mem})
    wall = time_interleaved(fns, cfg["step_rounds"], warmup=2, device=device)
    key = "torch.optim.Muon"
    for r in rows:
        if r["optimizer"] not in wall:
            continue
        ts = wall[r["optimizer"]]
        r.update(
            median_ms=1e3 * statistics.median(ts), min_ms=1e3 * min(ts), ratio_vs_torch_muon=paired_ratio(ts, wall[key])
        )
    default = next(r for r in rows if r["optimizer"] == "steepest.Muon default (auto)")
    return {
        "set": cfg["step_set"] or "smoke",
        "n_matrices": len(shapes),
        "n_params": sum(m * n for m, n in shapes),
        "rows": rows,
        "clock": "wall between synchronizations, interleaved rounds",
        "goal_default_le_torch": default["ratio_vs_torch_muon"] <= 1.0,
    }


def section_dtype(device: torch.device, cfg: dict) -> dict:
    import dtype_sweep

    rows = [
        dtype_sweep.sweep_size(shape, 2, cfg["dtype_rounds"], str(device))
        for shape in dtype_sweep.parse_sizes(cfg["dtype_sizes"])
    ]
    return {
        "rows": rows,
        "met": all(r["within_goal"] for r in rows),
        "measured_bf16_from_min_side": dtype_sweep.suggested_threshold(rows),
        "fitted_rule": dtype_sweep.fit_rule(rows),
    }


# --------------------------------------------------------------------------- driver
def _print_summary(res: dict) -> None:
    s = res["sections"]
    if "matmul" in s and "rows" in s["matmul"]:
        print(f"\nbf16 matmul: {s['matmul']['bf16_tflops']:.1f} TFLOP/s")
    if "zoo" in s:
        print(f"zoo: {s['zoo'].get('summary') or s['zoo'].get('skipped') or s['zoo'].get('error')}")
    if "accuracy" in s and "worst_over_shapes" in s["accuracy"]:
        sp = s["accuracy"]["spectra"]
        print("\npolar accuracy, max |s - 1| (worst over shapes):\n")
        print(
            table(
                s["accuracy"]["worst_over_shapes"],
                [("method", "method", "{}"), ("dtype", "dtype", "{}")]
                + [(x, x, "{:.2e}") for x in sp]
                + [("rel_fro_err_worst", "rel. Frobenius", "{:.2e}")],
            )
        )
    if "polar" in s and "rows" in s["polar"]:
        print("\npolar time (bf16):\n")
        print(
            table(
                s["polar"]["rows"],
                [
                    ("shape", "shape", "{}"),
                    ("method", "method", "{}"),
                    ("median_ms", "median ms", "{:.2f}"),
                    ("std_form_tflops", "TFLOP/s", "{:.1f}"),
                    ("fraction_of_matmul", "x matmul rate", "{:.2f}"),
                ],
            )
        )
        print(f"goal NS5 bf16 at 4096 >= {GOAL_NS_FRACTION:.0%} of matmul: {s['polar']['goal_met']}")
    if "step" in s and "rows" in s["step"]:
        print(f"\nstep, set {s['step']['set']}:\n")
        print(
            table(
                s["step"]["rows"],
                [
                    ("optimizer", "optimizer", "{}"),
                    ("median_ms", "median ms", "{:.2f}"),
                    ("ratio_vs_torch_muon", "x torch (paired)", "{:.2f}"),
                    ("err_vs_exact_polar", "err vs U V^T", "{:.3f}"),
                    ("err_vs_fp64_ns5", "err vs fp64 NS5", "{:.2e}"),
                    ("peak_mem_rise_mib", "peak mem rise MiB", "{:.1f}"),
                ],
            )
        )
    if "dtype" in s and "rows" in s["dtype"]:
        print("\ndtype per size (Muon step of 2 matrices):\n")
        print(
            table(
                s["dtype"]["rows"],
                [
                    ("shape", "shape", "{}"),
                    ("fp32_ms", "fp32 ms", "{:.2f}"),
                    ("bf16_ms", "bf16 ms", "{:.2f}"),
                    ("auto_choice", "auto", "{}"),
                    ("auto_over_best", "auto / faster", "{:.3f}"),
                ],
            )
        )
    for name, sec in s.items():
        if "error" in sec:
            print(f"\nsection {name} FAILED: {sec['error']}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes; CPU when no CUDA device (the test suite)")
    ap.add_argument("--device", default=None, help="default cuda (smoke: cuda if available, else cpu)")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--out", default=None, help="default benchmarks/results/gpu.json (smoke: gpu_smoke.json)")
    args = ap.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    bad = sorted(set(sections) - set(SECTIONS))
    if bad:
        raise SystemExit(f"--sections: unknown {bad}; choose from {SECTIONS}")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() or not args.smoke else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: benchmarks/gpu.py needs one (use --smoke for the CPU check)")
    if device.type != "cuda" and not args.smoke:
        raise SystemExit(f"--device {device}: the full run is for a CUDA device; --smoke runs on the CPU")
    cfg = SMOKE if args.smoke else FULL
    out = args.out or str(_util.ROOT / "benchmarks" / "results" / ("gpu_smoke.json" if args.smoke else "gpu.json"))
    warnings.filterwarnings("ignore")
    res = {
        "command": "benchmarks/gpu.py " + " ".join(argv or []),
        "smoke": args.smoke,
        "device": str(device),
        "settings": {k: v for k, v in cfg.items()},
        "sections": {},
    }
    t_all = time.perf_counter()
    rate = None
    for name in sections:
        t0 = time.perf_counter()
        try:
            if name == "env":
                sec = section_env(device, cfg)
            elif name == "matmul":
                sec = section_matmul(device, cfg)
                rate = sec["bf16_tflops"]
            elif name == "zoo":
                sec = section_zoo(device, cfg, args.smoke)
            elif name == "accuracy":
                sec = section_accuracy(device, cfg)
            elif name == "polar":
                if rate is None:  # --sections without matmul: measure the reference rate first
                    rate = section_matmul(device, cfg)["bf16_tflops"]
                sec = section_polar(device, cfg, rate)
            elif name == "step":
                sec = section_step(device, cfg)
            else:
                sec = section_dtype(device, cfg)
        except Exception as e:  # one broken section must not lose the others' numbers
            sec = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
        sec["seconds"] = time.perf_counter() - t0
        if device.type == "cuda":
            sec["max_memory_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
        res["sections"][name] = sec
        print(
            f"[{name}] {sec['seconds']:.1f} s" + (f" ERROR {sec['error']}" if "error" in sec else ""),
            file=sys.stderr,
            flush=True,
        )
        atomic_write_json(out, res)  # after every section: a timeout still leaves the finished ones
    res["seconds"] = time.perf_counter() - t_all
    res["errors"] = [n for n, s in res["sections"].items() if "error" in s]
    atomic_write_json(out, res)
    _print_summary(res)
    print(f"\nwrote {out} ({res['seconds']:.0f} s)")
    return res


if __name__ == "__main__":
    r = main(sys.argv[1:])
    sys.exit(1 if r["errors"] else 0)
