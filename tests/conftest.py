"""Test-suite settings.

One intra-op thread: the tests are many small matrix operations, for which OpenMP threads only add
spin-waiting on CI's 2 shared cores (measured 3-5x slower with 2 threads while other work runs).
Tests that need more threads (distributed ones spawn processes) set their own.
"""

import torch

torch.set_num_threads(1)
