"""Which dtype the iterative polar methods should run in on this hardware (``dtype="auto"``).

bf16 Newton-Schulz is only fast where bf16 matmul runs natively: on CUDA GPUs with bf16 support and
on CPUs with AVX512-BF16 or AMX. Elsewhere (e.g. AVX2-only CPUs) torch emulates it and a bf16
matmul measured 18x (n = 64) to 70x (n = 1024) slower than float32 (AMD EPYC, AVX2, torch 2.13),
which made Muon's step 25x slower than with float32. So ``"auto"`` picks:

* bf16 on CUDA when ``torch.cuda.is_bf16_supported()``;
* bf16 on a CPU whose flags (``/proc/cpuinfo``) show ``avx512_bf16`` or ``amx_bf16``;
* on a CPU whose flags cannot be read (not Linux x86), a one-off micro-probe: a 256 x 256 matmul in
  both dtypes, bf16 if it is at least 1.25x faster;
* float32 everywhere else.

The decision is taken once per device type and cached for the process; :func:`auto_report` gives
it (with its reason) for a run's environment record. ``STEEPEST_BF16=1`` / ``=0`` forces the choice
(to simulate the other kind of CPU, or to pin a cluster's behaviour).

Example:
    >>> import torch
    >>> auto_dtype(torch.device("cpu")) in (torch.bfloat16, torch.float32)
    True
"""

from __future__ import annotations

import os
import time

import torch

_CACHE: dict[str, tuple[torch.dtype, str]] = {}
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
#: bf16 must beat float32 by this factor in the micro-probe to be chosen (below it, the precision
#: loss buys too little: 8 mantissa bits against 24).
PROBE_MIN_SPEEDUP = 1.25


def _cpu_flags() -> set[str] | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        return None
    return None


def _probe(device: torch.device) -> float:
    """float32 time / bf16 time of a 256 x 256 matmul (best of a few), on ``device``."""
    times = {}
    for dt in (torch.float32, torch.bfloat16):
        a = torch.randn(256, 256, device=device).to(dt)
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            a @ a
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - t0)
        times[dt] = best
    return times[torch.float32] / max(times[torch.bfloat16], 1e-12)


def _decide(device: torch.device) -> tuple[torch.dtype, str]:
    forced = os.environ.get("STEEPEST_BF16")
    if forced in ("0", "1"):
        return (torch.bfloat16 if forced == "1" else torch.float32), f"forced by STEEPEST_BF16={forced}"
    if device.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return (torch.bfloat16, "CUDA with native bf16") if ok else (torch.float32, "CUDA without bf16 support")
    if device.type == "cpu":
        flags = _cpu_flags()
        if flags is not None:
            native = sorted(f for f in BF16_CPU_FLAGS if f in flags)
            if native:
                return torch.bfloat16, f"CPU with native bf16 matmul ({', '.join(native)})"
            return torch.float32, (f"CPU without native bf16 matmul (no {' / '.join(BF16_CPU_FLAGS)}; "
                                   f"torch CPU capability {torch.backends.cpu.get_cpu_capability()})")
    speedup = _probe(device)
    if speedup >= PROBE_MIN_SPEEDUP:
        return torch.bfloat16, f"micro-probe: bf16 matmul {speedup:.2f}x faster than float32"
    return torch.float32, f"micro-probe: bf16 matmul only {speedup:.2f}x float32's speed"


def auto_dtype(device: torch.device | str) -> torch.dtype:
    """The iteration dtype ``dtype="auto"`` resolves to on ``device`` (cached per device type)."""
    device = torch.device(device)
    if device.type not in _CACHE:
        _CACHE[device.type] = _decide(device)
    return _CACHE[device.type][0]


def auto_report(devices=("cpu",)) -> dict[str, dict[str, str]]:
    """``{device type: {"dtype": name, "reason": why}}`` for the run's environment record."""
    out = {}
    for d in devices:
        dtype = auto_dtype(d)
        out[torch.device(d).type] = {"dtype": str(dtype).replace("torch.", ""),
                                     "reason": _CACHE[torch.device(d).type][1]}
    return out


def iteration_dtype(input_dtype: torch.dtype, dtype=None, device=None, iterative: bool = False) -> torch.dtype:
    """The dtype a dualizer computes in, the one rule for every caller.

    * an explicit torch dtype wins;
    * ``None``: the input's dtype promoted to at least float32 (float64 stays float64-accurate);
    * ``"auto"``: float64 for float64 inputs; for the iterative polar methods (``iterative=True``)
      :func:`auto_dtype` of the device; float32 otherwise (an SVD has no bf16 kernel).
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in (None, "auto"):
        raise ValueError(f"dtype must be a torch dtype, None or 'auto', got {dtype!r}")
    if input_dtype == torch.float64:
        return torch.float64
    if dtype == "auto" and iterative:
        return auto_dtype(device if device is not None else "cpu")
    return torch.float32


def clear_cache() -> None:
    """Forget the cached decisions (tests, or after changing ``STEEPEST_BF16``)."""
    _CACHE.clear()


__all__ = ["auto_dtype", "auto_report", "iteration_dtype", "clear_cache", "BF16_CPU_FLAGS"]
