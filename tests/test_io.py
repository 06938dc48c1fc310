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
    with pytest.raises(OSError, match="disk full"):
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


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_atomic_writes_follow_the_umask_like_open(tmp_path, umask, mode):
    """mkstemp makes 0600 files; atomic writes must give what open(..., "w") gives (issue 13)."""
    import stat

    old = os.umask(umask)
    try:
        _io.atomic_write_text(tmp_path / "a.txt", "x")
        _io.append_jsonl(tmp_path / "m.jsonl", {"step": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == mode
    assert stat.S_IMODE((tmp_path / "m.jsonl").stat().st_mode) == mode  # the same as the JSONL files


def test_jsonl_counts_and_reports_damaged_lines(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\nnot json\n[1, 2]\n{"step": 4}\n{"step": 5, "lo')
    records, bad = _io.scan_jsonl(path)
    assert records == [{"step": 1}, {"step": 4}] and bad == [2, 3]  # the torn last line is not counted
    with pytest.warns(UserWarning, match=r"m.jsonl: 2 damaged line\(s\) \(not a JSON object: line 2, 3\)"):
        assert _io.read_jsonl(path) == records
    with pytest.raises(_io.JsonlDamaged, match="line 2, 3"):
        _io.read_jsonl(path, errors="raise")
    path.write_text('{"step": 1}\n[3]')  # complete JSON, wrong shape, no newline
    assert _io.scan_jsonl(path) == ([{"step": 1}], [2])
    with pytest.raises(ValueError, match="errors must be"):
        _io.read_jsonl(path, errors="skip")


def test_temp_files_match_the_pattern_that_cleanup_removes(tmp_path, monkeypatch):
    """The temp name atomic_write_bytes gives is exactly what TEMP_PATTERN matches (and nothing looser)."""
    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        return real(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    for _ in range(20):
        _io.atomic_write_text(tmp_path / "config.json", "{}")
    assert all(_io.TEMP_PATTERN.match(n)["target"] == "config.json" for n in seen), seen
    for foreign in (
        ".draft.tmp",
        ".config.json.tmp",
        ".config.json.abc.tmp",
        "config.json.abcd1234.tmp",
        ".config.json.ABCD1234.tmp",
    ):
        assert _io.TEMP_PATTERN.match(foreign) is None, foreign


def test_read_bytes_limited_stops_at_the_limit(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 10)
    assert _io.read_bytes_limited(tmp_path / "a", 10) == b"x" * 10
    with pytest.raises(_io.FileTooLarge, match="a is larger than 9 bytes, the limit for this file"):
        _io.read_bytes_limited(tmp_path / "a", 9)
    with pytest.raises(_io.FileTooLarge, match="/dev/zero is larger than 1 MiB"):  # endless: read stops at once
        _io.read_bytes_limited("/dev/zero", 2**20)


def test_write_errors_name_the_file(tmp_path, monkeypatch):
    import errno

    def full(f, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_io, "_write", full)
    with pytest.raises(OSError, match="No space left on device") as e:
        _io.atomic_write_text(tmp_path / "r.json", "{}")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(tmp_path / "r.json")
    assert list(tmp_path.iterdir()) == []  # no temp file left behind
    with pytest.raises(OSError, match="No space left on device") as e:
        _io.append_jsonl(tmp_path / "m.jsonl", {"step": 1})
    assert e.value.filename == str(tmp_path / "m.jsonl")
