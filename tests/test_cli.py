"""The ``steepest`` command's surface: subcommands agree on ``--out`` (``--run-dir`` an alias), exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import steepest.app.commands.compare as compare_cmd
import steepest.app.commands.sweep as sweep_cmd
from steepest.app.cli import build_parser, main


@pytest.mark.parametrize("argv", [["compare"], ["sweep"], ["reproduce", "quadratic"]])
def test_out_names_the_output_directory_everywhere(argv, tmp_path):
    args = build_parser().parse_args([*argv, "--out", str(tmp_path)])
    assert args.out == str(tmp_path)


@pytest.mark.parametrize("argv", [["compare"], ["reproduce", "quadratic"]])
def test_run_dir_is_an_alias_of_out(argv, tmp_path):
    assert build_parser().parse_args([*argv, "--run-dir", str(tmp_path)]).out == str(tmp_path)


def test_compare_out_is_the_run_directory(tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(compare_cmd, "compare", lambda *a, **k: seen.update(k))
    assert main(["compare", "--quick", "--out", str(tmp_path / "run")]) == 0
    assert seen["run_dir"] == str(tmp_path / "run")


def test_sweep_out_holds_the_cache_unless_cache_is_given(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(sweep_cmd, "sweep", lambda *a, **k: seen.append(k) or {"adamw": 1e-3})
    assert main(["sweep", "--quick", "--optimizers", "adamw", "--out", str(tmp_path)]) == 0
    assert main(["sweep", "--quick", "--optimizers", "adamw", "--cache", str(tmp_path / "c.json")]) == 0
    assert main(["sweep", "--quick", "--optimizers", "adamw"]) == 0
    assert [Path(k["cache"]) for k in seen] == [
        tmp_path / "sweep-cache.json",
        tmp_path / "c.json",
        Path("runs") / "sweep-cache.json",
    ]


def test_exit_codes_no_command_and_bad_usage(capsys):
    assert main([]) == 2  # help printed, no command
    with pytest.raises(SystemExit, match="^2$") as e:  # argparse's usage error: exit status 2
        main(["compare", "--no-such-flag"])
    assert e.value.code == 2
    assert main(["compare", "--task", "no-such-task"]) == 2
    assert main(["reproduce", "no-such-experiment"]) == 2


def test_module_entry_point_runs(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "steepest.app.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and "compare" in r.stdout and "reproduce" in r.stdout
