"""How the polynomial polar methods evaluate their iteration (:func:`steepest.linalg.polar_factor.polar`'s ``form``).

The same odd polynomial of G (Muon's Newton-Schulz quintic, Polar Express), evaluated four ways:

* the standard form (:func:`_iterate`, :func:`_steps`): X <- a X + (b A + c A^2) X with A = X X^T on the small
  side, torch.optim.Muon's arithmetic (buffered for eager 2-D/3-D inputs: :func:`_iterate_buffered`);
* the Gram form (:func:`_iterate_gram`): the iteration on the m x m Gram matrix, restarted every 2 steps in
  float32, and the mixed form in bf16 (bf16 m x n products, float32 m x m side, restarted every 3 steps);
* the eigh form (:func:`_polynomial_by_eigh`): one ``eigh`` of the Gram matrix and the iteration on its
  eigenvalues.

Every form starts from :func:`_normalized` (G divided by max(safety ||G||_F, eps) as torch.optim.Muon does,
prescaled where G's entries are extreme: :func:`prescale`). Speed and error of each: benchmarks/form_sweep.py.
"""

from __future__ import annotations

import torch

from steepest.linalg import coefficients as C

#: Columns per product of the eigh form's last step X <- Q X, done in place block by block (one m x 256
#: temporary instead of a second m x n buffer).
EIGH_COLUMN_BLOCK = 256
#: Steps between restarts of the mixed-precision Gram form (bf16 m x n products, float32 m x m side): 3 gives
#: 4 m x n products for Muon's 5 steps (the standard form: 10) at the standard bf16 form's error vs float64 NS5
#: (0.95-1.12x on Gaussian inputs, 0.80-0.96x on log-spaced spectra down to 1e-5 and rank-4 + noise); never restarting
#: (one R, one final product) is cheaper still but lost every singular value under ~1e-2 (error vs float64
#: NS5 above 1 on log-spaced spectra): benchmarks/HISTORY.md, "The eigh form of the polar iteration". (On the
#: AMD EPYC it is 0.68-0.88x the standard bf16 form's time from aspect 6, where the float32 eigh form is faster
#: still at 100x less error, so ``dtype="auto"`` takes that one.)
GRAM_MIXED_RESTART = 3


def prescale(G: torch.Tensor) -> torch.Tensor:
    """Divide each matrix by its largest absolute entry (zero matrices are left at zero).

    The polar factor is scale-invariant, and this keeps every later norm finite: a float32 matrix
    with entries of 1e30 would overflow ||G||_F^2 and one with entries of 1e-30 would underflow it.
    """
    return prescale_with_scale(G)[0]


def prescale_with_scale(G: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prescale(G), max|G|)`` (the scale per matrix, shape ``G.shape[:-2]``), from one pass over |G|,
    for callers that must undo the prescale (singular values, dual norms)."""
    if G.numel() == 0:
        return G.clone(), G.new_zeros(G.shape[:-2])
    amax = G.abs().amax(dim=(-2, -1), keepdim=True)
    return G / torch.where(amax > 0, amax, torch.ones_like(amax)), amax.squeeze(-1).squeeze(-1)


#: Largest-entry range in which the Frobenius norm of a float32/bfloat16 matrix can neither overflow nor
#: underflow (N * amax^2 stays within float32's range for N up to 1e14 entries): inside it the iterative
#: methods skip the prescale, so their arithmetic is bit-for-bit that of torch.optim.Muon.
_SAFE_AMAX = (1e-12, 1e12)


def _prescale_if_needed(G: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """G itself when its largest entry is in the safe range, else :func:`prescale` (no sync: a where)."""
    if dtype == torch.float16:
        return prescale(G)
    # max|G| = max(max G, -min G): two reads and no |G| temporary (the step is memory-bound on CPU).
    amax = torch.maximum(G.amax(dim=(-2, -1), keepdim=True), -G.amin(dim=(-2, -1), keepdim=True))
    ok = (amax >= _SAFE_AMAX[0]) & (amax <= _SAFE_AMAX[1])
    # Under torch.compile the branch would break the graph: the where below gives the same result
    # (a multiply by exactly 1.0 leaves every entry unchanged).
    if G.device.type == "cpu" and not torch.compiler.is_compiling() and bool((ok | (amax == 0)).all()):
        return G  # factor 1 everywhere: skip the multiply (on CPU this check costs no device sync)
    factor = torch.where(
        ok | (amax == 0), torch.ones_like(amax), 1.0 / torch.where(amax > 0, amax, torch.ones_like(amax))
    )
    return G * factor


#: ||X||_F range in which the Frobenius norm computed in float32/bfloat16 arithmetic has neither
#: overflowed (fro^2 <= 1e36 < 3.4e38) nor lost anything that matters to underflow (entries whose square
#: flushes to zero, |x| < 1e-22, add at most N * 1e-45 <= 1e-31 to fro^2 >= 1e-24 for N <= 1e14).
_SAFE_FRO = (1e-12, 1e18)


def _normalized(
    G: torch.Tensor, dtype: torch.dtype, tall: bool, eps: float, safety: float = 1.0, overwrite: bool = False
) -> torch.Tensor:
    """G (oriented wide when ``tall``) in ``dtype``, divided by max(safety * ||G||_F, eps), as torch.optim.Muon
    does (the norm taken in the iteration dtype).

    Eager CPU steps take torch.optim.Muon's arithmetic directly (cast, norm, divide; in place when the
    cast made a copy) and check the norm afterwards, so the common case has no max|G| pass; only a norm
    outside :data:`_SAFE_FRO` (entries near float32's range limits, or a zero matrix) redoes it after
    :func:`_prescale_if_needed`, which accelerators and compiled graphs always take (no
    data-dependent branch). ``overwrite``: G is the caller's temporary, divided in place when no cast copies it."""
    X = None
    copied = dtype != G.dtype or overwrite  # .to(dtype) makes a copy, which may be divided in place
    if G.device.type == "cpu" and not torch.compiler.is_compiling() and dtype != torch.float16:
        X = (G.mT if tall else G).to(dtype)
        # One matrix: the full reduction torch.optim.Muon's X.norm() takes (0.6x the time of the dim= form).
        fro = (
            torch.linalg.vector_norm(X).reshape(1, 1)
            if X.ndim == 2
            else torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True)
        )
        if not bool(((fro >= _SAFE_FRO[0]) & (fro <= _SAFE_FRO[1])).all()):
            X = None
    if X is None:
        P = _prescale_if_needed(G, dtype)
        copied = copied or P is not G
        X = (P.mT if tall else P).to(dtype)
        fro = torch.linalg.vector_norm(X, dim=(-2, -1), keepdim=True)
    d = (fro * safety).clamp(min=eps) if safety != 1.0 else fro.clamp(min=eps)
    return X.div_(d) if copied else X / d  # G itself is never modified (unless overwrite)


