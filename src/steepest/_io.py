"""Atomic result files and JSONL records: the bottom-floor I/O every layer may use.

Writes go to a temporary file in the same folder, are fsynced, then renamed over the target, so a
reader (or a resumed run) never sees a half-written file; JSONL appends tolerate a torn last line.
Standard library only (no torch, no yaml), so the library's sinks and the application share it.

Example:
    >>> from steepest._io import append_jsonl, read_jsonl
    >>> append_jsonl("/tmp/m.jsonl", {"step": 1, "loss": float("nan")})  # writes a file under /tmp  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any


def _write(f, data) -> None:
    """The one place result bytes reach a file (tests simulate a full disk by replacing it)."""
    f.write(data)


def _named(e: OSError, path: Path) -> OSError:
    """``e`` with ``path`` as its filename (a full disk reported by fsync or write names no file)."""
    if e.filename is None and e.errno is not None:
        return type(e)(e.errno, e.strerror or os.strerror(e.errno), str(path))
    return e


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, fsync, then rename.

    The temp file is ``.<name>.<8 random characters>.tmp`` (:data:`TEMP_PATTERN`); an OSError (a full
    disk, a read-only file system) names ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _named(e, path) from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; give what open(..., "w") gives
        with os.fdopen(fd, "wb") as f:
            _write(f, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):
            raise _named(e, path) from None
        raise
    return path


#: The name :func:`atomic_write_bytes` gives its temp file: ``.<target name>.<mkstemp's 8 characters>.tmp``.
TEMP_PATTERN = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


class FileTooLarge(ValueError):
    """A file the application reads is larger than its limit (an endless device, a wrong path)."""

    def __init__(self, path: str | os.PathLike, limit: int) -> None:
        self.path, self.limit = Path(path), int(limit)
        shown = f"{limit / 2**20:g} MiB" if limit >= 2**20 else f"{limit} bytes"
        super().__init__(
            f"{path} is larger than {shown}, the limit for this file "
            "(is it the right file? /dev/zero and other endless files are refused)"
        )


def read_bytes_limited(path: str | os.PathLike, limit: int) -> bytes:
    """The bytes of ``path``; :class:`FileTooLarge` when it holds more than ``limit`` bytes (it reads at
    most ``limit + 1`` bytes, so an endless file such as /dev/zero fails at once)."""
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(path, limit)
    return data


def current_umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj):
    if dataclasses.is_dataclass(obj):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (NaN/Inf written as JSON null-safe strings)."""
    return atomic_write_text(path, json.dumps(_sanitize(obj), indent=2, default=_json_default) + "\n")


def _sanitize(obj):
    """Replace float NaN/Inf by strings so the file is strict JSON."""
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): _sanitize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_sanitize(v) for v in obj]
    return obj


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON record as a line (a torn last line is skipped by :func:`read_jsonl`)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            _write(f, json.dumps(_sanitize(record), default=_json_default) + "\n")
            f.flush()
    except OSError as e:
        raise _named(e, path) from None


class JsonlDamaged(ValueError):
    """A JSONL file holds lines that are not JSON objects (other than a torn last line)."""

    def __init__(self, path: Path, bad: list[int]) -> None:
        self.path, self.bad = Path(path), list(bad)
        shown = ", ".join(map(str, bad[:10])) + (", ..." if len(bad) > 10 else "")
        super().__init__(f"{path}: {len(bad)} damaged line(s) (not a JSON object: line {shown})")


def scan_jsonl(path: str | os.PathLike, limit: int | None = None) -> tuple[list[dict], list[int]]:
    """``(records, bad line numbers)`` of a JSONL file (1-based; a missing file is empty).

    ``limit``: at most this many bytes (:class:`FileTooLarge` beyond it); None reads any size.

    A last line without its newline that does not parse is a torn append (a kill in mid-write) and
    is neither returned nor counted; every other line that is not a JSON object is counted as bad.
    """
    out: list[dict] = []
    bad: list[int] = []
    path = Path(path)
    if not path.exists():
        return out, bad
    raw = path.read_bytes() if limit is None else read_bytes_limited(path, limit)
    text = raw.decode("utf-8", errors="replace")
    lines = text.split("\n")
    torn = lines[-1] if lines else ""  # the text after the last newline ("" when it ends in one)
    lines = lines[:-1]
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            bad.append(i)
            continue
        (out.append(rec) if isinstance(rec, dict) else bad.append(i))
    if torn.strip():
        try:
            rec = json.loads(torn)
        except json.JSONDecodeError:
            return out, bad  # torn last line
        (out.append(rec) if isinstance(rec, dict) else bad.append(len(lines) + 1))
    return out, bad


def read_jsonl(path: str | os.PathLike, errors: str = "warn") -> list[dict]:
    """Read a JSONL file, skipping a torn (half-written) final line.

    Other damaged lines (not JSON, or JSON that is not an object) are counted and, by ``errors``:
    ``"warn"`` (a UserWarning naming the file and the line numbers, then skipped), ``"raise"``
    (:class:`JsonlDamaged`) or ``"ignore"``.
    """
    if errors not in ("warn", "raise", "ignore"):
        raise ValueError(f"errors must be 'warn', 'raise' or 'ignore', got {errors!r}")
    records, bad = scan_jsonl(path)
    if bad and errors != "ignore":
        err = JsonlDamaged(Path(path), bad)
        if errors == "raise":
            raise err
        import warnings

        warnings.warn(f"{err}; those lines were skipped", UserWarning, stacklevel=2)
    return records


__all__ = [
    "FileTooLarge",
    "read_bytes_limited",
    "TEMP_PATTERN",
    "JsonlDamaged",
    "scan_jsonl",
    "current_umask",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "append_jsonl",
    "read_jsonl",
]
