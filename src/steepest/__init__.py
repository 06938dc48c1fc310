"""steepest: steepest descent under matrix norms (SpecGD, Muon, sign descent, Schatten-p, GD) for PyTorch,
with per-layer diagnostics of which geometry helps each layer.

>>> import torch, steepest
>>> D = steepest.polar(torch.randn(8, 4), method="svd")
"""

from steepest.linalg import polar, polar_express_coefficients
from steepest.geometry import NORMS, dual_norm, dualize, matrix_norm
from steepest.optim import (
    GD, Muon, NonFiniteGradientError, SchattenDescent, SignSGD, SpecGD, SteepestDescent, describe, param_groups,
)
from steepest.optim import DistributedSteepest, distributed
from steepest.optim import Adaptive
from steepest import diagnostics
from steepest.diagnostics import LayerMonitor

__version__ = "0.1.0"

__all__ = ["polar", "polar_express_coefficients", "dualize", "dual_norm", "matrix_norm", "NORMS", "SteepestDescent",
           "Muon", "SpecGD", "SignSGD", "SchattenDescent", "GD", "param_groups", "describe",
           "NonFiniteGradientError", "DistributedSteepest", "distributed", "Adaptive", "diagnostics", "LayerMonitor",
           "__version__"]

# The main job, steepest.compare(task, optimizers=..., steps=...); the function shadows its module's name
# on the package (import helpers with ``from steepest.compare import ...``).
from steepest.compare import compare  # noqa: E402

__all__ += ["compare"]
