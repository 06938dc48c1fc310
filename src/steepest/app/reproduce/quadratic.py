"""Seed 000: spectral descent vs gradient descent on f(X) = 1/2 ||A X - B||_F^2.

Source: "Scribe Notes on Spectral Descent" (lecture notes, lecturer Ying Qi Wen).

For M = A^T A the smoothness constants are L_F = ||M||_op = ||A||_op^2 (Frobenius geometry) and
L_* = sup_Z ||M Z||_* / ||Z||_op = ||M||_* = ||A||_F^2 (operator-norm geometry). Spectral descent
X <- X - (||G||_*/L_*) polar(G) guarantees f(X_{t+1}) <= f(X_t) - ||G_t||_*^2/(2 L_*), gradient descent
X <- X - G/L_F guarantees f(X_{t+1}) <= f(X_t) - ||G_t||_F^2/(2 L_F), and the spectral bound is the
larger one exactly when nr(G_t) = ||G_t||_*^2/||G_t||_F^2 >= sr(A) = ||A||_F^2/||A||_op^2.

This module checks the closed forms against a numerical estimate of each supremum, runs both methods
(:class:`steepest.SpecGD` with ``step_size="dual"``, :class:`steepest.GD`) from the same start for
matrices A of several stable ranks, and checks both guarantees and the equivalence at every step.

Example:
    >>> from steepest.app.reproduce import quadratic
    >>> res = quadratic.run(quadratic.quick(), None)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math

import torch

import steepest
from steepest.app.reproduce.base import Cells, Claim, fmt, nuclear_rank, progress, stable_rank, verdict
from steepest.app.runs import ConfigError

SEED = "seed 000"
SOURCE = '"Scribe Notes on Spectral Descent" (lecture notes, lecturer Ying Qi Wen)'
TITLE = "spectral vs Euclidean descent on a matrix quadratic"
VERSION = 2

#: Relative slack for "decrease >= guaranteed decrease": float64 evaluation of f loses ~1e-16 * f per
#: step, so 1e-9 of the bound is far above rounding and far below any real violation.
DECREASE_RTOL = 1e-9
#: Absolute slack, relative to f(X0): once f is near its minimum, f_t - f_{t+1} is a difference of two
#: numbers each carrying ~d^2 * eps * f(X0) ~ 1e-12 * f(X0) of float64 summation error, and the bound
#: itself is below that, so steps at this rounding floor cannot violate anything measurable.
ROUND_ATOL = 1e-11
#: nr and sr closer than this (relative) count as a tie, where the comparison is decided by rounding.
TIE_RTOL = 1e-9
#: Closed form vs numerical supremum: power iteration converges like (s2/s1)^(2k); with the default
#: iteration counts the estimate is within ~1e-8 for these spectra, so 1e-4 flags only a wrong formula.
SUP_RTOL = 1e-4


@dataclasses.dataclass
class Config:
    d: int = 96                      # A, X, B are d x d (seed 000, section 7)
    stable_ranks: tuple[float, ...] = (1.5, 4.0, 16.0, 48.0)   # target sr(A), each in [1, d]
    steps: int = 100
    sup_restarts: int = 6            # random starts of the numerical sup estimates
    sup_iters: int = 100             # iterations per start
    seed: int = 0

    def __post_init__(self) -> None:
        if self.d < 2 or self.steps < 1 or self.sup_restarts < 1 or self.sup_iters < 1:
            raise ConfigError("d >= 2, steps >= 1, sup_restarts >= 1 and sup_iters >= 1 are required")
        bad = [s for s in self.stable_ranks if not 1.0 <= float(s) <= self.d]
        if bad or not self.stable_ranks:
            raise ConfigError(f"stable_ranks must be non-empty values in [1, d={self.d}], got {self.stable_ranks}")


def quick() -> Config:
    return Config(d=32, stable_ranks=(1.5, 4.0, 16.0), steps=30, sup_restarts=3, sup_iters=60)


# ---------------------------------------------------------------------------------------- problem
def singular_values(d: int, target_sr: float) -> torch.Tensor:
    """s_i = i^(-alpha), i = 1..d, with alpha found by bisection so that sum s_i^2 / s_1^2 = target_sr."""
    i = torch.arange(1, d + 1, dtype=torch.float64)
    lo, hi = 0.0, 20.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if float((i ** (-2 * mid)).sum()) > target_sr:
            lo = mid
        else:
            hi = mid
    return i ** (-0.5 * (lo + hi))


def make_problem(d: int, target_sr: float, gen: torch.Generator) -> dict:
    """A = P diag(s) Q^T with random orthogonal P, Q; B and the common start X0 Gaussian (float64)."""
    P, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    A = (P * singular_values(d, target_sr)) @ Q.T
    B = torch.randn(d, d, generator=gen, dtype=torch.float64)
    X0 = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return {"A": A, "B": B, "X0": X0}


def loss(A: torch.Tensor, B: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    return 0.5 * (A @ X - B).square().sum()


def grad(A: torch.Tensor, B: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """nabla f(X) = A^T (A X - B) (seed 000, section 7)."""
    return A.T @ (A @ X - B)


def estimate_sups(A: torch.Tensor, B: torch.Tensor, restarts: int, iters: int, gen: torch.Generator) -> dict:
    """Lower estimates of L_F = sup ||grad(X+Z) - grad(X)||_F/||Z||_F and L_* = sup ||...||_*/||Z||_op.

    L_F: power iteration Z <- (grad(X+Z) - grad(X)) / ||.||_F. L_*: alternating maximisation of
    <U, M Z> over ||U||_op <= 1 and ||Z||_op <= 1 (U = polar(M Z), Z = polar(M^T U)); each half-step
    cannot decrease the ratio. Both start from random Z and keep the best ratio found.
    """
    d = A.shape[0]
    X = torch.randn(d, d, generator=gen, dtype=torch.float64)
    gX = grad(A, B, X)

    def diff(Z):
        return grad(A, B, X + Z) - gX

    best_f = best_s = 0.0
    for _ in range(restarts):
        Z = torch.randn(d, d, generator=gen, dtype=torch.float64)
        for _ in range(iters):
            Z = diff(Z)
            Z = Z / steepest.matrix_norm(Z, "frobenius")
        best_f = max(best_f, float(steepest.matrix_norm(diff(Z), "frobenius") / steepest.matrix_norm(Z, "frobenius")))
        Z = steepest.polar(torch.randn(d, d, generator=gen, dtype=torch.float64), dtype=torch.float64)
        M = diff(torch.eye(d, dtype=torch.float64))  # the Hessian map Z -> M Z is linear: M = A^T A
        for _ in range(iters):
            U = steepest.polar(M @ Z, dtype=torch.float64)
            Z = steepest.polar(M.T @ U, dtype=torch.float64)
        ratio = steepest.dual_norm(M @ Z, "spectral") / steepest.matrix_norm(Z, "spectral")
        best_s = max(best_s, float(ratio))
    return {"L_F_est": best_f, "L_star_est": best_s}


def trajectory(A, B, X0, method: str, L: float, steps: int) -> dict:
    """Run SpecGD (lr = 1/L_*, dual-norm step) or GD (lr = 1/L_F) and record every step."""
    X = torch.nn.Parameter(X0.clone())
    if method == "spectral":
        opt = steepest.SpecGD([X], lr=1.0 / L, step_size="dual", dtype=torch.float64)
    else:
        opt = steepest.GD([X], lr=1.0 / L)
    rec = {"f": [], "nr": [], "nuc2": [], "fro2": []}
    for _ in range(steps + 1):
        with torch.no_grad():
            G = grad(A, B, X)
            rec["f"].append(float(loss(A, B, X)))
            rec["nuc2"].append(float(steepest.dual_norm(G, "spectral")) ** 2)
            rec["fro2"].append(float(steepest.matrix_norm(G, "frobenius")) ** 2)
            rec["nr"].append(float(nuclear_rank(G)))
        X.grad = G.clone()
        opt.step()
    for k in rec:
        rec[k] = rec[k][: steps + 1]
    return rec


def run_cell(cfg: Config, target_sr: float) -> dict:
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + int(round(target_sr * 100)))
    prob = make_problem(cfg.d, target_sr, gen)
    A, B, X0 = prob["A"], prob["B"], prob["X0"]
    L_F = float(steepest.matrix_norm(A, "spectral")) ** 2
    L_star = float(steepest.matrix_norm(A, "frobenius")) ** 2
    sr = float(stable_rank(A))
    sups = estimate_sups(A, B, cfg.sup_restarts, cfg.sup_iters, gen)
    f_star = float(loss(A, B, torch.linalg.lstsq(A, B).solution))
    out = {"target_sr": target_sr, "sr": sr, "L_F": L_F, "L_star": L_star, **sups, "f_star": f_star}
    for method, L in (("spectral", L_star), ("gd", L_F)):
        rec = trajectory(A, B, X0, method, L, cfg.steps)
        f = rec["f"]
        guar = [n / (2 * L_star) if method == "spectral" else fr / (2 * L_F) for n, fr in zip(rec["nuc2"], rec["fro2"])]
        actual = [f[t] - f[t + 1] for t in range(cfg.steps)]
        floor = ROUND_ATOL * abs(f[0])
        slack = [(actual[t] - guar[t] + floor) / max(guar[t], 1e-300) for t in range(cfg.steps)]
        spec_bound = [n / (2 * L_star) for n in rec["nuc2"]]
        gd_bound = [fr / (2 * L_F) for fr in rec["fro2"]]
        mism = ties = 0
        for t in range(cfg.steps + 1):
            if abs(rec["nr"][t] - sr) <= TIE_RTOL * sr:
                ties += 1
            elif (spec_bound[t] >= gd_bound[t]) != (rec["nr"][t] >= sr):
                mism += 1
        out[method] = {
            "f": f, "nr": rec["nr"], "min_rel_slack": min(slack),
            "violations": sum(s < -DECREASE_RTOL for s in slack),
            "equiv_mismatches": mism, "equiv_ties": ties,
            "frac_spectral_bound_larger": sum(s >= g for s, g in zip(spec_bound, gd_bound)) / len(spec_bound),
        }
    return out


def run(cfg: Config, out_dir=None, cells: Cells | None = None) -> dict:
    cells = cells or Cells(None if out_dir is None else f"{out_dir}/cells")
    params = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "stable_ranks"}
    rows = [cells.get(f"quadratic-sr{s}", {**params, "sr": s}, lambda s=s: run_cell(cfg, s))
            for s in progress(cfg.stable_ranks, "quadratic")]
    return {"cells": rows, "steps": cfg.steps}


# ---------------------------------------------------------------------------------------- claims
def claims(results: dict) -> list[Claim]:
    rows = results["cells"]
    errF = max(abs(r["L_F_est"] - r["L_F"]) / r["L_F"] for r in rows)
    errS = max(abs(r["L_star_est"] - r["L_star"]) / r["L_star"] for r in rows)
    over = any(r["L_F_est"] > r["L_F"] * (1 + SUP_RTOL) or r["L_star_est"] > r["L_star"] * (1 + SUP_RTOL) for r in rows)
    viol = sum(r[m]["violations"] for r in rows for m in ("spectral", "gd"))
    min_slack = min(r[m]["min_rel_slack"] for r in rows for m in ("spectral", "gd"))
    mism = sum(r[m]["equiv_mismatches"] for r in rows for m in ("spectral", "gd"))
    ties = sum(r[m]["equiv_ties"] for r in rows for m in ("spectral", "gd"))
    total = sum(len(r[m]["nr"]) for r in rows for m in ("spectral", "gd"))
    n_steps = sum(results["steps"] for _ in rows) * 2
    low, high = min(rows, key=lambda r: r["sr"]), max(rows, key=lambda r: r["sr"])
    return [
        Claim(SEED, "L_F = ||A||_op^2 (sup of ||grad f(X)-grad f(Y)||_F / ||X-Y||_F)",
              f"max rel. error of numerical sup vs closed form {fmt(errF)} over {len(rows)} matrices",
              verdict(errF <= SUP_RTOL and not over), f"holds if within {SUP_RTOL:g} and never above the closed form"),
        Claim(SEED, "L_* = ||A||_F^2 (sup of ||grad f(X)-grad f(Y)||_* / ||X-Y||_op)",
              f"max rel. error of numerical sup vs closed form {fmt(errS)}",
              verdict(errS <= SUP_RTOL and not over), f"holds if within {SUP_RTOL:g} and never above the closed form"),
        Claim(SEED, "each step decreases f by at least ||G||_*^2/(2L_*) (spectral) and ||G||_F^2/(2L_F) (GD)",
              f"{viol} violations in {n_steps} steps; smallest (actual - bound + rounding floor)/bound = {fmt(min_slack)}",
              verdict(viol == 0), f"holds if no step falls short by more than {DECREASE_RTOL:g} of its bound "
              f"(plus {ROUND_ATOL:g} f(X0) of float64 rounding)"),
        Claim(SEED, "spectral bound >= GD bound exactly when nr(G_t) >= sr(A)",
              f"{mism} mismatches in {total} gradients ({ties} ties within {TIE_RTOL:g})",
              verdict(mism == 0), "holds if the two comparisons agree at every step of both trajectories"),
        Claim(SEED, "spectral descent looks favourable when the gradient is spread out relative to sr(A) "
              "(the spectral bound wins more often for low sr(A))",
              f"fraction of GD-trajectory steps with the larger spectral bound: "
              f"{fmt(low['gd']['frac_spectral_bound_larger'])} at sr={fmt(low['sr'])}, "
              f"{fmt(high['gd']['frac_spectral_bound_larger'])} at sr={fmt(high['sr'])}",
              verdict(low["gd"]["frac_spectral_bound_larger"] >= high["gd"]["frac_spectral_bound_larger"]
                      if len(rows) > 1 else None),
              "holds if the lowest-sr matrix has at least the fraction of the highest-sr one"),
    ]


def tables(results: dict):
    header = ("sr(A)", "L_F", "L_F est", "L_*", "L_* est", "f* ", "final f-f* spectral", "final f-f* GD",
              "steps spectral bound larger (spectral run)", "(GD run)")
    rows = []
    for r in results["cells"]:
        rows.append([r["sr"], r["L_F"], r["L_F_est"], r["L_star"], r["L_star_est"], r["f_star"],
                     r["spectral"]["f"][-1] - r["f_star"], r["gd"]["f"][-1] - r["f_star"],
                     r["spectral"]["frac_spectral_bound_larger"], r["gd"]["frac_spectral_bound_larger"]])
    return [(header, rows)]


def notes(results: dict) -> list[str]:
    return ["Both methods start from the same X0 for each A; the one-step bounds are worst-case (seed 000, "
            "Remark 7.1), so which method ends lower is reported, not claimed."]


def figures(results: dict, out_dir) -> list:
    from steepest.app.report import figures as F  # lazy: matplotlib loads only when figures are drawn

    rows = results["cells"]
    fig, axes = F.subplots(1, len(rows), width=4.2)
    for ax, r in zip(axes, rows):
        steps = list(range(len(r["spectral"]["f"])))
        gap = {"spectral (1/L_*)": [v - r["f_star"] for v in r["spectral"]["f"]],
               "GD (1/L_F)": [v - r["f_star"] for v in r["gd"]["f"]]}
        F.lines(ax, steps, gap, xlabel="step", ylabel="f - f*", title=f"sr(A) = {r['sr']:.3g}", logy=True)
    p1 = F.save(fig, f"{out_dir}/quadratic_loss.png")
    fig, axes = F.subplots(1, len(rows), width=4.2)
    for ax, r in zip(axes, rows):
        steps = list(range(len(r["spectral"]["nr"])))
        F.lines(ax, steps, {"nr(G_t) spectral run": r["spectral"]["nr"], "nr(G_t) GD run": r["gd"]["nr"]},
                xlabel="step", ylabel="nuclear rank", title=f"sr(A) = {r['sr']:.3g}", logy=True)
        F.hline(ax, r["sr"], label="sr(A)")
    p2 = F.save(fig, f"{out_dir}/quadratic_nr_vs_sr.png")
    return [p1, p2]
