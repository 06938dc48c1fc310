"""Command-line subcommands. Each module defines ``register(subparsers)`` that adds its parser and sets
``func(args) -> int`` (the exit code)."""
