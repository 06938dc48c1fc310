"""Cheap estimates of the spectral and nuclear norms of a (batch of) matrices.

Exact norms need an SVD, O(m n min(m, n)) with a large constant. These estimates need only a few
products with thin random blocks, so they fit the per-layer diagnostics of large models:

* :func:`spectral_norm_estimate`: ||A||_op = s_1(A) by block Krylov (power) iteration on A A^T with
  a Rayleigh-Ritz step (Musco & Musco 2015); never above the exact value.
* :func:`nuclear_norm_estimate`: ||G||_* = tr((G^T G)^{1/2}) = sum_i s_i(G) by deflation plus
  stochastic Lanczos quadrature (Hutch++-style, Meyer et al. 2021; Ubaru, Chen & Saad 2017):

      Q = orth((G G^T)^q G Omega)          (randomized range finder, ``rank`` + ``oversample`` columns)
      ||G||_* ~= ||Q^T G||_*  +  tr((R^T R)^{1/2}),   R = (I - Q Q^T) G

  The head is exact on the sketch (SVD of the small matrix Q^T G); the tail trace is estimated with
  ``probes`` Rademacher vectors and ``lanczos_steps`` Lanczos steps each (default 12: with 6 the
  quadrature of sqrt on a 1/i tail spanning 3 decades was 10.6% off at 2048 x 2048, with 12 it is 4.1%). When Q spans G's top
  singular vectors the split is exact; the head catches the spikes of a gradient-like spectrum and
  the tail is flat, where Hutchinson's relative variance 2 / (probes * nr(R)) is small.

Both take a ``generator`` (a ``torch.Generator`` on the matrix's device) for reproducible sketches and
never touch the global random state. Both reduce over the last two dims: shape ``(..., m, n)`` gives
``(...)``. Exact references are :func:`steepest.matrix_norm` / :func:`steepest.dual_norm`.

Example:
    >>> G = torch.randn(512, 256)
    >>> g = torch.Generator().manual_seed(0)
    >>> est = nuclear_norm_estimate(G, generator=g)      # within a few % of dual_norm(G, "spectral")
"""

from __future__ import annotations

import torch

from steepest.linalg.polar_factor import _check_matrix


