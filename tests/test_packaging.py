"""A built wheel carries its package data: installed from the wheel (not the source tree), ``steepest
compare`` finds the tuned learning-rate table; without the table it warns and names the lrs it uses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import steepest.app.compare.lrs as job
from steepest.app.compare import resolve_lrs

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, **kw)
    assert r.returncode == 0, f"{cmd}\n{r.stdout}\n{r.stderr}"
    return r


def test_wheel_ships_the_tuned_table(tmp_path):
    pytest.importorskip("setuptools")
    # Build from a copy, so the build leaves no build/ or egg-info folders in the checkout.
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    wheels, target = tmp_path / "wheels", tmp_path / "site"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(wheels),
            str(project),
        ]
    )
    (wheel,) = wheels.glob("steepest-*.whl")
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel)])
    assert (target / "steepest" / "app" / "tuned.json").is_file()
    assert (target / "steepest" / "py.typed").is_file()  # PEP 561: type checkers read steepest's annotations
    (dist_info,) = target.glob("steepest-*.dist-info")
    assert "steepest = steepest.app.cli:main" in (dist_info / "entry_points.txt").read_text()

    code = (
        "import warnings; warnings.simplefilter('error')\n"
        "import steepest\n"
        "from steepest.app.compare import resolve_lrs\n"
        "print(steepest.__file__)\n"
        "lrs = resolve_lrs('charlm', 'default', ['adamw', 'muon'])\n"
        "assert {src for _, src in lrs.values()} == {'tuned'}, lrs\n"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = _run([sys.executable, "-c", code], cwd=tmp_path, env=env).stdout
    assert Path(out.splitlines()[0]).resolve().is_relative_to(target.resolve())  # the wheel, not src/


def test_missing_tuned_table_warns_with_the_lrs_used(tmp_path, monkeypatch):
    monkeypatch.setattr(job, "TUNED_PATH", tmp_path / "missing.json")
    with pytest.warns(UserWarning, match=r"untuned fallback learning rates: muon=0\.02, adamw=0\.003"):
        lrs = resolve_lrs("charlm", "default", ["muon"])
    assert lrs["muon"][1] == lrs["adamw"][1] == "untuned default"


def test_given_table_or_lrs_need_no_warning(tmp_path, monkeypatch, recwarn):
    monkeypatch.setattr(job, "TUNED_PATH", tmp_path / "missing.json")
    resolve_lrs("charlm", "default", ["muon"], {"muon": 0.01, "adamw": 0.002})  # every lr given
    resolve_lrs("charlm", "default", ["muon"], tuned={"tables": {}})  # an explicit (empty) table
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
