"""The tooling promises: a user's type checker sees steepest's annotations (py.typed), and every
docstring example in src/ runs or says why it does not."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import steepest

SRC = Path(steepest.__file__).resolve().parent

USER_CODE = """\
import torch
import steepest

params = [torch.nn.Parameter(torch.zeros(4, 3))]
bad = steepest.Muon(params, lr="0.1")
good = steepest.Muon(params, lr=0.1)
"""


@pytest.mark.slow  # mypy analyses torch from a cold cache: 30-60 s on 2 shared cores
def test_mypy_flags_a_string_lr_in_user_code(tmp_path):
    pytest.importorskip("mypy")
    (tmp_path / "user.py").write_text(USER_CODE)
    # The steepest this test imports, found the way an installed package is (so py.typed decides).
    env = {**os.environ, "PYTHONPATH": str(SRC.parent)}
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache"), "user.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = r.stdout + r.stderr
    assert "Skipping analyzing" not in out, out
    assert r.returncode == 1, out
    assert 'user.py:5: error: Argument "lr" to "Muon" has incompatible type "str"; expected "float"' in out, out
    assert "Found 1 error in 1 file" in out, out  # the float lr on line 6 is fine


def test_py_typed_marker_is_shipped():
    assert (SRC / "py.typed").is_file()


def test_every_skipped_doctest_says_why():
    """``# doctest: +SKIP`` only after a comment with the reason (``>>> f()  # trains for minutes  # doctest: +SKIP``)."""
    bare = []
    for path in sorted(SRC.rglob("*.py")):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if "doctest: +SKIP" in line and not re.search(r"#\s*\w[^#]*#\s*doctest: \+SKIP", line):
                bare.append(f"{path.relative_to(SRC)}:{i}")
    assert not bare, f"+SKIP without a reason: {bare}"
