"""Training tasks on real data that ships with installable packages (nothing downloads at run time).

A task is a :class:`Task`: everything ``steepest compare`` needs to train one model with several
optimizers on the same seed and the same data order.

Bring your own task
-------------------
Write a function that returns a :class:`Task` and name it on the command line as
``--task package.module:factory`` (or pass the Task itself to :func:`steepest.compare`)::

    import torch
    from torch import nn
    from steepest.app.tasks import Task

    def my_task(**options) -> Task:
        X, y = torch.randn(512, 20), torch.randint(0, 3, (512,))
        Xv, yv = torch.randn(128, 20), torch.randint(0, 3, (128,))

        def batch(seed: int, step: int):          # a pure function of (seed, step)
            g = torch.Generator().manual_seed(seed * 1_000_003 + step)
            idx = torch.randint(0, len(X), (32,), generator=g)
            return X[idx], y[idx]

        def loss(model, batch):
            x, t = batch
            return nn.functional.cross_entropy(model(x), t)

        def evaluate(model):
            return float(nn.functional.cross_entropy(model(Xv), yv))

        return Task(name="mine", make_model=lambda: nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3)),
                    batch=batch, loss=loss, evaluate=evaluate, steps=200, eval_every=20)

The contract: ``make_model()`` is called right after ``torch.manual_seed(seed)`` so each optimizer
starts from the same weights; ``batch(seed, step)`` returns the batch of step ``step`` and must depend
on nothing else (that is what makes the data order identical across optimizers and lets ``--resume``
continue from a checkpoint's step); ``loss(model, batch)`` returns a scalar tensor to minimise;
``evaluate(model)`` returns the validation loss as a float (called under ``torch.no_grad()`` with the
model in eval mode).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

from torch import nn


class TaskError(ValueError):
    """A task that cannot be found or built (the CLI turns it into exit code 2)."""


@dataclasses.dataclass
class Task:
    """One training problem: a model factory, a deterministic batch function, a loss and an evaluation.

    Attributes:
        name: short name shown in tables and reports.
        make_model: ``() -> nn.Module``, called after ``torch.manual_seed(seed)``.
        batch: ``(seed, step) -> batch``; a pure function of its arguments (same data for every optimizer).
        loss: ``(model, batch) -> scalar tensor``.
        evaluate: ``(model) -> float`` validation loss (run under ``torch.no_grad()``, eval mode).
        steps: default number of training steps.
        eval_every: default validation interval in steps.
        info: free-form description (data source, sizes) written into the run's config.
        routing: keyword arguments for :func:`steepest.param_groups` (e.g. ``head_patterns``).
    """

    name: str
    make_model: Callable[[], nn.Module]
    batch: Callable[[int, int], Any]
    loss: Callable[[nn.Module, Any], Any]
    evaluate: Callable[[nn.Module], float]
    steps: int = 300
    eval_every: int = 25
    info: dict = dataclasses.field(default_factory=dict)
    routing: dict = dataclasses.field(default_factory=dict)


def _charlm(**kw) -> Task:
    from steepest.app.tasks.charlm import charlm_task

    return charlm_task(**kw)


def _mnist(**kw) -> Task:
    from steepest.app.tasks.mnist import mnist_task

    return mnist_task(**kw)


def _mnist_cnn(**kw) -> Task:
    from steepest.app.tasks.mnist import mnist_task

    return mnist_task(model="cnn", **kw)


#: Built-in tasks: name -> factory(**options). ``size="quick"`` gives a tiny version for tests.
TASKS: dict[str, Callable[..., Task]] = {"charlm": _charlm, "mnist": _mnist, "mnist-cnn": _mnist_cnn}


def get_task(spec: "str | Task", **options) -> Task:
    """Build a task from a built-in name (``charlm``, ``mnist``, ``mnist-cnn``) or ``package.module:factory``.

    ``options`` go to the factory (built-in ones accept ``size="default"|"quick"`` among others).
    Raises :class:`TaskError` with the valid names for an unknown task.

    Example:
        >>> task = get_task("mnist", size="quick")   # doctest: +SKIP
    """
    if isinstance(spec, Task):
        if options:
            raise TaskError("options cannot be applied to an already built Task")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"task must be a name, 'package.module:factory' or a Task, got {type(spec).__name__}")
    if spec in TASKS:
        factory = TASKS[spec]
    elif ":" in spec:
        mod_name, _, attr = spec.partition(":")
        try:
            module = importlib.import_module(mod_name)
        except ImportError as e:
            raise TaskError(f"cannot import task module {mod_name!r} ({e}); is it on PYTHONPATH?") from e
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise TaskError(f"{mod_name!r} has no callable {attr!r} (expected a function returning a steepest.app.tasks.Task)")
    else:
        raise TaskError(f"unknown task {spec!r}; choose one of {', '.join(TASKS)} or give 'package.module:factory'")
    try:
        task = factory(**options)
    except TypeError as e:
        raise TaskError(f"task {spec!r} rejected options {options}: {e}") from e
    if not isinstance(task, Task):
        raise TaskError(f"task factory {spec!r} returned {type(task).__name__}, expected steepest.app.tasks.Task")
    return task


def package_dir(package: str, install: str) -> str:
    """Folder of an installed data package, found without importing it; TaskError naming ``install`` if absent."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TaskError(f"the data package {package!r} is not installed; install it with: {install}")
    return list(spec.submodule_search_locations)[0]


__all__ = ["Task", "TaskError", "TASKS", "get_task", "package_dir"]
