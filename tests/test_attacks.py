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
    leftover = [run / "checkpoints" / ".adamw.pt.k3j2.tmp", run / ".config.json.x8f.tmp"]
    for f in leftover:
        f.write_bytes(b"half")
    rc, err = _resume_cli(run, capsys)
    assert rc == 0, err
    assert not any(f.exists() for f in leftover)            # a SIGKILL's debris is cleaned under the lock
    assert _evals(run) == _evals(full)                      # bit-identical continuation (one thread, same batches)


@pytest.mark.parametrize("damage, message", [
    (lambda r: (r / "checkpoints" / "adamw.pt").write_bytes((r / "checkpoints" / "adamw.pt").read_bytes()[:500]),
     "adamw.pt is truncated or not a checkpoint"),
    (lambda r: (r / "checkpoints" / "adamw.pt").write_bytes(b""), "adamw.pt is truncated or not a checkpoint"),
    (lambda r: torch.save([1, 2], r / "checkpoints" / "adamw.pt"), "is not a steepest compare checkpoint"),
    (lambda r: (r / "config.json").write_text('{"config": {"steps": 6'), "config.json (the run's configuration) is damaged"),
    (lambda r: (r / "config.json").write_text("[1, 2]"), "config.json (the run's configuration) has the wrong shape"),
    (lambda r: (r / "config.json").write_text('{"config": 3}'), "has the wrong shape"),
])
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
    # a checkpoint of another model (another width): refused naming the file, not a raw torch error at step()
    _edit_checkpoint(ckpt, lambda p: p["model"].update({k: torch.zeros(3, 3) for k in list(p["model"])[:1]}))
    rc, err = _resume_cli(run, capsys)
    assert rc == 2 and "does not fit this run's model or optimizer" in err, err


def test_garbled_or_missing_metrics_are_refused_not_lost(cut, capsys):
    run, _, _ = cut
    metrics = run / "metrics" / "adamw.jsonl"
    lines = metrics.read_text().splitlines()
    i = next(k for k, line in enumerate(lines) if '"eval"' in line and '"step": 3' in line)
    metrics.write_text("\n".join(lines[:i] + ['{"kind": "eval", "st'] + lines[i + 1:]) + "\n")
    rc, err = _resume_cli(run, capsys)
    assert rc == 2 and "adamw.jsonl has 1 damaged record(s) (unreadable line(s) " in err, err
    metrics.write_text("\n".join(lines[:i] + lines[i + 1:]) + "\n")       # the evaluation at step 3 is gone
    rc, err = _resume_cli(run, capsys)
    assert rc == 2 and "lacks the evaluation(s) at step(s) [3]" in err, err
    metrics.write_text("\n".join(lines[:i] + ["[1, 2]"] + lines[i:]) + "\n")   # JSON of the wrong shape
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
    assert _evals(tmp_path / "r") == _evals(runs[0] / "full")   # [0, 3, 6] once each, the same numbers


def test_damaged_tuned_table_and_sweep_cache_name_the_file(tmp_path, capsys):
    bad = tmp_path / "tuned.json"
    for text, message in (("{", "is damaged"), ('{"tables": {"mnist/quick": {"muon": "fast"}}}', "has the wrong shape"),
                          ('{"tables": []}', "has the wrong shape")):
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
    assert not out.exists()                                        # the corrected rerun is not blocked


@pytest.mark.parametrize("argv", [MNIST, ["reproduce", "quadratic", "--quick"],
                                  ["sweep", "--task", "mnist", "--quick", "--optimizers", "adamw"]])
