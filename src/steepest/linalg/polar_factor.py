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

from steepest.linalg.polar_forms import (  # noqa: F401  (prescale: re-exported, imported from here before the split)
    _iterate,
    _polynomial_by_eigh,
    _table,
    prescale,
    prescale_with_scale,
)
from steepest.linalg.precision import auto_eigh, iteration_dtype

METHODS = ("svd", "newton_schulz", "polar_express")
DTYPES = (torch.float32, torch.bfloat16, torch.float64, torch.float16)
NORMALIZATIONS = ("frobenius", "schatten8")

DEFAULT_STEPS = {"newton_schulz": 5, "polar_express": 8}
FORMS = ("standard", "gram", "eigh")


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
        gram: run Newton-Schulz in Gram form (:func:`~steepest.linalg.polar_forms._iterate_gram`: the
            iteration on the small m x m Gram matrix, restarted after two steps). None (default): only where it
            measured faster at equal accuracy, i.e. ``method="newton_schulz"``, Frobenius normalization, float32,
            at least 3 steps and an aspect ratio max(m, n) / min(m, n) >= 2 (0.66-0.78x the time of the standard
            form at the same error vs float64 on the GPT-like shapes; on square matrices it is slower:
            benchmarks/RESULTS.md). True/False force it. In bf16, ``gram=True`` runs the mixed form (bf16 m x n
            products, float32 m x m side, restarted every ``polar_forms.GRAM_MIXED_RESTART`` steps: 0.95-1.12x
            the standard bf16 form's error on Gaussian inputs, 0.80-0.96x on decaying spectra; never the default).
        form: how the polynomial methods evaluate their iteration (the same polynomial of G in exact arithmetic):
            ``"standard"`` (X <- a X + (b A + c A^2) X, torch.optim.Muon's arithmetic), ``"gram"`` (as
            ``gram=True``) or ``"eigh"`` (:func:`~steepest.linalg.polar_forms._polynomial_by_eigh`: one
            eigendecomposition of the small-side Gram matrix, the iteration on its eigenvalues, two m x n
            products; float32 or float64 only). None (default): ``gram``'s rule, and under ``dtype="auto"`` the
            eigh form where the device kind measured it faster (:data:`steepest.linalg.precision.EIGH_RULE`: on
            an AVX512-BF16 CPU without AMX, float32 eigh on wide matrices beats the bf16 iteration at 1/100 to
            1/10000 of its error against the float64 iteration; without native bf16 it beats the float32
            iteration from aspect 2 and on squares from side 256, at ~100x its error, still 1/100 of the bf16 iteration's).
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
    if gram and method != "newton_schulz":
        raise ValueError("gram=True applies to method='newton_schulz' only")
    table, safety = _table(method, steps, coefficients)
    if form == "eigh":
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"form='eigh' runs in float32 or float64, got dtype={dtype}")
        return _polynomial_by_eigh(
            G, table, dtype=dtype, normalization=normalization, safety=safety, eps=eps, overwrite=overwrite_input
        )
    if method == "newton_schulz":
        small, large = sorted(G.shape[-2:])
        if gram is None:  # float32 only: in bf16 an explicit dtype keeps torch.optim.Muon's arithmetic
            gram = normalization == "frobenius" and steps >= 3 and dtype == torch.float32 and large >= 2 * small
        if gram and normalization != "frobenius":
            raise ValueError("gram=True needs normalization='frobenius'")
    return _iterate(
        G,
        table,
        dtype=dtype,
        normalization=normalization,
        safety=safety,
        eps=eps,
        gram=bool(gram),
        overwrite=overwrite_input,
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
