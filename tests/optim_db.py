"""The optimizer database: every optimizer configuration under test (like torch's ``optim_db``).

Each :class:`OptimInfo` builds an optimizer over the :class:`Net` problem's parameter groups (matrices
in the steepest geometry, biases on AdamW) and says how to compute its first step in float64 from
the definitions (:class:`steepest.testing.reference.RefSteepest`). The generic contract tests in
``test_contract.py`` run over all of it; ``test_every_recipe_is_in_the_database`` fails when a recipe
is added to steepest without an entry here.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import torch
from torch import nn

import steepest
from steepest.linalg import coefficients as C


class Net(nn.Module):
    """Two Linear layers and a 3-D parameter (for the flatten/batch tensor modes); biases on AdamW."""

    def __init__(self, dtype=torch.float32, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.lin1 = nn.Linear(6, 8).to(dtype)
        self.mix = nn.Parameter(torch.randn(2, 4, 4, dtype=dtype) / 2)
        self.lin2 = nn.Linear(8, 4).to(dtype)

    def forward(self, x):
        h = torch.tanh(self.lin1(x))
        h = (h.view(-1, 2, 1, 4) @ self.mix).reshape(-1, 8)
        return self.lin2(h)

    def matrices(self):
        return [self.lin1.weight, self.mix, self.lin2.weight]

    def groups(self):
        return [
            dict(params=self.matrices(), names=["lin1.weight", "mix", "lin2.weight"]),
            dict(params=[self.lin1.bias, self.lin2.bias], names=["lin1.bias", "lin2.bias"], algorithm="adamw"),
        ]


def batch(step: int, dtype=torch.float32, n: int = 16):
    g = torch.Generator().manual_seed(100 + step)
    x = torch.randn(n, 6, generator=g, dtype=torch.float64).to(dtype)
    return x, torch.randn(n, 4, generator=g, dtype=torch.float64).to(dtype)


def loss_fn(model, step: int):
    x, y = batch(step, model.lin1.weight.dtype)
    return nn.functional.mse_loss(model(x), y)


@dataclasses.dataclass
class OptimInfo:
    name: str
    #: (model, **overrides) -> optimizer; overrides are lr / weight_decay for the contract tests
    make: Callable[..., torch.optim.Optimizer]
    #: RefSteepest settings of the matrices' first step from zero state (without lr / weight_decay);
    #: for Adaptive, filled in from the optimizer's own choice (see ``reference_settings``)
    ref: dict
    #: relative tolerance of the float64 check (None: the default, float64 rounding only)
    float64_tol: float | None = None


def _sd(**kw):
    return lambda model, **o: steepest.SteepestDescent(model.groups(), **{**kw, **o})


def _recipe(cls, **kw):
    return lambda model, **o: cls(model.groups(), **{**kw, **o})


def _batched(make):
    def build(model, **o):
        opt = make(model, **o)
        opt.executor = steepest.optim.executors.Batched(cpu=True)
        return opt

    return build


def _distributed(make):
    return lambda model, **o: steepest.distributed(make(model, **o))


class HeldOut:
    """The held-out loss of the oracle criterion (a class, so that optimizers holding it pickle)."""

    def __init__(self, model):
        self.model = model

    def __call__(self):
        return loss_fn(self.model, 999)


def _adaptive(**kw):
    def build(model, **o):
        kw2 = dict(kw)
        if kw2.pop("with_model", False):
            kw2["model"] = model
        if kw2.get("criterion") == "oracle":
            kw2["oracle_loss"] = HeldOut(model)
        return steepest.Adaptive(model.groups(), every=2, **{**kw2, **o})

    return build


NS5 = dict(table=C.schedule(C.MUON_QUINTIC, 5), normalization="frobenius", safety=1.0)
PE5 = dict(
    table=C.with_safety(C.schedule(C.POLAR_EXPRESS_L7E4, 5)),
    normalization="schatten8",  # best for 5 steps
    safety=C.POLAR_EXPRESS_SAFETY,
)
MUON = dict(norm="spectral", momentum=0.95, nesterov=True, scale_rule="muon")

DB: list[OptimInfo] = [
    # Muon's default dtype "auto" iterates float64 parameters in float64.
    OptimInfo("Muon", _recipe(steepest.Muon), dict(MUON, **NS5)),
    # bf16 Newton-Schulz (torch.optim.Muon's forced choice) is a lower iteration dtype asked for explicitly:
    # bf16 carries 8 bits, so after 5 steps ~3% relative error on the update is expected.
    OptimInfo("Muon-bf16", _recipe(steepest.Muon, dtype=torch.bfloat16), dict(MUON, **NS5), float64_tol=5e-2),
    OptimInfo("Muon-float64", _recipe(steepest.Muon, dtype=torch.float64), dict(MUON, **NS5)),
    OptimInfo("Muon-polar_express", _recipe(steepest.Muon, method="polar_express", dtype=None), dict(MUON, **PE5)),
    OptimInfo(
        "Muon-rms",
        _recipe(steepest.Muon, adjust_lr_fn="match_rms_adamw", dtype=None),
        dict(MUON, **NS5, scale_rule="rms"),
    ),
    OptimInfo("SpecGD", _recipe(steepest.SpecGD), dict(norm="spectral")),
    OptimInfo(
        "SpecGD-dual-nesterov",
        _recipe(steepest.SpecGD, step_size="dual", momentum=0.9, nesterov=True),
        dict(norm="spectral", step_size="dual", momentum=0.9, nesterov=True),
    ),
    OptimInfo("SignSGD", _recipe(steepest.SignSGD), dict(norm="linf")),
    OptimInfo("Signum", _recipe(steepest.SignSGD, momentum=0.9), dict(norm="linf", momentum=0.9)),
    OptimInfo("SchattenDescent-p4", _recipe(steepest.SchattenDescent, p=4.0), dict(norm="schatten", p=4.0)),
    OptimInfo(
        "SchattenDescent-pinf-ns",
        _recipe(steepest.SchattenDescent, p=math.inf, method="newton_schulz"),
        dict(norm="spectral", **NS5),
    ),
    OptimInfo("GD", _recipe(steepest.GD), dict(norm="frobenius", step_size="dual")),
    OptimInfo(
        "GD-momentum", _recipe(steepest.GD, momentum=0.9), dict(norm="frobenius", step_size="dual", momentum=0.9)
    ),
]
# SteepestDescent over norms x step sizes x tensor modes
for _norm, _p in (("frobenius", None), ("spectral", None), ("linf", None), ("schatten", 3.0)):
    for _step in ("fixed", "dual"):
        for _mode in ("flatten", "batch"):
            DB.append(
                OptimInfo(
                    f"SteepestDescent-{_norm}-{_step}-{_mode}",
                    _sd(norm=_norm, p=_p, step_size=_step, tensor_mode=_mode, momentum=0.5),
                    dict(norm=_norm, p=_p, step_size=_step, tensor_mode=_mode, momentum=0.5),
                )
            )
# the knob (norm="power"; the reference takes its exponent a as p), fixed steps only: it has no dual norm.
# Its default path is a float64 Gram eigh, whose error in the small directions' weights is ~eps cond(M)^2,
# multiplied by s^(a-1): at a = -0.25 on the 4 x 4 batch that is 3.7e-9 relative (measured), so 1e-8.
for _a, _mode, _tol in ((0.25, "flatten", None), (-0.25, "batch", 1e-8)):
    DB.append(
        OptimInfo(
            f"SteepestDescent-power{_a:+g}-{_mode}",
            _sd(norm="power", power=_a, tensor_mode=_mode, momentum=0.5, nesterov=True),
            dict(norm="power", p=_a, tensor_mode=_mode, momentum=0.5, nesterov=True),
            float64_tol=_tol,
        )
    )
DB += [
    OptimInfo("Adaptive-proxy", _adaptive(), dict(adaptive=True)),
    OptimInfo("Adaptive-spec_sign", _adaptive(with_model=True), dict(adaptive=True)),
    OptimInfo(
        "Adaptive-dd",
        _adaptive(with_model=True, criterion="dd", candidates=("spectral", "frobenius")),
        dict(adaptive=True),
    ),
    OptimInfo("Adaptive-oracle", _adaptive(with_model=True, criterion="oracle"), dict(adaptive=True)),
    OptimInfo("Muon-batched", _batched(_recipe(steepest.Muon, dtype=None)), dict(MUON, **NS5)),
    OptimInfo(
        "SpecGD-batched",
        _batched(_recipe(steepest.SpecGD, tensor_mode="batch")),
        dict(norm="spectral", tensor_mode="batch"),
    ),
    OptimInfo("Adaptive-batched", _batched(_adaptive()), dict(adaptive=True)),
    OptimInfo("distributed-Muon", _distributed(_recipe(steepest.Muon, dtype=None)), dict(MUON, **NS5)),
    OptimInfo("distributed-Adaptive", _distributed(_adaptive(with_model=True)), dict(adaptive=True)),
]


def reference_settings(info: OptimInfo, opt, name: str, param: torch.Tensor) -> dict:
    """RefSteepest keyword arguments for one matrix of ``opt`` (Adaptive: its current choice)."""
    if not info.ref.get("adaptive"):
        return dict(info.ref)
    g = opt.geometries()[name]
    group = next(gr for gr in opt.param_groups if any(q is param for q in gr["params"]))
    shape = steepest.geometry.matrix_shape(tuple(param.shape), group["tensor_mode"])
    return dict(norm=g, lr_scale=steepest.geometry.rms_factor(shape, g) * opt.lr_multipliers[g])


# ------------------------------------------------------------------ per class (torch's OptimizerInfo)
@dataclasses.dataclass(frozen=True)
class ErrorInput:
    """A bad constructor argument and the message it must raise (torch's ``optim_error_inputs_func``)."""

    kwargs: dict
    match: str  # a substring of the message, matched literally
    error: type[Exception] = ValueError


@dataclasses.dataclass
class ClassInfo:
    """One optimizer class: what it supports, its named configurations, and its error inputs.

    ``inputs`` are the named constructor arguments the per-purpose tests use ("frozen": the frozen values
    of test_optim.py, "mlp" and "least_squares": its convergence problems, "batched_*": test_batched.py,
    "single_candidate": Adaptive's one-geometry equivalence in test_adaptive.py).
    """

    cls: type
    inputs: dict[str, dict]
    error_inputs: tuple[ErrorInput, ...]
    supports_closure: bool = True  # step(closure) re-evaluates the loss and returns it
    supports_float64: bool = True  # float64 parameters step in float64
    supports_distributed: bool = True  # steepest.distributed(opt) shards its dualizations
    supports_batched: bool = True  # batch_matrices=True stacks same-shape matrices

    def make(self, which: str, params, **overrides) -> torch.optim.Optimizer:
        return self.cls(params, **{**self.inputs[which], **overrides})


_COMMON_ERRORS = (
    ErrorInput(dict(lr=-1.0), "lr must be in [0.0, inf), got -1.0"),
    ErrorInput(dict(lr=float("nan")), "lr must be a number, got nan"),
    ErrorInput(dict(lr="0.1"), "lr must be a number, got '0.1'"),
    ErrorInput(dict(momentum=1.0), "momentum must be in [0.0, 1.0), got 1.0"),
    ErrorInput(dict(weight_decay=-0.1), "weight_decay must be in [0.0, inf), got -0.1"),
    ErrorInput(dict(nonfinite="bogus"), "nonfinite must be one of ('raise', 'skip'), got 'bogus'"),
)
_METHOD_ERROR = ErrorInput(
    dict(method="bogus"), "method must be one of ('svd', 'newton_schulz', 'polar_express'), got 'bogus'"
)

CLASS_DB: dict[str, ClassInfo] = {
    "Muon": ClassInfo(
        steepest.Muon,
        inputs=dict(
            # weight_decay=0.0: the frozen values and convergence bounds predate torch's default decay of 0.1
            frozen=dict(lr=0.1, weight_decay=0.0, dtype=torch.float32),
            mlp=dict(lr=0.02, weight_decay=0.0),
            least_squares=dict(lr=0.1, weight_decay=0.0),
            batched_bf16=dict(lr=0.02, weight_decay=0.1),
            batched_fp32=dict(lr=0.02, weight_decay=0.1, dtype=torch.float32),
            batched_polar_express=dict(lr=0.02, method="polar_express", dtype=torch.float32),
        ),
        error_inputs=_COMMON_ERRORS
        + (
            _METHOD_ERROR,
            ErrorInput(
                dict(adjust_lr_fn="bogus"),  # torch.optim.Muon's own message (the drop-in contract)
                "Adjust learning rate function bogus is not supported: use None, 'original' or 'match_rms_adamw'",
            ),
            ErrorInput(
                dict(dtype="float8"),
                "dtype must be one of ['bfloat16', 'float16', 'float32', 'float64'] or None, got 'float8'",
            ),
        ),
    ),
    "SpecGD": ClassInfo(
        steepest.SpecGD,
        inputs=dict(
            frozen=dict(lr=0.1),
            mlp=dict(lr=0.02, momentum=0.9),
            least_squares=dict(lr=0.1, momentum=0.9),
            batched=dict(lr=0.05),
            batched_dual_momentum=dict(lr=1e-3, step_size="dual", momentum=0.9, nesterov=True),
            single_candidate=dict(),
        ),
        error_inputs=_COMMON_ERRORS
        + (
            _METHOD_ERROR,
            ErrorInput(dict(step_size="bogus"), "step_size must be one of ('fixed', 'dual'), got 'bogus'"),
        ),
    ),
    "SignSGD": ClassInfo(
        steepest.SignSGD,
        inputs=dict(
            frozen=dict(lr=0.1, momentum=0.9),
            mlp=dict(lr=2e-3, momentum=0.9),
            single_candidate=dict(),
        ),
        error_inputs=_COMMON_ERRORS
        + (ErrorInput(dict(tensor_mode="bogus"), "tensor_mode must be one of ('flatten', 'batch'), got 'bogus'"),),
    ),
    "SchattenDescent": ClassInfo(
        steepest.SchattenDescent,
        inputs=dict(
            frozen=dict(lr=0.1, p=4.0),
            mlp=dict(lr=0.02, p=8.0, momentum=0.9),
            least_squares=dict(lr=0.1, p=8.0, momentum=0.9),
            batched_pinf=dict(lr=0.05, p=math.inf),
        ),
        error_inputs=_COMMON_ERRORS
        + (
            ErrorInput(dict(p=0.5), "Schatten exponent p must be a number in [1, inf], got 0.5"),
            ErrorInput(dict(p="x"), "Schatten exponent p must be a number in [1, inf], got 'x'"),
        ),
    ),
    "GD": ClassInfo(
        steepest.GD,
        inputs=dict(
            frozen=dict(lr=0.1, momentum=0.5),
            mlp=dict(lr=0.1, momentum=0.9),
            least_squares=dict(lr=0.5, momentum=0.9),
        ),
        error_inputs=_COMMON_ERRORS
        + (ErrorInput(dict(weight_decay=float("inf")), "weight_decay must be in [0.0, inf), got inf"),),
    ),
    "SteepestDescent": ClassInfo(
        steepest.SteepestDescent,
        inputs=dict(
            single_candidate=dict(norm="frobenius"),
        ),
        error_inputs=_COMMON_ERRORS
        + (
            ErrorInput(
                dict(norm="bogus"),
                "norm must be one of ('frobenius', 'spectral', 'linf', 'schatten', 'power'), got 'bogus'",
            ),
            ErrorInput(dict(norm="schatten"), "Schatten exponent p must be a number in [1, inf], got None"),
            ErrorInput(
                dict(scale_rule="bogus"), "scale_rule must be one of ('none', 'muon', 'rms', 'spectral'), got 'bogus'"
            ),
        ),
    ),
    "Adaptive": ClassInfo(
        steepest.Adaptive,
        inputs=dict(),
        error_inputs=_COMMON_ERRORS
        + (
            ErrorInput(
                dict(candidates=()), "candidates must be distinct names from ('spectral', 'linf', 'frobenius'), got ()"
            ),
            ErrorInput(dict(every=0), "every must be a positive int, got 0"),
            ErrorInput(dict(criterion="bogus"), "criterion must be one of ('spec_sign', 'dd', 'oracle'), got 'bogus'"),
        ),
    ),
}
