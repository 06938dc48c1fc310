"""The geometry registry: everything steepest knows about each norm, in one place.

For a norm ||.|| on matrices the dualizer is D = argmax_{||D|| <= 1} <G, D>, and the dual norm is the
value of that maximum, ||G||^dagger = <G, D> (lecture notes on spectral descent, section 2; "Steepest
descent under Schatten-p norms"). The geometries:

============  ======================  ==========================  ==================================
name          norm ||X||              dual norm ||G||^dagger      dualize(G)
============  ======================  ==========================  ==================================
frobenius     ||X||_F                 ||G||_F                     G / ||G||_F
spectral      s_max(X)                ||G||_* = sum s_i           polar(G) = U V^T
linf          max_ij |X_ij|           ||G||_1 = sum |G_ij|        sign(G)
schatten (p)  ||s(X)||_p              ||s(G)||_q, 1/p + 1/q = 1   U diag(s^(q-1)) V^T / ||s||_q^(q-1)
power (a)     (none: a direction)     (none)                      U diag(s^a) V^T, ||.||_F = sqrt(rank)
============  ======================  ==========================  ==================================

``power`` is the continuous knob (:mod:`steepest.linalg.spectral_power`): a = 1 the Frobenius direction,
a = 0 the spectral one (exactly the polar factor U V^T), 0 < a < 1 the Schatten-(1 + 1/a) direction, a < 0
past spectral (DynMuon's late phase, arXiv 2605.17109). It is a *direction with a magnitude rule*, not a
unit ball: the magnitude is pinned to ||D||_F = sqrt(rank), the polar factor's, so for every a the step has
a Muon step's RMS and one lr transfers across the knob (the derivation is in :mod:`steepest.linalg.spectral_power`). For a < 0 no Schatten norm has this direction (p = 1 + 1/a < 1 is no norm), so
:func:`matrix_norm`, :func:`dual_norm` and ``step_size="dual"`` refuse ``"power"`` (for 0 <= a <= 1 use
``"schatten"`` with p = 1 + 1/a to get them). The group key is ``power=a`` (the registry's functions take
a in the place of p: ``dualize(G, "power", 0.5)``).

Schatten p = inf *is* the spectral geometry (:func:`resolve` is the one place that says so), so it
accepts the spectral dualizer's settings (method, steps, ...).

For every G != 0: <G, dualize(G)> = dual_norm(G) and matrix_norm(dualize(G)) = 1; dualize(0) = 0.
All functions reduce over the last two dimensions (batch-aware); the entrywise norms (frobenius,
linf) also accept a vector, treated as one row.

Besides the math, the registry holds how a parameter tensor is viewed as matrices
(:func:`matrix_view`: flatten, batch, transposed Conv1D weights), the fixed step multipliers
(:func:`shape_scale`), the unit-RMS factors (:func:`rms_factor`), the cost model used to balance
owner ranks (:func:`dualize_cost`) and which dualizer settings apply to which norm
(:func:`check_settings`).
"""

from __future__ import annotations

import math

import torch

from steepest.linalg.polar_factor import METHODS, NORMALIZATIONS, _check_matrix, polar, polar_svd, prescale_with_scale
from steepest.linalg.precision import iteration_dtype
from steepest.linalg.schatten import check_p, conjugate_exponent, schatten_dualize_and_singular_values, vector_pnorm
from steepest.linalg.spectral_power import check_exponent, spectral_power

NORMS = ("frobenius", "spectral", "linf", "schatten", "power")
#: Geometries that are a direction with a magnitude rule, not the unit ball of a norm (no dual norm).
DIRECTIONS = ("power",)
ENTRYWISE = ("frobenius", "linf")
SCALE_RULES = ("none", "muon", "rms", "spectral")
TENSOR_MODES = ("flatten", "batch")
#: Settings of the spectral dualizer (the polar factor); they mean nothing to the other norms.
POLAR_SETTINGS = ("method", "steps", "coefficients", "normalization", "ns_eps")
DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64, "float16": torch.float16}


