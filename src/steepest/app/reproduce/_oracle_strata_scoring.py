"""oracle-strata's scoring (measured winners, the strata table, the search-edge check), shared by the
experiment (:mod:`.oracle_strata`) and its report (:mod:`._oracle_strata_report`) without an import cycle.

Example:
    >>> winner({"oracle": {"spectral": {"decrease": 2.0}, "frobenius": {"decrease": 1.0}}}, "frobenius", 0.02)
    'spectral'
"""

from __future__ import annotations

import math

from steepest.diagnostics.oracle import measured_winner, spearman

PHASES = ("init", "early", "late")
GEOMETRIES = ("spectral", "frobenius", "linf")
FULL = "full"


def plateau(p: dict, rtol: float) -> bool:
    """True when a search that ended at the bracket's top reached the plateau: the decrease far beyond the
    top is within ``rtol`` of Delta*."""
    return p.get("far") is not None and abs(p["far"] - p["decrease"]) <= rtol * p["decrease"]


def _dec(r: dict, key: str) -> float:
    return float(r["oracle"][key]["decrease"])


def winner(r: dict, other: str, rtol: float) -> str:
    """Measured winner of spectral vs ``other`` on one layer record (``tie`` / ``none`` possible)."""
    return measured_winner({"spectral": _dec(r, "spectral"), other: _dec(r, other)}, rtol)


def _dd_decided(rows: list[dict], rtol: float) -> list[tuple[str, str]]:
    """(measured winner, DD prediction) of every record where both are spectral or frobenius."""
    pairs = [(winner(r, "frobenius", rtol), r["dd_winner"]) for r in rows]
    return [(w, p) for w, p in pairs if w in ("spectral", "frobenius") and p in ("spectral", "frobenius")]


def _ratios(rows: list[dict]) -> list[tuple[float, float]]:
    """(predicted nr/st, measured Delta*_spec / Delta*_frob) where both are finite and > 0."""
    return [
        (float(r["dd_ratio"]), _dec(r, "spectral") / _dec(r, "frobenius"))
        for r in rows
        if r["dd_ratio"] is not None
        and math.isfinite(float(r["dd_ratio"]))
        and r["dd_ratio"] > 0
        and _dec(r, "spectral") > 0
        and _dec(r, "frobenius") > 0
    ]


def sign_share(rows: list[dict], rtol: float) -> tuple[int, int]:
    """(records where spectral beats sign, decided records) of spectral vs sign, ties left out."""
    w = [winner(r, "linf", rtol) for r in rows]
    d = [x for x in w if x in ("spectral", "linf")]
    return sum(x == "spectral" for x in d), len(d)


def strata(results: dict, roles: tuple[str, ...] | None = None) -> list[dict]:
    """One score per (phase, batch stratum), subjects pooled: agreement, both baselines, n, verdict.
    ``roles``: only layers of these routing roles (e.g. ``("hidden",)``; default every layer)."""
    st, rows = results["settings"], results["rows"]
    if roles is not None:
        rows = [r for r in rows if r["role"] in roles]
    rtol, nan = st["tie_rtol"], float("nan")
    out = []
    for phase in PHASES:
        in_phase = [r for r in rows if r["phase"] == phase]
        d_phase = _dd_decided(in_phase, rtol)
        spec_phase = sum(w == "spectral" for w, _ in d_phase)
        majority = "spectral" if spec_phase >= len(d_phase) - spec_phase else "frobenius"
        for b in [*st["batch_sizes"], FULL]:
            sel = [r for r in in_phase if r["batch"] == b]
            d = _dd_decided(sel, rtol)
            n = len(d)
            rate = sum(w == p for w, p in d) / n if n else nan
            always = sum(w == "spectral" for w, _ in d) / n if n else nan
            maj = sum(w == majority for w, _ in d) / n if n else nan
            better = max(always, maj) if n else nan
            ok = None if n < st["min_layers"] else rate >= better + st["agree_margin"]
            ratios = _ratios(sel)
            ss, sn = sign_share(sel, rtol)
            out.append(
                {
                    "phase": phase,
                    "batch": b,
                    "n": n,
                    "agreement": rate,
                    "always_spectral": always,
                    "phase_majority": maj,
                    "majority_class": majority,
                    "better_baseline": better,
                    "verdict": {None: "inconclusive", True: "holds", False: "fails"}[ok],
                    "ties": sum(winner(r, "frobenius", rtol) == "tie" for r in sel),
                    "no_prediction": sum(r["dd_winner"] not in ("spectral", "frobenius") for r in sel),
                    "predicts_spectral": sum(p == "spectral" for _, p in d),
                    "spearman": spearman(*zip(*ratios)) if len(ratios) >= 3 else nan,
                    "spec_over_sign": ss / sn if sn else nan,
                    "n_sign": sn,
                }
            )
    return out


def _label(b) -> str:
    return FULL if b == FULL else f"B={b}"


def lr_edges(results: dict) -> list[str]:
    """Probes whose best step (with a positive decrease) sits at an end of the line search's bracket, except
    those at the top whose plateau check shows the loss flat beyond it (:func:`plateau`)."""
    rtol = results["settings"]["plateau_rtol"]
    return [
        f"{r['subject']} {r['phase']} {_label(r['batch'])} {r['layer']} {k}: best step at the bracket's edge"
        for r in results["rows"]
        for k, p in r["oracle"].items()
        if p["at_edge"] and p["decrease"] > 0 and not plateau(p, rtol)
    ]
