"""steepest._io: atomic writes leave no partial file, JSONL readers skip a torn last line."""

from __future__ import annotations

import json
import os

import pytest

from steepest import _io


def test_atomic_write_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "out" / "results.json"
    _io.atomic_write_json(path, {"a": 1.0, "nan": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1.0, "nan": "nan"}  # strict JSON, NaN as a string

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        _io.atomic_write_json(path, {"a": 2.0})
    assert json.loads(path.read_text()) == {"a": 1.0, "nan": "nan"}  # old content intact
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # temp file cleaned up


def test_jsonl_skips_torn_last_line(tmp_path):
    path = tmp_path / "m.jsonl"
    _io.append_jsonl(path, {"step": 1})
    _io.append_jsonl(path, {"step": 2})
    with open(path, "a") as f:
        f.write('{"step": 3, "lo')  # a crash mid-write
    assert _io.read_jsonl(path) == [{"step": 1}, {"step": 2}]
