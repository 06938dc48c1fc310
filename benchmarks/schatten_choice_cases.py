"""arXiv 2605.19781's Schatten-p choice, as steepest implements it, on the paper's own synthetic cases.

The paper's code (deel-ai-papers/schatten-muon at 749ba8d; read to check our reading, none of it copied)
ships these synthetic cases; each is rebuilt here from its description with steepest's functions
(:mod:`steepest.diagnostics.schatten_choice`, :class:`steepest.optim.measured_choosers.SchattenChoice`):

1. ``formula`` (smuon/svs/momentum_exact.py, tightness_exact.py): f and g at off-grid p (1.02 ... 35)
   against a matrix-level reference (the step D = U S^(1/p) V^T built by SVD, its Schatten norms and
   ||D A^T||_F computed from matrices), and g >= f.
2. ``gradient_only`` (smuon/svs/exact.py's example: G 128 x 512, A 256 x 512, Gaussian): with M = G, f is
   the gradient-only criterion J(p)^2, J = ||G||_{S_(1+1/p)} / ||A||_{S_k}; p* over its bounds [1.02, 400].
3. ``regimes`` (experiments/approx_p.py, its 12 named cases, 5 draws, EMA 0.95, Nesterov beta 0.95, p in
   [1.02, 50]): its docstring says that with a flat momentum spectrum the exact (tightness) p* "stays at
   pmin" and that a heavy-tailed one "moves p* away from pmin". Both criteria are reported.
4. ``deep_linear`` (experiments/muon_limitations.py): a deep linear student learning a teacher with
   singular values i^-1, full batch, Adam / Muon / SMuon at the script's lr grids (and one lr past each
   edge); best loss (min over steps and lrs) per depth. Its figure (best loss vs depth) is not readable
   here, so the comparison is against its title (Muon is limited here) and the abstract ("beats or
   remains competitive with the best of Muon and AdamW", read as SMuon <= both), not numbers.
   SMuon-tight (``criterion="tight"``) is reported beside it; the script does not run that criterion.
5. ``p_root`` (experiments/maximal_p.py): the step U S^(1/p) V^T itself, p in {2, ..., 50}, on its two
   input distributions, against the SVD (its figure's baseline; its approximations are not ours).

Usage::

    .venv/bin/python benchmarks/schatten_choice_cases.py            # 12 minutes at load 4-5 (deep linear: most)
    .venv/bin/python benchmarks/schatten_choice_cases.py --quick    # smaller sizes, ~10 seconds
Writes benchmarks/results/schatten_choice_cases.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torch import nn

import _util  # noqa: F401  (puts src/ on sys.path)
import steepest
from _util import ROOT, machine, table
from steepest.app.runs import atomic_write_json
from steepest.diagnostics.schatten_choice import (
    exponent_scores,
    scores_from_spectrum,
    tight_exponent_scores,
    tight_scores_from_spectrum,
)
from steepest.linalg.schatten import schatten_norm
from steepest.linalg.spectral_power import spectral_power
from steepest.optim.measured_choosers import SchattenChoice

F64 = torch.float64


def p_grid(pmin: float, pmax: float) -> tuple[float, ...]:
    """Knob values a = 1/p for p in [pmin, pmax]: 0.01 steps in a, both ends included."""
    lo, hi = 1.0 / pmax, 1.0 / pmin
    return tuple(sorted({round(lo, 6), *(i / 100 for i in range(101) if lo <= i / 100 <= hi), round(hi, 6)}))


def argmax_p(scores: torch.Tensor, grid: tuple[float, ...]) -> float:
    """p* = 1/a* of the best knob (ties: the smaller a, as everywhere in steepest)."""
    a = grid[int(torch.argmax(scores))]
    return math.inf if a == 0 else 1.0 / a


# ------------------------------------------------------------------------------------------- case 1
def case_formula(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(24, 24, generator=g, dtype=F64))
    V, _ = torch.linalg.qr(torch.randn(40, 24, generator=g, dtype=F64))
    M = (U * torch.logspace(0, -2, 24, dtype=F64)) @ V.mT  # a decaying momentum spectrum
    G = M + 0.05 * torch.randn(24, 40, generator=g, dtype=F64)
    A = torch.randn(200, 40, generator=g, dtype=F64) * torch.logspace(0, -1, 40, dtype=F64)
    ps = (1.02, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 35.0)
    f = exponent_scores(M, G, torch.linalg.svdvals(A), exponents=tuple(1 / p for p in ps))
    t = tight_exponent_scores(M, G, A, exponents=tuple(1 / p for p in ps))
    err_f = err_t = 0.0
    for i, p in enumerate(ps):
        D = spectral_power(M, 1 / p, method="svd")
        k = 2 * (p + 1) / (p - 1)
        inner = (G * D).sum() ** 2
        ref_f = inner / (schatten_norm(D, 1 + p) ** 2 * schatten_norm(A, k) ** 2)
        ref_t = inner / (D @ A.mT).pow(2).sum()
        err_f = max(err_f, abs(f[i].item() / ref_f.item() - 1))
        err_t = max(err_t, abs(t[i].item() / ref_t.item() - 1))
    return dict(
        case="formula",
        ps=list(ps),
        max_rel_err_holder=err_f,
        max_rel_err_tight=err_t,
        tight_ge_holder=bool((t >= f * (1 - 1e-12)).all()),
        agree=err_f < 1e-10 and err_t < 1e-10 and bool((t >= f * (1 - 1e-12)).all()),
    )


# ------------------------------------------------------------------------------------------- case 2
def case_gradient_only(m: int = 128, n: int = 512, N: int = 256, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(m, n, generator=g, dtype=F64)
    A = torch.randn(N, n, generator=g, dtype=F64)
    grid = p_grid(1.02, 400.0)
    f = exponent_scores(G, G, torch.linalg.svdvals(A), exponents=grid)
    err = 0.0
    for a in (grid[0], 0.1, 0.5, grid[-1]):
        p = 1 / a
        J = schatten_norm(G, 1 + 1 / p) / schatten_norm(A, 2 * (p + 1) / (p - 1))
        err = max(err, abs(f[grid.index(a)].item() / J.item() ** 2 - 1))
    return dict(
        case="gradient_only", shape=[m, n, N], max_rel_err_vs_J2=err, p_star=argmax_p(f, grid), agree=err < 1e-10
    )


# ------------------------------------------------------------------------------------------- case 3
def _laplace(shape, scale: float, g: torch.Generator) -> torch.Tensor:
    u = torch.rand(shape, generator=g, dtype=F64) - 0.5  # inverse CDF of Laplace(0, scale)
    return -scale * u.sign() * torch.log1p(-2 * u.abs())


def _power_law(m: int, n: int, decay: float, scale: float, g: torch.Generator) -> torch.Tensor:
    r = min(m, n)
    U, _ = torch.linalg.qr(torch.randn(m, r, generator=g, dtype=F64))
    V, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=F64))
    return (U * (scale * torch.arange(1, r + 1, dtype=F64).pow(-decay))) @ V.mT


#: (regime, momentum, Laplace noise scale of G - M): approx_p.py's four regimes, in its parameters.
REGIMES = {
    "noisy": (lambda m, n, g: 0.01 * torch.randn(m, n, generator=g, dtype=F64), 0.05),
    "aligned": (lambda m, n, g: 0.01 * torch.randn(m, n, generator=g, dtype=F64), 0.002),
    "heavy": (lambda m, n, g: _power_law(m, n, 1.5, 0.5, g), 0.005),
    "activation": (lambda m, n, g: _power_law(m, n, 0.8, 0.3, g), 0.005),
}
SHAPES = (
    (512, 512, "noisy"),
    (1024, 256, "noisy"),
    (256, 1024, "noisy"),
    (128, 2048, "noisy"),
    (2048, 128, "noisy"),
    (512, 512, "aligned"),
    (512, 512, "heavy"),
    (256, 1024, "heavy"),
    (1024, 256, "heavy"),
    (128, 2048, "heavy"),
    (512, 512, "activation"),
    (256, 1024, "activation"),
)


def draw(m: int, n: int, batch: int, regime: str, g: torch.Generator):
    """(G, activations with rows = samples (batch, n), M) of one draw of approx_p.py's regime."""
    make, lap = REGIMES[regime]
    M = make(m, n, g)
    G = M + _laplace((m, n), lap, g)
    if regime == "activation":
        r = min(n, batch)
        U, _ = torch.linalg.qr(torch.randn(n, r, generator=g, dtype=F64))
        V, _ = torch.linalg.qr(torch.randn(batch, r, generator=g, dtype=F64))
        A = torch.relu((U * (10.0 * torch.arange(1, r + 1, dtype=F64).pow(-0.7))) @ V.mT)
    else:
        A = torch.relu(torch.randn(n, batch, generator=g, dtype=F64))
    return G, A.mT, M


