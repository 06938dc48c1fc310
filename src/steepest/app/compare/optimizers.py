"""The optimizers ``steepest compare`` runs side by side, each built from a model and a learning rate.

Every entry of :data:`OPTIMIZERS` is ``name -> OptimizerSpec``: a label for tables, a builder
``(model, lr, aux_lr, routing) -> optimizer`` and a fallback learning rate used when no tuned value
is shipped (``steepest/app/tuned.json``). In the hybrid optimizers the parameters that
:func:`steepest.param_groups` routes away from matrix geometry (embeddings, the output head, biases,
norm gains) are trained by AdamW with ``aux_lr`` (the tuned AdamW learning rate), so only the
matrix learning rate differs between geometries. No weight decay anywhere (short runs; keeps the
comparison about the geometry).

Example:
    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    >>> opt = build_optimizer("muon", model, lr=0.02, aux_lr=3e-3)
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable

import torch
from torch import nn

import steepest
from steepest.linalg.precision import auto_dtype

ADAMW_BETAS = (0.9, 0.95)


class OptimizerPair:
    """Two optimizers stepped together (``torch.optim.Muon`` for 2-D matrices + AdamW for the rest).

    Exposes what the training loop needs: ``step``, ``zero_grad``, ``param_groups`` (both lists,
    concatenated, so schedules reach every group), ``state`` and ``state_dict``/``load_state_dict``.
    """

    def __init__(self, *optimizers: torch.optim.Optimizer) -> None:
        self.optimizers = [o for o in optimizers if o is not None]

    @property
    def param_groups(self) -> list[dict]:
        return [g for o in self.optimizers for g in o.param_groups]

    @property
    def state(self) -> dict:
        return {k: v for o in self.optimizers for k, v in o.state.items()}

    def step(self, closure=None):
        if closure is not None:
            raise ValueError("OptimizerPair.step does not take a closure; compute the loss first")
        for o in self.optimizers:
            o.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        if len(state.get("optimizers", ())) != len(self.optimizers):
            raise ValueError("checkpoint holds a different number of optimizers than this OptimizerPair")
        for o, s in zip(self.optimizers, state["optimizers"]):
            o.load_state_dict(s)


def _split(model: nn.Module, routing: dict, two_d_only: bool = False) -> tuple[list, list]:
    """(matrix params, other params) by :func:`steepest.param_groups`; ``two_d_only`` sends >2-D to the rest."""
    matrix: list[nn.Parameter] = []
    rest: list[nn.Parameter] = []
    for g in steepest.param_groups(model, **routing):
        for p in g["params"]:
            ok = g["algorithm"] == "steepest" and (p.ndim == 2 or not two_d_only)
            (matrix if ok else rest).append(p)
    return matrix, rest


def _adamw(params, lr):
    return torch.optim.AdamW(params, lr=lr, betas=ADAMW_BETAS, weight_decay=0.0) if params else None


def _groups(model, aux_lr, routing, **matrix_options):
    return steepest.param_groups(
        model, adamw_lr=aux_lr, adamw_betas=ADAMW_BETAS, matrix_options=matrix_options, **routing
    )


def _build_adamw(model, lr, aux_lr, routing):
    return _adamw(list(model.parameters()), lr)


def _build_torch_muon(model, lr, aux_lr, routing):
    matrix, rest = _split(model, routing, two_d_only=True)  # torch.optim.Muon takes 2-D parameters only
    muon = torch.optim.Muon(matrix, lr=lr, weight_decay=0.0, momentum=0.95, nesterov=True) if matrix else None
    return OptimizerPair(muon, _adamw(rest, aux_lr))


def _build_muon(model, lr, aux_lr, routing):
    return steepest.Muon(_groups(model, aux_lr, routing), lr=lr, weight_decay=0.0)


def _build_specgd(model, lr, aux_lr, routing):
    return steepest.SpecGD(
        _groups(model, aux_lr, routing), lr=lr, momentum=0.95, nesterov=True, method="polar_express", scale_rule="muon"
    )


def _build_signum(model, lr, aux_lr, routing):
    return steepest.SignSGD(_groups(model, aux_lr, routing), lr=lr, momentum=0.9)


def _build_schatten(model, lr, aux_lr, routing):
    return steepest.SchattenDescent(
        _groups(model, aux_lr, routing), lr=lr, p=SCHATTEN_P, momentum=0.95, nesterov=True, scale_rule="muon"
    )


#: Adaptive's plumbing is SpecGD's (``_build_specgd``): a layer on spectral steps is stepped exactly as
#: SpecGD with the same lr (``rms_match="spectral"``), and a Frobenius step gets a full-rank spectral step's
#: RMS, so the difference between ``adaptive`` and ``specgd`` comes from the choices alone.
ADAPTIVE_PLUMBING = dict(momentum=0.95, nesterov=True, scale_rule="muon", rms_match="spectral")

#: Each geometry at its own tuned step: on charlm the fixed ``frobenius`` geometry's tuned lr is 1/4 of
#: ``specgd``'s (0.005 vs 0.02, tuned.json), so Adaptive's Frobenius steps get 0.25x (at 1x its early
#: Frobenius choices cost 170 vs 140 steps to AdamW's loss on seed 0; benchmarks/HISTORY.md, "Issue 11").
#: On mnist-cnn the two tuned lrs are equal, and DD never chose Frobenius there.
ADAPTIVE_LR_MULTIPLIERS = {"frobenius": 0.25}


def _build_adaptive(model, lr, aux_lr, routing):
    """steepest.Adaptive with activation hooks on ``model``: the Davis-Drusvyatskiy test (seed 001: spectral
    when nr(G) >= st(A), else Frobenius) every 10 steps per layer; otherwise SpecGD's settings
    (:data:`ADAPTIVE_PLUMBING`, Polar Express), so with spectral chosen everywhere it is ``specgd``;
    Frobenius steps at :data:`ADAPTIVE_LR_MULTIPLIERS`.

    Why not the Spec-Sign index here: on charlm its quadratic-model score (K-FAC curvature of each
    direction) prefers the Frobenius direction for most layers, and that run ended well behind every
    spectral optimizer (benchmarks/HISTORY.md, "Train"); the index remains available as
    ``steepest.Adaptive(..., criterion="spec_sign")``.
    """
    Adaptive = getattr(steepest, "Adaptive", None)
    if Adaptive is None:
        raise RuntimeError("steepest.Adaptive is not available in this build")
    return Adaptive(
        _groups(model, aux_lr, routing),
        lr=lr,
        model=model,
        criterion="dd",
        candidates=("spectral", "frobenius"),
        method="polar_express",
        lr_multipliers=ADAPTIVE_LR_MULTIPLIERS,
        **ADAPTIVE_PLUMBING,
    )


def _build_adaptive_sign(model, lr, aux_lr, routing):
    """Seed 002's choice: spectral or sign per layer by the Spec-Sign index (noise scales from 4 microbatches,
    K-FAC curvature; the gradient-only proxy for layers without hooked activations, e.g. embeddings), every
    10 steps, SpecGD's plumbing (a sign step at a spectral step's RMS)."""
    return steepest.Adaptive(
        _groups(model, aux_lr, routing),
        lr=lr,
        model=model,
        criterion="spec_sign",
        candidates=("spectral", "linf"),
        method="polar_express",
        **ADAPTIVE_PLUMBING,
    )


def _build_adaptive_oracle(model, lr, aux_lr, routing, held_out):
    """The upper bound for ``adaptive``: the same candidates and plumbing, but every 10 steps each layer takes
    the geometry whose step measurably lowers a held-out batch's loss most (the layer oracle, a line search
    per layer and candidate; :func:`steepest.diagnostics.layer_oracle`). ``held_out()``: that loss."""
    return steepest.Adaptive(
        _groups(model, aux_lr, routing),
        lr=lr,
        model=model,
        criterion="oracle",
        oracle_loss=held_out,
        candidates=("spectral", "frobenius"),
        method="polar_express",
        lr_multipliers=ADAPTIVE_LR_MULTIPLIERS,
        **ADAPTIVE_PLUMBING,
    )


def _build_frobenius(model, lr, aux_lr, routing):
    """Fixed Frobenius geometry (normalized momentum M / ||M||_F per layer) with Adaptive's plumbing: the
    RMS of a full-rank spectral step under Muon's rule, so ``lr`` means what it means for ``specgd``."""
    return steepest.Adaptive(
        _groups(model, aux_lr, routing), lr=lr, candidates=("frobenius",), initial="frobenius", **ADAPTIVE_PLUMBING
    )


