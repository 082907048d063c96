#!/usr/bin/env python
"""Throughput of vmapped synthetic sweeps versus a Python loop, on this machine's CPU.

    python benchmarks/sweep_throughput.py            # default run (a few minutes)
    python benchmarks/sweep_throughput.py --quick    # smoke check (well under a minute of work)

Prints plain-text tables:

1. Large-matmul GFLOP/s: XLA-CPU (jit of a @ b, 2048² float32, and one paper-width layer) beside
   numpy's BLAS, measured interleaved in one process; then the same measurement in a fresh
   subprocess per candidate XLA setting (XLA_FLAGS must be set before jax starts), to find a
   setting that closes any gap.
2. For the `cpu` and `paper` encoder sizes: configs×steps/s, analytic matmul GFLOP/s and compile
   time for N configs trained at once with `jax.jit(jax.vmap(run.train))`, beside the same work
   done one config at a time by a Python loop over a jitted single train step. Rows whose run
   would exceed the time/memory budget are extrapolated and marked.
3. Time to evaluate R² (`run.evaluate`, cpu-scale eval settings) for 120 trained models,
   extrapolated from one vmapped chunk.

Library code is used as is (`make_run`, `make_train_step`, the simulator and losses); the loop
baseline rebuilds `make_run`'s loss from the same public pieces and is checked against
`run.train` (same init, same keys) before it is timed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time

import numpy as np
from tables import fmt, table  # benchmarks/tables.py (this folder is on sys.path)

# Candidate settings for XLA-CPU's dot performance: (label, XLA_FLAGS, extra env). All flags were
# found in this jaxlib's flag table (strings of libjax_common.so); unknown flags abort XLA, which
# the subprocess probe reports as an error rather than crashing the benchmark.
MATMUL_SETTINGS: list[tuple[str, str, dict]] = [
    ("default (fresh process)", "", {}),
    ("numpy: OPENBLAS_NUM_THREADS=1", "", {"OPENBLAS_NUM_THREADS": "1"}),
    ("use_xnnpack", "--xla_cpu_use_xnnpack=true", {}),
    ("xnn_fusion_type=dot", "--xla_cpu_experimental_xnn_fusion_type=dot", {}),
    ("xnn_graph_fusion_mode=GREEDY",
     "--xla_cpu_experimental_xnn_graph_fusion_mode=XNN_GRAPH_FUSION_MODE_GREEDY", {}),
    ("ynn_fusion_type=dot", "--xla_cpu_experimental_ynn_fusion_type=dot", {}),
    ("onednn_fusion_type=dot", "--xla_cpu_experimental_onednn_fusion_type=dot", {}),
    ("use_onednn", "--xla_cpu_use_onednn=true", {}),
    ("enable_fast_math", "--xla_cpu_enable_fast_math=true", {}),
    ("multi_thread_eigen=false", "--xla_cpu_multi_thread_eigen=false", {}),
    ("opt_preset=FAST_RUNTIME", "--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_RUNTIME", {}),
    ("jax matmul precision=bfloat16", "", {"JAX_DEFAULT_MATMUL_PRECISION": "bfloat16"}),
]
GAP_CLOSED = 0.95  # XLA reaching this fraction of numpy's GFLOP/s (same process) closes the gap


# --------------------------------------------------------------------------------------------
# formatting


def _gflops(fn, flops: float) -> tuple[float, float]:
    """(wall GFLOP/s, GFLOP per process-CPU-second) of one call of fn, which blocks."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    return flops / wall / 1e9, flops / max(cpu, 1e-9) / 1e9


