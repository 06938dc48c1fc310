"""steepest compare end to end: run files, table, resume equality, divergence, CLI errors, sweep cache."""

from __future__ import annotations

import json
import math

import pytest
import torch

import steepest
from steepest.app.cli import main
from steepest.app.compare.job import TABLE_COLUMNS, compare, load_tuned, resolve_lrs, steps_to_reach
from steepest.app.compare.loop import lr_factor
from steepest.app.compare.optimizers import DEFAULT_OPTIMIZERS
from steepest.app.compare.sweep import sweep
from steepest.app.runs import ConfigError, read_jsonl

QUICK = dict(size="quick", progress=False, log=None)


def _evals(run_dir, name):
    return [
        (r["step"], r["val_loss"]) for r in read_jsonl(run_dir / "metrics" / f"{name}.jsonl") if r["kind"] == "eval"
    ]


def test_quick_mnist_end_to_end_writes_files_and_table(tmp_path):
    names = ["adamw", "muon", "signum"]
    r = compare("mnist", names, run_dir=tmp_path / "run", **QUICK)
    run = tmp_path / "run"
    for f in (
        "config.json",
        "environment.json",
        "summary.json",
        "table.txt",
        "report.html",
        "routing.txt",
        "figures/val_loss.png",
    ):
        assert (run / f).exists(), f
    for n in names:
        assert (run / "checkpoints" / f"{n}.pt").exists() and (run / "results" / f"{n}.json").exists()
        ev = _evals(run, n)
        assert [s for s, _ in ev] == [0, 10, 20, 30]
        assert all(math.isfinite(v) for _, v in ev)
        # 30 steps on 4k digits: the validation loss must fall clearly below its start (log 10 = 2.30).
        assert ev[-1][1] < ev[0][1] - 0.5
        assert len([x for x in read_jsonl(run / "metrics" / f"{n}.jsonl") if x["kind"] == "train"]) == 30
    assert [row["optimizer"] for row in r.rows] == names
    header = r.table.splitlines()[0].split()
    assert header[:2] == ["optimizer", "lr"] and "status" in header
    for col in TABLE_COLUMNS:
        assert col in r.table.splitlines()[0]
    ref = r.row("adamw")
    assert ref["steps_to_target"] is not None and ref["final_val"] == pytest.approx(r.target)
    for row in r.rows:  # time to target = steps to it x the row's mean training step time
        if row["steps_to_target"] is not None:
            assert row["time_to_target_s"] == pytest.approx(row["steps_to_target"] * row["ms_per_step"] / 1e3)
    assert ref["time_ratio_to_reference"] == pytest.approx(1.0)
    assert json.loads((run / "config.json").read_text())["config"]["optimizers"] == names
    html = (run / "report.html").read_text()
    assert "val_loss.png" in html and "Routing of parameters" in html


def test_quick_charlm_and_cnn_every_geometry(tmp_path):
    names = ["adamw", "torch-muon", "muon", "specgd", "schatten", "adaptive"]
    r = compare("charlm", names, steps=12, eval_every=6, run_dir=tmp_path / "lm", **QUICK)
    for row in r.rows:
        assert row["diverged_at"] is None and math.isfinite(row["final_val"])
        ev = _evals(tmp_path / "lm", row["optimizer"])
        assert ev[-1][1] < ev[0][1]  # every geometry lowers the char-LM loss within 12 steps
    # torch.optim.Muon and steepest.Muon share semantics (bf16 NS5, Nesterov 0.95, same routing); their
    # trajectories differ only by float rounding order, so 12 steps agree to 1e-3 nats.
    assert r.row("torch-muon")["final_val"] == pytest.approx(r.row("muon")["final_val"], abs=1e-3)
    # The adaptive run is monitored: per-layer nr(G)/st(A) records at steps 0 and 6 for the 5 Linear layers,
    # each with the geometry the optimizer used, and the report shows the heatmap and the choice map.
    diag = read_jsonl(tmp_path / "lm" / "diagnostics" / "adaptive.jsonl")
    assert sorted({d["step"] for d in diag}) == [0, 6] and len(diag) == 10
    assert all(d["choice"] in ("spectral", "linf", "frobenius") for d in diag if d["layer"] != "lm_head")
    assert {d["choice"] for d in diag if d["layer"] == "lm_head"} == {"adamw"}
    assert all(d["nr_G"] > 0 and d["st_A"] > 0 for d in diag)
    html = (tmp_path / "lm" / "report.html").read_text()
    assert "choices_adaptive.png" in html and "diag_ratio_adaptive.png" in html
    assert not (tmp_path / "lm" / "diagnostics" / "torch-muon.jsonl").exists()  # a pair is not monitored
    c = compare("mnist-cnn", ["adamw", "muon"], steps=10, eval_every=5, run_dir=tmp_path / "cnn", report=False, **QUICK)
    assert all(math.isfinite(row["final_val"]) for row in c.rows)
    routing = (tmp_path / "cnn" / "routing.txt").read_text()
    assert "conv1.weight" in routing and "Conv2d kernel" in routing


