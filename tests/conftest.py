"""Test-suite settings.

One intra-op thread: the tests are many small matrix operations, for which OpenMP threads only add
spin-waiting on CI's 2 shared cores (measured 3-5x slower with 2 threads while other work runs).
Tests that need more threads (distributed ones spawn processes) set their own.
"""

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def load_benchmark():
    """``load_benchmark("train")``: ``benchmarks/<name>.py`` loaded as a module (named ``bench_<name>``);
    ``benchmarks/`` is on sys.path while the test module runs, since the scripts import each other
    (``train_combine``, ``train_map`` and ``oracle_replay`` do ``import train``)."""
    path = str(BENCHMARKS)
    sys.path.insert(0, path)

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    try:
        yield load
    finally:
        sys.path.remove(path)
