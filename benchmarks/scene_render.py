#!/usr/bin/env python
"""Procedural scenes: images rendered per second on this machine vs images decoded from the tfds dataset.

    python benchmarks/scene_render.py            # 64x64 and 32x32, batch 1024, 5 repeats (~1 min on 2 cores)
    python benchmarks/scene_render.py --quick    # smoke check (32x32, batch 256, 2 repeats)

For each image size:

- render: `scene_examples` (jitted: sample factors, render, uint8 conversion, caption tokens with a
  selection/perturbation mask: all attributes selected, background perturbed), one call of `batch`
  images, timed after compile and one warm-up call, `block_until_ready` included; the median and best of
  the repeats are reported;
- + strings: the same call plus moving the arrays to numpy and decoding the caption strings on the host
  (`iter_chunks`, what `build_scenes` feeds to tfds);
- tfds read: the same number of examples read back from a scene dataset built (with `build_scenes`) in a
  temporary directory, through `tfds.data_source`: one `source[i]` per example, and one batched
  `source.__getitems__(indices)` call. A read decodes the whole example (image, caption, tokens, factors,
  bias record), which is what a training pipeline gets.

The ratio column is render (+ strings) throughput over the batched tfds read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import jax
import numpy as np
import tensorflow_datasets as tfds

from mmjax.data.scene_dataset import SceneDataConfig, build_scenes, iter_chunks, scene_examples, split_key
from mmjax.data.scenes import SceneConfig


def timed(fn, repeats: int) -> list[float]:
    """Wall times of `repeats` calls of fn."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def bench_size(size: int, batch: int, repeats: int, data_dir: str) -> dict:
    """One table row: compile time, render and read throughputs (images/s) at one image size."""
    cfg = SceneDataConfig(scene=SceneConfig(image_size=size), perturbed=("background",), num_train=batch,
                          num_test=1)
    key = split_key(cfg, "train")
    args = (cfg.scene, cfg.selected_mask, cfg.perturbed_mask, float(cfg.p_change))

    def render():
        jax.block_until_ready(scene_examples(key, 0, batch, *args))

    start = time.perf_counter()
    scene_examples.lower(key, 0, batch, *args).compile()
    compile_s = time.perf_counter() - start
    render()  # warm-up (fills the jit cache through the normal call path)
    render_t = timed(render, repeats)
    strings_t = timed(lambda: list(iter_chunks(cfg, "train", chunk_size=batch)), repeats)

    name = f"bench_scenes_{size}"
    build_start = time.perf_counter()
    build_scenes(cfg, data_dir, name=name, progress=False, chunk_size=batch)
    build_s = time.perf_counter() - build_start
    source = tfds.data_source(name, split="train", data_dir=data_dir)
    indices = list(range(batch))
    source[0]  # noqa: B018  (opens the file)
    single_t = timed(lambda: [source[i] for i in indices], repeats)
    batched_t = timed(lambda: source.__getitems__(indices), repeats)
    example = source[batch - 1]
    assert example["image"].shape == (size, size, 3)

    def rate(times: list[float]) -> tuple[float, float]:
        return batch / statistics.median(times), batch / min(times)

    return {"size": size, "batch": batch, "compile_s": compile_s, "build_s": build_s,
            "render": rate(render_t), "strings": rate(strings_t), "single": rate(single_t),
            "batched": rate(batched_t)}


def fmt(x: float) -> str:
    """A throughput with 3 significant figures."""
    return f"{x:,.0f}" if x >= 100 else f"{x:.3g}"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="32x32 only, batch 256, 2 repeats")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="image sizes (default 64 32)")
    parser.add_argument("--batch", type=int, default=None, help="images per call (default 1024)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (default 5)")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([32] if args.quick else [64, 32])
    batch = args.batch or (256 if args.quick else 1024)
    repeats = args.repeats or (2 if args.quick else 5)

    wall = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory() as data_dir:
        for size in sizes:
            rows.append(bench_size(size, batch, repeats, data_dir))

    headers = ["size", "batch", "compile s", "render img/s", "+ strings img/s", "tfds [i] img/s",
               "tfds __getitems__ img/s", "render/read", "+strings/read", "build s"]
    cells = [headers]
    for r in rows:
        cells.append([f"{r['size']}x{r['size']}", str(r["batch"]), f"{r['compile_s']:.1f}",
                      f"{fmt(r['render'][0])} ({fmt(r['render'][1])})",
                      f"{fmt(r['strings'][0])} ({fmt(r['strings'][1])})",
                      f"{fmt(r['single'][0])} ({fmt(r['single'][1])})",
                      f"{fmt(r['batched'][0])} ({fmt(r['batched'][1])})",
                      f"{r['render'][0] / r['batched'][0]:.2f}", f"{r['strings'][0] / r['batched'][0]:.2f}",
                      f"{r['build_s']:.1f}"])
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    print(f"Procedural scenes: rendered vs read from tfds, {jax.devices()[0].platform.upper()} "
          f"({os.cpu_count()} cores visible), median (best) of {repeats} repeats")
    for j, row in enumerate(cells):
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths,
                                                                                              strict=True))))
        if j == 0:
            print("  ".join("-" * w for w in widths))
    print("  render = jit(scene_examples): factors + image + uint8 + caption tokens, one call per batch")
    print("  + strings = render + device->numpy + caption strings decoded on the host (iter_chunks)")
    print("  tfds = tfds.data_source over the array_record files of build_scenes; whole examples decoded")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"total wall time {time.perf_counter() - wall:.1f} s; load average now {load}; "
          f"jax {jax.__version__}, numpy {np.__version__}, tfds {tfds.__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
