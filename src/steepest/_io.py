"""Atomic result files and JSONL records: the bottom-floor I/O every layer may use.

Writes go to a temporary file in the same folder, are fsynced, then renamed over the target, so a
reader (or a resumed run) never sees a half-written file; JSONL appends tolerate a torn last line.
Standard library only (no torch, no yaml), so the library's sinks and the application share it.

Example:
    >>> from steepest._io import append_jsonl, read_jsonl
    >>> append_jsonl("/tmp/m.jsonl", {"step": 1, "loss": float("nan")})   # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically: a temp file in the same folder, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


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
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(_sanitize(record), default=_json_default) + "\n")
        f.flush()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file, skipping a torn (half-written) final line."""
    out = []
    path = Path(path)
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "append_jsonl", "read_jsonl"]
