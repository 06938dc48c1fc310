"""The numbers of a LayerMonitor record, one object per ``method`` (``probe.METHODS``): exact, estimate, fast.

``exact`` and ``estimate`` are here, ``fast`` in :mod:`._fast`. A recording step runs, per method object:
:meth:`Exact.inspect` (is each A finite; ``fast`` also forms A's Gram), :meth:`Exact.solve` (batched work
over every layer: ``fast`` solves all Gram matrices per size at once), :meth:`Exact.gradient_fields` (nr(G),
st(A), the DD winner and the Spec-Sign index of one layer), and after the optimizer step
:meth:`Exact.weight_fields` (||W||, ||dW||). What differs between methods:

=========  ==============================  ===========================  ===========================
method     ||G||_*, ||G||_F                st(A) = ||A||_F^2/||A||_op^2  ||W||_op, ||dW||_op
=========  ==============================  ===========================  ===========================
exact      SVD                             SVD                          SVD
estimate   deflated Lanczos sketch         block-Krylov sketch          float32 Gram, top eigenvalue
fast       float64 Gram, every eigenvalue  float32 Gram (<= 256 cols)   float32 Gram, top eigenvalue
           (batched)                       or Krylov on A (wider)       (warm-started: ``warm_start``)
=========  ==============================  ===========================  ===========================

Accuracy (benchmarks/HISTORY.md, "LayerMonitor overhead, warm starts"): ``fast``'s nr(G), ||G||_* are exact to
~1e-8 relative (:func:`~steepest.diagnostics.metrics.gram_singular_values`), ||W||_op, ||dW||_op to ~1e-6
(Weyl on the float32 Gram; warm-started: lower bounds within 1.4e-4 and 6e-7 on charlm); st(A) uses ||A||_F
exactly and ||A||_op by a block Krylov started from A's column mean (the activations' dominant direction)
and Gaussian columns, a lower bound, so st(A) is never below the exact value (within 1e-4 on charlm).

The Spec-Sign index needs no extra backward pass: a linear layer's gradient is a sum over samples,
G = sum_i dY_i^T A_i, so the captured A and dY give exact per-chunk gradients: the samples are split into K
equal, disjoint chunks (a remainder is dropped), G_k = K sum_{i in chunk k} dY_i^T A_i, and c_1, c_* come from
:func:`~steepest.diagnostics.criteria.noise_scales`; the curvature is the K-FAC input-factor proxy
H_g = ||A D_g^T||_F^2 / N (:func:`~steepest.diagnostics.criteria.kfac_curvature`, exact for a squared loss on
the layer) on <= ``CURVATURE_ROWS`` strided rows of A. It uses float64 microbatch gradients, SVD noise
scales and an SVD polar factor with ``exact``; float32 products, Gram noise scales and the polar curvature
from G's Gram (its eigenvectors, kept by ``fast``'s batched solve) otherwise. The formulas live in
:mod:`~steepest.diagnostics.criteria` and :mod:`~steepest.diagnostics.metrics`.

Example:
    >>> Estimate(WarmStarts(False)).name
    'estimate'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from steepest.diagnostics import criteria as C
from steepest.diagnostics._batched_metrics import WarmStarts, generator, gram, microbatch_grads
from steepest.diagnostics.metrics import nuclear_norm, stable_rank
from steepest.geometry import dualize, matrix_norm
from steepest.linalg.estimate import spectral_norm_estimate

#: st(A) is exact (Gram eigenvalues) up to this many columns; wider A use the block-Krylov ||A||_op.
GRAM_MAX_COLS = 256
#: Rows (evenly strided) of A used for the K-FAC curvatures of the Spec-Sign index.
CURVATURE_ROWS = 512


def finite(X: torch.Tensor) -> bool:
    """All entries finite, in one reduction pass (max and min propagate NaN; +-inf shows in them)."""
    if X.numel() == 0:
        return True
    lo, hi = torch.aminmax(X)
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


@dataclass
class Layer:
    """One monitored layer at a recording step: its record so far and the inputs of its metrics."""

    rec: dict  # step, layer, kind, shape, rows, nonfinite_grad set; the rest filled by the method
    G: torch.Tensor  # the weight gradient as a matrix, float32
    A: torch.Tensor  # incoming activations (rows, in), float32
    calls: list  # captured (A, dY) per forward call: the microbatch gradients
    gram_A: torch.Tensor | float | None = None  # fast: A's float32 Gram (<= GRAM_MAX_COLS columns) or ||A||_F^2
    eig_G: tuple | None = None  # fast: (eigenvalues, eigenvectors or None) of G's float64 Gram
    top_A: tuple | None = None  # fast: (lambda_1, trace) of A's float32 Gram
    twin: Layer | None = None  # fast: an earlier layer fed the same activations (q/k/v)


class Exact:
    """Every norm by an SVD: the slow reference."""

    name = "exact"
    spec_dtype, noise_method = torch.float64, "exact"

    def __init__(self, warm: WarmStarts) -> None:
        self.warm = warm

    def inspect(self, layers: dict[str, Layer]) -> None:
        """``nonfinite_activation`` of every layer: whether its A has a non-finite entry."""
        for L in layers.values():
            L.rec["nonfinite_activation"] = bool(L.A.numel()) and not finite(L.A)

    def solve(self, layers: dict[str, Layer], step: int, spec: bool) -> None:
        """Work shared by every layer before :meth:`gradient_fields` (none here)."""

    def grad_norms(self, L: Layer, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(||G||_*, ||G||_F)."""
        return nuclear_norm(L.G, self.name, generator(step, L.G.device)), matrix_norm(L.G, "frobenius")

    def stable_rank(self, L: Layer, step: int) -> float:
        return float(stable_rank(L.A))

    def curvatures(self, L: Layer, S: torch.Tensor) -> dict:
        """K-FAC curvatures of the sign and the polar step on the rows S of A."""
        return {"linf": C.kfac_curvature(torch.sign(L.G), S), "spectral": C.kfac_curvature(dualize(L.G, "spectral"), S)}

    def operator_norms(self, mats: dict, step: int) -> dict:
        """name -> [||W||_op, ||dW||_op] (None where not finite) from name -> (W, dW, W finite, dW finite)."""
        return {
            n: [float(matrix_norm(X, "spectral")) if f else None for X, f in ((W, ok_w), (dW, ok_d))]
            for n, (W, dW, ok_w, ok_d) in mats.items()
        }

    def gradient_fields(self, L: Layer, step: int, microbatches: int) -> None:
        """nr(G), the gradient norms, st(A), the DD winner and (``microbatches`` > 0) the Spec-Sign index."""
        rec, G, A = L.rec, L.G, L.A
        bad_a, bad_g = rec["nonfinite_activation"], rec["nonfinite_grad"]
        nuc = None
        if not bad_g:
            nuc_t, fro_t = self.grad_norms(L, step)
            nuc, fro = float(nuc_t), float(fro_t)
            rec.update(
                nr_G=nuc * nuc / (fro * fro) if fro > 0 else 0.0,
                grad_fro=fro,
                grad_nuclear=nuc,
                grad_l1=float(G.abs().sum()),
            )
        if A.numel() and not bad_a:
            rec["st_A"] = self.stable_rank(L, step)
            if rec["nr_G"] is not None:
                nr, st = rec["nr_G"], rec["st_A"]
                rec["nr_st_ratio"] = nr / st if st > 0 else None
                rec["dd_winner"] = C.dd_winner(nr, st)
        if not microbatches or bad_a or bad_g or not A.numel():
            return
        mb = microbatch_grads(L.calls, microbatches, dtype=self.spec_dtype)
        if mb is None or not finite(mb[0]):
            return
        grads, b = mb
        c = C.noise_scales(grads, b, ("linf", "spectral"), method=self.noise_method)
        H = self.curvatures(L, A if A.shape[0] <= CURVATURE_ROWS else A[:: math.ceil(A.shape[0] / CURVATURE_ROWS)])
        r = C.spec_sign_index(G, c["spectral"], c["linf"], b * microbatches, H["linf"], H["spectral"], nuclear=nuc)
        rec.update(
            c_1=c["linf"],
            c_star=c["spectral"],
            H_sign=H["linf"],
            H_spec=H["spectral"],
            spec_sign_index=r.index,
            spec_sign_winner=r.winner,
            spec_sign_regime=r.regime,
            microbatch_size=b,
        )

    def weight_fields(self, pending: dict[str, dict], mats: dict, step: int) -> None:
        """||W||_F, ||W||_op, ||dW||_F, ||dW||_op, max |dW| into each pending record (name -> (W, dW, ok, ok))."""
        ops = self.operator_norms(mats, step)
        for name, rec in pending.items():
            Wm, dW, ok_w, ok_d = mats[name]
            if ok_w:
                rec.update(weight_fro=float(matrix_norm(Wm, "frobenius")), weight_op=ops[name][0])
            if ok_d:
                rec.update(
                    update_fro=float(matrix_norm(dW, "frobenius")),
                    update_op=ops[name][1],
                    update_max=float(dW.abs().max()),
                )


