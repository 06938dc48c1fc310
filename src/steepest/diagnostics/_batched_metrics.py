"""LayerMonitor helpers: the activation and microbatch-gradient matrices of the captured calls, and
grouped Gram eigensolves (every layer's small Gram matrix first, then one batched
``torch.linalg.eigvalsh`` / ``eigh`` call per (size, dtype)).

The monitor needs, per record, the eigenvalues of ~50 Gram matrices of size <= 128 (every eigenvalue of G's
float64 Gram; only the top one of A's, W's and dW's float32 Grams: :func:`grouped_top_eigen`, a block Krylov
from A's column mean or, with ``warm_start``, from the last record's vector, ~3x cheaper than ``eigvalsh``).
Stacked by (size, dtype) and solved together they cost one call instead of ~10 small ops per layer, and equal
the one-by-one solutions up to rounding (a batched LAPACK call runs the same routine per matrix). G's
eigenvectors are reused by the polar-factor curvature (:func:`~steepest.diagnostics.criteria.kfac_polar_curvature`,
``eig=``). Accuracy of s_i = sqrt(lambda_i): :func:`steepest.diagnostics.metrics.gram_singular_values`. A cold
batched Lanczos was measured and rejected (benchmarks/HISTORY.md).

Example:
    >>> X = torch.randn(5, 3)
    >>> lam = grouped_eigvalsh({"x": gram(X, torch.float64)})["x"][0]   # ascending eigenvalues of X^T X
"""

from __future__ import annotations

import math

import torch

from steepest.linalg.estimate import top_eigenpair

#: Krylov steps and block width of the warm-started top eigenvalue (:func:`grouped_top_eigen`), for the
#: weight and update Grams: with the last record's vector as a start, 8 steps x 2 columns were within
#: 1.4e-4 relative of the exact value on every charlm layer over 200 AdamW steps (worst: ||W||_op at the
#: first warm record, where the random init's Marchenko-Pastur edge has no gap; 6 steps: 1.7e-3, 10 x 4:
#: 5e-7), the update norms within 4e-7 (benchmarks/HISTORY.md, "LayerMonitor overhead, warm starts").
WARM_ITERS, WARM_BLOCK = 8, 2
#: Krylov steps for the activations' ||A||_op (st(A)): their top direction moves more between records
#: (new batch), so the start is [last vector, A's column mean, a Gaussian column] (``ACT_BLOCK``): 3 steps
#: were within 2e-5 of the exact st(A) on charlm (2 steps: 2.6e-3; without the mean 5 steps were needed).
ACT_ITERS, ACT_BLOCK = 3, 3
#: Without a kept vector (``warm_start=False``, history-free): [column mean, 2 Gaussian columns], more steps.
ACT_COLD_ITERS = 4


def activation_matrix(calls, max_rows: int | None = None) -> torch.Tensor:
    """All calls' rows stacked into A (rows, in); ``max_rows`` keeps an evenly strided subset."""
    if not calls:
        A = torch.zeros(0, 0)
    elif len(calls) == 1:  # a view, no copy
        A = calls[0][0].reshape(-1, calls[0][0].shape[-1])
    else:
        A = torch.cat([a.reshape(-1, a.shape[-1]) for a, _ in calls])
    if max_rows is not None and A.shape[0] > max_rows:
        A = A[:: math.ceil(A.shape[0] / max_rows)]
    return A


def microbatch_grads(calls, K: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, int] | None:
    """K equal, disjoint microbatch gradients (K, out, in) and the samples b per microbatch.

    Each call's samples (dim 0) are split into K chunks of floor(N/K) (a remainder is dropped);
    G_k = K * sum over the chunk of dY^T A. ``None`` when an output gradient is missing or a call
    has fewer than K samples. ``dtype``: the products' precision (LayerMonitor uses float32, 2x
    cheaper; the noise scales are differences of O(1)-relative size, far above float32 round-off).
    """
    if not calls or any(d is None for _, d in calls):
        return None
    total: torch.Tensor | None = None
    b = 0
    for A, D in calls:
        s = A.shape[0] // K
        if s == 0 or D is None:
            return None
        A_k = A[: s * K].to(dtype).reshape(K, -1, A.shape[-1])
        D_k = D[: s * K].to(dtype).reshape(K, -1, D.shape[-1])
        g = K * (D_k.mT @ A_k)
        total = g if total is None else total + g
        b += s
    return None if total is None else (total, b)


