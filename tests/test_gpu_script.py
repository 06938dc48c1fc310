"""benchmarks/gpu.py (issue 22 item 5) in its smoke mode on the CPU, so the GPU script cannot rot; and
benchmarks/dtype_sweep.py at tiny sizes. No timing is asserted: only that every section runs and
writes the fields the full run reports."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch

from steepest.linalg import precision

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.delenv("STEEPEST_BF16", raising=False)
    precision.clear_cache()  # a kind cached under another test's STEEPEST_BF16 must not leak in
    yield lambda name: importlib.import_module(name)
    precision.clear_cache()


def test_gpu_script_smoke_runs_every_section(bench, tmp_path):
    gpu = bench("gpu")
    out = tmp_path / "gpu.json"
    res = gpu.main(["--smoke", "--device", "cpu", "--out", str(out)])
    assert res["errors"] == [] and set(res["sections"]) == set(gpu.SECTIONS)
    assert json.loads(out.read_text())["sections"].keys() == res["sections"].keys()  # the JSON is the result
    s = res["sections"]
    assert s["env"]["auto_dtype"]["cpu"]["kind"] and s["matmul"]["bf16_tflops"] > 0
    # zoo: assembled for the device, not run in smoke mode (transformers' import is too slow for it)
    assert "tests/test_zoo.py" in s["zoo"]["command"] and s["zoo"]["env"] == {"STEEPEST_TEST_DEVICE": "cpu"}
    # accuracy in bf16 and float32 for every method, on every spectrum of benchmarks/polar.py
    acc = s["accuracy"]["worst_over_shapes"]
    assert {(r["method"], r["dtype"]) for r in acc} == {
        (m, d) for m in gpu.accuracy_methods((5, 6)) for d in ("bfloat16", "float32")
    }
    pe6 = next(r for r in acc if r["method"].startswith("polar_express 6") and r["dtype"] == "float32")
    # 6 steps of the l = 7e-4 table: scalar bound 7.9e-3 (floors here are >= 7.43e-4) plus float32 rounding.
    assert all(pe6[sp] <= 1e-2 for sp in s["accuracy"]["spectra"]), pe6
    # polar time: every method at every shape, with its fraction of the matmul rate
    pol = s["polar"]["rows"]
    assert {(r["shape"], r["method"]) for r in pol} == {
        (f"{m}x{n}", k) for m, n in gpu.SMOKE["polar_shapes"] for k in gpu.polar_methods()
    }
    assert all(r["median_ms"] > 0 and r["fraction_of_matmul"] > 0 for r in pol)
    # step: steepest default and torch.optim.Muon, paired ratio and errors (memory only on CUDA)
    rows = {r["optimizer"]: r for r in s["step"]["rows"]}
    assert {"steepest.Muon default (auto)", "torch.optim.Muon"} <= set(rows)
    assert rows["torch.optim.Muon"]["ratio_vs_torch_muon"] == 1.0
    assert rows["steepest.Muon default (auto)"]["err_vs_exact_polar"] < 0.5  # NS5's band, not garbage
    assert s["dtype"]["rows"][0]["auto_choice"] in ("float32", "bfloat16")


def test_gpu_script_full_mode_needs_cuda(bench):
    gpu = bench("gpu")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(SystemExit, match="CUDA"):
        gpu.main(["--out", "/nonexistent/never-written.json"])
    with pytest.raises(SystemExit, match="CPU"):
        gpu.main(["--device", "cpu", "--out", "/nonexistent/never-written.json"])
    with pytest.raises(SystemExit, match="unknown"):
        gpu.main(["--smoke", "--sections", "env,bogus"])


def test_polar_flops_formula(bench):
    gpu = bench("gpu")
    # m x n with m <= n: 4 m^2 n + 2 m^3 per step; a tall input counts as its transpose; batches multiply.
    assert gpu.polar_flops((4, 8)) == 4 * 16 * 8 + 2 * 64 == gpu.polar_flops((8, 4))
    assert gpu.polar_flops((3, 4, 8)) == 3 * gpu.polar_flops((4, 8))


def test_dtype_sweep_tiny(bench, tmp_path):
    sweep = bench("dtype_sweep")
    res = sweep.main(["--sizes", "8,8x24", "--rounds", "1", "--out", str(tmp_path / "d.json")])
    assert [r["shape"] for r in res["rows"]] == ["8x8", "8x24"]
    assert all(r["auto_choice"] == "float32" for r in res["rows"])  # below every CPU kind's bf16 threshold
    assert res["machine"]["cpu_model"] is not None and "kind" in res["auto_report"]["cpu"]
    assert sweep.parse_sizes("64, 128x512") == [(64, 64), (128, 512)]
    with pytest.raises(SystemExit):
        sweep.parse_sizes("64xq")


def test_dtype_sweep_fits_the_cost_model_it_was_given(bench):
    """fit_rule recovers c and W from rows timed by an exact cost model t_bf16 - t_fp32 = o + k1 m n - k2 m^2 n
    (the AMX fit: o = 0.208 ms, k1 = 5.33e-6, k2 = 1.49e-7 per matrix -> c = 36, W = 1.4e6), and names the
    shapes the rule gets wrong (none here)."""
    sweep = bench("dtype_sweep")
    o, k1, k2 = 0.208, 5.33e-6, 1.49e-7
    rows = []
    for m, n in ((32, 32), (64, 64), (96, 96), (128, 128), (160, 160), (64, 2048), (96, 768), (128, 512), (48, 1536)):
        fp32 = 0.1 + 3e-7 * m * m * n  # any fp32 time: only the difference is modelled
        bf16 = fp32 + o + k1 * m * n - k2 * m * m * n
        rows.append(
            {
                "shape": f"{m}x{n}",
                "matrices": 2,
                "fp32_ms": 2 * fp32,
                "bf16_ms": 2 * bf16,
                "bf16_over_fp32": bf16 / fp32,
            }
        )
    fit = sweep.fit_rule(rows)
    assert fit["cast_side"] == round(k1 / k2) == 36  # exact data: exact up to rounding
    assert fit["fixed_work"] == round(o / k2, -5) == 1_400_000 and fit["misclassified"] == []
    assert sweep.fit_rule(rows[:2]) is None  # two shapes cannot fix three coefficients


def test_polar_steps_tiny(bench, tmp_path):
    ps = bench("polar_steps")
    res = ps.main(
        [
            "--shapes",
            "12x40",
            "--spectra",
            "log_spaced",
            "--steps",
            "6,8",
            "--dtypes",
            "float32",
            "--out",
            str(tmp_path / "p.json"),
        ]
    )
    worst = {r["method"]: r["log_spaced"] for r in res["worst_over_shapes"]}
    assert set(worst) == {
        "newton_schulz 5",
        "polar_express 6 default (L7E4)",
        "polar_express 6 published L1E3",
        "polar_express 8 default (L1E3)",
    }
    # 6 steps: the chosen table within its scalar bound 7.9e-3 (+ float32 rounding); 8 steps converged.
    assert worst["polar_express 6 default (L7E4)"] <= 1e-2 and worst["polar_express 8 default (L1E3)"] < 1e-5
