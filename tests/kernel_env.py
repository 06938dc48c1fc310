"""The machine a bit-for-bit frozen value depends on, for the tests that freeze float results.

The same torch build and instruction set still reduce differently on another CPU vendor: MKL and oneDNN
pick their kernels by vendor and by AMX, so an Intel Xeon with AMX and an AMD EPYC (both torch CPU
capability AVX512) give different last bits for the same float32/float64 products. A frozen value is
compared only on the environment it was recorded under (its machine-independent parts, e.g. decisions,
everywhere).

Example:
    >>> sorted(kernel_environment())
    ['amx', 'cpu_capability', 'cpu_vendor', 'machine', 'torch']
"""

from __future__ import annotations

import platform

import torch

from steepest.linalg.precision import _cpu_flags


def _vendor() -> str | None:
    """/proc/cpuinfo's ``vendor_id`` (None off Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("vendor_id")), None)
    except OSError:
        return None


def kernel_environment() -> dict:
    """What the float kernels depend on: the torch build, the instruction set torch dispatches to, the CPU
    architecture, vendor (``vendor_id``: GenuineIntel, AuthenticAMD; None off Linux) and AMX."""
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "cpu_vendor": _vendor(),
        "amx": "amx_bf16" in (_cpu_flags() or ()),  # the flags dtype="auto" reads
    }


def kernel_key(env: dict | None = None) -> str:
    """A short name of :func:`kernel_environment` (a dict key, a file name part)."""
    e = kernel_environment() if env is None else env
    return f"{e['torch']}-{e['cpu_capability']}-{e['machine']}-{e['cpu_vendor']}" + ("-amx" if e["amx"] else "")
