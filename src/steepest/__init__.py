"""steepest: steepest descent under matrix norms (SpecGD, Muon, sign descent, Schatten-p, GD) for PyTorch,
with per-layer diagnostics of which geometry helps each layer.

>>> import torch, steepest
>>> D = steepest.polar(torch.randn(8, 4), method="svd")
"""

from steepest import diagnostics
from steepest.diagnostics import LayerMonitor
from steepest.geometry import NORMS, dual_norm, dualize, matrix_norm
from steepest.linalg import polar, polar_express_coefficients
from steepest.optim import (
    GD,
    Adaptive,
    DistributedSteepest,
    Muon,
    NonFiniteGradientError,
    SchattenDescent,
    SignSGD,
    SpecGD,
    SteepestDescent,
    describe,
    distributed,
    param_groups,
)

__version__ = "0.1.0"

__all__ = [
    "polar",
    "polar_express_coefficients",
    "dualize",
    "dual_norm",
    "matrix_norm",
    "NORMS",
    "SteepestDescent",
    "Muon",
    "SpecGD",
    "SignSGD",
    "SchattenDescent",
    "GD",
    "param_groups",
    "describe",
    "NonFiniteGradientError",
    "DistributedSteepest",
    "distributed",
    "Adaptive",
    "diagnostics",
    "LayerMonitor",
    "__version__",
]

# The main job, ``steepest.compare(task, optimizers=..., steps=...)``, lives in the application
# (steepest.app.compare.compare). It is imported on first access so ``import steepest`` loads the library only.
__all__ += ["compare"]


def __getattr__(name: str):
    if name == "compare":
        from steepest.app.compare import compare  # lazy: the application sits above the library

        return compare
    raise AttributeError(f"module 'steepest' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), "compare"])
