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

# Candidate settings for XLA-CPU's dot performance: (label, XLA_FLAGS, extra env). All flags were
# found in this jaxlib's flag table (strings of libjax_common.so); unknown flags abort XLA, which
# the subprocess probe reports as an error rather than crashing the benchmark.
MATMUL_SETTINGS: list[tuple[str, str, dict]] = [
    ("default (fresh process)", "", {}),
    ("use_xnnpack", "--xla_cpu_use_xnnpack=true", {}),
    ("xnn_fusion_type=dot", "--xla_cpu_experimental_xnn_fusion_type=dot", {}),
    ("ynn_fusion_type=dot", "--xla_cpu_experimental_ynn_fusion_type=dot", {}),
    ("onednn_fusion_type=dot", "--xla_cpu_experimental_onednn_fusion_type=dot", {}),
    ("use_onednn", "--xla_cpu_use_onednn=true", {}),
    ("enable_fast_math", "--xla_cpu_enable_fast_math=true", {}),
    ("multi_thread_eigen=false", "--xla_cpu_multi_thread_eigen=false", {}),
    ("jax matmul precision=bfloat16", "", {"JAX_DEFAULT_MATMUL_PRECISION": "bfloat16"}),
]
GAP_CLOSED = 0.95  # XLA reaching this fraction of numpy's GFLOP/s (same process) closes the gap


# --------------------------------------------------------------------------------------------
# formatting


def table(title: str, headers: list[str], rows: list[list], notes: list[str] = ()) -> None:
    """Print a plain-text table with right-aligned columns (first column left-aligned)."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                         for i, (c, w) in enumerate(zip(r, widths)))

    print(f"\n{title}")
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for r in cells[1:]:
        print(line(r))
    for n in notes:
        print(f"  {n}")
    sys.stdout.flush()


def fmt(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    return f"{x:.{max(0, digits - 1 - mag)}f}"


# --------------------------------------------------------------------------------------------
# large matmul


def matmul_probe(reps: int) -> dict:
    """Best GFLOP/s of XLA and numpy (interleaved) on 2048² and one paper-width layer (float32)."""
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    shapes = {"2048": (2048, 2048, 2048), "layer": (512, 750, 750)}
    out = {}
    mm = jax.jit(lambda a, b: a @ b)
    for name, (m, k, n) in shapes.items():
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        ref = a @ b
        got = np.asarray(mm(ja, jb))
        out[f"relerr_{name}"] = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
        flops = 2.0 * m * k * n
        inner = max(1, int(2e9 // flops))  # ~2 GFLOP per timing sample
        best_x = best_n = 0.0
        for _ in range(reps):
            t = time.perf_counter()
            for _ in range(inner):
                r = mm(ja, jb)
            r.block_until_ready()
            best_x = max(best_x, inner * flops / (time.perf_counter() - t) / 1e9)
            t = time.perf_counter()
            for _ in range(inner):
                a @ b
            best_n = max(best_n, inner * flops / (time.perf_counter() - t) / 1e9)
        out[f"xla_{name}"], out[f"numpy_{name}"] = best_x, best_n
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


def matmul_section(args) -> dict:
    base = matmul_probe(args.reps)
    rows = [["this process", fmt(base["xla_2048"]), fmt(base["numpy_2048"]),
             fmt(base["xla_2048"] / base["numpy_2048"]), fmt(base["xla_layer"]),
             fmt(base["numpy_layer"]), fmt(base["xla_layer"] / base["numpy_layer"]),
             f"{base['relerr_2048']:.0e}"]]
    found = []
    if not args.no_flag_search:
        settings = MATMUL_SETTINGS[:2] if args.quick else MATMUL_SETTINGS
        for label, flags, env_extra in settings:
            r = matmul_in_subprocess(flags, env_extra, args.reps)
            if "error" in r:
                rows.append([label] + ["error"] * 6 + [r["error"]])
                continue
            ratio, ratio_l = r["xla_2048"] / r["numpy_2048"], r["xla_layer"] / r["numpy_layer"]
            found.append((label, flags or " ".join(f"{k}={v}" for k, v in env_extra.items()),
                          ratio, ratio_l, r["relerr_2048"]))
            rows.append([label, fmt(r["xla_2048"]), fmt(r["numpy_2048"]), fmt(ratio),
                         fmt(r["xla_layer"]), fmt(r["numpy_layer"]), fmt(ratio_l),
                         f"{r['relerr_2048']:.0e}"])
    notes = [
        f"best of {args.reps} interleaved timings per column; XLA and numpy share a process, so",
        "compare within a row (other jobs share these cores: rows differ by load, ratios less so).",
        "layer = (512×750)@(750×750), one paper-width hidden layer at the benchmark's batch.",
        "relerr = max|XLA − numpy| / max|numpy| on the 2048² product.",
        f"XLA_FLAGS of this process: {os.environ.get('XLA_FLAGS', '') or '(none)'}; numpy BLAS: "
        f"{_blas_name()}.",
    ]
    table("Large matmul, float32 GFLOP/s (XLA-CPU vs numpy BLAS)",
          ["setting", "XLA 2048²", "numpy 2048²", "ratio", "XLA layer", "numpy layer",
           "ratio", "relerr"], rows, notes)
    if found:
        default = next((f for f in found if f[0].startswith("default")), None)
        accurate = [f for f in found if f[4] < 1e-4]
        best = max(accurate or found, key=lambda f: f[2] + f[3])
        print()
        if default and min(default[2], default[3]) >= GAP_CLOSED:
            print(f"Verdict: default XLA-CPU is within {100 * (1 - GAP_CLOSED):.0f}% of numpy "
                  f"(2048² ratio {fmt(default[2])}, layer ratio {fmt(default[3])}): no gap to close.")
        elif min(best[2], best[3]) >= GAP_CLOSED:
            print(f"Verdict: XLA is behind by default (ratios {fmt(default[2]) if default else '?'}"
                  f"/{fmt(default[3]) if default else '?'}); `{best[1]}` closes the gap "
                  f"(ratios {fmt(best[2])}/{fmt(best[3])}).")
        else:
            print(f"Verdict: no tried setting brings XLA within {100 * (1 - GAP_CLOSED):.0f}% of "
                  f"numpy on both shapes; best was `{best[0]}` (ratios {fmt(best[2])}/"
                  f"{fmt(best[3])}).")
    return base


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
    return [2 * i * o for i, o in zip(dims[:-1], dims[1:])]


def train_step_flops(static) -> dict[str, float]:
    """Matmul FLOPs of one train step of one config, by part.

    Encoders: forward + backward = 3× forward per layer, except the first layer whose input needs
    no gradient (2×). lp_simclr runs each encoder on two batches (4 passes); simclr_cosine on one.
    Pairwise distances: per direction one B×B×d Gram matmul forward and two backward.
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
        pair = 2 * 3 * 2 * b * b * d
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
        total += sum(i * o + o for i, o in zip(dims[:-1], dims[1:]))
    return total


