"""Attacks on the application kept as regression tests (issue 13, "nothing lost, nothing silently wrong").

Fast ones run by default: bad command-line values (exit 2, nothing created), damaged run files
(exit 2 naming the file and the fix), the run-directory lock, SIGTERM, custom tasks that break the
contract, and the launcher naming a killed rank. The kill/resume and ``--nproc`` signal attacks, which
start whole subprocess runs, are ``@pytest.mark.slow`` (run them with ``-m slow``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from steepest._io import read_jsonl
from steepest.app.cli import main
from steepest.app.compare.job import compare, load_tuned
from steepest.app.guard import RunLock, RunLockedError
from steepest.app.runs import ConfigError
from steepest.app.tasks import Task, TaskError

QUICK = dict(size="quick", progress=False, log=None, report=False)
MNIST = ["compare", "--task", "mnist", "--quick", "--optimizers", "adamw", "--no-progress", "--no-report"]
PY = sys.executable


def _evals(run, name="adamw"):
    return [(r["step"], r["val_loss"]) for r in read_jsonl(run / "metrics" / f"{name}.jsonl") if r["kind"] == "eval"]


# ------------------------------------------------------------------------------------ a cut run to attack
class Cut(Exception):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished 6-step mnist/adamw run and the same run cut after step 4 (checkpoint at step 3)."""
    base = tmp_path_factory.mktemp("attack")
    kw = dict(steps=6, eval_every=3, **QUICK)
    compare("mnist", ["adamw"], run_dir=base / "full", **kw)

    def cut(name, step, loss):
        if step == 4:
            raise Cut("cut after step 4")

    with pytest.raises(Cut, match="cut after step 4"):
        compare("mnist", ["adamw"], run_dir=base / "cut", on_step=cut, **kw)
    return base, kw


@pytest.fixture
def cut(runs, tmp_path):
    base, kw = runs
    run = tmp_path / "cut"
    shutil.copytree(base / "cut", run)
    return run, kw, base / "full"


def _resume_cli(run, capsys, *extra):
    rc = main([*MNIST, "--steps", "6", "--eval-every", "3", "--resume", "--out", str(run), *extra])
    return rc, capsys.readouterr().err


def test_clean_resume_matches_and_removes_leftover_temp_files(cut, capsys):
    run, kw, full = cut
    # temp files named as atomic_write_bytes names them (mkstemp: 8 characters of [a-z0-9_])
    leftover = [run / "checkpoints" / ".adamw.pt.k3j2x9ab.tmp", run / ".config.json.x8f_0q1z.tmp"]
    # files of the same look that steepest did not write: another suffix, another name shape, deeper
    (run / "notes").mkdir()
    foreign = [
        run / ".draft.tmp",
        run / ".notes.md.k3j2x9ab.tmp",
        run / "checkpoints" / ".adamw.pt.k3.tmp",
        run / "notes" / ".config.json.x8f_0q1z.tmp",
    ]
    for f in leftover + foreign:
        f.write_bytes(b"half")
    rc, err = _resume_cli(run, capsys)
    assert rc == 0, err
    assert not any(f.exists() for f in leftover)  # a SIGKILL's debris is cleaned under the lock
    assert all(f.read_bytes() == b"half" for f in foreign)  # nothing else is touched
    assert _evals(run) == _evals(full)  # bit-identical continuation (one thread, same batches)


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda r: (r / "checkpoints" / "adamw.pt").write_bytes((r / "checkpoints" / "adamw.pt").read_bytes()[:500]),
            "adamw.pt is truncated or not a checkpoint",
        ),
        (lambda r: (r / "checkpoints" / "adamw.pt").write_bytes(b""), "adamw.pt is truncated or not a checkpoint"),
        (lambda r: torch.save([1, 2], r / "checkpoints" / "adamw.pt"), "is not a steepest compare checkpoint"),
        (
            lambda r: (r / "config.json").write_text('{"config": {"steps": 6'),
            "config.json (the run's configuration) is damaged",
        ),
        (
            lambda r: (r / "config.json").write_text("[1, 2]"),
            "config.json (the run's configuration) has the wrong shape",
        ),
        (lambda r: (r / "config.json").write_text('{"config": 3}'), "has the wrong shape"),
    ],
)
def test_damaged_run_files_name_the_file_and_the_fix(cut, capsys, damage, message):
    run, _, _ = cut
    damage(run)
    rc, err = _resume_cli(run, capsys)
    assert rc == 2 and message in err, err
    assert "Traceback" not in err
    assert "delete it" in err or "restore it" in err or "new --out" in err


def _edit_checkpoint(path, edit):
    payload = torch.load(path, weights_only=False)
    edit(payload)
    torch.save(payload, path)


