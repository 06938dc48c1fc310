"""torch.optim optimizers for steepest descent under matrix norms, and whole-model routing."""

from steepest.optim import choosers, executors, measured_choosers, settings, time_choosers
from steepest.optim.adaptive import Adaptive
from steepest.optim.functional import NonFiniteGradientError
from steepest.optim.recipes import GD, Muon, SchattenDescent, SignSGD, SpecGD
from steepest.optim.routing import describe, param_groups
from steepest.optim.sharded import DistributedSteepest, distributed
from steepest.optim.steepest import SteepestDescent

__all__ = [
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
    "choosers",
    "time_choosers",
    "measured_choosers",
    "executors",
    "settings",
]