def bytes_per_config(static) -> float:
    """Rough live memory of one config in the vmapped scan: params/grads/Adam state + activations."""
    sh = static.shape
    acts = static.batch * (sum(static.widths_x) + sum(static.widths_t)) * 4 * 2  # 4 passes, pre+post
    return 4.0 * (8 * n_params(static) + acts + 8 * static.batch * (sh.x_dim + sh.t_dim))


# --------------------------------------------------------------------------------------------
# train throughput


def make_loop_step(static, run):
    """`init(params, key)` and a single-config `step(state, params, world, key)`.

    Mirrors `make_run`'s `train` exactly (same init keys, same optimiser, same loss built from
    `run.embed`, the simulator and the contrastive loss), so the loop does the vmapped run's work.
    """
    import jax
    import jax.numpy as jnp

    from mmjax.latent.simulator import sample
    from mmjax.losses.contrastive import lp_simclr_loss, simclr_cosine_loss
    from mmjax.models.mlp import MLP
    from mmjax.train.step import adam_clipped, init_state, make_train_step

    shape = static.shape
    enc_x, enc_t = MLP(static.widths_x, static.enc_dim), MLP(static.widths_t, static.enc_dim)

    def loss_fn(p, params, world, key):
        k1, k2 = jax.random.split(key)
        one = sample(k1, world, params.bias, shape, static.batch)
        if static.loss == "lp_simclr":
            two = sample(k2, world, params.bias, shape, static.batch)
            a, b = run.embed(p, one.x, one.t, params.enc_mask)
            a2, b2 = run.embed(p, two.x, two.t, params.enc_mask)
            loss = lp_simclr_loss(a, b, a2, b2, tau=params.tau, alpha=params.alpha)
        else:
            a, b = run.embed(p, one.x, one.t, params.enc_mask)
            loss = simclr_cosine_loss(a, b, tau=params.tau)
        return loss, {}

    def opt(params):
        return adam_clipped(params.lr, params.clip_norm, static.steps, static.schedule)

    def init(params, key):
        kx, kt, k_steps = jax.random.split(key, 3)
        p = {"x": enc_x.init(kx, jnp.zeros((1, shape.x_dim))),
             "t": enc_t.init(kt, jnp.zeros((1, shape.t_dim)))}
        return init_state(p, opt(params)), jax.random.split(k_steps, static.steps)

    def step(state, params, world, key):
        return make_train_step(lambda q, k: loss_fn(q, params, world, k), opt(params))(state, key)

    return init, step