def matmul_probe(reps: int) -> dict:
    """Best GFLOP/s of XLA and numpy, timed interleaved, on float32 matmuls.

    "2048": (2048×2048)@(2048×2048), XLA and numpy, wall-clock and per CPU-second.
    "layer": (512×750)@(750×750), one paper-width hidden layer at the benchmark's batch (XLA).
    "vlayer": the same layer for 8 configs as vmap makes it, a batched dot (8,512,750)@(8,750,750).
    """
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    mm = jax.jit(lambda a, b: a @ b)
    a = rng.standard_normal((2048, 2048), dtype=np.float32)
    b = rng.standard_normal((2048, 2048), dtype=np.float32)
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    ref = a @ b
    out = {"relerr": float(np.max(np.abs(np.asarray(mm(ja, jb)) - ref)) / np.max(np.abs(ref)))}
    la = jnp.asarray(rng.standard_normal((8, 512, 750), dtype=np.float32))
    lb = jnp.asarray(rng.standard_normal((8, 750, 750), dtype=np.float32))
    la0, lb0 = la[0], lb[0]
    jax.block_until_ready(mm(la, lb))

    def many(f, k):
        def go():
            for _ in range(k):
                r = f()
            jax.block_until_ready(r)
        return go

    f2048, flayer = 2.0 * 2048 ** 3, 2.0 * 512 * 750 * 750
    cases = {
        "xla": (many(lambda: mm(ja, jb), 2), 2 * f2048),
        "numpy": (many(lambda: a @ b, 2), 2 * f2048),
        "layer": (many(lambda: mm(la0, lb0), 16), 16 * flayer),
        "vlayer": (many(lambda: mm(la, lb), 2), 16 * flayer),
    }
    best = {k: (0.0, 0.0) for k in cases}
    for _ in range(reps):
        for k, (fn, flops) in cases.items():
            w, c = _gflops(fn, flops)
            best[k] = (max(best[k][0], w), max(best[k][1], c))
    for k, (w, c) in best.items():
        out[k], out[k + "_cpu"] = w, c
    return out


def matmul_in_subprocess(flags: str, env_extra: dict, reps: int) -> dict:
    env = {**os.environ, **env_extra}
    env["XLA_FLAGS"] = " ".join(f for f in (os.environ.get("XLA_FLAGS", ""), flags) if f)
    try:
        proc = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--_matmul-probe", "--reps", str(reps)],
            env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return {"error": "timeout"}
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"rc={proc.returncode}: {err[:80]}"}


def _matmul_row(label: str, r: dict) -> list:
    return [label, fmt(r["xla"]), fmt(r["numpy"]), fmt(r["xla"] / r["numpy"]), fmt(r["xla_cpu"]),
            fmt(r["numpy_cpu"]), fmt(r["xla_cpu"] / r["numpy_cpu"]), fmt(r["layer"]),
            fmt(r["vlayer"]), f"{r['relerr']:.0e}"]


def matmul_section(args) -> dict:
    base = matmul_probe(args.reps)
    rows = [_matmul_row("this process", base)]
    found = [("this process", "", base)]
    if not args.no_flag_search:
        settings = MATMUL_SETTINGS[:2] if args.quick else MATMUL_SETTINGS
        for label, flags, env_extra in settings:
            r = matmul_in_subprocess(flags, env_extra, max(2, args.reps - 2))
            if "error" in r:
                rows.append([label] + ["error"] * 8 + [r["error"]])
                continue
            how = " ".join([f"XLA_FLAGS={flags}"] * bool(flags)
                           + [f"{k}={v}" for k, v in env_extra.items()])
            found.append((label, how, r))
            rows.append(_matmul_row(label, r))
    table("Large matmul, float32 (XLA-CPU vs numpy's BLAS)", [
        "setting", "XLA 2048² GF/s", "numpy GF/s", "ratio", "XLA GF/cpu-s", "numpy GF/cpu-s",
        "ratio", "XLA layer GF/s", "XLA vmap-layer GF/s", "relerr"], rows, [
        f"best of {args.reps} interleaved timings ({max(2, args.reps - 2)} in subprocess rows); "
        "each row is one process (XLA_FLAGS",
        "must be set before jax starts), so compare XLA with numpy within a row: other jobs share "
        "these cores.",
        "GF/s = wall-clock GFLOP/s; GF/cpu-s = GFLOP per second of process CPU time (all threads),",
        "i.e. per-core kernel efficiency, which is far less sensitive to how many cores were free.",
        "layer = 16× (512×750)@(750×750), one paper-width layer at batch 512; vmap-layer = the same "
        "FLOPs as",
        "2× the batched dot (8,512,750)@(8,750,750) that vmap over 8 configs makes of it.",
        "relerr = max|XLA − numpy| / max|numpy| on the 2048² product.",
        f"this process: XLA_FLAGS={os.environ.get('XLA_FLAGS', '') or '(none)'}; numpy BLAS: "
        f"{_blas_name()}.",
    ])
    if len(found) > 1:
        _matmul_verdict(found)
    return base


