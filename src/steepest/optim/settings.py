"""StepSettings: one parameter group's step settings, validated once, read by the step kernel.

A torch.optim parameter group is a dict a user may edit at any time. The step kernel does not read
it: each group is turned into a frozen :class:`StepSettings` when the group is added (constructor,
``add_param_group``, ``load_state_dict``), and :func:`build` is the one place where every documented
limit is enforced (issue 23 item 5):

* ``lr`` and ``weight_decay`` finite and >= 0, with ``lr * weight_decay <= 1`` (decoupled decay
  multiplies W by ``1 - lr * weight_decay``: a negative factor flips the weights);
* ``momentum`` in [0, 1) and ``nesterov`` a real bool (``"False"`` is refused), Nesterov needs
  momentum > 0; ``step_size``, ``scale_rule``, ``tensor_mode`` from their lists, ``transposed`` a bool;
* the norm and its dualizer settings (:func:`steepest.geometry.check_settings`);
* AdamW groups: ``betas`` a pair in [0, 1), ``eps`` finite and > 0.

``lr`` and ``weight_decay`` are read from the group at every step (lr schedulers change ``lr`` every
step), with the cheap check of :func:`check_lr_wd`; every other key is compared with the snapshot
taken when the settings were built (:func:`snapshot`, a tuple of the values), and an edited group is
validated again before the step. Messages name the setting and the group (and its parameters' names
when the group has ``names``).

Example:
    >>> s = build(dict(params=[], lr=0.1, norm="spectral", momentum=0.9, nesterov=True, weight_decay=0.0,
    ...                step_size="fixed", scale_rule="muon", method="newton_schulz", steps=5, coefficients=None,
    ...                normalization=None, dtype=None, tensor_mode="flatten", transposed=False), 0)
    >>> s.norm, s.momentum, s.batch_key("spectral", None) == s.batch_key("spectral", None)
    ('spectral', 0.9, True)
"""

from __future__ import annotations

import dataclasses
import math

import torch

from steepest import geometry as geo

ALGORITHMS = ("steepest", "adamw")
STEP_SIZES = ("fixed", "dual")
#: Group keys that configure the dualizer; checked against the group's norm when a group sets them.
DUALIZER_KEYS = geo.POLAR_SETTINGS + ("dtype",)
#: Group keys that torch trainers and wrappers inject (torch.optim's own options, Lightning/HF's
#: ``param_names``): accepted, kept in the group, ignored by the step.
TORCH_KEYS = ("foreach", "fused", "differentiable", "capturable", "param_names")
#: Every key a steepest group's settings read (besides lr and weight_decay, read at each step).
STEEPEST_KEYS = (
    "algorithm",
    "norm",
    "p",
    "power",
    "power_magnitude",
    "momentum",
    "nesterov",
    "step_size",
    "scale_rule",
    "method",
    "steps",
    "coefficients",
    "normalization",
    "ns_eps",
    "dtype",
    "tensor_mode",
    "transposed",
    "row_blocks",
    "betas",
    "eps",
)


class SettingsError(ValueError):
    """A group setting outside its documented range (a ValueError naming the setting and the group)."""


def where(group: dict, index: int) -> str:
    """``param_groups[i]``, with the first parameter names when the group has ``names``."""
    names = group.get("names")
    if names:
        shown = ", ".join(str(n) for n in list(names)[:3]) + (", ..." if len(names) > 3 else "")
        return f"param_groups[{index}] ({shown})"
    return f"param_groups[{index}]"


