"""Rank statistics for the oracle reports: Spearman's rank correlation and the one-sided Mann-Whitney
rank-sum test, with average ranks for ties (pure Python: a few dozen values each; no SciPy needed).

Example:
    >>> spearman([1, 2, 3], [10, 20, 30])
    1.0
    >>> round(rank_sum_greater([5, 6, 7, 8, 9], [0, 1, 2, 3, 4]), 4)   # one sample entirely above the other
    0.0061
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson correlation of average ranks; NaN for n < 3, a constant or a NaN).

    Example: ``spearman([1, 2, 3], [10, 20, 30])`` is 1.0 and ``spearman([1, 2, 3], [3, 2, 1])`` is -1.0.
    """
    if len(x) != len(y):
        raise ValueError(f"x and y must have the same length, got {len(x)} and {len(y)}")
    if len(x) < 3 or any(v != v for v in (*x, *y)):  # (v != v: NaN, which has no rank)
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else float("nan")


def rank_sum_greater(x: Sequence[float], y: Sequence[float]) -> float:
    """One-sided p-value that ``x`` tends to exceed ``y`` (Mann-Whitney U, the normal approximation with
    the tie and continuity corrections; NaN when either sample is empty or every value is tied).

    A shift that floating point moves by a percent (a median above another by 1%) stays a large p-value.
    Example: ``rank_sum_greater([5, 6, 7, 8, 9], [0, 1, 2, 3, 4])`` is 0.0061 (one sample entirely above).
    """
    n1, n2 = len(x), len(y)
    if not n1 or not n2:
        return float("nan")
    r = _ranks(list(x) + list(y))
    u = sum(r[:n1]) - n1 * (n1 + 1) / 2
    n = n1 + n2
    counts: dict[float, int] = {}
    for v in list(x) + list(y):
        counts[v] = counts.get(v, 0) + 1
    ties = sum(t**3 - t for t in counts.values())
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return float("nan")
    z = (u - n1 * n2 / 2 - 0.5) / math.sqrt(var)
    return 0.5 * math.erfc(z / math.sqrt(2))


def _ranks(v: Sequence[float]) -> list[float]:
    order = sorted(range(len(v)), key=lambda i: v[i])
    ranks = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


__all__ = ["spearman", "rank_sum_greater"]
