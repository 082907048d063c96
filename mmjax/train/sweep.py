"""Sweeps: vmap of whole synthetic runs over (setting, seed), grouped by static shape, chunked,
sharded over devices, resumable, with per-config status."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mmjax.configs.synthetic import SyntheticConfig
from mmjax.eval.downstream import METRICS
from mmjax.train.synthetic import RunResult, RunStatic, target_names


@dataclass(frozen=True)
class Setting:
    """One column of a paper figure: a label and the config it runs."""

    label: str
    config: SyntheticConfig  # or any config with to_static/to_params/to_dict/result_rows


@dataclass(frozen=True)
class Experiment:
    """A named list of settings, run for several seeds."""

    name: str
    settings: tuple[Setting, ...]
    description: str = ""
    seeds: int = 3
    metric_label: str = "non-linear R²"  # what the heatmap cells show


@dataclass
class Job:
    """One (setting, seed) pair."""

    index: int
    setting: Setting
    seed: int


@dataclass
class Group:
    """Jobs sharing one static config, hence one compiled program."""

    static: RunStatic
    jobs: list[Job] = field(default_factory=list)


def group_jobs(experiment: Experiment, seeds: Sequence[int]) -> list[Group]:
    """All (setting, seed) jobs grouped by their static config, in first-seen order."""
    groups: dict[RunStatic, Group] = {}
    index = 0
    for setting in experiment.settings:
        static = setting.config.to_static()
        for seed in seeds:
            groups.setdefault(static, Group(static)).jobs.append(Job(index, setting, seed))
            index += 1
    return list(groups.values())


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _sweep_mesh() -> Mesh:
    return Mesh(np.array(jax.devices()), ("sweep",))


class Runner:
    """Compiles each group's vmapped run once and evaluates chunks of jobs, sharded over devices."""

    def __init__(self, group: Group, mesh: Mesh, chunk_size: int):
        self.group = group
        self.chunk_size = chunk_size
        self.mesh = mesh
        # Any static config with build_run() / draw_world(key) can be swept (synthetic latents,
        # rendered image-text scenes).
        self.run = group.static.build_run()
        shard = NamedSharding(mesh, PartitionSpec("sweep"))
        self._fn = jax.jit(jax.vmap(self.run), in_shardings=shard, out_shardings=shard)
        self._world = jax.jit(jax.vmap(group.static.draw_world))
        self._worlds: dict[int, object] = {}
        self.compile_seconds = 0.0
        self.run_seconds = 0.0
        self._compiled = None

    def worlds(self, seeds: Sequence[int]):
        """Per-seed worlds (drawn once per seed and shared across settings)."""
        missing = sorted({s for s in seeds if s not in self._worlds})
        if missing:
            keys = jnp.stack([jax.random.fold_in(jax.random.key(s), 0) for s in missing])
            drawn = self._world(keys)
            for i, s in enumerate(missing):
                self._worlds[s] = jax.tree.map(lambda x, i=i: x[i], drawn)
        return _stack([self._worlds[s] for s in seeds])

    def __call__(self, jobs: Sequence[Job]) -> RunResult:
        """Run up to chunk_size jobs (padded to chunk_size, so one compile) and return host arrays."""
        padded = list(jobs) + [jobs[-1]] * (self.chunk_size - len(jobs))
        params = _stack([j.setting.config.to_params() for j in padded])
        worlds = self.worlds([j.seed for j in padded])
        keys = jnp.stack([jax.random.fold_in(jax.random.key(j.seed), 1) for j in padded])
        if self._compiled is None:
            start = time.perf_counter()
            self._compiled = self._fn.lower(params, worlds, keys).compile()
            self.compile_seconds = time.perf_counter() - start
        start = time.perf_counter()
        out = jax.tree.map(lambda x: np.asarray(x)[: len(jobs)], self._compiled(params, worlds, keys))
        self.run_seconds += time.perf_counter() - start
        return out