def test_checkpoint_beyond_steps_or_of_another_run_is_refused(cut, capsys):
    run, _, _ = cut
    ckpt = run / "checkpoints" / "adamw.pt"
    original = ckpt.read_bytes()
    _edit_checkpoint(ckpt, lambda p: p["loop"].update(step=50))
    rc, err = _resume_cli(run, capsys)
    assert rc == 2 and "at step 50, beyond this run's 6 steps" in err, err
    ckpt.write_bytes(original)
    _edit_checkpoint(ckpt, lambda p: p["run"].update(lr=0.5, seed=3))
    rc, err = _resume_cli(run, capsys)
    assert rc == 2 and "written by a run with other settings (lr, seed" in err, err
    ckpt.write_bytes(original)
    _edit_checkpoint(ckpt, lambda p: p["loop"].update(wall="soon"))  # a wrong type fails now, not mid-run
    rc, err = _resume_cli(run, capsys)
    assert rc == 2 and "holds a damaged loop state (wall = 'soon' is not a finite number >= 0)" in err, err
    ckpt.write_bytes(original)
    # a checkpoint of another model (another width): refused naming the file, not a raw torch error at step()
    _edit_checkpoint(ckpt, lambda p: p["model"].update({k: torch.zeros(3, 3) for k in list(p["model"])[:1]}))
    rc, err = _resume_cli(run, capsys)
    assert rc == 2 and "does not fit this run's model or optimizer" in err, err


def test_garbled_or_missing_metrics_are_refused_not_lost(cut, capsys):
    run, _, _ = cut
    metrics = run / "metrics" / "adamw.jsonl"
    lines = metrics.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if '"eval"' in line and '"step": 3' in line)
    metrics.write_text("\n".join(lines[:i] + ['{"kind": "eval", "st'] + lines[i + 1 :]) + "\n")
    rc, err = _resume_cli(run, capsys)
    assert rc == 2 and "adamw.jsonl has 1 damaged record(s) (unreadable line(s) " in err, err
    metrics.write_text("\n".join(lines[:i] + lines[i + 1 :]) + "\n")  # the evaluation at step 3 is gone
    rc, err = _resume_cli(run, capsys)
    assert rc == 2 and "lacks the evaluation(s) at step(s) [3]" in err, err
    metrics.write_text("\n".join(lines[:i] + ["[1, 2]"] + lines[i:]) + "\n")  # JSON of the wrong shape
    rc, err = _resume_cli(run, capsys)
    assert rc == 2 and "damaged record" in err and "KeyError" not in err, err


def test_damaged_result_file_names_the_file(cut, runs, capsys, tmp_path):
    base, _ = runs
    run = tmp_path / "full"
    shutil.copytree(base / "full", run)
    for text in ('{"final_val": ', '{"evals": 3}'):
        (run / "results" / "adamw.json").write_text(text)
        rc, err = _resume_cli(run, capsys)
        assert rc == 2 and "results/adamw.json (the finished result of adamw)" in err, err
        assert "delete it to rerun adamw" in err


def test_resuming_from_the_step0_checkpoint_does_not_duplicate_the_step0_evaluation(tmp_path, runs):
    _, kw = runs

    def stop(name, step, loss):
        if step == 1:
            raise Cut("cut after step 1")

    with pytest.raises(Cut, match="cut after step 1"):  # checkpoint at step 0 only (eval_every 3)
        compare("mnist", ["adamw"], run_dir=tmp_path / "r", on_step=stop, **kw)
    assert torch.load(tmp_path / "r" / "checkpoints" / "adamw.pt", weights_only=False)["loop"]["step"] == 0
    compare("mnist", ["adamw"], run_dir=tmp_path / "r", resume=True, **kw)
    assert _evals(tmp_path / "r") == _evals(runs[0] / "full")  # [0, 3, 6] once each, the same numbers


def test_damaged_tuned_table_and_sweep_cache_name_the_file(tmp_path, capsys):
    bad = tmp_path / "tuned.json"
    for text, message in (
        ("{", "is damaged"),
        ('{"tables": {"mnist/quick": {"muon": "fast"}}}', "has the wrong shape"),
        ('{"tables": []}', "has the wrong shape"),
    ):
        bad.write_text(text)
        with pytest.raises(ConfigError, match=f"tuned.json \\(tuned learning-rate table\\) {message}"):
            load_tuned(bad)
    cache = tmp_path / "cache.json"
    for text in ("{nope", '{"k": 1}', "[]"):
        cache.write_text(text)
        assert main(["sweep", "--task", "mnist", "--quick", "--optimizers", "adamw", "--cache", str(cache)]) == 2
        err = capsys.readouterr().err
        assert "cache.json (sweep result cache)" in err and "delete it" in err, err


# ------------------------------------------------------------------------------------ bad values: exit 2, no disk
BAD_VALUES = [
    (MNIST + ["--task-opt", "batch_size=0"], "batch_size must be a positive integer, got 0"),
    (MNIST + ["--task-opt", "batch_size=-4"], "batch_size must be a positive integer, got -4"),
    (MNIST + ["--task-opt", "batch_size=abc"], "batch_size must be a positive integer, got 'abc'"),
    (MNIST + ["--task-opt", "size=default"], "not --task-opt size="),
    (MNIST + ["--lr", "adamw=1e300"], "positive number up to 1e+08, got 1e+300"),
    (MNIST + ["--seed", "-1"], "seed must be an integer from 0 to 2**63-1, got -1"),
    (MNIST + ["--seed", str(2**70)], f"seed must be an integer from 0 to 2**63-1, got {2**70}"),
    (MNIST + ["--seed", str(10**80)], "seed must be an integer from 0 to 2**63-1, got a 81-digit number"),
    (["compare", "--task", ":", "--no-progress"], "expected a built-in name"),
    (["compare", "--task", "os.path:", "--no-progress"], "expected a built-in name"),
    (["sweep", "--task", "mnist", "--quick", "--optimizers", "adamw", "--grid", "adamw="], "gives no learning rates"),
    (["sweep", "--task", "mnist", "--quick", "--optimizers", "adamw", "--grid", "foo=0.1"], "unknown optimizer 'foo'"),
    (["sweep", "--task", "mnist", "--quick", "--optimizers", "adamw", "--grid", "muon=0.1"], "muon is not swept"),
    (["sweep", "--task", "mnist", "--quick", "--optimizers", "adamw", "--grid", "adamw=-1"], "positive numbers"),
    (MNIST + ["--monitor-every", "-1"], "--monitor-every) must be 0 (off) or a positive interval, got -1"),
    (MNIST + ["--threads", "100000"], "threads must be >= 1 and at most 1024, got 100000"),  # not 100000 OpenMP threads
    (["reproduce", "quadratic", "--quick", "--threads", "100000"], "--threads must be >= 1 and at most 1024"),
]