def _matmul_verdict(found: list) -> None:
    """Print whether XLA is behind the BLAS at 2048², and which setting (if any) closes the gap."""
    default = next((r for label, _, r in found if label.startswith("default")), found[0][2])
    blas_label, _, blas = max(found, key=lambda f: f[2]["numpy_cpu"])
    xla_settings = [f for f in found if "XLA_FLAGS" in f[1] or "JAX_" in f[1]]
    accurate = [f for f in xla_settings if f[2]["relerr"] < 1e-4]
    same = default["xla_cpu"] / default["numpy_cpu"]
    per_core = default["xla_cpu"] / blas["numpy_cpu"]
    print(f"\nSame process, default settings: XLA / numpy = {fmt(default['xla'] / default['numpy'])}"
          f" wall, {fmt(same)} per CPU-second.")
    print(f"Per core, best BLAS = {fmt(blas['numpy_cpu'])} GFLOP/cpu-s (row `{blas_label}`); "
          f"default XLA = {fmt(default['xla_cpu'])} ({fmt(per_core)} of it).")
    if accurate:
        best = max(accurate, key=lambda f: f[2]["xla_cpu"])
        b_ratio = best[2]["xla_cpu"] / blas["numpy_cpu"]
        print(f"Best XLA setting per core: `{best[0]}` = {fmt(best[2]['xla_cpu'])} GFLOP/cpu-s "
              f"({fmt(b_ratio)} of the best BLAS).")
    if same >= GAP_CLOSED and per_core >= GAP_CLOSED:
        print("Verdict: XLA-CPU is on par with numpy's BLAS here; no setting is needed.")
    elif accurate and b_ratio >= GAP_CLOSED and best[2]["xla_cpu"] > 1.03 * default["xla_cpu"]:
        print(f"Verdict: XLA is behind by default; `{best[1]}` closes the gap.")
    else:
        parity = "on par with numpy's default BLAS in the same process, but " if (
            same >= GAP_CLOSED) else ""
        print(f"Verdict: XLA-CPU is {parity}{fmt(100 * (1 - per_core), 2)}% behind the best BLAS "
              "per core, and no tried setting closes that (gains of a few % are within this "
              "machine's noise).")
    if len(found) < 2:
        return
    vm = max(found[1:], key=lambda f: f[2]["vlayer"] / f[2]["layer"])
    print(f"vmap-layer/layer (batched vs plain dot, same FLOPs): default "
          f"{fmt(default['vlayer'] / default['layer'])}, best `{vm[0]}` "
          f"{fmt(vm[2]['vlayer'] / vm[2]['layer'])}.")


def _blas_name() -> str:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


# --------------------------------------------------------------------------------------------
# analytic FLOPs


def dense_flops(d_in: int, hidden: tuple[int, ...], d_out: int) -> list[int]:
    """Forward matmul FLOPs per sample of each Dense layer (2·in·out)."""
    dims = [d_in, *hidden, d_out]
    return [2 * i * o for i, o in zip(dims[:-1], dims[1:], strict=False)]


