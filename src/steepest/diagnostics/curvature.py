"""Curvatures H_g = <D_g, H D_g> of a layer along a step direction D_g (seed 002's Spec-Sign index needs
H_sign and H_spec): exact layer-restricted Hessian-vector products (:func:`directional_curvatures`,
:func:`layer_curvatures`) and the K-FAC input-factor proxy (:func:`kfac_curvature`, and
:func:`kfac_polar_curvature` for the polar direction without forming it). Re-exported by
:mod:`steepest.diagnostics.criteria`, which combines them into the index.

Example:
    >>> kfac_curvature(torch.eye(2), torch.eye(2))   # C = A^T A / N = I/2: <I, I/2> = 1
    1.0
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from steepest.geometry import dualize, matrix_view


def directional_curvatures(
    loss_fn: Callable[[], torch.Tensor], param: torch.Tensor, directions: Sequence[torch.Tensor]
) -> list[float]:
    """<D, H D> for each D, H the Hessian of ``loss_fn()`` restricted to ``param`` (double backward).

    ``loss_fn`` recomputes the loss with autograd enabled; other parameters are held fixed (the
    layer's diagonal Hessian block). ``param.grad`` is not touched. Pearlmutter (1994) HVPs.

    Example:
        >>> W = torch.zeros(2, 2, requires_grad=True)
        >>> directional_curvatures(lambda: 0.5 * (3 * W).square().sum(), W, [torch.ones(2, 2)])
        [36.0]
    """
    with torch.enable_grad():
        (g,) = torch.autograd.grad(loss_fn(), param, create_graph=True)
        out = []
        for i, D in enumerate(directions):
            D = D.reshape(param.shape).to(g.dtype)
            (hd,) = torch.autograd.grad(g, param, grad_outputs=D, retain_graph=i < len(directions) - 1)
            out.append(float((D * hd).sum()))
    return out


def layer_curvatures(
    loss_fn: Callable[[], torch.Tensor],
    param: torch.Tensor,
    G_hat: torch.Tensor,
    geometries: Sequence[str] = ("linf", "spectral"),
) -> dict[str, float]:
    """H_g = <D_g, H D_g> with D_g = dualize(G_hat, g), from exact layer-restricted HVPs.

    With the default geometries this returns seed 002's ``{"linf": H_sign, "spectral": H_spec}``.
    """
    X = matrix_view(G_hat.detach())
    dirs = [dualize(X, g).reshape(param.shape) for g in geometries]
    return dict(zip(geometries, directional_curvatures(loss_fn, param, dirs)))


def kfac_curvature(D: torch.Tensor, A: torch.Tensor, dtype: torch.dtype = torch.float64) -> float:
    """<D, D C>, C = A^T A / N: the curvature of a linear layer under a unit-curvature output loss.

    Exact for f(W) = 1/(2N) ||A W^T - Y||_F^2 (seed 000's quadratic with the data A); for other
    losses it is K-FAC's input factor with the output factor replaced by the identity (Martens &
    Grosse 2015), a proxy whose unknown output scale cancels in ratios between geometries.
    Equals ||A D^T||_F^2 / N. ``D`` is (out, in) and ``A`` is (N, in). ``dtype``: the product's
    precision (float32 halves the cost; a sum of squares, so only ~1e-6 relative round-off).

    Example:
        >>> kfac_curvature(torch.eye(2), torch.eye(2))   # C = I/2: <I, I/2> = 1
        1.0
    """
    N = A.shape[0]
    if N == 0:
        return 0.0
    D = matrix_view(D).to(dtype)
    A = A.to(dtype)
    m, n = D.shape
    if N * m <= n * n + m * n:  # ||A D^T||_F^2 directly: an N x m product
        return float((A @ D.mT).square().sum(dtype=torch.float64) / N)
    # tr(D (A^T A) D^T) through the n x n Gram: memory stays linear in the sizes when N m is huge
    # (e.g. a 100000 x 1 weight, whose gradient rows stand in for A)
    return float(((D @ (A.mT @ A)) * D).sum(dtype=torch.float64) / N)


def kfac_polar_curvature(
    G: torch.Tensor, A: torch.Tensor, dtype: torch.dtype = torch.float64, eig: tuple | None = None
) -> float:
    """H_spec = kfac_curvature(polar(G), A) = ||A V||_F^2 / N without forming polar(G).

    With G = U S V^T (compact: only s_i > max(m, n) eps_32 s_1 kept, as :func:`steepest.linalg.polar_factor.polar_svd`
    does for ``dualize``'s default float32) the polar factor P = U V^T has P^T P = V V^T, so ||A P^T||_F^2 = tr(A V V^T A^T) = ||A V||_F^2.
    V comes from the float64 eigendecomposition of the small Gram matrix: G^T G = V S^2 V^T when
    in <= out, else G G^T = U S^2 U^T and V = G^T U S^-1. When G has full column rank (in <= out)
    this is ||A||_F^2 / N. Costs one (N in r) product and a min(m, n) eigendecomposition instead of an
    SVD plus an (N in out) product; ``dtype`` is the precision of that product (V is always computed
    in float64). Agrees with ``kfac_curvature(dualize(G, "spectral"), A)`` to ~1e-6
    (tests/test_diagnostics.py). ``eig``: optional (eigenvalues ascending, eigenvectors) of that float64
    Gram matrix (G^T G if in <= out else G G^T), when the caller already has them (LayerMonitor).

    Example:
        >>> round(kfac_polar_curvature(torch.diag(torch.tensor([2.0, 1.0])), torch.eye(2)), 6)   # P = I: <I, I/2>
        1.0
    """
    N = A.shape[0]
    X = matrix_view(G).double()
    if N == 0 or not bool(X.abs().amax() > 0):
        return 0.0
    m, n = X.shape[-2:]
    lam, W = eig if eig is not None else torch.linalg.eigh(X.mT @ X if n <= m else X @ X.mT)
    keep = lam > (max(m, n) * torch.finfo(torch.float32).eps * lam[-1].sqrt()) ** 2  # dualize's float32 cut
    if n <= m:
        V = W[:, keep]
    else:
        V = (X.mT @ W[:, keep]) / lam[keep].sqrt()
    return float((A.to(dtype) @ V.to(dtype)).square().sum(dtype=torch.float64) / N)


__all__ = ["directional_curvatures", "layer_curvatures", "kfac_curvature", "kfac_polar_curvature"]
