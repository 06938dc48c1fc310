#!/usr/bin/env bash
# steepest on one CUDA device: zoo step tests, bf16 polar accuracy, polar time vs the bf16 matmul rate,
# Muon step vs torch.optim.Muon (and installed peers) on the GPT-like set, peak memory, dtype per size.
# One JSON: benchmarks/results/gpu.json (or --out PATH). Budget: under 8 minutes on one H100 (the script
# is cut at 470 s; every finished section is already in the JSON). See benchmarks/gpu.py for each section.
#
#   bash benchmarks/gpu.sh                       # full run (needs CUDA)
#   bash benchmarks/gpu.sh --sections polar,step # a subset
#   bash benchmarks/gpu.sh --smoke               # tiny sizes; on the CPU when no GPU (what the tests run)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"   # one device
"$PY" -c "import torch; print('torch', torch.__version__, '| cuda available:', torch.cuda.is_available(), '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
exec timeout --signal=INT --kill-after=10 470 "$PY" benchmarks/gpu.py "$@"