def regime_choice(
    m: int,
    n: int,
    regime: str,
    batch: int = 512,
    draws: int = 5,
    beta: float = 0.95,
    beta1: float = 0.95,
    seed: int = 0,
) -> dict:
    """approx_p.py's protocol: ``draws`` fresh draws; M = the Nesterov source from the draw's momentum and G;
    EMAs (``beta``) of C, B and the activation spectrum, M's spectrum instantaneous; p* on p in [1.02, 50]."""
    g = torch.Generator().manual_seed(seed)
    ema: dict[str, torch.Tensor] = {}
    for _ in range(draws):
        G, A, mom = draw(m, n, batch, regime, g)
        M = mom.lerp(G, 1 - beta1).lerp(G, 1 - beta1)
        U, s, Vh = torch.linalg.svd(M, full_matrices=False)
        new = {"C": ((U.mT @ G) * Vh).sum(-1), "B": (A @ Vh.mT).pow(2).sum(0), "sA": torch.linalg.svdvals(A)}
        ema = new if not ema else {k: ema[k].lerp(v, 1 - beta) for k, v in new.items()}
    grid = p_grid(1.02, 50.0)
    tight = tight_scores_from_spectrum(s, ema["C"], ema["B"], grid)
    holder = scores_from_spectrum(s, ema["C"], ema["sA"], grid)
    return dict(
        p_tight=argmax_p(tight, grid),
        p_holder=argmax_p(holder, grid),
        tight_at_pmin=int(torch.argmax(tight)) == len(grid) - 1,  # a* = 1/1.02, the grid's top
        holder_at_pmax=int(torch.argmax(holder)) == 0,  # a* = 1/50
    )


