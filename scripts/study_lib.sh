# Sourced by the study scripts, which run two sweep processes side by side, each pinned to its half of
# the CPUs this process may use (taskset). Unpinned, the two XLA thread pools oversubscribe the cores
# and each run takes about 18 % longer (benchmarks/sweep_processes.py: 63-64 s vs 54 s).
#   source scripts/study_lib.sh DEFAULT_OUT [OUT] [SCALE] [SEEDS] [SWEEP ARGS...]
# sets out, scale (cpu), seeds (3) and the array extra (further arguments for every sweep, e.g.
# --set compare_probe=nystrom).
out=${2:-$1}
scale=${3:-cpu}
seeds=${4:-3}
extra=("${@:5}")
mkdir -p "$out"
start=$(date +%s)
# cpus_a, cpus_b: the two halves ("-": no pinning, with one CPU or no taskset).
read -r cpus_a cpus_b < <(python -c "import os, shutil
c = sorted(os.sched_getaffinity(0)); h = len(c) // 2
ok = h > 0 and shutil.which('taskset')
print(*(','.join(map(str, x)) for x in (c[:h], c[h:])) if ok else '- -')")
# pin CPUS command...: run the command on those CPUs.
pin() { if [ "$1" = - ]; then shift; "$@"; else taskset -c "$@"; fi; }
# finish OUT WHAT PID...: wait for the processes, save the wall time since sourcing to
# OUT/wall_seconds.txt, print it and return the first non-zero exit status.
finish() {
    local out=$1 what=$2 status=0 rc wall
    shift 2
    for p in "$@"; do wait "$p" || { rc=$?; [ $status -ne 0 ] || status=$rc; }; done
    wall=$(( $(date +%s) - start ))
    echo "$wall" > "$out/wall_seconds.txt"
    echo "$what: ${wall} s wall, exit $status; logs in $out/log_*.txt"
    return $status
}