def test_resume_after_interrupt_gives_identical_numbers(tmp_path):
    names = ["adamw", "muon"]
    kw = dict(steps=20, eval_every=5, report=False, **QUICK)
    full = compare("mnist", names, run_dir=tmp_path / "full", **kw)

    def interrupt(name, step, loss):
        if name == "muon" and step == 12:
            raise KeyboardInterrupt("muon cut at step 12")

    with pytest.raises(KeyboardInterrupt, match="muon cut at step 12"):
        compare("mnist", names, run_dir=tmp_path / "cut", on_step=interrupt, **kw)
    assert (tmp_path / "cut" / "results" / "adamw.json").exists()
    assert not (tmp_path / "cut" / "results" / "muon.json").exists()
    resumed = compare("mnist", names, run_dir=tmp_path / "cut", resume=True, **kw)
    for a, b in zip(full.rows, resumed.rows):
        # Same seed, same batches (a pure function of the step), restored RNG and optimizer state, one
        # CPU thread: the continued run must match bit for bit, so equality is exact.
        assert a["final_val"] == b["final_val"] and a["best_val"] == b["best_val"]
        assert _evals(tmp_path / "full", a["optimizer"]) == _evals(tmp_path / "cut", b["optimizer"])
    # The monitor's records (muon is monitored) are also those of the uninterrupted run.
    assert read_jsonl(tmp_path / "cut" / "diagnostics" / "muon.jsonl") == read_jsonl(
        tmp_path / "full" / "diagnostics" / "muon.jsonl"
    )
    train = [x["step"] for x in read_jsonl(tmp_path / "cut" / "metrics" / "muon.jsonl") if x["kind"] == "train"]
    assert train == list(range(20))  # steps after the checkpoint were dropped and redone, none twice
    with pytest.raises(ConfigError, match="differs in steps"):
        compare("mnist", names, run_dir=tmp_path / "cut", resume=True, **dict(kw, steps=25))
    with pytest.raises(ConfigError, match="already holds a run"):
        compare("mnist", names, run_dir=tmp_path / "cut", **kw)


def test_diverging_optimizer_is_recorded_and_the_comparison_goes_on(tmp_path):
    r = compare("mnist", ["adamw", "sgd", "muon"], lrs={"sgd": 1e6}, run_dir=tmp_path / "run", **QUICK)
    bad = r.row("sgd")
    assert bad["diverged_at"] is not None and bad["diverged_at"] < 30
    assert "nan" in bad["diverged_reason"] or "inf" in bad["diverged_reason"]
    assert math.isnan(bad["final_val"]) and bad["steps_to_target"] is None
    assert r.row("muon")["steps_done"] == 30 and math.isfinite(r.row("muon")["final_val"])
    assert f"diverged at step {bad['diverged_at']}" in r.table
    assert "diverged at step" in (tmp_path / "run" / "report.html").read_text()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "--task", "nope"], "unknown task"),
        (["compare", "--quick", "--optimizers", "adamw,bogus"], "unknown optimizer"),
        (["compare", "--quick", "--lr", "adamw=fast"], "expected a number"),
        (["compare", "--quick", "--lr", "adamw=-1"], "positive"),
        (["compare", "--quick", "--steps", "0"], "positive integers"),
        (["compare", "--quick", "--task-opt", "bogus=1"], "unknown charlm option"),
        (["sweep", "--task", "nope"], "unknown task"),
        (["sweep", "--grid", "muon"], "--grid expects"),
    ],
)
def test_bad_task_or_option_exits_2_with_a_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_unknown_flag_and_resume_without_run_exit_2(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match="^2$") as e:  # argparse's usage error: exit status 2
        main(["compare", "--bogus"])
    assert e.value.code == 2
    assert main(["compare", "--quick", "--resume", "--run-dir", str(tmp_path / "none")]) == 2
    assert "no config.json" in capsys.readouterr().err


