"""tools/setup.sh's torch check: the platform's 2.13.0 build passes whatever its local suffix.

The script's own check (``tools/setup.sh --check-torch PYTHON``) runs against a fake interpreter: a
tiny script that answers ``-c "import torch; print(torch.__version__)"`` with a chosen version, as
the interpreter of a machine whose index serves that build would.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SETUP = ROOT / "tools" / "setup.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="tools/setup.sh needs bash")


def _fake_python(tmp_path: pathlib.Path, version: str) -> pathlib.Path:
    exe = tmp_path / f"python-{version.replace('+', '_')}"
    exe.write_text(f"#!/bin/sh\necho '{version}'\n")
    exe.chmod(0o755)
    return exe


def _check(python: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(SETUP), "--check-torch", str(python)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHON": "false"},
    )  # PYTHON: never used by the check


@pytest.mark.parametrize(
    "version, ok",
    [
        ("2.13.0", True),
        ("2.13.0+cu130", True),
        ("2.13.0+cpu", True),
        ("2.14.0", False),
        ("2.13.1", False),
        ("2.13.0a0", False),
    ],
)
def test_torch_check_ignores_the_local_suffix_only(tmp_path, version, ok):
    r = _check(_fake_python(tmp_path, version))
    assert (r.returncode == 0) is ok, r.stderr
    if not ok:
        assert f"torch is {version}" in r.stderr and "expected 2.13.0" in r.stderr


def test_torch_check_fails_when_torch_does_not_import(tmp_path):
    exe = tmp_path / "broken"
    exe.write_text("#!/bin/sh\nexit 1\n")
    exe.chmod(0o755)
    r = _check(exe)
    assert r.returncode == 1 and "cannot import torch" in r.stderr


def test_check_does_not_touch_the_venv(tmp_path):
    """--check-torch returns before any venv or pip step (it is safe to run anywhere)."""
    stamp = ROOT / ".venv" / ".setup-stamp"
    before = stamp.read_text() if stamp.exists() else None
    _check(_fake_python(tmp_path, "2.14.0"))
    assert (stamp.read_text() if stamp.exists() else None) == before


def test_pip_check_is_clean_in_the_environment_set_up():
    """issue 19 item 6: the data packages come with their own requirements, so ``pip check`` finds nothing
    broken in the environment tools/setup.sh made (the interpreter running the tests)."""
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "pip", "check", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "No broken requirements found" in r.stdout, r.stdout + r.stderr
