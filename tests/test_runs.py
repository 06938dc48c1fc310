"""Run directories: configs with overrides, environment, HTML report (atomic files: tests/test_io.py)."""

from __future__ import annotations

import dataclasses

import pytest

from steepest.app import runs
from steepest.app.report import Section, write_report


@dataclasses.dataclass
class Cfg:
    steps: int = 10
    lr: float = 0.1
    name: str = "a"
    quick: bool = False
    widths: tuple[int, ...] = (8, 16)
    p: float | None = None


def test_overrides_are_typed_and_bad_keys_are_clear():
    cfg = runs.apply_overrides(Cfg(), ["steps=5", "lr=1e-3", "quick=true", "widths=[4,8]", "p=none"])
    assert cfg == Cfg(steps=5, lr=1e-3, quick=True, widths=(4, 8), p=None)
    assert runs.apply_overrides(Cfg(), {"p": "2.5"}).p == 2.5
    with pytest.raises(runs.ConfigError, match="unknown config key 'step'.*valid keys: lr, name, p, quick, steps"):
        runs.apply_overrides(Cfg(), ["step=5"])
    with pytest.raises(runs.ConfigError, match="expected int"):
        runs.apply_overrides(Cfg(), ["steps=five"])
    with pytest.raises(runs.ConfigError, match="key=value"):
        runs.apply_overrides(Cfg(), ["steps"])


def test_load_config_from_yaml_and_toml(tmp_path):
    (tmp_path / "c.yaml").write_text("steps: 7\nname: b\n")
    (tmp_path / "c.toml").write_text('steps = 9\nname = "c"\n')
    assert runs.load_config(Cfg, tmp_path / "c.yaml", ["lr=0.5"]) == Cfg(steps=7, name="b", lr=0.5)
    assert runs.load_config(Cfg, tmp_path / "c.toml").steps == 9
    with pytest.raises(runs.ConfigError, match="does not exist"):
        runs.load_config(Cfg, tmp_path / "missing.yaml")


def test_environment_names_versions():
    env = runs.environment()
    assert env["torch"].startswith("2.") and env["threads"] >= 1 and env["steepest"]


def test_report_renders_tables_and_relative_figures(tmp_path):
    (tmp_path / "fig.png").write_bytes(b"\x89PNG")
    out = write_report(
        tmp_path / "report.html",
        "T",
        [
            Section(
                "Claims",
                text=["x < y"],
                tables=[(["claim", "verdict"], [["a", "holds"], ["b", "fails"]])],
                figures=[str(tmp_path / "fig.png")],
            ),
        ],
    )
    html = out.read_text()
    assert '<td class="holds">holds</td>' in html and '<td class="fails">fails</td>' in html
    assert "src='fig.png'" in html and "x &lt; y" in html


@dataclasses.dataclass
class Pair:
    band: tuple[float, float] = (1.0, 2.0)


def test_file_values_are_checked_against_the_field_types():
    """Values from a YAML/TOML file arrive typed; they are checked, not passed through (issue 13: steps: 5.5)."""
    ok = runs.apply_overrides(Cfg(), {"steps": 5.0, "lr": 1, "widths": [4, 8], "p": None, "quick": True})
    assert ok == Cfg(steps=5, lr=1.0, widths=(4, 8), p=None, quick=True) and type(ok.steps) is int
    for data, message in [
        ({"steps": 5.5}, "config key steps: expected int, got 5.5"),
        ({"steps": True}, "config key steps: expected int, got True"),
        ({"lr": "fast"}, "config key lr: expected float, got 'fast'"),
        ({"name": 3}, "config key name: expected str, got 3"),
        ({"quick": 1}, "config key quick: expected a boolean, got 1"),
        ({"widths": [4, 8.5]}, "config key widths: expected int, got 8.5"),
        ({"widths": 4}, "config key widths: expected a list, got 4"),
        ({"p": [1]}, "config key p: cannot use [1]"),
    ]:
        with pytest.raises(runs.ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
            runs.apply_overrides(Cfg(), data)
    assert runs.apply_overrides(Pair(), {"band": [0.5, 3]}).band == (0.5, 3.0)
    with pytest.raises(runs.ConfigError, match="config key band: expected 2 items, got 3"):
        runs.apply_overrides(Pair(), {"band": [1, 2, 3]})


def test_string_override_errors_name_the_key():
    with pytest.raises(runs.ConfigError, match="config key steps: expected int, got 'five'"):
        runs.apply_overrides(Cfg(), ["steps=five"])


def test_one_yaml_loader_reads_plain_data_only(tmp_path):
    from steepest.app.runs import ConfigError, load_yaml, read_mapping

    assert load_yaml("a: [1, 2.5, x]", "--set a") == {"a": [1, 2.5, "x"]}
    with pytest.raises(ConfigError, match=r"--set a: not valid YAML .*could not determine a constructor"):
        load_yaml("!!python/object/apply:os.system ['true']", "--set a")  # no Python objects
    with pytest.raises(ConfigError, match=r"--set a: not valid YAML .*aliases \(\*name\) are not accepted"):
        load_yaml("a: &x [1]\nb: *x", "--set a")
    with pytest.raises(ConfigError, match=r"--task-opt n: not valid YAML"):
        load_yaml("[1,", "--task-opt n")
    (tmp_path / "c.toml").write_text("steps = ")
    with pytest.raises(ConfigError, match=r"c.toml: not valid TOML"):
        read_mapping(tmp_path / "c.toml")
    (tmp_path / "c.yaml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="c.yaml is not UTF-8 text"):
        read_mapping(tmp_path / "c.yaml")
    (tmp_path / "empty.yaml").write_text("")
    assert read_mapping(tmp_path / "empty.yaml") == {}
