#!/usr/bin/env bash
# The image-text misalignment study (Cai et al., arXiv 2504.10143) at a scale (default cpu, 3 seeds):
# the selection and the perturbation panel as two processes side by side, each pinned to half the CPUs
# (scripts/study_lib.sh), written to OUT/<panel>/. Chunks of 5 runs: 15 runs per panel, no padding.
# Prints and saves the total wall time in OUT/wall_seconds.txt.
#   bash scripts/image_text_study.sh [OUT] [SCALE] [SEEDS]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/study_lib.sh runs/image_text_study "$@"
panel() { pin "$1" python -m mmjax.cli sweep "$2" --scale "$scale" --seeds "$seeds" --chunk 5 \
            --out "$out/$2" > "$out/log_$2.txt" 2>&1; }
panel "$cpus_a" image_text_selection &
a=$!
panel "$cpus_b" image_text_perturbation &
finish "$out" "image-text study ($scale scale, $seeds seeds)" $a $!
