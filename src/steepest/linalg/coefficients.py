"""Coefficient tables for odd-polynomial polar iterations.

Each iteration step maps ``X -> a X + b (X X^T) X + c (X X^T)^2 X``, i.e. it applies the odd quintic
``p(s) = a s + b s^3 + c s^5`` to every singular value ``s`` of ``X`` while keeping the singular
vectors. A table is a tuple of ``(a, b, c)`` triples, one per step; when more steps are asked for than
the table holds, the last triple repeats.

Sources are cited next to each table. :func:`polar_express_coefficients` regenerates Polar Express
tables for other lower bounds ``l`` and step counts (minimax odd quintics by a Remez exchange).
"""

from __future__ import annotations

import functools
import math
from typing import cast

import numpy as np

Triple = tuple[float, float, float]

#: Muon's quintic (KellerJordan/Muon; default of ``torch.optim.Muon``). The coefficients maximise the
#: slope at zero (a = 3.4445) at the price of not converging: the fixed-point band of the iteration is
#: about [0.68, 1.13], so singular values end up *near* one, never at one. That overshoot is deliberate:
#: it moves tiny singular values up fast in 5 steps, which matters more for training than exactness.
MUON_QUINTIC: Triple = (3.4445, -4.7750, 2.0315)

#: "You" 5-step schedule (used by microsoft/dion, HeavyBall, Dao-AILab gram-newton-schulz).
YOU_5STEP: tuple[Triple, ...] = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)

#: Polar Express, Algorithm 1 with l = 1e-3 (Amsel, Persson, Musco, Gower, arXiv 2505.16932).
#: Step t is the minimax-optimal odd quintic on the current interval [l_t, u_t]; the last triple
#: (15/8, -5/4, 3/8) is the classical Newton-Schulz quintic and repeats for later steps.
POLAR_EXPRESS_L1E3: tuple[Triple, ...] = (
    (8.28721201814563, -23.595886519098837, 17.300387312530933),
    (4.107059111542203, -2.9478499167379106, 0.5448431082926601),
    (3.9486908534822946, -2.908902115962949, 0.5518191394370137),
    (3.3184196573706015, -2.488488024314874, 0.51004894012372),
    (2.300652019954817, -1.6689039845747493, 0.4188073119525673),
    (1.891301407787398, -1.2679958271945868, 0.37680408948524835),
    (1.8750014808534479, -1.2500016453999487, 0.3750001645474248),
    (1.875, -1.25, 0.375),
)

#: Polar Express generated for l = 7e-4 (:func:`polar_express_coefficients` ``(7e-4, 8)``, frozen here), a
#: table for FEWER steps: with the ``schatten8`` normalization the smallest singular value of interest
#: (> 1e-3 s_max) lands at >= 7.43e-4 on every shape and spectrum of benchmarks/polar.py, below the
#: published table's l = 1e-3, where the l = 1e-3 table's 6-step error is 6.8e-2. This table, designed
#: for the interval actually reached, gives a worst |p(x) - 1| after 6 steps of 7.9e-3 on [7.43e-4, 1]
#: (with the 1.01 safety; 5 steps: 0.215; 8 steps: float32 rounding), so 6 steps meet max |s - 1| <= 1e-2
#: (benchmarks/RESULTS.md). ``polar(G, "polar_express", steps=N)`` uses it for 4 <= N <= 7, where it is the
#: better table (:func:`best_polar_express_table`). Source: Amsel et al. 2025, arXiv 2505.16932, Algorithm 1.
POLAR_EXPRESS_L7E4: tuple[Triple, ...] = (
    (8.29752645797701, -23.625254459877528, 17.321919741483395),
    (4.123000941434498, -2.9519395312392662, 0.5442433838606009),
    (4.009197421366912, -2.9233987927710188, 0.5489216529401623),
    (3.54046118956532, -2.6521358622479787, 0.5286137150429425),
    (2.5322150224845577, -1.8699202469241314, 0.440756214108275),
    (1.9258318680554378, -1.3053903276547847, 0.38058071329947535),
    (1.8750425276651985, -1.2500472521498476, 0.3750047252467503),
    (1.875, -1.25, 0.375),
)

#: Safety factor of Polar Express for low precision (paper, section on finite precision): every step but
#: the last applies p(x / 1.01), and the input is normalised by 1.01 * its norm estimate.
POLAR_EXPRESS_SAFETY = 1.01