def train_step_flops(static) -> dict[str, float]:
    """Matmul FLOPs of one train step of one config, by part.

    Encoders: forward + backward = 3× forward per layer, except the first layer whose input needs
    no gradient (2×). lp_simclr runs each encoder on two batches (4 passes); simclr_cosine on one.
    Pairwise distances: per direction one B×B×d Gram matmul forward and two backward (twice as
    many with `swap_batches`, which scores the second batch's pairs as anchors too).
    Simulator: the mixing networks and covariance factors, forward only.
    """
    sh, b, d = static.shape, static.batch, static.enc_dim
    batches = 2 if static.loss == "lp_simclr" else 1
    enc = 0
    for d_in, hidden in ((sh.x_dim, static.widths_x), (sh.t_dim, static.widths_t)):
        f = dense_flops(d_in, hidden, d)
        enc += 3 * sum(f) - f[0]
    enc *= batches * b
    if static.loss == "lp_simclr":
        pair = 2 * 3 * 2 * b * b * d * (2 if getattr(static, "swap_batches", False) else 1)
    else:
        pair = 2 * 3 * 2 * b * (2 * b) * d
    sim_sample = (2 * sh.mixing_layers * (sh.x_dim ** 2 + sh.t_dim ** 2)
                  + 2 * (3 * sh.n_s ** 2 + sh.n_x ** 2 + sh.n_t ** 2))
    sim = batches * b * sim_sample
    return {"encoders": enc, "pairwise": pair, "simulator": sim, "total": enc + pair + sim}


def n_params(static) -> int:
    sh, d = static.shape, static.enc_dim
    total = 0
    for d_in, hidden in ((sh.x_dim, static.widths_x), (sh.t_dim, static.widths_t)):
        dims = [d_in, *hidden, d]
        total += sum(i * o + o for i, o in zip(dims[:-1], dims[1:], strict=False))
    return total


def bytes_per_config(static) -> float:
    """Rough live memory of one config in the vmapped scan: params/grads/Adam state + activations."""
    sh = static.shape
    acts = static.batch * (sum(static.widths_x) + sum(static.widths_t)) * 4 * 2  # 4 passes, pre+post
    return 4.0 * (8 * n_params(static) + acts + 8 * static.batch * (sh.x_dim + sh.t_dim))


# --------------------------------------------------------------------------------------------
# train throughput


def make_loop_step(static, run):
    """`init(params, key)` and the single-config `step(state, params, world, key)` of `make_run`."""
    del static
    return run.init, run.step


def _stack(trees):
    import jax
    import jax.numpy as jnp
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _take(tree, i):
    import jax
    return jax.tree.map(lambda x: x[i], tree)


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU cores used) of one call of fn (which blocks)."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    dt = time.perf_counter() - t
    return dt, (time.process_time() - c) / dt


def _interleaved(fns: dict, budget: float, max_rounds: int = 3) -> dict:
    """Best (seconds, cores) of each fn, timed in alternating rounds while rounds fit the budget.

    Alternating vmap and loop runs exposes both to the same background load, so their ratio is
    fairer than two back-to-back blocks on this shared machine.
    """
    best: dict = {}
    spent, rounds = 0.0, 0
    while rounds < max_rounds:
        round_time = 0.0
        for name, fn in fns.items():
            dt, cores = _timed(fn)
            round_time += dt
            if name not in best or dt < best[name][0]:
                best[name] = (dt, cores)
        spent, rounds = spent + round_time, rounds + 1
        if spent + round_time > budget:
            break
    return best


