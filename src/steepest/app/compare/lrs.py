"""Learning rates and seeds of ``steepest compare``: the shipped tuned table and the order of precedence.

``resolve_lrs`` gives each optimizer its lr: one given by the caller, else the tuned table's for the task
and size (``src/steepest/app/tuned.json``, written by ``steepest sweep --write-tuned``), else the
optimizer's fallback, with a warning when the shipped table is missing.

Example:
    >>> lrs = resolve_lrs("charlm", "default", ["muon"], overrides={"muon": 0.01})
    >>> lrs["muon"]
    (0.01, 'given')
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from steepest.app.compare.optimizers import OPTIMIZERS
from steepest.app.guard import read_json
from steepest.app.runs import ConfigError

#: The shipped table of tuned learning rates (package data of ``steepest.app``).
TUNED_PATH = Path(__file__).resolve().parents[1] / "tuned.json"


def load_tuned(path: str | Path | None = None) -> dict:
    """The shipped tuned learning rates: ``{"tables": {"<task>/<size>": {optimizer: lr}}, ...}``.

    ``path`` defaults to :data:`TUNED_PATH`; a missing file gives empty tables (see :func:`resolve_lrs`).
    """
    path = Path(TUNED_PATH if path is None else path)
    if not path.exists():
        return {"tables": {}}
    return read_json(
        path,
        "tuned learning-rate table",
        "restore it (git checkout src/steepest/app/tuned.json, or reinstall steepest) or delete it to "
        "use the untuned fallback learning rates",
        _tuned_check,
    )


def _tuned_check(data) -> str | None:
    if not isinstance(data, dict) or not isinstance(data.get("tables", {}), dict):
        return "expected an object with a 'tables' object"
    for key, table in data.get("tables", {}).items():
        if not isinstance(table, dict):
            return f"tables[{key!r}] is {type(table).__name__}, expected an object of optimizer: lr"
        for name, lr in table.items():
            if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (math.isfinite(lr) and lr > 0):
                return f"tables[{key!r}][{name!r}] = {lr!r} is not a positive learning rate"
    return None


#: Largest learning rate accepted (generous: a divergence test uses 1e6; far above it a step overflows
#: float32, whose largest value is 3.4e38, and the weights would turn Inf).
MAX_LR = 1e8
#: Seeds are 0 <= seed <= MAX_SEED (torch.manual_seed takes 64-bit seeds; numpy's rng non-negative ones).
MAX_SEED = 2**63 - 1


def check_seed(seed) -> int:
    """ConfigError unless ``seed`` is an int in [0, :data:`MAX_SEED`]."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        shown = f"{seed!r}" if len(repr(seed)) < 40 else f"a {len(str(seed))}-digit number"
        raise ConfigError(f"seed must be an integer from 0 to 2**63-1, got {shown}")
    return seed


def resolve_lrs(
    task_name: str, size: str, names, overrides: dict | None = None, tuned: dict | None = None
) -> dict[str, tuple[float, str]]:
    """``{optimizer: (lr, source)}`` for ``names`` plus ``adamw`` (its lr trains the hybrids' AdamW part).

    Order of precedence: ``overrides`` ("given"), the tuned table for ``task/size``, then for
    ``task/default`` ("tuned"), then the optimizer's fallback ("untuned default"). When ``tuned`` is not
    given and the shipped table (:data:`TUNED_PATH`) is missing, a ``UserWarning`` names the fallback
    learning rates used instead (an install without its package data would otherwise train untuned).
    """
    shipped_missing = tuned is None and not Path(TUNED_PATH).exists()
    tables = (tuned if tuned is not None else load_tuned()).get("tables", {})
    table = tables.get(f"{task_name}/{size}") or tables.get(f"{task_name}/default") or {}
    overrides = dict(overrides or {})
    bad = set(overrides) - set(OPTIMIZERS)
    if bad:
        raise ConfigError(f"lrs names unknown optimizer(s) {sorted(bad)}; choose from {', '.join(OPTIMIZERS)}")
    out = {}
    for name in dict.fromkeys([*names, "adamw"]):
        if name in overrides:
            lr, src = float(overrides[name]), "given"
        elif name in table:
            lr, src = float(table[name]), "tuned"
        else:
            lr, src = OPTIMIZERS[name].fallback_lr, "untuned default"
        if not (0 < lr <= MAX_LR):
            raise ConfigError(f"learning rate for {name} must be a positive number up to {MAX_LR:g}, got {lr}")
        out[name] = (lr, src)
    fallback = [f"{n}={lr:.3g}" for n, (lr, src) in out.items() if src == "untuned default"]
    if shipped_missing and fallback:
        warnings.warn(
            f"no tuned learning-rate table at {TUNED_PATH} (is steepest installed without its package "
            f"data?); using untuned fallback learning rates: {', '.join(fallback)}",
            UserWarning,
            stacklevel=2,
        )
    return out


__all__ = ["TUNED_PATH", "MAX_LR", "MAX_SEED", "load_tuned", "check_seed", "resolve_lrs"]
