"""Seed 002: the Spec-Sign Advantage Index against the measured one-step gains of SignSGD and SpecGD.

Source: H. Naganuma, L. Gomezjurado, M. Ghaznavi, I. Mitliagkas et al., "The Geometry of Spectral Gradient Descent: Layerwise Criteria for SignSGD vs Spec SGD".

The layer: W in R^{n x m}, samples x ~ N(0, Sigma) (Sigma = diag(j^-input_decay)), y = W* x + sigma eps,
per-sample loss 1/2 ||W x - y||^2. The population loss is L(W) = 1/2 tr((W - W*) Sigma (W - W*)^T) + const,
its gradient G = (W - W*) Sigma and its Hessian H[D] = D Sigma. W - W* is chosen so that G is sparse:
a random support of density ``rho`` with Gaussian or equal-magnitude (+-1) entries. A minibatch of B
samples gives G_hat = (1/B) sum_i ((W - W*) x_i - sigma eps_i) x_i^T: real sampling noise, dense.

Per cell (magnitudes, rho, B):

* the index, from what a practitioner can measure: noise scales c_1, c_* from K microbatch gradients
  of size B (:func:`steepest.diagnostics.criteria.noise_scales`), G estimated by their mean, curvatures
  H_sign, H_spec from exact HVPs along sign(G_hat) and polar(G_hat) averaged over the K microbatches
  (:func:`~steepest.diagnostics.criteria.layer_curvatures`), combined by
  :func:`~steepest.diagnostics.criteria.spec_sign_index`; B = inf is the deterministic limit;
* the measured gain: for R fresh minibatches, D = sign(G_hat) (SignSGD) or polar(G_hat) (SpecGD), the
  expected decrease of the population loss E[L(W) - L(W - eta D)], maximised over a log grid of eta
  (line search), for each method at its own best eta. The larger gain is the measured winner.

Example:
    >>> from steepest.app.reproduce import spec_sign
    >>> res = spec_sign.run(spec_sign.quick(), None)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

import steepest
from steepest.app.reproduce.base import Cells, Claim, fmt, progress, verdict
from steepest.app.runs import ConfigError
from steepest.diagnostics.criteria import layer_curvatures, noise_scales, spec_sign_index

SEED = "seed 002"
SOURCE = 'H. Naganuma, L. Gomezjurado, M. Ghaznavi, I. Mitliagkas et al., "The Geometry of Spectral Gradient Descent: Layerwise Criteria for SignSGD vs Spec SGD"'
TITLE = "Spec-Sign Advantage Index vs measured one-step improvement"
VERSION = 1
MAGNITUDES = ("gaussian", "equal")
#: Relative gap below which the two measured gains count as a tie (the line search resolves eta to a
#: factor 10^(1/12) ~ 1.2, which changes a quadratic's best value by < 1%; 2% leaves margin).
TIE_RTOL = 0.02


@dataclasses.dataclass
class Config:
    n: int = 48
    m: int = 48
    densities: tuple[float, ...] = (0.02, 0.1, 0.3, 1.0)
    magnitudes: tuple[str, ...] = MAGNITUDES
    batch_sizes: tuple[float, ...] = (1, 4, 16, 64, 256, 1024, 4096, math.inf)
    label_noise: float = 1.0
    input_decay: float = 0.0         # Sigma = diag(j^-input_decay); 0 = isotropic inputs
    microbatches: int = 16           # K, for the index's noise scales and curvatures
    draws: int = 32                  # R fresh minibatches for the measured gain
    eta_grid: int = 61               # log grid over [1e-3, 1e2] x ||G||_F / ||D||_F
    small_batch: float = 4           # claim 1: B <= this ...
    sparse_density: float = 0.1      # ... and rho <= this ("fairly sparse")
    large_batch: float = 1024        # claim 2: B >= this (inf included) and rho <= sparse_density
    seed: int = 2

    def __post_init__(self) -> None:
        if self.n < 2 or self.m < 2 or self.microbatches < 2 or self.draws < 1 or self.eta_grid < 5:
            raise ConfigError("n, m >= 2, microbatches >= 2, draws >= 1 and eta_grid >= 5 are required")
        if not self.densities or any(not 0 < r <= 1 for r in self.densities):
            raise ConfigError(f"densities must be values in (0, 1], got {self.densities}")
        if not self.batch_sizes or any(b < 1 or (math.isfinite(b) and b != int(b)) for b in self.batch_sizes):
            raise ConfigError(f"batch_sizes must be positive integers or inf, got {self.batch_sizes}")
        bad = [k for k in self.magnitudes if k not in MAGNITUDES]
        if bad or not self.magnitudes:
            raise ConfigError(f"magnitudes must be a non-empty subset of {MAGNITUDES}, got {self.magnitudes}")
        if self.label_noise < 0:
            raise ConfigError("label_noise must be >= 0")


def quick() -> Config:
    return Config(n=24, m=24, densities=(0.05, 0.3, 1.0), batch_sizes=(1, 4, 64, 1024, math.inf), microbatches=8,
                  draws=12, eta_grid=41)


# ---------------------------------------------------------------------------------------- the layer
class Layer:
    """The linear-regression layer at W = 0 with W* = -G Sigma^-1, so the population gradient is G."""

    def __init__(self, cfg: Config, density: float, magnitudes: str, gen: torch.Generator) -> None:
        n, m = cfg.n, cfg.m
        self.sigma_in = torch.arange(1, m + 1, dtype=torch.float64) ** (-cfg.input_decay)
        mask = torch.rand(n, m, generator=gen, dtype=torch.float64) < density
        if not mask.any():
            mask[0, 0] = True
        vals = torch.randn(n, m, generator=gen, dtype=torch.float64)
        if magnitudes == "equal":
            vals = torch.sign(vals)
        self.G = vals * mask
        self.Delta = self.G / self.sigma_in           # W - W*, so that (W - W*) Sigma = G
        self.noise = cfg.label_noise
        self.W = torch.zeros(n, m, dtype=torch.float64)

    def loss(self, W: torch.Tensor) -> torch.Tensor:
        """Population loss up to its constant: 1/2 tr((W - W*) Sigma (W - W*)^T)."""
        E = W - (self.W - self.Delta)
        return 0.5 * (E.square() * self.sigma_in).sum()

    def minibatch_grad(self, B: float, gen: torch.Generator) -> torch.Tensor:
        """(1/B) sum_i ((W - W*) x_i - sigma eps_i) x_i^T; the exact G for B = inf."""
        if math.isinf(B):
            return self.G.clone()
        B = int(B)
        X = torch.randn(B, self.G.shape[1], generator=gen, dtype=torch.float64) * self.sigma_in.sqrt()
        R = X @ self.Delta.T - self.noise * torch.randn(B, self.G.shape[0], generator=gen, dtype=torch.float64)
        return R.T @ X / B


def direction(G_hat: torch.Tensor, method: str) -> torch.Tensor:
    return steepest.dualize(G_hat, "linf" if method == "sign" else "spectral", dtype=torch.float64)


def measured_gain(layer: Layer, dirs: list, grid: int) -> dict:
    """max over eta of mean_r [L(W) - L(W - eta D_r)] (population loss), and the best eta."""
    L0 = float(layer.loss(layer.W))
    scale = float(steepest.matrix_norm(layer.G, "frobenius")) / max(float(np.mean([float(steepest.matrix_norm(D, "frobenius")) for D in dirs])), 1e-300)
    etas = scale * np.geomspace(1e-3, 1e2, grid)
    gains = [float(np.mean([L0 - float(layer.loss(layer.W - eta * D)) for D in dirs])) for eta in etas]
    j = int(np.argmax(gains))
    return {"gain": max(gains[j], 0.0), "eta": float(etas[j]), "at_grid_edge": j in (0, len(etas) - 1)}


def run_cell(cfg: Config, magnitudes: str, density: float, B: float) -> dict:
    gen = torch.Generator().manual_seed(cfg.seed * 7 + MAGNITUDES.index(magnitudes) * 1009 + int(density * 1e4))
    layer = Layer(cfg, density, magnitudes, gen)
    # the index, from K microbatches of size B
    micro = [layer.minibatch_grad(B, gen) for _ in range(cfg.microbatches)]
    W = layer.W.clone().requires_grad_()
    curv = [layer_curvatures(lambda: layer.loss(W), W, Gk) for Gk in micro]
    H_sign = float(np.mean([c["linf"] for c in curv]))
    H_spec = float(np.mean([c["spectral"] for c in curv]))
    G_plug = torch.stack(micro).mean(dim=0)
    if math.isinf(B):
        c = {"linf": 0.0, "spectral": 0.0}
        idx = spec_sign_index(G_plug, 0.0, 0.0, None, H_sign=H_sign, H_spec=H_spec)
    else:
        c = noise_scales(micro, microbatch_size=int(B), geometries=("linf", "spectral"))
        idx = spec_sign_index(G_plug, c["spectral"], c["linf"], int(B), H_sign=H_sign, H_spec=H_spec)
    # the measured gains, from R fresh minibatches
    draws = [layer.minibatch_grad(B, gen) for _ in range(cfg.draws)]
    gains = {m: measured_gain(layer, [direction(Gh, m) for Gh in draws], cfg.eta_grid) for m in ("sign", "spec")}
    gs, gp = gains["sign"]["gain"], gains["spec"]["gain"]
    if abs(gp - gs) <= TIE_RTOL * max(gp, gs) or gp == gs:
        winner = "tie"
    else:
        winner = "spec" if gp > gs else "sign"
    return {"index": idx.index, "index_winner": {"spectral": "spec", "linf": "sign"}.get(idx.winner, "none"),
            "regime": idx.regime, "c_1": c["linf"], "c_star": c["spectral"], "H_sign": H_sign, "H_spec": H_spec,
            "gain_sign": gs, "gain_spec": gp, "eta_sign": gains["sign"]["eta"], "eta_spec": gains["spec"]["eta"],
            "edge": gains["sign"]["at_grid_edge"] or gains["spec"]["at_grid_edge"], "winner": winner}


def run(cfg: Config, out_dir=None, cells: Cells | None = None) -> dict:
    cells = cells or Cells(None if out_dir is None else f"{out_dir}/cells")
    base = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("densities", "magnitudes", "batch_sizes",
                                                                        "small_batch", "sparse_density", "large_batch")}
    jobs = [(k, r, B) for k in cfg.magnitudes for r in cfg.densities for B in cfg.batch_sizes]
    rows = []
    for k, r, B in progress(jobs, "spec-sign"):
        res = cells.get(f"specsign-{k}-r{r:g}-B{B:g}", {**base, "mag": k, "rho": r, "B": B},
                        lambda k=k, r=r, B=B: run_cell(cfg, k, r, B))
        rows.append({"magnitudes": k, "density": r, "batch": B, **res})
    return {"rows": rows, "settings": dataclasses.asdict(cfg)}


# ---------------------------------------------------------------------------------------- claims
def _share(rows: list, who: str) -> tuple[int, int]:
    decided = [r for r in rows if r["winner"] != "tie"]
    return sum(r["winner"] == who for r in decided), len(decided)


def claims(results: dict) -> list[Claim]:
    st = results["settings"]
    rows = results["rows"]
    small = [r for r in rows if r["batch"] <= st["small_batch"] and r["density"] <= st["sparse_density"]]
    large = [r for r in rows if r["batch"] >= st["large_batch"] and r["density"] <= st["sparse_density"]]
    ws, ns = _share(small, "spec")
    wl, nl = _share(large, "sign")

    def detail(sel, who):
        return "; ".join(f"{k}: {sum(r['winner'] == who for r in sel if r['magnitudes'] == k)}/"
                         f"{sum(1 for r in sel if r['magnitudes'] == k)}" for k in st["magnitudes"])

    decided = [r for r in rows if r["winner"] != "tie" and r["index_winner"] != "none"]
    agree = sum(r["winner"] == r["index_winner"] for r in decided)
    rate = agree / len(decided) if decided else float("nan")
    return [
        Claim(SEED, "small batches favour spectral even for fairly sparse gradients",
              f"SpecGD wins {ws} of {ns} decided cells with B <= {st['small_batch']:g}, density <= {st['sparse_density']} "
              f"({detail(small, 'spec')})",
              verdict(ws > ns / 2 if ns else None), "holds if SpecGD wins more than half of those cells (ties excluded)"),
        Claim(SEED, "large batches with sparse gradients favour sign",
              f"SignSGD wins {wl} of {nl} decided cells with B >= {st['large_batch']:g} (inf = exact gradient), "
              f"density <= {st['sparse_density']} ({detail(large, 'sign')})",
              verdict(wl > nl / 2 if nl else None), "holds if SignSGD wins more than half of those cells (ties excluded). "
              "Sign wins there only in: " + (", ".join(f"{r['magnitudes']} rho={r['density']:g} B={r['batch']:g}"
                                                      for r in large if r["winner"] == "sign") or "none")
              + ". At finite B the sampling noise on G's zero entries makes sign(G_hat) a dense +-1 step."),
        Claim(SEED, "the index's decision agrees with the measured winner in most configurations",
              f"agreement {agree}/{len(decided)} = {fmt(rate)} (ties and undecided index excluded; "
              f"{sum(r['winner'] == 'tie' for r in rows)} measured ties)",
              verdict(rate > 0.5 if decided else None), "holds if the agreement rate exceeds 1/2; the rate is the result"),
    ]


def tables(results: dict):
    header = ("magnitudes", "density", "B", "index", "index says", "regime", "gain sign", "gain spec", "measured winner",
              "c_1", "c_*", "H_sign", "H_spec", "best eta at grid edge")
    rows = [[r["magnitudes"], r["density"], "inf" if math.isinf(r["batch"]) else int(r["batch"]), r["index"],
             r["index_winner"], r["regime"], r["gain_sign"], r["gain_spec"], r["winner"], r["c_1"], r["c_star"],
             r["H_sign"], r["H_spec"], r["edge"]] for r in results["rows"]]
    return [(header, rows)]


def notes(results: dict) -> list[str]:
    st = results["settings"]
    return [f"Layer {st['n']} x {st['m']}, label noise {st['label_noise']}, input decay {st['input_decay']}; index from "
            f"K={st['microbatches']} microbatches of size B, measured gains from {st['draws']} fresh minibatches with a "
            f"{st['eta_grid']}-point eta line search per method. Equal-magnitude gradients are the case where sign(G) "
            "is exactly G's direction; Gaussian-magnitude ones are the usual notion of a sparse gradient."]


def figures(results: dict, out_dir) -> list:
    from steepest.app.report import figures as F  # lazy: matplotlib loads only when figures are drawn

    st = results["settings"]
    rows = results["rows"]
    Bs = [b for b in st["batch_sizes"]]
    xs = [b if math.isfinite(b) else max(b for b in Bs if math.isfinite(b)) * 4 for b in Bs]
    fig, axes = F.subplots(1, len(st["magnitudes"]), width=5.2)
    for ax, k in zip(axes, st["magnitudes"]):
        meas, pred = {}, {}
        for rho in st["densities"]:
            sel = sorted([r for r in rows if r["magnitudes"] == k and r["density"] == rho], key=lambda r: r["batch"])
            meas[f"measured, rho={rho:g}"] = [r["gain_spec"] / r["gain_sign"] if r["gain_sign"] > 0 else float("nan") for r in sel]
            pred[f"index, rho={rho:g}"] = [r["index"] for r in sel]
        F.lines(ax, xs, meas, xlabel="batch size (rightmost = exact gradient)", ylabel="gain SpecGD / gain SignSGD",
                title=f"{k} magnitudes", logx=True, logy=True, markers=True)
        for (name, ys), line in zip(pred.items(), ax.get_lines()):
            ax.plot(xs, [y if isinstance(y, float) and math.isfinite(y) and y > 0 else float("nan") for y in ys], "--",
                    color=line.get_color(), linewidth=1)
        ax.axhline(1.0, color="k", linewidth=0.8)
        ax.set_title(f"{k} magnitudes (dashed: index)", fontsize=10)
    p1 = F.save(fig, f"{out_dir}/spec_sign_gain_ratio.png")
    return [p1]