def train_section(size: str, args, matmul: dict) -> dict:
    import jax

    from mmjax.configs.numeric import base_config
    from mmjax.latent.simulator import make_world
    from mmjax.train.synthetic import make_run

    if size == "cpu":
        cfg = base_config("cpu")
        steps = args.steps_cpu
        batch_note = f"batch {cfg.batch} (the cpu scale's)"
    else:
        paper_batch = base_config("paper").batch
        cfg = base_config("paper", batch=args.paper_batch)
        steps = args.steps_paper
        batch_note = f"batch {cfg.batch} (NOT the paper's {paper_batch}; timing only)"
    static = dataclasses.replace(cfg.to_static(), steps=steps)
    run = make_run(static)
    flops = train_step_flops(static)
    params1 = cfg.to_params()
    n_worlds = 4
    worlds = jax.jit(jax.vmap(lambda k: make_world(k, static.shape)))(
        jax.random.split(jax.random.key(0), n_worlds))
    jax.block_until_ready(worlds)
    world_list = [_take(worlds, i) for i in range(n_worlds)]

    def inputs(n):
        idx = np.arange(n) % n_worlds
        return (_stack([params1] * n), jax.tree.map(lambda x: x[idx], worlds),
                jax.random.split(jax.random.key(1), n))

    mem_cap = 0.4 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    per_cfg_bytes = bytes_per_config(static)

    # ---- loop baseline: one jitted single-config step, called from Python --------------------
    init, step = make_loop_step(static, run)
    init_c = jax.jit(init)
    st0, ks0 = init_c(params1, jax.random.key(1))
    t = time.perf_counter()
    step_c = jax.jit(step).lower(st0, params1, world_list[0], ks0[0]).compile()
    loop_compile = time.perf_counter() - t
    step_c(st0, params1, world_list[0], ks0[0])  # warm-up execution

    def loop_run(n):
        """The loop over n configs (config i: world i % 4, key i, as the vmapped inputs).

        Each config's init (parameters, Adam state, step keys) is inside the timing, as it is
        inside run.train for the vmapped case, so both time the same work.
        """
        keys = list(jax.random.split(jax.random.key(1), n))
        result = {}

        def go():
            finals, losses = [], []
            for i, key in enumerate(keys):
                s, ks = init_c(params1, key)
                w = world_list[i % n_worlds]
                for k in ks:
                    s, m = step_c(s, params1, w, k)
                    losses.append(m["loss"])
                finals.append(s)
            jax.block_until_ready((finals, losses))
            result["losses"] = losses
        return go, result

    rows, results, check = [], {}, None
    last = {"vmap": None, "loop": None}  # (n, seconds) at the largest measured N
    for n in args.ns:
        work = n * steps
        fns, extrap, compile_s, vm_out = {}, {}, None, {}
        for name in ("vmap", "loop"):
            est = None if last[name] is None else last[name][1] * n / last[name][0]
            extrap[name] = (est is not None and est > args.budget) or (
                name == "vmap" and n * per_cfg_bytes > mem_cap)
        if not extrap["vmap"]:
            p, w, k = inputs(n)
            t = time.perf_counter()
            compiled = jax.jit(jax.vmap(run.train)).lower(p, w, k).compile()
            compile_s = time.perf_counter() - t

            def go_vmap(compiled=compiled, p=p, w=w, k=k, vm_out=vm_out):
                vm_out["out"] = jax.block_until_ready(compiled(p, w, k))
            go_vmap()  # first execution: warm-up
            fns["vmap"] = go_vmap
        if not extrap["loop"]:
            fns["loop"], loop_res = loop_run(n)
        best = _interleaved(fns, args.budget)
        timing = {}
        for name in ("vmap", "loop"):
            if name in best:
                timing[name] = best[name]
                last[name] = (n, best[name][0])
            else:
                timing[name] = (last[name][1] * n / last[name][0], None)
        if "out" in vm_out:
            if size == "cpu" and "trained_params" not in results and n >= args.eval_chunk:
                results["trained_params"] = vm_out["out"][0]
            if check is None and "loop" in best:
                # same init and keys as run.train -> the same losses, step by step
                loop_losses = np.asarray(loop_res["losses"]).reshape(n, steps)
                vm_losses = np.asarray(vm_out["out"][1])
                rel = np.abs(loop_losses - vm_losses) / np.maximum(np.abs(vm_losses), 1e-6)
                check = (float(np.max(rel[:, 0])), float(np.max(rel)))
        vm_out.clear()
        fns.clear()
        (vm_time, vm_cores), (lp_time, lp_cores) = timing["vmap"], timing["loop"]
        vm_rate, lp_rate = work / vm_time, work / lp_time
        star = lambda e: "*" if e else ""

        def per_core(rate, cores):
            if cores is None:
                return "—"
            return fmt(100 * rate * flops["total"] / 1e9 / cores / matmul["xla_cpu"], 2) + "%"
        rows.append([
            n, fmt(vm_rate) + star(extrap["vmap"]),
            fmt(vm_rate * flops["total"] / 1e9) + star(extrap["vmap"]), fmt(vm_cores, 2),
            fmt(lp_rate) + star(extrap["loop"]),
            fmt(lp_rate * flops["total"] / 1e9) + star(extrap["loop"]), fmt(lp_cores, 2),
            fmt(vm_rate / lp_rate) + star(extrap["vmap"] or extrap["loop"]),
            per_core(vm_rate, vm_cores), per_core(lp_rate, lp_cores), fmt(compile_s),
        ])
    notes = [
        f"{size} encoders: widths_x={static.widths_x}, widths_t={static.widths_t}, "
        f"enc_dim={static.enc_dim}, loss={static.loss}, output_norm={static.output_norm}, "
        f"swap_batches={getattr(static, 'swap_batches', '—')};",
        f"{batch_note}; each timing = init + {steps} train steps of every config, after compile "
        "and a warm-up;",
        "vmap and loop are timed in alternating rounds (best of up to 3 rounds within the budget).",
        f"matmul FLOPs per config·step (analytic): {fmt(flops['total'] / 1e9, 4)} GFLOP = encoders "
        f"{fmt(flops['encoders'] / 1e9, 4)} + pairwise {fmt(flops['pairwise'] / 1e9, 3)} + "
        f"simulator {fmt(flops['simulator'] / 1e9, 3)}; {n_params(static):,} encoder params.",
        "cores = process CPU-seconds / wall-seconds during the timing (2 = both cores were ours).",
        f"mm/core = (GFLOP/s ÷ cores) as a % of this process's XLA 2048² matmul per CPU-second "
        f"({fmt(matmul['xla_cpu'])} GFLOP/cpu-s;",
        f"  wall {fmt(matmul['xla'])} GFLOP/s, numpy {fmt(matmul['numpy'])} GFLOP/s): how close "
        "training runs to the large-matmul speed.",
        "vmap = jit(vmap(run.train)) over N configs; compile = its lower+compile at that N.",
        f"loop = Python loop over configs, then steps, calling one jitted single-config train step "
        f"(compile {fmt(loop_compile)} s);",
        "  check vs the vmapped run.train (same init and keys): relative |Δloss| "
        + ("—" if check is None else
           f"{check[0]:.0e} at step 1, max {check[1]:.0e} over {steps} steps (float drift)")
        + ("" if check is None or check[0] < 1e-4 else
           "  <-- MISMATCH: make_run's loss changed; update make_loop_step") + ".",
        "ratio = vmap / loop throughput, both measured in this run.",
        f"* = extrapolated linearly in N from the largest measured N: the run would take > "
        f"{args.budget:g} s or need > 40% of RAM (~{fmt(per_cfg_bytes / 2 ** 20)} MiB/config).",
    ]
    table(f"Train throughput, {size} encoder size", [
        "N", "vmap cfg·steps/s", "vmap GFLOP/s", "cores", "loop cfg·steps/s", "loop GFLOP/s",
        "cores", "ratio", "vmap mm/core", "loop mm/core", "compile s"], rows, notes)
    return results


