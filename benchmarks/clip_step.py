#!/usr/bin/env python
"""CLIP train-step throughput on 1 vs 8 devices, and per-device memory of the gathered contrastive loss.

    python benchmarks/clip_step.py            # default run (under ~3 min on 2 CPU cores)
    python benchmarks/clip_step.py --quick    # smoke check (fewer steps, rounds and batch sizes)

Prints two plain-text tables:

1. Train-step throughput (samples/s) of a small two-tower CLIP (`make_trainer` of a `ClipConfig`,
   ViT + transformer, loss "clip", global batch 64) on a 1-device mesh and on an 8-device mesh, timed
   in alternating rounds in one process, with their ratio. Compile time is measured separately
   (`lower(...).compile()`), then warm-up steps run before any timing.
2. Compiled per-device memory (`compiled.memory_analysis()`) of `jit(value_and_grad(clip_loss))`
   under `parallel.sharded_loss` on 8 devices versus 1 device, against the global batch size. Each
   device scores its B/8 local rows against all B gathered rows, so it should hold a (B/8 × B)
   logits block instead of (B × B). Nothing is executed: only lowered and compiled.

Without accelerators, 8 fake CPU devices are made with
`XLA_FLAGS=--xla_force_host_platform_device_count=8`, which this script sets before jax is imported
(an existing device-count setting in XLA_FLAGS is kept). The fake devices share the host's cores, so
on CPU the 8-device column measures the overhead of sharding (collectives, per-device dispatch), not
a speed-up; on a GPU/TPU host with 8 devices the same ratio measures scaling.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

_COUNT_FLAG = "--xla_force_host_platform_device_count"
if _COUNT_FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_COUNT_FLAG}=8".strip()

import jax  # noqa: E402  (XLA_FLAGS must be set first)
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from tables import fmt, table  # noqa: E402  (benchmarks/tables.py; this folder is on sys.path)

from mmjax import parallel  # noqa: E402
from mmjax.configs.clip import ClipConfig  # noqa: E402
from mmjax.data.pipeline import IMAGE_KEY, TOKENS_KEY  # noqa: E402
from mmjax.losses.contrastive import clip_loss  # noqa: E402
from mmjax.train.clip import make_trainer  # noqa: E402

VOCAB = 1000
MiB = 2.0 ** 20

# --------------------------------------------------------------------------------------------
# formatting


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


# --------------------------------------------------------------------------------------------
# 1. train-step throughput


def small_config(batch: int) -> ClipConfig:
    return ClipConfig(image_size=32, patch=8, width=64, depth=2, heads=4, embed_dim=64, max_len=16,
                      batch=batch, loss="clip", steps=1000, warmup_steps=10)


def setup_trainer(cfg: ClipConfig, n_dev: int, local: dict) -> dict:
    """Trainer on the first n_dev devices: state, sharded batch, compiled step and compile seconds."""
    mesh = parallel.data_mesh(jax.devices()[:n_dev])
    trainer = make_trainer(cfg, VOCAB, mesh)
    state = jax.block_until_ready(trainer.init(jax.random.key(cfg.seed)))
    batch = parallel.global_batch(local, mesh)
    t = time.perf_counter()
    step = trainer.step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t
    return {"n": n_dev, "state": state, "batch": batch, "step": step, "compile_s": compile_s}


def run_steps(run: dict, k: int) -> dict:
    """k train steps (state donated and replaced); returns the last step's metrics, blocked on."""
    state, metrics = run["state"], None
    for _ in range(k):
        state, metrics = run["step"](state, run["batch"])
    jax.block_until_ready((state, metrics))
    run["state"] = state
    return metrics