#: The Polar Express tables the project has, by name (the published one first: it wins ties).
POLAR_EXPRESS_TABLES: dict[str, tuple[Triple, ...]] = {
    "POLAR_EXPRESS_L1E3": POLAR_EXPRESS_L1E3,
    "POLAR_EXPRESS_L7E4": POLAR_EXPRESS_L7E4,
}

#: Lower end of the interval the tables are compared on: after the ``schatten8`` normalization (and the
#: 1.01 safety) the smallest singular value of interest (> 1e-3 s_max) lands at >= 7.43e-4 on every shape
#: and spectrum of benchmarks/polar.py (worst case: 1024x1024 gaussian; benchmarks/HISTORY.md).
SCHATTEN8_FLOOR = 7.43e-4

#: Scalar errors below this count as equal when comparing tables: float32's unit roundoff 2^-24 (6e-8),
#: below which a float32 iteration cannot tell two tables apart.
_TIE = 2.0**-24


def worst_error(
    table: tuple[Triple, ...],
    steps: int,
    lo: float = SCHATTEN8_FLOOR,
    safety: float = POLAR_EXPRESS_SAFETY,
    points: int = 4001,
) -> float:
    """max |p_steps(x) - 1| over x in [lo, 1/safety] of ``table`` run for ``steps`` steps with ``safety``.

    This is the scalar bound on max |s_i(Q) - 1| for the singular values the normalization put in that
    interval (exact arithmetic): each step maps every singular value through its quintic (with
    :func:`with_safety` applied, as :func:`steepest.polar` runs it). Evaluated in float64 on a log-spaced
    grid of ``points`` (the error curve is smooth: 4001 points resolve its extrema to ~1e-6 relative).

    >>> worst_error(POLAR_EXPRESS_L7E4, 6) < 1e-2 < worst_error(POLAR_EXPRESS_L1E3, 6)
    True
    """
    x = np.logspace(math.log10(lo), math.log10(1.0 / safety), points)
    for coef in with_safety(schedule(table, steps), safety):
        x = _quintic(np.asarray(coef), x)
    return float(np.abs(x - 1.0).max())


@functools.cache
def best_polar_express_table(steps: int) -> str:
    """Name (a key of :data:`POLAR_EXPRESS_TABLES`) of the project's best Polar Express table for ``steps``.

    Best = smallest :func:`worst_error` on [:data:`SCHATTEN8_FLOOR`, 1/1.01] after ``steps`` steps; errors
    below float32 round-off (2^-24) tie, and ties go to the published table. Results (floor 7.43e-4):

    ======  ==================  ==================  =========
    steps   published l = 1e-3  l = 7e-4            chosen
    ======  ==================  ==================  =========
    4       0.681               0.663               L7E4
    5       0.324               0.216               L7E4
    6       6.3e-2              7.9e-3              L7E4
    7       7.2e-4              1.7e-6              L7E4
    8       2.9e-9              1.4e-14             L1E3 (tie)
    ======  ==================  ==================  =========

    1-3 steps: L1E3 by < 0.002 (both errors > 0.9); >= 9 steps: tie (both converged). Sources: the
    published table is Amsel et al. 2025 (arXiv 2505.16932), Algorithm 1 with l = 1e-3; the l = 7e-4
    table is this project's output of the same algorithm (:func:`polar_express_coefficients`).

    >>> best_polar_express_table(6), best_polar_express_table(8)
    ('POLAR_EXPRESS_L7E4', 'POLAR_EXPRESS_L1E3')
    """
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    best_name, best_err = "", math.inf  # every table's error is < inf, so the loop always sets a name
    for name, table in POLAR_EXPRESS_TABLES.items():
        err = max(worst_error(table, steps), _TIE)
        if err < best_err:
            best_name, best_err = name, err
    return best_name