def _number(
    group: dict,
    index: int,
    name: str,
    value,
    lo: float,
    hi: float = math.inf,
    *,
    hi_open: bool = False,
    lo_open: bool = False,
) -> float:
    """``value`` as a float in the range, or a SettingsError naming ``name`` and the group."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise SettingsError(
                f"{name} as a tensor must have one element, got shape {tuple(value.shape)} ({where(group, index)})"
            )
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise SettingsError(f"{name} must be a number, got {value!r} ({where(group, index)})")
    if value < lo or value > hi or (hi_open and value == hi) or (lo_open and value == lo):
        bound = ("(" if lo_open else "[") + f"{lo}, {hi}" + (")" if hi_open else "]")
        raise SettingsError(f"{name} must be in {bound}, got {value!r} ({where(group, index)})")
    return float(value)


def check_maximize(maximize: object, context: str = "") -> None:
    """Refuse ``maximize`` other than False (torch.optim's flag): every steepest update descends."""
    if maximize is not False:
        raise SettingsError(
            f"maximize={maximize!r} is not supported: steepest minimizes; to maximize f, minimize -f "
            f"(negate the loss){context}"
        )


def check_lr_wd(group: dict, index: int) -> tuple[float, float]:
    """The per-step check of the two keys schedulers change: finite, >= 0, lr * weight_decay <= 1."""
    lr, wd = group["lr"], group.get("weight_decay", 0.0)
    lr = float(lr) if isinstance(lr, torch.Tensor) else lr
    for key, v in (("lr", lr), ("weight_decay", wd)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
            raise SettingsError(
                f"param_groups[{index}]['{key}'] must be a finite number >= 0, got {v!r}; no parameter was changed"
            )
    if lr * wd > 1.0:
        raise SettingsError(
            f"param_groups[{index}]['lr'] * ['weight_decay'] = {lr} * {wd} > 1: the decay factor "
            "1 - lr * weight_decay would be negative; lower weight_decay. No parameter was changed"
        )
    return lr, wd


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """Everything a step reads from one parameter group, except ``lr`` and ``weight_decay``.

    ``norm``/``p`` are canonical (:func:`steepest.geometry.resolve`: Schatten p = inf is spectral; for
    ``norm="power"``, ``p`` holds the group's ``power`` exponent a, the registry's convention) and
    ``dtype`` is the torch dtype (or None / "auto"). :meth:`update_kwargs` and :meth:`batch_key` are
    computed once per geometry and cached (a chooser may step a block in another geometry).
    """

    algorithm: str = "steepest"
    norm: str | None = "spectral"
    p: float | None = None
    momentum: float = 0.0
    nesterov: bool = False
    step_size: str = "fixed"
    scale_rule: str = "none"
    method: str | None = None
    steps: int | None = None
    coefficients: tuple | None = None
    normalization: str | None = None
    dtype: torch.dtype | str | None = None
    tensor_mode: str = "flatten"
    transposed: bool = False
    ns_eps: float | None = None  #: the polar iteration's normalization floor (torch.optim.Muon's eps); None: 1e-7
    row_blocks: int = 1  #: blocks of rows of the matrix view dualized separately (split_qkv=/heads=)
    power_magnitude: str | None = None  #: the power geometry's magnitude rule (None: "frobenius")
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    _cache: dict = dataclasses.field(default_factory=dict, compare=False, repr=False, hash=False)

    @property
    def adamw(self) -> bool:
        return self.algorithm == "adamw"

    def update_kwargs(self, norm: str | None = None, p: float | None = None, folded: bool = False) -> dict:
        """The keyword arguments of :func:`steepest.optim.functional.compute_update` in geometry
        ``(norm, p)`` (default: the group's), without re-validation (``check=False``). ``folded``: the
        shape scale is applied with the lr instead (:meth:`Block.fold_scale`), so ``scale_rule="none"``.
        Cached: do not modify."""
        norm = self.norm if norm is None else norm
        key = ("kw", norm, p, folded)
        out = self._cache.get(key)
        if out is None:
            out = dict(
                norm=norm,
                p=p,
                step_size=self.step_size,
                scale_rule="none" if folded else self.scale_rule,
                tensor_mode=self.tensor_mode,
                transposed=self.transposed,
                row_blocks=self.row_blocks,
                dtype=self.dtype,
                check=False,
            )
            if norm == "power":  # method="svd" picks the SVD reference path; the rest configure the polar factor
                out.update(method="svd" if self.method == "svd" else None, magnitude=self.power_magnitude)
            if norm == "spectral":
                out.update(
                    method=self.method,
                    steps=self.steps,
                    coefficients=self.coefficients,
                    normalization=self.normalization,
                    ns_eps=self.ns_eps,
                )
            self._cache[key] = out
        return out

    def batch_key(self, norm: str | None = None, p: float | None = None, folded: bool = False) -> tuple:
        """A hashable key: blocks of equal keys (and equal view shapes) share one batched dualization."""
        norm = self.norm if norm is None else norm
        key = ("key", norm, p, folded)
        out = self._cache.get(key)
        if out is None:
            kw = self.update_kwargs(norm, p, folded)
            out = self._cache[key] = tuple((k, repr(v)) for k, v in sorted(kw.items()))
        return out


def snapshot(group: dict) -> tuple:
    """The group's setting values (all but lr and weight_decay): equal snapshots, equal settings."""
    return (len(group["params"]),) + tuple(group.get(k) for k in STEEPEST_KEYS)


def norm_param(group: dict) -> tuple:
    """The group's ``(norm, parameter)`` for the geometry registry: Schatten's ``p``, or ``power``'s
    exponent a (the group key ``power``; the registry takes it in the place of p). ValueError when a
    norm's parameter is given to another norm."""
    norm, p, power = group.get("norm"), group.get("p"), group.get("power")
    if norm == "power":
        if p is not None:
            raise ValueError(f"norm='power' takes its exponent as power=a, not p (got p={p!r})")
        return norm, power
    if power is not None:
        raise ValueError(
            f"power is only used with norm='power' (the knob U diag(s^a) V^T), got power={power!r} with norm={norm!r}"
        )
    return norm, p


def _check_dualizer(group: dict, index: int, keys: tuple, candidates: tuple | None) -> None:
    """Dualizer settings must apply: with ``candidates`` (a chooser's geometries) to the spectral
    candidate if there is one (they configure only it); else to the group's norm, every key for a
    spectral group, those in ``keys`` (set by the group itself) otherwise."""
    try:
        if candidates is not None:
            if "spectral" in candidates:
                geo.check_settings("spectral", None, **{k: group.get(k) for k in DUALIZER_KEYS})
            else:
                geo.dtype_from_name(group["dtype"])
            return
        norm, param = norm_param(group)
        spectral = geo.resolve(norm, param)[0] == "spectral"
        use = [k for k in DUALIZER_KEYS if spectral or k in keys]
        geo.check_settings(norm, param, **{k: group.get(k) for k in use})
    except ValueError as e:
        raise SettingsError(f"{e} ({where(group, index)})") from None


def build(
    group: dict, index: int, *, given: tuple = (), candidates: tuple | None = None, nesterov_needs_momentum: bool = True
) -> StepSettings:
    """Validate ``group`` (a complete group: defaults filled in) and return its :class:`StepSettings`.

    ``given``: the keys the group sets itself (dualizer keys among them are checked against a
    non-spectral norm too; those inherited from the constructor are then unused; a spectral group's
    are always checked). ``candidates``: the geometries a chooser may
    give the group's matrices (None: the group's own norm). ``nesterov_needs_momentum=False``: Nesterov
    with momentum 0 is accepted (it is then M = G; torch.optim.Muon accepts it, so steepest.Muon does).
    """
    algorithm = group.get("algorithm", "steepest")
    if algorithm not in ALGORITHMS:
        raise SettingsError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r} ({where(group, index)})")
    check_maximize(group.get("maximize", False), f" ({where(group, index)})")
    lr = _number(group, index, "lr", group["lr"], 0.0, math.inf, hi_open=True)
    wd = _number(group, index, "weight_decay", group.get("weight_decay", 0.0), 0.0, math.inf, hi_open=True)
    if lr * wd > 1.0:
        raise SettingsError(
            f"lr * weight_decay must be <= 1 (the decay factor 1 - lr * weight_decay would be "
            f"negative), got {lr} * {wd} ({where(group, index)})"
        )
    for p in group["params"]:
        if p.is_complex():
            raise SettingsError(f"complex parameters are not supported (shape {tuple(p.shape)}, {p.dtype})")
    if algorithm == "adamw":
        betas = group.get("betas")
        if isinstance(betas, torch.Tensor) or not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise SettingsError(f"betas must be a pair (beta1, beta2) in [0, 1), got {betas!r} ({where(group, index)})")
        b1 = _number(group, index, "betas[0]", betas[0], 0.0, 1.0, hi_open=True)
        b2 = _number(group, index, "betas[1]", betas[1], 0.0, 1.0, hi_open=True)
        eps = _number(group, index, "eps", group.get("eps"), 0.0, math.inf, hi_open=True, lo_open=True)
        return StepSettings(algorithm="adamw", norm=None, betas=(b1, b2), eps=eps)
    try:
        norm, p = geo.resolve(*norm_param(group))
    except ValueError as e:
        raise SettingsError(f"{e} ({where(group, index)})") from None
    pm = group.get("power_magnitude")
    if pm is not None and norm != "power" and "power" not in (candidates or ()):
        raise SettingsError(
            f"power_magnitude={pm!r} only applies to norm='power' (or a chooser that steps in it), not "
            f"norm={group['norm']!r} ({where(group, index)})"
        )
    try:
        geo.check_magnitude("power", p if norm == "power" else 0.0, pm)
    except ValueError as e:
        raise SettingsError(f"{e} ({where(group, index)})") from None
    if norm in geo.DIRECTIONS and group["step_size"] == "dual":
        raise SettingsError(
            f"step_size='dual' needs a dual norm, and norm='power' is a direction with a magnitude rule "
            f"(||D||_F = sqrt(rank)); use step_size='fixed', or norm='schatten' with p = 1 + 1/a for "
            f"0 <= a <= 1 ({where(group, index)})"
        )
    _check_dualizer(group, index, tuple(k for k in DUALIZER_KEYS if k in given), candidates)
    momentum = _number(group, index, "momentum", group["momentum"], 0.0, 1.0, hi_open=True)
    nesterov = group["nesterov"]
    if not isinstance(nesterov, bool):
        raise SettingsError(f"nesterov must be a bool, got {nesterov!r} ({where(group, index)})")
    if nesterov and momentum <= 0 and nesterov_needs_momentum:
        raise SettingsError(f"nesterov=True needs momentum > 0 ({where(group, index)})")
    for key, allowed in (("step_size", STEP_SIZES), ("scale_rule", geo.SCALE_RULES), ("tensor_mode", geo.TENSOR_MODES)):
        if group[key] not in allowed:
            raise SettingsError(f"{key} must be one of {allowed}, got {group[key]!r} ({where(group, index)})")
    if not isinstance(group.get("transposed", False), bool):
        raise SettingsError(f"transposed must be a bool, got {group['transposed']!r} ({where(group, index)})")
    rb = group.get("row_blocks", 1)
    if rb != 1:  # the block layout of param_groups(split_qkv=/heads=): blocks of rows of the matrix view
        for q in group["params"]:
            rows = geo.matrix_shape(tuple(q.shape), group["tensor_mode"], bool(group.get("transposed", False)))
            if isinstance(rb, bool) or not isinstance(rb, int) or rb < 1 or q.ndim < 2 or rows[-2] % rb:
                raise SettingsError(
                    f"row_blocks={rb!r} must be an int that divides the {rows[-2]} rows of the matrix "
                    f"view of a parameter of shape {tuple(q.shape)} ({where(group, index)})"
                )
    if not geo.is_entrywise(norm):
        names = group.get("names")
        for j, q in enumerate(group["params"]):
            if q.ndim < 2:
                who = names[j] if names and j < len(names) else f"param_groups[{index}]['params'][{j}]"
                raise SettingsError(
                    f"parameter {who} has shape {tuple(q.shape)}, but norm={group['norm']!r} needs a "
                    "matrix (>= 2-D). Route vectors (biases, norm gains) to AdamW with "
                    "steepest.param_groups(model), or use an entrywise norm ('frobenius', 'linf') for them."
                )
    coefficients = group.get("coefficients")
    if isinstance(coefficients, list):
        coefficients = tuple(tuple(c) if isinstance(c, list) else c for c in coefficients)
    return StepSettings(
        algorithm="steepest",
        norm=norm,
        p=p,
        momentum=momentum,
        nesterov=nesterov,
        step_size=group["step_size"],
        scale_rule=group["scale_rule"],
        method=group.get("method"),
        steps=group.get("steps"),
        coefficients=coefficients,
        normalization=group.get("normalization"),
        dtype=geo.dtype_from_name(group.get("dtype")),
        tensor_mode=group["tensor_mode"],
        transposed=bool(group.get("transposed", False)),
        ns_eps=group.get("ns_eps"),
        row_blocks=int(rb),
        power_magnitude=pm,
    )


__all__ = [
    "StepSettings",
    "SettingsError",
    "build",
    "check_maximize",
    "snapshot",
    "check_lr_wd",
    "where",
    "ALGORITHMS",
    "STEP_SIZES",
    "DUALIZER_KEYS",
    "TORCH_KEYS",
    "norm_param",
    "STEEPEST_KEYS",
]