def throughput_section(args) -> None:
    cfg = small_config(args.batch)
    rng = np.random.default_rng(0)
    local = {IMAGE_KEY: rng.random((cfg.batch, cfg.image_size, cfg.image_size, 3), dtype=np.float32),
             TOKENS_KEY: rng.integers(1, VOCAB, (cfg.batch, cfg.max_len), dtype=np.int32)}
    runs = [setup_trainer(cfg, n, local) for n in args.device_counts]
    first_loss = {}
    for r in runs:  # warm-up (also: the first step's loss must not depend on the device count)
        first_loss[r["n"]] = float(run_steps(r, 1)["loss"])
        run_steps(r, args.warmup - 1)
    times: dict[int, list[tuple[float, float]]] = {r["n"]: [] for r in runs}
    for _ in range(args.rounds):  # alternate, so every device count sees the same background load
        for r in runs:
            t, c = time.perf_counter(), time.process_time()
            run_steps(r, args.steps)
            dt = time.perf_counter() - t
            times[r["n"]].append((dt, (time.process_time() - c) / dt))
    rows, best = [], {}
    for r in runs:
        n, ts = r["n"], times[r["n"]]
        walls = [t for t, _ in ts]
        best[n] = args.steps * cfg.batch / min(walls)
        med = args.steps * cfg.batch / statistics.median(walls)
        cores = statistics.median(c for _, c in ts)
        rows.append([n, cfg.batch // n, fmt(best[n]), fmt(med), fmt(1e3 * min(walls) / args.steps),
                     fmt(cores, 2), fmt(r["compile_s"]), f"{first_loss[n]:.6f}"])
    base = runs[0]["n"]
    for row, r in zip(rows, runs, strict=True):
        row.insert(4, fmt(best[r["n"]] / best[base]))
    table(f"Train-step throughput, small CLIP (global batch {cfg.batch})", [
        "devices", "rows/device", "best samples/s", "median samples/s", f"ratio vs {base}",
        "ms/step (best)", "cores", "compile s", "step-1 loss"], rows, [
        f"ClipConfig(image_size={cfg.image_size}, patch={cfg.patch}, width={cfg.width}, depth={cfg.depth}, "
        f"heads={cfg.heads}, embed_dim={cfg.embed_dim}, max_len={cfg.max_len}, batch={cfg.batch}, "
        f"loss={cfg.loss!r}),",
        f"  ViT + transformer towers, vocab {VOCAB}, float32; random images and tokens, the same "
        "global batch for every device count.",
        f"make_trainer(cfg, vocab, parallel.data_mesh(jax.devices()[:n])); compile = "
        f"trainer.step.lower().compile(), then {args.warmup} warm-up steps;",
        f"  each timing = {args.steps} steps (blocked on); {args.rounds} rounds alternating device "
        "counts; ratio uses the best round.",
        "cores = process CPU-seconds / wall-seconds while timing (median over rounds).",
        "step-1 loss: same init and batch, so it must agree across device counts (up to float "
        "reduction order).",
        f"On CPU the {max(args.device_counts)} 'devices' are fake "
        f"({_COUNT_FLAG}) and share the same {os.cpu_count()} cores: the ratio",
        "  measures the overhead of sharding (shard_map collectives, per-device dispatch), not a "
        "speed-up. On a GPU/TPU host",
        "  with that many real devices the same ratio measures scaling.",
    ])


# --------------------------------------------------------------------------------------------
# 2. compiled memory of the gathered loss


def loss_memory(batch: int, dim: int, n_dev: int):
    """memory_analysis() of jit(value_and_grad(sharded clip_loss)) on the first n_dev devices."""
    mesh = parallel.data_mesh(jax.devices()[:n_dev])
    loss = parallel.sharded_loss(clip_loss, mesh, n_sharded=2, n_replicated=1)
    emb = jax.ShapeDtypeStruct((batch, dim), jnp.float32, sharding=parallel.batch_sharding(mesh))
    scale = jax.ShapeDtypeStruct((), jnp.float32, sharding=parallel.replicated(mesh))
    t = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))).lower(emb, emb, scale).compile()
    return compiled.memory_analysis(), time.perf_counter() - t


