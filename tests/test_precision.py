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


@pytest.mark.parametrize("flags, expected", [
    ({"avx2", "avx512f", "avx512_bf16"}, torch.bfloat16),
    ({"avx2", "amx_bf16", "amx_tile"}, torch.bfloat16),
    ({"avx2", "fma", "avx512f"}, torch.float32),  # AVX512 without BF16: emulated bf16
    ({"avx2", "fma"}, torch.float32),
])
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
    torch.testing.assert_close(steepest.polar(G, "newton_schulz", dtype="auto"),
                               steepest.polar(G, "newton_schulz", dtype=torch.float32), rtol=0, atol=0)