# ----------------------------------------------------------------------------------- names
def check_norm(norm: str, p: float | None = None) -> None:
    """Raise ValueError for an unknown norm or a missing/invalid Schatten exponent (or power's exponent a,
    passed as ``p`` here)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if norm == "schatten":
        check_p(p)
    elif norm == "power":
        if p is None:
            raise ValueError("norm='power' needs its exponent a (power=a: 1 Frobenius, 0 spectral, < 0 past it)")
        check_exponent(p)
    elif p is not None:
        raise ValueError(f"p is only used with norm='schatten', got p={p!r} with norm={norm!r}")


def resolve(norm: str, p: float | None = None) -> tuple[str, float | None]:
    """The canonical ``(norm, p)``: Schatten p = inf is the spectral norm; everything else is itself."""
    check_norm(norm, p)
    if norm == "schatten" and p is not None and math.isinf(p):  # check_norm: Schatten has p
        return "spectral", None
    return norm, (float(p) if p is not None else None)


def is_entrywise(norm: str) -> bool:
    """True for the norms defined entry by entry (they accept vectors and need no matrix view)."""
    return norm in ENTRYWISE


def dtype_from_name(dtype) -> torch.dtype | str | None:
    """A torch dtype from a dtype or its name (``None`` stays None: "the input's dtype"; ``"auto"``
    stays "auto": bf16 where the hardware has native bf16 matmul, see :mod:`steepest.linalg.precision`)."""
    if dtype == "auto":
        return "auto"
    if dtype is None or isinstance(dtype, torch.dtype):
        if dtype is not None and dtype not in DTYPE_NAMES.values():
            raise ValueError(f"dtype must be one of {sorted(DTYPE_NAMES)} or None, got {dtype!r}")
        return dtype
    if dtype not in DTYPE_NAMES:
        raise ValueError(f"dtype must be one of {sorted(DTYPE_NAMES)} or None, got {dtype!r}")
    return DTYPE_NAMES[dtype]


def dtype_name(dtype) -> str | None:
    """The name of a dtype (what optimizer state_dicts hold); None and "auto" stay as they are."""
    d = dtype_from_name(dtype)
    return d if d is None or d == "auto" else next(k for k, v in DTYPE_NAMES.items() if v == d)


def check_settings(
    norm: str,
    p: float | None = None,
    *,
    method: str | None = None,
    steps: int | None = None,
    coefficients=None,
    normalization: str | None = None,
    dtype=None,
    ns_eps: float | None = None,
) -> None:
    """Raise ValueError naming any dualizer setting that does not apply to ``norm``.

    The polar settings (method, steps, coefficients, normalization, ns_eps: the floor of the iteration's
    normalizing norm, torch.optim.Muon's ``eps``) apply to the spectral geometry
    (including Schatten p = inf) only; ``method="svd"`` is also accepted for finite Schatten p (its
    dualizer is an exact SVD). ``dtype`` (the compute dtype) applies to every norm; sign is exact in any.
    """
    name, _ = resolve(norm, p)
    given = {
        "method": method,
        "steps": steps,
        "coefficients": coefficients,
        "normalization": normalization,
        "ns_eps": ns_eps,
    }
    if method is not None and method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if normalization is not None and normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS} or None, got {normalization!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
        raise ValueError(f"steps must be a non-negative int or None, got {steps!r}")
    if ns_eps is not None and (
        isinstance(ns_eps, bool) or not isinstance(ns_eps, (int, float)) or not math.isfinite(ns_eps) or ns_eps < 0
    ):
        raise ValueError(f"ns_eps (Newton-Schulz normalization eps) must be a finite number >= 0, got {ns_eps!r}")
    dtype_from_name(dtype)
    if name == "spectral":
        if (method in (None, "svd")) and (
            steps is not None or coefficients is not None or normalization is not None or ns_eps is not None
        ):
            raise ValueError(
                "steps/coefficients/normalization/ns_eps need method='newton_schulz' or 'polar_express', "
                "not 'svd' (the exact polar factor has no iteration to configure)"
            )
        return
    allowed = {"method": ("svd",)} if name in ("schatten", "power") else {}
    for key, value in given.items():
        if value is not None and value not in allowed.get(key, ()):
            raise ValueError(
                f"{key}={value!r} does not apply to norm={norm!r}: it configures the spectral dualizer (the "
                f"polar factor). Remove it, or use norm='spectral'"
                + (" (the Schatten-p dualizer is an exact SVD)" if name == "schatten" else "")
                + (" (power's direction is an eigh of the Gram matrix, or method='svd')" if name == "power" else "")
                + "."
            )


# ----------------------------------------------------------------------------------- views
def matrix_view(
    t: torch.Tensor, tensor_mode: str = "flatten", transposed: bool = False, row_blocks: int = 1
) -> torch.Tensor:
    """View a parameter-shaped tensor as the matrix (or batch of matrices) its geometry acts on.

    Matrices are (fan_out, fan_in). 2-D tensors are returned as is, or as ``t.mT`` when ``transposed``
    (weights stored as (in, out), like GPT-2's ``Conv1D``); >= 3-D tensors are flattened to
    (shape[0], prod(rest)) (conv kernels (out, in, kh, kw) -> (out, in*kh*kw)) or, with
    ``tensor_mode="batch"``, kept as a batch of matrices over the last two dims. 1-D tensors
    (entrywise norms only) are returned as is. :func:`from_matrix` inverts it.

    ``row_blocks=r`` (the block layout of fused q/k/v projections and per-head blocks,
    :func:`steepest.param_groups` ``split_qkv=``/``heads=``): the (m, n) matrix is r stacked blocks of m/r
    rows (output features), viewed as a batch ``(..., r, m/r, n)`` so each block is dualized on its own
    (GPT-2's c_attn (3E, E) with r = 3 is q, k and v). Rows of the (fan_out, fan_in) view, so after the
    transpose of a Conv1D weight.
    """
    if t.ndim <= 1:
        return t
    if t.ndim > 2 and tensor_mode != "batch":
        t = t.reshape(t.shape[0], -1)
    t = t.mT if transposed else t
    if row_blocks != 1:
        m = t.shape[-2]
        if row_blocks < 1 or m % row_blocks:
            raise ValueError(
                f"row_blocks={row_blocks} must divide the {m} rows (output features) of the matrix view "
                f"of a tensor of shape {tuple(t.shape)}"
            )
        t = t.reshape(*t.shape[:-2], row_blocks, m // row_blocks, t.shape[-1])
    return t


def from_matrix(
    X: torch.Tensor, shape: torch.Size | tuple, transposed: bool = False, row_blocks: int = 1
) -> torch.Tensor:
    """Undo :func:`matrix_view`: back to the parameter's ``shape``."""
    if row_blocks != 1 and X.ndim >= 3:
        X = X.reshape(*X.shape[:-3], X.shape[-3] * X.shape[-2], X.shape[-1])
    if transposed and X.ndim >= 2:
        X = X.mT
    return X.reshape(shape)


def matrix_shape(
    shape: tuple[int, ...], tensor_mode: str = "flatten", transposed: bool = False, row_blocks: int = 1
) -> tuple[int, ...]:
    """Shape of :func:`matrix_view` for a tensor of ``shape`` (without building it)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) <= 1:
        return shape
    if len(shape) > 2 and tensor_mode != "batch":
        shape = (shape[0], math.prod(shape[1:]))
    shape = shape[:-2] + (shape[-1], shape[-2]) if transposed else shape
    if row_blocks != 1:
        shape = shape[:-2] + (row_blocks, shape[-2] // row_blocks, shape[-1])
    return shape


def _mn(shape: tuple[int, ...]) -> tuple[int, int]:
    return (1, shape[0]) if len(shape) == 1 else (shape[-2], shape[-1])


def shape_scale(shape: tuple[int, ...], rule: str) -> float:
    """The fixed step multiplier for a matrix view of shape ``(..., m, n)`` = (fan_out, fan_in).

    ``none``: 1; ``muon``: sqrt(max(1, m/n)) (KellerJordan/Muon); ``rms``: 0.2 sqrt(max(m, n))
    (Moonshot's AdamW RMS match, "Muon is Scalable for LLM Training"); ``spectral``:
    sqrt(fan_out / fan_in) (Yang, Simon & Bernstein 2023, "A spectral condition for feature learning").
    Empty matrices get 1.
    """
    if rule not in SCALE_RULES:
        raise ValueError(f"scale_rule must be one of {SCALE_RULES}, got {rule!r}")
    m, n = _mn(shape)
    if rule == "none" or m == 0 or n == 0:
        return 1.0
    if rule == "muon":
        return math.sqrt(max(1.0, m / n))
    if rule == "rms":
        return 0.2 * math.sqrt(max(m, n))
    return math.sqrt(m / n)


def rms_factor(shape: tuple[int, ...], norm: str, p: float | None = None) -> float:
    """The multiplier that gives a full-rank unit-norm direction of ``norm`` unit RMS on an (m, n) block.

    linf: sign has RMS 1; spectral: ||U V^T||_F = sqrt(k), k = min(m, n), so sqrt(mn / k) =
    sqrt(max(m, n)); frobenius: sqrt(mn); Schatten-p: equal singular values k^(-1/p) give
    sqrt(mn) k^(1/p - 1/2) (p = 2 frobenius, p = inf spectral); power (any a): spectral's, its magnitude rule.
    """
    name, p = resolve(norm, p)
    m, n = _mn(shape)
    if m * n == 0 or name == "linf":
        return 1.0
    k = min(m, n)
    if name in ("spectral", "power"):  # power's magnitude is the polar factor's: ||D||_F = sqrt(k) at full rank
        return math.sqrt(max(m, n))
    if name == "frobenius":
        return math.sqrt(m * n)
    if p is None:  # resolve() gives a Schatten norm its p; a direct caller may not
        raise ValueError("norm='schatten' needs p (the Schatten exponent)")
    return math.sqrt(m * n) * k ** (1.0 / p - 0.5)


def dualize_cost(
    shape: tuple[int, ...], norm: str = "spectral", tensor_mode: str = "flatten", p: float | None = None
) -> float:
    """Work of one dualization, up to a constant: b m n min(m, n) for a (b x) m x n matrix view.

    This is the flop count of an SVD or of Newton-Schulz on the smaller Gram matrix; entrywise norms
    cost m n. Example: ``dualize_cost((384, 1536))`` is 384 * 1536 * 384.
    """
    numel = math.prod(shape)
    if is_entrywise(norm) or len(shape) < 2:
        return float(numel)
    m, n = _mn(matrix_shape(tuple(shape), tensor_mode))
    return float(numel * min(m, n))


# ----------------------------------------------------------------------------------- math
def _refuse_direction(name: str, p: float | None, what: str) -> None:
    """``power`` is a direction with a magnitude rule, not a norm's unit ball: it has no (dual) norm."""
    if name in DIRECTIONS:
        hint = (
            f"for 0 <= a <= 1 its direction is the Schatten-p one with p = 1 + 1/a: use norm='schatten', p={_p_of(p)}"
            if p is not None and 0.0 <= p <= 1.0
            else "for a < 0 no Schatten norm has this direction (p = 1 + 1/a < 1 is not a norm), so there is none"
        )
        raise ValueError(
            f"{what} needs a norm, and norm='power' (a={p!r}) is a direction with a magnitude rule; {hint}"
        )


def _p_of(a: float | None) -> float:
    return math.inf if not a else 1.0 + 1.0 / a


def check_magnitude(norm: str, p: float | None, magnitude: str | None) -> None:
    """``magnitude`` (power's magnitude rule, :data:`steepest.linalg.spectral_power.MAGNITUDES`) applies to
    ``norm="power"`` only; None is its default, ``"frobenius"``."""
    if magnitude is None:
        return
    if norm != "power":
        raise ValueError(f"magnitude={magnitude!r} (power_magnitude) only applies to norm='power', not {norm!r}")
    check_exponent(0.0 if p is None else p, magnitude)


def power_dtype(dtype) -> torch.dtype:
    """The compute dtype of power's direction: float64 by default (s^(a-1) amplifies rounding in the small
    directions); float32 when a lower precision is asked for explicitly (the eigh/SVD have no bf16 kernels).
    ``"auto"`` (``steepest.Muon``'s default, which picks the Newton-Schulz dtype) is the default here too:
    float32 Gram eigenvalues lose a square matrix's small directions (0.15 relative error of the step at
    a = 1/50 on 512 x 512 inputs, 3.7e-2 at a = 0.1 on 256 x 256; benchmarks/schatten_choice_cases.py), so a
    Muon run under a knob chooser would not step along U s^a V^T.

    >>> power_dtype("auto"), power_dtype(None), power_dtype(torch.bfloat16)
    (torch.float64, torch.float64, torch.float32)
    """
    d = dtype_from_name(dtype)
    return torch.float64 if d in (None, "auto", torch.float64) else torch.float32


def _as_matrix(X: torch.Tensor, norm: str) -> torch.Tensor:
    if is_entrywise(norm) and X.ndim == 1:
        return X.unsqueeze(0)
    _check_matrix(X, "X")
    return X


def _svdvals(X: torch.Tensor) -> torch.Tensor:
    if X.numel() == 0:  # every norm of an empty matrix is 0: one zero "singular value" keeps [..., 0] valid
        return X.new_zeros(X.shape[:-2] + (1,), dtype=X.dtype if X.dtype == torch.float64 else torch.float32)
    return torch.linalg.svdvals(X if X.dtype in (torch.float32, torch.float64) else X.float())


def _amax(X: torch.Tensor) -> torch.Tensor:
    return X.abs().amax(dim=(-2, -1)) if X.numel() else X.new_zeros(X.shape[:-2])


def _fro(X: torch.Tensor) -> torch.Tensor:
    """||X||_F without overflow or underflow: max|X| * ||X / max|X|||_F."""
    Y, amax = prescale_with_scale(X)
    return torch.linalg.matrix_norm(Y, "fro") * amax


def matrix_norm(X: torch.Tensor, norm: str, p: float | None = None) -> torch.Tensor:
    """||X|| under ``norm`` (see the module table). Example: ``matrix_norm(torch.eye(3), "spectral")`` is 1."""
    name, p = resolve(norm, p)
    _refuse_direction(name, p, "matrix_norm")
    squeeze = X.ndim == 1
    X = _as_matrix(X, name)
    if name == "frobenius":
        out = _fro(X)
    elif name == "linf":
        out = _amax(X)
    elif name == "spectral":
        out = _svdvals(X)[..., 0].to(X.dtype)
    else:
        if p is None:  # resolve() gives a Schatten norm its p; a direct caller may not
            raise ValueError("norm='schatten' needs p (the Schatten exponent)")
        out = vector_pnorm(_svdvals(X), p).to(X.dtype)
    return out.squeeze(0) if squeeze else out


def dual_norm(G: torch.Tensor, norm: str, p: float | None = None) -> torch.Tensor:
    """The dual norm ||G||^dagger = max_{||D|| <= 1} <G, D>: F, nuclear, l1, or Schatten-q.

    Example: ``dual_norm(torch.eye(3), "spectral")`` is 3 (the nuclear norm).
    """
    name, p = resolve(norm, p)
    _refuse_direction(name, p, "dual_norm")
    squeeze = G.ndim == 1
    G = _as_matrix(G, name)
    if name == "frobenius":
        out = _fro(G)
    elif name == "linf":
        out = G.abs().sum(dim=(-2, -1))
    elif name == "spectral":
        out = _svdvals(G).sum(dim=-1).to(G.dtype)
    else:
        if p is None:  # resolve() gives a Schatten norm its p; a direct caller may not
            raise ValueError("norm='schatten' needs p (the Schatten exponent)")
        out = vector_pnorm(_svdvals(G), conjugate_exponent(p)).to(G.dtype)
    return out.squeeze(0) if squeeze else out


def dualize(
    G: torch.Tensor,
    norm: str,
    p: float | None = None,
    *,
    method: str | None = None,
    steps: int | None = None,
    dtype: torch.dtype | str | None = None,
    coefficients: tuple | None = None,
    normalization: str | None = None,
    ns_eps: float | None = None,
    magnitude: str | None = None,
) -> torch.Tensor:
    """argmax_{||D|| <= 1} <G, D> under ``norm`` (see the module table); 0 for G = 0.

    ``method`` (default ``"svd"``), ``steps``, ``dtype``, ``coefficients``, ``normalization`` and ``ns_eps``
    (polar's ``eps``; None: 1e-7) select how the spectral dualizer (the polar factor) is computed; see :func:`steepest.polar`.
    ``magnitude`` is power's magnitude rule (``"frobenius"`` default, ``"spectral"``, ``"schatten"``).
    Schatten-p dualizers are exact (SVD). ``dtype=None`` computes in G's dtype promoted to at least
    float32. Example:

        >>> G = torch.tensor([[3.0, -1.0]])
        >>> dualize(G, "linf")
        tensor([[ 1., -1.]])
    """
    return dualize_with_dual_norm(
        G,
        norm,
        p,
        method=method,
        steps=steps,
        dtype=dtype,
        coefficients=coefficients,
        normalization=normalization,
        ns_eps=ns_eps,
        magnitude=magnitude,
        need_dual_norm=False,
    )[0]


def dualize_with_dual_norm(
    G: torch.Tensor,
    norm: str,
    p: float | None = None,
    *,
    method: str | None = None,
    steps: int | None = None,
    dtype: torch.dtype | str | None = None,
    coefficients: tuple | None = None,
    normalization: str | None = None,
    need_dual_norm: bool = True,
    check: bool = True,
    ns_eps: float | None = None,
    magnitude: str | None = None,
    overwrite_input: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(dualize(G), dual_norm(G))`` sharing work: the SVD paths compute both from one SVD.

    The dual norm has shape ``G.shape[:-2]`` (a scalar tensor for a single matrix); it is None when
    ``need_dual_norm`` is False. ``check=False``: the caller has validated the settings and passes a
    canonical ``(norm, p)`` and a torch dtype (the optimizers' step: validated once per group).
    ``overwrite_input``: ``G`` is the caller's temporary, which the Newton-Schulz / Polar Express paths may
    overwrite (:func:`steepest.linalg.polar`; not when the dual norm is asked for, which reads G after).
    """
    if check:
        norm, p = resolve(norm, p)
        check_settings(
            norm,
            p,
            method=method,
            steps=steps,
            coefficients=coefficients,
            normalization=normalization,
            dtype=dtype,
            ns_eps=ns_eps,
        )
        check_magnitude(norm, p, magnitude)
    name = norm
    squeeze = G.ndim == 1
    G = _as_matrix(G, name)
    dn = None
    # The dual norm is a sum over every entry or singular value: float16 overflows above 65504 (a 512 x 512
    # sign step's ||G||_1 at |G| ~ 0.5), so it is returned in float32 at least, whatever G's dtype.
    wide = G.dtype if G.dtype.itemsize >= 4 else torch.float32
    if name == "frobenius":
        X, amax = prescale_with_scale(G.to(iteration_dtype(G.dtype, dtype)))
        fro = torch.linalg.matrix_norm(X, "fro", keepdim=True)
        D = (X / fro.clamp(min=torch.finfo(X.dtype).tiny)).to(G.dtype)
        if need_dual_norm:
            dn = fro.squeeze(-1).squeeze(-1).to(wide) * amax.to(wide)
    elif name == "linf":
        D = torch.sign(G)
        if need_dual_norm:
            dn = G.abs().sum(dim=(-2, -1), dtype=wide)
    elif name == "spectral" and method in (None, "svd"):
        D, s = polar_svd(G, dtype=iteration_dtype(G.dtype, dtype))
        dn = s.sum(dim=-1).to(wide) if need_dual_norm else None
    elif name == "spectral" and method is not None:  # (None was taken by the SVD branch above)
        D = polar(
            G,
            method,
            steps,
            # "auto" resolved by polar itself, which may then pick the eigh form (precision.EIGH_RULE)
            dtype="auto" if isinstance(dtype, str) and dtype == "auto" else iteration_dtype(G.dtype, dtype),
            coefficients=coefficients,
            normalization=normalization,
            eps=1e-7 if ns_eps is None else float(ns_eps),
            overwrite_input=overwrite_input and not need_dual_norm,
        )  # 1e-7: polar's (torch.optim.Muon's) default
        dn = _svdvals(G).sum(dim=-1).to(wide) if need_dual_norm else None
    elif name == "power":
        if need_dual_norm:
            _refuse_direction(name, p, "step_size='dual'")
        if p is None:  # check_norm gives power its exponent; a direct caller may not
            raise ValueError("norm='power' needs its exponent a")
        D = spectral_power(
            G,
            p,
            magnitude=magnitude or "frobenius",
            method="svd" if method == "svd" else "gram",
            dtype=power_dtype(dtype),
        )
    else:
        if p is None:  # resolve() gives a Schatten norm its p; a direct caller may not
            raise ValueError("norm='schatten' needs p (the Schatten exponent)")
        # float64 SVD unless asked otherwise: the power s^(q-1) amplifies rounding for q near 1 and large q.
        sdt = dtype_from_name(dtype)  # a dtype name ("float32") as well as a torch dtype
        D, s = schatten_dualize_and_singular_values(G, p, sdt if isinstance(sdt, torch.dtype) else torch.float64)
        if need_dual_norm:  # an empty matrix has no singular values and dual norm 0
            dn = (
                vector_pnorm(s, conjugate_exponent(p)).to(wide)
                if s.shape[-1]
                else G.new_zeros(G.shape[:-2], dtype=wide)
            )
    if squeeze:
        D = D.squeeze(0)
        dn = dn.squeeze(0) if dn is not None else None
    return D, dn


__all__ = [
    "NORMS",
    "DIRECTIONS",
    "ENTRYWISE",
    "power_dtype",
    "check_magnitude",
    "SCALE_RULES",
    "TENSOR_MODES",
    "POLAR_SETTINGS",
    "DTYPE_NAMES",
    "check_norm",
    "resolve",
    "is_entrywise",
    "iteration_dtype",
    "dtype_from_name",
    "dtype_name",
    "check_settings",
    "matrix_view",
    "from_matrix",
    "matrix_shape",
    "shape_scale",
    "rms_factor",
    "dualize_cost",
    "matrix_norm",
    "dual_norm",
    "dualize",
    "dualize_with_dual_norm",
]
