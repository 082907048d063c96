"""The R² evaluation's share of the cpu numeric study: one chunk per panel, trained, then evaluated alone.

    python benchmarks/study_eval.py [--panels selection_independent,...] [--chunk 5] [--repeats 3]

`bash scripts/numeric_study.sh` runs each chunk as one program (train, then evaluate), so its logs
cannot say what the evaluation costs. Per panel this builds the first chunk of the sweep's plan
(`mmjax.train.sweep`: the same settings, seeds and chunk size), trains it with the panel's recipe
(`jit(vmap(run.train))`, not timed beyond its total), then times `jit(vmap(run.evaluate))` of the
trained encoders (the probes, at the panel's eval size) over `--repeats` calls and prints the median,
the compile seconds, and the evaluation of the whole 3-seed study extrapolated from it (the chunk's
seconds x the panel's number of chunks, summed over the panels run; marked as an extrapolation).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PANELS = ("selection_independent", "selection_dependent", "perturbation_independent",
          "perturbation_dependent")


def panel_eval(name: str, scale: str, seeds: int, chunk: int, repeats: int) -> dict:
    import jax
    import numpy as np

    from mmjax.cli import find_experiment, load_experiment_module
    from mmjax.train.sweep import Runner, _local_mesh, group_jobs, plan_chunks

    experiment = load_experiment_module(find_experiment(name)).get_experiment(scale, {})
    groups = group_jobs(experiment, list(range(seeds)))
    chunks = plan_chunks(groups, chunk, 1)
    first = chunks[0]
    static = groups[first.group].static
    runner = Runner(static, _local_mesh(), first.size)
    params, worlds, keys = runner.inputs(first.jobs)
    run = runner.run
    k_train, k_eval = jax.vmap(jax.random.split, out_axes=1)(keys)
    start = time.perf_counter()
    trained, _ = jax.block_until_ready(jax.jit(jax.vmap(run.train))(params, worlds, k_train))
    train_s = time.perf_counter() - start
    start = time.perf_counter()
    evaluate = jax.jit(jax.vmap(run.evaluate)).lower(trained, params, worlds, k_eval).compile()
    compile_s = time.perf_counter() - start
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(evaluate(trained, params, worlds, k_eval))
        times.append(time.perf_counter() - start)
    return {"panel": name, "jobs": len(first.jobs), "size": first.size, "chunks": len(chunks),
            "steps": static.steps, "train_s": train_s, "compile_s": compile_s,
            "eval_s": statistics.median(times), "r2_nonlinear_mean": float(np.mean(np.asarray(out[1])))}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--panels", default=",".join(PANELS),
                        help=f"comma-separated, from {', '.join(PANELS)}")
    parser.add_argument("--scale", default="cpu")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=5, help="runs per chunk (scripts/numeric_study.sh: 5)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    panels = [p.strip() for p in args.panels.split(",") if p.strip()]
    bad = [p for p in panels if p not in PANELS]
    if bad or args.repeats < 1 or args.chunk < 1 or args.seeds < 1:
        parser.error(f"--panels={args.panels!r} is invalid: allowed {', '.join(PANELS)}" if bad
                     else "--repeats, --chunk and --seeds must be positive integers")
    print("| panel | chunk (jobs/size) | chunks | train steps | train s | eval compile s | "
          "eval s per chunk |")
    print("|---|---|---|---|---|---|---|")
    total = 0.0
    for name in panels:
        r = panel_eval(name, args.scale, args.seeds, args.chunk, args.repeats)
        total += r["eval_s"] * r["chunks"]
        print(f"| {name} | {r['jobs']}/{r['size']} | {r['chunks']} | {r['steps']} | {r['train_s']:.1f} | "
              f"{r['compile_s']:.1f} | {r['eval_s']:.2f} |", flush=True)
    print(f"evaluation of the {len(panels)} panels x {args.seeds} seeds, extrapolated from one chunk per "
          f"panel: {total:.0f} s ({total / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
