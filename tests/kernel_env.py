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


def _cpuinfo() -> tuple[str | None, set[str]]:
    vendor, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "vendor_id" and vendor is None:
                    vendor = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
                if vendor is not None and flags:
                    break
    except OSError:
        pass
    return vendor, flags


def kernel_environment() -> dict:
    """What the float kernels depend on: the torch build, the instruction set torch dispatches to, the CPU
    architecture, vendor (``vendor_id``: GenuineIntel, AuthenticAMD; None off Linux) and AMX."""
    vendor, flags = _cpuinfo()
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "cpu_vendor": vendor,
        "amx": "amx_bf16" in flags,
    }


def kernel_key(env: dict | None = None) -> str:
    """A short name of :func:`kernel_environment` (a dict key, a file name part)."""
    e = kernel_environment() if env is None else env
    return f"{e['torch']}-{e['cpu_capability']}-{e['machine']}-{e['cpu_vendor']}" + ("-amx" if e["amx"] else "")