def _stack(trees):
    import jax
    import jax.numpy as jnp
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _take(tree, i):
    import jax
    return jax.tree.map(lambda x: x[i], tree)


def _repeat_timed(fn, budget: float, max_reps: int = 3) -> float:
    """Best wall time of fn() (which blocks), repeating only while runs are short."""
    t = time.perf_counter()
    fn()
    best = time.perf_counter() - t
    spent, reps = best, 1
    while reps < max_reps and spent + best < min(2.0, budget):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        best, spent, reps = min(best, dt), spent + dt, reps + 1
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

    def loop_run(n):
        keys = jax.random.split(jax.random.key(1), n)
        prepared = []
        for i in range(n):
            s, ks = init_c(params1, keys[i])
            prepared.append((s, list(ks), world_list[i % n_worlds]))
        jax.block_until_ready([p[0] for p in prepared])

        def go():
            finals, losses = [], []
            for s, ks, w in prepared:
                for k in ks:
                    s, m = step_c(s, params1, w, k)
                    losses.append(m["loss"])
                finals.append(s)
            jax.block_until_ready((finals, losses))
            return finals, losses
        return go

    # correctness of the baseline: same init and keys as run.train -> same losses
    pv, wv, kv = inputs(1)
    ref_p, ref_losses = jax.jit(run.train)(params1, world_list[0], kv[0])
    _, loop_losses = loop_run(1)()
    check = float(np.max(np.abs(np.asarray(ref_losses) - np.asarray(loop_losses))))
    step_c(st0, params1, world_list[0], ks0[0])  # warm-up execution

    rows, results = [], {}
    last_vmap = last_loop = None  # (n, seconds) of the largest measured N
    for n in args.ns:
        work = n * steps
        # vmapped
        est = None if last_vmap is None else last_vmap[1] * n / last_vmap[0]
        vm_extrap = (est is not None and est > args.budget) or n * per_cfg_bytes > mem_cap
        if vm_extrap:
            vm_time, vm_compile = last_vmap[1] * n / last_vmap[0], None
        else:
            p, w, k = inputs(n)
            fn = jax.jit(jax.vmap(run.train))
            t = time.perf_counter()
            compiled = fn.lower(p, w, k).compile()
            vm_compile = time.perf_counter() - t
            holder = {}

            def go_vmap():
                holder["out"] = jax.block_until_ready(compiled(p, w, k))
            vm_time = _repeat_timed(go_vmap, args.budget)
            if n == 8 and size == "cpu":
                results["trained_params"] = holder["out"][0]
            last_vmap = (n, vm_time)
            del compiled, holder
        # loop
        est = None if last_loop is None else last_loop[1] * n / last_loop[0]
        lp_extrap = est is not None and est > args.budget
        if lp_extrap:
            lp_time = last_loop[1] * n / last_loop[0]
        else:
            lp_time = _repeat_timed(loop_run(n), args.budget, max_reps=2)
            last_loop = (n, lp_time)
        vm_rate, lp_rate = work / vm_time, work / lp_time
        rows.append([
            n, fmt(vm_rate) + ("*" if vm_extrap else ""),
            fmt(vm_rate * flops["total"] / 1e9) + ("*" if vm_extrap else ""),
            fmt(100 * vm_rate * flops["total"] / 1e9 / matmul["xla_2048"], 2) + "%",
            fmt(lp_rate) + ("*" if lp_extrap else ""),
            fmt(lp_rate * flops["total"] / 1e9) + ("*" if lp_extrap else ""),
            fmt(vm_rate / lp_rate), fmt(vm_compile),
        ])
    notes = [
        f"{size} encoders: widths_x={static.widths_x}, widths_t={static.widths_t}, "
        f"enc_dim={static.enc_dim}, loss={static.loss}, output_norm={static.output_norm}; "
        f"{batch_note}; {steps} train steps per timing.",
        f"matmul FLOPs per config·step (analytic): {fmt(flops['total'] / 1e9, 4)} GFLOP = encoders "
        f"{fmt(flops['encoders'] / 1e9, 4)} + pairwise {fmt(flops['pairwise'] / 1e9, 3)} + "
        f"simulator {fmt(flops['simulator'] / 1e9, 3)}; {n_params(static):,} encoder params.",
        f"machine large-matmul (this process, 2048² f32): XLA {fmt(matmul['xla_2048'])} GFLOP/s, "
        f"numpy {fmt(matmul['numpy_2048'])} GFLOP/s; '% XLA mm' = vmap GFLOP/s / XLA's.",
        f"loop = Python loop over configs, then steps, calling one jitted single-config train step "
        f"(compile {fmt(loop_compile)} s); it matches run.train: max |Δloss| = {check:.1e} "
        f"over {steps} steps.",
        f"ratio = vmap / loop throughput, both measured in this run. compile = lower+compile of "
        f"jit(vmap(run.train)) at that N.",
        f"* = extrapolated (linear in N from the largest measured N) because the run would take "
        f"> {args.budget:g} s or need > 40% of RAM (~{fmt(per_cfg_bytes / 2 ** 20)} MiB/config).",
    ]
    table(f"Train throughput, {size} encoder size", [
        "N", "vmap cfg·steps/s", "vmap GFLOP/s", "% XLA mm", "loop cfg·steps/s",
        "loop GFLOP/s", "ratio", "compile s"], rows, notes)
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
        what = f"encoders trained {args.steps_cpu} steps (from the cpu N=8 vmapped run)"
    else:
        enc = jax.vmap(run.train)(params, worlds, keys)[0]
        what = "freshly trained encoders"
    fn = jax.jit(jax.vmap(run.evaluate))
    t = time.perf_counter()
    compiled = fn.lower(enc, params, worlds, keys).compile()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    jax.block_until_ready(compiled(enc, params, worlds, keys))
    run_s = time.perf_counter() - t
    chunks = math.ceil(args.eval_models / chunk)
    total = chunks * run_s + compile_s
    table(f"R² evaluation (run.evaluate), {args.eval_models} models", [
        "chunk", "compile s", "s / chunk", "s / model", f"chunks for {args.eval_models}",
        f"total s for {args.eval_models}"],
        [[chunk, fmt(compile_s), fmt(run_s), fmt(run_s / chunk), chunks, fmt(total)]], [
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
        args.ns, args.steps_cpu, args.steps_paper, args.paper_batch = (1, 8), 5, 2, 128
        args.eval_chunk, args.eval_models = 2, 120
        args.budget = args.budget or 5.0
    else:
        args.ns, args.steps_cpu, args.steps_paper, args.paper_batch = (1, 8, 64, 256), 50, 3, 512
        args.eval_chunk, args.eval_models = 8, 120
        args.budget = args.budget or 30.0

    import jax

    start = time.perf_counter()
    print(f"sweep_throughput{' --quick' if args.quick else ''}: jax {jax.__version__}, "
          f"backend {jax.default_backend()}, devices {len(jax.devices())}, "
          f"{os.cpu_count()} CPUs, numpy {np.__version__}")
    matmul = matmul_section(args)
    trained = None
    for size in ("cpu", "paper"):
        res = train_section(size, args, matmul)
        trained = res.get("trained_params", trained)
    eval_section(args, trained)
    print(f"\ntotal wall time {fmt(time.perf_counter() - start)} s")


if __name__ == "__main__":
    main()