def _build_sgd(model, lr, aux_lr, routing):
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)


#: Schatten exponent of the ``schatten`` entry: between Frobenius (p=2) and spectral (p=inf).
SCHATTEN_P = 8.0

#: The plumbing of the knob entries: SpecGD's (momentum, Nesterov, Muon's scale rule, Polar Express for the
#: layers at a = 0), so a knob held at 0 is ``specgd`` and the entries differ from it by the knob alone.
KNOB_PLUMBING = dict(momentum=0.95, nesterov=True, scale_rule="muon", method="polar_express")
#: The ``power`` entry's fixed knob: a = 1/7 is the Schatten-8 direction (the ``schatten`` entry's) at the
#: power geometry's RMS-matched magnitude, so ``power`` vs ``schatten`` isolates the magnitude rule.
POWER_A = 1.0 / 7.0


def _build_power(model, lr, aux_lr, routing):
    return steepest.SteepestDescent(
        _groups(model, aux_lr, routing), lr=lr, norm="power", power=POWER_A, **dict(KNOB_PLUMBING, method=None)
    )


def _build_knob_schedule(model, lr, aux_lr, routing, total_steps):
    """DynMuon-style (arXiv 2605.17109): every hidden matrix's knob a from 0.25 to -0.25, linearly over the run
    (the linear shape is assumed; steepest.optim.time_choosers.dynmuon)."""
    from steepest.optim.time_choosers import dynmuon

    return steepest.SpecGD(_groups(model, aux_lr, routing), lr=lr, chooser=dynmuon(total_steps), **KNOB_PLUMBING)


