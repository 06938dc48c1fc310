"""Seed 003's "at p = 32, the results are already very close to those of the Spectral norm", judged with
plain GD beside: per subject and quantity, the per-seed values of the Schatten-p dualizer at p = close_p and
of plain GD's (p = 2, G/||G||_F), whether each meets its threshold, and whether the quantity decides
anything (a threshold that GD's dualizer also meets does not tell a near-spectral update from GD's).

Quantities (:data:`CLOSE`): the scale-free variance var/mean^2 of the singular values (at most
``close_cv2``), and, as ratios to the spectral dualizer's (p = inf), the stable rank and the seed's
Definition 6 relative size ||dW||/||W|| in the Frobenius and the spectral norm (at least ``close_ratio``).

Example:
    >>> g = {"cv2": [0.5, 0.005, 0.0], "stable_rank": [1.0, 9.0, 10.0], "rel_fro": [0.1, 0.9, 1.0],
    ...      "rel_op": [0.9, 1.0, 1.0]}
    >>> import math
    >>> res = {"settings": {"close_p": 32.0, "close_cv2": 0.01, "close_ratio": 0.8}, "ps": [2.0, 32.0, math.inf],
    ...        "kinds": {"k": {"groups": {"0": g}}}}
    >>> t = close_table(res, ("k",))
    >>> t["k"]["rel_op"]["decisive"], close_verdict(t)  # GD's rel_op 0.9 passes 0.8: decides nothing
    (False, True)
"""

from __future__ import annotations

import math

import numpy as np

from steepest.app.reproduce.base import fmt

#: The quantities the p = close_p claim judges: (key, direction, label); ratios are to the p = inf value.
CLOSE = (
    ("cv2", "max", "variance/mean^2 of the singular values"),
    ("stable_rank", "min", "stable rank / spectral's"),
    ("rel_fro", "min", "relative size ||dW||_F/||W||_F / spectral's (Def. 6)"),
    ("rel_op", "min", "relative size ||dW||_op/||W||_op / spectral's (Def. 6)"),
)


def close_table(results: dict, kinds: tuple) -> dict:
    """Per kind and judged quantity (:data:`CLOSE`): the per-seed values at p = close_p and at p = 2 (plain
    GD's dualizer G/||G||_F), as ratios to p = inf where the quantity is a size; whether each passes the
    threshold; and whether the quantity decides anything for that kind (GD fails the threshold)."""
    st = results["settings"]
    ps = results["ps"]
    i, i2, j = ps.index(st["close_p"]), ps.index(2.0), ps.index(math.inf)
    out: dict[str, dict] = {}
    for k in kinds:
        out[k] = {}
        for key, how, _ in CLOSE:
            vals, gd = [], []
            for g in results["kinds"][k]["groups"].values():
                ref = 1.0 if how == "max" else g[key][j]
                vals.append(g[key][i] / ref)
                gd.append(g[key][i2] / ref)

            def ok(x, key=key, how=how):
                return x <= st["close_cv2"] if how == "max" else x >= st["close_ratio"]

            out[k][key] = {
                "p": vals,
                "gd": gd,
                "passes": all(ok(x) for x in vals),
                "decisive": not any(ok(x) for x in gd),
            }
    return out


def close_verdict(table: dict) -> bool | None:
    """holds when every decisive (kind, quantity) passes at p = close_p for every seed, fails when one does
    not; None when no quantity is decisive (plain GD meets every threshold: the test decides nothing)."""
    decisive = [c for k in table.values() for c in k.values() if c["decisive"]]
    if not decisive:
        return None
    return all(c["passes"] for c in decisive)


def close_text(table: dict) -> str:
    def rng(xs):
        return f"{fmt(float(np.mean(xs)))} [{fmt(min(xs))}-{fmt(max(xs))}]"

    return "; ".join(
        f"{k}: "
        + ", ".join(
            f"{key} {rng(c['p'])} (GD {rng(c['gd'])}{'' if c['decisive'] else ', GD passes: decides nothing'})"
            for key, c in row.items()
        )
        for k, row in table.items()
    )
