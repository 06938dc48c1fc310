"""dtype="auto": bf16 Newton-Schulz only where bf16 matmul is native, decided once per device."""

from __future__ import annotations

import pytest
import torch

import steepest
from steepest.linalg import precision as P


@pytest.fixture(autouse=True)
def _fresh_cache(monkeypatch):
    monkeypatch.delenv("STEEPEST_BF16", raising=False)
    P.clear_cache()
    yield
    P.clear_cache()


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"avx2", "avx512f", "avx512_bf16"}, torch.bfloat16),
        ({"avx2", "amx_bf16", "amx_tile"}, torch.bfloat16),
        ({"avx2", "fma", "avx512f"}, torch.float32),  # AVX512 without BF16: emulated bf16
        ({"avx2", "fma"}, torch.float32),
    ],
)
def test_cpu_capability_check(monkeypatch, flags, expected):
    monkeypatch.setattr(P, "_cpu_flags", lambda: flags)
    assert P.auto_dtype("cpu") == expected
    reason = P.auto_report()["cpu"]["reason"]
    assert ("native bf16" in reason) and (("without" in reason) == (expected == torch.float32))


def test_unknown_cpu_uses_the_micro_probe_once(monkeypatch):
    calls = []
    monkeypatch.setattr(P, "_cpu_flags", lambda: None)
    monkeypatch.setattr(P, "_probe", lambda device: calls.append(device) or 3.0)
    assert P.auto_dtype("cpu") == torch.bfloat16 and P.auto_dtype("cpu") == torch.bfloat16
    assert len(calls) == 1  # cached per process and device type
    P.clear_cache()
    monkeypatch.setattr(P, "_probe", lambda device: 1.1)  # below PROBE_MIN_SPEEDUP: not worth 8 bits
    assert P.auto_dtype("cpu") == torch.float32
    assert "micro-probe" in P.auto_report()["cpu"]["reason"]


def test_env_override_and_float64(monkeypatch):
    monkeypatch.setenv("STEEPEST_BF16", "0")
    assert P.auto_dtype("cpu") == torch.float32
    P.clear_cache()
    monkeypatch.setenv("STEEPEST_BF16", "1")
    assert P.auto_dtype("cpu") == torch.bfloat16
    assert P.iteration_dtype(torch.float64, "auto", "cpu", iterative=True) == torch.float64
    assert P.iteration_dtype(torch.float32, "auto", "cpu", iterative=False) == torch.float32  # SVD
    assert P.iteration_dtype(torch.bfloat16, None) == torch.float32
    with pytest.raises(ValueError, match="dtype must be"):
        P.iteration_dtype(torch.float32, "fast")


@pytest.mark.parametrize("forced, explicit", [("1", torch.bfloat16), ("0", torch.float32)])
def test_muon_default_is_the_explicit_choice_bit_for_bit(monkeypatch, forced, explicit):
    """Both kinds of CPU simulated: the default Muon step equals the explicit dtype's step exactly."""
    monkeypatch.setenv("STEEPEST_BF16", forced)
    g = torch.Generator().manual_seed(0)
    W0 = torch.randn(24, 12, generator=g)
    G = torch.randn(24, 12, generator=g)
    out = []
    for dtype in ("auto", explicit):
        W = torch.nn.Parameter(W0.clone())
        opt = steepest.Muon([W], lr=0.02, dtype=dtype)
        W.grad = G.clone()
        opt.step()
        out.append(W.detach())
    assert torch.equal(out[0], out[1])
    assert steepest.Muon([torch.nn.Parameter(W0.clone())]).state_dict()["param_groups"][0]["dtype"] == "auto"


def test_polar_accepts_auto(monkeypatch):
    monkeypatch.setenv("STEEPEST_BF16", "0")
    G = torch.randn(16, 8)
    torch.testing.assert_close(
        steepest.polar(G, "newton_schulz", dtype="auto"),
        steepest.polar(G, "newton_schulz", dtype=torch.float32),
        rtol=0,
        atol=0,
    )


# --------------------------------------------------------------------------- the dtype per matrix size
AMX = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}
AVX512_BF16 = {"avx2", "avx512f", "avx512_bf16"}
NO_BF16 = {"avx2", "fma", "avx512f"}
SIDES = (32, 64, 96, 128, 159, 160, 192, 256, 512, 1024, 2048, 4096)
BF, F32 = torch.bfloat16, torch.float32