def gram(X: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The small Gram matrix of X (m, n) in ``dtype``: X^T X if n <= m else X X^T.

    The orientation of :func:`steepest.diagnostics.criteria.kfac_polar_curvature`, so that its
    eigenvectors can be passed to it (``eig=``).
    """
    Y = X.to(dtype)
    return Y.mT @ Y if Y.shape[-1] <= Y.shape[-2] else Y @ Y.mT


def grouped_eigvalsh(mats: dict, vectors=()) -> dict:
    """Eigen-decompose many symmetric matrices, one batched call per (size, dtype).

    ``mats``: key -> (n, n) symmetric matrix; ``vectors``: keys whose eigenvectors are wanted (their
    group is solved with ``eigh`` instead of ``eigvalsh``). Returns key -> (eigenvalues ascending,
    eigenvectors or None). A matrix with a non-finite diagonal entry (a Gram matrix of a non-finite or
    overflowing input) gets NaN eigenvalues (and None vectors); the others are unaffected.

    Example:
        >>> grouped_eigvalsh({"a": torch.eye(2), "b": 2 * torch.eye(2)})["b"][0]
        tensor([2., 2.])
    """
    want = set(vectors)
    groups: dict = {}
    for key, M in mats.items():
        groups.setdefault((tuple(M.shape), M.dtype, M.device, key in want), []).append(key)
    out = {}
    for (_, _, _, vec), keys in groups.items():
        S = torch.stack([mats[k] for k in keys])
        ok = torch.isfinite(S.diagonal(dim1=-2, dim2=-1)).all(dim=-1)
        S = torch.where(ok[:, None, None], S, torch.zeros((), dtype=S.dtype, device=S.device))
        lam, V = torch.linalg.eigh(S) if vec else (torch.linalg.eigvalsh(S), None)
        lam = torch.where(ok[:, None], lam, torch.full_like(lam, float("nan")))
        good = ok.tolist()
        for i, k in enumerate(keys):
            out[k] = (lam[i], V[i] if V is not None and good[i] else None)
    return out


def grouped_top_eigen(
    mats: dict, warm: dict, generator: torch.Generator | None = None, iters: int = WARM_ITERS, block: int = WARM_BLOCK
) -> dict:
    """Largest eigenvalue and its unit vector of many symmetric PSD matrices, one call per (size, dtype).

    A key with a vector (n,) or starting columns (n, j) in ``warm`` (the previous record's vector, same n,
    and e.g. a column mean) gets the warm-started block Krylov of
    :func:`steepest.linalg.estimate.top_eigenpair` (a lower bound, theta <= lambda_1; accuracy there);
    a key without one (or with n <= 2 (iters + 1) block) gets the exact ``eigh`` (:func:`grouped_eigvalsh`),
    so every sequence of estimates starts from the exact vector. Non-finite matrices give (NaN, None) as in
    :func:`grouped_eigvalsh`. Returns key -> (lambda_1 (0-dim), vector or None).

    Example:
        >>> out = grouped_top_eigen({"a": torch.diag(torch.tensor([1.0, 4.0]))}, {})
        >>> float(out["a"][0])
        4.0
    """
    # exact (eigh) without a usable warm start, and for small n, where the Krylov space would span a large
    # part of R^n (n <= 2 (iters + 1) block) and a small LAPACK solve costs about as much
    small = 2 * (iters + 1) * block
    cold = {
        k: M for k, M in mats.items() if warm.get(k) is None or warm[k].shape[0] != M.shape[-1] or M.shape[-1] <= small
    }
    out = {k: (lam[-1], None if V is None else V[:, -1]) for k, (lam, V) in grouped_eigvalsh(cold, cold).items()}
    groups: dict = {}
    for key, M in mats.items():
        if key not in cold:
            groups.setdefault((M.shape[-1], M.dtype, M.device), []).append(key)
    for keys in groups.values():
        # one call per (size, dtype): zero-padding smaller matrices into one call (zero eigenvalues only) made
        # every product and orthogonalization cost the largest size's; GPT-2 zoo-like mix of seven 64 x 64 and
        # two 256 x 256 Grams: 7.2-9.9 ms padded, 4.4-6.2 ms by size, the same values (measured)
        n = max(mats[k].shape[-1] for k in keys)
        S = torch.zeros(len(keys), n, n, dtype=mats[keys[0]].dtype, device=mats[keys[0]].device)
        j = max(1 if warm[k].ndim == 1 else warm[k].shape[-1] for k in keys)
        v0 = torch.zeros(len(keys), n, j, dtype=S.dtype, device=S.device)
        for i, k in enumerate(keys):
            d = mats[k].shape[-1]
            S[i, :d, :d] = mats[k]
            w = warm[k] if warm[k].ndim == 2 else warm[k][:, None]
            v0[i, :d, : w.shape[-1]] = w
        ok = torch.isfinite(S.diagonal(dim1=-2, dim2=-1)).all(dim=-1)
        S = torch.where(ok[:, None, None], S, torch.zeros((), dtype=S.dtype, device=S.device))
        lam, V = top_eigenpair(S, v0, iters=iters, block=block, generator=generator)
        lam = torch.where(ok, lam, torch.full_like(lam, float("nan")))
        for i, (k, good) in enumerate(zip(keys, ok.tolist())):
            out[k] = (lam[i], V[i, : mats[k].shape[-1]] if good else None)
    return out


def generator(step: int, device=None) -> torch.Generator:
    """A private generator seeded by the step: reproducible sketches, the global RNG untouched."""
    return torch.Generator(device=device if device is not None else "cpu").manual_seed(step)


class WarmStarts:
    """The monitor's top singular vectors, (quantity, layer) -> vector, kept between records when ``enabled``
    (``LayerMonitor(warm_start=True)``; saved in its ``state_dict``)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = bool(enabled)
        self.vectors: dict[tuple, torch.Tensor] = {}

    def top_eigen(
        self, mats: dict, step: int, iters: int = WARM_ITERS, block: int = WARM_BLOCK, extra: dict | None = None
    ) -> dict:
        """lambda_1 of each Gram matrix in ``mats`` (:func:`grouped_top_eigen`): from the kept vector (and the
        columns in ``extra``, e.g. A's column mean) where one is kept, else exact (eigh; first record, resume).
        Not ``enabled``: exact values only, or (``extra`` given) a cold Krylov from ``extra`` (ACT_COLD_ITERS)."""
        device = next(iter(mats.values())).device if mats else None
        if not self.enabled:  # history-free
            if extra is None:
                return {k: (lam[-1], None) for k, (lam, _) in grouped_eigvalsh(mats).items()}
            warm = {k: m for k, m in extra.items() if k in mats and m.shape[0] == mats[k].shape[-1]}
            return grouped_top_eigen(mats, warm, generator(step, device), iters=ACT_COLD_ITERS, block=block)
        warm = {k: v for k, v in self.vectors.items() if k in mats and v.shape[0] == mats[k].shape[-1]}
        if extra:  # more starting directions next to the kept vector
            warm = {
                k: torch.stack([v, extra[k]], dim=-1) if extra.get(k) is not None and extra[k].shape == v.shape else v
                for k, v in warm.items()
            }
        out = grouped_top_eigen(mats, warm, generator(step, device), iters=iters, block=block)
        for k, (_, v) in out.items():
            if v is None:
                self.vectors.pop(k, None)
            else:
                self.vectors[k] = v
        return out

    def state_dict(self) -> dict:
        """{"W|layer": vector, ...} (copies)."""
        return {f"{q}|{name}": v.clone() for (q, name), v in self.vectors.items()}

    def load_state_dict(self, state: dict) -> None:
        """Replace the vectors by ``state``'s (empty, an older checkpoint: the next record solves exactly)."""
        self.vectors = {tuple(k.split("|", 1)): v.clone() for k, v in state.items() if isinstance(v, torch.Tensor)}


def unit(v: torch.Tensor) -> torch.Tensor:
    """v / ||v|| (a zero or non-finite v gives a zero vector, which a Krylov start treats as absent)."""
    n = torch.linalg.vector_norm(v)
    return torch.where(torch.isfinite(n) & (n > 0), v / n.clamp(min=torch.finfo(v.dtype).tiny), torch.zeros_like(v))


def singular_values(lam: torch.Tensor) -> torch.Tensor:
    """Descending singular values sqrt(lambda) from a Gram matrix's ascending eigenvalues (NaN stays NaN)."""
    return lam.flip(-1).clamp(min=0).sqrt()


__all__ = [
    "gram",
    "grouped_eigvalsh",
    "grouped_top_eigen",
    "singular_values",
    "activation_matrix",
    "microbatch_grads",
    "WarmStarts",
    "generator",
    "unit",
]