def memory_section(args) -> None:
    n = max(args.device_counts)
    rows = []
    for b in args.mem_batches:
        m1, c1 = loss_memory(b, args.embed_dim, 1)
        mn, cn = loss_memory(b, args.embed_dim, n)
        full, block = 4.0 * b * b, 4.0 * (b // n) * b
        rows.append([
            b, fmt(full / MiB), fmt(block / MiB), fmt(m1.temp_size_in_bytes / MiB),
            fmt(mn.temp_size_in_bytes / MiB), fmt(m1.temp_size_in_bytes / mn.temp_size_in_bytes),
            fmt(m1.temp_size_in_bytes / full, 2), fmt(mn.temp_size_in_bytes / block, 2),
            fmt((m1.argument_size_in_bytes + m1.output_size_in_bytes) / MiB),
            fmt((mn.argument_size_in_bytes + mn.output_size_in_bytes) / MiB), fmt(c1 + cn, 2)])
    table(f"Per-device compiled memory of value_and_grad(clip_loss), embed dim {args.embed_dim}, "
          f"1 vs {n} devices", [
        "global B", "B×B MiB", f"B/{n}×B MiB", "temp 1-dev MiB", f"temp {n}-dev MiB/dev",
        "temp ratio", "1-dev temp/(B×B)", f"{n}-dev temp/(B/{n}×B)", "arg+out 1-dev MiB",
        f"arg+out {n}-dev MiB/dev", "compile s"], rows, [
        "jax.jit(jax.value_and_grad(parallel.sharded_loss(clip_loss, mesh, 2, 1), argnums=(0, 1, 2)))"
        ".lower(a, b, log_scale).compile()",
        "  .memory_analysis(): temp_size_in_bytes, argument_size_in_bytes + output_size_in_bytes, per "
        "device (the SPMD-partitioned",
        "  module); a, b: (B, d) float32 sharded over the data axis, log_scale replicated. Only "
        "compiled, never run.",
        "The 1-device column uses the same sharded_loss on a 1-device mesh (the path make_trainer takes "
        "with one device).",
        "B×B, B/n×B = one float32 logits block; temp/(block) = the peak temp in units of that block "
        "(it also counts",
        "  (B, d)-sized buffers: embeddings, gathered keys, their cotangents, which dominate at small B).",
        "These are XLA-CPU buffer assignments; a GPU/TPU compiler fuses differently, so absolute bytes "
        "differ there.",
    ])


# --------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps, rounds and batch sizes")
    ap.add_argument("--devices", type=int, default=8, help="device count of the sharded runs")
    ap.add_argument("--batch", type=int, default=64, help="global batch of the train-step table")
    ap.add_argument("--embed-dim", type=int, default=512, help="embedding width of the memory table")
    args = ap.parse_args()
    if args.quick:
        args.warmup, args.steps, args.rounds, args.mem_batches = 2, 5, 2, (256, 4096)
    else:
        args.warmup, args.steps, args.rounds, args.mem_batches = 3, 40, 5, (256, 1024, 4096, 16384)

    devices = jax.devices()
    n = min(args.devices, len(devices))
    args.device_counts = (1, n) if n > 1 else (1,)
    start = time.perf_counter()
    print(f"clip_step{' --quick' if args.quick else ''}: jax {jax.__version__}, backend "
          f"{jax.default_backend()}, device kind {devices[0].device_kind!r} × {len(devices)}, "
          f"{os.cpu_count()} CPUs; XLA_FLAGS={os.environ.get('XLA_FLAGS', '') or '(none)'}; "
          f"load average {load()} (other jobs share these cores)")
    if n < args.devices:
        print(f"only {len(devices)} device(s): the sharded runs use {n}")
    throughput_section(args)
    memory_section(args)
    print(f"\ntotal wall time {fmt(time.perf_counter() - start)} s; load average now {load()}")


if __name__ == "__main__":
    main()