@pytest.mark.parametrize(
    "flags, kind, bf16_from",
    [
        # Intel Xeon with AMX, benchmarks/dtype_sweep.py on 33 shapes (idle box): bf16 / fp32 1.08x at 112,
        # 0.98x at 128; thin matrices win earlier (96 x 768 0.85x, 64 x 2048 0.68x): the cost-model rule.
        (AMX, "cpu-amx", 126),
        # AMD EPYC (avx512_bf16, no AMX), benchmarks/dtype_sweep.py: bf16 0.99x fp32 at 96, 0.80x at 128.
        (AVX512_BF16, "cpu-avx512_bf16", 128),
        (NO_BF16, "cpu-no-bf16", None),
    ],
)
def test_auto_dtype_per_size_on_each_cpu_kind(monkeypatch, flags, kind, bf16_from):
    monkeypatch.setattr(P, "_cpu_flags", lambda: flags)
    assert P.device_kind("cpu") == kind
    rule = P.BF16_RULE[kind]
    assert (rule.min_square_side() if rule is not None else None) == bf16_from
    expected = {n: (BF if bf16_from is not None and n >= bf16_from else F32) for n in SIDES}
    assert {n: P.auto_dtype("cpu", (n, n)) for n in SIDES} == expected
    # The spelled-out table, so a changed rule is a visible decision.
    first_bf16 = {"cpu-amx": 128, "cpu-avx512_bf16": 128, "cpu-no-bf16": None}[kind]
    assert [n for n in SIDES if expected[n] == BF] == ([n for n in SIDES if n >= first_bf16] if first_bf16 else [])
    # Orientation does not matter; batches go by their matrices; 256 x 1024 is bf16 wherever bf16 is native.
    native = bf16_from is not None
    for shape in ((96, 512), (128, 512), (64, 2048), (48, 1536)):
        assert P.auto_dtype("cpu", shape) == P.auto_dtype("cpu", shape[::-1])
    assert P.auto_dtype("cpu", (128, 512)) == P.auto_dtype("cpu", (128, 128))
    # wide matrices from 128 x 1024 on: on the EPYC the float32 eigh form (precision.EIGH_RULE), else bf16 where native
    eigh = kind == "cpu-avx512_bf16"
    assert P.auto_dtype("cpu", (256, 1024)) == (BF if native and not eigh else F32)
    assert P.auto_dtype("cpu", (8, 64, 64)) == F32
    assert P.auto_dtype("cpu", (3, 384, 1152)) == (BF if native and not eigh else F32)
    shapes = ((128, 1024), (1152, 384), (384, 384), (128, 768), (96, 4096), (128, 256), (64, 2048))
    want = {
        "cpu-avx512_bf16": [True, True, False, False, False, False, False],
        # against the float32 iteration: from aspect 2, and squares from side 256 (384 x 384: 0.69x)
        "cpu-no-bf16": [True, True, True, True, False, True, False],
        "cpu-amx": [False] * 7,
    }[kind]
    assert [P.auto_eigh("cpu", s) for s in shapes] == want
    # Thin matrices: on AMX the measured winners (bf16 at 96 x 768: 0.85x, 64 x 2048: 0.68x; float32 at
    # 96 x 192: bf16 1.12x, 64 x 512: 1.23x, 48 x 1536: 1.07x); a side threshold (EPYC) keeps float32.
    thin = {(96, 768): BF, (64, 2048): BF, (96, 192): F32, (64, 512): F32, (48, 1536): F32, (32, 4096): F32}
    for shape, want in thin.items():
        assert P.auto_dtype("cpu", shape) == (want if kind == "cpu-amx" else F32), shape
    # Device-level answer (no shape): does this CPU run bf16 at all (compare's NEEDS_NATIVE_BF16 reads it).
    assert P.auto_dtype("cpu") == (BF if native else F32)
    # Deterministic: the same shape gives the same dtype after the cache is cleared (no timing involved).
    P.clear_cache()
    assert {n: P.auto_dtype("cpu", (n, n)) for n in SIDES} == expected
    with pytest.raises(ValueError, match="matrix shape"):
        P.auto_dtype("cpu", (64,))


def test_bf16_rule_is_the_cost_model_it_states():
    """bf16 iff m n (m - c) >= W (m the smaller side): the boundary is inclusive, W = 0 is a side threshold,
    and c = 1, W = 0 (CUDA, forced) takes every shape."""
    r = P.Bf16Rule(36, 1_400_000)
    assert r.bf16((128, 128)) and 128 * 128 * 92 >= 1_400_000
    assert not r.bf16((112, 112)) and 112 * 112 * 76 < 1_400_000
    exact = P.Bf16Rule(10, 20 * 30 * 10)  # m = 20, n = 30: 20 * 30 * (20 - 10) = W exactly
    assert exact.bf16((20, 30)) and exact.bf16((30, 20)) and not exact.bf16((20, 29))
    side = P.Bf16Rule(128, 0)
    assert side.bf16((128, 10**6)) and not side.bf16((127, 10**6)) and side.min_square_side() == 128
    assert all(P.Bf16Rule(1, 0).bf16((n, k)) for n in (1, 7, 64) for k in (1, 9, 4096))


def test_steepest_bf16_0_simulates_a_cpu_without_bf16_at_every_size(monkeypatch):
    monkeypatch.setattr(P, "_cpu_flags", lambda: AMX)  # even on AMX hardware
    monkeypatch.setenv("STEEPEST_BF16", "0")
    assert all(P.auto_dtype("cpu", (n, n)) == F32 for n in SIDES)
    P.clear_cache()
    monkeypatch.setenv("STEEPEST_BF16", "1")
    assert all(P.auto_dtype("cpu", (n, n)) == BF for n in SIDES)


