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
from steepest._io import (  # noqa: F401 (re-exported)
    FileTooLarge,
    append_jsonl,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    read_bytes_limited,
    read_jsonl,
)
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


# ---------------------------------------------------------------------------------------- configs
class ConfigError(ValueError):
    """A bad configuration key or value (the CLI turns it into exit code 2)."""


#: Largest configuration file read (``--config``): far above any real one, so /dev/zero fails at once.
MAX_CONFIG_BYTES = 2**20


#: Most torch threads a command accepts (``--threads``): far above any machine's cores; a typo such as
#: 100000 would otherwise start that many OpenMP threads.
MAX_THREADS = 1024


class _PlainLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without aliases (``*name``): a configuration never needs them, and nested
    aliases expand exponentially when the values are walked (a "billion laughs" file of a few lines)."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not accepted in a configuration", self.peek_event().start_mark
            )
        return super().compose_node(parent, index)


def load_yaml(text: str, what: str) -> Any:
    """The application's one YAML reader: safe YAML (plain data, no Python objects) without aliases;
    ConfigError naming ``what`` (an option or a file) and the position of a syntax error."""
    try:
        return yaml.load(text, Loader=_PlainLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        detail = " ".join(str(e).split())
        raise ConfigError(f"{what}: not valid YAML ({detail[:300]})") from None


def read_mapping(path: str | os.PathLike) -> dict:
    """The mapping in the YAML or TOML (``.toml``) configuration file ``path`` ({} when empty).

    ConfigError naming the file when it is missing, not a regular file, larger than
    :data:`MAX_CONFIG_BYTES`, not UTF-8, not valid YAML/TOML, or not a mapping.
    """
    path = Path(path)
    try:
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        if path.is_dir():
            raise ConfigError(f"config file {path} is a directory; give a YAML or TOML file")
        text = read_bytes_limited(path, MAX_CONFIG_BYTES).decode("utf-8")
    except FileTooLarge as e:
        raise ConfigError(f"config file {e}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text; give a YAML or TOML file") from None
    except OSError as e:  # a name too long, a permission
        raise ConfigError(f"config file {str(path)[:200]} cannot be read ({e.strerror})") from None
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path}: not valid TOML ({e})") from None
    else:
        data = load_yaml(text, f"config file {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    return data


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
        parsed = load_yaml(value, f"value {value!r}") if value.strip().startswith("[") else value.split(",")
        if not isinstance(parsed, (list, tuple)):
            raise ConfigError(f"expected a list, got {value!r}")
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
    return load_yaml(value, f"value {value!r}")


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
        cfg = apply_overrides(cfg, read_mapping(path))
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return cfg
