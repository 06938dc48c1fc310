"""The main job, ``steepest.compare(...)``: several optimizers on one task, side by side (see :mod:`.job`).

Modules: ``job`` (entry point, run directory), ``lrs`` (learning rates, seeds), ``table`` (the printed
table), ``loop`` (one training loop), ``runner`` (one optimizer's run with checkpoints), ``optimizers`` (the
named optimizers compared), ``monitor`` (per-layer diagnostics during a run), ``report`` (report.html),
``sweep`` (learning-rate tuning), ``data_parallel`` (``nproc > 1``), ``schedule_oracle`` (the upper bound of
the time choosers).
"""

from steepest.app.compare.job import (
    TABLE_COLUMNS,
    CompareConfig,
    CompareResult,
    compare,
    format_table,
    load_tuned,
    resolve_lrs,
    steps_to_reach,
    summarize,
)

__all__ = [
    "compare",
    "CompareConfig",
    "CompareResult",
    "resolve_lrs",
    "load_tuned",
    "summarize",
    "format_table",
    "steps_to_reach",
    "TABLE_COLUMNS",
]