def test_output_dir_that_is_a_file_or_unwritable(argv, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    for out, message in ((afile, "is a file, not a directory"), (afile / "sub", "which is a file"),
                         (Path("/sys/steepest-attack"), "cannot write in /sys")):
        assert main([*argv, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
        assert "report:" not in err                                 # never a report path it did not write


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
HOLD = ("import fcntl, json, os, sys, time; fd = os.open(os.path.join(sys.argv[1], '.lock'), os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); os.ftruncate(fd, 0); "
        "os.write(fd, json.dumps({'pid': os.getpid(), 'since': 'now'}).encode()); print('held', flush=True); "
        "time.sleep(60)")


def test_second_writer_is_refused_naming_the_pid_and_a_dead_holder_is_taken_over(runs, tmp_path, capsys):
    run = tmp_path / "cut"
    shutil.copytree(runs[0] / "cut", run)
    holder = subprocess.Popen([PY, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc, err = _resume_cli(run, capsys)
        assert rc == 2 and f"another steepest process (pid {holder.pid} since now)" in err and f"kill {holder.pid}" in err
        # the library refuses too, and writes nothing
        with pytest.raises(RunLockedError, match=rf"another steepest process \(pid {holder.pid} "):
            compare("mnist", ["adamw"], run_dir=run, resume=True, steps=6, eval_every=3, **QUICK)
        assert not (run / "results" / "adamw.json").exists()
    finally:
        holder.kill()                                              # SIGKILL: the holder never unlocks
        holder.wait()
    assert json.loads((run / ".lock").read_text())["pid"] == holder.pid   # a stale lock file remains...
    rc, err = _resume_cli(run, capsys)                             # ...and is taken over
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
        assert _held_elsewhere(d)                                  # still held after the inner release
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
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL       # the handler is removed again
    assert not (run / "results" / "adamw.json").exists() and (run / "checkpoints" / "adamw.pt").exists()


# ------------------------------------------------------------------------------------ custom tasks
def _toy(**kw) -> Task:
    X = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
    mse = lambda m, b: nn.functional.mse_loss(m(b), b[:, :1])  # noqa: E731
    fields = dict(name="toy", make_model=lambda: nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1)),
                  batch=lambda seed, step: X[(step * 8) % 64:][:8], loss=mse, evaluate=lambda m: float(mse(m, X)),
                  steps=4, eval_every=2)
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


@pytest.mark.parametrize("spec, message", [
    ("test_attacks:factory_raises", "task factory 'test_attacks:factory_raises' raised FileNotFoundError: no data"),
    ("test_attacks:factory_none", "task factory 'test_attacks:factory_none' returned NoneType"),
])
def test_custom_factory_that_raises_or_returns_none(spec, message, tmp_path, capsys):
    assert main(["compare", "--task", spec, "--no-progress", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("kw, message", [
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
])
def test_task_that_breaks_the_contract_is_named(kw, message, tmp_path):
    with pytest.raises(TaskError, match="task 'toy'|task ''") as e:
        compare(_toy(**kw), ["adamw"], run_dir=tmp_path / "o", **QUICK)
    assert message in str(e.value)
    assert not (tmp_path / "o").exists()


def test_model_without_linear_layers_trains_and_skips_diagnostics(tmp_path):
    notes = []
    r = compare(_toy(make_model=_Scale), ["adamw", "muon"], run_dir=tmp_path / "o", size="quick", progress=False,
                log=notes.append, report=True)
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
    cmd = [PY, "-m", "steepest.app.cli", *MNIST, "--nproc", "2", "--steps", str(steps), "--eval-every", "500",
           "--out", str(run)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


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
    assert not any(_alive(r) for r in ranks)                       # no rank keeps writing the run directory
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
    cmd = [PY, "-m", "steepest.app.cli", *MNIST, "--steps", "3000", "--eval-every", "500", "--resume", "--out", str(run)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    train = [r["step"] for r in read_jsonl(run / "metrics" / "adamw.jsonl") if r["kind"] == "train"]
    assert train == list(range(3000))                              # 3000 records for a 3000-step run, none twice


@pytest.mark.slow
def test_sigkill_at_random_points_then_resume_reproduces_the_numbers(tmp_path):
    args = [*MNIST, "--optimizers", "adamw,muon", "--steps", "40", "--eval-every", "5"]
    full = tmp_path / "full"
    assert subprocess.run([PY, "-m", "steepest.app.cli", *args, "--out", str(full)], capture_output=True,
                          timeout=600).returncode == 0
    run = tmp_path / "cut"
    # SIGKILL after a chosen number of metrics records: early in adamw, late in adamw, inside muon (49 per optimizer)
    for records in (7, 30, 60):
        proc = subprocess.Popen([PY, "-m", "steepest.app.cli", *args, "--out", str(run),
                                 *(["--resume"] if (run / "config.json").exists() else [])],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            n = sum(len(read_jsonl(f, errors="ignore")) for f in run.glob("metrics/*.jsonl"))
            if n >= records:
                break
            time.sleep(0.02)
        proc.kill()
        proc.wait()
    done = subprocess.run([PY, "-m", "steepest.app.cli", *args, "--resume", "--out", str(run)], capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    for name in ("adamw", "muon"):
        assert _evals(run, name) == _evals(full, name)
    assert not list(run.rglob(".*.tmp"))
