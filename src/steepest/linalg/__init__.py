"""Pure tensor math, batch-aware over (..., m, n): polar factors, Schatten norms, coefficient tables."""

from steepest.linalg.coefficients import MUON_QUINTIC, POLAR_EXPRESS_L1E3, YOU_5STEP, polar_express_coefficients
from steepest.linalg.polar_factor import polar, polar_svd
from steepest.linalg.schatten import conjugate_exponent, schatten_dualize, schatten_norm

__all__ = [
    "polar",
    "polar_svd",
    "schatten_norm",
    "schatten_dualize",
    "conjugate_exponent",
    "MUON_QUINTIC",
    "POLAR_EXPRESS_L1E3",
    "YOU_5STEP",
    "polar_express_coefficients",
]
