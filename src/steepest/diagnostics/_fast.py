"""The ``fast`` LayerMonitor method (the default): Gram eigenvalues, every layer's matrices solved together.

Per recording step, :meth:`Fast.inspect` forms each layer's float32 Gram of A (<= ``GRAM_MAX_COLS`` columns;
||A||_F^2 for wider A), once for layers fed the same activations tensor; :meth:`Fast.solve` then solves every
G's float64 Gram (all eigenvalues: ||G||_*, ||G||_F) and every A's Gram (top eigenvalue: st(A) = tr / lambda_1)
in one batched call per (size, dtype) (:mod:`._batched_metrics`). Wider A get a block-Krylov ||A||_op. The
weight and update norms and the Spec-Sign parts are :class:`~._methods.Estimate`'s. Accuracy: :mod:`._methods`.

Example:
    >>> from steepest.diagnostics._batched_metrics import WarmStarts
    >>> Fast(WarmStarts(False)).name
    'fast'
"""

from __future__ import annotations

import math

import torch

from steepest.diagnostics._batched_metrics import (
    ACT_BLOCK,
    ACT_COLD_ITERS,
    ACT_ITERS,
    generator,
    gram,
    grouped_eigvalsh,
    singular_values,
    unit,
)
from steepest.diagnostics._methods import GRAM_MAX_COLS, Estimate, Layer, finite
from steepest.linalg.estimate import top_singular_pair


class Fast(Estimate):
    """Gram eigenvalues, every layer's matrices solved together per size (:mod:`_batched_metrics`)."""

    name = "fast"

    def inspect(self, layers: dict[str, Layer]) -> None:
        """As :meth:`Exact.inspect`, and A's float32 Gram (or ||A||_F^2 when wide), formed once for layers fed the
        same activations tensor (q, k, v or gate, up projections): their ``twin`` is the first such layer."""
        first: dict[tuple, Layer] = {}
        for L in layers.values():
            A = L.A
            key = (A.data_ptr(), tuple(A.shape), A.stride(), A.dtype, A.device, A._version) if A.numel() else None
            L.twin = first.get(key) if key is not None else None
            if L.twin is not None:  # the same numbers (a Gram is a function of A's bits), computed once
                L.gram_A, L.rec["nonfinite_activation"] = L.twin.gram_A, L.twin.rec["nonfinite_activation"]
                continue
            if key is not None:  # (the dict holds A, so its memory cannot be reused by another tensor meanwhile)
                first[key] = L
            L.rec["nonfinite_activation"] = self._inspect(L)

    @staticmethod
    def _inspect(L: Layer) -> bool:
        A = L.A
        if A.numel() and A.shape[-1] <= GRAM_MAX_COLS:
            L.gram_A = gram(A, torch.float32)  # a non-finite entry of A makes its diagonal entry inf/NaN: checked here
            return not bool(torch.isfinite(L.gram_A.diagonal()).all()) and not finite(A)  # (or the Gram overflowed)
        if A.numel() >= 2**16:  # block-Krylov st(A): ||A||_F is needed anyway
            L.gram_A = float(torch.linalg.vector_norm(A)) ** 2  # finite iff A is (or it overflowed: then scan A)
            return not math.isfinite(L.gram_A) and not finite(A)
        return bool(A.numel()) and not finite(A)

    def solve(self, layers: dict[str, Layer], step: int, spec: bool) -> None:
        """Every layer's Gram matrices, then one batched eigensolve per (size, dtype): all eigenvalues of G's
        float64 Gram (||G||_*), the top one of A's float32 Gram (st(A) = tr(M) / lambda_1(M))."""
        mats, vecs, mats_A, means = {}, [], {}, {}
        for name, L in layers.items():
            if not L.rec["nonfinite_grad"]:
                mats[("G", name)] = gram(L.G, torch.float64)
                if spec and L.A.numel() and not L.rec["nonfinite_activation"]:
                    vecs.append(("G", name))  # eigenvectors reused by the polar curvature
            if isinstance(L.gram_A, torch.Tensor) and not L.rec["nonfinite_activation"]:
                mats_A[("A", name)] = L.gram_A
                means[("A", name)] = unit(L.A.sum(dim=0))
        eig = grouped_eigvalsh(mats, vecs)
        eig.update(self.warm.top_eigen(mats_A, step, ACT_ITERS, ACT_BLOCK, means))
        for name, L in layers.items():
            L.eig_G = eig.get(("G", name))
            gram_A = L.gram_A
            if ("A", name) in eig and isinstance(gram_A, torch.Tensor):  # the trace exact in float64
                L.top_A = (float(eig[("A", name)][0]), float(gram_A.diagonal().double().sum()))

    def grad_norms(self, L: Layer, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if L.eig_G is None:  # solve() sets it: the monitor asks only layers with a finite gradient
            raise RuntimeError(f"LayerMonitor: no gradient eigenvalues for {L.rec.get('layer')} (solve() did not run)")
        sv = singular_values(L.eig_G[0])  # float64 Gram eigenvalues: exact up to ~1e-8 (metrics.gram_singular_values)
        return sv.sum(), sv.square().sum().sqrt()

    def stable_rank(self, L: Layer, step: int) -> float:
        A = L.A
        if A.shape[-1] <= GRAM_MAX_COLS:
            if L.top_A is None:  # solve() sets it for every finite A this narrow
                raise RuntimeError(
                    f"LayerMonitor: no activation eigenpair for {L.rec.get('layer')} (solve() did not run)"
                )
            lam1, tr = L.top_A
            return tr / lam1 if lam1 > 0 else 0.0
        fro2 = L.gram_A if isinstance(L.gram_A, float) else float(A.double().square().sum())
        # block-Krylov ||A||_op started from A's column mean (activations' dominant direction) and Gaussian
        # columns; warm: also from the last record's vector, with fewer steps
        name = L.rec["layer"]
        if L.twin is not None and not self.warm.enabled:  # same A, same seed: the twin's value, bit for bit
            return L.twin.rec["st_A"]
        v0 = self.warm.vectors.get(("A", name)) if self.warm.enabled else None
        warm = v0 if v0 is not None and v0.shape[-1] == A.shape[-1] else None
        mean = unit(A.sum(dim=0))
        it = ACT_COLD_ITERS if warm is None else ACT_ITERS
        s, v = top_singular_pair(
            A, mean if warm is None else torch.stack([warm, mean], dim=-1), it, ACT_BLOCK, generator(step, A.device)
        )
        op = float(s)
        if math.isfinite(op) and self.warm.enabled:
            self.warm.vectors[("A", name)] = v
        return fro2 / (op * op) if op > 0 else 0.0


__all__ = ["Fast"]
