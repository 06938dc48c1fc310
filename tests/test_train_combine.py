"""benchmarks/train_combine.py: merging the per-seed rows of several train.py JSONs (synthetic documents)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def tc(load_benchmark):
    return load_benchmark("train_combine")


def _row(name, interp, final=2.0, cpu=50.0):
    steps = None if interp is None else int(-(-interp // 10) * 10)
    return dict(
        optimizer=name,
        steps_to_target=steps,
        steps_interp=interp,
        final_val=final,
        steps_done=300,
        cpu_s=cpu,
        cpu_to_target_s=None if steps is None else cpu * steps / 300,
        wall_to_target_s=None,
    )


def _doc(rows_by_seed, targets, task="charlm/default"):
    return dict(
        task=task,
        task_options={},
        eval_every=10,
        targets=targets,
        rows={s: rows for s, rows in rows_by_seed.items()},
        command="python benchmarks/train.py ...",
        environment={"git_sha": "abc"},
    )


def test_later_rows_replace_earlier_ones_and_the_aggregate_is_recomputed(tc):
    old = _doc(
        {
            "0": [_row("adamw", 300.0), _row("specgd", 120.0), _row("frobenius", None)],
            "1": [_row("adamw", 300.0), _row("specgd", 110.0), _row("frobenius", None)],
        },
        {"0": 2.1, "1": 2.2},
    )
    new = _doc(
        {"0": [_row("adamw", 300.0), _row("frobenius", 250.0)], "1": [_row("adamw", 300.0), _row("frobenius", 270.0)]},
        {"0": 2.1, "1": 2.2},
    )
    out = tc.combine([("old.json", old), ("new.json", new)])
    agg = out["aggregate"]
    assert agg["specgd"]["steps_interp"]["mean"] == pytest.approx(115.0)  # kept from old
    assert agg["frobenius"]["steps_interp"]["mean"] == pytest.approx(260.0)  # replaced by new
    assert agg["frobenius"]["never"] == 0
    assert out["row_source"]["0"] == {"adamw": "new.json", "specgd": "old.json", "frobenius": "new.json"}
    assert [s["commit"] for s in out["sources"]] == ["abc", "abc"]
    json.dumps(out)  # writable as JSON


def test_a_different_target_or_task_or_optimizer_set_is_refused(tc):
    a = _doc({"0": [_row("adamw", 300.0), _row("specgd", 120.0)]}, {"0": 2.1})
    b = _doc({"0": [_row("adamw", 300.0)]}, {"0": 2.1000001})
    with pytest.raises(tc.CombineError, match="seed 0's target"):
        tc.combine([("a.json", a), ("b.json", b)])
    c = _doc({"0": [_row("adamw", 300.0)]}, {"0": 2.1}, task="mnist-cnn/default")
    with pytest.raises(tc.CombineError, match="task"):
        tc.combine([("a.json", a), ("c.json", c)])
    d = _doc({"1": [_row("adamw", 300.0)]}, {"1": 2.2})  # seed 1 lacks specgd
    with pytest.raises(tc.CombineError, match="different optimizer sets"):
        tc.combine([("a.json", a), ("d.json", d)])
