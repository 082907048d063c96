#!/usr/bin/env python
"""ALBEF-style fusion pre-training step on 1 vs 8 devices, and the compiled memory of queue-ITC vs queue size.

    python benchmarks/fusion_step.py            # default run (about 3 min on 2 CPU cores)
    python benchmarks/fusion_step.py --quick    # smoke check (fewer steps, rounds and queue sizes)

Prints two plain-text tables:

1. Train-step throughput (samples/s) of `experiments/fusion_tiny.py`'s model (`mmjax.train.fusion.
   make_trainer`: ITC with queue and distillation, ITM with hard negatives, MLM, EMA update, all in one
   jitted step) on a 1-device and an 8-device mesh, beside the two-tower CLIP step of the same towers
   (`mmjax.train.clip.make_trainer` of the same widths) on 1 device, so the fusion objective's cost is
   read as a ratio. Rounds alternate between the three in one process; compile time is measured on its
   own (`lower(...).compile()`), then warm-up steps run before any timing.
2. Per-device compiled memory (`compiled.memory_analysis()`) of `jit(value_and_grad(itc_loss))` under
   `parallel.sharded_loss` at ALBEF's batch 512 and ITC dimension 256, against the queue size Q (0 is the
   in-batch loss), on 1 and 8 devices. Each device scores its B/n rows against B + Q keys, so the peak
   should grow with one (B/n × (B + Q)) logits block per direction, and the queues (Q × d each, the same on
   every device) are arguments. Nothing is executed: only lowered and compiled.

Without accelerators, 8 fake CPU devices are made with
`XLA_FLAGS=--xla_force_host_platform_device_count=8`, set before jax is imported (an existing device-count
setting is kept). The fake devices share the host's cores: on CPU the 8-device column measures the
overhead of sharding (collectives, per-device dispatch), not a speed-up; on a GPU/TPU host with 8 devices
the same ratio measures scaling.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

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
from mmjax.losses.fusion import itc_loss  # noqa: E402
from mmjax.train import clip as clip_train  # noqa: E402
from mmjax.train import fusion as fusion_train  # noqa: E402

VOCAB = 1000  # the last id is [MASK]; random tokens never use it nor the special ids 0..3
MiB = 2.0 ** 20
ROOT = Path(__file__).resolve().parents[1]


def load() -> str:
    return ", ".join(f"{x:.1f}" for x in os.getloadavg())


def tiny_config(batch: int):
    """experiments/fusion_tiny.py's config, with the benchmark's global batch (queue = 4 batches)."""
    sys.path.insert(0, str(ROOT / "experiments"))
    from fusion_tiny import get_config  # noqa: PLC0415

    cfg = get_config()
    return replace(cfg, batch=batch, queue_size=4 * batch)


def clip_twin(cfg) -> ClipConfig:
    """The two-tower CLIP of the same towers: the fusion config's ViT, and a bidirectional text transformer
    of the ViT's depth (fusion_tiny's text-only depth; the fusion layers are what CLIP does not have)."""
    return ClipConfig(image_size=cfg.image_size, patch=cfg.patch, width=cfg.width, depth=cfg.depth,
                      heads=cfg.heads, embed_dim=cfg.embed_dim, max_len=cfg.max_len, batch=cfg.batch,
                      loss="clip", causal=False, image_pool="cls", steps=cfg.steps,
                      warmup_steps=cfg.warmup_steps)


# --------------------------------------------------------------------------------------------
# 1. train-step throughput


def setup(name: str, make, cfg, n_dev: int, local: dict) -> dict:
    mesh = parallel.data_mesh(jax.devices()[:n_dev])
    trainer = make(cfg, VOCAB, mesh)
    state = jax.block_until_ready(trainer.init(jax.random.key(cfg.seed)))
    batch = parallel.global_batch(local, mesh)
    t = time.perf_counter()
    step = trainer.step.lower(state, batch).compile()
    compile_s = time.perf_counter() - t
    mem = step.memory_analysis()
    return {"name": name, "n": n_dev, "state": state, "batch": batch, "step": step, "compile_s": compile_s,
            "temp_mib": mem.temp_size_in_bytes / MiB if mem is not None else None}


def run_steps(run: dict, k: int) -> dict:
    state, metrics = run["state"], None
    for _ in range(k):
        state, metrics = run["step"](state, run["batch"])
    jax.block_until_ready((state, metrics))
    run["state"] = state
    return metrics


def throughput_section(args) -> None:
    cfg = tiny_config(args.batch)
    rng = np.random.default_rng(0)
    local = {IMAGE_KEY: rng.random((cfg.batch, cfg.image_size, cfg.image_size, 3), dtype=np.float32),
             TOKENS_KEY: rng.integers(4, VOCAB - 1, (cfg.batch, cfg.max_len), dtype=np.int32)}
    local[TOKENS_KEY][:, -4:] = 0  # some padding at the end, as real captions have
    n = max(args.device_counts)
    runs = [setup("fusion", fusion_train.make_trainer, cfg, 1, local)]
    if n > 1:
        runs.append(setup("fusion", fusion_train.make_trainer, cfg, n, local))
    runs.append(setup("clip (same towers)", clip_train.make_trainer, clip_twin(cfg), 1, local))
    first = {}
    for r in runs:
        first[id(r)] = float(run_steps(r, 1)["loss"])
        run_steps(r, args.warmup - 1)
    times: dict[int, list[tuple[float, float]]] = {id(r): [] for r in runs}
    for _ in range(args.rounds):  # alternate, so every row sees the same background load
        for r in runs:
            t, c = time.perf_counter(), time.process_time()
            run_steps(r, args.steps)
            dt = time.perf_counter() - t
            times[id(r)].append((dt, (time.process_time() - c) / dt))
    best = {id(r): args.steps * cfg.batch / min(t for t, _ in times[id(r)]) for r in runs}
    base = best[id(runs[0])]
    rows = []
    for r in runs:
        walls = [t for t, _ in times[id(r)]]
        rows.append([r["name"], r["n"], cfg.batch // r["n"], fmt(best[id(r)]),
                     fmt(args.steps * cfg.batch / statistics.median(walls)), fmt(best[id(r)] / base),
                     fmt(1e3 * min(walls) / args.steps),
                     fmt(statistics.median(c for _, c in times[id(r)]), 2),
                     fmt(r["compile_s"]), fmt(r["temp_mib"]), f"{first[id(r)]:.6f}"])
    table(f"Train-step throughput, fusion_tiny (global batch {cfg.batch}, queue {cfg.queue_size})", [
        "model", "devices", "rows/device", "best samples/s", "median samples/s", "ratio vs fusion 1-dev",
        "ms/step (best)", "cores", "compile s", "temp MiB/dev", "step-1 loss"], rows, [
        f"fusion: experiments/fusion_tiny.py with batch={cfg.batch}, queue_size={cfg.queue_size}: ViT width "
        f"{cfg.width} depth {cfg.depth}, text {cfg.text_depth - cfg.fusion_layers} + {cfg.fusion_layers} "
        f"fusion layer(s), embed {cfg.embed_dim};",
        "  ITC (queue + distillation) + ITM (hard negatives: 3B fused pairs) + MLM (+ momentum MLM) + EMA, "
        "one jitted step.",
        "clip (same towers): mmjax.train.clip.make_trainer of the same ViT and a text transformer of the "
        "text-only depth, loss 'clip'.",
        f"vocab {VOCAB}, float32; random images and tokens, the same global batch for every row.",
        f"compile = trainer.step.lower().compile(), then {args.warmup} warm-up steps; each timing = "
        f"{args.steps} steps (blocked on);",
        f"  {args.rounds} rounds alternating rows; ratio uses the best round. temp MiB/dev = the compiled "
        "step's XLA temp buffers.",
        "cores = process CPU-seconds / wall-seconds while timing (median over rounds).",
        "step-1 loss: the fusion rows have the same init, batch and key, so it must agree across device "
        "counts (up to reduction order).",
        f"On CPU the {n} 'devices' are fake ({_COUNT_FLAG}) and share the same {os.cpu_count()} cores: the "
        "ratio measures the",
        "  overhead of sharding (shard_map collectives, per-device dispatch), not a speed-up; on a GPU/TPU "
        "host it measures scaling.",
    ])


# --------------------------------------------------------------------------------------------
# 2. compiled memory of the queue-ITC loss


def _itc(img, txt, img_m, txt_m, q_img, q_txt, temp, axis_name=None):
    return itc_loss(img, txt, img_m, txt_m, q_img, q_txt, temp=temp, alpha=0.4, axis_name=axis_name).loss


def itc_memory(batch: int, queue: int, dim: int, n_dev: int):
    mesh = parallel.data_mesh(jax.devices()[:n_dev])
    loss = parallel.sharded_loss(_itc, mesh, n_sharded=4, n_replicated=3)
    rows = jax.ShapeDtypeStruct((batch, dim), jnp.float32, sharding=parallel.batch_sharding(mesh))
    q = jax.ShapeDtypeStruct((queue, dim), jnp.float32, sharding=parallel.replicated(mesh))
    temp = jax.ShapeDtypeStruct((), jnp.float32, sharding=parallel.replicated(mesh))
    t = time.perf_counter()
    compiled = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 6))).lower(
        rows, rows, rows, rows, q, q, temp).compile()
    return compiled.memory_analysis(), time.perf_counter() - t


def memory_section(args) -> None:
    n = max(args.device_counts)
    b, d = args.itc_batch, args.itc_dim
    rows, temps = [], {}
    for q in args.queues:
        m1, c1 = itc_memory(b, q, d, 1)
        mn, cn = itc_memory(b, q, d, n)
        temps[q] = (m1.temp_size_in_bytes, mn.temp_size_in_bytes)
        block1, blockn = 4.0 * b * (b + q), 4.0 * (b // n) * (b + q)
        rows.append([q, fmt(block1 / MiB), fmt(m1.temp_size_in_bytes / MiB),
                     fmt(m1.temp_size_in_bytes / block1, 2),
                     fmt(mn.temp_size_in_bytes / MiB), fmt(mn.temp_size_in_bytes / blockn, 2),
                     fmt(m1.temp_size_in_bytes / mn.temp_size_in_bytes),
                     fmt((mn.argument_size_in_bytes + mn.output_size_in_bytes) / MiB), fmt(c1 + cn, 2)])
    q0 = args.queues[0]
    for row, q in zip(rows, args.queues, strict=True):
        row.insert(7, fmt(temps[q][1] / temps[q0][1]))
    table(f"Per-device compiled memory of value_and_grad(itc_loss) vs queue size, global batch {b}, dim {d}, "
          f"1 vs {n} devices", [
        "queue Q", "B×(B+Q) MiB", "temp 1-dev MiB", "1-dev temp/block", f"temp {n}-dev MiB/dev",
        f"{n}-dev temp/(B/{n} block)", f"1-dev/{n}-dev", f"{n}-dev vs Q={q0}", f"arg+out {n}-dev MiB/dev",
        "compile s"], rows, [
        "jax.jit(jax.value_and_grad(parallel.sharded_loss(itc_loss, mesh, 4, 3), argnums=(0, 1, 6)))"
        ".lower(...).compile().memory_analysis();",
        f"  features (B, {d}) float32 sharded over the data axis (online and momentum, image and text), two "
        f"queues (Q, {d}) and the",
        "  temperature replicated; alpha 0.4. Only compiled, never run. block = one float32 logits block of "
        "the rows a device scores",
        "  against B + Q keys: B × (B + Q) on 1 device, B/n × (B + Q) per device on n. arg+out counts the "
        "replicated queues.",
        "These are XLA-CPU buffer assignments; a GPU/TPU compiler fuses differently, so absolute bytes "
        "differ there.",
    ])


# --------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps, rounds and queue sizes")
    ap.add_argument("--devices", type=int, default=8, help="device count of the sharded runs")
    ap.add_argument("--batch", type=int, default=64, help="global batch of the train-step table")
    ap.add_argument("--itc-batch", type=int, default=512,
                    help="global batch of the memory table (ALBEF: 512)")
    ap.add_argument("--itc-dim", type=int, default=256, help="ITC dimension of the memory table (ALBEF: 256)")
    args = ap.parse_args()
    if args.quick:
        args.warmup, args.steps, args.rounds, args.queues = 2, 3, 2, (0, 4096)
    else:
        args.warmup, args.steps, args.rounds, args.queues = 3, 20, 5, (0, 4096, 16384, 65536)
    devices = jax.devices()
    n = min(args.devices, len(devices))
    args.device_counts = (1, n) if n > 1 else (1,)
    for name, value in (("--batch", args.batch), ("--itc-batch", args.itc_batch)):
        if value < 1 or value % n:
            ap.error(f"{name}={value}: must be a positive multiple of the device count {n}")
    start = time.perf_counter()
    print(f"fusion_step{' --quick' if args.quick else ''}: jax {jax.__version__}, backend "
          f"{jax.default_backend()}, device kind {devices[0].device_kind!r} × {len(devices)}, "
          f"{os.cpu_count()} CPUs; XLA_FLAGS={os.environ.get('XLA_FLAGS', '') or '(none)'}; "
          f"load average {load()}")
    if n < args.devices:
        print(f"only {len(devices)} device(s): the sharded runs use {n}")
    throughput_section(args)
    memory_section(args)
    print(f"\ntotal wall time {fmt(time.perf_counter() - start)} s; load average now {load()}")


if __name__ == "__main__":
    main()
