"""``steepest compare --nproc N`` (steepest.app.compare.data_parallel): 2 gloo processes on loopback vs 1 process.

Bounded time: every distributed run here passes ``dist_timeout_s`` (the ranks are killed after it and
each collective times out after it), so a hang fails the test instead of hanging the suite.

Tolerances. The 2-process gradient is DDP's mean of the two half-batch mean gradients, the 1-process
gradient the mean over the whole batch: equal up to float32 summation order (~1e-7 relative). How far
that moves the validation loss after 30 steps depends on the optimizer:

* AdamW and SpecGD (Polar Express in float32) keep it at float32 rounding (measured: equal to 6
  digits at every evaluation); TIGHT = 1e-4 is ~100x that and far below what a 1.5x learning-rate
  error does (4e-2 for AdamW);
* Muon / torch.optim.Muon / Adaptive run Newton-Schulz in bfloat16 (8-bit mantissa): a 1e-7 change
  of the gradient flips the bf16 rounding of some entries, a 2^-8 relative change of their update,
  and 30 steps carry it into the loss (measured up to 1.2e-3). LOOSE = 1e-2 covers that and still
  fails for a lost or doubled update (a 1.5x lr changes Muon's final val loss by 0.4).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from steepest.app.cli import main
from steepest.app.compare.data_parallel import DataParallel, batch_size, check_nproc, shard
from steepest.app.compare.job import compare
from steepest.app.launch import init_from_env, launch
from steepest.app.runs import ConfigError, read_jsonl
from steepest.app.tasks import get_task

pytestmark = pytest.mark.distributed

NAMES = ("adamw", "specgd", "muon", "torch-muon", "adaptive")
TIGHT, LOOSE = 1e-4, 1e-2  # see the module docstring
TOL = {"adamw": TIGHT, "specgd": TIGHT, "muon": LOOSE, "torch-muon": LOOSE, "adaptive": LOOSE}
TIMEOUT_S = 120.0
QUICK = dict(size="quick", progress=False, report=False, log=None)


def _files(run_dir) -> set[str]:
    return {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The mnist quick comparison on 1 process (in this process) and on 2 (through the CLI)."""
    root = tmp_path_factory.mktemp("cmpdist")
    one = compare("mnist", NAMES, run_dir=root / "one", **QUICK)
    with pytest.MonkeyPatch.context() as mp:  # bound the CLI's distributed job (default: days)
        mp.setattr("steepest.app.compare.data_parallel.JOB_TIMEOUT_S", TIMEOUT_S)
        rc = main(
            [
                "compare",
                "--task",
                "mnist",
                "--quick",
                "--nproc",
                "2",
                "--optimizers",
                ",".join(NAMES),
                "--run-dir",
                str(root / "two"),
                "--no-progress",
            ]
        )
    return root, one, rc