#: The magnitude rule of the measured choosers' steps (``power_magnitude``): ||D||_op = 1. They choose a
#: near 1 on low-stable-rank layers early, where the RMS-matched rule's step is too large at specgd's lr
#: (charlm default, lr 0.02, 60 steps, seed 0, mean training loss of steps 50-59: schatten-choice 2.479
#: spectral vs 2.651 frobenius, phase-switch 2.530 vs 3.202; specgd 2.381).
CHOOSER_MAGNITUDE = "spectral"


def _build_schatten_choice(model, lr, aux_lr, routing):
    """arXiv 2605.19781's per-layer exponent every 100 steps (EMAs every 10), at :data:`CHOOSER_MAGNITUDE`."""
    from steepest.optim.measured_choosers import SchattenChoice

    chooser = SchattenChoice(model, every=100, measure_every=10)
    return steepest.SpecGD(
        _groups(model, aux_lr, routing), lr=lr, chooser=chooser, power_magnitude=CHOOSER_MAGNITUDE, **KNOB_PLUMBING
    )


def _build_phase_switch(model, lr, aux_lr, routing):
    """A measured phase switch: each layer starts on the Frobenius direction (a = 1, at ||D||_op = 1) and moves to spectral (a = 0) once nr(G)/st(A) stays above 1.25 for 3 decisions (every 10 steps);
    back below 0.8 likewise."""
    from steepest.optim.measured_choosers import PhaseSwitch

    chooser = PhaseSwitch(statistic="nr_st", model=model, every=10, patience=3)
    return steepest.SpecGD(
        _groups(model, aux_lr, routing), lr=lr, chooser=chooser, power_magnitude=CHOOSER_MAGNITUDE, **KNOB_PLUMBING
    )


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """How to build one compared optimizer: ``build(model, lr, aux_lr, routing)``."""

    label: str
    build: Callable
    fallback_lr: float
    hybrid: bool = True
    #: the builder takes a fifth argument, ``held_out()``: the loss on a held-out training batch (runner.py)
    held_out: bool = False
    #: the builder takes a last argument, the run's number of steps (a schedule over the run)
    total_steps: bool = False


