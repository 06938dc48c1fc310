"""Hugging Face ``Trainer``: steepest optimizers without a subclass, and the LayerMonitor as a callback.

One line routes the model by structure (:func:`steepest.param_groups`: hidden matrices to the steepest
geometry, embeddings, head and norms/biases to AdamW) inside Trainer::

    from steepest.integrations import hf
    trainer = Trainer(model, args, train_dataset=ds,
                      optimizer_cls_and_kwargs=hf.trainer_optimizer(steepest.Muon, lr=0.02, weight_decay=0.01),
                      callbacks=[hf.MonitorCallback(every=10)])

How: Trainer (transformers >= 5) calls a non-class ``optimizer_cls`` as a factory,
``optimizer_cls()(model, **kwargs)``; older versions call ``optimizer_cls(trainer_groups, **kwargs)``
with their decay/no-decay groups, which :class:`RoutedOptimizer` maps back to the model (pass
``model=``) and routes, keeping Trainer's per-parameter weight decay unless ``weight_decay`` is given.

Weight decay: ``TrainingArguments.weight_decay`` reaches every group that decays (hidden matrices, embeddings,
the head; biases and norm gains stay at 0, as Trainer's own no-decay group). The factory path finds it on
the Trainer that calls it (or pass ``args=``). An explicit ``weight_decay=`` to :func:`trainer_optimizer`
wins; when both are set and differ, a warning names both.
Checkpoints and ``resume_from_checkpoint`` work unchanged (Trainer saves ``optimizer.state_dict()``).
"""

from __future__ import annotations

import dataclasses
import inspect
import warnings
from pathlib import Path

import torch
from torch import nn
from transformers import TrainerCallback

from steepest.diagnostics import LayerMonitor, default_sinks
from steepest.optim import param_groups


class RoutedOptimizer:
    """A factory for Trainer's ``optimizer_cls``: builds ``optimizer_cls(param_groups(model, **routing), **kwargs)``.

    Called with no argument it returns itself (Trainer's factory instantiation); called with a model it
    routes that model; called with Trainer's parameter groups (a list of dicts) it routes ``model`` (given
    here) restricted to those parameters, each routed group split by Trainer's weight decay unless the
    optimizer's ``weight_decay`` is given.

    Example:
        >>> import torch, steepest
        >>> model = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 8), torch.nn.Linear(8, 10))
        >>> opt = RoutedOptimizer(steepest.Muon)(model, lr=0.02)
        >>> isinstance(opt, steepest.Muon)
        True
    """

    def __init__(
        self, optimizer_cls: type, model: nn.Module | None = None, routing: dict | None = None, args=None
    ) -> None:
        if not (isinstance(optimizer_cls, type) and issubclass(optimizer_cls, torch.optim.Optimizer)):
            raise TypeError(
                f"optimizer_cls must be a torch.optim.Optimizer class (e.g. steepest.Muon), got {optimizer_cls!r}"
            )
        if model is not None and not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.optimizer_cls, self.model, self.routing, self.args = optimizer_cls, model, dict(routing or {}), args
        self.__name__ = f"routed_{optimizer_cls.__name__}"

    def __call__(self, params=None, **kwargs):
        if params is None and not kwargs:
            return self
        kwargs = _weight_decay(
            kwargs,
            self.args if self.args is not None else _calling_trainer_args(),
            trainer_groups=not isinstance(params, nn.Module),
        )
        if isinstance(params, nn.Module):
            return self.optimizer_cls(param_groups(params, **self.routing), **kwargs)
        if self.model is None:
            raise ValueError(
                "Trainer passed its own parameter groups: give the model, "
                "trainer_optimizer(cls, model, ...), so they can be routed by structure"
            )
        trainer_wd = {}
        for g in params:
            for p in g["params"] if isinstance(g, dict) else [g]:
                trainer_wd[id(p)] = g.get("weight_decay") if isinstance(g, dict) else None
        groups = []
        for g in param_groups(self.model, **self.routing):
            keep = [i for i, p in enumerate(g["params"]) if id(p) in trainer_wd]
            by_wd: dict = {}
            for i in keep:
                by_wd.setdefault(None if "weight_decay" in kwargs else trainer_wd[id(g["params"][i])], []).append(i)
            for wd, idx in by_wd.items():
                sub = dict(g, **{k: [g[k][i] for i in idx] for k in ("params", "names", "reasons")})
                if wd is not None and "weight_decay" not in g:
                    sub["weight_decay"] = wd
                groups.append(sub)
        return self.optimizer_cls(groups, **kwargs)


