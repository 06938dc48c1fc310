"""benchmarks/train.py: the multi-seed aggregation and verdicts (synthetic numbers), and a quick real run."""

from __future__ import annotations

import json
import math

import pytest


@pytest.fixture(scope="module")
def train(load_benchmark):
    return load_benchmark("train")


def test_interpolated_steps(train):
    ev = [dict(step=10, val_loss=3.0), dict(step=20, val_loss=1.0), dict(step=30, val_loss=0.5)]
    assert train.interpolated_steps(ev, 2.0) == pytest.approx(15.0)
    assert train.interpolated_steps(ev, 3.0) == 10.0  # reached at the first evaluation
    assert train.interpolated_steps(ev, 0.1) is None  # never
    nan_first = [dict(step=10, val_loss=math.nan), dict(step=20, val_loss=1.0)]
    assert train.interpolated_steps(nan_first, 2.0) == 20.0  # no finite point before: the evaluation step


def _row(name, steps, interp, final, cpu):
    return dict(
        optimizer=name,
        steps_to_target=steps,
        steps_interp=interp,
        final_val=final,
        cpu_to_target_s=None if steps is None else cpu * steps / 100,
        wall_to_target_s=None,
        cpu_s=cpu,
    )


def test_aggregate_and_verdicts(train):
    per_seed = {
        0: {
            "adamw": _row("adamw", 100, 100.0, 2.0, 10.0),
            "specgd": _row("specgd", 50, 48.0, 1.8, 12.0),
            "frobenius": _row("frobenius", None, None, 2.2, 11.0),
            "adaptive": _row("adaptive", 40, 40.0, 1.7, 12.0),
            "adaptive-oracle": _row("adaptive-oracle", 30, 30.0, 1.6, 20.0),
        },
        1: {
            "adamw": _row("adamw", 100, 100.0, 2.0, 10.0),
            "specgd": _row("specgd", 60, 52.0, 1.8, 12.0),
            "frobenius": _row("frobenius", 90, 85.0, 2.0, 11.0),
            "adaptive": _row("adaptive", 50, 44.0, 1.7, 12.0),
            "adaptive-oracle": _row("adaptive-oracle", 40, 40.0, 1.6, 20.0),
        },
    }
    agg = train.aggregate(per_seed, steps=100, eval_every=10)
    assert agg["specgd"]["steps"]["mean"] == 55 and agg["specgd"]["steps_interp"]["mean"] == 50.0
    assert agg["frobenius"]["never"] == 1 and agg["frobenius"]["steps"]["mean"] == (110 + 90) / 2  # miss = 100 + 10
    assert agg["frobenius"]["cpu_to_target_s"]["n"] == 1  # only the seed that reached it
    v = {g["goal"].split(" (")[0].split(" <=")[0]: g for g in train.verdicts(agg, "mnist-cnn")}
    assert v["adaptive steps"]["value"] == pytest.approx(42.0 / 50.0) and v["adaptive steps"]["verdict"] == "holds"
    head = next(g for g in train.verdicts(agg, "mnist-cnn") if g["goal"].startswith("oracle headroom"))
    assert head["value"] == pytest.approx(1 - 35.0 / 50.0) and head["verdict"] == "holds"