OPTIMIZERS: dict[str, OptimizerSpec] = {
    "adamw": OptimizerSpec("AdamW (torch.optim.AdamW, betas 0.9/0.95)", _build_adamw, 3e-3, hybrid=False),
    "torch-muon": OptimizerSpec("torch.optim.Muon + AdamW (2-D matrices; NS5 in bf16)", _build_torch_muon, 0.02),
    "muon": OptimizerSpec(
        "steepest.Muon (NS5, dtype auto: bf16 where native, else float32; Nesterov 0.95)", _build_muon, 0.02
    ),
    "specgd": OptimizerSpec("SpecGD (Polar Express 8 steps, not exact SVD; Nesterov 0.95)", _build_specgd, 0.02),
    "signum": OptimizerSpec("Signum (steepest.SignSGD, momentum 0.9)", _build_signum, 1e-3),
    "schatten": OptimizerSpec(f"SchattenDescent p={SCHATTEN_P:g} (SVD; Nesterov 0.95)", _build_schatten, 0.02),
    "adaptive": OptimizerSpec(
        "steepest.Adaptive (spectral/frobenius per layer by nr(G) vs st(A) every 10 "
        "steps, Frobenius at 0.25x; otherwise SpecGD: Polar Express, Nesterov 0.95)",
        _build_adaptive,
        0.02,
    ),
    "adaptive-sign": OptimizerSpec(
        "steepest.Adaptive (spectral/sign per layer by the Spec-Sign index every 10 steps; otherwise SpecGD)",
        _build_adaptive_sign,
        0.02,
    ),
    "adaptive-oracle": OptimizerSpec(
        "steepest.Adaptive, oracle choices (the measured best one-step geometry "
        "per layer on a held-out batch every 10 steps): adaptive's upper bound",
        _build_adaptive_oracle,
        0.02,
        held_out=True,
    ),
    "frobenius": OptimizerSpec(
        "Frobenius steepest descent (M/||M||_F, spectral-step RMS; Nesterov 0.95)", _build_frobenius, 0.02
    ),
    "sgd": OptimizerSpec("SGD momentum 0.9 (torch.optim.SGD)", _build_sgd, 0.1, hybrid=False),
    "power": OptimizerSpec(
        "Power geometry a = 1/7 (Schatten-8 direction at a spectral step's RMS; float64 Gram eigh; Nesterov 0.95)",
        _build_power,
        0.02,
    ),
    "knob-schedule": OptimizerSpec(
        "DynMuon-style knob a: 0.25 -> -0.25 linear over the run (power geometry; otherwise SpecGD)",
        _build_knob_schedule,
        0.02,
        total_steps=True,
    ),
    "schatten-choice": OptimizerSpec(
        "arXiv 2605.19781 per-layer a = 1/p every 100 steps (EMAs every 10; ||D||_op = 1; otherwise SpecGD)",
        _build_schatten_choice,
        0.02,
    ),
    "phase-switch": OptimizerSpec(
        "Phase switch per layer: a = 1 -> 0 when nr(G)/st(A) > 1.25 for 3 decisions of 10 steps "
        "(||D||_op = 1; otherwise SpecGD)",
        _build_phase_switch,
        0.02,
    ),
}

#: What ``steepest compare`` runs when no ``--optimizers`` are given (``sgd`` is available on request).
DEFAULT_OPTIMIZERS = ("adamw", "torch-muon", "muon", "specgd", "signum", "schatten", "adaptive")


def available_optimizers() -> tuple[str, ...]:
    """Names that can be built in this installation (the Adaptive-based ones need ``steepest.Adaptive``)."""
    needs = ("adaptive", "adaptive-sign", "adaptive-oracle", "frobenius")
    return tuple(n for n in OPTIMIZERS if n not in needs or hasattr(steepest, "Adaptive"))


#: Default optimizers left out where bf16 matmul is emulated: torch.optim.Muon always runs Newton-Schulz in
#: bf16, 18-70x slower than float32 there (it alone took 16 minutes of a 42-minute main job on an AVX2 CPU).
NEEDS_NATIVE_BF16 = ("torch-muon",)


