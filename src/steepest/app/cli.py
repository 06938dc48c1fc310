"""The ``steepest`` command: ``steepest compare | sweep | reproduce``.

Each subcommand is a module of :mod:`steepest.app.commands` with ``register(subparsers)``; the CLI
imports them when it starts (the library, ``import steepest``, never does). Every subcommand names its
output directory with ``--out DIR``. Exit codes: 0 success, 1 a run failed (an experiment or a
training run raised), 2 bad usage or configuration (with a message saying what to do), 130
interrupted (Ctrl-C), 143 terminated (SIGTERM, as ``kill``, docker and systemd send); in both cases
finished work is saved and a rerun resumes it. ``python -m steepest.app.cli`` runs it too.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from steepest.app.guard import Terminated, handle_sigterm

#: Subcommand modules, in the order ``steepest --help`` lists them.
COMMANDS = ("compare", "sweep", "reproduce")


def _version() -> str:
    """``steepest --version``: the package's version, and torch's (the results depend on both)."""
    import torch

    import steepest

    return f"steepest {steepest.__version__} (torch {torch.__version__})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="steepest",
        description="Steepest descent under matrix norms: compare geometries, reproduce the seed results.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"steepest.app.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"steepest.app.commands.{name}":
                continue  # subcommand not installed in this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with handle_sigterm():
            return int(args.func(args) or 0)
    except Terminated:
        print("terminated (SIGTERM); finished work is saved and a rerun (--resume) continues it", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("interrupted; finished work is saved and a rerun resumes it", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
