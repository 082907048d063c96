#!/usr/bin/env python
"""Two sweep processes side by side, unpinned vs each pinned to half the CPUs (what the study scripts do).

    python benchmarks/sweep_processes.py           # 2 x 4 runs of 3000 steps, both ways (~4 min on 2 cores)
    python benchmarks/sweep_processes.py --quick   # 2 x 2 runs of 300 steps

Each process runs one vmapped chunk of synthetic runs (cpu-scale encoders, rho = [5] and [9], its own
seeds, `--steps` steps, MLP-probe evaluation included) through `run_sweep`, first with both processes
free to use every CPU, then with each pinned by `taskset` to its half (scripts/study_lib.sh). Printed per
mode: the wall time of the pair, and per process the compile and run seconds that `run_sweep` records.
The ratio is unpinned over pinned wall time. XLA's CPU thread pool sizes itself to all the machine's
cores, so two unpinned processes run twice as many busy threads as there are cores.
Pinned, each compile gets fewer cores: `--quick` is compile-bound and comes out slower pinned.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def worker(out: Path, seeds: list[int], steps: int) -> None:
    """One process: the chunk of runs, its compile and run seconds written to out/record.json."""
    from mmjax.configs.numeric import make_settings
    from mmjax.train.sweep import Experiment, run_sweep

    cases = [(f"rho=[{k}]", dict(theta=tuple(range(1, 11)), rho=tuple(range(1, k + 1)))) for k in (5, 9)]
    exp = Experiment("bench", make_settings("cpu", {"steps": str(steps)}, cases, dependent=False))
    rec = run_sweep(exp, out, seeds, chunk_size=2 * len(seeds))
    groups = rec["groups"]
    (out / "record.json").write_text(json.dumps({
        "compile": sum(g["compile_seconds"] for g in groups), "run": sum(g["run_seconds"] for g in groups)}))


def pair(pinned: bool, seeds_per: int, steps: int, tmp: Path) -> tuple[float, list[dict]]:
    """Wall time of two worker processes started together, and their records."""
    cpus = sorted(os.sched_getaffinity(0))
    half = len(cpus) // 2
    halves = [cpus[:half], cpus[half:]]
    procs, outs = [], []
    start = time.perf_counter()
    for i in range(2):
        out = tmp / f"{'pinned' if pinned else 'free'}{i}"
        seeds = ",".join(str(i * seeds_per + s) for s in range(seeds_per))
        cmd = [sys.executable, __file__, "--worker", str(out), "--seeds", seeds, "--steps", str(steps)]
        if pinned:
            cmd = ["taskset", "-c", ",".join(map(str, halves[i]))] + cmd
        procs.append(subprocess.Popen(cmd))
        outs.append(out)
    if any(p.wait() for p in procs):
        sys.exit("a worker failed")
    wall = time.perf_counter() - start
    return wall, [json.loads((o / "record.json").read_text()) for o in outs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seeds", default="0", help=argparse.SUPPRESS)
    args = parser.parse_args()
    steps = args.steps or (300 if args.quick else 3000)
    if args.worker:
        worker(Path(args.worker), [int(s) for s in args.seeds.split(",")], steps)
        return
    if len(os.sched_getaffinity(0)) < 2 or not shutil.which("taskset"):
        sys.exit("needs at least 2 CPUs and taskset")
    seeds_per = 1 if args.quick else 2
    print(f"2 processes x {2 * seeds_per} runs of {steps} steps (cpu-scale encoders), "
          f"{len(os.sched_getaffinity(0))} CPUs")
    walls = {}
    with tempfile.TemporaryDirectory() as tmp:
        for pinned in (False, True):
            name = "pinned to halves" if pinned else "unpinned"
            wall, recs = pair(pinned, seeds_per, steps, Path(tmp))
            walls[pinned] = wall
            per = ", ".join(f"compile {r['compile']:.0f} s + run {r['run']:.0f} s" for r in recs)
            print(f"{name:>17}: {wall:6.1f} s wall  ({per})")
    print(f"ratio unpinned / pinned wall: {walls[False] / walls[True]:.2f}")


if __name__ == "__main__":
    main()
