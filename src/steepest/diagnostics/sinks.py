"""Where diagnostics records go: JSONL and CSV always, TensorBoard when installed, a list in memory.

A record is a flat dict: ``step``, ``layer``, ``shape`` and every metric (numbers, strings, booleans or
``None``). Every sink has ``write(record)`` and ``close()``; the file and memory sinks also have
``rewind(step)`` (drop the records of steps >= ``step``), which :meth:`LayerMonitor.load_state_dict`
calls on resume so that an interrupted run's records after its checkpoint do not appear twice.

Example:
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> tmp = tempfile.TemporaryDirectory()          # your run's folder in real use
    >>> run = Path(tmp.name)
    >>> sinks = [JSONLSink(run / "diagnostics.jsonl"), CSVSink(run / "diagnostics.csv")]
    >>> for sink in sinks:
    ...     sink.write({"step": 0, "layer": "0", "shape": "16x8", "stable_rank": 3.5})
    ...     sink.close()
    >>> json.loads((run / "diagnostics.jsonl").read_text())["stable_rank"]
    3.5
    >>> (run / "diagnostics.csv").read_text().splitlines()
    ['step,layer,shape,stable_rank', '0,0,16x8,3.5']
    >>> tmp.cleanup()
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import warnings
from pathlib import Path
from typing import TextIO

from steepest._io import append_jsonl, atomic_write_text


def _step_of(record) -> float:
    try:
        return float(record.get("step"))
    except (AttributeError, TypeError, ValueError):
        return -math.inf  # a record without a step is kept


class MemorySink:
    """Keeps records in ``self.records`` (tests, notebooks, the adaptive optimizer)."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def write(self, record: dict) -> None:
        self.records.append(dict(record))

    def rewind(self, step: int) -> None:
        self.records = [r for r in self.records if _step_of(r) < step]

    def close(self) -> None:
        pass


