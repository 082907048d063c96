#!/usr/bin/env bash
# The test suite (fast tests; `bash scripts/test.sh -m slow` runs the slow end-to-end ones).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pytest -q "$@"