def test_cli_quick_run_prints_the_table(capsys, tmp_path):
    rc = main(
        [
            "compare",
            "--quick",
            "--task",
            "mnist",
            "--optimizers",
            "adamw,signum",
            "--steps",
            "6",
            "--eval-every",
            "3",
            "--run-dir",
            str(tmp_path / "cli"),
            "--no-progress",
            "--no-report",
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "final val" in out and "signum" in out and "target = adamw's final validation loss" in out


def test_lr_schedule_and_steps_to_reach():
    f = [lr_factor(t, 100) for t in range(100)]
    assert f[0] == pytest.approx(0.2) and f[4] == 1.0 and f[69] == 1.0  # warmup 5 steps, flat to step 70
    assert f[99] == pytest.approx(1 / 30) and all(a >= b for a, b in zip(f[5:], f[6:]))
    assert steps_to_reach([(0, 3.0), (10, 2.0), (20, 1.5)], 2.0) == 10
    assert steps_to_reach([(0, 3.0), (10, float("nan"))], 2.0) is None


def test_lr_precedence_given_then_tuned_then_fallback():
    tuned = {"tables": {"charlm/default": {"adamw": 0.004, "muon": 0.03}}}
    lrs = resolve_lrs("charlm", "quick", ["muon", "signum"], {"signum": 5e-4}, tuned=tuned)
    assert lrs == {"muon": (0.03, "tuned"), "signum": (5e-4, "given"), "adamw": (0.004, "tuned")}
    with pytest.raises(ValueError, match="unknown optimizer"):
        resolve_lrs("charlm", "default", ["muon"], {"nope": 1.0}, tuned=tuned)


def test_shipped_tuned_table_covers_the_default_run():
    data = load_tuned()
    table = data["tables"]["charlm/default"]
    avail = [n for n in DEFAULT_OPTIMIZERS if n != "adaptive" or hasattr(steepest, "Adaptive")]
    assert set(avail) <= set(table)
    assert "steepest sweep" in data["sweeps"]["charlm/default"]["command"]


def test_sweep_is_cached_and_resumable(tmp_path, monkeypatch):
    cache = tmp_path / "cache.json"
    tuned = tmp_path / "tuned.json"
    grid = {"adamw": [1e-3, 3e-3], "muon": [0.01, 0.03]}
    kw = dict(size="quick", optimizers=["adamw", "muon"], steps=6, cache=cache, grid=grid, log=None)
    best = sweep("mnist", write_tuned=True, tuned_path=tuned, **kw)
    assert set(best) == {"adamw", "muon"} and best["adamw"] in grid["adamw"] and best["muon"] in grid["muon"]
    assert len(json.loads(cache.read_text())) == 4
    saved = json.loads(tuned.read_text())
    assert saved["tables"]["mnist/quick"] == best and set(saved["sweeps"]["mnist/quick"]["tried"]) == {"adamw", "muon"}

    def no_training(*a, **k):
        raise AssertionError("a cached sweep point was trained again")

    monkeypatch.setattr("steepest.app.compare.sweep.compare", no_training)
    assert sweep("mnist", **kw) == best


def test_user_task_from_the_command_line_and_as_an_object(tmp_path, monkeypatch, capsys):
    (tmp_path / "user_tasks.py").write_text(
        "import torch\n"
        "from torch import nn\n"
        "from steepest.app.tasks import Task\n\n"
        "def make():\n"
        "    X = torch.randn(128, 6, generator=torch.Generator().manual_seed(0))\n"
        "    y = X @ torch.ones(6, 2)\n"
        "    mse = lambda m, b: nn.functional.mse_loss(m(b[0]), b[1])\n"
        "    return Task(name='toy', make_model=lambda: nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 2)),\n"
        "                batch=lambda seed, step: (X[(step * 16) % 128:][:16], y[(step * 16) % 128:][:16]),\n"
        "                loss=mse, evaluate=lambda m: float(mse(m, (X, y))), steps=20, eval_every=5)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(["compare", "--task", "user_tasks:make", "--optimizers", "adamw,muon", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "task toy" in out and "muon" in out
    assert len(list((tmp_path / "runs").glob("compare-toy-*/report.html"))) == 1
    import user_tasks

    r = compare(
        user_tasks.make(), ["adamw", "signum"], run_dir=tmp_path / "obj", progress=False, log=None, report=False
    )
    assert r.rows[0]["steps_done"] == 20 and all(math.isfinite(x["final_val"]) for x in r.rows)


def test_default_optimizers_fit_the_cpu(monkeypatch):
    """torch.optim.Muon forces bf16 Newton-Schulz: on a CPU without native bf16 the main job leaves it out
    (it alone took 16 of 42 minutes there); steepest's Muon uses dtype='auto' instead, and Adaptive has
    SpecGD's settings (float32 Polar Express on every CPU), so it is SpecGD wherever it chooses spectral."""
    from steepest.app.compare import optimizers as O
    from steepest.linalg import precision

    for forced, has_torch_muon in (("1", True), ("0", False)):
        monkeypatch.setenv("STEEPEST_BF16", forced)
        precision.clear_cache()
        assert ("torch-muon" in O.default_optimizers()) == has_torch_muon
        assert set(O.DEFAULT_OPTIMIZERS) - set(O.default_optimizers()) <= set(O.NEEDS_NATIVE_BF16)
    precision.clear_cache()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    ada = O.build_optimizer("adaptive", model, 0.01, 1e-3, None)
    spec = O.build_optimizer("specgd", model, 0.01, 1e-3, None)
    keys = ("dtype", "method", "steps", "coefficients", "normalization", "momentum", "nesterov", "scale_rule")
    settings = lambda o: [{k: g[k] for k in keys} for g in o.param_groups if g["algorithm"] == "steepest"]  # noqa: E731
    assert settings(ada) == settings(spec)
