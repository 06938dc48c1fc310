"""Seed 001: stable rank of post-activation matrices at Gaussian initialisation.

Source: D. Davis and D. Drusvyatskiy, "When do spectral gradient updates help in deep learning?".

They compare a layer's gradient nuclear rank nr(G) = ||G||_*^2/||G||_F^2 with the stable rank
st(A) = ||A||_F^2/||A||_op^2 of its incoming activations A (rows = samples): spectral steps win when
nr(G) >= st(A). They prove st(A) is low at initialisation. Mechanism (a short derivation, checked
here): if s(g), g ~ N(0, 1), has non-zero mean, A ~ E[s] 1 1^T + a zero-mean part, the rank-one mean
term dominates ||A||_op^2 and st(A) -> E[s(g)^2]/E[s(g)]^2, independent of width
(pi for ReLU). Zero-mean (tanh) and gated (SwiGLU: silu(g1) g2) activations have no such term.

Measured here, over widths w (n = samples_per_width * w Gaussian inputs of dimension w):

* random features A = s(X W^T) (W Gaussian), and nr of the readout gradient R^T A for an MSE loss
  against a random linear teacher;
* an MLP h_l = s(h_{l-1} W_l^T) of depth up to ``depth``: st at every layer, and nr of layer 2's
  gradient vs st of layer 1's output;
* a pre-LayerNorm transformer block (multi-head softmax attention with a residual, then the MLP with
  hidden size 4w): st of the MLP post-activation.

Weights are N(0, gain^2/fan_in) with gain sqrt(2) for ReLU/GELU and 1 for tanh/SwiGLU, and each dense
layer's pre-activations are rescaled by one scalar to variance gain^2 (LSUV-style data-dependent
init, so deep SwiGLU stacks do not underflow; a scalar changes no stable rank). Ranks come
from :mod:`steepest.diagnostics.metrics` (exact, SVD).

Example:
    >>> from steepest.app.reproduce import init_rank
    >>> res = init_rank.run(init_rank.quick(), None)  # runs the experiment's quick preset (minutes)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as Fn

from steepest.app.reproduce.base import Cells, Claim, fmt, nuclear_rank, progress, stable_rank
from steepest.app.reproduce.claimtext import extension_claim, seed_claim
from steepest.app.runs import ConfigError

SEED = "seed 001"
SOURCE = 'D. Davis and D. Drusvyatskiy, "When do spectral gradient updates help in deep learning?"'
TITLE = "stable rank of post-activations at Gaussian initialisation"
VERSION = 2
ACTIVATIONS = ("relu", "gelu", "tanh", "swiglu")
RELU_FAMILY = ("relu", "gelu")
ZERO_MEAN_OR_GATED = ("tanh", "swiglu")
ARCHS = ("random_features", "mlp", "transformer")
GAIN = {"relu": math.sqrt(2.0), "gelu": math.sqrt(2.0), "tanh": 1.0, "swiglu": 1.0}


@dataclasses.dataclass
class Config:
    widths: tuple[int, ...] = (64, 128, 256, 512)
    samples_per_width: int = 2  # n = samples_per_width * width rows in each activation matrix
    depth: int = 8  # MLP depth (st recorded at every layer)
    activations: tuple[str, ...] = ACTIVATIONS
    trials: int = 2  # independent initialisations averaged
    flat_ratio: float = 1.5  # "independent of width": st(max width)/st(min width) at most this
    growth_ratio: float = 2.0  # "grows": st(max width)/st(min width) at least this
    limit_rtol: float = 0.05  # random features st vs E[s^2]/E[s]^2 at the largest width
    seed: int = 1

    def __post_init__(self) -> None:
        if len(self.widths) < 2 or min(self.widths) < 8:
            raise ConfigError(f"widths needs at least two values >= 8, got {self.widths}")
        bad = [a for a in self.activations if a not in ACTIVATIONS]
        if bad or not self.activations:
            raise ConfigError(f"activations must be a non-empty subset of {ACTIVATIONS}, got {self.activations}")
        if self.depth < 2 or self.samples_per_width < 1 or self.trials < 1:
            raise ConfigError("depth >= 2, samples_per_width >= 1 and trials >= 1 are required")


def quick() -> Config:
    return Config(widths=(32, 64, 128, 256), depth=4, trials=1)


# ---------------------------------------------------------------------------------------- models
def _weight(fan_out: int, fan_in: int, gain: float, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(fan_out, fan_in, generator=gen) * (gain / math.sqrt(fan_in))


def layer(h: torch.Tensor, act: str, width: int, gen: torch.Generator, params: list) -> torch.Tensor:
    """One dense layer s(h W^T) (SwiGLU: silu(h W1^T) * (h W3^T)); its weights are appended to ``params``."""
    W = _weight(width, h.shape[1], GAIN[act], gen).requires_grad_()
    params.append(W)
    z = _unit(h @ W.T, act)
    if act == "relu":
        return torch.relu(z)
    if act == "gelu":
        return Fn.gelu(z)
    if act == "tanh":
        return torch.tanh(z)
    W3 = _weight(width, h.shape[1], GAIN[act], gen).requires_grad_()
    params.append(W3)
    return Fn.silu(z) * _unit(h @ W3.T, act)


def _unit(z: torch.Tensor, act: str) -> torch.Tensor:
    """Rescale the pre-activation by one scalar so its entries have variance GAIN^2 (LSUV-style init,
    Mishkin & Matas 2016). A scalar leaves every stable rank unchanged; without it a deep SwiGLU MLP
    squares its scale each layer (silu(z) z' ~ z z'/2 for small z) and underflows to zero by layer 8."""
    return z * (GAIN[act] / z.detach().std().clamp(min=1e-30))


def _teacher_loss(out: torch.Tensor, X: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """MSE against a random linear teacher y = X T / sqrt(d) (the same output size as ``out``)."""
    T = torch.randn(X.shape[1], out.shape[1], generator=gen)
    y = X @ T / math.sqrt(X.shape[1])
    return 0.5 * (out - y).square().sum() / X.shape[0]


def random_features(act: str, width: int, n: int, gen: torch.Generator) -> dict:
    X = torch.randn(n, width, generator=gen)
    A = layer(X, act, width, gen, []).detach()
    V = (torch.randn(width // 4 or 1, width, generator=gen) / math.sqrt(width)).requires_grad_()
    loss = _teacher_loss(A @ V.T, X, gen)
    (G,) = torch.autograd.grad(loss, V)
    return {"st": stable_rank(A), "nr_grad": nuclear_rank(G)}


def mlp(act: str, width: int, n: int, depth: int, gen: torch.Generator) -> dict:
    X = torch.randn(n, width, generator=gen)
    h = X
    params: list[torch.Tensor] = []  # every layer's weights, appended by layer()
    acts: list[torch.Tensor] = []
    for _ in range(depth):
        h = layer(h, act, width, gen, params)
        h.retain_grad()
        acts.append(h)
    V = (torch.randn(width // 4 or 1, width, generator=gen) / math.sqrt(width)).requires_grad_()
    loss = _teacher_loss(h @ V.T, X, gen)
    per_layer = 2 if act == "swiglu" else 1
    grads = torch.autograd.grad(loss, params)
    G2 = grads[per_layer]  # gradient of layer 2's (first) weight: its input is acts[0]
    return {
        "st_by_layer": [stable_rank(a.detach()) for a in acts],
        "nr_grad_layer2": nuclear_rank(G2),
        "st_input_layer2": stable_rank(acts[0].detach()),
    }


def transformer_block(act: str, width: int, n: int, gen: torch.Generator) -> dict:
    """Pre-LN block: x + MHA(LN(x)), then s(LN(.) W1^T) with hidden 4w; st of that post-activation."""
    heads = max(1, width // 64)
    dh = width // heads
    x = torch.randn(n, width, generator=gen)
    u = Fn.layer_norm(x, (width,))
    q, k, v = (u @ _weight(width, width, 1.0, gen).T for _ in range(3))
    q, k, v = (t.reshape(n, heads, dh).transpose(0, 1) for t in (q, k, v))
    att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(dh), dim=-1) @ v
    x = x + att.transpose(0, 1).reshape(n, width) @ _weight(width, width, 1.0, gen).T
    A = layer(Fn.layer_norm(x, (width,)), act, 4 * width, gen, []).detach()
    return {"st": stable_rank(A)}


def moment_limit(act: str) -> float:
    """E[s(g)^2]/E[s(g)]^2 for the random-features pre-activation g ~ N(0, GAIN^2) (inf if E[s] = 0).

    Trapezoid rule against the Gaussian density on [-12, 12] with 240001 points: error ~1e-9 even for
    ReLU's kink (Gauss-Hermite is inexact there: 3.1287 instead of pi with 200 nodes). SwiGLU:
    E[silu(g1) g2] = 0 for independent g1, g2.
    """
    if act == "swiglu":
        return math.inf
    x = np.linspace(-12.0, 12.0, 240001)
    w = np.exp(-0.5 * x**2)
    w[0] *= 0.5
    w[-1] *= 0.5
    w = w / w.sum()
    z = GAIN[act] * x
    s = {"relu": np.maximum(z, 0), "gelu": 0.5 * z * (1 + _erf(z / math.sqrt(2))), "tanh": np.tanh(z)}[act]
    m1, m2 = float(w @ s), float(w @ s**2)
    return m2 / m1**2 if abs(m1) > 1e-12 else math.inf


def _erf(x: np.ndarray) -> np.ndarray:
    return torch.erf(torch.from_numpy(x)).numpy()


# ---------------------------------------------------------------------------------------- sweep
def run_cell(cfg: Config, act: str, width: int, trial: int) -> dict:
    gen = torch.Generator().manual_seed(cfg.seed * 100003 + width * 31 + trial * 7 + ACTIVATIONS.index(act))
    n = cfg.samples_per_width * width
    with torch.no_grad():
        tb = transformer_block(act, width, n, gen)
    return {
        "random_features": random_features(act, width, n, gen),
        "mlp": mlp(act, width, n, cfg.depth, gen),
        "transformer": tb,
    }


def run(cfg: Config, out_dir=None, cells: Cells | None = None) -> dict:
    cells = cells or Cells(None if out_dir is None else f"{out_dir}/cells")
    base = {"seed": cfg.seed, "spw": cfg.samples_per_width, "depth": cfg.depth}
    jobs = [(a, w, t) for a in cfg.activations for w in cfg.widths for t in range(cfg.trials)]
    raw = {}
    for act, w, t in progress(jobs, "init-rank"):
        raw[(act, w, t)] = cells.get(
            f"init-{act}-w{w}-t{t}",
            {**base, "act": act, "width": w, "trial": t},
            lambda act=act, w=w, t=t: run_cell(cfg, act, w, t),
        )
    acts: dict[str, dict] = {}
    out = {"widths": list(cfg.widths), "depth": cfg.depth, "settings": dataclasses.asdict(cfg), "acts": acts}
    for act in cfg.activations:

        def mean(f, act=act):
            return [float(np.mean([f(raw[(act, w, t)]) for t in range(cfg.trials)])) for w in cfg.widths]

        acts[act] = {
            "random_features": mean(lambda r: r["random_features"]["st"]),
            "rf_nr_grad": mean(lambda r: r["random_features"]["nr_grad"]),
            "mlp": mean(lambda r: r["mlp"]["st_by_layer"][-1]),
            "mlp_by_layer": [
                [
                    float(np.mean([raw[(act, w, t)]["mlp"]["st_by_layer"][l] for t in range(cfg.trials)]))
                    for l in range(cfg.depth)
                ]
                for w in cfg.widths
            ],
            "mlp_nr_grad": mean(lambda r: r["mlp"]["nr_grad_layer2"]),
            "mlp_st_input": mean(lambda r: r["mlp"]["st_input_layer2"]),
            "transformer": mean(lambda r: r["transformer"]["st"]),
            "limit": moment_limit(act),
        }
    return out


# ---------------------------------------------------------------------------------------- claims
def claims(results: dict) -> list[Claim]:
    st = results["settings"]
    A = results["acts"]
    out = []
    w0, w1 = results["widths"][0], results["widths"][-1]

    def ratios(acts):
        return {(a, arch): A[a][arch][-1] / A[a][arch][0] for a in acts if a in A for arch in ARCHS}

    every = ratios(ACTIVATIONS)
    grown = {k: r for k, r in every.items() if r > st["flat_ratio"]}
    base_txt = f"the rival law st ~ width (a factor {w1 / w0:g} over w = {w0} -> {w1})"
    out.append(
        seed_claim(
            SEED,
            "abstract",
            "we first prove that post-activation matrices have low stable rank at "
            "Gaussian initialization in random feature regression, feedforward networks, and transformer blocks",
            "; ".join(f"{a}/{arch}: st {fmt(A[a][arch][0])} -> {fmt(A[a][arch][-1])}" for (a, arch) in every),
            not grown if every else None,
            baseline=base_txt,
            threshold=f"low = O(1): st(w={w1})/st(w={w0}) <= {st['flat_ratio']} for every activation and "
            "architecture (MLP: last layer)",
            why="unqualified, the claim is refuted for "
            + (", ".join(sorted({a for a, _ in grown})) or "none")
            + " (growth x"
            + ", x".join(fmt(r) for r in grown.values())
            + "); the seed's proofs need an "
            "activation with E[s(g)] != 0 (a mean direction carrying ||A||_op), which tanh and SwiGLU lack"
            if grown
            else "every activation stays O(1)",
        )
    )
    flat = ratios(RELU_FAMILY)
    out.append(
        extension_claim(
            SEED,
            "for the ReLU family (ReLU, GELU) the stable rank is O(1), independent of width",
            "; ".join(f"{a}/{arch}: x{fmt(r)}" for (a, arch), r in flat.items()),
            all(r <= st["flat_ratio"] for r in flat.values()) if flat else None,
            baseline=base_txt,
            threshold=f"st(w={w1})/st(w={w0}) <= {st['flat_ratio']} in every architecture",
        )
    )
    grow = ratios(ZERO_MEAN_OR_GATED)
    out.append(
        extension_claim(
            SEED,
            "zero-mean (tanh) and gated (SwiGLU) post-activations have stable rank growing with "
            "width (not in seed 001)",
            "; ".join(f"{a}/{arch}: x{fmt(r)}" for (a, arch), r in grow.items()),
            all(r >= st["growth_ratio"] for r in grow.values()) if grow else None,
            baseline="the seed's O(1) (a factor 1)",
            threshold=f"st(w={w1})/st(w={w0}) >= {st['growth_ratio']} in every architecture (MLP: last "
            f"of {results['depth']} layers)",
            why="below it: "
            + (
                ", ".join(f"{a}/{arch} (x{fmt(r)})" for (a, arch), r in grow.items() if r < st["growth_ratio"])
                or "none"
            )
            + (
                "; the plain (no residual) deep SwiGLU stack collapses towards st = 1 layer by layer"
                if grow.get(("swiglu", "mlp"), math.inf) < st["growth_ratio"]
                else ""
            ),
        )
    )
    lim = {a: (A[a]["random_features"], A[a]["limit"]) for a in RELU_FAMILY if a in A}

    def lim_ok(v, L):
        gaps = [abs(x - L) / L for x in v]
        return gaps[-1] <= st["limit_rtol"] and gaps[-1] < gaps[0]

    out.append(
        extension_claim(
            SEED,
            "random-features st(A) tends to E[s(g)^2]/E[s(g)]^2 as width grows, for s with "
            "E[s(g)] != 0 (the project's derivation: the mean direction carries ||A||_op)",
            "; ".join(f"{a}: st {', '.join(fmt(x) for x in v)} vs limit {fmt(L)}" for a, (v, L) in lim.items()),
            all(lim_ok(v, L) for v, L in lim.values()) if lim else None,
            baseline="the gap at the smallest width",
            threshold=f"within {st['limit_rtol']:.0%} at the largest width and closer than at the smallest",
        )
    )
    if "relu" in A:
        r = A["relu"]
        ok = all(g > s for g, s in zip(r["rf_nr_grad"], r["random_features"])) and all(
            g > s for g, s in zip(r["mlp_nr_grad"], r["mlp_st_input"])
        )
        out.append(
            extension_claim(
                SEED,
                "at initialisation, with ReLU, the seed's condition nr(G) >= st(A) (\u201ccompares "
                "... the squared nuclear-to-Frobenius ratio of the gradient to the stable rank of the "
                "incoming activations\u201d, abstract) favours the spectral update",
                f"random features: nr(grad) {', '.join(fmt(x) for x in r['rf_nr_grad'])} vs st(A) "
                f"{', '.join(fmt(x) for x in r['random_features'])}; MLP layer 2: nr "
                f"{', '.join(fmt(x) for x in r['mlp_nr_grad'])} vs st {', '.join(fmt(x) for x in r['mlp_st_input'])}",
                ok,
                baseline="st(A) of the incoming activation",
                threshold="nr(G) > st(A) at every width, for both models",
            )
        )
    else:
        out.append(
            Claim(
                SEED,
                "with ReLU the gradient's nuclear rank exceeds the incoming activation's stable rank",
                "relu not in activations",
                "inconclusive",
                "add relu to activations to measure it",
            )
        )
    return out


def tables(results: dict):
    header = ["activation", "architecture"] + [f"w={w}" for w in results["widths"]] + ["E[s^2]/E[s]^2"]
    rows = []
    for a, r in results["acts"].items():
        for arch in ARCHS:
            rows.append([a, arch] + r[arch] + [r["limit"] if arch == "random_features" else ""])
        rows.append([a, "nr(grad), random-features readout"] + r["rf_nr_grad"] + [""])
        rows.append([a, "nr(grad), MLP layer 2"] + r["mlp_nr_grad"] + [""])
    return [(header, rows)]


def notes(results: dict) -> list[str]:
    st = results["settings"]
    return [
        f"Rows of each activation matrix: n = {st['samples_per_width']} x width Gaussian inputs; averages over "
        f"{st['trials']} initialisation(s). MLP row: the last of {st['depth']} layers."
    ]


def figures(results: dict, out_dir) -> list:
    from steepest.app.report import figures as F  # lazy: matplotlib loads only when figures are drawn

    widths = results["widths"]
    A = results["acts"]
    fig, axes = F.subplots(1, 3, width=4.6)
    for ax, arch in zip(axes, ARCHS):
        F.lines(
            ax,
            widths,
            {a: A[a][arch] for a in A},
            xlabel="width",
            ylabel="stable rank of post-activation",
            title=arch.replace("_", " "),
            logx=True,
            logy=True,
            markers=True,
        )
        ax.plot(
            widths,
            [w / widths[0] * min(A[a][arch][0] for a in A) for w in widths],
            ":",
            color="gray",
            label="rival law st ~ width",
        )
        if arch == "random_features":
            for a in (a for a in A if math.isfinite(A[a]["limit"])):
                ax.axhline(
                    A[a]["limit"],
                    linestyle="--",
                    linewidth=1,
                    color=f"C{list(A).index(a)}",
                    label=f"limit E[s^2]/E[s]^2, {a} ({A[a]['limit']:.3g})",
                )
        F.log_ticks(ax, widths, "x")
        F.tidy_log(ax)
        ax.legend(fontsize=7)
    p1 = F.save(fig, f"{out_dir}/init_rank_vs_width.png", require_labels=True)
    fig, axes = F.subplots(1, len(A), width=4.0)
    depth = list(range(1, results["depth"] + 1))
    for ax, (a, r) in zip(axes, A.items()):
        F.lines(
            ax,
            depth,
            {f"w={w}": r["mlp_by_layer"][i] for i, w in enumerate(widths)},
            xlabel="layer",
            ylabel="stable rank",
            title=f"MLP, {a}",
            logy=True,
            markers=True,
        )
        ax.set_xticks(depth)
        F.tidy_log(ax)
    p2 = F.save(fig, f"{out_dir}/init_rank_vs_depth.png", require_labels=True)
    return [p1, p2]