def case_regimes(scale: int = 1, draws: int = 5) -> list[dict]:
    rows = []
    for m, n, regime in SHAPES:
        mm, nn_, batch = m // scale, n // scale, 512 // scale
        out = regime_choice(mm, nn_, regime, batch=batch, draws=draws)
        claim = {"noisy": "p* = pmin", "aligned": "p* = pmin", "heavy": "p* > pmin", "activation": "(stress test)"}
        if regime in ("noisy", "aligned"):
            agree = out["tight_at_pmin"]
        elif regime == "heavy":
            agree = not out["tight_at_pmin"]
        else:
            agree = None
        rows.append(dict(case=f"regimes {regime} {mm}x{nn_}", claim=claim[regime], **out, agree=agree))
    return rows


# ------------------------------------------------------------------------------------------- case 5
def test_matrix(size: int, conditioned: bool, g: torch.Generator) -> torch.Tensor:
    """maximal_p.py's inputs: Gaussian, or U diag(s) V^T with s log-spaced from 10 down to 10 / kappa,
    kappa log-uniform in [10, 1000]."""
    if not conditioned:
        return torch.randn(size, size, generator=g, dtype=F64)
    U, _ = torch.linalg.qr(torch.randn(size, size, generator=g, dtype=F64))
    V, _ = torch.linalg.qr(torch.randn(size, size, generator=g, dtype=F64))
    kappa = 10 ** (1 + 2 * torch.rand(1, generator=g, dtype=F64).item())
    return (U * torch.logspace(1.0, 1.0 - math.log10(kappa), size, dtype=F64)) @ V.mT


