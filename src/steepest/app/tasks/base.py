"""The :class:`Task` contract and its error (see :mod:`steepest.app.tasks` for how to write one)."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Callable
from typing import Any

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
    source: str = ""  #: where it came from ("package.module:factory"), named in error messages


def check_options(task: str, cfg: dict, positive_ints) -> None:
    """TaskError unless every key of ``positive_ints`` in ``cfg`` is an int >= 1 (a task option's value)."""
    for key in positive_ints:
        v = cfg.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise TaskError(f"{task} option {key} must be a positive integer, got {v!r}")


def package_dir(package: str, install: str) -> str:
    """Folder of an installed data package, found without importing it; TaskError naming ``install`` if absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TaskError(f"the data package {package!r} is not installed; install it with: {install}")
    return list(spec.submodule_search_locations)[0]


__all__ = ["Task", "TaskError", "check_options", "package_dir"]