# --------------------------------------------------------------------------------------------
# R² evaluation


def eval_section(args, trained) -> None:
    import jax

    from mmjax.configs.numeric import base_config
    from mmjax.latent.simulator import make_world
    from mmjax.train.synthetic import make_run

    cfg = base_config("cpu")
    if args.quick:
        cfg = dataclasses.replace(cfg, eval_fit=256, eval_test=256, probe_epochs=5)
    static = cfg.to_static()
    run = make_run(static)
    chunk = args.eval_chunk
    params = _stack([cfg.to_params()] * chunk)
    worlds = jax.jit(jax.vmap(lambda k: make_world(k, static.shape)))(
        jax.random.split(jax.random.key(0), chunk))
    keys = jax.random.split(jax.random.key(2), chunk)
    if trained is not None and jax.tree.leaves(trained)[0].shape[0] >= chunk:
        enc = jax.tree.map(lambda x: x[:chunk], trained)
        what = f"encoders trained {args.steps_cpu} steps (from the cpu vmapped run)"
    else:
        enc = jax.vmap(run.train)(params, worlds, keys)[0]
        what = "freshly trained encoders"
    fn = jax.jit(jax.vmap(run.evaluate))
    t = time.perf_counter()
    compiled = fn.lower(enc, params, worlds, keys).compile()
    compile_s = time.perf_counter() - t
    run_s, cores = _timed(lambda: jax.block_until_ready(compiled(enc, params, worlds, keys)))
    chunks = math.ceil(args.eval_models / chunk)
    total = chunks * run_s + compile_s
    table(f"R² evaluation (run.evaluate), {args.eval_models} models", [
        "chunk", "compile s", "s / chunk", "cores", "s / model", f"chunks for {args.eval_models}",
        f"total s for {args.eval_models}"],
        [[chunk, fmt(compile_s), fmt(run_s), fmt(cores, 2), fmt(run_s / chunk), chunks,
          fmt(total)]], [
        f"cpu-scale eval settings: eval_fit={static.eval_fit}, eval_test={static.eval_test}, "
        f"nonlinear_probe={static.nonlinear_probe}, probe_epochs={static.probe_epochs}, "
        f"eval_tilde={static.eval_tilde}; {what}.",
        f"one chunk of {chunk} measured (jit(vmap(run.evaluate)), after compile); the total is "
        f"extrapolated: {chunks} × s/chunk + one compile. The MLP probe stops on a plateau, so",
        "fully trained encoders may stop at a different epoch than these.",
    ])