def case_p_root(size: int = 512, trials: int = 3, seed: int = 0) -> list[dict]:
    """experiments/maximal_p.py: U S^(1/p) V^T at p in {2, 4, 10, 15, 30, 50} against the SVD, relative
    Frobenius error (directions: both scaled to unit Frobenius norm; the knob fixes its own magnitude).
    Theirs are iterative approximations plotted against an iteration budget; ours is one Gram eigh, so this
    checks accuracy (float64 and float32 compute), not their iteration counts."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for conditioned in (False, True):
        errs: dict[float, dict[str, float]] = {}
        for _ in range(trials):
            X = test_matrix(size, conditioned, g)
            U, s, Vh = torch.linalg.svd(X)
            for p in (2.0, 4.0, 10.0, 15.0, 30.0, 50.0):
                ref = (U * s.pow(1 / p)) @ Vh
                ref = ref / ref.norm()
                for name, dt in (("f64", F64), ("f32", torch.float32)):
                    D = spectral_power(X, 1 / p, dtype=dt)
                    e = (D / D.norm() - ref).norm().item()
                    errs.setdefault(p, {})[name] = max(errs.get(p, {}).get(name, 0.0), e)
        dist = "log-uniform cond [10, 1e3]" if conditioned else "Gaussian"
        rows.append(
            dict(
                case=f"p_root {dist} {size}x{size}",
                claim="U S^(1/p) V^T vs SVD",
                err_f64=max(v["f64"] for v in errs.values()),
                err_f32=max(v["f32"] for v in errs.values()),
                errs={str(p): v for p, v in errs.items()},
                agree=max(v["f64"] for v in errs.values()) < 1e-10,
            )
        )
    return rows


# ------------------------------------------------------------------------------------------- case 4
class DeepLinear(nn.Module):
    def __init__(self, d: int, depth: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(d, d, bias=False) for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def heavy_teacher(d: int, alpha: float, g: torch.Generator) -> torch.Tensor:
    U, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    V, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    return (U * torch.arange(1, d + 1, dtype=torch.float32).pow(-alpha)) @ V.mT


def train_deep_linear(
    opt_name: str,
    lr: float,
    depth: int,
    d: int = 100,
    n: int = 1000,
    steps: int = 1001,
    alpha: float = 1.0,
    seed: int = 42,
) -> dict:
    """One run of muon_limitations.py's setting: min loss over steps, final loss and (SMuon) the knobs."""
    g = torch.Generator().manual_seed(seed)
    T = heavy_teacher(d, alpha, g)
    X = torch.randn(n, d, generator=g)
    Y = X @ T.mT
    torch.manual_seed(seed)
    model = DeepLinear(d, depth)
    chooser = None
    if opt_name == "Adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    else:
        # the script's SMuon: p updated every 100 steps, sv_momentum 0.9 updated on those steps only
        # (measure_every = every), Muon's Frobenius magnitude at every p (its moment_type "none": no kappa)
        # ("SMuon-tight": the same with the paper's exact_tightness criterion, which this script does not run)
        crit = "tight" if opt_name == "SMuon-tight" else "holder"
        smuon = opt_name.startswith("SMuon")
        chooser = SchattenChoice(model, every=100, measure_every=100, beta=0.9, criterion=crit) if smuon else None
        # dtype=None: the knob's step in float64 (steepest.Muon's "auto" would compute it in float32, whose Gram
        # eigh loses the small directions of square matrices: case p_root's err_f32), Newton-Schulz in float32
        opt = steepest.Muon(
            model.parameters(),
            lr=lr,
            weight_decay=0.0,
            momentum=0.95,
            method="polar_express",
            chooser=chooser,
            dtype=None,
        )
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(X), Y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    out = dict(best=min(losses), final=losses[-1])
    if chooser is not None:
        knobs = [h["knob"] for h in chooser.history]
        out.update(knob_min=min(knobs), knob_max=max(knobs), knob_mean=sum(knobs) / len(knobs))
    return out


#: muon_limitations.py's lr grids; WIDER adds one lr past the edge where its best lr sat (Adam's top, SMuon's
#: bottom) so that "best at the grid's edge" can be told apart from "best".
LRS = {"Adam": (3e-4, 1e-3, 2e-3), "Muon": (1e-3, 1e-2, 2e-2), "SMuon": (1e-3, 1e-2, 2e-2)}
WIDER = {"Adam": (5e-3,), "Muon": (3e-4,), "SMuon": (3e-4,), "SMuon-tight": (3e-4, 1e-3, 1e-2, 2e-2)}


