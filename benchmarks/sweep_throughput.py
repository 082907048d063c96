#!/usr/bin/env python
"""A vmapped chunk of N synthetic runs against one compiled scan per config, on this machine.

    python benchmarks/sweep_throughput.py            # N = 1, 8, 64, 256, 1024 (about 10 min on 2 cores)
    python benchmarks/sweep_throughput.py --quick    # N = 1, 8, 64 and fewer steps (about 3 min)

The baseline is what a user would otherwise run: `jax.jit(run.train)` compiled once, one `lax.scan`
run per config, configs one after another. The candidate is what `mmjax sweep` runs: one
`jax.jit(jax.vmap(run.train))` call per chunk of N configs. Both use the cpu recipe
(`base_config("cpu")`: widths 64,64, batch 256, LpSimCLR, batch-standardised outputs).

Every measurement runs in a fresh subprocess (no compile cache, clean memory counters), the
baseline alternating with the chunk sizes, and prints one table:

- compile seconds of `jit(vmap(run.train)).lower(...).compile()` and its compile memory: the
  growth of the process's peak RSS during compile (VmHWM reset through /proc/self/clear_refs),
  beside XLA's `memory_analysis()` temp bytes of the compiled program (run memory);
- the instruction count of the optimised HLO (does the program grow with N?);
- ms per config-step after compile, over `--work` config-steps per measurement (N × steps), and
  the baseline's ms per config-step measured next to it; their ratio (> 1: the chunk is faster).

A row whose run would exceed `--budget` seconds is timed on fewer steps (same per-step cost) and
its compile still measured; nothing is extrapolated unless marked `*`.

A second table compiles (never runs) the per-seed world draw, vmapped over N seeds as the sweep
did before, beside one seed at a time as it does now: XLA's temp bytes of each program.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

from tables import fmt, table  # benchmarks/tables.py (this folder is on sys.path)


def _peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def child(mode: str, n: int, steps: int) -> dict:
    """One measurement in this (fresh) process; returns a JSON-able dict."""
    import jax
    import jax.numpy as jnp

    from mmjax.configs.numeric import base_config
    from mmjax.train.sweep import build_run

    # The world's values do not change the cost of a train step; a small candidate search keeps
    # its draw (and its temporaries) out of the compile-memory reading.
    cfg = base_config("cpu", steps=steps, log_every=min(100, steps), cond_samples=500, cond_rank=5)
    static = cfg.to_static()
    run = build_run(static)
    world = jax.jit(static.draw_world)(jax.random.key(0))
    p1 = cfg.to_params()
    if mode == "scan":
        fn, args = jax.jit(run.train), (p1, world, jax.random.key(0))
    else:
        batch = lambda x: jnp.broadcast_to(x, (n,) + jnp.shape(x))
        keys = jax.vmap(jax.random.key)(jnp.arange(n))
        fn = jax.jit(jax.vmap(run.train))
        args = (jax.tree.map(batch, p1), jax.tree.map(batch, world), keys)
    jax.block_until_ready(args)
    _reset_peak()  # VmHWM := current RSS, so the peak below is the compile's own
    before = _peak_rss_mb()
    t = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t
    peak = _peak_rss_mb()
    hlo = compiled.as_text()
    ops = sum(1 for line in hlo.splitlines() if " = " in line and "(" in line)
    temp = compiled.memory_analysis().temp_size_in_bytes
    jax.block_until_ready(compiled(*args))  # warm-up
    reps = n if mode == "scan" else 1
    t = time.perf_counter()
    for i in range(reps):
        if mode == "scan":
            out = compiled(p1, world, jax.random.key(i))
        else:
            out = compiled(*args)
    jax.block_until_ready(out)
    run_s = time.perf_counter() - t
    return {"mode": mode, "n": n, "steps": steps, "compile_s": compile_s,
            "compile_mem_mb": peak - before, "temp_mb": temp / 2**20, "hlo_ops": ops,
            "ms_per_config_step": 1e3 * run_s / (n * steps), "run_s": run_s,
            "device": jax.devices()[0].device_kind, "backend": jax.default_backend()}


def world_child(n: int) -> dict:
    import jax
    import jax.numpy as jnp

    from mmjax.configs.numeric import base_config

    static = base_config("cpu").to_static()
    keys = jax.vmap(jax.random.key)(jnp.arange(n))
    vm = jax.jit(jax.vmap(static.draw_world)).lower(keys).compile().memory_analysis()
    one = jax.jit(static.draw_world).lower(keys[0]).compile().memory_analysis()
    return {"n": n, "vmapped_temp_mb": vm.temp_size_in_bytes / 2**20,
            "one_temp_mb": one.temp_size_in_bytes / 2**20}


def _spawn(*argv: str) -> dict:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", *argv], env=env, capture_output=True,
                         text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"child {argv} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = 1, 8, 64 with less work per measurement")
    ap.add_argument("--sizes", default=None, help="comma-separated chunk sizes N (default 1,8,64,256,1024)")
    ap.add_argument("--work", type=int, default=None,
                    help="config-steps per timed measurement (default 16000, --quick 4000)")
    ap.add_argument("--budget", type=float, default=60.0, help="longest timed run, seconds")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, *rest = args.child
        res = world_child(int(rest[0])) if kind == "world" else child(kind, int(rest[0]), int(rest[1]))
        print(json.dumps(res))
        return
    sizes = [int(s) for s in (args.sizes or ("1,8,64" if args.quick else "1,8,64,256,1024")).split(",")]
    work = args.work or (4000 if args.quick else 16000)
    print(f"sweep_throughput: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"load average {', '.join(f'{x:.1f}' for x in os.getloadavg())}; XLA_FLAGS="
          f"{os.environ.get('XLA_FLAGS', '')!r}")
    rows, device = [], ""
    scan_steps = max(20, work // 4)
    for n in sizes:
        steps = max(10, work // n)
        base = _spawn("scan", "4", str(scan_steps))  # 4 configs one after another: the baseline
        vm = _spawn("vmap", str(n), str(steps))
        device = f"{vm['backend']} ({vm['device']})"
        rows.append([n, steps, fmt(vm["compile_s"]), fmt(vm["compile_mem_mb"]), fmt(vm["temp_mb"]),
                     vm["hlo_ops"], fmt(vm["ms_per_config_step"]), fmt(base["ms_per_config_step"]),
                     fmt(base["ms_per_config_step"] / vm["ms_per_config_step"]), fmt(base["compile_s"])])
        print(f"  N={n}: compile {vm['compile_s']:.1f} s, {vm['ms_per_config_step']:.3f} ms/config-step; "
              f"scan per config {base['ms_per_config_step']:.3f}", flush=True)
    first = rows[0]
    table(f"Vmapped chunk of N configs vs one compiled scan per config (cpu recipe), {device}",
          ["N", "steps", "compile s", "compile MB", "temp MB", "HLO ops", "ms/config-step",
           "scan ms/config-step", "ratio", "scan compile s"], rows,
          [f"compile s at the largest N / at N={first[0]}: "
           f"{float(rows[-1][2]) / float(first[2]):.2f}x",
           "compile MB = growth of peak RSS during compile; temp MB = XLA's temp buffers of the compiled "
           "program (run memory).",
           f"steps = {work} config-steps / N (at least 10) per chunk; the baseline runs 4 configs x "
           f"{scan_steps} steps with jit(run.train), measured in its own process right before each row.",
           "ratio = scan ms/config-step / chunk ms/config-step (> 1: the vmapped chunk is faster)."])
    wrows = []
    for n in [s for s in sizes if s <= 64]:
        w = _spawn("world", str(n))
        wrows.append([n, fmt(w["vmapped_temp_mb"]), fmt(w["one_temp_mb"])])
    table("Per-seed world draw (cpu recipe, 25 000 candidate mixings per layer): XLA temp MB, compiled only",
          ["seeds N", "vmap over N seeds", "one seed at a time (the sweep now)"], wrows)


if __name__ == "__main__":
    main()