def default_optimizers() -> tuple[str, ...]:
    """:data:`DEFAULT_OPTIMIZERS` that this installation can build, without :data:`NEEDS_NATIVE_BF16` on
    hardware without native bf16 matmul (name them with ``--optimizers`` to run them anyway)."""
    native = auto_dtype("cpu") == torch.bfloat16 or torch.cuda.is_available()
    return tuple(
        n for n in DEFAULT_OPTIMIZERS if n in available_optimizers() and (native or n not in NEEDS_NATIVE_BF16)
    )


def user_optimizer(spec: str) -> OptimizerSpec:
    """The optimizer ``package.module:factory`` names (``steepest compare --optimizers adamw,mypkg.opts:make``).

    ``factory`` is an :class:`OptimizerSpec`, or a callable ``factory(model, lr, aux_lr, routing)`` returning a
    ``torch.optim.Optimizer`` (``routing``: the task's :func:`steepest.param_groups` keywords; ``aux_lr``: the
    AdamW learning rate of the compared hybrids). Its learning rate is ``--lr NAME=LR``, else the factory's
    ``fallback_lr`` attribute, else 0.02. The module is imported as tasks are (the current folder included).

    Example (``myopts.py`` in the current folder)::

        def lion_like(model, lr, aux_lr, routing):
            return steepest.SignSGD(steepest.param_groups(model, **routing), lr=lr, momentum=0.9, adamw_lr=aux_lr)
        lion_like.fallback_lr = 1e-3
    """
    from steepest.app.userpath import SpecError, import_spec

    try:
        obj = import_spec(spec, "optimizer")
    except SpecError as e:
        raise ValueError(str(e)) from e
    if isinstance(obj, OptimizerSpec):
        return obj
    if not callable(obj):
        raise ValueError(f"optimizer {spec!r} is neither an OptimizerSpec nor a callable (model, lr, aux_lr, routing)")
    return OptimizerSpec(f"{spec} (user optimizer)", obj, float(getattr(obj, "fallback_lr", 0.02)))


def check_optimizers(names) -> tuple[str, ...]:
    """Validate optimizer names; ValueError lists the valid ones. ``package.module:factory`` names a user's
    optimizer (:func:`user_optimizer`), registered in :data:`OPTIMIZERS` under that name."""
    names = tuple(names)
    if not names:
        raise ValueError("give at least one optimizer")
    for n in names:
        if ":" in n and n not in OPTIMIZERS:
            OPTIMIZERS[n] = user_optimizer(n)
    valid = available_optimizers()
    bad = [n for n in names if n not in valid]
    if bad:
        raise ValueError(
            f"unknown optimizer(s) {bad}; choose from {', '.join(valid)}, or name your own as package.module:factory"
        )
    if len(set(names)) != len(names):
        raise ValueError(f"optimizer names repeat: {list(names)}")
    return names


def build_optimizer(
    name: str,
    model: nn.Module,
    lr: float,
    aux_lr: float,
    routing: dict | None = None,
    held_out: Callable[[], torch.Tensor] | None = None,
    steps: int | None = None,
):
    """Build optimizer ``name`` for ``model`` with matrix learning rate ``lr`` and AdamW ``aux_lr``;
    ``held_out()`` (the loss on a held-out batch) is required by the specs with ``held_out=True``, ``steps``
    (the run's length) by those with ``total_steps=True``."""
    check_optimizers([name])
    spec = OPTIMIZERS[name]
    if spec.total_steps:
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"optimizer {name!r} schedules over the run: pass steps=the run's number of steps")
        return spec.build(model, float(lr), float(aux_lr), dict(routing or {}), steps)
    if not spec.held_out:
        return spec.build(model, float(lr), float(aux_lr), dict(routing or {}))
    if not callable(held_out):
        raise ValueError(f"optimizer {name!r} measures a held-out loss: pass held_out=a callable returning it")
    return spec.build(model, float(lr), float(aux_lr), dict(routing or {}), held_out)


def routing_table(model: nn.Module, routing: dict | None = None) -> str:
    """The text of :func:`steepest.describe` for ``model`` (which parameter gets which geometry, and why)."""
    buf = io.StringIO()
    return steepest.describe(steepest.param_groups(model, **(routing or {})), file=buf)


def state_bytes(optimizer) -> int:
    """Bytes held in the optimizer's state tensors (momentum buffers, Adam moments)."""
    total = 0
    for st in optimizer.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
    return total