def case_deep_linear(depths=(1, 2, 5, 10), d: int = 100, n: int = 1000, steps: int = 1001) -> list[dict]:
    """Per depth: each optimizer's best loss on the script's lr grid (``<name>_best``, ``<name>_lr``) and on
    the wider grid (``<name>_best_wide``). agree: SMuon's best <= the best of Adam and Muon (the abstract's
    "beats or remains competitive with the best of Muon and AdamW", read as no worse), on the script's grid."""
    rows = []
    for depth in depths:
        row: dict = dict(
            case=f"deep_linear depth {depth} ({d}, n {n}, {steps} steps)", claim="SMuon <= min(Adam, Muon)"
        )
        for name in WIDER:
            lrs = LRS.get(name, ())
            runs = {lr: train_deep_linear(name, lr, depth, d=d, n=n, steps=steps) for lr in lrs + WIDER[name]}
            if lrs:
                lr = min(lrs, key=lambda k: runs[k]["best"])
                row.update({f"{name}_best": runs[lr]["best"], f"{name}_lr": lr})
            wide = min(runs, key=lambda k: runs[k]["best"])
            row.update({f"{name}_best_wide": runs[wide]["best"], f"{name}_lr_wide": wide})
            if name.startswith("SMuon"):
                r = runs[lr if lrs else wide]
                row[f"{name}_knobs"] = [round(r["knob_min"], 3), round(r["knob_mean"], 3), round(r["knob_max"], 3)]
        row["muon_worse_than_adam"] = row["Muon_best"] > row["Adam_best"]
        row["agree"] = row["SMuon_best"] <= min(row["Muon_best"], row["Adam_best"])
        row["agree_wide"] = row["SMuon_best_wide"] <= min(row["Muon_best_wide"], row["Adam_best_wide"])
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="sizes / 4, depths 1-2, 301 steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "schatten_choice_cases.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rows = [case_formula(), case_gradient_only()]
    rows += case_regimes(scale=4 if args.quick else 1)
    rows += case_p_root(size=128 if args.quick else 512)
    if args.quick:
        rows += case_deep_linear(depths=(1, 2), d=32, n=256, steps=301)
    else:
        rows += case_deep_linear()
    cols = [
        ("case", "case", "{}"),
        ("claim", "paper", "{}"),
        ("max_rel_err_holder", "rel err f", "{:.1e}"),
        ("max_rel_err_tight", "rel err g", "{:.1e}"),
        ("max_rel_err_vs_J2", "rel err J^2", "{:.1e}"),
        ("p_star", "p*", "{:.3g}"),
        ("p_tight", "p* tight", "{:.3g}"),
        ("p_holder", "p* Hoelder", "{:.3g}"),
        ("err_f64", "max err f64", "{:.1e}"),
        ("err_f32", "max err f32", "{:.1e}"),
        ("Adam_best", "Adam best (lr)", "{:.2e}"),
        ("Muon_best", "Muon best", "{:.2e}"),
        ("SMuon_best", "SMuon best", "{:.2e}"),
        ("SMuon_knobs", "SMuon a min/mean/max", "{}"),
        ("agree", "agree?", "{}"),
    ]
    print(table(rows, cols))
    wide = [r for r in rows if "agree_wide" in r]
    if wide:
        print("\ndeep linear, best (lr) on the script's grid | on the wider grid; SMuon-tight on the wider grid:")
        for r in wide:
            cells = [
                f"{k} {r[k + '_best']:.2e} ({r[k + '_lr']:g}) | {r[k + '_best_wide']:.2e} ({r[k + '_lr_wide']:g})"
                for k in ("Adam", "Muon", "SMuon")
            ]
            cells.append(f"SMuon-tight {r['SMuon-tight_best_wide']:.2e} ({r['SMuon-tight_lr_wide']:g})")
            print(f"- {r['case']}: " + "; ".join(cells) + f"; agree on wider grid: {r['agree_wide']}")
    wall = time.perf_counter() - t0
    print(f"{wall:.0f} s")
    atomic_write_json(
        args.out,
        {
            "rows": rows,
            "quick": args.quick,
            "wall_s": wall,
            "machine": machine(),
            "command": "benchmarks/schatten_choice_cases.py" + (" --quick" if args.quick else ""),
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
