"""Seed 004: SpecGD vs GD on phase retrieval with a spiked (anisotropic) input covariance.

Source: "Spectral Gradient Descent Mitigates Anisotropy-Driven Misalignment: A Case Study in Phase Retrieval" (arXiv:2601.22652).

Model: x ~ N(0, Q), Q = I + lambda v v^T with v orthogonal to the unit signal w*, y = (x^T w*)^2,
prediction x^T M x with M = W W^T (W in R^{d x d}). With C = M - w* w*^T the population loss is
L(W) = E[(y - x^T M x)^2] = 2 tr(CQCQ) + tr(CQ)^2 (Gaussian fourth moments) and its gradient is

    grad_W L = (8 Q C Q + 4 tr(CQ) Q) W.

Start W(0) = theta U (U orthogonal), theta^2 = rho0/(d + lambda), rho0 = 1/log d. SpecGD steps
W <- W - eta polar(grad) with eta = kappa/sqrt(d + lambda) (:class:`steepest.SpecGD`); GD steps
W <- W - eta grad with eta = gd_eta_scale/(16 (1 + lambda)) inside its stability limit
(:class:`steepest.GD`). M is tracked through alignment <M, w* w*^T>_F/||M||_F and its coefficients
a = w*^T M w* (signal), b = v^T M v (spike), c = tr(P M)/(d - 2) on the bulk P = I - w*w*^T - vv^T.
The growth stage ends when tr(C Q) turns non-negative (the isotropic driving term 4 tr(CQ) Q changes
sign); its step T1 is interpolated linearly between the two steps around the crossing.

Also: an online variant (fresh minibatches of n samples per step, gradient -4 mean(r x x^T) W with
r = y - x^T M x), heatmaps of the final alignment over (lambda, eta) with divergence marked, and a
power-law covariance Q = diag(i^-alpha) with the signal on a low-variance coordinate.

Example:
    >>> from steepest.app.reproduce import phase_retrieval as pr
    >>> res = pr.run(pr.quick(), None)  # runs the experiment's quick preset (minutes)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

import steepest
from steepest.app.reproduce import phase_reduced, scaling
from steepest.app.reproduce.base import Cells, Claim, fmt, progress
from steepest.app.reproduce.claimtext import seed_claim
from steepest.app.runs import ConfigError

SEED = "seed 004"
SOURCE = '"Spectral Gradient Descent Mitigates Anisotropy-Driven Misalignment: A Case Study in Phase Retrieval" (arXiv:2601.22652)'
TITLE = "phase retrieval with a spiked covariance: SpecGD vs GD"
VERSION = 1  # cells are keyed by their parameters; the reduced T1 cell is new
METHODS = ("specgd", "gd")
#: A run counts as diverged when the loss is not finite or exceeds this (the loss starts near 3).
DIVERGED_LOSS = 1e8


@dataclasses.dataclass
class Config:
    d: int = 100  # main trajectories (coefficients, alignment)
    lam: float = 10.0  # spike strength lambda (the theory's regime is d >> lambda)
    kappa: float = 0.1  # SpecGD eta = kappa / sqrt(d + lambda)
    gd_eta_scale: float = 0.25  # GD eta = gd_eta_scale / (16 (1 + lambda))
    steps: int = 600
    dims: tuple[int, ...] = (25, 50, 100, 200, 400, 800)  # growth-stage length vs d (a 32x range)
    t1_max_steps: int = 3000
    flat_slope: float = 0.1  # SpecGD T1 = O(1): its slope in ln d at most this fraction of GD's
    uniform_ratio: float = 1.5  # SpecGD "uniform growth": max/min of (a, b, c) during the growth stage
    spike_ratio: float = 2.0  # GD "spike amplified": b/a at the end of the growth stage at least this
    law_margin: float = 0.2  # GD T1 ~ log d: the log law's residual error <= (1 - this) x the best rival's
    # GD T1 ~ log d judged over d = 25 ... 1.6e6 by the exact three-coefficient reduction (phase_reduced; a
    # scalar recursion, so the same at quick size): 8-32x in d cannot tell log d from d^0.15
    law_dims: tuple[int, ...] = (25, 100, 400, 1600, 6400, 25600, 102400, 409600, 1638400)
    heat_d: int = 50
    heat_lams: tuple[float, ...] = (10.0, 100.0, 1000.0)
    heat_etas: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
    heat_steps: int = 1000
    good_alignment: float = 0.9
    online_d: int = 50
    online_batch: int = 400
    online_steps: int = 600
    power_d: int = 40
    power_alphas: tuple[float, ...] = (1.0, 2.0)
    power_signal_index: int = 20  # 1-based coordinate of w* (variance index^-alpha)
    power_etas: tuple[float, ...] = (
        1e-3,
        3e-3,
        1e-2,
        3e-2,
        1e-1,
        3e-1,
        1.0,
        3.0,
    )  # each method at its best eta (interior)
    power_steps: int = 1000
    seed: int = 4

    def __post_init__(self) -> None:
        if min(self.d, self.heat_d, self.online_d, self.power_d, *self.dims) < 3:
            raise ConfigError("every dimension must be >= 3 (signal, spike and a bulk)")
        if self.lam <= 0 or any(l <= 0 for l in self.heat_lams):
            raise ConfigError("lambda values must be > 0")
        if any(e <= 0 for e in self.heat_etas) or self.kappa <= 0 or self.gd_eta_scale <= 0:
            raise ConfigError("step sizes (heat_etas, kappa, gd_eta_scale) must be > 0")
        if not 1 <= self.power_signal_index <= self.power_d:
            raise ConfigError(f"power_signal_index must be in [1, power_d={self.power_d}]")
        if (
            min(self.steps, self.t1_max_steps, self.heat_steps, self.online_steps, self.power_steps, self.online_batch)
            < 1
        ):
            raise ConfigError("step counts and online_batch must be >= 1")
        if len(self.dims) < 2 or len(self.law_dims) < 3 or min(self.law_dims) < 3:
            raise ConfigError(
                "dims needs >= 2 dimensions and law_dims >= 3 dimensions (each >= 3) to fit T1 against log d"
            )


def quick() -> Config:
    return Config(
        d=64,
        steps=500,
        dims=(24, 32, 48, 96, 192),
        t1_max_steps=800,
        heat_d=16,
        heat_lams=(10.0, 100.0),
        heat_etas=(1e-3, 1e-2, 1e-1),
        heat_steps=250,
        online_d=20,
        online_batch=200,
        online_steps=150,
        power_d=20,
        power_signal_index=10,
        power_etas=(1e-2, 1e-1),
        power_steps=300,
    )


# ---------------------------------------------------------------------------------------- the model
def spiked_problem(d: int, lam: float, gen: torch.Generator) -> dict:
    """Random orthonormal w*, v; Q = I + lam v v^T; W0 = theta U with theta^2 = rho0/(d + lam)."""
    basis, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    w, v = basis[:, 0], basis[:, 1]
    Q = torch.eye(d, dtype=torch.float64) + lam * torch.outer(v, v)
    return {"Q": Q, "w": w, "v": v, "W0": _init(Q, d, gen)}


def power_problem(d: int, alpha: float, signal_index: int, gen: torch.Generator) -> dict:
    """Q = diag(i^-alpha), w* = e_signal_index (a low-variance direction), W0 as above with tr(Q)."""
    Q = torch.diag(torch.arange(1, d + 1, dtype=torch.float64) ** (-alpha))
    w = torch.zeros(d, dtype=torch.float64)
    w[signal_index - 1] = 1.0
    return {"Q": Q, "w": w, "v": None, "W0": _init(Q, d, gen)}


def _init(Q: torch.Tensor, d: int, gen: torch.Generator) -> torch.Tensor:
    U, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    theta = math.sqrt((1.0 / math.log(d)) / float(torch.trace(Q)))  # rho0 = 1/log d; tr Q = d + lambda
    return theta * U


def population_loss(W: torch.Tensor, Q: torch.Tensor, w: torch.Tensor) -> float:
    """E[(y - x^T M x)^2] = 2 tr(CQCQ) + tr(CQ)^2, C = W W^T - w w^T."""
    CQ = (W @ W.T - torch.outer(w, w)) @ Q
    return float(2 * (CQ * CQ.T).sum() + torch.trace(CQ) ** 2)  # tr(AB) = sum(A * B^T): one matmul fewer


def population_grad(W: torch.Tensor, Q: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """grad_W = (8 QCQ + 4 tr(CQ) Q) W, the gradient of L(W) = 2 tr(CQCQ) + tr(CQ)^2 (module docstring)."""
    C = W @ W.T - torch.outer(w, w)
    return (8 * Q @ C @ Q + 4 * torch.trace(C @ Q) * Q) @ W


def sample_grad(
    W: torch.Tensor, Q: torch.Tensor, w: torch.Tensor, n: int, gen: torch.Generator, noise: float = 0.0
) -> torch.Tensor:
    """Minibatch gradient of mean (y - x^T M x)^2 over n fresh samples: -4 mean(r x x^T) W, with labels
    y = (x^T w*)^2 + noise * eps (eps standard normal)."""
    L = torch.linalg.cholesky(Q)
    X = torch.randn(n, Q.shape[0], generator=gen, dtype=torch.float64) @ L.T
    y = (X @ w) ** 2
    if noise:
        y = y + noise * torch.randn(n, generator=gen, dtype=torch.float64)
    r = y - ((X @ W) ** 2).sum(dim=1)
    return -4.0 * (X.T * r) @ X @ W / n


def eta_for(method: str, Q: torch.Tensor, kappa: float, gd_eta_scale: float) -> float:
    """SpecGD: kappa/sqrt(tr Q); GD: gd_eta_scale/(16 lambda_max(Q)) (the seed's stability range)."""
    lmax = float(torch.linalg.eigvalsh(Q)[-1]) if method == "gd" else math.nan
    return eta_of(method, float(torch.trace(Q)), lmax, kappa, gd_eta_scale)


def eta_of(method: str, trace: float, lmax: float, kappa: float, gd_eta_scale: float) -> float:
    """:func:`eta_for` from tr Q and lambda_max(Q) (Q = I + lambda vv^T: d + lambda and 1 + lambda)."""
    return kappa / math.sqrt(trace) if method == "specgd" else gd_eta_scale / (16.0 * lmax)


def simulate(
    prob: dict,
    method: str,
    eta: float,
    steps: int,
    *,
    batch: int | None = None,
    gen: torch.Generator | None = None,
    stop_at_t1: bool = False,
    noise: float = 0.0,
) -> dict:
    """Run one method; record loss, alignment, coefficients and tr(CQ) every step (online with
    ``batch`` fresh samples per step and label noise ``noise`` when ``batch`` is given; ``gen`` then
    draws the samples and is required)."""
    if batch is not None and gen is None:
        raise ValueError("simulate: an online run (batch given) needs gen, the generator of its fresh samples")
    Q, w, v = prob["Q"], prob["w"], prob["v"]
    d = Q.shape[0]
    W = torch.nn.Parameter(prob["W0"].clone())
    opt = steepest.SpecGD([W], lr=eta, dtype=torch.float64) if method == "specgd" else steepest.GD([W], lr=eta)
    rec: dict[str, list[float]] = {"loss": [], "align": [], "a": [], "b": [], "c": [], "trCQ": []}
    diverged = False
    for _ in range(steps + 1):
        with torch.no_grad():
            M = W @ W.T
            C = M - torch.outer(w, w)
            loss = population_loss(W, Q, w)
            if not math.isfinite(loss) or loss > DIVERGED_LOSS:
                diverged = True
                break
            a = float(w @ M @ w)
            rec["loss"].append(loss)
            rec["align"].append(a / max(float(torch.linalg.matrix_norm(M)), 1e-300))
            rec["a"].append(a)
            if v is not None:
                b = float(v @ M @ v)
                rec["b"].append(b)
                rec["c"].append((float(torch.trace(M)) - a - b) / (d - 2))
            rec["trCQ"].append(float((C * Q).sum()))  # tr(CQ), C and Q symmetric
            if stop_at_t1 and rec["trCQ"][-1] >= 0:
                break
            # gen is None only when batch is None (checked on entry); testing both narrows gen for sample_grad
            if batch is None or gen is None:
                W.grad = population_grad(W, Q, w)
            else:
                W.grad = sample_grad(W, Q, w, batch, gen, noise)
        opt.step()
    return {**rec, "diverged": diverged, "t1": growth_end(rec["trCQ"])}


def growth_end(trCQ: list) -> float:
    """First (fractional) step where tr(CQ) >= 0, linearly interpolated; nan if it never happens."""
    for k in range(1, len(trCQ)):
        if trCQ[k] >= 0 > trCQ[k - 1]:
            return (k - 1) + (-trCQ[k - 1]) / (trCQ[k] - trCQ[k - 1])
    return 0.0 if trCQ and trCQ[0] >= 0 else float("nan")


# ---------------------------------------------------------------------------------------- sweeps
def run(cfg: Config, out_dir=None, cells: Cells | None = None) -> dict:
    cells = cells or Cells(None if out_dir is None else f"{out_dir}/cells")
    base = {"seed": cfg.seed, "kappa": cfg.kappa, "gd_eta_scale": cfg.gd_eta_scale}
    out: dict = {"settings": dataclasses.asdict(cfg)}

    def main_cell():
        prob = spiked_problem(cfg.d, cfg.lam, torch.Generator().manual_seed(cfg.seed))
        return {m: simulate(prob, m, eta_for(m, prob["Q"], cfg.kappa, cfg.gd_eta_scale), cfg.steps) for m in METHODS}

    out["main"] = cells.get("pr-main", {**base, "d": cfg.d, "lam": cfg.lam, "steps": cfg.steps}, main_cell)

    def t1_cell(d):
        prob = spiked_problem(d, cfg.lam, torch.Generator().manual_seed(cfg.seed + d))
        return {
            m: simulate(prob, m, eta_for(m, prob["Q"], cfg.kappa, cfg.gd_eta_scale), cfg.t1_max_steps, stop_at_t1=True)[
                "t1"
            ]
            for m in METHODS
        }

    out["t1"] = {
        str(d): cells.get(
            f"pr-t1-d{d}", {**base, "d": d, "lam": cfg.lam, "max": cfg.t1_max_steps}, lambda d=d: t1_cell(d)
        )
        for d in progress(cfg.dims, "phase-retrieval T1 vs d")
    }

    def heat_cell(lam, eta):
        prob = spiked_problem(cfg.heat_d, lam, torch.Generator().manual_seed(cfg.seed + int(lam)))
        res = {}
        for m in METHODS:
            r = simulate(prob, m, eta, cfg.heat_steps)
            res[m] = {"align": r["align"][-1] if not r["diverged"] else float("nan"), "diverged": r["diverged"]}
        return res

    grid = [(lam, eta) for lam in cfg.heat_lams for eta in cfg.heat_etas]
    heat = {}
    for lam, eta in progress(grid, "phase-retrieval heatmaps"):
        heat[f"{lam:g}|{eta:g}"] = cells.get(
            f"pr-heat-{lam:g}-{eta:g}",
            {"seed": cfg.seed, "d": cfg.heat_d, "lam": lam, "eta": eta, "steps": cfg.heat_steps},
            lambda lam=lam, eta=eta: heat_cell(lam, eta),
        )
    out["heat"] = heat

    def online_cell():
        prob = spiked_problem(cfg.online_d, cfg.lam, torch.Generator().manual_seed(cfg.seed + 1))
        res = {}
        for m in METHODS:
            r = simulate(
                prob,
                m,
                eta_for(m, prob["Q"], cfg.kappa, cfg.gd_eta_scale),
                cfg.online_steps,
                batch=cfg.online_batch,
                gen=torch.Generator().manual_seed(cfg.seed + 2),
            )
            res[m] = {"align": r["align"], "loss": r["loss"], "t1": r["t1"], "diverged": r["diverged"]}
        return res

    out["online"] = cells.get(
        "pr-online",
        {**base, "d": cfg.online_d, "lam": cfg.lam, "batch": cfg.online_batch, "steps": cfg.online_steps},
        online_cell,
    )

    def power_cell(alpha):
        prob = power_problem(cfg.power_d, alpha, cfg.power_signal_index, torch.Generator().manual_seed(cfg.seed + 3))
        res = {}
        for m in METHODS:
            runs, finals, steps = {}, {}, {}
            for eta in cfg.power_etas:
                r = simulate(prob, m, eta, cfg.power_steps)
                runs[eta] = r
                finals[f"{eta:g}"] = r["align"][-1] if not r["diverged"] else float("nan")
                steps[f"{eta:g}"] = next(
                    (float(k) for k, a in enumerate(r["align"]) if a >= cfg.good_alignment), math.nan
                )
            best = pick_eta(cfg.power_etas, finals, steps)
            res[m] = {
                "align": runs[best]["align"],
                "best_eta": best,
                "final_by_eta": finals,
                "steps_by_eta": steps,
                "diverged": runs[best]["diverged"],
            }
        return res

    out["power"] = {
        f"{a:g}": cells.get(
            f"pr-power-{a:g}",
            {
                "seed": cfg.seed,
                "d": cfg.power_d,
                "alpha": a,
                "sig": cfg.power_signal_index,
                "etas": cfg.power_etas,
                "steps": cfg.power_steps,
                "pick": "fastest",
            },
            lambda a=a: power_cell(a),
        )
        for a in progress(cfg.power_alphas, "phase-retrieval power law")
    }

    def law_cell():
        return {
            str(d): {
                m: growth_end(
                    phase_reduced.reduced(
                        d,
                        cfg.lam,
                        m,
                        eta_of(m, d + cfg.lam, 1 + cfg.lam, cfg.kappa, cfg.gd_eta_scale),
                        100 * cfg.t1_max_steps,
                        stop_at_t1=True,
                    )["trCQ"]
                )
                for m in METHODS
            }
            for d in cfg.law_dims
        }

    out["t1_law"] = cells.get(
        "pr-t1-law", {**base, "lam": cfg.lam, "dims": cfg.law_dims, "max": cfg.t1_max_steps}, law_cell
    )
    return out


def pick_eta(etas, finals: dict, steps: dict) -> float:
    """The best step size of a grid: the fewest steps to ``good_alignment`` among those that reach it (final
    alignments saturate near 1, where their last digits decide nothing), ties to the better final alignment;
    the best final alignment when none reaches it."""
    ok = [e for e in etas if math.isfinite(steps[f"{e:g}"]) and math.isfinite(finals[f"{e:g}"])]  # not diverged
    if ok:
        return min(ok, key=lambda e: (steps[f"{e:g}"], -finals[f"{e:g}"]))
    finite = [e for e in etas if math.isfinite(finals[f"{e:g}"])]
    return max(finite, key=lambda e: finals[f"{e:g}"]) if finite else etas[0]


def lr_grids(results: dict) -> list[tuple[str, list, float]]:
    """(what, grid, chosen value) for every step-size choice, for the grid-edge check."""
    etas = list(results["settings"]["power_etas"])
    return [
        (f"power law alpha={a}, {m} eta", etas, r[m]["best_eta"]) for a, r in results["power"].items() for m in METHODS
    ]


# ---------------------------------------------------------------------------------------- claims
def _fit_log(dims: list, t1: list) -> dict:
    """T1 = intercept + slope ln d by least squares (nan if a run never left the growth stage)."""
    if len(dims) < 2 or not all(math.isfinite(x) for x in t1):
        return {"slope": float("nan"), "intercept": float("nan"), "r2": float("nan")}
    f = scaling.linear_fit(np.log(np.asarray(dims, dtype=float)), np.asarray(t1, dtype=float))
    return {"slope": f["b"], "intercept": f["a"], "r2": f["r2"]}


def summary(results: dict) -> dict:
    st = results["settings"]
    main = results["main"]
    dims = [int(d) for d in results["t1"]]
    t1 = {m: [results["t1"][str(d)][m] for d in dims] for m in METHODS}
    spec, gd = main["specgd"], main["gd"]
    k_spec = int(spec["t1"]) if math.isfinite(spec["t1"]) else len(spec["a"]) - 1
    # "early" = the first half of each method's growth stage: near its end the spike saturates first
    # (its gradient changes sign at b ~ 1/(d + 3 lambda + 2), before tr(CQ) = 0), for both methods
    uni = max(max(spec[x][k] for x in "abc") / min(spec[x][k] for x in "abc") for k in range(k_spec // 2 + 1))
    k_gd = min(int(gd["t1"]), len(gd["a"]) - 1) if math.isfinite(gd["t1"]) else len(gd["a"]) - 1
    peak = max(range(k_gd // 2 + 1), key=lambda k: gd["b"][k] / gd["a"][k])
    good = {
        m: sum(1 for c in results["heat"].values() if not c[m]["diverged"] and c[m]["align"] >= st["good_alignment"])
        for m in METHODS
    }
    div = {m: sum(1 for c in results["heat"].values() if c[m]["diverged"]) for m in METHODS}
    laws = {
        m: scaling.compare(dims, t1[m], margin=st.get("law_margin", 0.2))
        if all(math.isfinite(x) and x > 0 for x in t1[m])
        else None
        for m in METHODS
    }
    law_dims = [int(d) for d in results["t1_law"]]
    t1_law = {m: [results["t1_law"][str(d)][m] for d in law_dims] for m in METHODS}
    wide = {
        m: scaling.compare(law_dims, t1_law[m], margin=st.get("law_margin", 0.2))
        if all(math.isfinite(x) and x > 0 for x in t1_law[m])
        else None
        for m in METHODS
    }
    return {
        "dims": dims,
        "t1": t1,
        "fit": {m: _fit_log(dims, t1[m]) for m in METHODS},
        "laws": laws,
        "law_dims": law_dims,
        "t1_law": t1_law,
        "laws_wide": wide,
        "spec_uniform_ratio": uni,
        "gd_spike_over_signal": gd["b"][peak] / gd["a"][peak],
        "gd_spike_over_bulk": gd["b"][peak] / gd["c"][peak],
        "gd_peak_step": peak,
        "gd_growth_end": gd["t1"],
        "spec_spike_over_signal": spec["b"][k_spec] / spec["a"][k_spec],
        "good_cells": good,
        "diverged_cells": div,
        "cells": len(results["heat"]),
        "final_align": {m: main[m]["align"][-1] for m in METHODS},
    }


def claims(results: dict) -> list[Claim]:
    st = results["settings"]
    s = summary(results)
    t1s, t1g = s["t1"]["specgd"], s["t1"]["gd"]
    finite = all(math.isfinite(x) for x in t1s + t1g)
    fs, fg = s["fit"]["specgd"], s["fit"]["gd"]
    law = s["laws"]["gd"]
    dims = ", ".join(map(str, s["dims"]))
    ks = "Key Results"
    out = [
        seed_claim(
            SEED,
            "Mechanism 2",
            "SpecGD's sign-based dynamics maintain uniform growth rates (a_k = b_k = c_k) across "
            "signal, spike, and bulk components",
            f"SpecGD: max/min of (a, b, c) over the first half of its growth stage = {fmt(s['spec_uniform_ratio'])}",
            s["spec_uniform_ratio"] <= st["uniform_ratio"],
            baseline="GD's spread over the same stage (below)",
            threshold=f"max/min <= {st['uniform_ratio']}",
        ),
        seed_claim(
            SEED,
            "Mechanism 2",
            "GD's multiplicative updates amplify spike coefficient",
            f"GD: peak spike/signal b/a = {fmt(s['gd_spike_over_signal'])} (spike/bulk {fmt(s['gd_spike_over_bulk'])}) "
            f"at step {s['gd_peak_step']}, first half of its growth stage (ends at {fmt(s['gd_growth_end'])}); "
            f"d={st['d']}, lambda={st['lam']:g}",
            s["gd_spike_over_signal"] >= st["spike_ratio"],
            baseline="SpecGD's b/a = 1",
            threshold=f"GD's peak b/a >= {st['spike_ratio']}",
        ),
        seed_claim(
            SEED,
            ks,
            "SpecGD achieves constant-time transition from growth to alignment stage (T1 = O(1))",
            f"T1 = {', '.join(fmt(x) for x in t1s)} steps for d = {dims}; slope in ln d {fmt(fs['slope'])} vs GD's "
            f"{fmt(fg['slope'])}",
            fs["slope"] <= st["flat_slope"] * fg["slope"] if finite else None,
            baseline="GD's growth per unit ln d (the rival: T1 ~ log d)",
            threshold=f"SpecGD's slope in ln d <= {st['flat_slope']} x GD's; inconclusive if a run never left the stage",
        ),
    ]
    wide = s["laws_wide"]["gd"]
    if wide is not None:
        fits = wide["fits"]
        txt = "; ".join(
            f"{k}: rse {fmt(fits[k]['rse'])}"
            + (
                f", exponent {fmt(fits[k]['b'])} [{fmt(fits[k]['b_lo'])}, {fmt(fits[k]['b_hi'])}]"
                if k == "power"
                else ""
            )
            for k in wide["order"]
        )
        narrow = f"; over the simulated d = {dims} alone the chosen law is {law['winner']}" if law else ""
        out.append(
            seed_claim(
                SEED,
                ks,
                "logarithmic for GD (T1 = O((eta lambda)^(-1) log d))",
                f"T1 = {', '.join(fmt(x) for x in s['t1_law']['gd'])} for d = "
                f"{', '.join(map(str, s['law_dims']))} (exact three-coefficient reduction); laws by residual "
                f"error: {txt}; chosen: {wide['winner']}{narrow}",
                wide["winner"] == "log",
                baseline="rival laws T1 = a + b sqrt(d), a d^b, a + b ln ln d",
                threshold=f"the log law has the smallest residual error, <= {1 - st['law_margin']:g} x the "
                "runner-up's, over d spanning >= 4 decades",
            )
        )
    else:
        out.append(
            Claim(
                SEED + ", " + ks,
                "logarithmic for GD (T1 = O(log d))",
                "a run never left the growth stage",
                "inconclusive",
                "raise t1_max_steps",
            )
        )
    gs, gg = s["good_cells"]["specgd"], s["good_cells"]["gd"]
    out.append(
        seed_claim(
            SEED,
            "First 3 experiments, 1.",
            "Expect SpecGD to maintain alignment across larger (lambda, eta) region",
            f"cells with final alignment >= {st['good_alignment']}: SpecGD {gs}, GD {gg} of {s['cells']} "
            f"(diverged: SpecGD {s['diverged_cells']['specgd']}, GD {s['diverged_cells']['gd']})",
            None if gs == gg else gs > gg,
            baseline="GD's count on the same grid",
            threshold="SpecGD has more good cells; inconclusive if equal",
        )
    )
    P = results["power"]
    fa = {a: {m: r[m]["align"][-1] if not r[m]["diverged"] else float("nan") for m in METHODS} for a, r in P.items()}
    ts = {a: {m: r[m]["steps_by_eta"][f"{r[m]['best_eta']:g}"] for m in METHODS} for a, r in P.items()}
    ok = all(not math.isnan(v["specgd"]) and not v["specgd"] >= v["gd"] for v in ts.values())  # GD nan: SpecGD sooner
    out.append(
        seed_claim(
            SEED,
            ks,
            "Numerical experiments confirm SpecGD advantages persist under broader anisotropic "
            "covariances including power-law spectra",
            "; ".join(
                f"alpha={a}: steps to alignment {st['good_alignment']} SpecGD {fmt(ts[a]['specgd'])} "
                f"(eta {P[a]['specgd']['best_eta']:g}), GD {fmt(ts[a]['gd'])} (eta "
                f"{P[a]['gd']['best_eta']:g}); final alignment SpecGD {fmt(fa[a]['specgd'])}, GD "
                f"{fmt(fa[a]['gd'])}"
                for a in P
            ),
            ok,
            baseline="GD at its best eta of power_etas (each method's fastest eta to the alignment; grids "
            "checked for interior optima)",
            threshold=f"SpecGD reaches alignment {st['good_alignment']} in fewer steps than GD for every alpha "
            "(GD never reaching it counts as fewer)",
        )
    )
    return out


def tables(results: dict):
    s = summary(results)
    t1 = [[d, s["t1"]["specgd"][i], s["t1"]["gd"][i]] for i, d in enumerate(s["dims"])]
    on = results["online"]
    online = [
        [m, on[m]["align"][-1] if on[m]["align"] else float("nan"), on[m]["t1"], on[m]["diverged"]] for m in METHODS
    ]
    return [
        (("d", "T1 SpecGD (steps)", "T1 GD (steps)"), t1),
        (("online method", "final alignment", "T1", "diverged"), online),
    ]


def notes(results: dict) -> list[str]:
    st = results["settings"]
    return [
        f"Population dynamics at d={st['d']}, lambda={st['lam']:g}: SpecGD eta = {st['kappa']}/sqrt(d+lambda), "
        f"GD eta = {st['gd_eta_scale']}/(16(1+lambda)). Online variant: d={st['online_d']}, {st['online_batch']} fresh "
        f"samples per step. Heatmaps: d={st['heat_d']}, {st['heat_steps']} steps, the same eta grid for both methods, "
        f"diverged runs (loss > {DIVERGED_LOSS:g} or not finite) marked x. The online table's longer SpecGD T1 "
        "is measured against the batch size in experiment phase-checks (open question 1)."
    ]


def figures(results: dict, out_dir) -> list:
    from steepest.app.report import figures as F  # lazy: matplotlib loads only when figures are drawn

    st = results["settings"]
    main = results["main"]
    paths = []
    fig, axes = F.subplots(1, 3, width=4.4)
    for ax, m in zip(axes, METHODS):
        r = main[m]
        F.lines(
            ax,
            range(len(r["a"])),
            {"a (signal)": r["a"], "b (spike)": r["b"], "c (bulk)": r["c"]},
            xlabel="step",
            ylabel="coefficient of M",
            title=f"{m} (d={st['d']}, lambda={st['lam']:g})",
            logy=True,
        )
    F.lines(
        axes[2],
        range(max(len(main[m]["align"]) for m in METHODS)),
        {m: main[m]["align"] for m in METHODS},
        xlabel="step",
        ylabel="alignment <M, w*w*^T>/||M||_F",
        title="alignment",
    )
    paths.append(F.save(fig, f"{out_dir}/phase_coefficients_alignment.png", require_labels=True))

    s = summary(results)
    fig, axes = F.subplots(1, 1, width=5)
    F.lines(
        axes[0],
        s["dims"],
        {f"T1 {m}": s["t1"][m] for m in METHODS},
        xlabel="d",
        ylabel="steps to leave growth stage",
        logx=True,
        markers=True,
        title="growth-stage length vs d (log-x: log d is a straight line)",
    )
    law = s["laws"]["gd"]
    if law is not None:
        xs = np.geomspace(min(s["dims"]), max(s["dims"]), 50)
        for name, style in (("log", "--"), ("sqrt", ":"), ("power", "-.")):
            f = law["fits"][name]
            y = (
                f["a"] + f["b"] * np.log(xs)
                if name == "log"
                else f["a"] + f["b"] * np.sqrt(xs)
                if name == "sqrt"
                else np.exp(f["a"]) * xs ** f["b"]
            )
            axes[0].plot(xs, y, style, color="gray", linewidth=1, label=f"GD fit: {name} (rse {f['rse']:.3g})")
        axes[0].legend(fontsize=7)
    F.log_ticks(axes[0], s["dims"], "x")
    paths.append(F.save(fig, f"{out_dir}/phase_t1_vs_d.png", require_labels=True))

    lams, etas = st["heat_lams"], st["heat_etas"]
    fig, axes = F.subplots(1, 2, width=5.5, height=4)
    for ax, m in zip(axes, METHODS):
        vals = [[results["heat"][f"{lam:g}|{eta:g}"][m]["align"] for eta in etas] for lam in lams]
        marks = [[results["heat"][f"{lam:g}|{eta:g}"][m]["diverged"] for eta in etas] for lam in lams]
        F.heatmap(
            ax,
            vals,
            xticklabels=[f"{e:g}" for e in etas],
            yticklabels=[f"{l:g}" for l in lams],
            xlabel="eta",
            ylabel="lambda",
            title=f"final alignment, {m} (x = diverged)",
            vmin=0,
            vmax=1,
            marked=marks,
        )
    paths.append(F.save(fig, f"{out_dir}/phase_heatmaps.png", require_labels=True))

    fig, axes = F.subplots(1, 1 + len(results["power"]), width=4.4)
    on = results["online"]
    F.lines(
        axes[0],
        range(max(len(on[m]["align"]) for m in METHODS)),
        {m: on[m]["align"] for m in METHODS},
        xlabel="step",
        ylabel="alignment",
        title=f"online, batch {st['online_batch']}",
    )
    for ax, (a, r) in zip(axes[1:], results["power"].items()):
        F.lines(
            ax,
            range(max(len(r[m]["align"]) for m in METHODS)),
            {f"{m} (eta {r[m]['best_eta']:g})": r[m]["align"] for m in METHODS},
            xlabel="step",
            ylabel="alignment",
            title=f"power law alpha={a}, signal at i={st['power_signal_index']}",
        )
    paths.append(F.save(fig, f"{out_dir}/phase_online_powerlaw.png", require_labels=True))
    return paths