def test_quick_run_records_the_oracle_bound(train, tmp_path, capsys):
    out = tmp_path / "t.json"
    assert (
        train.main(
            [
                "--quick",
                "--seeds",
                "0",
                "--optimizers",
                "adamw,specgd,adaptive,adaptive-oracle",
                "--run-dir",
                str(tmp_path / "runs"),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "adaptive-oracle" in text and "goal: adaptive steps <= 0.9x the best fixed geometry's (specgd)" in text
    assert not out.exists()  # --quick writes no JSON


def test_issue_21_verdicts_headroom_per_horizon_and_choosers(train):
    """Headroom per H = 1 - oracle steps / best fixed steps (10% threshold); a chooser is judged on steps
    (<= 0.9x the best fixed), CPU to the target (<= the best fixed's) and overhead (CPU per run vs SpecGD's)."""
    one = {
        "adamw": _row("adamw", 100, 100.0, 2.0, 10.0),
        "specgd": _row("specgd", 50, 50.0, 1.8, 12.0),
        "schatten": _row("schatten", 60, 60.0, 1.9, 12.0),
        "knob-schedule": _row("knob-schedule", 40, 44.0, 1.7, 12.2),
        "schedule-oracle-h1": _row("schedule-oracle-h1", 60, 55.0, 1.9, 12.0),
        "schedule-oracle-h25": _row("schedule-oracle-h25", 40, 40.0, 1.6, 12.0),
    }
    agg = train.aggregate({0: one}, steps=100, eval_every=10)
    v = {g["goal"]: g for g in train.verdicts_21(agg)}
    h1 = v["schedule-oracle-h1 headroom 1 - oracle/best fixed (specgd) >= 10%"]
    assert h1["value"] == pytest.approx(1 - 55 / 50) and h1["verdict"].startswith("fails: under 10%")
    h25 = v["schedule-oracle-h25 headroom 1 - oracle/best fixed (specgd) >= 10%"]
    assert h25["value"] == pytest.approx(0.2) and h25["verdict"] == "holds"
    assert list(v).index(h1["goal"]) < list(v).index(h25["goal"])  # ordered by H
    steps = v["knob-schedule steps <= 0.9x specgd's"]
    assert steps["value"] == pytest.approx(44 / 50) and steps["verdict"] == "holds"
    cpu = v["knob-schedule CPU s to target <= specgd's"]  # 12.2 * 40 / 100 vs 12 * 50 / 100
    assert cpu["value"] == pytest.approx(4.88 / 6.0) and cpu["verdict"] == "holds"
    over = v["knob-schedule decision overhead (CPU s per run / SpecGD's - 1) <= 3%"]
    assert over["value"] == pytest.approx(12.2 / 12 - 1) and over["verdict"] == "holds"


def test_quick_run_with_the_schedule_oracle(train, tmp_path, capsys):
    """The oracle entries run from train.py beside compare's entries, land in the table with their search cost,
    and a second run keeps the finished oracle result (the same numbers, nothing retrained)."""
    args = ["--quick", "--seeds", "0", "--optimizers", "adamw,specgd,schedule-oracle-h5", "--run-dir", str(tmp_path)]
    args += ["--oracle-candidates", "specgd,frobenius"]
    assert train.main(args) == 0
    first = capsys.readouterr().out
    row = next(line for line in first.splitlines() if line.startswith("schedule-oracle-h5"))
    assert "goal: schedule-oracle-h5 headroom 1 - oracle/best fixed (specgd)" in first
    saved = (tmp_path / "seed0" / "results" / "schedule-oracle-h5.json").read_text()
    assert '"winners"' in saved and '"cpu_total_s"' in saved
    metrics = (tmp_path / "seed0" / "metrics" / "schedule-oracle-h5.jsonl").read_text().splitlines()
    assert sum('"kind": "choice"' in x for x in metrics) == 6  # quick charlm: 30 steps / H = 5
    assert train.main(args) == 0
    again = capsys.readouterr().out
    assert next(line for line in again.splitlines() if line.startswith("schedule-oracle-h5")) == row
    assert (tmp_path / "seed0" / "results" / "schedule-oracle-h5.json").read_text() == saved


def test_quick_run_with_the_annealed_oracle(train, tmp_path, capsys):
    """``schedule-oracle-h<H>-a<A>`` runs the oracle with annealed scoring: its saved result names A, its
    segment scores are the annealed ones (they differ from the plain H entry's on the same run), and an
    anneal of 0 steps is refused with the entry's form."""
    names = "adamw,specgd,schedule-oracle-h10,schedule-oracle-h10-a5"
    args = ["--quick", "--seeds", "0", "--optimizers", names, "--run-dir", str(tmp_path)]
    args += ["--oracle-candidates", "specgd,frobenius"]
    assert train.main(args) == 0
    out = capsys.readouterr().out
    assert "goal: schedule-oracle-h10-a5 headroom" in out
    saved = json.loads((tmp_path / "seed0" / "results" / "schedule-oracle-h10-a5.json").read_text())
    assert saved["anneal"] == 5 and saved["horizon"] == 10

    def scores(name):
        lines = (tmp_path / "seed0" / "metrics" / f"{name}.jsonl").read_text().splitlines()
        return [json.loads(x)["scores"] for x in lines if '"kind": "choice"' in x]

    plain, cooled = scores("schedule-oracle-h10"), scores("schedule-oracle-h10-a5")
    assert len(plain) == len(cooled) == 3  # quick charlm: 30 steps / H = 10
    assert plain[0] != cooled[0]  # the first segment (steps 0-10) is scored after annealing
    with pytest.raises(SystemExit):
        train.main(["--quick", "--optimizers", "adamw,schedule-oracle-h10-a0", "--run-dir", str(tmp_path / "x")])
    assert "schedule-oracle-h<H>-a<A>" in capsys.readouterr().err
