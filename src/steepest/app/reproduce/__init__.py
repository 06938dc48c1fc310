"""Seed reproductions, one module per seed (``steepest reproduce NAME``).

Each module returns its measured numbers and a verdict for every claim it checks; see
:mod:`steepest.app.reproduce.base` for the shared contract (config dataclass, ``quick()``, ``run``,
``claims``, ``figures``) and the resumable sweep cells.
"""

from steepest.app.reproduce.base import REGISTRY, Cells, Claim, Outcome, get, run_experiment, verdict

__all__ = ["REGISTRY", "Cells", "Claim", "Outcome", "get", "run_experiment", "verdict"]