def _table(method: str, steps: int, coefficients) -> tuple[list, float]:
    """The (a, b, c) schedule of a polynomial method and its normalization's safety factor."""
    if method == "newton_schulz":
        return C.schedule(coefficients if coefficients is not None else C.MUON_QUINTIC, steps), 1.0
    if coefficients is None:
        coefficients = C.POLAR_EXPRESS_TABLES[C.best_polar_express_table(steps)]
    return C.with_safety(C.schedule(coefficients, steps)), C.POLAR_EXPRESS_SAFETY


def _polynomial_by_eigh(
    G: torch.Tensor,
    table: list,
    *,
    dtype: torch.dtype,
    normalization: str,
    safety: float,
    eps: float,
    overwrite: bool = False,
) -> torch.Tensor:
    """The odd-polynomial iteration ``table`` applied to G through one eigendecomposition (``form="eigh"``).

    Every iterate is a function of G's singular values. For X = U diag(s) W^T (G oriented wide, divided by
    max(safety ||G||_F, eps) as the standard form does) the iteration's input is X / c (c = 1 for the Frobenius
    normalization, safety ||s||_8 for the Schatten-8 one) and its output is U diag(p(s / c)) W^T, p the composed
    polynomial, i.e. Q X for the m x m matrix Q = U diag(q) U^T with q_i = p(s_i / c) / s_i = prod_k f_k(x_k^2) / c
    (x_0 = s_i / c, x_{k+1} = x_k f_k(x_k^2), f_k(y) = a_k + b_k y + c_k y^2; at s_i = 0 the same product, the
    limit; G = 0 gives s = 0 and Q X = 0). R = X X^T = U diag(s^2) U^T gives U and s: one m^2 n product, one m x m
    ``eigh``, the scalar iteration in float64, Q, and one m^2 n product, all in ``dtype``. In float32 the error
    against the float64 iteration is 1e-6 (Gaussian inputs) to 2.8e-3 (a rank-4 signal over 1e-3 noise: float32
    eigenvalues carry ~6e-8 of the largest, which the iteration's ~490x gain near 0 lifts), where the bf16
    standard form has 1e-2 to 0.42 (benchmarks/form_sweep.py). Where ``eigh`` raises (LAPACK not converging; a
    non-finite G) the standard iteration runs on the same normalized X. ``overwrite``: G is the caller's
    temporary and holds the result (:func:`_normalized`).
    """
    tall = G.shape[-2] > G.shape[-1]
    # G / max(safety ||G||_F, eps), as the standard form (prescaled where G's entries are extreme)
    X = _normalized(G, dtype, tall, eps, safety, overwrite)  # (G's own buffer, divided in place, if overwrite)
    if not table:  # no step: the normalized input, as the standard form returns it
        return (X.mT if tall else X).to(G.dtype)
    try:
        lam, U = torch.linalg.eigh(X @ X.mT)
    except torch.linalg.LinAlgError:
        X = _steps(X, table, normalization=normalization, safety=safety, tall=False)
        return (X.mT if tall else X).to(G.dtype)
    s = lam.double().clamp(min=0).sqrt()
    if normalization == "frobenius":  # X is the standard iteration's input already (divided by safety too)
        c = torch.ones_like(s[..., :1])
    else:  # schatten8: the standard form rescales X by 1 / (safety ||s||_8), which is scale-free (and skips G = 0)
        s8 = s.pow(8).sum(-1, keepdim=True).pow(0.125)
        c = torch.where(s8 > 0, safety * s8, torch.ones_like(s8))
    x, q = s / c, torch.ones_like(s)
    for a, b, cc in table:
        y = x * x
        f = a + y * (b + cc * y)
        x, q = x * f, q * f
    q = q / c
    Q = (U * q.to(dtype).unsqueeze(-2)) @ U.mT
    # X <- Q X in place, a block of columns at a time: X is a normalized copy of G (or, with overwrite, G's own
    # buffer), so the result needs no second m x n buffer (peak memory below torch.optim.Muon's bf16 buffers:
    # tests/test_step_memory.py)
    for j in range(0, X.shape[-1], EIGH_COLUMN_BLOCK):
        Xj = X[..., j : j + EIGH_COLUMN_BLOCK]
        Xj.copy_(Q @ Xj)
    return (X.mT if tall else X).to(G.dtype)


