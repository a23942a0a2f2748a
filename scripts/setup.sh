#!/usr/bin/env bash
# Set up lifelora in ./.venv (idempotent). torch is pinned first so that machines whose pip finds a
# local CPU build of torch 2.13.0 take it instead of the multi-GB CUDA wheels; elsewhere the pin
# resolves to PyPI's normal build (CUDA on Linux). Override with TORCH_SPEC, e.g.
#   TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu" bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
say() { echo "setup: $*" >&2; }
if [ -x .venv/bin/python ]; then
  say "using the existing .venv"
else
  say "creating .venv with $PYTHON"
  "$PYTHON" -m venv .venv
fi
PIP=".venv/bin/python -m pip"
if .venv/bin/python -c "import torch" 2>/dev/null; then
  say "torch already installed"
else
  say "installing ${TORCH_SPEC:-torch==2.13.0} (the largest download: a minute or more)"
  # shellcheck disable=SC2086
  $PIP install --quiet ${TORCH_SPEC:-torch==2.13.0}
fi
say "installing lifelora and its dependencies (pip install -e .[dev])"
$PIP install --quiet -e ".[dev]"
say "done: .venv/bin/lifelora --help"
