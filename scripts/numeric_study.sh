#!/usr/bin/env bash
# The paper's numeric study at a scale (default cpu, 3 seeds): the four sweep panels, run as two
# processes side by side, each pinned to its half of the CPUs (taskset; unpinned, the two XLA thread
# pools oversubscribe the cores and each step runs ~15 % slower), written to OUT/<panel>/.
# Chunks of 5 runs split every panel's groups with at most one padded slot.
# Prints and saves the total wall time in OUT/wall_seconds.txt.
#   bash scripts/numeric_study.sh [OUT] [SCALE] [SEEDS]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/numeric_study}
scale=${2:-cpu}
seeds=${3:-3}
mkdir -p "$out"
start=$(date +%s)
# The CPUs this process may use, split in two halves ("-": no pinning, with one CPU or no taskset).
read -r cpus_a cpus_b < <(python -c "import os, shutil
c = sorted(os.sched_getaffinity(0)); h = len(c) // 2
ok = h > 0 and shutil.which('taskset')
print(*(','.join(map(str, x)) for x in (c[:h], c[h:])) if ok else '- -')")
pin() { if [ "$1" = - ]; then shift; "$@"; else taskset -c "$@"; fi; }
panel() { pin "$1" python -m mmjax.cli sweep "$2" --scale "$scale" --seeds "$seeds" --chunk 5 \
            --out "$out/$2"; }
(panel "$cpus_a" selection_independent && panel "$cpus_a" perturbation_independent) \
    > "$out/log_independent.txt" 2>&1 &
a=$!
(panel "$cpus_b" selection_dependent && panel "$cpus_b" perturbation_dependent) \
    > "$out/log_dependent.txt" 2>&1 &
b=$!
status=0
wait $a || status=$?
wait $b || status=$?
wall=$(( $(date +%s) - start ))
echo "$wall" > "$out/wall_seconds.txt"
echo "four panels ($scale scale, $seeds seeds): ${wall} s wall, exit $status; logs in $out/log_*.txt"
exit $status
