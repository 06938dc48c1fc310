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

import inspect
import traceback
from collections.abc import Callable

from steepest.app.tasks.base import Task, TaskError, package_dir
from steepest.app.tasks.charlm import charlm_task
from steepest.app.tasks.mnist import mnist_task
from steepest.app.userpath import SpecError, import_spec, takes_argument


def _mnist_cnn(**kw) -> Task:
    return mnist_task(model="cnn", **kw)


#: Built-in tasks: name -> factory(**options). ``size="quick"`` gives a tiny version for tests.
TASKS: dict[str, Callable[..., Task]] = {"charlm": charlm_task, "mnist": mnist_task, "mnist-cnn": _mnist_cnn}


def get_task(spec: str | Task, **options) -> Task:
    """Build a task from a built-in name (``charlm``, ``mnist``, ``mnist-cnn``) or ``package.module:factory``.

    ``options`` go to the factory (built-in ones accept ``size="default"|"quick"`` among others).
    Raises :class:`TaskError` with the valid names for an unknown task.

    Example:
        >>> task = get_task("mnist", size="quick")  # reads the MNIST digits and builds the model (seconds)  # doctest: +SKIP
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
        factory = task_factory(spec)
    else:
        raise TaskError(f"unknown task {spec!r}; choose one of {', '.join(TASKS)} or give 'package.module:factory'")
    try:  # options the factory's signature does not take are the caller's error; a TypeError inside it is not
        inspect.signature(factory).bind(**options)
    except TypeError as e:
        raise TaskError(f"task factory {spec!r} rejected options {options}: {e}") from e
    except ValueError:  # no signature to check (a builtin): calling it tells
        pass
    try:
        task = factory(**options)
    except TaskError:
        raise
    except Exception as e:  # a user's factory: say whose code failed and where, keep the cause chained
        frames = traceback.extract_tb(e.__traceback__)
        where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if len(frames) > 1 else ""
        raise TaskError(f"task factory {spec!r} raised {type(e).__name__}: {e}{where}") from e
    if not isinstance(task, Task):
        raise TaskError(f"task factory {spec!r} returned {type(task).__name__}, expected steepest.app.tasks.Task")
    if not task.source:
        task.source = spec
    return task


def task_factory(spec: str) -> Callable[..., Task]:
    """The factory a built-in name or ``package.module:factory`` names (the current folder is importable,
    :mod:`steepest.app.userpath`); TaskError says what to fix."""
    if spec in TASKS:
        return TASKS[spec]
    mod_name, _, attr = spec.partition(":")
    if not mod_name or not all(p.isidentifier() for p in mod_name.split(".")) or not attr.isidentifier():
        raise TaskError(
            f"task {spec!r}: expected a built-in name ({', '.join(TASKS)}) or "
            "'package.module:factory' (e.g. mypkg.tasks:make_task)"
        )
    try:
        factory = import_spec(spec, "task")
    except SpecError as e:
        raise TaskError(str(e)) from e
    if not callable(factory):
        raise TaskError(f"{spec!r} names no callable (expected a function returning a steepest.app.tasks.Task)")
    return factory


def takes_size(spec: str) -> bool:
    """Whether the task ``spec`` accepts ``size=`` (``--size``/``--quick``): every built-in one does; a user's
    factory when it has a ``size`` parameter (``def make(size="default", **options)``)."""
    return spec in TASKS or (":" in spec and takes_argument(task_factory(spec), "size"))


def _describe(task: Task) -> str:
    return f"task {task.name!r}" + (f" (from {task.source})" if task.source and task.source != task.name else "")


def check_task(task: Task, seed: int = 0) -> None:
    """TaskError naming the task (and its factory) unless ``task`` keeps the :class:`Task` contract.

    Checks the fields' types, then builds the model (after ``torch.manual_seed(seed)``), takes batch
    ``(seed, 0)`` and its loss: ``make_model()`` must give an ``nn.Module`` with trainable
    parameters and ``loss`` a finite-or-not scalar tensor that depends on them. Nothing is trained.
    """
    import torch
    from torch import nn

    who = _describe(task) if isinstance(task, Task) else "task"
    if not isinstance(task, Task):
        raise TaskError(f"expected a steepest.app.tasks.Task, got {type(task).__name__}")
    if not isinstance(task.name, str) or not task.name or "/" in task.name:
        raise TaskError(f"{who}: name must be a non-empty string without '/', got {task.name!r}")
    for field in ("make_model", "batch", "loss", "evaluate"):
        if not callable(getattr(task, field)):
            raise TaskError(f"{who}: {field} must be callable, got {type(getattr(task, field)).__name__}")
    for field in ("steps", "eval_every"):
        v = getattr(task, field)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise TaskError(f"{who}: {field} must be a positive int, got {v!r}")
    for field in ("info", "routing"):
        if not isinstance(getattr(task, field), dict):
            raise TaskError(f"{who}: {field} must be a dict, got {type(getattr(task, field)).__name__}")
    state = torch.get_rng_state()
    try:
        torch.manual_seed(seed)
        try:
            model = task.make_model()
        except Exception as e:
            raise TaskError(f"{who}: make_model() raised {type(e).__name__}: {e}") from e
        if not isinstance(model, nn.Module):
            raise TaskError(f"{who}: make_model() returned {type(model).__name__}, expected a torch.nn.Module")
        if not any(p.requires_grad for p in model.parameters()):
            raise TaskError(
                f"{who}: make_model() returned a {type(model).__name__} without trainable parameters; "
                "there is nothing to optimize"
            )
        try:
            batch = task.batch(seed, 0)
            loss = task.loss(model, batch)
        except Exception as e:
            raise TaskError(f"{who}: batch(seed, 0) or loss(model, batch) raised {type(e).__name__}: {e}") from e
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1 or not loss.is_floating_point():
            got = f"a tensor of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise TaskError(f"{who}: loss(model, batch) must return a floating-point scalar tensor, got {got}")
        if not loss.requires_grad:
            raise TaskError(f"{who}: loss(model, batch) does not depend on the model's parameters (no gradient)")
    finally:
        torch.set_rng_state(state)


__all__ = ["Task", "TaskError", "TASKS", "get_task", "check_task", "package_dir", "task_factory", "takes_size"]
