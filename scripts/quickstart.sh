#!/usr/bin/env bash
# Installs mmjax (and its test extras) if needed, then runs the main job on built-in defaults:
# the independent selection sweep at CPU scale (one seed), writing results.csv, sweep.json and
# heatmap.png under runs/quickstart. Extra arguments go to `mmjax sweep`.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! python -c "import mmjax, jax, flax, optax, sklearn" >/dev/null 2>&1; then
  python -m pip install --quiet -e ".[test]"
fi
exec python -m mmjax.cli sweep selection_independent --scale cpu --seeds 1 --out runs/quickstart "$@"
