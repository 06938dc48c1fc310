"""Where diagnostics records go: JSONL and CSV always, TensorBoard when installed, a list in memory.

A record is a flat dict: ``step``, ``layer``, ``shape`` and every metric (numbers, strings, booleans or
``None``). Every sink has ``write(record)`` and ``close()``.

Example:
    >>> sinks = [JSONLSink("run/diagnostics.jsonl"), CSVSink("run/diagnostics.csv")]
"""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

from steepest._io import append_jsonl


class MemorySink:
    """Keeps records in ``self.records`` (tests, notebooks, the adaptive optimizer)."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def write(self, record: dict) -> None:
        self.records.append(dict(record))

    def close(self) -> None:
        pass


class JSONLSink:
    """One JSON object per line, appended and flushed per record (NaN/Inf written as strings)."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        append_jsonl(self.path, record)

    def close(self) -> None:
        pass


class CSVSink:
    """A CSV file whose columns are the first record's keys (later records: missing keys left empty,
    new keys dropped; the monitor writes one fixed schema). Shapes are written as ``"768x3072"``."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = None
        self._writer = None

    @staticmethod
    def _cell(v):
        if isinstance(v, (list, tuple)):
            return "x".join(str(x) for x in v)
        return "" if v is None else v

    def write(self, record: dict) -> None:
        if self._writer is None:
            new = not self.path.exists() or self.path.stat().st_size == 0
            self._file = open(self.path, "a", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(self._file, fieldnames=list(record), extrasaction="ignore")
            if new:
                self._writer.writeheader()
        self._writer.writerow({k: self._cell(v) for k, v in record.items()})
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None


def tensorboard_available() -> bool:
    """True when the optional ``tensorboard`` package (``pip install steepest[tensorboard]``) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardSink:
    """Scalars ``<layer>/<metric>`` at ``step`` through ``torch.utils.tensorboard.SummaryWriter``.

    Needs the optional ``tensorboard`` package; raises ImportError with the install command otherwise.
    Non-numeric fields (shape, winner names) are skipped; booleans are written as 0/1.
    """

    def __init__(self, log_dir) -> None:
        if not tensorboard_available():
            raise ImportError("TensorBoardSink needs the 'tensorboard' package: pip install 'steepest[tensorboard]'")
        from torch.utils.tensorboard import SummaryWriter  # lazy: tensorboard is an optional extra

        self._writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, record: dict) -> None:
        step, layer = record.get("step", 0), record.get("layer", "")
        for k, v in record.items():
            if k in ("step", "layer") or isinstance(v, str) or v is None or isinstance(v, (list, tuple)):
                continue
            v = float(v)
            if math.isfinite(v):
                self._writer.add_scalar(f"{layer}/{k}", v, step)

    def close(self) -> None:
        self._writer.close()


def default_sinks(directory) -> list:
    """JSONL + CSV under ``directory`` (``diagnostics.jsonl``, ``diagnostics.csv``), plus TensorBoard
    (``directory/tensorboard``) when the package is installed."""
    d = Path(directory)
    sinks = [JSONLSink(d / "diagnostics.jsonl"), CSVSink(d / "diagnostics.csv")]
    if tensorboard_available():
        sinks.append(TensorBoardSink(d / "tensorboard"))
    return sinks


__all__ = ["MemorySink", "JSONLSink", "CSVSink", "TensorBoardSink", "tensorboard_available", "default_sinks"]
