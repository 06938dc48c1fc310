"""The polar factor polar(G) = U V^T of a (batch of) matrices, exactly or by polynomial iteration.

For G = U diag(s) V^T (compact SVD, zero singular values dropped) the polar factor U V^T is the
maximiser of <G, D> over the operator-norm ball (seed 000, section 2): <G, polar(G)> = ||G||_* and
||polar(G)||_op = 1 for G != 0; polar(0) = 0 by convention.

Three methods share one signature:

* ``"svd"``: exact, via ``torch.linalg.svd``; singular values below ``max(m, n) * eps * s_max`` count
  as zero (the pseudo-inverse convention), so rank-deficient inputs give the compact U V^T.
* ``"newton_schulz"``: Muon's quintic iteration (or any coefficient table). Cheap and accurate only
  to a band: singular values land in about [0.68, 1.13] (K. Jordan, "Muon: An optimizer for hidden
  layers in neural networks", 2024: the quintic a, b, c = 3.4445, -4.7750, 2.0315).
* ``"polar_express"``: the Polar Express schedule (arXiv 2505.16932) that converges to U V^T.

Every method works on a copy oriented so that the Gram matrix X X^T is the small side (a wide X), runs
in ``dtype`` (float32 default; bfloat16 and float64 allowed) and returns the input's dtype.
"""

from __future__ import annotations

import warnings

import torch

from steepest.linalg import coefficients as C
from steepest.linalg.precision import auto_eigh, iteration_dtype

METHODS = ("svd", "newton_schulz", "polar_express")
DTYPES = (torch.float32, torch.bfloat16, torch.float64, torch.float16)
NORMALIZATIONS = ("frobenius", "schatten8")

DEFAULT_STEPS = {"newton_schulz": 5, "polar_express": 8}
FORMS = ("standard", "gram", "eigh")
#: Columns per product of the eigh form's last step X <- Q X, done in place block by block (one m x 256
#: temporary instead of a second m x n buffer).
EIGH_COLUMN_BLOCK = 256
#: Steps between restarts of the mixed-precision Gram form (bf16 m x n products, float32 m x m side): 3 gives
#: 4 m x n products for Muon's 5 steps (the standard form: 10) at a lower error than the standard bf16 form
#: on Gaussian and on log-spaced spectra down to 1e-5 (0.6-0.9x its error vs float64 NS5); never restarting
#: (one R, one final product) is cheaper still but lost every singular value under ~1e-2 (error vs float64
#: NS5 above 1 on log-spaced spectra): benchmarks/HISTORY.md, "The eigh form of the polar iteration". (On the
#: AMD EPYC it is 0.68-0.88x the standard bf16 form's time from aspect 6, where the float32 eigh form is faster
#: still at 100x less error, so ``dtype="auto"`` takes that one.)
GRAM_MIXED_RESTART = 3


def _check_matrix(G: torch.Tensor, name: str = "G") -> None:
    if not isinstance(G, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(G).__name__}")
    if G.ndim < 2:
        raise ValueError(
            f"{name} must have at least 2 dimensions (..., m, n), got shape {tuple(G.shape)}; "
            "reshape vectors to (1, n) or route them to an entrywise norm"
        )
    if G.is_complex():
        raise TypeError(f"{name} is complex ({G.dtype}); only real matrices are supported")
    if G.is_sparse:
        raise TypeError(f"{name} is sparse; call .to_dense() first")
    if not G.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {G.dtype}")


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


