"""Scaling laws chosen by model comparison: fit y(x) with rival laws and keep the one with the
smallest residual error, reporting every fitted parameter with a 95% interval.

Laws (each linear in its two parameters, fitted by least squares):

* ``log``:   y = a + b ln x
* ``sqrt``:  y = a + b sqrt(x)
* ``power``: ln y = ln a + b ln x  (y = a x^b; fitted in log space, its residuals mapped back to y)
* ``loglog``: y = a + b ln ln x

Comparison is on the residual standard error of y (all laws have two parameters, so AIC and BIC
order them the same way); the winner must beat the runner-up by ``margin`` (relative) to be called.

Example:
    >>> import numpy as np
    >>> x = np.array([16, 32, 64, 128, 256, 512, 1024.0])
    >>> best = compare(x, 3 + 2 * np.log(x))
    >>> best["winner"], round(best["fits"]["log"]["b"], 6)
    ('log', 2.0)
"""

from __future__ import annotations

import math

import numpy as np

LAWS = ("log", "sqrt", "power", "loglog")
#: two-sided 97.5% Student-t quantiles by degrees of freedom (1..10), then the normal value
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def t975(dof: int) -> float:
    """The 97.5% quantile of Student's t with ``dof`` degrees of freedom (table; 1.96 beyond 10)."""
    if dof < 1:
        return math.nan
    return _T975[dof - 1] if dof <= len(_T975) else 1.96


def linear_fit(u: np.ndarray, y: np.ndarray) -> dict:
    """Least squares y = a + b u with standard errors and 95% intervals (t with n - 2 dof)."""
    u, y = np.asarray(u, float), np.asarray(y, float)
    n = len(u)
    if n < 3 or np.ptp(u) == 0:
        return {"a": math.nan, "b": math.nan, "b_lo": math.nan, "b_hi": math.nan, "rse": math.nan, "r2": math.nan}
    X = np.stack([np.ones(n), u], axis=1)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    resid = y - X @ coef
    s2 = float(resid @ resid) / (n - 2)
    cov = s2 * np.linalg.inv(X.T @ X)
    se_b = math.sqrt(max(cov[1, 1], 0.0))
    t = t975(n - 2)
    r2 = 1 - float(resid.var()) / float(y.var()) if y.var() > 0 else math.nan
    return {
        "a": float(coef[0]),
        "b": float(coef[1]),
        "b_lo": float(coef[1] - t * se_b),
        "b_hi": float(coef[1] + t * se_b),
        "rse": math.sqrt(s2),
        "r2": r2,
    }


def fit(law: str, x, y) -> dict:
    """Fit one law; ``rse`` is always the residual standard error in y's own units."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if law == "log":
        return linear_fit(np.log(x), y)
    if law == "sqrt":
        return linear_fit(np.sqrt(x), y)
    if law == "loglog":
        return linear_fit(np.log(np.log(x)), y)
    if law == "power":
        if np.any(y <= 0):
            return {**linear_fit(np.log(x), np.log(np.abs(y) + 1e-300)), "rse": math.inf}
        f = linear_fit(np.log(x), np.log(y))
        pred = math.exp(f["a"]) * x ** f["b"]
        f["rse"] = math.sqrt(float(((y - pred) ** 2).sum()) / max(len(x) - 2, 1))
        return f
    raise ValueError(f"unknown law {law!r}; choose one of {LAWS}")


def compare(x, y, laws=LAWS, margin: float = 0.2) -> dict:
    """Fit every law; ``winner`` has the smallest rse and beats the runner-up by ``margin`` (else
    ``"none"``: the data do not tell the laws apart)."""
    fits = {law: fit(law, x, y) for law in laws}
    order = sorted(laws, key=lambda k: fits[k]["rse"] if math.isfinite(fits[k]["rse"]) else math.inf)
    best, second = order[0], order[1] if len(order) > 1 else None
    rb = fits[best]["rse"]
    rs = fits[second]["rse"] if second else math.inf
    decided = math.isfinite(rb) and (rs == math.inf or rb <= (1 - margin) * rs)
    return {
        "fits": fits,
        "order": order,
        "winner": best if decided else "none",
        "rse_ratio": rb / rs if rs and math.isfinite(rs) and rs > 0 else 0.0,
    }