def _check_int(name: str, value, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")


def _work(A: torch.Tensor) -> torch.Tensor:
    """Tall float copy (m >= n): the Gram side A^T A is the small one."""
    X = A if A.dtype in (torch.float32, torch.float64) else A.float()
    return X.mT if X.shape[-2] < X.shape[-1] else X


def _mul(X: torch.Tensor, Q: torch.Tensor) -> torch.Tensor:
    """X @ Q for a thin Q, computed as (Q^T X^T)^T: same numbers, but on CPU MKL's single-thread
    kernels are 4-7x faster in this orientation for a 2048 x 512 X and 4-8 columns (measured)."""
    return (Q.mT @ X.mT).mT


def _tmul(X: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
    """X^T @ P for a thin P, computed as (P^T X)^T (see :func:`_mul`)."""
    return (P.mT @ X).mT


def _gaussian(shape, X: torch.Tensor, generator) -> torch.Tensor:
    return torch.randn(*shape, dtype=X.dtype, device=X.device, generator=generator)


def _range_finder(X: torch.Tensor, cols: int, power_iters: int, generator) -> torch.Tensor:
    """Orthonormal Q (..., m, cols) approximating the top left singular subspace of tall X (..., m, n)."""
    n = X.shape[-1]
    Y = _mul(X, _gaussian((*X.shape[:-2], n, cols), X, generator))
    Q = torch.linalg.qr(Y).Q
    for _ in range(power_iters):  # re-orthonormalise between products (HMT Algorithm 4.4)
        Q = torch.linalg.qr(_mul(X, torch.linalg.qr(_tmul(X, Q)).Q)).Q
    return Q


def spectral_norm_estimate(
    A: torch.Tensor,
    iters: int = 4,
    block: int = 4,
    generator: torch.Generator | None = None,
    product_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Estimate ||A||_op = s_1(A) by block Krylov iteration with a Rayleigh-Ritz step.

    K = [A W, (A A^T) A W, ..., (A A^T)^iters A W] for an n x ``block`` Gaussian W, Q = orth(K);
    returns s_1(Q^T A) <= s_1(A). Keeping every power (not only the last, as plain power iteration
    does) makes the error decay like exp(-4 iters sqrt(gap)) instead of (s_2/s_1)^(2 iters), so even
    with no gap at the top (a Marchenko-Pastur edge) a block of 4 and 4 iterations land within a few
    percent at n = 2048 (benchmarks/estimate.py). Cost: 2 iters + 2 products with an n x block
    matrix. Zero matrices give 0. Source: Musco & Musco, "Randomized block Krylov methods for
    stronger and faster approximate SVD" (NeurIPS 2015); Halko, Martinsson & Tropp (2011).

    ``product_dtype``: run the 2 iters + 2 products with A in this dtype (A cast once; each product's
    result back in A's float dtype, where the QRs and the final SVD run). ``torch.bfloat16`` on hardware
    with native bf16 matmul halves their memory traffic (the products are memory-bound: thin blocks);
    the estimate is then that of bf16(A), whose entries are A's to 2^-9 relative, and each product is
    rounded to bf16: measured within 3.1e-4 of the float32 estimate on layer activations, so no longer
    a strict lower bound of s_1(A) (tests/test_estimate.py). ``None``: A's own float dtype.

    Example:
        >>> s1 = spectral_norm_estimate(torch.diag(torch.tensor([3.0, 1.0])), generator=torch.Generator().manual_seed(0))
        >>> round(float(s1), 4)  # the sketch is random: seeded, and exact here only to float32 rounding
        3.0
    """
    _check_matrix(A, "A")
    _check_int("iters", iters, 0)
    _check_int("block", block, 1)
    if product_dtype is not None and (
        not isinstance(product_dtype, torch.dtype) or not product_dtype.is_floating_point
    ):
        raise ValueError(
            f"product_dtype must be a floating torch.dtype (e.g. torch.bfloat16) or None, got {product_dtype!r}"
        )
    X = _work(A)
    Xp = X if product_dtype is None else X.to(product_dtype)  # (None: the same tensor, the same bits as before)

    def mul(Q: torch.Tensor) -> torch.Tensor:
        return _mul(Xp, Q.to(Xp.dtype)).to(X.dtype)

    def tmul(P: torch.Tensor) -> torch.Tensor:
        return _tmul(Xp, P.to(Xp.dtype)).to(X.dtype)

    cols = min(block, X.shape[-1])
    Qi = torch.linalg.qr(mul(_gaussian((*X.shape[:-2], X.shape[-1], cols), X, generator))).Q
    blocks = [Qi]
    for _ in range(iters):  # each block re-orthonormalised so high powers do not lose precision
        Qi = torch.linalg.qr(mul(tmul(Qi))).Q
        blocks.append(Qi)
    K = torch.cat(blocks, dim=-1)
    if K.shape[-1] > X.shape[-2]:
        K = K[..., : X.shape[-2]]
    Q = torch.linalg.qr(K).Q
    s = torch.linalg.svdvals(tmul(Q).mT)[..., 0]
    return s.to(A.dtype)


def _orth_block(W: torch.Tensor, Q: torch.Tensor | None) -> torch.Tensor:
    """W (..., n, b) orthonormalised against the columns of Q and within itself, by classical Gram-Schmidt
    done twice (CGS2: orthogonal to working precision; Giraud et al., Numer. Math. 2005), in batched
    products (no per-matrix LAPACK call: ~10x cheaper than a batched QR for 24 matrices of 128 x 2).
    Columns that fall inside the span so far (Krylov space exhausted) are set to 0: they add a zero row
    and column to the Rayleigh quotient, which changes no positive Ritz value."""
    ref = torch.linalg.vector_norm(W, dim=-2, keepdim=True)
    if Q is not None:
        for _ in range(2):
            W = W - Q @ (Q.mT @ W)
    tiny = torch.finfo(W.dtype).eps ** 0.5
    cols: list[torch.Tensor] = []
    for j in range(W.shape[-1]):
        w = W[..., j : j + 1]
        for _ in range(2 if cols else 0):
            for c in cols:
                w = w - c * (c * w).sum(dim=-2, keepdim=True)
        nrm = torch.linalg.vector_norm(w, dim=-2, keepdim=True)
        ok = nrm > tiny * ref[..., j : j + 1]
        cols.append(torch.where(ok, w / torch.where(ok, nrm, torch.ones_like(nrm)), torch.zeros_like(w)))
    return torch.cat(cols, dim=-1)


def _krylov_top(apply, start: torch.Tensor, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top Ritz pair of a symmetric PSD operator ``apply`` (Q -> M Q on (..., n, b) blocks) on the block
    Krylov space [S, M S, ..., M^iters S], S = ``start``, with a CGS2-orthonormal basis Q in S's dtype.
    ``iters`` + 1 applications of M (each block's product is reused in the Rayleigh quotient
    T = Q^T (M Q), formed and solved in float64: it is small)."""
    n = start.shape[-2]
    P = _orth_block(start, None)
    Qs, MQs = [P], [apply(P)]
    for _ in range(iters):
        k = sum(q.shape[-1] for q in Qs)
        if k >= n:
            break
        P = _orth_block(MQs[-1][..., : n - k], torch.cat(Qs, dim=-1) if len(Qs) > 1 else Qs[0])
        Qs.append(P)
        MQs.append(apply(P))
    Q, MQ = (torch.cat(Qs, dim=-1), torch.cat(MQs, dim=-1)) if len(Qs) > 1 else (Qs[0], MQs[0])
    T = Q.mT.double() @ MQ.double()
    theta, Y = torch.linalg.eigh((T + T.mT) / 2)
    v = (Q.double() @ Y[..., -1:]).squeeze(-1).to(start.dtype)
    return theta[..., -1].clamp(min=0), v


def _krylov_top_rows(X: torch.Tensor, start: torch.Tensor, iters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_krylov_top` for M = X^T X without forming M: Y_i = X P_i is kept, so Krylov block i + 1 is
    orth(X^T Y_i) and the Rayleigh quotient is T = Y^T Y (float64): 2 ``iters`` + 1 passes over X.
    Products as P^T X^T and Y^T X with contiguous left factors (single-thread MKL: 0.16 ms each for a
    2048 x 512 X and 2 columns, against 0.34-0.60 ms in the other orientations; measured)."""
    n = start.shape[-2]
    P = _orth_block(start, None)
    Qs, Ys = [P], [P.mT.contiguous() @ X.mT]
    for _ in range(iters):
        k = sum(q.shape[-1] for q in Qs)
        if k >= n:
            break
        Z = (Ys[-1] @ X).mT  # X^T X P
        P = _orth_block(Z[..., : n - k], torch.cat(Qs, dim=-1) if len(Qs) > 1 else Qs[0])
        Qs.append(P)
        Ys.append(P.mT.contiguous() @ X.mT)
    Q, Y = (torch.cat(Qs, dim=-1), torch.cat(Ys, dim=-2)) if len(Qs) > 1 else (Qs[0], Ys[0])
    Yd = Y.double()
    theta, V = torch.linalg.eigh(Yd @ Yd.mT)
    v = (Q.double() @ V[..., -1:]).squeeze(-1).to(start.dtype)
    return theta[..., -1].clamp(min=0), v


def _start_block(shape, X: torch.Tensor, v0, generator) -> torch.Tensor:
    """(..., n, block) Gaussian columns, the first j replaced by the warm start ``v0``: (..., n) (j = 1)
    or (..., n, j) (j <= block starting directions, e.g. the last record's vector and a column mean)."""
    S = _gaussian(shape, X, generator)
    if v0 is not None:
        V = v0.unsqueeze(-1) if v0.ndim == len(shape) - 1 else v0
        if tuple(V.shape[:-1]) != tuple(shape[:-1]) or V.shape[-1] > shape[-1]:
            raise ValueError(
                f"v0 must have shape {tuple(shape[:-1])} (batch..., n) or (batch..., n, j <= "
                f"block={shape[-1]}), got {tuple(v0.shape)}"
            )
        S[..., : V.shape[-1]] = V.to(S.dtype)
    return S


def top_eigenpair(
    M: torch.Tensor,
    v0: torch.Tensor | None = None,
    iters: int = 3,
    block: int = 2,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest eigenvalue lambda_1 and a unit eigenvector of symmetric PSD M (..., n, n), warm-started.

    Block Krylov on [S, M S, ..., M^iters S] with S = [v0, ``block`` - 1 Gaussian columns] (all
    Gaussian without ``v0``), then Rayleigh-Ritz: theta_1 = max_{x in K, |x| = 1} x^T M x, so
    **theta_1 <= lambda_1** always (up to rounding, ~eps ||M||), and (Saad, Numerical Methods for Large
    Eigenvalue Problems, Thm 6.4, for the v0 column alone)

        (lambda_1 - theta_1) / (lambda_1 - lambda_n) <= (tan phi_0 / T_iters(1 + 2 gamma))^2,
        gamma = (lambda_1 - lambda_2) / (lambda_2 - lambda_n),

    phi_0 the angle between v0 and the top eigenvector, T_k the Chebyshev polynomial. A warm start
    (last record's vector of a slowly changing matrix: tan phi_0 small) needs few steps; near-degenerate
    top eigenvalues (gamma ~ 0) slow the vector, not the value: theta_1 >= lambda_2 - ... once v0 lies
    in the top pair's span, so the relative value error stays <= (lambda_1 - lambda_2) / lambda_1.
    The Gaussian columns catch a new top direction that v0 misses. Cost: ``iters`` + 1 products of M
    with n x ``block`` blocks, QRs and one small eigh. Returns (theta_1, v) with v the Ritz vector, the
    warm start for the next call. Source: Golub & Van Loan, Matrix Computations, 10.3 (block Lanczos).

    Example:
        >>> lam, v = top_eigenpair(torch.diag(torch.tensor([1.0, 3.0, 2.0])), generator=torch.Generator().manual_seed(0))
        >>> round(float(lam), 4)
        3.0
    """
    _check_matrix(M, "M")
    if M.shape[-1] != M.shape[-2]:
        raise ValueError(f"M must be square (..., n, n), got shape {tuple(M.shape)}")
    _check_int("iters", iters, 0)
    _check_int("block", block, 1)
    X = M if M.dtype in (torch.float32, torch.float64) else M.float()
    n = X.shape[-1]
    S = _start_block((*X.shape[:-2], n, min(block, n)), X, v0, generator)
    # M Q = (Q^T M)^T (M symmetric): MKL's batched kernels are ~4x faster in this orientation (measured)
    lam, v = _krylov_top(lambda Q: (Q.mT @ X).mT, S, iters)
    return lam.to(X.dtype), v


def top_singular_pair(
    A: torch.Tensor,
    v0: torch.Tensor | None = None,
    iters: int = 2,
    block: int = 2,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """s_1(A) and its right singular vector (..., n) for A (..., m, n), warm-started, without forming A^T A.

    :func:`top_eigenpair` on M = A^T A applied as A^T (A Q) (two thin products per step); s_1 =
    sqrt(theta_1) <= s_1(A), with the same bound. ``v0``: the previous call's vector (n = A's column
    count, so it stays meaningful when A's rows change, e.g. a new batch of activations).

    Example:
        >>> s, v = top_singular_pair(torch.diag(torch.tensor([3.0, 1.0])), generator=torch.Generator().manual_seed(0))
        >>> round(float(s), 4)
        3.0
    """
    _check_matrix(A, "A")
    _check_int("iters", iters, 0)
    _check_int("block", block, 1)
    X = A if A.dtype in (torch.float32, torch.float64) else A.float()
    n = X.shape[-1]
    S = _start_block((*X.shape[:-2], n, min(block, n)), X, v0, generator)
    lam, v = _krylov_top_rows(X, S, iters)
    return lam.sqrt().to(X.dtype), v


def _slq_sqrt_trace(
    X: torch.Tensor, Q: torch.Tensor, H: torch.Tensor, probes: int, steps: int, generator
) -> torch.Tensor:
    """tr((R^T R)^{1/2}), R = X - Q H (never formed), by stochastic Lanczos quadrature.

    Rademacher probes, full reorthogonalization. For each probe z (||z||^2 = n): Lanczos on
    M = R^T R from z/||z|| gives T = tridiag(alpha, beta); z^T M^{1/2} z ~= n * sum_j tau_j^2
    sqrt(theta_j) with T = V diag(theta) V^T, tau = V[0, :].
    """
    n = X.shape[-1]
    k = min(steps, n)
    batch = X.shape[:-2]
    z = torch.randint(0, 2, (*batch, n, probes), generator=generator, device=X.device).to(X.dtype) * 2 - 1
    V = torch.zeros(*batch, k, n, probes, dtype=X.dtype, device=X.device)
    alpha = torch.zeros(*batch, k, probes, dtype=X.dtype, device=X.device)
    beta = torch.zeros(*batch, k, probes, dtype=X.dtype, device=X.device)
    v = z / n**0.5
    # ||R||_F^2 = ||X||_F^2 - ||H||_F^2 (Q orthonormal), the scale of M for the breakdown test
    scale = (torch.linalg.matrix_norm(X, "fro") ** 2 - torch.linalg.matrix_norm(H, "fro") ** 2).clamp(
        min=torch.finfo(X.dtype).tiny
    )
    tiny = (scale * (n * torch.finfo(X.dtype).eps)).unsqueeze(-1)  # breakdown threshold, per matrix
    for j in range(k):
        V[..., j, :, :] = v
        Rv = _mul(X, v) - Q @ (H @ v)
        w = _tmul(X, Rv) - H.mT @ (Q.mT @ Rv)
        a = (v * w).sum(dim=-2)
        alpha[..., j, :] = a
        # full reorthogonalization against every previous Lanczos vector (k is small)
        coef = torch.einsum("...jnp,...np->...jp", V[..., : j + 1, :, :], w)
        w = w - torch.einsum("...jnp,...jp->...np", V[..., : j + 1, :, :], coef)
        b = torch.linalg.vector_norm(w, dim=-2)
        ok = b > tiny  # breakdown: the Krylov space is exhausted, later vectors stay zero
        beta[..., j, :] = torch.where(ok, b, torch.zeros_like(b))
        v = torch.where(ok.unsqueeze(-2), w / b.clamp(min=torch.finfo(X.dtype).tiny).unsqueeze(-2), torch.zeros_like(w))
    # T per probe: (..., probes, k, k)
    a = alpha.movedim(-1, -2)
    off = beta.movedim(-1, -2)[..., :-1]
    T = torch.diag_embed(a) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    theta, U = torch.linalg.eigh(T)
    quad = (U[..., 0, :] ** 2 * theta.clamp(min=0).sqrt()).sum(dim=-1)  # (..., probes)
    return n * quad.mean(dim=-1)


def nuclear_norm_estimate(
    G: torch.Tensor,
    rank: int = 16,
    oversample: int = 8,
    power_iters: int = 1,
    probes: int = 4,
    lanczos_steps: int = 12,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Estimate ||G||_* = sum_i s_i(G) = tr((G^T G)^{1/2}) by deflation + stochastic Lanczos quadrature.

    ||G||_* ~= ||Q^T G||_* + tr((R^T R)^{1/2}), Q = orth((G G^T)^power_iters G Omega) with
    ``rank + oversample`` columns and R = (I - Q Q^T) G (see the module docstring). When
    ``rank + oversample >= min(m, n)`` the head is the whole matrix and the result is exact.
    Sources: Halko, Martinsson & Tropp (2011); Meyer, Musco, Musco & Woodruff, "Hutch++" (2021);
    Ubaru, Chen & Saad, "Fast estimation of tr(f(A)) via stochastic Lanczos quadrature" (2017).
    Zero matrices give 0.

    Example:
        >>> G = torch.randn(256, 128, generator=torch.Generator().manual_seed(0))
        >>> est = nuclear_norm_estimate(G, generator=torch.Generator().manual_seed(1))
    """
    _check_matrix(G, "G")
    for name, value, lo in (
        ("rank", rank, 1),
        ("oversample", oversample, 0),
        ("power_iters", power_iters, 0),
        ("probes", probes, 1),
        ("lanczos_steps", lanczos_steps, 1),
    ):
        _check_int(name, value, lo)
    X = _work(G)
    n = X.shape[-1]
    cols = rank + oversample
    if cols >= n:
        return torch.linalg.svdvals(X).sum(dim=-1).to(G.dtype)
    Q = _range_finder(X, cols, power_iters, generator)
    H = _tmul(X, Q).mT
    head = torch.linalg.svdvals(H).sum(dim=-1)
    tail = _slq_sqrt_trace(X, Q, H, probes, lanczos_steps, generator)
    return (head + tail).to(G.dtype)


__all__ = ["spectral_norm_estimate", "nuclear_norm_estimate", "top_eigenpair", "top_singular_pair"]