@pytest.mark.parametrize("argv, message", BAD_VALUES)
def test_bad_values_exit_2_before_anything_is_created(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    if argv[0] == "sweep":
        argv = [*argv, "--out", str(out)]
    else:
        argv = [*argv, "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_sweep_cache_that_is_a_directory(tmp_path, capsys):
    assert main(["sweep", "--task", "mnist", "--quick", "--optimizers", "adamw", "--cache", str(tmp_path)]) == 2
    assert f"--cache {tmp_path} is a directory" in capsys.readouterr().err


def test_reproduce_config_with_a_fractional_int_names_the_key(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("steps: 5.5\n")
    out = tmp_path / "out"
    assert main(["reproduce", "quadratic", "--quick", "--config", str(tmp_path / "c.yaml"), "--out", str(out)]) == 2
    assert "config key steps: expected int, got 5.5" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("seed", ["-1", str(2**64)])
def test_reproduce_bad_seed_is_refused_before_the_run_directory_exists(seed, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reproduce", "quadratic", "--quick", "--set", f"seed={seed}", "--out", str(out)]) == 2
    assert "config key seed: must be an integer from 0 to 2**63-1" in capsys.readouterr().err
    assert not out.exists()  # the corrected rerun is not blocked


@pytest.mark.parametrize(
    "argv",
    [MNIST, ["reproduce", "quadratic", "--quick"], ["sweep", "--task", "mnist", "--quick", "--optimizers", "adamw"]],
)
def test_output_dir_that_is_a_file_or_unwritable(argv, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, message in (
        (afile, "is a file, not a directory"),
        (afile / "sub", "which is a file"),
        (Path("/sys/steepest-attack"), "cannot write in /sys"),
    ):
        assert main([*argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
        assert "report:" not in err  # never a report path it did not write


def test_reproduce_prints_no_report_path_when_the_experiment_failed(tmp_path, capsys, monkeypatch):
    from steepest.app.reproduce import base

    def boom(*a, **k):
        raise RuntimeError("experiment broke")

    monkeypatch.setattr(base, "run_experiment", boom)
    assert main(["reproduce", "quadratic", "--quick", "--out", str(tmp_path / "r")]) == 1
    out = capsys.readouterr()
    assert "report:" not in out.out and "failed: quadratic" in out.err


# ------------------------------------------------------------------------------------ the lock
#: Another process holding a run directory's lock the way RunLock does (flock + its pid), without the cost of
#: importing torch in the subprocess.
HOLD = (
    "import fcntl, json, os, sys, time; fd = os.open(os.path.join(sys.argv[1], '.lock'), os.O_RDWR | os.O_CREAT); "
    "fcntl.flock(fd, fcntl.LOCK_EX); os.ftruncate(fd, 0); "
    "os.write(fd, json.dumps({'pid': os.getpid(), 'since': 'now'}).encode()); print('held', flush=True); "
    "time.sleep(60)"
)


def test_second_writer_is_refused_naming_the_pid_and_a_dead_holder_is_taken_over(runs, tmp_path, capsys):
    run = tmp_path / "cut"
    shutil.copytree(runs[0] / "cut", run)
    holder = subprocess.Popen([PY, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, err = _resume_cli(run, capsys)
        assert (
            rc == 2 and f"another steepest process (pid {holder.pid} since now)" in err and f"kill {holder.pid}" in err
        )
        # the library refuses too, and writes nothing
        with pytest.raises(RunLockedError, match=rf"another steepest process \(pid {holder.pid} "):
            compare("mnist", ["adamw"], run_dir=run, resume=True, steps=6, eval_every=3, **QUICK)
        assert not (run / "results" / "adamw.json").exists()
    finally:
        holder.kill()  # SIGKILL: the holder never unlocks
        holder.wait()
    assert json.loads((run / ".lock").read_text())["pid"] == holder.pid  # a stale lock file remains...
    rc, err = _resume_cli(run, capsys)  # ...and is taken over
    assert rc == 0, err
    assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()


def _held_elsewhere(folder: Path) -> bool:
    """Whether another open file description can take the flock (flock locks conflict even in one process)."""
    import fcntl

    fd = os.open(folder / ".lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_lock_nests_within_a_process_and_releases(tmp_path):
    d = tmp_path / "d"
    with RunLock(d):
        with RunLock(d):
            pass
        assert _held_elsewhere(d)  # still held after the inner release
    assert not _held_elsewhere(d)


# ------------------------------------------------------------------------------------ SIGTERM
def test_sigterm_exits_143_with_a_message_and_the_run_resumes(tmp_path, capsys):
    run = tmp_path / "r"

    def term():
        while not (run / "checkpoints" / "adamw.pt").exists():
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=term, daemon=True).start()
    rc = main([*MNIST, "--steps", "3000", "--eval-every", "1000", "--out", str(run)])
    err = capsys.readouterr().err
    assert rc == 143 and "terminated (SIGTERM)" in err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again
    assert not (run / "results" / "adamw.json").exists() and (run / "checkpoints" / "adamw.pt").exists()


# ------------------------------------------------------------------------------------ custom tasks
def _toy(**kw) -> Task:
    X = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    mse = lambda m, b: nn.functional.mse_loss(m(b), b[:, :1])  # noqa: E731
    fields = dict(
        name="toy",
        make_model=lambda: nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)),
        batch=lambda seed, step: X[(step * 8) % 64 :][:8],
        loss=mse,
        evaluate=lambda m: float(mse(m, X)),
        steps=4,
        eval_every=2,
    )
    return Task(**{**fields, **kw})


class _Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(4))

    def forward(self, x):
        return (x * self.w).sum(1, keepdim=True)


def factory_raises():
    raise FileNotFoundError("no data here")


def factory_none():
    return None


@pytest.mark.parametrize(
    "spec, message",
    [
        ("test_attacks:factory_raises", "task factory 'test_attacks:factory_raises' raised FileNotFoundError: no data"),
        ("test_attacks:factory_none", "task factory 'test_attacks:factory_none' returned NoneType"),
    ],
)
def test_custom_factory_that_raises_or_returns_none(spec, message, tmp_path, capsys):
    assert main(["compare", "--task", spec, "--no-progress", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(make_model=lambda: nn.ReLU()), "without trainable parameters"),
        (dict(make_model=lambda: None), "make_model() returned NoneType"),
        (dict(make_model=lambda: 1 / 0), "make_model() raised ZeroDivisionError"),
        (dict(loss=lambda m, b: [1.0]), "must return a floating-point scalar tensor, got list"),
        (dict(loss=lambda m, b: m(b)), "got a tensor of shape (8, 1)"),
        (dict(loss=lambda m, b: torch.tensor(1.0)), "does not depend on the model's parameters"),
        (dict(batch=lambda seed, step: 1 / 0), "batch(seed, 0) or loss(model, batch) raised ZeroDivisionError"),
        (dict(steps=0), "steps must be a positive int"),
        (dict(evaluate=3), "evaluate must be callable"),
        (dict(name=""), "name must be a non-empty string"),
    ],
)
def test_task_that_breaks_the_contract_is_named(kw, message, tmp_path):
    with pytest.raises(TaskError, match="task 'toy'|task ''") as e:
        compare(_toy(**kw), ["adamw"], run_dir=tmp_path / "o", **QUICK)
    assert message in str(e.value)
    assert not (tmp_path / "o").exists()


def test_model_without_linear_layers_trains_and_skips_diagnostics(tmp_path):
    notes = []
    r = compare(
        _toy(make_model=_Scale),
        ["adamw", "muon"],
        run_dir=tmp_path / "o",
        size="quick",
        progress=False,
        log=notes.append,
        report=True,
    )
    assert all(row["steps_done"] == 4 for row in r.rows)
    assert any("no nn.Linear or nn.Conv2d layer in _Scale: per-layer diagnostics skipped" in n for n in notes)
    assert (tmp_path / "o" / "report.html").exists()


# ------------------------------------------------------------------------------------ the launcher
def _rank1_dies() -> int:
    import torch.distributed as dist

    from steepest.app.launch import init_from_env

    info = init_from_env(backend="gloo", timeout_s=30)
    if info.rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    dist.barrier()  # rank 0 fails here once rank 1 is gone
    return info.rank


@pytest.mark.slow  # spawning two ranks takes 5-15 s on 2 shared cores
@pytest.mark.distributed
@pytest.mark.timeout(240)  # a hang guard, not a measurement: see timeout_s below
def test_launch_names_the_killed_rank_not_the_survivor():
    from steepest.app.launch import launch

    # timeout_s is a day: the run can only end because rank 1's death starts the grace period. A launch that
    # waited for the deadline instead would be stopped by the hang guard, and no time is asserted.
    with pytest.raises(RuntimeError, match=r"rank 1 failed first \(killed by SIGKILL\)") as e:
        launch(_rank1_dies, 2, timeout_s=86400, grace_s=3)
    assert "then rank 0: failed (" in str(e.value)  # the survivor's error is kept as detail, after the culprit


def _returns_then_aborts_at_exit() -> int:
    import atexit

    from steepest.app.launch import init_from_env

    info = init_from_env(backend="gloo", timeout_s=30)
    if info.rank == 0:  # as gloo's teardown did once on a clean clone: SIGABRT after the work is done
        atexit.register(os.abort)
    return 10 + info.rank


@pytest.mark.distributed
@pytest.mark.timeout(240)  # a hang guard: spawning two ranks takes 5-15 s on 2 shared cores
def test_launch_keeps_the_results_of_a_rank_that_crashes_after_returning():
    from steepest.app.launch import launch

    with pytest.warns(RuntimeWarning, match=r"rank 0 \(killed by SIGABRT\) returned its result, then exited"):
        assert launch(_returns_then_aborts_at_exit, 2, timeout_s=120) == [10, 11]


# ------------------------------------------------------------------------------------ slow: whole processes
def _children(pid: int) -> list[int]:
    try:
        out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    except FileNotFoundError:
        pytest.skip("pgrep not available")
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def _start_nproc(run: Path, steps: int = 3000) -> subprocess.Popen:
    cmd = [
        PY,
        "-m",
        "steepest.app.cli",
        *MNIST,
        "--nproc",
        "2",
        "--steps",
        str(steps),
        "--eval-every",
        "500",
        "--out",
        str(run),
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _ranks(proc, run, timeout=120.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (run / "metrics" / "adamw.jsonl").exists():
            ranks = [c for c in _children(proc.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
            if len(ranks) == 2:
                return ranks
        time.sleep(0.2)
    proc.kill()
    pytest.fail("the ranks did not start")


@pytest.mark.slow
@pytest.mark.distributed
def test_nproc_sigterm_stops_every_rank_and_resume_is_clean(tmp_path):
    run = tmp_path / "r"
    proc = _start_nproc(run)
    ranks = _ranks(proc, run)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated (SIGTERM)" in err, err
    assert not any(_alive(r) for r in ranks)  # no rank keeps writing the run directory
    n = len(read_jsonl(run / "metrics" / "adamw.jsonl"))
    time.sleep(1.0)
    assert len(read_jsonl(run / "metrics" / "adamw.jsonl")) == n


@pytest.mark.slow
@pytest.mark.distributed
def test_nproc_ranks_die_with_a_sigkilled_parent(tmp_path):
    run = tmp_path / "r"
    proc = _start_nproc(run)
    ranks = _ranks(proc, run)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while any(_alive(r) for r in ranks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(r) for r in ranks)
    # the parent's lock died with it: a resume takes the directory over and finishes
    cmd = [
        PY,
        "-m",
        "steepest.app.cli",
        *MNIST,
        "--steps",
        "3000",
        "--eval-every",
        "500",
        "--resume",
        "--out",
        str(run),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    train = [r["step"] for r in read_jsonl(run / "metrics" / "adamw.jsonl") if r["kind"] == "train"]
    assert train == list(range(3000))  # 3000 records for a 3000-step run, none twice


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_reproduces_the_numbers(tmp_path):
    args = [*MNIST, "--optimizers", "adamw,muon", "--steps", "40", "--eval-every", "5"]
    full = tmp_path / "full"
    assert (
        subprocess.run(
            [PY, "-m", "steepest.app.cli", *args, "--out", str(full)], capture_output=True, timeout=600
        ).returncode
        == 0
    )
    run = tmp_path / "cut"
    # SIGKILL after a chosen number of metrics records: early in adamw, late in adamw, inside muon (49 per optimizer)
    for records in (7, 30, 60):
        proc = subprocess.Popen(
            [
                PY,
                "-m",
                "steepest.app.cli",
                *args,
                "--out",
                str(run),
                *(["--resume"] if (run / "config.json").exists() else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            n = sum(len(read_jsonl(f, errors="ignore")) for f in run.glob("metrics/*.jsonl"))
            if n >= records:
                break
            time.sleep(0.02)
        proc.kill()
        proc.wait()
    done = subprocess.run(
        [PY, "-m", "steepest.app.cli", *args, "--resume", "--out", str(run)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    for name in ("adamw", "muon"):
        assert _evals(run, name) == _evals(full, name)
    assert not list(run.rglob(".*.tmp"))


# ------------------------------------------------------------------------------------ issue 23: safe by construction
class _Payload:
    """A pickled object whose ``__reduce__`` calls :func:`_write_marker` when it is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (_write_marker, (self.marker,))


def _write_marker(path: str) -> int:
    Path(path).write_text("code ran")
    return 3  # the quiet variant: a plausible value, so a loader that ran it would go on


def test_checkpoint_with_a_reduce_payload_never_runs_on_resume(cut, capsys, tmp_path):
    run, _, _ = cut
    ckpt = run / "checkpoints" / "adamw.pt"
    marker = tmp_path / "marker"
    _edit_checkpoint(ckpt, lambda p: p["loop"].update(step=_Payload(marker)))
    rc, err = _resume_cli(run, capsys)
    assert rc == 2 and not marker.exists(), err  # refused, and nothing in it ran
    assert f"{ckpt} is refused" in err and "data only" in err and "Traceback" not in err, err
    assert "_write_marker" in err, err  # the message names what it would have called
    # the same payload as an extra top-level key, and as the whole file
    torch.save({"payload": _Payload(marker)}, ckpt)
    rc, err = _resume_cli(run, capsys)
    assert rc == 2 and not marker.exists() and f"{ckpt} is refused" in err, err


def test_checkpoints_are_written_as_data_only(cut, capsys):
    run, _, full = cut
    assert _resume_cli(run, capsys)[0] == 0
    payload = torch.load(run / "checkpoints" / "adamw.pt", weights_only=True)  # raises if it held an object
    assert set(payload) == {"model", "optimizer", "loop", "rng", "run"}
    assert isinstance(payload["rng"]["numpy"]["keys"], torch.Tensor) and len(payload["rng"]["python"][1]) == 625
    assert _evals(run) == _evals(full)  # and the resume stays bit for bit


def test_no_loader_in_the_application_unpickles_code():
    """Every torch.load of src/steepest is weights_only=True and nothing calls pickle.load(s), except
    launch's read-back of its ranks' return values from the 0700 temp folder launch itself created."""
    import re

    import steepest

    src = Path(steepest.__file__).resolve().parent
    found = []
    for path in src.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"torch\.load\((?:[^()]|\([^()]*\))*\)|pickle\.loads?\(|Unpickler\)", text):
            call = m.group(0)
            if call.startswith("torch.load") and "weights_only=True" in call:
                continue
            found.append(f"{path.relative_to(src)}: {call[:80]}")
    allowed = [
        "app/launch.py: torch.load(f, weights_only=False)",  # launch's own temp folder (tempfile, 0700)
        "app/checkpoint.py: Unpickler)",
    ]  # the allow-list unpickler of DCP metadata
    assert sorted(found) == sorted(allowed), found


def _dcp_checkpoint(folder: Path, lr: float = 0.1):
    from steepest.app.checkpoint import save_checkpoint

    model = nn.Sequential(nn.Linear(4, 3, bias=False), nn.Linear(3, 2, bias=False))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    save_checkpoint(folder, model, opt, {"step": 1})
    return model, opt


def test_dcp_checkpoint_loads_as_data_and_refuses_a_payload_or_a_truncated_shard(tmp_path):
    from steepest.app.checkpoint import CheckpointRefused, load_checkpoint

    ck = tmp_path / "ck"
    model, opt = _dcp_checkpoint(ck)
    model2, opt2 = _dcp_checkpoint(tmp_path / "other", lr=0.5)
    assert load_checkpoint(ck, model2, opt2) == {"step": 1}
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    assert opt2.param_groups[0]["lr"] == 0.1  # the non-tensor items (loaded as data) too
    assert all(
        torch.equal(opt.state[a]["momentum_buffer"], opt2.state[b]["momentum_buffer"])
        for a, b in zip(model.parameters(), model2.parameters())
    )
    shard = next(ck.glob("*.distcp"))
    original = shard.read_bytes()
    shard.write_bytes(original[: len(original) // 2])
    with pytest.raises(CheckpointRefused, match=f"{shard} is truncated: {len(original) // 2} bytes"):
        load_checkpoint(ck, model2, opt2)
    shard.write_bytes(original)
    import pickle

    marker = tmp_path / "marker"
    (ck / ".metadata").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointRefused, match=r"\.metadata is refused: .*_write_marker is not allowed"):
        load_checkpoint(ck, model2, opt2)
    assert not marker.exists()


def test_lock_symlink_or_foreign_lock_file_is_never_written(tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(notes)
    argv = [*MNIST, "--steps", "2", "--eval-every", "1", "--out", str(run)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert ".lock is a symbolic link" in err and "Traceback" not in err, err
    assert notes.read_text() == "my notes" and (run / ".lock").is_symlink()
    (run / ".lock").unlink()
    os.link(notes, run / ".lock")  # a hard link of the user's file
    assert main(argv) == 2 and "a hard link" in capsys.readouterr().err
    assert notes.read_text() == "my notes"
    (run / ".lock").unlink()
    (run / ".lock").write_text("user data, not a lock")  # a user's own file of that name
    assert main(argv) == 2 and "is not steepest's lock file" in capsys.readouterr().err
    assert (run / ".lock").read_text() == "user data, not a lock"
    root = tmp_path / "all"  # reproduce all's own folder: refused up front
    root.mkdir()
    (root / ".lock").symlink_to(notes)
    assert main(["reproduce", "all", "--quick", "--out", str(root)]) == 2
    err = capsys.readouterr().err
    assert ".lock is a symbolic link" in err and "Traceback" not in err, err
    assert notes.read_text() == "my notes" and sorted(p.name for p in root.iterdir()) == [".lock"]
    with pytest.raises(ConfigError, match="symbolic link"):  # the sweep cache's lock too
        from steepest.app.compare.sweep import _cache_lock

        (tmp_path / ".c.json.lock").symlink_to(notes)
        with _cache_lock(tmp_path / "c.json"):
            pass
    assert notes.read_text() == "my notes"


def test_out_dot_leaves_the_users_temp_files_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    mine = [
        tmp_path / "src" / ".draft.tmp",
        tmp_path / ".draft.tmp",
        tmp_path / "src" / ".config.json.abcd1234.tmp",
        tmp_path / ".notes.md.abcd1234.tmp",
    ]
    (tmp_path / "src").mkdir()
    for f in mine:
        f.write_text("keep me")
    argv = [*MNIST, "--steps", "2", "--eval-every", "1", "--out", "."]
    assert main([*argv, "--resume"]) == 2  # refused: no run here
    assert main(argv) == 0  # a new run into the project folder
    capsys.readouterr()
    assert all(f.read_text() == "keep me" for f in mine)


def test_remove_stale_temps_needs_the_lock_and_steepests_config(tmp_path):
    from steepest.app.guard import remove_stale_temps

    stale = tmp_path / ".summary.json.abcd1234.tmp"
    stale.write_text("half")
    with RunLock(tmp_path, clean=False):
        assert remove_stale_temps(tmp_path) == [] and stale.exists()  # no config.json: not a run directory
        (tmp_path / "config.json").write_text('{"mine": 1}')
        assert remove_stale_temps(tmp_path) == [] and stale.exists()  # a config.json that is not steepest's
        (tmp_path / "config.json").write_text('{"config": {}}')
    assert remove_stale_temps(tmp_path) == [] and stale.exists()  # not without the lock
    with RunLock(tmp_path, clean=False):
        assert remove_stale_temps(tmp_path) == [stale]


@pytest.mark.parametrize("make", [lambda p: open(p, "wb").close(), None])
def test_endless_or_huge_config_file_fails_fast_naming_the_limit(make, tmp_path, capsys):
    if make is None:
        path = "/dev/zero"
    else:
        path = tmp_path / "big.yaml"
        path.write_text("# " + "x" * (2**20) + "\nsteps: 5\n")
    out = tmp_path / "out"
    assert main(["reproduce", "quadratic", "--quick", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"config file {path} is larger than 1 MiB, the limit for this file" in err, err
    assert not out.exists()


def test_huge_run_json_is_refused_naming_the_limit(cut, capsys, monkeypatch):
    import steepest.app.guard as guard

    run, _, _ = cut
    monkeypatch.setattr(guard, "MAX_JSON_BYTES", 100)  # instead of writing a 64 MiB file
    rc, err = _resume_cli(run, capsys)  # the first JSON read is the tuned table
    assert rc == 2 and "tuned.json is larger than 100 bytes, the limit for this file" in err, err
    monkeypatch.setattr(guard, "MAX_JSON_BYTES", 2**16)
    (run / "config.json").write_text(json.dumps({"config": {"pad": "x" * 2**16}}))
    rc, err = _resume_cli(run, capsys)
    assert rc == 2 and "config.json is larger than 65536 bytes, the limit for this file" in err, err


@pytest.mark.parametrize(
    "argv, message",
    [
        (MNIST + ["--task-opt", "batch_size=[1,"], "--task-opt batch_size: not valid YAML"),
        (
            ["reproduce", "quadratic", "--quick", "--set", "stable_ranks=[1.5,"],
            "config key stable_ranks: value '[1.5,': not valid YAML",
        ),
    ],
)
def test_malformed_yaml_in_an_option_names_it(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not out.exists()


def test_full_disk_during_compare_exits_2_naming_the_file(tmp_path, monkeypatch, capsys):
    import errno

    import steepest._io as io_mod

    calls = []

    def full(f, data):
        calls.append(getattr(f, "name", None))
        if len(calls) > 3:  # the first writes (routing, config, environment) fit, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        f.write(data)

    monkeypatch.setattr(io_mod, "_write", full)
    rc = main([*MNIST, "--steps", "4", "--eval-every", "2", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and "No space left on device" in err and str(tmp_path / "run") in err, err
    assert "Traceback" not in err and "inline_container" not in err


def test_over_long_out_exits_2(tmp_path, capsys):
    for out in (tmp_path / ("x" * 300), tmp_path.joinpath(*["y" * 250] * 20)):  # a name > 255, a path > 4096
        assert main([*MNIST, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert "--out" in err and "too long" in err.lower() and "Traceback" not in err, err
    long_config = tmp_path / ("c" * 300)
    assert main(["reproduce", "quadratic", "--quick", "--config", str(long_config), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "cannot be read (File name too long)" in err and "Traceback" not in err, err


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda r: (shutil.rmtree(r / "checkpoints"), (r / "checkpoints").write_text("x")),
            "checkpoints is not a directory",
        ),
        (
            lambda r: ((r / "metrics" / "adamw.jsonl").unlink(), (r / "metrics" / "adamw.jsonl").mkdir()),
            "adamw.jsonl is not a regular file",
        ),
    ],
)
def test_run_entries_of_the_wrong_type_are_named(cut, capsys, damage, message):
    run, _, _ = cut
    damage(run)
    rc, err = _resume_cli(run, capsys)
    assert rc == 2 and message in err and "Traceback" not in err, err


def factory_type_error(**kw):
    return len(3)  # an internal bug of the factory, not a rejected option


def test_task_module_with_a_syntax_error_or_an_internal_type_error(tmp_path, monkeypatch, capsys):
    (tmp_path / "broken_task_mod.py").write_text("def make(:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["compare", "--task", "broken_task_mod:make", "--no-progress", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "task module 'broken_task_mod' has a syntax error at" in err and "broken_task_mod.py:1" in err, err
    assert "Traceback" not in err
    assert (
        main(["compare", "--task", "test_attacks:factory_type_error", "--no-progress", "--out", str(tmp_path / "o")])
        == 2
    )
    err = capsys.readouterr().err
    assert "raised TypeError: object of type 'int' has no len()" in err and "rejected options" not in err, err
    assert (
        main(
            [
                "compare",
                "--task",
                "test_attacks:factory_none",
                "--task-opt",
                "width=3",
                "--no-progress",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "rejected options {'width': 3}" in capsys.readouterr().err  # a real rejection still says so


def test_yaml_aliases_are_refused_before_they_expand(tmp_path, capsys):
    """A "billion laughs" config (nested aliases, a few lines, 10**9 items when walked) is refused at once."""
    lines = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(8)]
    (tmp_path / "laughs.yaml").write_text("\n".join(lines) + "\nstable_ranks: *i\n")
    out = tmp_path / "out"
    assert (
        main(["reproduce", "quadratic", "--quick", "--config", str(tmp_path / "laughs.yaml"), "--out", str(out)]) == 2
    )
    err = capsys.readouterr().err
    assert "laughs.yaml: not valid YAML" in err and "aliases (*name) are not accepted" in err, err


def test_symlinked_run_entries_are_refused_not_written_through(cut, capsys, tmp_path):
    run, _, _ = cut
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    metrics = run / "metrics" / "adamw.jsonl"
    notes.write_text(metrics.read_text())  # a resume would accept its content ...
    metrics.unlink()
    metrics.symlink_to(notes)
    before = notes.read_text()
    rc, err = _resume_cli(run, capsys)
    assert rc == 2 and "adamw.jsonl is not a regular file" in err, err
    assert notes.read_text() == before  # ... but never appends to the link's target


def test_resume_without_out_skips_a_dangling_link(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "compare-mnist-20990101-000000").symlink_to(tmp_path / "gone")
    assert main([*MNIST, "--resume"]) == 2
    err = capsys.readouterr().err
    assert "found no earlier run under runs/compare-mnist-*" in err and "Traceback" not in err, err


def test_sweep_cache_that_is_a_device_is_refused_not_replaced(tmp_path, capsys):
    assert main(["sweep", "--task", "mnist", "--quick", "--optimizers", "adamw", "--cache", "/dev/null"]) == 2
    err = capsys.readouterr().err
    assert "/dev/null (sweep result cache) is not a regular file" in err and "delete it" not in err, err
    assert Path("/dev/null").is_char_device()


def test_reproduce_into_a_compare_run_is_refused(cut, capsys):
    run, _, _ = cut
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert main(["reproduce", "quadratic", "--quick", "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "holds another run (steepest compare?)" in err and "choose another --out" in err, err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


def test_every_compare_optimizer_checkpoints_as_data_and_resumes_exactly(tmp_path):
    """Each of compare's optimizers (hybrids, Adaptive, the oracle) round-trips through a data-only
    checkpoint: the next step after loading equals the next step of the original, bit for bit."""
    from steepest.app.compare.loop import LoopState
    from steepest.app.compare.optimizers import OPTIMIZERS, build_optimizer
    from steepest.app.compare.runner import HeldOutLoss, resume_checkpoint, write_checkpoint
    from steepest.app.tasks import get_task

    task = get_task("mnist", size="quick")
    for name in OPTIMIZERS:
        states = []
        for _copy in range(2):
            torch.manual_seed(0)
            model = task.make_model()
            held = HeldOutLoss(task, model, 0)
            opt = build_optimizer(name, model, 0.01, 1e-3, task.routing, held_out=held, steps=4)
            states.append((model, opt))
        (m0, o0), (m1, o1) = states
        for t in range(2):
            task.loss(m0, task.batch(0, t)).backward()
            o0.step()
            o0.zero_grad()
        path = tmp_path / f"{name}.pt"
        write_checkpoint(path, m0, o0, LoopState(step=2))
        torch.load(path, weights_only=True)  # data only
        assert resume_checkpoint(path, m1, o1).step == 2
        for m, o in ((m0, o0), (m1, o1)):
            torch.manual_seed(5)
            task.loss(m, task.batch(0, 2)).backward()
            o.step()
        assert all(torch.equal(a, b) for a, b in zip(m0.parameters(), m1.parameters())), name


def test_single_file_checkpoint_api_round_trips_and_refuses_a_payload(tmp_path):
    from steepest.app.checkpoint import CheckpointRefused, load_checkpoint, save_checkpoint

    model, opt = _dcp_checkpoint(tmp_path / "unused")
    save_checkpoint(tmp_path / "c.pt", model, opt, {"step": 4, "note": "x"})
    model2, opt2 = _dcp_checkpoint(tmp_path / "unused2", lr=0.5)
    assert load_checkpoint(tmp_path / "c.pt", model2, opt2) == {"step": 4, "note": "x"}
    assert opt2.param_groups[0]["lr"] == 0.1
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), model2.parameters()))
    marker = tmp_path / "marker"
    torch.save({"model": {}, "optimizer": {}, "step": _Payload(marker)}, tmp_path / "c.pt")
    with pytest.raises(CheckpointRefused, match=r"c\.pt is refused: .*GLOBAL test_attacks\._write_marker"):
        load_checkpoint(tmp_path / "c.pt", model2, opt2)
    assert not marker.exists()
    (tmp_path / "d.pt").mkdir()
    with pytest.raises(CheckpointRefused, match=r"d\.pt is not a regular file"):
        load_checkpoint(tmp_path / "d.pt", model2, opt2)