def _iterate(
    G: torch.Tensor,
    table: list,
    *,
    dtype: torch.dtype,
    normalization: str,
    safety: float,
    eps: float,
    gram: bool = False,
    overwrite: bool = False,
) -> torch.Tensor:
    """Run the odd-quintic iteration ``table`` on G in ``dtype``, with the Gram matrix on the small side.

    A wide X (m <= n) steps as X <- a X + (b A + c A^2) X with A = X X^T; a tall one in its own
    layout as X <- a X + X (b A + c A^2) with A = X^T X, which is the same iteration on X^T (A and its
    polynomials are symmetric) without a transposed copy: the update comes back in the parameter's
    layout, so the elementwise passes after it (scale, the parameter update) read contiguous memory.
    ``overwrite``: G may be overwritten (:func:`polar`'s ``overwrite_input``).
    """
    tall = G.shape[-2] > G.shape[-1]
    if gram:  # the Gram form works on the wide orientation
        X = _normalized(G, dtype, tall, eps, overwrite=overwrite)
        if dtype in (torch.bfloat16, torch.float16):  # the mixed form: the m x m side in float32
            X = _iterate_gram(X, table, restart=GRAM_MIXED_RESTART, small=torch.float32) if table else X
        else:
            X = _iterate_gram(X, table) if table else X
        return (X.mT if tall else X).to(G.dtype)
    X = _normalized(G, dtype, False, eps, safety, overwrite)
    return _steps(X, table, normalization=normalization, safety=safety, tall=tall).to(G.dtype)


def _steps(X: torch.Tensor, table: list, *, normalization: str, safety: float, tall: bool) -> torch.Tensor:
    """The standard iteration of :func:`_iterate` on X, already divided by max(safety ||G||_F, eps) (in the tall
    layout when ``tall``), in X's dtype; X may be overwritten."""
    dtype = X.dtype
    if not table:
        return X

    def small_gram(X):
        return X.mT @ X if tall else X @ X.mT

    AA = None
    if normalization == "schatten8":
        # ||s||_8^8 = ||A^2||_F^2: the first iteration needs A and A^2 anyway, so rescaling
        # X, A, A^2 by the ratio costs no matmul.
        A = small_gram(X)
        AA = A @ A
        s8 = (
            torch.linalg.vector_norm(AA if AA.dtype == torch.float64 else AA.float(), dim=(-2, -1), keepdim=True)
            .sqrt()
            .sqrt()
            .to(dtype)
        )
        r = torch.where(s8 > 0, 1.0 / (s8 * safety), torch.ones_like(s8))
        X, A, AA = X * r, A * (r * r), AA * (r**4)
    if X.ndim in (2, 3) and not torch.compiler.is_compiling():
        return _iterate_buffered(X, table, tall, A if AA is not None else None, AA)
    for k, (a, b, c) in enumerate(table):
        if AA is not None and k == 0:
            B = b * A + c * AA
        else:
            A = small_gram(X)
            B = _addmm(A, A, A, beta=b, alpha=c)  # b A + c A^2
        X = _addmm(X, X, B, beta=a, alpha=1.0) if tall else _addmm(X, B, X, beta=a, alpha=1.0)  # a X + B X
    return X


