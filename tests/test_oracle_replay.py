"""benchmarks/oracle_replay.py: replaying a schedule oracle's kept path with one geometry (a quick real run)."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def mods(load_benchmark):
    return load_benchmark("train"), load_benchmark("oracle_replay")


def test_a_one_candidate_oracle_is_replayed_bit_for_bit(mods, tmp_path, capsys):
    """With SpecGD as the only candidate the oracle's path is SpecGD at its lr in every segment, and so is the
    replay: every evaluation and the final loss must be equal, not close (same steps, batches, momentum)."""
    train, replay = mods
    args = ["--quick", "--seeds", "0", "--optimizers", "adamw,specgd,schedule-oracle-h5", "--run-dir", str(tmp_path)]
    assert train.main([*args, "--oracle-candidates", "specgd"]) == 0
    out = tmp_path / "replay.json"
    common = ["--run-dir", str(tmp_path / "seed0"), "--oracle", "schedule-oracle-h5"]
    assert replay.main([*common, "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    oracle = json.loads((tmp_path / "seed0" / "results" / "schedule-oracle-h5.json").read_text())
    assert [list(e) for e in doc["evals"]] == [list(e) for e in oracle["evals"]]
    assert doc["final_val"] == oracle["final_val"] and doc["steps_to_target"] == doc["oracle_steps_to_target"]
    with pytest.raises(SystemExit) as e:  # an entry that was no candidate has no lr to build it with
        replay.main([*common, "--as", "frobenius", "--out", str(tmp_path / "x.json")])
    assert e.value.code == 2 and "not one of the oracle's candidates" in capsys.readouterr().err
