#!/usr/bin/env bash
# Set up lifelora in ./.venv (idempotent). torch is pinned first so that machines whose pip finds a
# local CPU build of torch 2.13.0 take it instead of the multi-GB CUDA wheels; elsewhere the pin
# resolves to PyPI's normal build (CUDA on Linux). Override with TORCH_SPEC, e.g.
#   TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu" bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  # shellcheck disable=SC2086
  $PIP install --quiet ${TORCH_SPEC:-torch==2.13.0}
fi
$PIP install --quiet -e ".[dev]"