def _calling_trainer_args():
    """The ``TrainingArguments`` of the ``transformers.Trainer`` whose ``create_optimizer`` calls the factory
    (transformers 5 passes only the model), or None when no Trainer is on the call stack."""
    from transformers import Trainer

    frame = inspect.currentframe()
    try:
        for _ in range(8):  # create_optimizer -> RoutedOptimizer.__call__ -> here; a few frames of slack
            frame = frame.f_back if frame is not None else None
            owner = frame.f_locals.get("self") if frame is not None else None
            if isinstance(owner, Trainer):
                return owner.args
    finally:
        del frame
    return None


def _weight_decay(kwargs: dict, args, trainer_groups: bool) -> dict:
    """``kwargs`` with TrainingArguments' weight decay as the optimizer's default, unless ``weight_decay`` was
    given (then it wins, with a warning naming both when TrainingArguments set another value). With Trainer's
    own groups (transformers < 5) the decay is already in them: only the warning applies."""
    if args is None or not hasattr(args, "weight_decay"):
        return kwargs
    wd = float(args.weight_decay)
    field_default = (
        next((f.default for f in dataclasses.fields(args) if f.name == "weight_decay"), 0.0)
        if dataclasses.is_dataclass(args)
        else 0.0
    )
    if "weight_decay" in kwargs:
        if wd != field_default and wd != float(kwargs["weight_decay"]):
            warnings.warn(
                f"trainer_optimizer(weight_decay={kwargs['weight_decay']}) wins over "
                f"TrainingArguments(weight_decay={wd}); drop one of them to silence this warning.",
                UserWarning,
                stacklevel=3,
            )
        return kwargs
    return kwargs if trainer_groups else dict(kwargs, weight_decay=wd)


def trainer_optimizer(
    optimizer_cls: type, model: nn.Module | None = None, *, routing: dict | None = None, args=None, **kwargs
) -> tuple[RoutedOptimizer, dict]:
    """``optimizer_cls_and_kwargs`` for ``transformers.Trainer``: ``optimizer_cls`` over the model routed by
    structure. ``kwargs`` go to the optimizer (lr, weight_decay, adamw_lr, ...); ``routing`` to
    :func:`steepest.param_groups` (e.g. ``dict(embedding=dict(lr=1e-3))``). ``model`` is needed only by
    transformers < 5, which passes its own parameter groups. ``TrainingArguments.weight_decay`` is the
    optimizer's weight decay unless ``weight_decay`` is given here (module docstring); ``args`` (the
    TrainingArguments) is needed only when the factory is called outside ``Trainer.create_optimizer``.

    Example:
        >>> import steepest
        >>> cls_and_kwargs = trainer_optimizer(steepest.Muon, lr=0.02)
        >>> cls_and_kwargs[1]
        {'lr': 0.02}
        >>> Trainer(model, args, optimizer_cls_and_kwargs=cls_and_kwargs)  # needs a model and a data set  # doctest: +SKIP
    """
    return RoutedOptimizer(optimizer_cls, model, routing, args), dict(kwargs)


def _unwrap(optimizer):
    """The torch optimizer inside accelerate's AcceleratedOptimizer (its hooks are the ones that fire)."""
    while isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        optimizer = optimizer.optimizer
    return optimizer


class MonitorCallback(TrainerCallback):
    """A :class:`~steepest.diagnostics.LayerMonitor` on Trainer's model and optimizer.

    Records every ``every`` optimizer steps (step = ``state.global_step``) into ``sinks`` (default: JSONL +
    CSV (+ TensorBoard) under ``<output_dir>/diagnostics``). On ``resume_from_checkpoint`` the monitor
    continues at the checkpoint's global step and drops the records an interrupted run wrote after it.
    ``monitor_kwargs`` go to LayerMonitor (``microbatches``, ``method``, ``layers``, ...).

    Example:
        >>> Trainer(model, args, callbacks=[MonitorCallback(every=10)])  # needs a model and a data set  # doctest: +SKIP
    """

    def __init__(self, every: int = 10, sinks=None, directory=None, **monitor_kwargs) -> None:
        self.every, self.sinks, self.directory, self.kwargs = every, sinks, directory, monitor_kwargs
        self.monitor: LayerMonitor | None = None

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        if self.monitor is None:
            sinks = (
                self.sinks
                if self.sinks is not None
                else default_sinks(self.directory or Path(args.output_dir) / "diagnostics")
            )
            self.monitor = LayerMonitor(model, every=self.every, sinks=sinks, **self.kwargs)
        self.monitor.attach(_unwrap(optimizer))
        self.monitor.load_state_dict({"step": int(state.global_step), "every": self.every})

    def on_step_begin(self, args, state, control, **kwargs):
        if self.monitor is not None:  # follows Trainer's count (an optimizer step skipped for inf grads)
            self.monitor.step = int(state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.monitor is not None:
            self.monitor.detach()
            self.monitor = None


__all__ = ["trainer_optimizer", "RoutedOptimizer", "MonitorCallback"]
