#!/usr/bin/env bash
# The whole test suite with the services some tests need (Chromium, a throwaway PostgreSQL; see
# scripts/test-services.sh): what CI runs. Extra arguments go to pytest.
cd "$(dirname "$0")/.."
# shellcheck source=scripts/test-services.sh
source scripts/test-services.sh
.venv/bin/python -m pytest -q "$@"