def test_two_processes_match_one_and_write_each_file_once(runs):
    root, one, rc = runs
    assert rc == 0
    two_dir = root / "two"
    assert (two_dir / "report.html").exists() and (two_dir / "table.txt").exists()
    assert json.loads((two_dir / "config.json").read_text())["config"]["nproc"] == 2
    # the same files as the 1-process run (plus its report): no rank wrote a file of its own
    assert _files(two_dir) - {"report.html"} - {p for p in _files(two_dir) if p.startswith("figures/")} == _files(
        root / "one"
    )
    summary = json.loads((two_dir / "summary.json").read_text())
    for name in NAMES:
        recs = read_jsonl(two_dir / "metrics" / f"{name}.jsonl")
        train = [r["step"] for r in recs if r["kind"] == "train"]
        evals = [r["step"] for r in recs if r["kind"] == "eval"]
        assert train == list(range(30)) and evals == [0, 10, 20, 30]  # written once (not once per rank)
        ref = read_jsonl(root / "one" / "metrics" / f"{name}.jsonl")
        # step 0 is before any update: the all-reduced mean of the half-batch losses is the full-batch
        # mean up to float32 rounding of a ~2.3 loss (a few ulp, 2.4e-7 measured)
        first = lambda rs: next(r["loss"] for r in rs if r["kind"] == "train")  # noqa: E731
        assert abs(first(recs) - first(ref)) < 1e-6
        row = next(r for r in summary["rows"] if r["optimizer"] == name)
        assert row["diverged_at"] is None and math.isfinite(row["final_val"])
        ref_evals = [r["val_loss"] for r in ref if r["kind"] == "eval"]
        got_evals = [r["val_loss"] for r in recs if r["kind"] == "eval"]
        assert got_evals[0] == ref_evals[0]  # same initial weights, same validation set
        assert max(abs(a - b) for a, b in zip(got_evals, ref_evals)) < TOL[name], (name, got_evals, ref_evals)
        assert abs(row["final_val"] - one.row(name)["final_val"]) < TOL[name]
    # per-layer diagnostics (rank 0's LayerMonitor) for the monitored optimizers, once per recording step
    diag = read_jsonl(two_dir / "diagnostics" / "adaptive.jsonl")
    ref_diag = read_jsonl(root / "one" / "diagnostics" / "adaptive.jsonl")
    assert [(r["step"], r["layer"]) for r in diag] == [(r["step"], r["layer"]) for r in ref_diag]


def test_charlm_two_processes_match_one(tmp_path):
    """The transformer task (its batch is a tuple of (8, 32) token tensors, split 4 + 4)."""
    names = ["adamw", "muon"]
    one = compare("charlm", names, run_dir=tmp_path / "one", **QUICK)
    two = compare("charlm", names, run_dir=tmp_path / "two", nproc=2, dist_timeout_s=TIMEOUT_S, **QUICK)
    for name in names:
        assert two.row(name)["diverged_at"] is None and math.isfinite(two.row(name)["final_val"])
        assert abs(two.row(name)["final_val"] - one.row(name)["final_val"]) < TOL[name]
    assert _files(tmp_path / "two") == _files(tmp_path / "one")


def _interrupt(name: str, step: int, loss: float) -> None:
    """on_step for the resume test: stops every rank at the same step (module level: it is pickled)."""
    if name == "muon" and step == 14:
        raise KeyboardInterrupt


def test_resume_with_nproc_gives_the_uninterrupted_numbers(runs):
    root, _, _ = runs
    names = ["adamw", "muon"]
    kw = dict(QUICK, nproc=2, dist_timeout_s=TIMEOUT_S)
    with pytest.raises(RuntimeError, match="KeyboardInterrupt"):
        compare("mnist", names, run_dir=root / "cut", on_step=_interrupt, **kw)
    assert not (root / "cut" / "results" / "muon.json").exists()
    assert (root / "cut" / "checkpoints" / "muon.pt").exists()  # written by rank 0 at step 10
    resumed = compare("mnist", names, run_dir=root / "cut", resume=True, **kw)
    full = json.loads((root / "two" / "summary.json").read_text())["rows"]
    for name in names:
        want = next(r for r in full if r["optimizer"] == name)
        # the same world size and thread count: deterministic, so bit-identical to the uninterrupted run
        assert resumed.row(name)["final_val"] == want["final_val"]
        evals = [r["step"] for r in read_jsonl(root / "cut" / "metrics" / f"{name}.jsonl") if r["kind"] == "eval"]
        assert evals == [0, 10, 20, 30]