def _iterate_buffered(
    X: torch.Tensor, table: list, tall: bool, A0: torch.Tensor | None = None, AA0: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`_iterate`'s loop for eager 2-D/3-D inputs, the same kernels with ``out=``: three buffers (A, B
    and the next X, swapped with X) allocated once instead of three fresh tensors per step. Every fresh
    multi-100-KiB CPU tensor is new pages (page faults on first touch): a bf16 NS5 of the charlm stacks
    ((3, 384, 128), (3, 128, 512), (3, 128, 128)) went from 1.04-1.11x pytorch_optimizer's time (which
    buffers the same way) to 0.99-1.06x (EPYC, 1 thread, paired; issue 22).
    ``A0, AA0``: the first step's A and A^2 when the caller has them (the Schatten-8 normalization).
    Same operations in the same order as the loop in :func:`_iterate` (bit-for-bit its result, up to a GEMM
    library that picks its summation order by memory alignment).

    ``X`` (the caller's normalized copy) is overwritten."""
    mm, addmm = (torch.mm, torch.addmm) if X.ndim == 2 else (torch.bmm, torch.baddbmm)
    k = X.shape[-1] if tall else X.shape[-2]
    first = A0 is not None and AA0 is not None
    A = A0 if A0 is not None else X.new_empty(X.shape[:-2] + (k, k))  # A0: the caller's fresh tensor
    B = table[0][1] * A0 + table[0][2] * AA0 if first else torch.empty_like(A)
    Y = torch.empty_like(X)
    for i, (a, b, c) in enumerate(table):
        if not (i == 0 and first):  # (step 0 with A0: B = b A + c A^2 above, as _iterate rounds it)
            mm(X.mT, X, out=A) if tall else mm(X, X.mT, out=A)
            addmm(A, A, A, beta=b, alpha=c, out=B)
        if tall:
            addmm(X, X, B, beta=a, alpha=1.0, out=Y)
        else:
            addmm(X, B, X, beta=a, alpha=1.0, out=Y)
        X, Y = Y, X
    return X


def _iterate_gram(X: torch.Tensor, table: list, restart: int = 2, small: torch.dtype | None = None) -> torch.Tensor:
    """The odd-quintic iteration on a wide, normalized X in Gram form, restarted after ``restart`` steps.

    Every iterate is X_k = Q_k X_0 with Q_k a polynomial in R_0 = X_0 X_0^T, so the steps run on m x m
    matrices: P = a I + b R + c R^2, Q <- P Q, R <- P R P (P and R commute), and one m x n product
    X <- Q X at the end. Restarting (X <- Q X, R <- X X^T) after ``restart`` steps bounds the rounding
    accumulated in Q. Per step 8 m^3 flops against 4 m^2 n + 2 m^3 for the standard form, so it pays
    for n >= 2 m. Source: Dao-AILab, "Gram Newton-Schulz" (restart after two iterations).

    ``small``: the dtype of the m x m side (R, P, Q) when it differs from X's: the mixed form
    (:data:`GRAM_BF16_RESTART`) keeps X and the m x n products (X X^T, Q X) in bf16 and runs the m x m
    polynomial in float32, so R's small eigenvalues (the squares of X's small singular values) are not
    rounded to bf16's 8 bits at every step. X's dtype comes back.
    """
    cast = small is not None and small != X.dtype

    def gram_of(X):
        R = X @ X.mT
        return R.to(small) if cast else R

    def times_x(Q, X):
        return (Q.to(X.dtype) if cast else Q) @ X

    R = gram_of(X)
    Q: torch.Tensor | None = None
    last = len(table) - 1
    for k, (a, b, c) in enumerate(table):
        if k and k % restart == 0 and Q is not None:  # (Q is set from step 0 on)
            X, Q = times_x(Q, X), None
            R = gram_of(X)
        P = _addmm(R, R, R, beta=b, alpha=c)  # b R + c R^2
        P.diagonal(dim1=-2, dim2=-1).add_(a)  # + a I
        Q = P if Q is None else P @ Q
        if k < last and (k + 1) % restart != 0:
            R = P @ (R @ P)
    if Q is None:
        raise ValueError("the coefficient table is empty: give at least one (a, b, c) step")
    return times_x(Q, X)


def _addmm(inp: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor, *, beta: float, alpha: float) -> torch.Tensor:
    """beta * inp + alpha * m1 @ m2 with one fused kernel for 2-D and 3-D inputs."""
    if inp.ndim == 2:
        return torch.addmm(inp, m1, m2, beta=beta, alpha=alpha)
    if inp.ndim == 3:
        return torch.baddbmm(inp, m1, m2, beta=beta, alpha=alpha)
    return beta * inp + alpha * (m1 @ m2)
