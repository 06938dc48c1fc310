"""Seed 004's exact three-coefficient reduction of the population dynamics, so the growth-stage length T1
can be measured for any d (25 ... 1.6e6) at the cost of a scalar recursion.

From an orthogonal start W0 = theta U both methods stay on the manifold M = W W^T = a w*w*^T + b vv^T + c P
(P the bulk projector, rank d - 2), and so does the gradient's matrix K = 8 QCQ + 4 tr(CQ) Q (grad = K W,
see :mod:`steepest.app.reproduce.phase_retrieval`). With tau = tr(CQ) = (a - 1) + (1 + lambda) b + (d - 2) c,
K has the eigenvalues

    k_w = 8 (a - 1) + 4 tau,   k_v = 8 (1 + lambda)^2 b + 4 (1 + lambda) tau,   k_P = 8 c + 4 tau.

GD: W <- (I - eta K) W, so each coefficient is multiplied by (1 - eta k)^2.
SpecGD: W = R O with R diagonal in the basis (signed square roots r, M = R^2) and O orthogonal (theta U at
the start), so polar(K R O) = sign(K R) O and r <- r - eta sign(k r) for each of the three directions.

Example:
    >>> out = reduced(25, 10.0, "gd", 0.25 / (16 * 11), 2000, stop_at_t1=True)
    >>> out["trCQ"][0] < 0 <= out["trCQ"][-1]
    True
"""

from __future__ import annotations

import math


def _sign(x: float) -> float:
    return (x > 0) - (x < 0)


def reduced(
    d: int, lam: float, method: str, eta: float, steps: int, *, stop_at_t1: bool = False, stop_at_alignment: float = 2.0
) -> dict:
    """Coefficients a, b, c and tr(CQ) per step from the seed's start theta^2 = 1 / (log(d) (d + lambda)); the
    run stops after the step whose alignment a / ||M||_F = a / sqrt(a^2 + b^2 + (d - 2) c^2) reaches
    ``stop_at_alignment`` (never, at the default 2)."""
    if method not in ("specgd", "gd"):
        raise ValueError(f"method must be 'specgd' or 'gd', got {method!r}")
    theta2 = 1.0 / (math.log(d) * (d + lam))
    r = [math.sqrt(theta2)] * 3  # signed square roots (SpecGD) of a, b, c
    coef = [theta2] * 3  # a, b, c (GD)
    rec: dict[str, list[float]] = {"a": [], "b": [], "c": [], "trCQ": []}
    for _ in range(steps + 1):
        a, b, c = (x * x for x in r) if method == "specgd" else coef
        tau = (a - 1) + (1 + lam) * b + (d - 2) * c
        for key, x in zip("abc", (a, b, c)):
            rec[key].append(x)
        rec["trCQ"].append(tau)
        if not math.isfinite(tau) or (stop_at_t1 and tau >= 0):
            break
        if stop_at_alignment <= 1 and a >= stop_at_alignment * math.sqrt(a * a + b * b + (d - 2) * c * c):
            break
        k = (8 * (a - 1) + 4 * tau, 8 * (1 + lam) ** 2 * b + 4 * (1 + lam) * tau, 8 * c + 4 * tau)
        if method == "specgd":
            r = [x - eta * _sign(kj * x) for x, kj in zip(r, k)]
        else:
            coef = [x * (1 - eta * kj) ** 2 for x, kj in zip(coef, k)]
    return rec
