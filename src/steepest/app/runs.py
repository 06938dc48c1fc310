"""Run directories, environment capture and dataclass configs with overrides (atomic files: :mod:`steepest._io`).

Shared by ``steepest reproduce``, ``steepest compare`` and the benchmarks, so every result on disk has
the same shape: ``<run dir>/config.json``, ``environment.json``, metrics JSONL, PNG figures, a report.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import subprocess
import sys
import time
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

import torch
import yaml

import steepest
from steepest._io import append_jsonl, atomic_write_bytes, atomic_write_json, atomic_write_text, read_jsonl  # noqa: F401 (re-exported)
from steepest.linalg.precision import auto_report


# ---------------------------------------------------------------------------------------- environment
def cpu_kind() -> dict:
    """``cpu_model`` and ``cpu_bf16_flags`` (which of avx512_bf16 / amx_bf16 / avx2 the CPU reports) from
    /proc/cpuinfo, as ``lscpu`` shows them: bf16 speed depends on them (REFERENCE 3b). Empty off Linux."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return {}
    model = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")), None)
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return {"cpu_model": model, "cpu_bf16_flags": [f for f in ("avx512_bf16", "amx_bf16", "avx2") if f in flags]}


def environment() -> dict:
    """Versions, git sha, device and thread count: what a reader needs to reproduce a number."""
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        **cpu_kind(),
        # what dtype="auto" (Muon's default) runs Newton-Schulz in here, and why
        "auto_dtype": auto_report(["cpu"] + (["cuda"] if torch.cuda.is_available() else [])),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    try:
        env["steepest"] = steepest.__version__
        root = Path(steepest.__file__).resolve().parents[2]
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        env["git_sha"] = sha.stdout.strip() or None
    except Exception:  # not a git checkout: leave it out rather than fail a run
        env["git_sha"] = None
    return env


def make_run_dir(base: str | os.PathLike, name: str, *, exist_ok: bool = True) -> Path:
    """``base/name`` created if needed (reused when it exists, so interrupted runs can resume)."""
    run = Path(base) / name
    run.mkdir(parents=True, exist_ok=exist_ok)
    return run


# ---------------------------------------------------------------------------------------- configs
class ConfigError(ValueError):
    """A bad configuration key or value (the CLI turns it into exit code 2)."""


def _coerce(value: str, typ) -> Any:
    origin = typing.get_origin(typ)
    if typ is bool:
        low = value.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"expected a boolean, got {value!r}")
    if typ in (int, float, str):
        try:
            return typ(value)
        except ValueError as e:
            raise ConfigError(f"expected {typ.__name__}, got {value!r}") from e
    if origin in (list, tuple) or typ in (list, tuple):
        args = typing.get_args(typ)
        inner = args[0] if args else str
        parsed = yaml.safe_load(value) if value.strip().startswith("[") else value.split(",")
        items = [(_coerce(str(v), inner) if inner is not Ellipsis else v) for v in parsed]
        return tuple(items) if (origin is tuple or typ is tuple) else items
    if origin is typing.Union or origin is types.UnionType:
        args = tuple(a for a in typing.get_args(typ) if a is not type(None))
        if value.lower() in ("none", "null"):
            return None
        for a in args:
            try:
                return _coerce(value, a)
            except ConfigError:
                continue
        raise ConfigError(f"cannot parse {value!r} as {typ}")
    return yaml.safe_load(value)


def _check_value(value: Any, typ) -> Any:
    """A value from a YAML/TOML file (already typed) checked against the field type ``typ``.

    int fields take ints (a float with an integral value, e.g. 5.0, becomes 5; 5.5 is refused), float
    fields ints or floats, str fields strings, bool fields booleans; lists/tuples are checked item by
    item; Optional/Union fields take None or any member type. Other annotations pass unchecked.
    """
    origin = typing.get_origin(typ)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"expected a boolean, got {value!r}")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"expected int, got {value!r}")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"expected float, got {value!r}")
    if typ is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"expected str, got {value!r}")
    if origin in (list, tuple) or typ in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"expected a list, got {value!r}")
        every = typing.get_args(typ)
        args = [a for a in every if a is not Ellipsis]
        if len(args) == 1 or Ellipsis in every:  # list[T], tuple[T, ...]: every item a T
            items = [_check_value(v, args[0]) for v in value]
        elif args:  # tuple[A, B]: exactly those
            if len(value) != len(args):
                raise ConfigError(f"expected {len(args)} items, got {len(value)}")
            items = [_check_value(v, a) for v, a in zip(value, args)]
        else:
            items = list(value)
        return tuple(items) if (origin is tuple or typ is tuple) else items
    if origin is typing.Union or origin is types.UnionType:
        if value is None and type(None) in typing.get_args(typ):
            return None
        for a in (a for a in typing.get_args(typ) if a is not type(None)):
            try:
                return _check_value(value, a)
            except ConfigError:
                continue
        raise ConfigError(f"cannot use {value!r} as {typ}")
    return value


def apply_overrides(cfg, overrides: dict[str, Any] | list[str]):
    """Return a copy of dataclass ``cfg`` with ``overrides`` applied.

    ``overrides`` is a dict or a list of ``"key=value"`` strings (values parsed by the field's type).
    An unknown key or a bad value raises :class:`ConfigError` naming the valid keys.
    """
    if isinstance(overrides, (list, tuple)):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"--set expects key=value, got {item!r}")
            k, v = item.split("=", 1)
            pairs[k.strip()] = v.strip()
        overrides = pairs
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(sorted(names))}")
        try:
            changes[key] = _coerce(value, hints[key]) if isinstance(value, str) else _check_value(value, hints[key])
        except ConfigError as e:
            raise ConfigError(f"config key {key}: {e}") from None
    try:
        return dataclasses.replace(cfg, **changes)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from e


def load_config(cls, path: str | os.PathLike | None = None, overrides=None):
    """Build dataclass ``cls`` from defaults, then a YAML/TOML file, then ``key=value`` overrides."""
    cfg = cls()
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
        if not isinstance(data, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values")
        cfg = apply_overrides(cfg, {k: v for k, v in data.items()})
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return cfg
