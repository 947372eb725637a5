#!/usr/bin/env bash
# Install vegediff with its test tools into .venv (CPU build of torch) and run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh  # .venv made anew when another python3 made it, activated
python -m pip install -q "torch==2.13.0" -e ".[test]"
ruff check vegediff_cli tests benchmarks scripts
python -m pytest -q "$@"