def test_auto_dtype_on_cuda_mocked(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    cuda = torch.device("cuda")
    assert P.device_kind(cuda) == "cuda"
    assert all(P.auto_dtype(cuda, (n, n)) == BF for n in SIDES)  # tensor cores at every size
    assert P.iteration_dtype(F32, "auto", cuda, iterative=True, shape=(32, 32)) == BF
    assert P.auto_report(["cuda"])["cuda"]["by_size"]["32x32"] == "bfloat16"
    P.clear_cache()
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100
    assert all(P.auto_dtype(cuda, (n, n)) == F32 for n in SIDES)


def test_auto_report_records_the_rule(monkeypatch):
    monkeypatch.setattr(P, "_cpu_flags", lambda: AMX)
    rep = P.auto_report()["cpu"]
    assert rep["kind"] == "cpu-amx" and rep["bf16_from_min_side"] == 126 and rep["dtype"] == "bfloat16"
    assert rep["bf16_rule"] == {"cast_side": 36, "fixed_work": 1_400_000}
    assert rep["by_size"]["64x64"] == "float32" and rep["by_size"]["128x128"] == "bfloat16"
    assert rep["by_size"]["64x2048"] == "bfloat16" and rep["by_size"]["256x256"] == "bfloat16"
    assert rep["eigh_rule"] is None  # the eigh form is not measured on AMX: never
    P.clear_cache()
    monkeypatch.setattr(P, "_cpu_flags", lambda: AVX512_BF16)
    epyc = P.auto_report()["cpu"]
    assert epyc["eigh_rule"] == {"min_side": 128, "min_aspect": 3.0, "min_large": 1024, "any_aspect_from": None}
    assert epyc["by_size"]["1024x1024"] == "bfloat16" and epyc["by_size"]["128x512"] == "bfloat16"
    import json

    json.dumps(rep)  # it goes into environment.json


def test_explicit_bf16_still_forces_bf16_on_small_matrices(monkeypatch):
    monkeypatch.setattr(P, "_cpu_flags", lambda: AMX)
    G = torch.randn(32, 32, generator=torch.Generator().manual_seed(1))
    assert P.iteration_dtype(F32, BF, "cpu", iterative=True, shape=(32, 32)) == BF
    bf = steepest.polar(G, "newton_schulz", dtype=BF)
    # auto picks float32 at 32 x 32: exactly the explicit float32 result, and not the bf16 one.
    assert torch.equal(steepest.polar(G, "newton_schulz", dtype="auto"), steepest.polar(G, "newton_schulz", dtype=F32))
    assert not torch.equal(bf, steepest.polar(G, "newton_schulz", dtype=F32))
    # bf16 really ran: the bf16 result is the float32 one rounded through 8-bit mantissas (~1e-2 apart).
    assert 1e-3 < float((bf - steepest.polar(G, "newton_schulz", dtype=F32)).abs().max()) < 0.1
    # and through the geometry's dualizer, as the optimizers call it
    D_auto = steepest.dualize(G, "spectral", method="newton_schulz", dtype="auto")
    assert torch.equal(D_auto, steepest.dualize(G, "spectral", method="newton_schulz", dtype=F32))
    assert torch.equal(steepest.dualize(G, "spectral", method="newton_schulz", dtype=BF), bf)


def test_muon_step_explicit_bf16_on_small_matrix(monkeypatch):
    """dtype=torch.bfloat16 on a 32 x 32 parameter stays bf16 (torch.optim.Muon's choice) on AMX."""
    monkeypatch.setattr(P, "_cpu_flags", lambda: AMX)
    g = torch.Generator().manual_seed(0)
    W0, G = torch.randn(32, 32, generator=g), torch.randn(32, 32, generator=g)
    out = {}
    for name, dtype in (("bf16", BF), ("fp32", F32)):
        W = torch.nn.Parameter(W0.clone())
        opt = steepest.Muon([W], lr=0.02, weight_decay=0.0, dtype=dtype)
        W.grad = G.clone()
        opt.step()
        out[name] = W.detach()
    assert not torch.equal(out["bf16"], out["fp32"])
    U = -(out["bf16"] - W0) / 0.02  # the bf16 update direction equals bf16 Newton-Schulz of the gradient
    ref = steepest.polar(G.to(BF).float(), "newton_schulz", dtype=BF)
    torch.testing.assert_close(U, ref, atol=2e-2, rtol=0)  # bf16 rounding of the update (8-bit mantissa)


def test_muon_default_on_small_matrix_is_float32_bit_for_bit(monkeypatch):
    monkeypatch.setattr(P, "_cpu_flags", lambda: AMX)
    g = torch.Generator().manual_seed(0)
    W0, G = torch.randn(32, 32, generator=g), torch.randn(32, 32, generator=g)
    out = []
    for dtype in ("auto", F32):
        W = torch.nn.Parameter(W0.clone())
        opt = steepest.Muon([W], lr=0.02, dtype=dtype)
        W.grad = G.clone()
        opt.step()
        out.append(W.detach())
    assert torch.equal(out[0], out[1])