def polar(
    G: torch.Tensor,
    method: str = "svd",
    steps: int | None = None,
    *,
    dtype: torch.dtype | str | None = torch.float32,
    coefficients: tuple | None = None,
    normalization: str | None = None,
    eps: float = 1e-7,
    gram: bool | None = None,
    overwrite_input: bool = False,
    form: str | None = None,
) -> torch.Tensor:
    """Polar factor U V^T of ``G`` (shape ``(..., m, n)``), by ``method``.

    Args:
        G: real matrix or batch of matrices.
        method: ``"svd"`` (exact), ``"newton_schulz"`` or ``"polar_express"``.
        steps: iterations for the polynomial methods (defaults: 5 for Newton-Schulz, 8 for Polar
            Express); must be ``None`` for ``"svd"``.
        dtype: dtype of the computation (float32 default; None: G's dtype promoted to >= float32;
            ``"auto"``: bf16 for the iterative methods where the hardware has native bf16 matmul and the
            matrix is large enough for it to pay, see :mod:`steepest.linalg.precision`). The result has
            G's dtype.
        coefficients: a table of ``(a, b, c)`` triples (or one triple) for the polynomial methods;
            defaults to Muon's quintic for Newton-Schulz and, for Polar Express (with the 1.01 safety
            factor), the project's best table for ``steps``
            (:func:`steepest.linalg.coefficients.best_polar_express_table`): the published l = 1e-3
            table (Amsel et al. 2025, arXiv 2505.16932, Algorithm 1) for 8 steps (the default) and
            more or for 1-3, the project's l = 7e-4 table (``POLAR_EXPRESS_L7E4``, the same algorithm
            for the interval the Schatten-8 normalization reaches) for 4-7 steps: worst scalar error
            after 6 steps 7.9e-3 instead of the published table's 6.3e-2.
        normalization: how the iteration's input is scaled into the unit interval. ``"frobenius"``
            divides by ||G||_F (Muon's choice; it shrinks the spectrum by up to sqrt(rank), pushing
            small singular values below the table's l). ``"schatten8"`` divides by the Schatten-8
            norm ||s||_8 = ||(G G^T)^2||_F^(1/8) >= s_max, which the first iteration computes anyway,
            so it costs no extra matmul and shrinks the spectrum by at most rank^(1/8). Defaults:
            frobenius for Newton-Schulz (as Muon), schatten8 for Polar Express.
        eps: floor of the normalizing norm (Muon's 1e-7), so zero inputs stay zero.
        gram: run Newton-Schulz in Gram form (:func:`_iterate_gram`: the iteration on the small m x m
            Gram matrix, restarted after two steps). None (default): only where it measured faster at
            equal accuracy, i.e. ``method="newton_schulz"``, Frobenius normalization, float32, at least 3
            steps and an aspect ratio max(m, n) / min(m, n) >= 2 (0.66-0.78x the time of the standard
            form at the same error vs float64 on the GPT-like shapes; on square matrices it is slower:
            benchmarks/RESULTS.md). True/False force it. In bf16, ``gram=True`` runs the mixed form (bf16 m x n
            products, float32 m x m side, restarted after :data:`GRAM_MIXED_RESTART` steps: 0.95-1.12x the standard
            bf16 form's error on Gaussian inputs, 0.80-0.96x on decaying spectra; never chosen by default).
        form: how the polynomial methods evaluate their iteration (the same polynomial of G in exact arithmetic):
            ``"standard"`` (X <- a X + (b A + c A^2) X, torch.optim.Muon's arithmetic), ``"gram"`` (as
            ``gram=True``) or ``"eigh"`` (:func:`_polynomial_by_eigh`: one eigendecomposition of the small-side
            Gram matrix, the iteration on its eigenvalues, two m x n products; float32 or float64 only).
            None (default): ``gram``'s rule, and under ``dtype="auto"`` the eigh form where the device kind measured
            it faster (:data:`steepest.linalg.precision.EIGH_RULE`: on an AVX512-BF16 CPU without AMX, float32
            eigh on wide matrices beats the bf16 iteration at 100-10000x less error).
        overwrite_input: the iterative methods may overwrite ``G`` (as SciPy's ``overwrite_a``): a caller
            that passes a temporary of its own saves one copy of it, the largest buffer of the iteration
            but its own workspace (the batched optimizer step's stack). Default False: ``G`` is left as it is.

    Formula: X_0 = G / max(c * norm(G), eps), X_{k+1} = a_k X_k + b_k (X_k X_k^T) X_k + c_k (X_k X_k^T)^2 X_k
    (c = 1.01 for Polar Express). Source: seed 000 (definition), KellerJordan/Muon (quintic),
    Amsel et al. 2025, arXiv 2505.16932 (Polar Express).

    Example:
        >>> G = torch.randn(64, 32)
        >>> Q = polar(G, "svd")
        >>> torch.allclose(Q.T @ Q, torch.eye(32), atol=1e-5)
        True
    """
    _check_matrix(G)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    auto = isinstance(dtype, str) and dtype == "auto"
    if not isinstance(dtype, torch.dtype):
        dtype = iteration_dtype(G.dtype, dtype, G.device, iterative=method != "svd", shape=G.shape)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype}")
    if method == "svd":
        if form is not None or gram:
            raise ValueError("form and gram apply only to the iterative methods, not 'svd'")
        if steps is not None or coefficients is not None:
            raise ValueError("steps and coefficients apply only to the iterative methods, not 'svd'")
        return polar_svd(G, dtype=dtype)[0]
    if G.numel() == 0:
        return G.clone()  # an empty matrix (e.g. an empty shard) has the empty polar factor
    if steps is None:
        steps = DEFAULT_STEPS[method]
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if normalization is None:
        normalization = "frobenius" if method == "newton_schulz" else "schatten8"
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if form is not None:
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS} or None, got {form!r}")
        if gram is not None and gram != (form == "gram"):
            raise ValueError(f"gram={gram!r} contradicts form={form!r}: give one of them")
        gram = form == "gram"
    elif auto and gram is None and auto_eigh(G.device, G.shape) and not torch.compiler.is_compiling():
        form = "eigh"  # (a compiled graph keeps the matmul-only forms: no LAPACK call, no fallback branch)
    if form == "eigh":
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"form='eigh' runs in float32 or float64, got dtype={dtype}")
        tab, safety = _table(method, steps, coefficients)
        return _polynomial_by_eigh(
            G, tab, dtype=dtype, normalization=normalization, safety=safety, eps=eps, overwrite=overwrite_input
        )
    if method == "newton_schulz":
        table = C.schedule(coefficients if coefficients is not None else C.MUON_QUINTIC, steps)
        small, large = sorted(G.shape[-2:])
        if gram is None:  # float32 only: in bf16 an explicit dtype keeps torch.optim.Muon's arithmetic
            gram = normalization == "frobenius" and steps >= 3 and dtype == torch.float32 and large >= 2 * small
        if gram:
            if normalization != "frobenius":
                raise ValueError("gram=True needs normalization='frobenius'")
            return _iterate(
                G,
                table,
                dtype=dtype,
                normalization=normalization,
                safety=1.0,
                eps=eps,
                gram=True,
                overwrite=overwrite_input,
            )
        safety = 1.0
    else:
        if gram:
            raise ValueError("gram=True applies to method='newton_schulz' only")
        table, safety = _table(method, steps, coefficients)
    return _iterate(
        G, table, dtype=dtype, normalization=normalization, safety=safety, eps=eps, overwrite=overwrite_input
    )


