"""SteepestDescent: one torch.optim.Optimizer for every norm, plus an AdamW route for the rest.

The class only collects tensors and settings; the math of a step is :func:`steepest.optim.functional.
steepest_step` (the one step kernel), everything about a norm is in :mod:`steepest.geometry`, each
group's settings are validated once into a :class:`~steepest.optim.settings.StepSettings`
(:mod:`steepest.optim.settings`), how the dualize stage runs is the optimizer's executor
(:mod:`steepest.optim.executors`) and what a layer's geometry is may be decided by a chooser
(:mod:`steepest.optim.choosers`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from torch.optim.optimizer import ParamsT

from steepest import geometry as geo
from steepest.linalg.precision import device_kind
from steepest.optim import executors as E
from steepest.optim import functional as F
from steepest.optim import settings as S
from steepest.optim.functional import NonFiniteGradientError
from steepest.optim.loaded_state import checked_state_dict

NONFINITE = ("raise", "skip")
#: Roles from steepest.param_groups whose default weight decay is 0 (norm gains and biases).
NO_DECAY_ROLES = ("vector",)


class SteepestDescent(torch.optim.Optimizer):
    r"""Steepest descent under a matrix norm, with momentum, weight decay and a step-size rule.

    Per parameter block W (gradient G), each step computes (lecture notes on spectral descent;
    "Steepest descent under Schatten-p norms")::

        M = G | EMA momentum B <- mu B + (1-mu) G, M = B | Nesterov M = (1-mu) G + mu B
        D = argmax_{||D|| <= 1} <M, D>                 (steepest.dualize under the group's norm)
        W <- (1 - lr * weight_decay) W - lr * scale * D

    with ``scale = shape_scale(W, scale_rule)`` for ``step_size="fixed"`` and
    ``scale = shape_scale(W, scale_rule) * ||M||^dagger`` for ``step_size="dual"``. With
    ``norm="spectral", step_size="dual", lr=1/L_*`` this is exactly the lecture notes'
    ``X <- X - (||G||_*/L_*) polar(G)``; with ``norm="frobenius", step_size="dual"`` it is gradient
    descent ``X <- X - lr G``.

    Parameter groups may set ``algorithm="adamw"`` (with ``lr``, ``betas``, ``eps``, ``weight_decay``)
    so one optimizer trains a whole model: see :func:`steepest.param_groups`. Constructor arguments
    are the defaults of every group that does not set its own (AdamW groups take ``adamw_lr``);
    groups with ``role="vector"`` (norm gains, biases) default to ``weight_decay=0``.

    Args:
        params: parameters or parameter groups (dicts; any argument below can be set per group).
        lr: learning rate (finite, >= 0).
        norm: ``"spectral"``, ``"frobenius"``, ``"linf"``, ``"schatten"`` (needs ``p``) or ``"power"``
            (needs ``power``).
        p: Schatten exponent in [1, inf] (only with ``norm="schatten"``; p = inf is spectral).
        power: the knob's exponent a (only with ``norm="power"``): the step is U diag(s^a) V^T of M with
            ||D||_F = sqrt(rank) (a Muon step's RMS, so one lr transfers across a); a = 1 the Frobenius
            direction, a = 0 exactly the polar factor (SpecGD), 0 < a < 1 Schatten p = 1 + 1/a, a < 0 past
            spectral (no norm's steepest direction: ``step_size="dual"`` is refused).
            :mod:`steepest.linalg.spectral_power` derives the rule. ``power_magnitude``: that rule
            (``"frobenius"``, the default) or ``"spectral"`` (||D||_op = 1: a = 0 is still SpecGD, a low-rank
            direction gets a smaller step) or ``"schatten"`` (the Schatten-(1 + 1/a) dualizer, 0 <= a <= 1).
        momentum: EMA momentum in [0, 1). nesterov: Nesterov variant (needs momentum > 0).
        weight_decay: decoupled weight decay (finite, >= 0), applied as W *= 1 - lr * weight_decay.
        step_size: ``"fixed"`` or ``"dual"`` (see above).
        scale_rule: ``"none"``, ``"muon"`` sqrt(max(1, m/n)), ``"rms"`` 0.2 sqrt(max(m, n)) or
            ``"spectral"`` sqrt(fan_out / fan_in), on the (fan_out, fan_in) matrix view.
        method, steps, coefficients, normalization, ns_eps: how the polar factor is computed (spectral only;
            see :func:`steepest.polar`; ``ns_eps`` is its ``eps``, None: 1e-7); setting one for another norm
            is a ValueError.
        dtype: the dualizer's compute dtype (a torch dtype or its name); None (default) computes in
            the parameter's dtype promoted to at least float32, so float64 stays float64-accurate;
            ``"auto"``: bf16 for Newton-Schulz / Polar Express where the hardware has native bf16
            matmul and the matrix's smaller side reaches the device's measured threshold, float32
            elsewhere (:mod:`steepest.linalg.precision`).
        tensor_mode: ``"flatten"`` (conv kernels -> (out, in*kh*kw)) or ``"batch"`` (>= 3-D tensors
            as batches of matrices over their last two dims). A group may set ``transposed=True``
            for weights stored as (in, out) (GPT-2's Conv1D).
        nonfinite: ``"raise"`` (default) raises :class:`NonFiniteGradientError` naming the parameter
            before any weight changes; ``"skip"`` skips that parameter's step and counts it in
            ``optimizer.nonfinite_skipped`` and ``state[p]["nonfinite_skips"]``.
        adamw_lr, betas, eps: defaults for ``algorithm="adamw"`` groups (lr falls back to adamw_lr;
            betas a pair in [0, 1), eps > 0).
        executor: how the dualize stage runs (:mod:`steepest.optim.executors`): ``"auto"`` (default:
            same-shape matrices batched on accelerators and small ones on CPU; over the device mesh
            when the parameters are FSDP2 DTensors), ``"per_matrix"``, ``"batched"``,
            ``"distributed"`` or an executor instance. Visible and settable as ``opt.executor``.
        chooser: an object that picks each matrix's geometry and lr multiplier as training goes
            (:mod:`steepest.optim.choosers`; :class:`steepest.Adaptive` is this optimizer with the
            Spec-Sign / Davis-Drusvyatskiy chooser). Its state is saved in ``state_dict()["chooser"]``.
        maximize: torch.optim's flag, accepted only as False (also as a group key): every update
            descends, so ``maximize=True`` raises :class:`~steepest.optim.settings.SettingsError`;
            to maximize f, minimize -f.

    Every group's settings are validated once, when the group is added (and again when a user edits
    a key other than ``lr``/``weight_decay`` between steps, or loads a state_dict): lr and
    weight_decay finite and >= 0 with ``lr * weight_decay <= 1``, momentum in [0, 1), nesterov a bool,
    betas in [0, 1), eps > 0 (:mod:`steepest.optim.settings`).

    Group keys that torch trainers and wrappers inject (``foreach``, ``fused``, ``differentiable``,
    ``capturable``, ``param_names``) are accepted, kept in the group and ignored by the step (there is
    one implementation, neither differentiable nor capturable); any other key is kept as torch.optim
    keeps it.

    Example:
        >>> model = torch.nn.Linear(8, 4, bias=False)
        >>> opt = SteepestDescent(model.parameters(), lr=0.1, norm="spectral")
        >>> model(torch.randn(2, 8)).square().sum().backward(); opt.step()
    """

    #: nesterov=True with momentum 0 is a ValueError (it would silently mean plain M = G); torch.optim.Muon's
    #: contract accepts it, so steepest.Muon sets this False.
    _nesterov_needs_momentum = True

    #: Attributes beyond torch's (defaults, state, param_groups) that copy.deepcopy and pickle keep.
    _copied_attributes = ("nonfinite", "nonfinite_skipped", "_adamw_lr", "chooser", "_executor")

    def __init__(
        self,
        params: ParamsT,
        lr: float = 0.02,
        norm: str = "spectral",
        p: float | None = None,
        power: float | None = None,
        power_magnitude: str | None = None,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        step_size: str = "fixed",
        scale_rule: str = "none",
        method: str | None = None,
        steps: int | None = None,
        dtype: torch.dtype | str | None = None,
        coefficients: tuple | None = None,
        normalization: str | None = None,
        ns_eps: float | None = None,
        tensor_mode: str = "flatten",
        nonfinite: str = "raise",
        adamw_lr: float = 3e-4,
        betas: tuple[float, float] = (0.9, 0.95),
        eps: float = 1e-8,
        executor: str | E.Executor = "auto",
        chooser=None,
        maximize: bool = False,
    ) -> None:
        S.check_maximize(maximize)  # accepted for torch.optim's signature; only False is allowed
        if nonfinite not in NONFINITE:
            raise ValueError(f"nonfinite must be one of {NONFINITE}, got {nonfinite!r}")
        if chooser is not None and not callable(getattr(chooser, "choose", None)):
            raise TypeError(f"chooser must be a chooser object (steepest.optim.choosers), got {type(chooser).__name__}")
        defaults = dict(
            algorithm="steepest",
            lr=lr,
            norm=norm,
            p=p,
            power=power,
            power_magnitude=power_magnitude,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            step_size=step_size,
            scale_rule=scale_rule,
            method=method,
            steps=steps,
            dtype=geo.dtype_name(dtype),
            coefficients=coefficients,
            normalization=normalization,
            ns_eps=ns_eps,
            tensor_mode=tensor_mode,
            transposed=False,
            betas=betas,
            eps=eps,
        )
        # the AdamW defaults are checked here too (a steepest group carries but never reads them)
        S.build(dict(defaults, params=[], algorithm="adamw", lr=adamw_lr), 0)
        defaults["betas"] = tuple(betas)
        self.nonfinite = nonfinite
        self.nonfinite_skipped = 0
        self._adamw_lr = adamw_lr
        self.chooser = chooser
        self._check_defaults(defaults)
        self._settings: list = []
        super().__init__(params, defaults)
        self.executor = executor
        if chooser is not None:
            chooser.attach(self)

    # ------------------------------------------------------------------ validation
    def _candidates(self) -> tuple | None:
        """The geometries the chooser may give a matrix (None: each group's own norm)."""
        return getattr(self.chooser, "candidates", None) if getattr(self, "chooser", None) is not None else None

    def _check_defaults(self, defaults: dict) -> None:
        """The constructor's own settings must fit its norm (or, with a chooser, at least one candidate)."""
        candidates = self._candidates()
        if candidates is None:
            norm, param = S.norm_param(defaults)
            geo.check_norm(norm, param)
            geo.check_settings(norm, param, **{k: defaults[k] for k in S.DUALIZER_KEYS})
            return
        err = ValueError("the chooser has no candidate geometries")
        for g in candidates:
            try:
                geo.check_settings(g, None, **{k: defaults[k] for k in S.DUALIZER_KEYS})
                return
            except ValueError as e:
                err = e
        raise err

    def add_param_group(self, param_group: dict) -> None:
        """torch.optim's add_param_group, validated; a rejected group leaves the optimizer unchanged."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a param group must be a dict, got {type(param_group).__name__}")
        given = tuple(param_group)
        group = dict(param_group)
        if group.get("algorithm") == "adamw" and "lr" not in group:
            group["lr"] = self._adamw_lr
        if group.get("role") in NO_DECAY_ROLES and "weight_decay" not in group:
            group["weight_decay"] = 0.0
        if "dtype" in group:
            group["dtype"] = geo.dtype_name(group["dtype"])
        if "norm" in group:  # a group with its own norm does not inherit another norm's exponent (p, power)
            for key, owner in (("p", "schatten"), ("power", "power")):
                if group["norm"] != owner and key not in group:
                    group[key] = None
        n = len(self.param_groups)
        super().add_param_group(group)
        try:
            self._settings_of(n, given)
        except Exception:
            del self.param_groups[n:]  # atomic: a rejected group is not kept
            del self._settings[n:]
            raise
        if self.param_groups[n].get("dtype") == "auto":
            # decide the device kinds now, eagerly: the first decision reads /proc/cpuinfo (or times a probe),
            # which a torch.compile(opt.step, fullgraph=True) graph cannot contain
            for device in {p.device.type for p in self.param_groups[n]["params"]}:
                device_kind(device)
        if getattr(self, "executor", None) is not None:
            self.executor.groups_changed()

    def _settings_of(self, index: int, given: tuple | None = None) -> S.StepSettings:
        """The group's :class:`StepSettings`: cached, rebuilt (validated) when the group's keys changed."""
        group = self.param_groups[index]
        cache = self._settings
        if index < len(cache):
            ref, snap, settings = cache[index]
            if ref is group and snap == S.snapshot(group):
                return settings
        # given: the keys a new group sets itself; a re-validation (edited or loaded group) checks the
        # dualizer keys that apply to the group's norm only
        settings = S.build(
            group,
            index,
            given=given or (),
            candidates=self._candidates(),
            nesterov_needs_momentum=self._nesterov_needs_momentum,
        )
        entry = (group, S.snapshot(group), settings)
        if index < len(cache):
            cache[index] = entry
        else:
            cache.extend([None] * (index - len(cache)))
            cache.append(entry)
        return settings

    # ------------------------------------------------------------------ the executor
    @property
    def executor(self) -> E.Executor:
        """How the dualize stage runs (:mod:`steepest.optim.executors`); assign a name or an instance."""
        return self._executor

    @executor.setter
    def executor(self, spec) -> None:
        self._executor = E.resolve(spec, [p for g in self.param_groups for p in g["params"]])

    @property
    def batch_matrices(self) -> bool | None:
        """Deprecated: the executor (None: ``Batched()``, True: ``Batched(cpu=True)``, False: ``PerMatrix()``)."""
        warnings.warn(
            "batch_matrices is deprecated: use opt.executor (steepest.optim.executors)",
            DeprecationWarning,
            stacklevel=2,
        )
        local = getattr(self._executor, "local", self._executor)
        return getattr(local, "cpu", False)

    @batch_matrices.setter
    def batch_matrices(self, value: bool | None) -> None:
        warnings.warn(
            "batch_matrices is deprecated: pass executor='per_matrix' or 'batched', or an executor "
            "instance (steepest.optim.executors)",
            DeprecationWarning,
            stacklevel=2,
        )
        if value not in (None, True, False):
            raise ValueError(f"batch_matrices must be None, True or False, got {value!r}")
        local = E.PerMatrix() if value is False else E.Batched(cpu=value)
        if hasattr(self._executor, "local"):
            self._executor.local = local
        else:
            self._executor = local

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        sd = super().state_dict()
        if self.chooser is not None:
            sd["chooser"] = self.chooser.state_dict()
        return sd

    def load_state_dict(self, state_dict: dict) -> None:
        """torch.optim's load_state_dict, validated like the constructor's arguments; all or nothing.

        Every group's settings are validated (:mod:`steepest.optim.settings`) and must have this
        optimizer's geometry; keys missing from an older state_dict take this optimizer's defaults;
        every state tensor must have its parameter's shape, a floating dtype and finite values; the
        chooser checks its own state. On any error nothing is loaded.
        """
        state_dict = checked_state_dict(self, state_dict)
        extra = state_dict.pop("chooser", None)
        legacy = state_dict.pop("adaptive", None)  # Adaptive's state_dict before choosers existed
        extra = legacy if extra is None else extra
        super().load_state_dict(state_dict)
        self._settings = []
        for i in range(len(self.param_groups)):
            self._settings_of(i)
        if self.chooser is not None and extra is not None:
            self.chooser.load_state_dict(extra)
        self.executor.groups_changed()

    # ------------------------------------------------------------------ copies
    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.update({k: self.__dict__[k] for k in self._copied_attributes if k in self.__dict__})
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._settings = []
        self.__dict__.setdefault("chooser", None)
        if self.__dict__.get("_executor") is None:
            self._executor = E.Batched()

    # ------------------------------------------------------------------ stepping
    def _name(self, gi: int, j: int) -> str:
        names = self.param_groups[gi].get("names")
        p = self.param_groups[gi]["params"][j]
        who = names[j] if names and j < len(names) else f"param_groups[{gi}]['params'][{j}]"
        return f"{who} (shape {tuple(p.shape)})"

    def _blocks(self, with_missing: bool = False) -> list[F.Block]:
        """One :class:`~steepest.optim.functional.Block` per parameter with a gradient (or every one)."""
        out = []
        every = with_missing or self._executor.all_blocks
        for gi, group in enumerate(self.param_groups):
            cfg = self._settings_of(gi)
            lr, wd = S.check_lr_wd(group, gi)
            step_lr = group["lr"] if isinstance(group["lr"], torch.Tensor) else lr  # a tensor lr as torch applies it
            for j, p in enumerate(group["params"]):
                if every or p.grad is not None:
                    label = F.param_label(group, gi, j)
                    out.append(F.Block(p, p.grad, self.state, cfg, self._name(gi, j), step_lr, wd, label))
        return out

    def _count_skip(self, block: F.Block) -> None:
        block.state["nonfinite_skips"] = block.state.get("nonfinite_skips", 0) + 1
        self.nonfinite_skipped += 1

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        """Take one step; returns the closure's loss if a closure is given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        F.steepest_step(
            self._blocks(),
            nonfinite=self.nonfinite,
            on_skip=self._count_skip,
            executor=self._executor,
            chooser=self.chooser,
        )
        if self.chooser is not None:
            self.chooser.observe(self.chooser.t, loss=loss)
        return loss


__all__ = ["SteepestDescent", "NonFiniteGradientError"]