def schedule(table: tuple[Triple, ...] | Triple, steps: int) -> list[Triple]:
    """Return ``steps`` triples from ``table``, repeating its last triple when it is too short.

    >>> schedule(MUON_QUINTIC, 2)
    [(3.4445, -4.775, 2.0315), (3.4445, -4.775, 2.0315)]
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    single = len(table) == 3 and all(isinstance(v, (int, float)) for v in table)
    rows = cast("tuple[Triple, ...]", (table,) if single else table)  # a single triple, or a table of them
    out = []
    for i in range(steps):
        a, b, c = rows[min(i, len(rows) - 1)]
        out.append((float(a), float(b), float(c)))
    return out


def with_safety(table: list[Triple], safety: float = POLAR_EXPRESS_SAFETY) -> list[Triple]:
    """Apply Polar Express's safety factor: p(x/s) for every step except the last.

    p(x/s) = (a/s) x + (b/s^3) x^3 + (c/s^5) x^5.
    """
    out = [(a / safety, b / safety**3, c / safety**5) for a, b, c in table[:-1]]
    return out + list(table[-1:])


def _quintic(coef: np.ndarray, x: np.ndarray) -> np.ndarray:
    a, b, c = coef
    return a * x + b * x**3 + c * x**5


def _minimax_quintic(lo: float, hi: float, iters: int = 100) -> tuple[Triple, float]:
    """Minimax odd quintic p minimising max_{x in [lo, hi]} |1 - p(x)| (Remez exchange, 4 points).

    Returns the coefficients and the levelled error E. The equioscillation set has four points:
    the two interval ends and the two interior extrema of the error.
    """
    # Initial reference: Chebyshev-like points on [lo, hi].
    ref = lo + (hi - lo) * (1 - np.cos(np.pi * np.arange(4) / 3)) / 2
    coef: np.ndarray = np.zeros(3)
    err = 0.0
    for _ in range(iters):
        # Solve p(x_i) + (-1)^i E = 1 for (a, b, c, E).
        mat = np.stack([ref, ref**3, ref**5, (-1.0) ** np.arange(4)], axis=1)
        sol = np.linalg.solve(mat, np.ones(4))
        coef, err = sol[:3], sol[3]
        # New interior extrema of e(x) = 1 - p(x): roots of p'(x) = a + 3b x^2 + 5c x^4.
        roots = np.roots([5 * coef[2], 0.0, 3 * coef[1], 0.0, coef[0]])
        roots = np.sort(roots[(np.abs(roots.imag) < 1e-12) & (roots.real > lo) & (roots.real < hi)].real)
        if len(roots) != 2:
            break
        new_ref = np.array([lo, roots[0], roots[1], hi])
        if np.allclose(new_ref, ref, rtol=0, atol=1e-15 * hi):
            break
        ref = new_ref
    return (float(coef[0]), float(coef[1]), float(coef[2])), abs(float(err))


@functools.lru_cache(maxsize=64)
def polar_express_coefficients(
    l: float = 1e-3, steps: int = 8, cushion: float = 0.02407327424182761
) -> tuple[Triple, ...]:
    """Generate a Polar Express table: greedy minimax odd quintics on shrinking intervals.

    Formula (arXiv 2505.16932, Algorithm 1): start from [l_0, u_0] = [l, 1]; at step t take the odd
    quintic p_t minimising max |1 - p(x)| on [max(l_t, cushion * u_t), u_t] (the cushion keeps the
    polynomial from becoming too steep when l_t is tiny), rescale it so that it is centred about one
    on [l_t, u_t], and move to [p_t(l_t), 2 - p_t(l_t)]. Once l_t is close to 1 the optimal quintic
    is Newton-Schulz's (15/8, -5/4, 3/8). The safety factor is applied separately (:func:`with_safety`).

    Example:
        >>> table = polar_express_coefficients(1e-3, 8)
        >>> len(table)
        8
    """
    if not 0 < l < 1:
        raise ValueError(f"l must be in (0, 1), got {l}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    lo, hi = float(l), 1.0
    table = []
    for _ in range(steps):
        if hi - lo < 1e-6:
            # Interval collapsed onto 1: the minimax quintic tends to the Newton-Schulz quintic
            # (p(1) = 1, p'(1) = p''(1) = 0), and a Remez solve would be singular.
            table.append((1.875, -1.25, 0.375))
            continue
        coef = np.array(_minimax_quintic(max(lo, cushion * hi), hi)[0])
        # With the cushion the quintic is levelled on [cushion*u, u], not [l, u]: rescale it so that
        # 1 - p(l) = p(u) - 1, i.e. centred about one on the real interval.
        p_lo, p_hi = float(_quintic(coef, np.array(lo))), float(_quintic(coef, np.array(hi)))
        coef = coef * (2.0 / (p_lo + p_hi))
        a, b, c = (float(v) for v in coef)
        table.append((a, b, c))
        lo = float(_quintic(coef, np.array(lo)))
        hi = 2.0 - lo
    return tuple(table)