class JSONLSink:
    """One JSON object per line, appended and flushed per record (NaN/Inf written as strings)."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        append_jsonl(self.path, record)

    def rewind(self, step: int) -> None:
        """Rewrite the file (atomically) without the records of steps >= ``step``; torn lines are dropped."""
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if _step_of(json.loads(line)) < step:
                    keep.append(line)
            except json.JSONDecodeError:
                continue
        atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def close(self) -> None:
        pass


class CSVSink:
    """A CSV file whose columns are the first record's keys (later records: missing keys left empty,
    new keys dropped; the monitor writes one fixed schema). Shapes are written as ``"768x3072"``."""

    def __init__(self, path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: TextIO | None = None
        self._writer: csv.DictWriter | None = None

    @staticmethod
    def _cell(v):
        if isinstance(v, (list, tuple)):
            return "x".join(str(x) for x in v)
        return "" if v is None else v

    def write(self, record: dict) -> None:
        if self._file is None or self._writer is None:
            new = not self.path.exists() or self.path.stat().st_size == 0
            self._file = open(self.path, "a", newline="", encoding="utf-8")
            self._writer = csv.DictWriter(self._file, fieldnames=list(record), extrasaction="ignore")
            if new:
                self._writer.writeheader()
        self._writer.writerow({k: self._cell(v) for k, v in record.items()})
        self._file.flush()

    def rewind(self, step: int) -> None:
        """Rewrite the file (atomically) without the rows of steps >= ``step`` (header kept)."""
        self.close()
        if not self.path.exists() or self.path.stat().st_size == 0:
            return
        with open(self.path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        head, body = rows[0], rows[1:]
        col = head.index("step") if "step" in head else None
        keep = [r for r in body if col is None or col >= len(r) or _step_of({"step": r[col]}) < step]
        buf = io.StringIO()
        csv.writer(buf).writerows([head, *keep])
        atomic_write_text(self.path, buf.getvalue())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None


def target(sink) -> str:
    """Where ``sink`` writes, for messages: its ``path`` or ``log_dir``, else its type."""
    where = getattr(sink, "path", None) or getattr(sink, "log_dir", None)
    return f"{type(sink).__name__}({str(where)!r})" if where is not None else type(sink).__name__


class Guarded:
    """Several sinks, each of which may fail without failing training (the monitor writes from inside
    ``optimizer.step()``, after the step was applied: an exception there would make a caller retry it).

    A sink whose ``write``, ``rewind`` or ``close`` raises (a full disk, a read-only file, any exception) is
    warned about once, naming its file and the error, and disabled (``failed``: sink -> message); the
    other sinks go on. ``sinks`` is the caller's list (sinks appended to it later are used too).

    Example:
        >>> out = Guarded([MemorySink()]); out.write({"step": 0})
    """

    def __init__(self, sinks: list) -> None:
        self.sinks = sinks
        self.failed: dict[int, str] = {}  # id(sink) -> the warning

    def _each(self, method: str, *args) -> None:
        for sink in self.sinks:
            if id(sink) in self.failed:
                continue
            fn = getattr(sink, method, None)
            if method == "rewind" and not callable(fn):
                continue
            try:
                if not callable(fn):
                    raise TypeError(f"{type(sink).__name__} has no {method}() method")
                fn(*args)
            except Exception as e:  # noqa: BLE001 (any sink error: disable the sink, never fail the step)
                self.failed[id(sink)] = msg = (
                    f"LayerMonitor: {method} to {target(sink)} failed ({type(e).__name__}: "
                    f"{e}); this sink is disabled, training and the other sinks go on"
                )
                warnings.warn(msg, RuntimeWarning, stacklevel=2)

    def write(self, record: dict) -> None:
        self._each("write", record)

    def rewind(self, step: int) -> None:
        self._each("rewind", step)

    def close(self) -> None:
        self._each("close")
        for sink in self.sinks:  # release what a disabled sink holds (an open file), quietly
            if id(sink) in self.failed:
                try:
                    sink.close()
                except Exception:  # noqa: BLE001 (already warned about)
                    pass


def tensorboard_available() -> bool:
    """True when the optional ``tensorboard`` package (``pip install steepest[tensorboard]``) is installed."""
    return importlib.util.find_spec("tensorboard") is not None


#: Verdict fields and the scalar each verdict is written as (TensorBoard has no string scalars).
VERDICTS = {
    "dd_winner": {"spectral": 1.0, "frobenius": 0.0, "none": -1.0},
    "spec_sign_winner": {"spectral": 1.0, "linf": 0.0, "none": -1.0},
}


class TensorBoardSink:
    """Scalars grouped by metric, ``<metric>/<layer>``, at ``step`` through ``torch.utils.tensorboard.SummaryWriter``.

    One TensorBoard section per metric (``nr_G``, ``st_A``, ...) compares the layers on one chart. The
    verdicts are scalars too (:data:`VERDICTS`): ``dd_winner/<layer>`` 1 = spectral, 0 = Frobenius,
    -1 = none (zero gradient); ``spec_sign_winner/<layer>`` 1 = spectral, 0 = linf (sign), -1 = none; and,
    when the writer has ``add_text``, ``verdicts/<layer>`` the winners as text. Other strings, shapes,
    ``None`` and non-finite values are skipped; booleans are written as 0/1. Needs the optional
    ``tensorboard`` package; raises ImportError with the install command otherwise.
    """

    def __init__(self, log_dir) -> None:
        if not tensorboard_available():
            raise ImportError("TensorBoardSink needs the 'tensorboard' package: pip install 'steepest[tensorboard]'")
        from torch.utils.tensorboard import SummaryWriter  # lazy: tensorboard is an optional extra

        self.log_dir = log_dir
        self._writer = SummaryWriter(log_dir=str(log_dir))

    def write(self, record: dict) -> None:
        step, layer = record.get("step", 0), record.get("layer", "")
        for k, v in record.items():
            if k in VERDICTS and isinstance(v, str) and v in VERDICTS[k]:
                self._writer.add_scalar(f"{k}/{layer}", VERDICTS[k][v], step)
                continue
            if k in ("step", "layer") or isinstance(v, str) or v is None or isinstance(v, (list, tuple)):
                continue
            v = float(v)
            if math.isfinite(v):
                self._writer.add_scalar(f"{k}/{layer}", v, step)
        said = [f"{k}: {record[k]}" for k in VERDICTS if isinstance(record.get(k), str)]
        if said and callable(getattr(self._writer, "add_text", None)):
            self._writer.add_text(f"verdicts/{layer}", ", ".join(said), step)

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


__all__ = [
    "VERDICTS",
    "Guarded",
    "target",
    "MemorySink",
    "JSONLSink",
    "CSVSink",
    "TensorBoardSink",
    "tensorboard_available",
    "default_sinks",
]
