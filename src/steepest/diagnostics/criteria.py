"""Which geometry should a layer step in? Davis-Drusvyatskiy's test and the Spec-Sign Advantage Index.

**Davis-Drusvyatskiy** (seed 000 section 7, seed 001): with lr = 1/L the guaranteed one-step decrease
is ||G||_*^2 / (2 L_*) for spectral descent and ||G||_F^2 / (2 L_F) for gradient descent; for a layer
with incoming activations A (rows = samples), L_* ∝ ||A||_F^2 and L_F ∝ ||A||_op^2, so spectral wins
iff nr(G) >= st(A).

**Spec-Sign Advantage Index** (seed 002): for a geometry g with dual norm ||.||_g (l1 for sign,
nuclear for spectral, Frobenius for normalised GD), direction D_g = dualize(G_hat, g) and curvature
H_g = <D_g, H D_g>, the quadratic model's best expected decrease is

    Delta_g = S_g^2 / (2 H_g),    S_g = ||G||_g - 2 c_g / sqrt(B)    (lower bound on E<G, D_g>)

and I = Delta_spec / Delta_sign = ((||G||_nuc - 2c_*/sqrt(B)) / (||G||_1 - 2c_1/sqrt(B)))^2 H_sign/H_spec,
with the rule I > 1 -> spectral. Degenerate cases (documented behaviour, not a meaningless ratio):

* S_g <= 0: the bound guarantees no decrease for g (noise-dominated), Delta_g := 0;
* exactly one S_g <= 0: the other geometry wins (I = 0 or I = inf);
* every S_g <= 0 (regime ``"noise-dominated"``): I = NaN and the winner is the geometry with the
  larger signal-to-noise ratio ||G||_g / c_g (seed 002's abstract: "SpecGD is preferred ... when the
  nuclear-norm signal-to-noise ratio exceeds the l1-norm signal-to-noise ratio");
* H_g <= 0 with S_g > 0 (negative curvature): the quadratic model is unbounded below, Delta_g := inf;
* G = 0: I = NaN, winner ``"none"`` (regime ``"zero-gradient"``).

**Noise scales** from K >= 2 equal, disjoint microbatch gradients G_1..G_K of b samples each
(:func:`noise_scales`): c_g = sqrt(b) sqrt(K/(K-1)) mean_k ||G_k - mean_j G_j||_g. For Gaussian noise
G_k - mean = (1 - 1/K)^(1/2) x (a b-sample noise draw) in distribution and every norm is
1-homogeneous, so the factor sqrt(K/(K-1)) makes the estimator *unbiased* for c_g; for other noise it
is unbiased up to the CLT error O(1/b). Its spread falls like 1/sqrt(K). The plug-in G_hat = mean_k G_k
for G overestimates ||G||_g by at most c_g / sqrt(K b) (triangle inequality), so S_g is biased up by
at most that much.

Example:
    >>> G = torch.randn(16, 16)
    >>> davis_drusvyatskiy(G, torch.randn(64, 16))["winner"] in ("spectral", "frobenius")
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from steepest.diagnostics._batched_metrics import gram, grouped_eigvalsh
from steepest.diagnostics.curvature import (  # re-exported: the index's curvatures
    directional_curvatures,
    kfac_curvature,
    kfac_polar_curvature,
    layer_curvatures,
)
from steepest.diagnostics.metrics import gram_singular_values, nuclear_rank, stable_rank
from steepest.geometry import dual_norm, matrix_view
from steepest.linalg.estimate import spectral_norm_estimate
from steepest.linalg.precision import auto_dtype

GEOMETRIES = ("spectral", "linf", "frobenius")


def davis_drusvyatskiy(
    G: torch.Tensor, A: torch.Tensor, method: str = "exact", generator: torch.Generator | None = None
) -> dict:
    """The Davis-Drusvyatskiy test: spectral when nr(G) >= st(A), else frobenius (Euclidean GD).

    Returns ``{"nr": nr(G), "st": st(A), "ratio": nr/st, "winner": ...}`` (floats). G = 0 gives
    winner ``"none"`` (nothing to step); A = 0 gives st = 0 and ratio inf. Seed 000 section 7, seed 001.

    Example:
        >>> davis_drusvyatskiy(torch.eye(8), torch.ones(32, 8))["winner"]    # nr = 8 >= st = 1
        'spectral'
    """
    nr = float(nuclear_rank(matrix_view(G), method, generator))
    st = float(stable_rank(A, method, generator))
    if math.isnan(nr) or math.isnan(st):
        return {"nr": nr, "st": st, "ratio": float("nan"), "winner": "none"}
    ratio = nr / st if st > 0 else (float("inf") if nr > 0 else float("nan"))
    return {"nr": nr, "st": st, "ratio": ratio, "winner": dd_winner(nr, st)}


def dd_winner(nr: float, st: float) -> str:
    """The Davis-Drusvyatskiy rule itself: ``"spectral"`` iff nr(G) >= st(A), ``"none"`` for G = 0."""
    return "none" if nr == 0 else ("spectral" if nr >= st else "frobenius")


def _stack(grads) -> torch.Tensor:
    if isinstance(grads, torch.Tensor):
        return grads
    if not isinstance(grads, (list, tuple)) or not grads:
        raise TypeError("grads must be a tensor of shape (K, m, n) or a non-empty list of K gradients")
    return torch.stack([torch.as_tensor(g) for g in grads])


def noise_scales(
    grads, microbatch_size: int, geometries: Sequence[str] = GEOMETRIES, method: str = "exact"
) -> dict[str, float]:
    """c_g = sqrt(b) sqrt(K/(K-1)) mean_k ||G_k - mean_j G_j||_g from K >= 2 microbatch gradients.

    ``grads``: tensor (K, m, n) (or (K, *param_shape), flattened to matrices) or a list of K tensors,
    each the mean-loss gradient of b = ``microbatch_size`` disjoint samples. ``||.||_g`` is the dual
    norm of geometry g: l1 (``"linf"``, c_1), nuclear (``"spectral"``, c_*), Frobenius. See the module
    docstring for the estimator's bias. Seed 002, Definition 1.

    Example:
        >>> c = noise_scales(torch.randn(4, 8, 8), microbatch_size=1)
        >>> sorted(c)
        ['frobenius', 'linf', 'spectral']
    """
    X = _stack(grads)
    if X.ndim < 2 or X.shape[0] < 2:
        raise ValueError(
            f"noise scales need K >= 2 microbatch gradients (got shape {tuple(X.shape)}); "
            "split the batch into at least 2 equal, disjoint microbatches"
        )
    if isinstance(microbatch_size, bool) or not isinstance(microbatch_size, int) or microbatch_size < 1:
        raise ValueError(f"microbatch_size must be a positive int, got {microbatch_size!r}")
    if method not in ("exact", "gram"):
        raise ValueError(f"method must be 'exact' or 'gram', got {method!r}")
    K = X.shape[0]
    X = X.double().reshape(K, X.shape[1], -1) if X.ndim >= 3 else X.double().unsqueeze(1)
    E = X - X.mean(dim=0, keepdim=True)
    factor = math.sqrt(microbatch_size) * math.sqrt(K / (K - 1))

    def norm(g):
        if g == "spectral" and method == "gram":
            return gram_singular_values(E).sum(dim=-1)
        return dual_norm(E, g)

    return {g: factor * float(norm(g).mean()) for g in geometries}


def predicted_decrease(signal: float, curvature: float) -> float:
    """Delta = S^2 / (2 H): the quadratic model's best decrease along a direction (seed 002, eq. 2).

    S <= 0 (no guaranteed alignment) gives 0; H <= 0 with S > 0 gives inf (model unbounded below).
    """
    if not (signal > 0):
        return 0.0
    if not (curvature > 0):
        return float("inf")
    return signal * signal / (2.0 * curvature)


@dataclass
class GeometryScores:
    """Per-geometry signal S_g, curvature H_g, decrease Delta_g and SNR, plus the winner and regime."""

    signal: dict = field(default_factory=dict)
    curvature: dict = field(default_factory=dict)
    decrease: dict = field(default_factory=dict)
    snr: dict = field(default_factory=dict)
    winner: str = "none"
    regime: str = "signal"

    def as_dict(self) -> dict:
        return {
            "signal": dict(self.signal),
            "curvature": dict(self.curvature),
            "decrease": dict(self.decrease),
            "snr": dict(self.snr),
            "winner": self.winner,
            "regime": self.regime,
        }


def score_geometries(dual_norms: dict, noise: dict | None, batch_size: int | None, curvature: dict) -> GeometryScores:
    """Rank geometries by Delta_g = (||G||_g - 2 c_g / sqrt(B))^2 / (2 H_g), with the module's rules.

    ``dual_norms[g]`` = ||G||_g, ``noise[g]`` = c_g (``None``: deterministic, c = 0), ``curvature[g]``
    = H_g. Ties go to the earlier geometry in ``dual_norms``' order.

    Example:
        >>> score_geometries({"spectral": 3.0, "linf": 4.0}, None, None, {"spectral": 3.0, "linf": 9.0}).winner
        'spectral'
    """
    out = GeometryScores()
    names = list(dual_norms)
    if not names:
        raise ValueError("score_geometries needs at least one geometry")
    if noise is not None and (batch_size is None or batch_size < 1):
        raise ValueError(f"batch_size must be a positive int when noise scales are given, got {batch_size!r}")
    if all(not (float(dual_norms[g]) > 0) for g in names):
        out.signal = {g: 0.0 for g in names}
        out.regime = "zero-gradient"
        return out
    for g in names:
        c = 0.0 if noise is None or batch_size is None else float(noise[g]) / math.sqrt(batch_size)
        out.signal[g] = float(dual_norms[g]) - 2.0 * c
        out.curvature[g] = float(curvature[g])
        out.decrease[g] = predicted_decrease(out.signal[g], out.curvature[g])
        out.snr[g] = float(dual_norms[g]) / c if c > 0 else float("inf")
    if all(out.decrease[g] == 0.0 for g in names):
        out.regime = "noise-dominated"
        out.winner = max(names, key=lambda g: out.snr[g])
    else:
        out.regime = "signal" if all(out.signal[g] > 0 for g in names) else "partly-vacuous"
        out.winner = max(names, key=lambda g: out.decrease[g])
    return out


@dataclass
class SpecSignIndex:
    """The Spec-Sign Advantage Index I and its parts (seed 002, Definition 2)."""

    index: float
    winner: str
    regime: str
    signal_spec: float
    signal_sign: float
    H_spec: float
    H_sign: float

    def as_dict(self) -> dict:
        return dict(self.__dict__)


#: :func:`dd_scores`' ||A||_op for A (N x d): the top eigenvalue of the Gram A^T A when d <= DD_GRAM_MAX;
#: above it (the Gram costs N d^2), block Krylov with DD_OP_ITERS iterations of a DD_OP_BLOCK-column
#: Gaussian block from a fixed seed (deterministic): within 2.5% of the exact value on every matrix of
#: benchmarks/estimate.py, so Delta_F is at most ~5% high, inside Adaptive's 10% switching margin. (Warm or
#: mean-started blocks of 2-3 columns were 20-40% cheaper but 1.3-4.3% low on a gap-free decaying spectrum;
#: not worth it.) Precision (:func:`dd_product_dtype`): a float64 A, or a device without native bf16
#: matmul: the Gram in float32 with its eigenvalues in float64 (~1e-7 relative) and a float32 Krylov (never
#: above the exact value); a float32/bf16 A where bf16 matmul is native (``dtype="auto"``'s answer): the
#: Gram's and the Krylov's products in bf16 (A rounded to 2^-9 relative; the bf16 Gram's top eigenvalue in
#: float32), measured within 1.4e-4 of the exact ||A||_op on layer activations and decaying spectra
#: (tests/test_adaptive.py), the Krylov within 3.1e-4 of its float32 value: the per-entry rounding errors
#: (<= 2^-9 each) average out in the top eigenvalue, and the measured effect on Delta_F (<= 6e-4) is 150x
#: inside the margin. (There is no tight a-priori bound: errors that all pointed one way could move
#: lambda_1 by up to ~2^-9 st(A); nothing measured came near.)
#: A charlm decision (AMD EPYC, avx512_bf16) took 39.5 ms of CPU with float32 products, 31.1 ms with bf16
#: (benchmarks/adaptive_overhead.py: 2.40% -> 1.87% of training).
DD_GRAM_MAX, DD_OP_ITERS, DD_OP_BLOCK = 256, 4, 4


def dd_product_dtype(A: torch.Tensor) -> torch.dtype | None:
    """bf16 for the products of :func:`dd_scores`' ||A||_op when A is not float64 and its device runs bf16
    matmul natively (:func:`steepest.linalg.precision.auto_dtype`; ``STEEPEST_BF16=0`` forces float32);
    ``None`` (A's float dtype) otherwise."""
    if A.dtype == torch.float64:
        return None
    return torch.bfloat16 if auto_dtype(A.device) == torch.bfloat16 else None


def dd_scores(G: torch.Tensor, A: torch.Tensor) -> GeometryScores | None:
    """Seed 001's worst-case one-step decreases, cheaply: Delta_spectral = ||G||_*^2 / (||A||_F^2 / N) vs
    Delta_frobenius = ||G||_F^2 / (||A||_op^2 / N) (spectral wins iff nr(G) >= st(A)), as
    :class:`GeometryScores`; None if A holds a non-finite entry (its norm is then not finite).

    ``G``: the layer gradient (any shape; its matrix view is used); ``A``: its input rows (N, d).
    ||G||_* is the sum of the square roots of the eigenvalues of G's small Gram matrix in float64 (each
    value to ~1e-8 s_1, so a low-rank G keeps its nuclear norm; a float32 Gram would add ~3e-4 s_1 per
    zero singular value); ||A||_F a float32 vectorized sum of squares (~1e-6 relative);
    ||A||_op as :data:`DD_GRAM_MAX` says. The float64 SVD reference is :func:`davis_drusvyatskiy`.
    Many layers at once: :func:`dd_scores_many` (the same numbers).

    Example:
        >>> s = dd_scores(torch.eye(4), torch.randn(64, 4))      # nr(I) = 4 >= st(A): spectral
        >>> s.winner
        'spectral'
    """
    return dd_scores_many({0: (G, A)})[0]


def dd_scores_many(pairs: dict) -> dict:
    """:func:`dd_scores` of many layers, ``key -> (G, A)`` to ``key -> GeometryScores | None``, with every G's
    float64 Gram and every narrow A's Gram (d <= :data:`DD_GRAM_MAX`) eigen-solved in one batched call per
    (size, dtype) (:func:`~steepest.diagnostics._batched_metrics.grouped_eigvalsh`: the same LAPACK routine
    per matrix, so each result is bit for bit the one-layer value). Adaptive's decisions use it: one
    call instead of two per layer.

    Example:
        >>> out = dd_scores_many({"a": (torch.eye(4), torch.randn(64, 4)), "b": (torch.eye(3), torch.randn(8, 3))})
        >>> out["a"].winner
        'spectral'
    """
    grams: dict = {}
    parts: dict = {}
    for key, (G, A) in pairs.items():
        low = dd_product_dtype(A)  # (of A's own dtype: a float64 A keeps the float32 products)
        N, A = A.shape[0], A.float()
        fro = float(torch.linalg.vector_norm(A))
        if not math.isfinite(fro):
            continue
        Gm = matrix_view(G).float()
        grams[("G", key)] = gram(Gm, torch.float64)
        op = None
        if min(A.shape) <= DD_GRAM_MAX:  # (float64 eigenvalues of the float32 Gram; float32 ones of the bf16 Gram)
            grams[("A", key)] = gram(A, torch.float32).double() if low is None else gram(A, low).float()
        else:
            gen = torch.Generator(device=A.device).manual_seed(0)
            op = float(
                spectral_norm_estimate(A, iters=DD_OP_ITERS, block=DD_OP_BLOCK, generator=gen, product_dtype=low)
            )
        parts[key] = (N, fro, float(torch.linalg.vector_norm(Gm, dtype=torch.float64)), op)
    eig = grouped_eigvalsh(grams)
    out: dict = dict.fromkeys(pairs)
    for key, (N, fro, fro_G, op) in parts.items():
        nuc = float(eig[("G", key)][0].clamp(min=0).sqrt().sum())
        if op is None:
            op = float(eig[("A", key)][0][-1].clamp(min=0).sqrt())
        out[key] = score_geometries(
            {"spectral": nuc, "frobenius": fro_G}, None, None, {"spectral": fro**2 / N, "frobenius": op**2 / N}
        )
    return out


def spec_sign_index(
    G: torch.Tensor,
    c_star: float,
    c_1: float,
    batch_size: int | None,
    H_sign: float,
    H_spec: float,
    nuclear: float | None = None,
) -> SpecSignIndex:
    """I = ((||G||_nuc - 2c_*/sqrt(B)) / (||G||_1 - 2c_1/sqrt(B)))^2 * H_sign / H_spec; I > 1 -> spectral.

    ``batch_size=None`` means the deterministic limit (c terms dropped), where the rule compares
    ||G||_nuc^2 / H_spec with ||G||_1^2 / H_sign. Degenerate cases follow the module docstring.
    ``nuclear``: ||G||_* when the caller already has it (skips an SVD). Seed 002, eq. (7).

    Example:
        >>> r = spec_sign_index(torch.eye(4), 0.0, 0.0, None, H_sign=4.0, H_spec=4.0)
        >>> r.index, r.winner      # ||I||_nuc = ||I||_1 = 4, equal curvature: a tie goes to sign
        (1.0, 'linf')
    """
    X = matrix_view(G).double()
    nuc = float(dual_norm(X, "spectral")) if nuclear is None else float(nuclear)
    norms = {"spectral": nuc, "linf": float(dual_norm(X, "linf"))}
    noise = None if batch_size is None else {"spectral": c_star, "linf": c_1}
    s = score_geometries(norms, noise, batch_size, {"spectral": H_spec, "linf": H_sign})
    if s.regime == "zero-gradient":
        return SpecSignIndex(float("nan"), "none", s.regime, 0.0, 0.0, float(H_spec), float(H_sign))
    d_spec, d_sign = s.decrease["spectral"], s.decrease["linf"]
    if s.regime == "noise-dominated":
        index = float("nan")
    elif d_sign == 0.0 or math.isinf(d_spec) and not math.isinf(d_sign):
        index = float("inf")
    elif math.isinf(d_sign) and not math.isinf(d_spec) or d_spec == 0.0:
        index = 0.0
    elif math.isinf(d_spec) and math.isinf(d_sign):
        index = (s.signal["spectral"] / s.signal["linf"]) ** 2  # both unbounded: compare signals
    else:
        index = d_spec / d_sign
    winner = s.winner if math.isnan(index) else ("spectral" if index > 1 else "linf")
    return SpecSignIndex(index, winner, s.regime, s.signal["spectral"], s.signal["linf"], float(H_spec), float(H_sign))


__all__ = [
    "kfac_polar_curvature",
    "davis_drusvyatskiy",
    "dd_scores",
    "dd_scores_many",
    "noise_scales",
    "predicted_decrease",
    "score_geometries",
    "GeometryScores",
    "spec_sign_index",
    "SpecSignIndex",
    "directional_curvatures",
    "layer_curvatures",
    "kfac_curvature",
    "GEOMETRIES",
]
