#!/usr/bin/env bash
# The paper's numeric study at a scale (default cpu, 3 seeds): the four sweep panels, run as two
# processes side by side, each pinned to half the CPUs (scripts/study_lib.sh), written to OUT/<panel>/.
# Chunks of 5 runs split every panel's groups with at most one padded slot.
# Prints and saves the total wall time in OUT/wall_seconds.txt.
#   bash scripts/numeric_study.sh [OUT] [SCALE] [SEEDS] [SWEEP ARGS...]
# e.g. bash scripts/numeric_study.sh runs/numeric_study cpu 3 --set compare_probe=nystrom
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/study_lib.sh runs/numeric_study "$@"
panel() { pin "$1" python -m mmjax.cli sweep "$2" --scale "$scale" --seeds "$seeds" --chunk 5 \
            --out "$out/$2" "${extra[@]}"; }
(panel "$cpus_a" selection_independent && panel "$cpus_a" perturbation_independent) \
    > "$out/log_independent.txt" 2>&1 &
a=$!
(panel "$cpus_b" selection_dependent && panel "$cpus_b" perturbation_dependent) \
    > "$out/log_dependent.txt" 2>&1 &
finish "$out" "four panels ($scale scale, $seeds seeds)" $a $!
