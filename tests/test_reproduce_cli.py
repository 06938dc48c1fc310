"""``steepest reproduce`` end to end through steepest.app.cli.main: exit codes, files, errors, resuming."""

from __future__ import annotations

import json

import pytest

from steepest.app.cli import main
from steepest.app.commands.reproduce import build_configs
from steepest.app.reproduce import base
from steepest.app.runs import ConfigError

#: The smallest schatten run that still exercises every part (cells, claims, figures, report); no charlm gradients.
TINY = [
    "--quick",
    "--set",
    "m=24",
    "--set",
    "n=12",
    "--set",
    "trials=1",
    "--set",
    "match_grid=8",
    "--set",
    "real_seeds=[]",
]


def test_reproduce_writes_the_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reproduce", "schatten", "--out", str(out), *TINY]) == 0
    for name in ("config.json", "environment.json", "results.json", "claims.json", "report.html", "schatten_vs_p.png"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["experiment"] == "schatten" and cfg["config"]["m"] == 24 and cfg["config"]["trials"] == 1
    env = json.loads((out / "environment.json").read_text())
    assert env["threads"] == 1 and "torch" in env  # --threads default is recorded
    claims = json.loads((out / "claims.json").read_text())
    assert len(claims) == 4
    for c in claims:
        assert set(c) == {"seed", "statement", "measured", "verdict", "note", "at_size"}
        assert all(isinstance(v, str) and v for k, v in c.items() if k != "at_size")
        # each claim is the seed's (with its section) or labelled as the project's own extension
        assert c["seed"].startswith("seed 003, ") or c["seed"].startswith("extension (project's own; seed 003")
        assert c["note"].startswith("baseline: ")  # baseline and threshold written down
    # today's verdicts at this size; a quick run shows them only where quick was shown to decide the claim
    assert [c["at_size"] or c["verdict"] for c in claims] == ["holds"] * 4
    assert all(
        c["verdict"] in ("holds", base.UNDECIDED) and (c["verdict"] == base.UNDECIDED) == bool(c["at_size"])
        for c in claims
    )
    # the numbers in claims.json are the ones in results.json, and plausible for this config
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["m"] == 24 and res["settings"]["n"] == 12 and res["ps"][-1] == "inf"
    ps = [float(p) for p in res["ps"]]
    for kind in ("gaussian", "low_stable_rank"):
        K = res["kinds"][kind]
        gamma = -K["asym_fit"]["b"]
        # seed 003 Prop. 5: raw variance ~ 1/(p-1)^2 asymptotically; the p >= 256 fit is within 0.05 of 2 here
        assert gamma == pytest.approx(2.0, abs=0.05)
        assert f"{kind}: exponent {base.fmt(gamma)} " in claims[0]["measured"]
        # NS5 singular values lie in ~[0.68, 1.13]: its spread matches a Schatten p between 2 and 16
        assert 2.0 < K["ns_match_p"] < 16.0
        assert f"matches p = {base.fmt(K['ns_match_p'])}" in claims[3]["measured"].split(kind + ":")[1].split(";")[0]
        start = ps.index(4.0)  # the raw variance can rise from p = 2 to 3; from p = 4 on it falls
        assert all(a > b for a, b in zip(K["var"][start:], K["var"][start + 1 : -1]))  # (p = inf last)
    html = (out / "report.html").read_text()
    assert html.index("Claims: schatten") < html.index("<img")  # claims table on top
    assert (out / "schatten_vs_p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stdout = capsys.readouterr().out
    assert "(cells: 2 computed, 0 reused)" in stdout
    assert stdout.count("[       holds]") + stdout.count(f"[{base.UNDECIDED} (holds here)]") == 4
    assert f"report: {out / 'report.html'}" in stdout


def test_rerun_reuses_finished_cells(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["reproduce", "schatten", "--out", str(out), *TINY]) == 0
    first = json.loads((out / "results.json").read_text())
    capsys.readouterr()
    cells = sorted((out / "cells").glob("*.json"))
    assert [c.name.split("-")[1] for c in cells] == ["gaussian", "low_stable_rank"]  # one cell per kind x trial
    # atomic writes replace the file (new inode): same inode and mtime means the cell was never rewritten
    kept = {c.name: (c.stat().st_ino, c.stat().st_mtime_ns, c.read_bytes()) for c in cells[1:]}
    cells[0].unlink()  # an interrupted run lost one cell
    assert main(["reproduce", "schatten", "--out", str(out), *TINY]) == 0
    assert "(cells: 1 computed, 1 reused)" in capsys.readouterr().out
    assert cells[0].is_file()  # the lost cell was recomputed ...
    for name, got in kept.items():  # ... the finished one never rewritten
        f = out / "cells" / name
        assert (f.stat().st_ino, f.stat().st_mtime_ns, f.read_bytes()) == got
    assert json.loads((out / "results.json").read_text()) == first  # same seeds: same numbers
    before = {c.name: c.stat().st_mtime_ns for c in (out / "cells").glob("*.json")}
    assert main(["reproduce", "schatten", "--out", str(out), *TINY, "--set", "trials=2"]) == 0
    assert "(cells: 2 computed, 2 reused)" in capsys.readouterr().out  # more trials: only the new cells run
    after = {c.name: c.stat().st_mtime_ns for c in (out / "cells").glob("*.json")}
    assert len(after) == 4 and {n: after[n] for n in before} == before  # two new files, the old two untouched
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["trials"] == 2  # config.json describes the latest run


def test_run_files_follow_the_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        assert main(["reproduce", "schatten", "--out", str(tmp_path / "run"), *TINY]) == 0
    finally:
        os.umask(old)
    modes = {f.name: stat.S_IMODE(f.stat().st_mode) for f in (tmp_path / "run").iterdir() if f.is_file()}
    assert modes and all(m == 0o644 for m in modes.values()), modes  # what open(..., "w") gives under umask 022


def test_bad_set_key_is_a_usage_error(tmp_path, capsys):
    assert main(["reproduce", "schatten", "--out", str(tmp_path), "--set", "bogus=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'bogus'" in err and "valid keys" in err and "trials" in err
    assert list(tmp_path.iterdir()) == []  # rejected before anything is written


def test_bad_set_value_and_form_are_usage_errors(tmp_path, capsys):
    assert main(["reproduce", "quadratic", "--out", str(tmp_path), "--set", "steps=many"]) == 2
    assert "expected int, got 'many'" in capsys.readouterr().err
    assert main(["reproduce", "quadratic", "--out", str(tmp_path), "--set", "steps"]) == 2
    assert "key=value" in capsys.readouterr().err
    assert main(["reproduce", "quadratic", "--out", str(tmp_path), "--set", "stable_ranks=[0.5]"]) == 2
    assert "stable_ranks must be non-empty values in [1, d=" in capsys.readouterr().err
    assert main(["reproduce", "quadratic", "--out", str(tmp_path), "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    assert main(["reproduce", "quadratic", "--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no run directory from any of them


def test_bad_set_value_names_the_key(tmp_path, capsys):
    assert main(["reproduce", "quadratic", "--out", str(tmp_path), "--set", "steps=many"]) == 2
    assert "steps" in capsys.readouterr().err


def test_unknown_experiment_is_a_usage_error(capsys):
    assert main(["reproduce", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'nope'" in err and "spec-sign" in err


def test_config_file_then_overrides(tmp_path):
    (tmp_path / "c.yaml").write_text("m: 20\nn: 10\ntrials: 1\nmatch_grid: 6\n")
    out = tmp_path / "run"
    assert (
        main(
            [
                "reproduce",
                "schatten",
                "--quick",
                "--out",
                str(out),
                "--config",
                str(tmp_path / "c.yaml"),
                "--set",
                "n=8",
            ]
        )
        == 0
    )
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert (cfg["m"], cfg["n"], cfg["match_grid"], cfg["trials"]) == (20, 8, 6, 1)
    assert cfg["close_p"] == 32.0  # keys the file does not set keep quick()'s
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["n"] == 8 and len(res["kinds"]["gaussian"]["grid_p"]) == 6  # the run used them
    (tmp_path / "c.toml").write_text("steps = 3\n")
    configs = build_configs(["quadratic"], True, [], str(tmp_path / "c.toml"))
    assert configs["quadratic"].steps == 3


def test_all_configs_route_prefixed_and_shared_keys():
    names = list(base.REGISTRY)
    cfgs = build_configs(names, True, ["quadratic.steps=7", "seed=11"], None)
    assert cfgs["quadratic"].steps == 7 and cfgs["phase-retrieval"].steps == phase_retrieval_quick_steps()
    assert all(c.seed == 11 for c in cfgs.values())  # unprefixed: every experiment with it
    with pytest.raises(ConfigError, match="no experiment has it"):
        build_configs(names, True, ["bogus=1"], None)
    with pytest.raises(ConfigError, match="unknown config key"):
        build_configs(names, True, ["quadratic.bogus=1"], None)
    with pytest.raises(ConfigError, match="unknown experiment prefix"):
        build_configs(names, True, ["nope.steps=1"], None)


def phase_retrieval_quick_steps() -> int:
    return base.get("phase-retrieval").quick().steps


def test_combined_report(tmp_path):
    outcomes = [
        base.run_experiment(n, cfg, tmp_path / n)
        for n, cfg in build_configs(
            ["schatten", "quadratic"],
            True,
            [
                "schatten.m=16",
                "schatten.n=8",
                "schatten.trials=1",
                "schatten.match_grid=6",
                "quadratic.d=8",
                "quadratic.stable_ranks=[1.5,4]",
                "quadratic.steps=5",
                "quadratic.sup_restarts=1",
                "quadratic.sup_iters=20",
            ],
            None,
        ).items()
    ]
    path = base.write_combined_report(tmp_path / "report.html", outcomes)
    html = path.read_text()
    assert html.index("All claims") < html.index("schatten: ") < html.index("quadratic: ")
    assert html.count("<tr>") >= sum(len(o.claims) for o in outcomes) + 2
    assert "schatten/schatten_vs_p.png" in html  # figures relative to the report
    for o in outcomes:  # every claim's statement is in the table
        import html as _html

        assert all(_html.escape(c.statement) in html for c in o.claims), o.name
    assert (tmp_path / "quadratic" / "quadratic_loss.png").is_file()


@pytest.mark.slow
def test_reproduce_all_quick(tmp_path):
    out = tmp_path / "all"
    assert main(["reproduce", "all", "--quick", "--out", str(out)]) == 0
    claims = json.loads((out / "claims.json").read_text())
    assert set(claims) == set(base.REGISTRY)
    # today's quick verdicts (the numbers behind them are checked in test_experiments.py)
    from test_experiments import QUICK_VERDICTS

    want = dict(
        QUICK_VERDICTS,
        **{
            "layer-oracle": ["holds", "fails", "fails", "fails", "fails", "holds"],
            "oracle-strata": ["fails", "inconclusive", "fails", "fails"],  # per phase (init, early, late), then sign
        },
    )
    got = {n: [c["at_size"] or c["verdict"] for c in cs] for n, cs in claims.items()}  # the numbers' own verdicts
    # None: a timing-dependent verdict (phase-checks' wall-clock overhead) that is not pinned
    assert {n: [v for v, w in zip(got[n], want[n]) if w is not None] for n in got} == {
        n: [w for w in ws if w is not None] for n, ws in want.items()
    }
    html = (out / "report.html").read_text()
    # the sections' headings (a claim's text may hold "charlm_trained: ..." before them)
    assert html.index("All claims") < min(html.index(f"<h2>{name}: ") for name in base.REGISTRY)
    for name in base.REGISTRY:
        per = json.loads((out / name / "claims.json").read_text())
        assert per == claims[name]  # the combined file repeats each run's
        assert json.loads((out / name / "config.json").read_text())["experiment"] == name
        assert all(set(c) == {"seed", "statement", "measured", "verdict", "note", "at_size"} for c in per)


# ---------------------------------------------------------------------------------------- failures, sizes
def test_all_with_a_raising_experiment_exits_1_and_shows_a_red_row(tmp_path, monkeypatch, capsys):
    """A failed experiment is a red row with its error in the combined report (never dropped), the others
    still run, and ``reproduce all`` exits 1."""
    import dataclasses

    monkeypatch.setattr(base, "REGISTRY", {k: base.REGISTRY[k] for k in ("schatten", "quadratic")})
    real = base.run_experiment

    def run(name, cfg, run_dir, **kw):
        if name == "quadratic":
            raise RuntimeError("linalg.svd: The algorithm failed to converge")
        return real(name, dataclasses.replace(cfg, m=24, n=12, trials=1, match_grid=8), run_dir, **kw)

    monkeypatch.setattr(base, "run_experiment", run)
    out = tmp_path / "all"
    assert main(["reproduce", "all", "--quick", "--out", str(out)]) == 1
    html = (out / "report.html").read_text()
    assert '<td class="error">experiment failed</td>' in html
    assert "RuntimeError: linalg.svd: The algorithm failed to converge" in html
    assert (
        html.index("All experiments: one row per claim") < html.index("Not checked, and why") < html.index("All claims")
    )
    assert json.loads((out / "failed.json").read_text()) == {
        "quadratic": "RuntimeError: linalg.svd: The algorithm failed to converge"
    }
    assert set(json.loads((out / "claims.json").read_text())) == {"schatten"}
    assert "failed: quadratic" in capsys.readouterr().err


def test_all_jobs_2_gives_the_same_claims_in_registry_order(tmp_path, monkeypatch, capsys):
    """``reproduce all --jobs 2`` runs the experiments in two spawned processes: the same claims, numbers and
    verdicts as one at a time, combined in the registry's order whatever order they finish in; --jobs 0 is
    refused."""
    monkeypatch.setattr(base, "REGISTRY", {k: base.REGISTRY[k] for k in ("schatten", "quadratic")})
    tiny = ["--quick", "--set", "schatten.m=24", "--set", "schatten.n=12", "--set", "schatten.trials=1"]
    tiny += ["--set", "schatten.match_grid=8", "--set", "schatten.real_seeds=[]"]
    got = {}
    for jobs in ("1", "2"):
        out = tmp_path / f"jobs{jobs}"
        assert main(["reproduce", "all", "--out", str(out), "--jobs", jobs, *tiny]) == 0
        got[jobs] = json.loads((out / "claims.json").read_text())
        html = (out / "report.html").read_text()
        assert html.index("schatten: ") < html.index("quadratic: ")
    assert list(got["2"]) == ["schatten", "quadratic"] and got["2"] == got["1"]
    capsys.readouterr()
    assert main(["reproduce", "all", "--out", str(tmp_path / "bad"), "--jobs", "0", *tiny]) == 2
    assert "--jobs must be >= 1" in capsys.readouterr().err


def test_cells_record_the_svd_fallback(tmp_path):
    """A cell whose computation fell back from LAPACK's SVD says so in its file, in a rerun that reuses it,
    and other warnings pass through."""
    import warnings

    from steepest.linalg.polar_factor import SVDFallbackWarning

    def compute():
        warnings.warn("gesdd did not converge", SVDFallbackWarning, stacklevel=2)
        warnings.warn("gesdd did not converge", SVDFallbackWarning, stacklevel=2)
        warnings.warn("something else", UserWarning, stacklevel=2)
        return 1.0

    cells = base.Cells(tmp_path)
    with pytest.warns(UserWarning, match="something else"):
        assert cells.get("c", {"a": 1}, compute) == 1.0
    assert cells.fallbacks == {"c": 2}
    (path,) = tmp_path.glob("c-*.json")
    assert json.loads(path.read_text())["svd_fallbacks"] == 2
    again = base.Cells(tmp_path)
    assert again.get("c", {"a": 1}, lambda: 0.0) == 1.0 and again.fallbacks == {"c": 2} and again.hits == 1


def test_quick_verdict_shown_only_where_quick_was_shown_to_decide(monkeypatch):
    from steepest.app.reproduce import verdicts

    cs = [
        base.Claim("seed 9, s. 1", f"claim {i}", "1", v, "baseline: b; threshold (set in Config before the run): t")
        for i, v in enumerate(["holds", "fails", "holds", "inconclusive"])
    ]
    monkeypatch.setattr(
        verdicts,
        "FROZEN",
        {
            "x": [
                ("claim 0", "holds", "holds"),
                ("claim 1", "holds", "fails"),
                ("claim 2", "fails", "fails"),
                ("claim 3", "inconclusive", "inconclusive"),
            ]
        },
    )
    quick = verdicts.judge_at_size("x", cs, "quick")
    # 0: quick decides and agrees; 1: quick disagrees with default; 2: this run disagrees with the record; 3: undecided
    assert [c.verdict for c in quick] == ["holds"] + [base.UNDECIDED] * 3
    assert [c.at_size for c in quick] == ["", "fails", "holds", "inconclusive"]
    assert verdicts.judge_at_size("x", cs, "default") == cs
    rows = verdicts.summary_rows("x", cs, "quick")
    assert [r[3] for r in rows] == ["holds", "holds", "fails", "inconclusive"]  # the recorded default verdict
    assert [r[6] for r in rows] == ["yes", "no (quick: fails)", "yes", "yes"]
    assert rows[0][4] == "b"  # the baseline, from the note
    renamed = [dataclasses_replace(cs[0], statement="something else")]
    assert verdicts.quick_agrees("x", 0, renamed[0]) == "no record"


def dataclasses_replace(c, **kw):
    import dataclasses

    return dataclasses.replace(c, **kw)


def test_help_lists_every_experiment(capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in base.REGISTRY) and f"({len(base.REGISTRY)} experiments)" in out


# ---------------------------------------------------------------------------------------- frozen verdicts
def test_frozen_record_covers_every_experiment_and_never_shows_opposite_verdicts():
    """Every experiment has a recorded default and quick verdict per claim, and what a quick run shows is
    either the default verdict or 'not decided at this size': quick never contradicts default."""
    from steepest.app.reproduce import verdicts

    assert set(verdicts.FROZEN) == set(base.REGISTRY)
    note = "baseline: b; threshold (set in Config before the run): t"
    for name, entries in verdicts.FROZEN.items():
        assert entries, name
        quick_claims = [base.Claim("seed 9, s. 1", key + " ...", "1", quick, note) for key, _, quick in entries]
        shown = verdicts.judge_at_size(name, quick_claims, "quick")
        for (key, default, quick), c in zip(entries, shown):
            assert default in base.VERDICTS and quick in base.VERDICTS, (name, key)
            assert c.verdict in (default, base.UNDECIDED), (name, key, default, quick)
            assert (c.verdict == base.UNDECIDED) == (default != quick or default == "inconclusive"), (name, key)


#: Claims whose verdict is a wall-clock measurement on this machine (not frozen).
TIMING = ("Measure wall-clock",)


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_default_verdicts_are_frozen(tmp_path):
    """The default ``reproduce all`` exits 0, every claim's verdict is the recorded one (a change that flips a
    verdict fails here: rerun and refresh verdicts.FROZEN on purpose), and no best learning rate sits on the
    edge of its grid. Takes about 40+ minutes of one core."""
    from steepest.app.reproduce import verdicts

    out = tmp_path / "all"
    assert main(["reproduce", "all", "--out", str(out), "--jobs", "2"]) == 0  # two cores: CI's time budget
    claims = json.loads((out / "claims.json").read_text())
    assert set(claims) == set(base.REGISTRY)
    for name, cs in claims.items():
        want = verdicts.FROZEN[name]
        assert [c["statement"][: verdicts.KEY_CHARS] for c in cs] == [w[0] for w in want], name
        got = [c["verdict"] for c in cs if not any(t in c["statement"] for t in TIMING)]
        assert got == [w[1] for w, c in zip(want, cs) if not any(t in c["statement"] for t in TIMING)], name
        results = json.loads((out / name / "results.json").read_text())
        assert base.grid_edges(name, base._revive(results)) == [], name


def test_grid_edges_flags_a_best_lr_on_the_edge():
    res = {"settings": {"lrs": [0.01, 0.02, 0.04]}, "best": {"svd": {"lr": 0.04}, "muon_quintic": {"lr": 0.02}}}
    assert base.grid_edges("trained", res) == ["svd lr 0.04 on the edge of [0.01, 0.02, 0.04]"]
    res["best"]["svd"]["lr"] = 0.02
    assert base.grid_edges("trained", res) == []
    res["settings"]["lrs"] = [0.02]  # a one-value grid (quick) is not a choice
    assert base.grid_edges("trained", res) == [] and base.grid_edges("quadratic", {}) == []
    rows = [
        {"magnitudes": "gaussian", "density": 0.1, "batch": 4, "edge": True},
        {"magnitudes": "equal", "density": 1.0, "batch": 4, "edge": False},
    ]
    assert base.grid_edges("spec-sign", {"rows": rows}) == [
        "magnitudes=gaussian, density=0.1, B=4: best eta at the grid edge"
    ]
