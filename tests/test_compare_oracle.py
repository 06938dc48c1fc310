"""``steepest compare --oracle-every``: the measured per-layer winner in the monitor's records, the report's
"Which geometry wins each layer" section, bit-identical training and resume.

The cost on charlm default (in the CLI help and :mod:`steepest.app.compare.monitor`'s docstring) is measured
outside the tests (no timing in a test).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from steepest.app.cli import main
from steepest.app.compare.geometry_wins import agreement_rows
from steepest.app.compare.job import compare
from steepest.app.compare.monitor import ORACLE_GEOMETRIES, ORACLE_SEARCH
from steepest.app.compare.runner import HeldOutLoss
from steepest.app.runs import ConfigError, read_jsonl
from steepest.app.tasks import get_task
from steepest.diagnostics import layer_oracle

QUICK = dict(size="quick", progress=False, log=None)
RUN = dict(steps=12, eval_every=6, monitor_every=3)
ORACLE_KEYS = (
    "delta_spectral",
    "delta_frobenius",
    "delta_linf",
    "measured_winner",
    "measured_winner_sign",
    "measured_tie",
    "measured_tie_sign",
    "oracle_at_edge",
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("oracle")
    compare("charlm", ["adamw", "adaptive"], run_dir=root / "on", oracle_every=6, **RUN, **QUICK)
    compare("charlm", ["adamw", "adaptive"], run_dir=root / "off", report=False, **RUN, **QUICK)
    return root


def _argmax(a: float, b: float, names) -> str:
    return "none" if max(a, b) <= 0 else (names[0] if a >= b else names[1])


def test_records_carry_a_consistent_measured_winner(runs):
    diag = read_jsonl(runs / "on" / "diagnostics" / "adaptive.jsonl")
    layers = ["blocks.0.qkv", "blocks.0.proj", "blocks.0.fc", "blocks.0.fc_proj", "lm_head"]
    assert sorted({d["step"] for d in diag}) == [0, 3, 6, 9]
    oracle = [d for d in diag if d["step"] in (0, 6)]
    assert len(oracle) == 10 and [d["layer"] for d in oracle[:5]] == layers
    for d in oracle:
        assert all(k in d for k in ORACLE_KEYS)
        s, f, l = d["delta_spectral"], d["delta_frobenius"], d["delta_linf"]
        assert all(math.isfinite(v) and v >= 0 for v in (s, f, l))
        assert d["measured_winner"] == _argmax(s, f, ("spectral", "frobenius"))
        assert d["measured_winner_sign"] == _argmax(s, l, ("spectral", "linf"))
        # a tie: the pair within the reduced line search's relative tolerance (1.06e-2)
        assert d["measured_tie"] == (abs(s - f) <= ORACLE_SEARCH.decrease_rtol() * max(s, f))
        # the Spec-Sign index is computed on the oracle's records (microbatches > 0 there)
        assert d["spec_sign_winner"] in ("spectral", "linf") and d["microbatch_size"] == 2
    assert sum(d["measured_winner"] != "none" for d in oracle) == 10  # every layer's step lowers the loss
    for d in diag:
        if d["step"] in (3, 9):
            assert not any(k in d for k in ORACLE_KEYS) and d["spec_sign_winner"] is None
    # adamw has no per-layer choices: monitored, without the oracle
    adamw = read_jsonl(runs / "on" / "diagnostics" / "adamw.jsonl")
    assert adamw and not any("measured_winner" in d for d in adamw)


def test_step_zero_oracle_is_the_layer_oracle_on_the_held_out_batch(runs):
    """The recorded Delta*_g at step 0 are layer_oracle's with that step's gradients (recomputed here)."""
    diag = {d["layer"]: d for d in read_jsonl(runs / "on" / "diagnostics" / "adaptive.jsonl") if d["step"] == 0}
    task = get_task("charlm", size="quick")
    torch.manual_seed(0)
    model = task.make_model()
    model.train()
    task.loss(model, task.batch(0, 0)).backward()
    grads = {f"{layer}.weight": dict(model.named_parameters())[f"{layer}.weight"].grad.clone() for layer in diag}
    res = layer_oracle(
        model, HeldOutLoss(task, model, 0, step=0), grads, geometries=ORACLE_GEOMETRIES, search=ORACLE_SEARCH
    )
    for layer, d in diag.items():
        for g in ("spectral", "frobenius", "linf"):
            # same weights, gradients and held-out batch, same float32 kernels on one thread: equal numbers
            assert d[f"delta_{g}"] == pytest.approx(res[f"{layer}.weight"][g].decrease, rel=1e-6, abs=1e-9)


def _losses(records):
    return [(r["kind"], r["step"], r.get("loss"), r.get("val_loss")) for r in records]


def test_training_is_bit_identical_with_the_oracle(runs):
    for name in ("adamw", "adaptive"):
        on = read_jsonl(runs / "on" / "metrics" / f"{name}.jsonl")
        off = read_jsonl(runs / "off" / "metrics" / f"{name}.jsonl")
        assert _losses(on) == _losses(off) and len(on) == 12 + 3
    # the monitor's other fields are unchanged too (only the oracle's and the Spec-Sign fields are added)
    a = read_jsonl(runs / "on" / "diagnostics" / "adaptive.jsonl")
    b = read_jsonl(runs / "off" / "diagnostics" / "adaptive.jsonl")
    same = ("step", "layer", "st_A", "dd_winner", "choice", "weight_fro", "update_fro", "update_op")
    assert [[r[k] for k in same] for r in a] == [[r[k] for k in same] for r in b]
    # nr(G) to 1e-8 relative, not bit for bit: on Spec-Sign records the monitor's batched eigensolve of G's
    # float64 Gram also returns eigenvectors (another LAPACK driver; LayerMonitor documents nr(G) to ~1e-8)
    assert [r["nr_G"] for r in a] == pytest.approx([r["nr_G"] for r in b], rel=1e-8)


def test_conv_layers_bit_identical_and_measured(tmp_path):
    """mnist-cnn: conv kernels are probed as (out, in*kh*kw) matrices; training is unchanged by the oracle."""
    for tag, k in (("on", 4), ("off", 0)):
        compare(
            "mnist-cnn",
            ["adaptive"],
            steps=8,
            eval_every=4,
            monitor_every=4,
            oracle_every=k,
            run_dir=tmp_path / tag,
            report=False,
            **QUICK,
        )
    assert _losses(read_jsonl(tmp_path / "on" / "metrics" / "adaptive.jsonl")) == _losses(
        read_jsonl(tmp_path / "off" / "metrics" / "adaptive.jsonl")
    )
    diag = read_jsonl(tmp_path / "on" / "diagnostics" / "adaptive.jsonl")
    assert {d["kind"] for d in diag} == {"Conv2d", "Linear"} and all("measured_winner" in d for d in diag)
    assert any(d["kind"] == "Conv2d" and d["delta_spectral"] > 0 for d in diag)


def test_report_agreement_matches_the_records(runs):
    recs = [d for d in read_jsonl(runs / "on" / "diagnostics" / "adaptive.jsonl") if "measured_winner" in d]
    rows = {r["field"]: r for r in agreement_rows(recs)}
    assert set(rows) == {"dd_winner", "choice", "spec_sign_winner"}
    for field, measured, classes in (
        ("dd_winner", "measured_winner", ("spectral", "frobenius")),
        ("choice", "measured_winner", ("spectral", "frobenius")),
        ("spec_sign_winner", "measured_winner_sign", ("spectral", "linf")),
    ):
        cells = [d for d in recs if d[measured] in classes and d[field] in classes]
        n_spec = sum(d[measured] == "spectral" for d in cells)
        r = rows[field]
        assert r["cells"] == len(cells) and r["agree"] == sum(d[field] == d[measured] for d in cells)
        assert r["always_spectral"] == n_spec and r["majority"] == max(n_spec, len(cells) - n_spec)
    assert rows["choice"]["cells"] == 8  # lm_head is AdamW-routed: its 'adamw' choice is not scored
    assert rows["dd_winner"]["cells"] == 10
    html = (runs / "on" / "report.html").read_text()
    assert "Which geometry wins each layer: adaptive" in html and "geometry_wins_adaptive.png" in html
    assert "Which geometry wins each layer: adamw" not in html
    assert (runs / "on" / "figures" / "geometry_wins_adaptive.png").stat().st_size > 0
    for r in rows.values():
        assert f"{r['always_spectral']}/{r['cells']} = {r['always_spectral'] / r['cells']:.2f}" in html
        assert f"{r['majority_class']}: {r['majority']}/{r['cells']}" in html


def test_resume_with_the_oracle_gives_the_same_records(tmp_path):
    def stop(name, t, loss):
        if t == 7:
            raise KeyboardInterrupt("cut at step 7")

    with pytest.raises(KeyboardInterrupt, match="cut at step 7"):
        compare("charlm", ["adaptive"], run_dir=tmp_path / "cut", oracle_every=6, on_step=stop, **RUN, **QUICK)
    compare("charlm", ["adaptive"], run_dir=tmp_path / "cut", oracle_every=6, resume=True, report=False, **RUN, **QUICK)
    compare("charlm", ["adaptive"], run_dir=tmp_path / "full", oracle_every=6, report=False, **RUN, **QUICK)
    assert read_jsonl(tmp_path / "cut" / "diagnostics" / "adaptive.jsonl") == read_jsonl(
        tmp_path / "full" / "diagnostics" / "adaptive.jsonl"
    )
    with pytest.raises(ConfigError, match="oracle_every"):  # another interval is another run
        compare("charlm", ["adaptive"], run_dir=tmp_path / "cut", oracle_every=12, resume=True, **RUN, **QUICK)
    # a run directory written before the option existed (no oracle_every in config.json) resumes with it off
    cfg_path = tmp_path / "full" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    del cfg["config"]["oracle_every"]
    cfg_path.write_text(json.dumps(cfg))
    r = compare("charlm", ["adaptive"], run_dir=tmp_path / "full", resume=True, report=False, **RUN, **QUICK)
    assert r.rows[0]["steps_done"] == 12


@pytest.mark.parametrize(
    "value, monitor_every, match",
    [
        (-1, 3, "0 \\(off\\) or a positive integer"),
        (True, 3, "positive integer"),
        (2.0, 3, "positive integer"),
        (5, 3, "multiple of monitor_every"),
        (6, 0, "the monitor is off"),
    ],
)
def test_bad_oracle_every_is_a_clear_error(tmp_path, value, monitor_every, match):
    with pytest.raises(ConfigError, match=match):
        compare(
            "charlm",
            ["adaptive"],
            steps=6,
            eval_every=3,
            monitor_every=monitor_every,
            oracle_every=value,
            run_dir=tmp_path / "x",
            **QUICK,
        )
    assert not (tmp_path / "x").exists()  # checked before anything is written


def test_cli_bad_oracle_every(tmp_path, capsys):
    rc = main(
        [
            "compare",
            "--quick",
            "--optimizers",
            "adaptive",
            "--steps",
            "6",
            "--eval-every",
            "3",
            "--monitor-every",
            "3",
            "--oracle-every",
            "4",
            "--out",
            str(tmp_path / "y"),
            "--no-progress",
        ]
    )
    assert rc == 2
    assert "--oracle-every" in capsys.readouterr().err and not (tmp_path / "y").exists()


def test_held_out_stream_is_another_stream_for_every_seed():
    """The held-out batches never repeat the training stream and stay valid seeds up to 2**63 - 1."""
    from steepest.app.compare.runner import HeldOutLoss

    seen = []
    task = type(
        "T",
        (),
        {
            "batch": staticmethod(lambda seed, step: seen.append(seed) or seed),
            "loss": staticmethod(lambda model, b: torch.tensor(float(b))),
        },
    )()
    for seed in (0, 1, 2**31 - 1, 2**31, 2**63 - 1):
        HeldOutLoss(task, torch.nn.Linear(1, 1), seed)()
        assert 0 <= seen[-1] <= 2**63 - 1 and seen[-1] != seed
    assert seen[0] == 2**31 - 1  # seed 0's stream, as the recorded benchmarks used it


def test_time_choosers_get_the_measured_winner_beside_their_knob(tmp_path):
    """The knob entries (time choosers) report per-layer choices too: their records carry the knob a the
    chooser used at the record's step, its geometry of the measured pair (a > 0.5: frobenius), and on the
    oracle steps the measured winner; the report draws the knob's map beside the measured one and scores it."""
    from steepest.app.compare.monitor import knob_geometry
    from steepest.optim.time_choosers import RESOLUTION, dynmuon

    names = ["knob-schedule", "phase-switch"]
    compare("charlm", names, run_dir=tmp_path, oracle_every=6, **RUN, **QUICK)
    layers = ["blocks.0.qkv", "blocks.0.proj", "blocks.0.fc", "blocks.0.fc_proj"]
    for name in names:
        diag = read_jsonl(tmp_path / "diagnostics" / f"{name}.jsonl")
        knobs = json.loads((tmp_path / "knobs" / f"{name}.json").read_text())["records"]
        for d in diag:
            if d["layer"] == "lm_head":  # AdamW-routed: no knob, not scored
                assert d["knob"] is None and d["choice"] == "adamw"
                continue
            assert d["layer"] in layers
            # where the chooser logged this layer's knob at the record's step (its history keeps decision steps
            # only: every 10th for the schedule), the record has that value exactly
            logged = [k["knob"] for k in knobs if k["layer"] == d["layer"] + ".weight" and k["step"] == d["step"]]
            assert logged == [] or d["knob"] == logged[0]
            if name == "knob-schedule":  # the schedule's value at the step, on the chooser's knob grid
                assert d["knob"] == pytest.approx(dynmuon(RUN["steps"]).schedule(d["step"]), abs=RESOLUTION / 2)
            assert d["choice"] == knob_geometry(d["knob"])
        assert any(k["step"] == 0 for k in knobs)  # step 0's knobs were logged, so the check above ran
        oracle = [d for d in diag if d["step"] in (0, 6)]
        assert len(oracle) == 10 and all(d["measured_winner"] in ("spectral", "frobenius", "none") for d in oracle)
        rows = {r["field"]: r for r in agreement_rows([d for d in diag if "measured_winner" in d])}
        assert rows["choice"]["cells"] == sum(d["measured_winner"] != "none" for d in oracle if d["layer"] != "lm_head")
    # knob-schedule: a from 0.25 down (spectral side); phase-switch: a = 1 (frobenius) until it switches
    ks = read_jsonl(tmp_path / "diagnostics" / "knob-schedule.jsonl")
    assert {d["choice"] for d in ks if d["layer"] != "lm_head"} == {"spectral"}
    assert ks[0]["knob"] == pytest.approx(0.25)
    ps = read_jsonl(tmp_path / "diagnostics" / "phase-switch.jsonl")
    assert {d["choice"] for d in ps if d["layer"] != "lm_head" and d["step"] == 0} == {"frobenius"}
    html = (tmp_path / "report.html").read_text()
    for name in names:
        assert f"Which geometry wins each layer: {name}" in html and f"geometry_wins_{name}.png" in html
        assert f"Knob per layer over time: {name}" in html
