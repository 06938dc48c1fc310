"""``steepest reproduce`` end to end through steepest.app.cli.main: exit codes, files, errors, resuming."""

from __future__ import annotations

import json
import math

import pytest

from steepest.app.cli import main
from steepest.app.commands.reproduce import build_configs
from steepest.app.reproduce import base
from steepest.app.runs import ConfigError

#: The smallest schatten run that still exercises every part (cells, claims, figures, report).
TINY = ["--quick", "--set", "m=24", "--set", "n=12", "--set", "trials=1", "--set", "match_grid=8"]


def test_reproduce_writes_the_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reproduce", "schatten", "--out", str(out), *TINY]) == 0
    for name in ("config.json", "environment.json", "results.json", "claims.json", "report.html", "schatten_vs_p.png"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["experiment"] == "schatten" and cfg["config"]["m"] == 24 and cfg["config"]["trials"] == 1
    env = json.loads((out / "environment.json").read_text())
    assert env["threads"] == 1 and "torch" in env                       # --threads default is recorded
    claims = json.loads((out / "claims.json").read_text())
    assert {c["verdict"] for c in claims} <= set(base.VERDICTS) and len(claims) == 3
    html = (out / "report.html").read_text()
    assert html.index("Claims: schatten") < html.index("<img")           # claims table on top
    assert (out / "schatten_vs_p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "2 computed, 0 reused" in capsys.readouterr().out


def test_rerun_reuses_finished_cells(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reproduce", "schatten", "--out", str(out), *TINY]) == 0
    first = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    cells = sorted((out / "cells").glob("*.json"))
    assert len(cells) == 2
    cells[0].unlink()                                                    # an interrupted run lost one cell
    assert main(["reproduce", "schatten", "--out", str(out), *TINY]) == 0
    assert "1 computed, 1 reused" in capsys.readouterr().out
    assert json.loads((out / "results.json").read_text()) == first       # same seeds: same numbers
    assert main(["reproduce", "schatten", "--out", str(out), *TINY, "--set", "trials=2"]) == 0
    assert "2 computed, 2 reused" in capsys.readouterr().out             # more trials: only the new cells run


def test_bad_set_key_is_a_usage_error(tmp_path, capsys):
    assert main(["reproduce", "schatten", "--out", str(tmp_path), "--set", "bogus=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'bogus'" in err and "valid keys" in err and "trials" in err
    assert not (tmp_path / "results.json").exists()


def test_bad_set_value_and_form_are_usage_errors(tmp_path, capsys):
    assert main(["reproduce", "quadratic", "--out", str(tmp_path), "--set", "steps=many"]) == 2
    assert "expected int" in capsys.readouterr().err
    assert main(["reproduce", "quadratic", "--out", str(tmp_path), "--set", "steps"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(["reproduce", "quadratic", "--out", str(tmp_path), "--set", "stable_ranks=[0.5]"]) == 2
    assert "stable_ranks" in capsys.readouterr().err
    assert main(["reproduce", "quadratic", "--out", str(tmp_path), "--config", str(tmp_path / "missing.yaml")]) == 2
    assert main(["reproduce", "quadratic", "--threads", "0"]) == 2


def test_unknown_experiment_is_a_usage_error(capsys):
    assert main(["reproduce", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'nope'" in err and "spec-sign" in err


def test_config_file_then_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("m: 20\nn: 10\ntrials: 1\nmatch_grid: 6\n")
    out = tmp_path / "run"
    assert main(["reproduce", "schatten", "--quick", "--out", str(out), "--config", str(tmp_path / "c.yaml"),
                 "--set", "n=8"]) == 0
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert (cfg["m"], cfg["n"], cfg["match_grid"]) == (20, 8, 6)
    (tmp_path / "c.toml").write_text("steps = 3\n")
    configs = build_configs(["quadratic"], True, [], str(tmp_path / "c.toml"))
    assert configs["quadratic"].steps == 3


def test_all_configs_route_prefixed_and_shared_keys():
    names = list(base.REGISTRY)
    cfgs = build_configs(names, True, ["quadratic.steps=7", "seed=11"], None)
    assert cfgs["quadratic"].steps == 7 and cfgs["phase-retrieval"].steps == phase_retrieval_quick_steps()
    assert all(c.seed == 11 for c in cfgs.values())                      # unprefixed: every experiment with it
    with pytest.raises(ConfigError, match="no experiment has it"):
        build_configs(names, True, ["bogus=1"], None)
    with pytest.raises(ConfigError, match="unknown config key"):
        build_configs(names, True, ["quadratic.bogus=1"], None)
    with pytest.raises(ConfigError, match="unknown experiment prefix"):
        build_configs(names, True, ["nope.steps=1"], None)


def phase_retrieval_quick_steps() -> int:
    return base.get("phase-retrieval").quick().steps


def test_combined_report(tmp_path):
    outcomes = [base.run_experiment(n, cfg, tmp_path / n) for n, cfg in
                build_configs(["schatten", "quadratic"], True, ["schatten.m=16", "schatten.n=8", "schatten.trials=1",
                                                                "schatten.match_grid=6", "quadratic.d=8",
                                                                "quadratic.stable_ranks=[1.5,4]", "quadratic.steps=5",
                                                                "quadratic.sup_restarts=1", "quadratic.sup_iters=20"],
                              None).items()]
    path = base.write_combined_report(tmp_path / "report.html", outcomes)
    html = path.read_text()
    assert html.index("All claims") < html.index("schatten: ") < html.index("quadratic: ")
    assert html.count("<tr>") >= sum(len(o.claims) for o in outcomes) + 2
    assert "schatten/schatten_vs_p.png" in html                          # figures relative to the report


@pytest.mark.slow
def test_reproduce_all_quick(tmp_path):
    out = tmp_path / "all"
    assert main(["reproduce", "all", "--quick", "--out", str(out)]) == 0
    claims = json.loads((out / "claims.json").read_text())
    assert set(claims) == set(base.REGISTRY)
    for name in base.REGISTRY:
        assert (out / name / "results.json").is_file()
    assert math.isfinite(len((out / "report.html").read_text()))