class Estimate(Exact):
    """Sketches for ||G||_* and ||A||_op (large layers); operator norms of W, dW from their float32 Grams."""

    name = "estimate"
    spec_dtype, noise_method = torch.float32, "gram"

    def stable_rank(self, L: Layer, step: int) -> float:
        A = L.A
        fro2 = float(A.double().square().sum()) if A.numel() < 2**16 else float(torch.linalg.vector_norm(A)) ** 2
        op = float(spectral_norm_estimate(A, generator=generator(step, A.device)))
        return fro2 / (op * op) if op > 0 else 0.0

    def curvatures(self, L: Layer, S: torch.Tensor) -> dict:
        # float32 products (sums of squares: ~1e-6 relative); the polar curvature from G's Gram eigenvectors when
        # the batched solve kept them, else from its own eigensolve, without forming the polar factor
        vec = L.eig_G if L.eig_G is not None and L.eig_G[1] is not None else None
        return {
            "linf": C.kfac_curvature(torch.sign(L.G), S, torch.float32),
            "spectral": C.kfac_polar_curvature(L.G, S, torch.float32, eig=vec),
        }

    def operator_norms(self, mats: dict, step: int) -> dict:
        # every layer's float32 Gram first, then batched eigensolves: top eigenvalue exact (~eps_32, Weyl) on
        # a record without a kept vector, else the warm-started Krylov (warm_start)
        grams = {
            (q, n): gram(X, torch.float32)
            for n, (W, dW, ok_w, ok_d) in mats.items()
            for q, X, f in (("W", W, ok_w), ("dW", dW, ok_d))
            if f
        }
        eig = self.warm.top_eigen(grams, step)
        return {
            n: [math.sqrt(max(float(eig[(q, n)][0]), 0.0)) if (q, n) in eig else None for q in ("W", "dW")]
            for n in mats
        }


__all__ = ["Exact", "Estimate", "Layer", "finite", "GRAM_MAX_COLS", "CURVATURE_ROWS"]
