"""Cost of the spectral-power knob U diag(s^a) V^T (steepest.linalg.spectral_power) beside the polar step.

Per shape (float32 input, the charlm / GPT-like layer shapes and a conv kernel view), timed in
interleaved rounds on one thread (process CPU time, median): the knob by its Gram eigh path in float64
(the default) and float32, by a float64 SVD (the reference path), and, for scale, Muon's Newton-Schulz
step (``steepest.polar(method="newton_schulz")`` in bf16 where the CPU has native bf16, else float32) and
the exact float64 polar factor. Also the error of each knob path at a = 0.25 against the float64 SVD
reference (max |D - D_ref| / max |D_ref|).

Usage::

    .venv/bin/python benchmarks/spectral_power.py            # ~1-2 minutes on 2 cores
    .venv/bin/python benchmarks/spectral_power.py --quick    # two shapes
Writes benchmarks/results/spectral_power.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import statistics

import torch

import _util  # noqa: F401  (puts src/ on sys.path)
import steepest
from _util import ROOT, machine, table, time_interleaved
from steepest.app.runs import atomic_write_json
from steepest.linalg.precision import auto_dtype
from steepest.linalg.spectral_power import spectral_power

SHAPES = ((128, 128), (128, 512), (512, 128), (384, 384), (384, 1536), (1536, 384), (64, 576))
QUICK = ((128, 128), (384, 1536))
A = 0.25


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "spectral_power.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ns_dtype = auto_dtype(torch.device("cpu"))
    rows = []
    for shape in QUICK if args.quick else SHAPES:
        G = torch.randn(*shape)
        ref = spectral_power(G.double(), A, method="svd")
        fns = {
            "gram64": lambda G=G: spectral_power(G, A),
            "gram32": lambda G=G: spectral_power(G, A, dtype=torch.float32),
            "svd64": lambda G=G: spectral_power(G, A, method="svd"),
            "ns5": lambda G=G: steepest.polar(G, method="newton_schulz", dtype=ns_dtype),
            "polar_svd64": lambda G=G: steepest.polar(G, method="svd", dtype=torch.float64),
        }
        cpu: dict[str, list[float]] = {}
        time_interleaved(fns, args.rounds, cpu_times=cpu)
        ms = {k: 1e3 * statistics.median(v) for k, v in cpu.items()}
        err = {
            k: ((spectral_power(G, A, **kw).double() - ref).abs().max() / ref.abs().max()).item()
            for k, kw in (("gram64", {}), ("gram32", {"dtype": torch.float32}))
        }
        rows.append(
            dict(
                shape="x".join(map(str, shape)),
                **{f"{k}_ms": v for k, v in ms.items()},
                gram64_vs_ns5=ms["gram64"] / ms["ns5"],
                gram64_vs_svd64=ms["gram64"] / ms["svd64"],
                err_gram64=err["gram64"],
                err_gram32=err["gram32"],
            )
        )
    cols = [
        ("shape", "shape", "{}"),
        ("gram64_ms", "knob gram f64 ms", "{:.2f}"),
        ("gram32_ms", "knob gram f32 ms", "{:.2f}"),
        ("svd64_ms", "knob svd f64 ms", "{:.2f}"),
        ("ns5_ms", f"NS5 ({str(ns_dtype).split('.')[-1]}) ms", "{:.2f}"),
        ("polar_svd64_ms", "polar svd f64 ms", "{:.2f}"),
        ("gram64_vs_ns5", "gram64 / NS5", "{:.2f}"),
        ("gram64_vs_svd64", "gram64 / svd64", "{:.2f}"),
        ("err_gram64", "err gram64", "{:.1e}"),
        ("err_gram32", "err gram32", "{:.1e}"),
    ]
    print(table(rows, cols))
    atomic_write_json(args.out, {"a": A, "rows": rows, "machine": machine(), "command": "benchmarks/spectral_power.py"})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
