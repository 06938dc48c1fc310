"""Which dtype the iterative polar methods should run in on this hardware (``dtype="auto"``).

bf16 Newton-Schulz is only fast where bf16 matmul runs natively: on CUDA GPUs with bf16 support and
on CPUs with AVX512-BF16 or AMX. Elsewhere (e.g. AVX2-only CPUs) torch emulates it and a bf16
matmul measured 18x (n = 64) to 70x (n = 1024) slower than float32 (AMD EPYC, AVX2, torch 2.13),
which made Muon's step 25x slower than with float32. Where it is native, bf16 still loses on small
matrices: the casts and the bf16 kernels' fixed costs are O(m n) and O(1) against the iteration's O(m^2 n)
work (Intel Xeon with AMX: float32 faster up to 112 x 112, bf16 3.2x faster at 256 x 256). So
``"auto"`` decides per device *kind* and per matrix size:

* the kind, once per device type (cached): ``cuda`` when ``torch.cuda.is_bf16_supported()``;
  ``cpu-amx`` / ``cpu-avx512_bf16`` from the CPU flags (``/proc/cpuinfo``); on a CPU whose flags cannot
  be read (not Linux x86) a one-off micro-probe (a 256 x 256 matmul in both dtypes, bf16 if it is at
  least 1.25x faster); ``cpu-no-bf16`` otherwise;
* the dtype, per matrix: bf16 when the kind has native bf16 and the matrix passes the kind's measured
  rule :data:`BF16_RULE` (a fixed table: the same shape gets the same dtype on every run), float32
  otherwise. The rule is a cost model, not a size cut: bf16 saves ~m^2 n of iteration work (m = the
  smaller side, n = the larger) but pays O(m n) casts and a fixed cost per call, so it wins iff
  m n (m - c) >= W for the kind's cast side c and fixed work W. A long thin matrix can therefore win with
  a small side that loses as a square (Intel Xeon with AMX: 96 x 768 bf16 0.84x float32's time, 96 x 96
  1.40x).

:func:`auto_report` gives the kind, its reason, the rule and the choice per size class for a run's
environment record. ``STEEPEST_BF16=1`` / ``=0`` forces bf16 / float32 at every size (to simulate the
other kind of CPU, or to pin a cluster's behaviour).

Example:
    >>> import torch
    >>> auto_dtype(torch.device("cpu")) in (torch.bfloat16, torch.float32)
    True
    >>> auto_dtype("cpu", (64, 64)) == torch.float32 or os.environ.get("STEEPEST_BF16") == "1"
    True
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import torch

_CACHE: dict[str, tuple[str, str]] = {}  # device type -> (kind, reason)
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


class Bf16Rule(NamedTuple):
    """bf16 iff ``m * n * (m - cast_side) >= fixed_work`` for a matrix with smaller side m and larger side n.

    From the step-time model t_bf16 - t_fp32 = o + k1 m n - k2 m^2 n (a fixed cost o per call, casts and
    bf16 set-up k1 per entry, the iteration's work saved k2 per m^2 n): ``cast_side`` = k1 / k2 and
    ``fixed_work`` = o / k2. ``fixed_work=0`` is a pure side threshold (bf16 iff m >= cast_side).

    >>> Bf16Rule(128, 0).bf16((128, 512)), Bf16Rule(128, 0).bf16((96, 4096))
    (True, False)
    """

    cast_side: int
    fixed_work: int

    def bf16(self, shape) -> bool:
        m, n = sorted(int(s) for s in tuple(shape)[-2:])
        return m >= 1 and m * n * (m - self.cast_side) >= self.fixed_work

    def min_square_side(self) -> int:
        """The smallest n whose n x n matrix gets bf16 (what ``auto_report`` records as ``bf16_from_min_side``)."""
        n = max(self.cast_side, 1)
        while not self.bf16((n, n)):
            n += 1
        return n


#: The measured bf16 rule per device kind (:class:`Bf16Rule`; None: never bf16). Deterministic, fitted to
#: paired measurements of a Muon step of two matrices per shape (``benchmarks/dtype_sweep.py`` fits and prints
#: the rule for its machine):
#:
#: * ``cpu-amx`` (Intel Xeon, ``amx_bf16``; torch 2.13, 1 thread, idle 2-core box, 2026-12-07; three sweeps,
#:   62 rows from 32 x 32 to 1024 x 1024 and thin shapes to 64 x 2048; ``dtype_sweep.fit_rule`` gave c = 35-47,
#:   W = 1.3-1.6e6): c = 36, W = 1.4e6 puts every measured shape on the faster dtype or within 6% of it (the
#:   near-ties 80 x 640, 64 x 1024, 96 x 288 flip between runs).
#:   bf16 / fp32 time: 2.36x at 32, 1.89x at 64, 1.36x at 96, 1.08x at 112, 0.98x at 128, 0.67x at 160;
#:   64 x 512 1.23x, 64 x 1024 1.01x, 64 x 2048 0.68x; 96 x 192 1.12x, 96 x 288 1.01x, 96 x 768 0.85x;
#:   128 x 384 0.73x, 128 x 512 0.64x (charlm's shapes: the earlier side threshold 160 ran them in float32,
#:   1.75x slower than bf16 in the peers' charlm set).
#: * ``cpu-avx512_bf16`` (AMD EPYC, ``avx512_bf16`` without AMX; torch 2.13, 1 thread, a loaded 2-core box,
#:   so indicative; squares and 128 x 512 only, so a side threshold): bf16 / fp32 step time 2.5x at 32, 1.45x
#:   at 64, 0.99x at 96, 0.80x at 128, 0.70x at 160, 0.53x at 256, 0.50x at 384, 0.72x at 128 x 512
#:   (``dtype_sweep.py --sizes 32,...,384,128x512 --rounds 9``).
#: * ``cuda``: bf16 at every size (tensor cores; a tiny step is launch-bound in either dtype). Not yet
#:   measured (no GPU lent so far): benchmarks/gpu.py's ``dtype`` section measures it.
#: * a CPU whose flags cannot be read and whose 256 x 256 micro-probe favours bf16 takes the
#:   ``cpu-avx512_bf16`` rule.
BF16_RULE: dict[str, Bf16Rule | None] = {
    "cpu-amx": Bf16Rule(36, 1_400_000),
    "cpu-avx512_bf16": Bf16Rule(128, 0),
    "cpu-probe-bf16": Bf16Rule(128, 0),
    "cpu-no-bf16": None,
    "cuda": Bf16Rule(1, 0),
    "cuda-no-bf16": None,
    "forced-bf16": Bf16Rule(1, 0),
    "forced-float32": None,
}


class EighRule(NamedTuple):
    """The eigh form in float32 (``polar(..., form="eigh")``) iff the smaller side m >= ``min_side``, the aspect
    n / m >= ``min_aspect`` and the larger side n >= ``min_large``; or, at any aspect (squares included), iff
    m >= ``any_aspect_from`` (None: never).

    The standard bf16 form of Muon's 5 steps costs 20 m^2 n + 10 m^3 bf16 flops; the eigh form 4 m^2 n float32
    flops, one m x m float32 ``eigh`` (~9 m^3 flops at LAPACK's lower rate, plus a fixed cost that dominates small
    m) and a 2 m^3 product. With float32 about 2x slower per flop than bf16 (AMD EPYC) it wins from aspect ~3 on
    large matrices, later on small ones; with AMX (float32 ~4-8x slower than bf16) or on a GPU (slow small
    ``eigh``) it would not.

    >>> r = EighRule(128, 3.0, 1024)
    >>> r.eigh((384, 1152)), r.eigh((384, 384)), r.eigh((128, 512)), r.eigh((128, 1152))
    (True, False, False, True)
    >>> EighRule(128, 2.0, 256, 256).eigh((384, 384)), EighRule(128, 2.0, 256, 256).eigh((192, 192))
    (True, False)
    """

    min_side: int
    min_aspect: float
    min_large: int
    any_aspect_from: int | None = None

    def eigh(self, shape) -> bool:
        m, n = sorted(int(s) for s in tuple(shape)[-2:])
        if self.any_aspect_from is not None and m >= self.any_aspect_from:
            return True
        return m >= self.min_side and n >= self.min_aspect * m and n >= self.min_large


#: The measured eigh-form rule per device kind (:class:`EighRule`; None: never). Applies to ``dtype="auto"`` only
#: (an explicit dtype keeps its iteration: ``dtype=torch.bfloat16`` is torch.optim.Muon's arithmetic), eager only
#: (a compiled graph keeps the matmul-only forms); the matrices it covers run in float32 (:func:`auto_dtype`).
#:
#: * ``cpu-avx512_bf16`` (AMD EPYC, ``avx512_bf16`` without AMX; torch 2.13, 1 thread, idle 2-core box,
#:   2026-12-07, ``benchmarks/form_sweep.py``: 49 shapes, sides 64-512, aspects 1-16, stacks of 2): eigh / the
#:   faster of bf16 and float32 is <= 0.95x from aspect 9 at side 64, 6 at 96 and 128, 4 at 192 and 256, 3 at 384
#:   and 512; 1.41-1.74x on squares. The rule (m >= 128, aspect >= 3, n >= 1024) takes only winners: 0.55-0.92x
#:   (128 x 1152 0.77x, 256 x 1024 0.92x, 384 x 1152 0.83x, 384 x 1536 0.74x, 256 x 4096 0.63x), and leaves
#:   128 x 768 (0.85x) and 192 x 768 (0.91x) to the bf16 iteration; 128 x 512 (charlm's) is 1.05x, so bf16 stays.
#:   Error vs float64 NS5 (worst of Gaussian, log-spaced to 1e-3 and 1e-5, rank-4 + noise): 1.4e-3 to 2.8e-3,
#:   where the bf16 iteration has 0.20-0.42 (float32's standard or Gram form: 9e-6 to 1.6e-4, at 1.4-2x bf16's time).
#: * ``cpu-no-bf16`` and ``forced-float32`` (its simulation, ``STEEPEST_BF16=0``): there the alternative is the
#:   float32 iteration (bf16 is emulated); fitted from the same sweep's float32 column (so in the simulation on the
#:   EPYC, not on an AVX2 CPU, where float32 GEMMs are half as fast and the eigh form should gain more): eigh /
#:   float32 0.89x at 128 x 256, 0.71x at 128 x 512, 0.74x at 192 x 384, 0.39-0.63x from side 256 at aspect >= 2;
#:   squares from side 256 (added 2026-12-08 with ``any_aspect_from``): 0.87x at 256, 0.69x at 384 and 512 in the
#:   sweep, and single matrices timed alone (``polar(G, "newton_schulz", dtype=torch.float32, form=...)``, same
#:   box) 0.89x at 256, 0.71x at 384, 0.58x at 768, 0.63x at 1024, 0.53x at 2048 (768 x 1152: 0.54x); squares
#:   below 256 (192: 0.97x, 128: 1.28x) and sides 64-96 (up to 1.41x) are left out. The trade: error 1.4e-3 to
#:   2.8e-3 against the float32 iteration's 1e-5 (the bf16 iteration, torch.optim.Muon's, has 0.20-0.42), at
#:   0.39-0.89x its time.
#: * ``cpu-amx``, ``cuda``: not measured (no such machine in the session that added it), so never.
EIGH_RULE: dict[str, EighRule | None] = {
    "cpu-avx512_bf16": EighRule(128, 3.0, 1024),
    "cpu-no-bf16": EighRule(128, 2.0, 256, 256),
    "forced-float32": EighRule(128, 2.0, 256, 256),
}


def auto_eigh(device: torch.device | str, shape) -> bool:
    """Whether ``dtype="auto"`` evaluates a polynomial polar iteration of ``shape`` in the float32 eigh form on
    ``device`` (:data:`EIGH_RULE`)."""
    rule = EIGH_RULE.get(device_kind(device))
    return rule is not None and rule.eigh(shape)


#: Sizes listed per device in :func:`auto_report` (the choice per size class, for environment.json).
REPORT_SIDES = (32, 64, 128, 160, 256, 512, 1024, 4096)
#: Rectangular shapes listed too (thin matrices, where the rule differs from a side threshold).
REPORT_SHAPES = ((64, 2048), (96, 768), (128, 512))


def _kind(device: torch.device) -> tuple[str, str]:
    """(device kind, why): the key of :data:`BF16_RULE` for ``device``."""
    forced = os.environ.get("STEEPEST_BF16")
    if forced in ("0", "1"):
        return ("forced-bf16" if forced == "1" else "forced-float32"), f"forced by STEEPEST_BF16={forced}"
    if device.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ("cuda", "CUDA with native bf16") if ok else ("cuda-no-bf16", "CUDA without bf16 support")
    if device.type == "cpu":
        flags = _cpu_flags()
        if flags is not None:
            native = sorted(f for f in BF16_CPU_FLAGS if f in flags)
            if "amx_bf16" in native:
                return "cpu-amx", f"CPU with native bf16 matmul ({', '.join(native)})"
            if native:
                return "cpu-avx512_bf16", f"CPU with native bf16 matmul ({', '.join(native)})"
            return "cpu-no-bf16", (
                f"CPU without native bf16 matmul (no {' / '.join(BF16_CPU_FLAGS)}; "
                f"torch CPU capability {torch.backends.cpu.get_cpu_capability()})"
            )
    speedup = _probe(device)
    if speedup >= PROBE_MIN_SPEEDUP:
        return "cpu-probe-bf16", f"micro-probe: bf16 matmul {speedup:.2f}x faster than float32"
    return "cpu-no-bf16", f"micro-probe: bf16 matmul only {speedup:.2f}x float32's speed"


def device_kind(device: torch.device | str) -> str:
    """The device kind of :data:`BF16_RULE` for ``device`` (decided once per device type, cached)."""
    dev_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    hit = _CACHE.get(dev_type)  # the hot path: one dict lookup per dualization
    if hit is None:
        hit = _CACHE[dev_type] = _kind(torch.device(dev_type))
    return hit[0]


def auto_dtype(device: torch.device | str, shape: tuple[int, ...] | torch.Size | None = None) -> torch.dtype:
    """The iteration dtype ``dtype="auto"`` resolves to for a matrix (or batch) of ``shape`` on ``device``.

    bf16 where the device kind has native bf16 matmul and ``shape[-2:]`` passes the kind's
    :data:`BF16_RULE`, float32 otherwise, and float32 where the kind's :data:`EIGH_RULE` sends the shape to the
    float32 eigh form. ``shape=None`` answers whether the device runs bf16 at all
    (for callers that do not know the matrix). Same inputs, same answer, on every run.

    >>> import os; os.environ["STEEPEST_BF16"] = "1"; clear_cache()
    >>> auto_dtype("cpu", (64, 64))
    torch.bfloat16
    >>> del os.environ["STEEPEST_BF16"]; clear_cache()
    """
    if shape is not None and len(shape) < 2:
        raise ValueError(f"shape must be a matrix shape (..., m, n), got {tuple(shape)}")
    rule = BF16_RULE[device_kind(device)]
    if rule is None:
        return torch.float32
    if shape is None:
        return torch.bfloat16
    if auto_eigh(device, shape):  # the eigh form runs in float32
        return torch.float32
    return torch.bfloat16 if rule.bf16(shape) else torch.float32


def auto_report(devices=("cpu",)) -> dict[str, dict]:
    """``{device type: {"dtype", "reason", "kind", "bf16_rule", "bf16_from_min_side", "by_size", "eigh_rule"}}`` for
    a run's environment record: the device-level answer (bf16 anywhere?), why, the rule (:class:`Bf16Rule`: cast
    side, fixed work; None: never), the smallest square side that gets bf16, the choice for square matrices of
    each side in :data:`REPORT_SIDES` and for :data:`REPORT_SHAPES`, and the eigh-form rule
    (:data:`EIGH_RULE`)."""
    out = {}
    for d in devices:
        d = torch.device(d)
        kind = device_kind(d)
        rule = BF16_RULE[kind]
        shapes = [(n, n) for n in REPORT_SIDES] + list(REPORT_SHAPES)
        eigh = EIGH_RULE.get(kind)
        out[d.type] = {
            "dtype": _name(auto_dtype(d)),
            "reason": _CACHE[d.type][1],
            "kind": kind,
            "bf16_rule": None if rule is None else rule._asdict(),
            "bf16_from_min_side": None if rule is None else rule.min_square_side(),
            "by_size": {f"{m}x{n}": _name(auto_dtype(d, (m, n))) for m, n in shapes},
            # the polynomial polar methods run in the float32 eigh form from this side and aspect (None: never)
            "eigh_rule": None if eigh is None else eigh._asdict(),
        }
    return out


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def iteration_dtype(
    input_dtype: torch.dtype,
    dtype=None,
    device=None,
    iterative: bool = False,
    shape: tuple[int, ...] | torch.Size | None = None,
) -> torch.dtype:
    """The dtype a dualizer computes in, the one rule for every caller.

    * an explicit torch dtype wins;
    * ``None``: the input's dtype promoted to at least float32 (float64 stays float64-accurate);
    * ``"auto"``: float64 for float64 inputs; for the iterative polar methods (``iterative=True``)
      :func:`auto_dtype` of the device and the matrix ``shape`` (the matrix view, ``(..., m, n)``; None:
      the device-level answer); float32 otherwise (an SVD has no bf16 kernel).
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in (None, "auto"):
        raise ValueError(f"dtype must be a torch dtype, None or 'auto', got {dtype!r}")
    if input_dtype == torch.float64:
        return torch.float64
    if dtype == "auto" and iterative:
        return auto_dtype(device if device is not None else "cpu", shape)
    return torch.float32


def clear_cache() -> None:
    """Forget the cached decisions (tests, or after changing ``STEEPEST_BF16``)."""
    _CACHE.clear()


__all__ = [
    "auto_dtype",
    "auto_report",
    "device_kind",
    "iteration_dtype",
    "clear_cache",
    "BF16_CPU_FLAGS",
    "BF16_RULE",
    "Bf16Rule",
    "EIGH_RULE",
    "EighRule",
    "auto_eigh",
]
