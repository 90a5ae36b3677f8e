#!/usr/bin/env bash
# Set up .venv with the dev tools, then lint and run the test suite (CPU, no data or GPU needed).
set -euo pipefail
cd "$(dirname "$0")"
bash setup.sh --dev
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