def rank_tolerance(X: torch.Tensor, s_max: torch.Tensor) -> torch.Tensor:
    """The one rank cut-off of the SVD paths: singular values at or below ``max(m, n) * eps(X.dtype) * s_max``
    count as zero (the pseudo-inverse convention; numpy's ``matrix_rank`` default)."""
    return max(X.shape[-2:]) * torch.finfo(X.dtype).eps * s_max


def polar_svd(G: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact polar factor and the singular values, from one SVD: ``(U V^T, s)``.

    Singular values at or below ``max(m, n) * finfo(dtype).eps * s_max`` are treated as zero and
    their singular vectors dropped (compact SVD), so ``polar(0) = 0`` and rank-deficient inputs get
    the polar factor of their range. Returned ``s`` has those values zeroed too.
    """
    _check_matrix(G)
    if G.numel() == 0:
        return G.clone(), G.new_zeros(G.shape[:-2] + (min(G.shape[-2:]),))
    X, amax = prescale_with_scale(G)
    X = X.to(dtype if dtype != torch.bfloat16 and dtype != torch.float16 else torch.float32)
    U, s, Vh = svd_or_fallback(X)
    tol = rank_tolerance(X, s[..., :1])
    keep = (s > tol).to(X.dtype)
    Q = (U * keep.unsqueeze(-2)) @ Vh
    amax = amax.to(s.dtype)
    return Q.to(G.dtype), (s * keep) * amax.unsqueeze(-1)


class SVDFallbackWarning(RuntimeWarning):
    """``torch.linalg.svd`` raised (LAPACK's divide-and-conquer did not converge) and the singular
    triplets came from :func:`svd_or_fallback`'s float64 fallback; callers that must record it (the
    seed reproductions) catch this category."""


def svd_or_fallback(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch.linalg.svd(X, full_matrices=False)``, and where it raises ``LinAlgError`` (gesdd's
    divide and conquer failing to converge, which some LAPACK builds do on benign matrices) a stable
    float64 path with a :class:`SVDFallbackWarning`:

    1. the SVD of the float64 transpose X^T = V S U^T (another input to the same driver; it converges
       where X did not in every case seen so far),
    2. else the symmetric eigendecomposition of the small-side Gram matrix X^T X = V S^2 V^T (``eigh``
       never fails to converge on a finite symmetric matrix) with U = X V / s. Singular values below
       sqrt(eps64) s_max lose relative accuracy there, but polar_svd's cut-off and U V^T for the
       well-separated part are unaffected to about 1e-8.

    The result has X's dtype. Example:

        >>> X = torch.randn(5, 3, dtype=torch.float64)
        >>> U, s, Vh = svd_or_fallback(X)
        >>> bool(torch.allclose((U * s.unsqueeze(-2)) @ Vh, X))
        True
    """
    try:
        return torch.linalg.svd(X, full_matrices=False)
    except torch.linalg.LinAlgError as err:
        warnings.warn(
            f"torch.linalg.svd failed on a {tuple(X.shape)} {X.dtype} matrix ({err}); using the float64 "
            "fallback (see steepest.linalg.polar_factor.svd_or_fallback)",
            SVDFallbackWarning,
            stacklevel=3,
        )
    X64 = X.to(torch.float64)
    try:
        V, s, Uh = torch.linalg.svd(X64.mT, full_matrices=False)
        return Uh.mT.to(X.dtype), s.to(X.dtype), V.mT.to(X.dtype)
    except torch.linalg.LinAlgError:
        pass
    wide = X64.shape[-2] < X64.shape[-1]
    Y = X64.mT if wide else X64  # tall: Y^T Y is the small side
    lam, V = torch.linalg.eigh(Y.mT @ Y)
    lam, V = lam.flip(-1), V.flip(-1)  # descending, as svd returns
    s = lam.clamp(min=0).sqrt()
    inv = torch.where(s > 0, 1.0 / torch.where(s > 0, s, torch.ones_like(s)), torch.zeros_like(s))
    U = (Y @ V) * inv.unsqueeze(-2)
    if wide:  # X = Y^T = V S U^T
        U, V = V, U
    return U.to(X.dtype), s.to(X.dtype), V.mT.to(X.dtype)


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

    Every iterate is a function of G's singular values: for X = U diag(s) W^T (G oriented wide, divided by
    max(safety ||G||_F, eps) as the standard form does) the iteration's input is X / c (c = 1 for the Frobenius
    normalization, safety ||s||_8 for the Schatten-8 one) and its output U diag(p(s / c)) W^T with p the composed
    polynomial, i.e. Q X for the m x m
    matrix Q = U diag(q) U^T, q_i = p(s_i / c) / s_i = prod_k f_k(x_k^2) / c (x_0 = s_i / c, x_{k+1} = x_k f_k(x_k^2),
    f_k(y) = a_k + b_k y + c_k y^2; at s_i = 0 the same product, the limit). R = X X^T = U diag(s^2) U^T gives
    U and s (G = 0: s = 0 and Q X = 0): one m^2 n product, one m x m ``eigh``, the scalar iteration in float64,
    Q, and one m^2 n product,
    all in ``dtype`` (float32: an error of 1e-6 to 3e-3 against the float64 iteration where the bf16 form has
    1e-2 to 0.35, benchmarks/form_sweep.py). Where ``eigh`` raises (LAPACK not converging; a non-finite G), the
    standard iteration runs instead.
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
    # X <- Q X in place, a block of columns at a time: X is this function's own normalized copy, so the result
    # needs no second m x n buffer (peak memory as the bf16 forms' two half-size buffers: tests/test_step_memory.py)
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