def _replicas(names: tuple[str, ...], steps: int) -> dict:
    """Rank worker: train each optimizer ``steps`` steps as compare does; return this rank's weights (and, for
    Adaptive, its choices after a deciding step in which rank 1's own decision deliberately disagrees)."""
    from steepest.app.compare.optimizers import build_optimizer

    info = init_from_env(timeout_s=TIMEOUT_S)
    dp = DataParallel(info)
    task = get_task("mnist", size="quick")
    out = {}
    for name in names:
        torch.manual_seed(0)
        model = task.make_model()
        ddp, opt = dp.wrap(model, build_optimizer(name, model, 0.02 if name != "adamw" else 3e-3, 3e-3, task.routing))
        batches = dp.batch_fn(lambda t: task.batch(0, t))
        for t in range(steps):
            if name == "adaptive" and t == steps - 1 and info.rank == 1:
                assert t % opt.every == 0  # the last step is a deciding one
                # rank 1 decides something else for every layer: the kernel must take rank 0's choice
                opt.chooser._decide = lambda p, G, state, nm: state.__setitem__(
                    "geometry", (state.get("geometry", 0) + 1) % 3
                )
            opt.zero_grad(set_to_none=True)
            task.loss(ddp, batches(t)).backward()
            opt.step()
        out[name] = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
        if name == "adaptive":
            out["choices"] = opt.geometries()
            out["type"] = f"{type(opt).__name__} {type(opt.executor).__name__}"
    return out


def test_replicas_stay_bit_identical():
    """Rank 0 alone checkpoints, so every rank must hold rank 0's weights: including Adaptive, whose
    per-layer choice is made on each rank's own activations and then taken from rank 0 inside the
    step kernel (11 steps span two of its decisions, at steps 0 and 10; at step 10 rank 1's own decision
    is forced to disagree on every layer)."""
    names = ("adamw", "muon", "torch-muon", "adaptive")
    r0, r1 = launch(_replicas, 2, (names, 11), timeout_s=TIMEOUT_S)
    for name in names:
        assert torch.equal(r0[name], r1[name]), name
        assert torch.isfinite(r0[name]).all()
    assert r0["type"] == "Adaptive OwnerComputes"  # compare --nproc no longer special-cases Adaptive
    assert r1["choices"] == r0["choices"]


# ------------------------------------------------------------------------------------- no processes spawned
def test_batch_not_divisible_exits_2_with_a_clear_message(tmp_path, capsys):
    run_dir = tmp_path / "r"
    rc = main(
        [
            "compare",
            "--task",
            "mnist",
            "--quick",
            "--nproc",
            "3",
            "--optimizers",
            "adamw",
            "--run-dir",
            str(run_dir),
            "--no-progress",
        ]
    )
    assert rc == 2
    err = capsys.readouterr().err
    assert "batch of 32 examples does not split evenly over --nproc 3" in err and "batch_size" in err
    assert not run_dir.exists()  # checked before anything is written
    assert main(["compare", "--task", "mnist", "--quick", "--nproc", "0", "--run-dir", str(run_dir)]) == 2


def test_task_object_with_nproc_is_a_config_error(tmp_path):
    task = get_task("mnist", size="quick")
    with pytest.raises(ConfigError, match="give it by name"):
        compare(task, ["adamw"], run_dir=tmp_path / "r", nproc=2, **QUICK)
    check_nproc(task, 0, 4)  # 32 splits over 4: no error
    with pytest.raises(ConfigError, match="positive integer"):
        check_nproc(task, 0, True)


def test_shard_splits_every_tensor_on_dim_0():
    x, y = torch.arange(12).view(6, 2), torch.arange(6)
    assert batch_size((x, y)) == 6 and batch_size({"x": x, "y": [y]}) == 6
    parts = [shard((x, y), r, 3) for r in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), x) and torch.equal(torch.cat([p[1] for p in parts]), y)
    assert [p[1].tolist() for p in parts] == [[0, 1], [2, 3], [4, 5]]
    d = shard({"x": x, "y": [y], "n": 7}, 1, 2)
    assert d["y"][0].tolist() == [3, 4, 5] and d["n"] == 7
    with pytest.raises(ConfigError, match="same dim 0"):
        batch_size((x, torch.arange(5)))
    with pytest.raises(ConfigError, match="same dim 0"):
        batch_size("no tensors")