def run_sweep(
    experiment: Experiment,
    out_dir: Path,
    seeds: Sequence[int],
    chunk_size: int = 8,
    progress: Callable | None = None,
) -> dict:
    """Run every job of the experiment, resuming finished chunks from `out_dir/chunks`.

    Returns the sweep record (also written to `out_dir/sweep.json`) with per-job results.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    chunk_dir = out_dir / "chunks"
    chunk_dir.mkdir(exist_ok=True)
    mesh = _sweep_mesh()
    groups = group_jobs(experiment, seeds)
    n_dev = mesh.devices.size
    chunk_size = max(n_dev, -(-chunk_size // n_dev) * n_dev)
    # Spread each group's jobs evenly over the fewest chunks of at most chunk_size (rounded up to a
    # device multiple), so padding the last chunk wastes little: 10 jobs run as 2 x 5, not 8 + 8.
    sizes = []
    for g in groups:
        n_chunks = -(-len(g.jobs) // chunk_size)
        even = -(-len(g.jobs) // n_chunks)
        sizes.append(-(-even // n_dev) * n_dev)
    plan = [(gi, g.jobs[i: i + size]) for gi, (g, size) in enumerate(zip(groups, sizes, strict=True))
            for i in range(0, len(g.jobs), size)]
    record = {
        "experiment": experiment.name, "description": experiment.description,
        "seeds": list(seeds), "devices": [str(d) for d in jax.devices()],
        "jax_version": jax.__version__, "groups": [], "jobs": {},
    }
    results: dict[int, dict] = {}
    started = time.perf_counter()
    bar = progress(total=sum(len(c) for _, c in plan), unit="run") if progress else None
    runners: dict[int, Runner] = {}
    for group in groups:
        record["groups"].append({"static": dataclasses.asdict(group.static), "jobs": len(group.jobs),
                                 "compile_seconds": 0.0, "run_seconds": 0.0, "resumed_chunks": 0})
    for gi, chunk in plan:
        group = groups[gi]
        key = _digest([dataclasses.asdict(group.static),
                       [(j.setting.config.to_dict(), j.seed) for j in chunk]])
        path = chunk_dir / f"group{gi}_{key}.npz"
        grec = record["groups"][gi]
        if path.exists():
            with np.load(path) as f:
                out = RunResult(**{k: f[k] for k in RunResult._fields})
            grec["resumed_chunks"] += 1
        else:
            if gi not in runners:
                runners[gi] = Runner(group, mesh, sizes[gi])
            runner = runners[gi]
            out = runner(chunk)
            grec["compile_seconds"], grec["run_seconds"] = runner.compile_seconds, runner.run_seconds
            np.savez(path.with_suffix(".tmp.npz"), **out._asdict())
            path.with_suffix(".tmp.npz").replace(path)
        for i, job in enumerate(chunk):
            res = jax.tree.map(lambda x, i=i: x[i], out)
            results[job.index] = {"job": job, "result": res}
            record["jobs"][str(job.index)] = _job_record(job, res, group.static)
        if bar is not None:
            bar.update(len(chunk))
            failed = sum(r["status"] != "ok" for r in record["jobs"].values())
            bar.set_postfix(group=f"{gi + 1}/{len(groups)}", failed=failed)
    if bar is not None:
        bar.close()
    record["total_seconds"] = time.perf_counter() - started
    record["results"] = results
    return record


def _job_record(job: Job, res: RunResult, static: RunStatic) -> dict:
    """sweep.json entry of one job: its config, status and final loss."""
    finite = bool(np.all(np.isfinite(res.loss_curve)) and np.all(np.isfinite(res.r2_linear))
                  and np.all(np.isfinite(res.r2_nonlinear)))
    status = "ok"
    if not finite:
        bad = np.flatnonzero(~np.isfinite(res.loss_curve))
        where = f"loss non-finite from step ~{int(bad[0]) * static.log_every}" if bad.size else (
            "non-finite evaluation")
        status = f"failed: {where}"
    return {
        "setting": job.setting.label, "seed": job.seed, "status": status,
        "final_loss": float(res.loss_curve[-1]), "config": job.setting.config.to_dict(),
    }


def tidy_rows(experiment: Experiment, record: dict) -> list[dict]:
    """results.csv rows: one per (setting, seed, encoder, factor) of every successful job."""
    rows = []
    for idx in sorted(record["results"]):
        entry = record["results"][idx]
        job, res = entry["job"], entry["result"]
        if record["jobs"][str(idx)]["status"] != "ok":
            continue
        cfg = job.setting.config
        if hasattr(cfg, "result_rows"):
            base = {"experiment": experiment.name, "setting": job.setting.label, "seed": job.seed}
            rows += [{**base, **row} for row in cfg.result_rows(res)]
            continue
        if cfg.eval_kind == "downstream":
            names = list(METRICS)
            wanted, encoders = [(m, "downstream") for m in METRICS], ("x",)
        else:
            names = target_names(cfg.latent_shape(), cfg.eval_tilde)
            wanted, encoders = _reported_targets(cfg, names), ("x", "t")
        for e, enc in enumerate(encoders):
            for name, role in wanted:
                t = names.index(name)
                rows.append({
                    "experiment": experiment.name, "setting": job.setting.label,
                    "seed": job.seed, "encoder": enc, "factor": name, "role": role,
                    "r2_linear": float(res.r2_linear[e, t]),
                    "r2_nonlinear": float(res.r2_nonlinear[e, t]),
                })
    return rows


def _reported_targets(cfg: SyntheticConfig, names: list[str]) -> list[tuple[str, str]]:
    """(target name, role) pairs reported for a config: every s_i, perturbed s~_i, blocks."""
    out = [(f"s{i + 1}", cfg.role(i)) for i in range(cfg.n_s)]
    out += [(f"s_tilde{i + 1}", "perturbed") for i in cfg.rho_set]
    out += [("s_unbiased", "unbiased"), ("m_x", "specific"), ("m_t", "specific")]
    return [(n, r) for n, r in out if n in names]