# --------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shrink everything (smoke check)")
    ap.add_argument("--no-flag-search", action="store_true",
                    help="skip the per-XLA-setting matmul subprocesses")
    ap.add_argument("--budget", type=float, default=None,
                    help="max seconds for one timed run before rows are extrapolated")
    ap.add_argument("--reps", type=int, default=None, help="matmul timing repetitions")
    ap.add_argument("--_matmul-probe", dest="matmul_probe", action="store_true",
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.reps is None:
        args.reps = 3 if args.quick else 7
    if args.matmul_probe:
        print(json.dumps(matmul_probe(args.reps)))
        return
    if args.quick:
        args.ns, args.steps_cpu, args.steps_paper, args.paper_batch = (1, 4), 5, 1, 64
        args.eval_chunk, args.eval_models = 2, 120
        args.budget = args.budget or 5.0
    else:
        args.ns, args.steps_cpu, args.steps_paper, args.paper_batch = (1, 8, 64, 256), 20, 3, 512
        args.eval_chunk, args.eval_models = 8, 120
        args.budget = args.budget or 30.0

    import jax

    start = time.perf_counter()
    print(f"sweep_throughput{' --quick' if args.quick else ''}: jax {jax.__version__}, "
          f"backend {jax.default_backend()}, devices {len(jax.devices())}, "
          f"{os.cpu_count()} CPUs, numpy {np.__version__}; load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (other jobs share these cores)")
    matmul = matmul_section(args)
    trained = None
    for size in ("cpu", "paper"):
        res = train_section(size, args, matmul)
        trained = res.get("trained_params", trained)
    eval_section(args, trained)
    print(f"\ntotal wall time {fmt(time.perf_counter() - start)} s; load average now "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
