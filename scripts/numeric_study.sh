#!/usr/bin/env bash
# The paper's numeric study at a scale (default cpu, 3 seeds): the four sweep panels, run as two
# processes side by side (a sweep process keeps about one core busy), written to OUT/<panel>/.
# Prints and saves the total wall time in OUT/wall_seconds.txt.
#   bash scripts/numeric_study.sh [OUT] [SCALE] [SEEDS]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/numeric_study}
scale=${2:-cpu}
seeds=${3:-3}
mkdir -p "$out"
start=$(date +%s)
panel() { python -m mmjax.cli sweep "$1" --scale "$scale" --seeds "$seeds" --out "$out/$1"; }
(panel selection_independent && panel perturbation_independent) > "$out/log_independent.txt" 2>&1 &
a=$!
(panel selection_dependent && panel perturbation_dependent) > "$out/log_dependent.txt" 2>&1 &
b=$!
status=0
wait $a || status=$?
wait $b || status=$?
wall=$(( $(date +%s) - start ))
echo "$wall" > "$out/wall_seconds.txt"
echo "four panels ($scale scale, $seeds seeds): ${wall} s wall, exit $status; logs in $out/log_*.txt"
exit $status
