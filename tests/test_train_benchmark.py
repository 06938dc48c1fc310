"""benchmarks/train.py: the multi-seed aggregation and verdicts (synthetic numbers), and a quick real run."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def train():
    spec = importlib.util.spec_from_file_location("bench_train", ROOT / "benchmarks" / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
