"""Sweeps: vmap of whole runs over (setting, seed), grouped by static shape, chunked, sharded over
the local devices, resumable, spread over processes, with per-run status.

Every chunk is written to `out_dir/chunks/` as it finishes (its results `.npz`, its results.csv rows
`.csv` and its job records `.json`), so memory stays bounded and a killed sweep resumes where it
stopped. `results.csv` and `sweep.json` are assembled from the chunk files at the end (on process 0),
and `assemble(out_dir)` rebuilds them at any time (`mmjax report DIR`).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from mmjax.configs.common import ConfigError
from mmjax.configs.experiment import Experiment, Setting, with_grid  # noqa: F401 (re-exported)
from mmjax.train.synthetic import RunResult


@dataclass
class Job:
    """One (setting, seed) pair."""

    index: int
    setting: Setting
    seed: int


@dataclass
class Group:
    """Jobs sharing one static config, hence one compiled program."""

    static: object
    jobs: list[Job] = field(default_factory=list)


@dataclass
class Chunk:
    """Up to `size` jobs of one group, run by one compiled call (padded to `size`)."""

    index: int
    group: int
    jobs: list[Job]
    size: int


def group_jobs(experiment: Experiment, seeds: Sequence[int]) -> list[Group]:
    """All (setting, seed) jobs grouped by their static config, in first-seen order."""
    groups: dict[object, Group] = {}
    index = 0
    for setting in experiment.settings:
        static = setting.config.to_static()
        for seed in seeds:
            groups.setdefault(static, Group(static)).jobs.append(Job(index, setting, seed))
            index += 1
    return list(groups.values())


def plan_chunks(groups: Sequence[Group], chunk_size: int, n_devices: int) -> list[Chunk]:
    """Each group's jobs spread evenly over the fewest chunks of at most chunk_size (rounded up to a
    device multiple), so padding the last chunk wastes little: 10 jobs run as 2 x 5, not 8 + 8."""
    chunk_size = max(n_devices, -(-chunk_size // n_devices) * n_devices)
    chunks: list[Chunk] = []
    for gi, g in enumerate(groups):
        n_chunks = -(-len(g.jobs) // chunk_size)
        even = -(-len(g.jobs) // n_chunks)
        size = -(-even // n_devices) * n_devices
        for i in range(0, len(g.jobs), size):
            chunks.append(Chunk(len(chunks), gi, g.jobs[i: i + size], size))
    return chunks


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def chunk_stem(chunk: Chunk, static) -> str:
    """File stem of a chunk: its first run index (for ordering) and a digest of everything it runs."""
    key = _digest([dataclasses.asdict(static), [(j.setting.config.to_dict(), j.seed) for j in chunk.jobs]])
    return f"r{chunk.jobs[0].index:07d}_g{chunk.group}_{key}"


def build_run(static) -> Callable:
    """The pure `run(params, world, key) -> RunResult` a static config describes: synthetic latents
    (`RunStatic`), rendered image-text scenes (`ImageTextStatic`), the modality-structures study
    (`StructureStatic`), or any static config with its own
    `build_run()` method."""
    from mmjax.configs.image_text import ImageTextStatic
    from mmjax.configs.structure_scenes import StructureStatic
    from mmjax.configs.synthetic import RunStatic
    from mmjax.train.image_text import make_image_text_run
    from mmjax.train.structure_scenes import make_structure_run
    from mmjax.train.synthetic import make_run

    if hasattr(static, "build_run"):
        return static.build_run()
    builders = {RunStatic: make_run, ImageTextStatic: make_image_text_run,
                StructureStatic: make_structure_run}
    if type(static) not in builders:
        raise TypeError(f"no run builder for {type(static).__name__}: give it a build_run() method")
    return builders[type(static)](static)


def _stack(trees):
    return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def _local_mesh() -> Mesh:
    """The sweep axis over this process's devices (processes run disjoint chunks)."""
    return Mesh(np.array(jax.local_devices()), ("sweep",))


class Runner:
    """Compiles one group's vmapped run once and evaluates chunks of jobs, sharded over devices."""

    def __init__(self, static, mesh: Mesh, chunk_size: int):
        self.static = static
        self.chunk_size = chunk_size
        self.run = build_run(static)
        shard = NamedSharding(mesh, PartitionSpec("sweep"))
        # Each device runs its own slice of jobs as one vmapped program (shard_map): the runs share
        # nothing, so no collective may appear. Under plain jit + vmap the partitioner turned every
        # data-dependent while loop (the L-BFGS probes) into a loop whose predicate is an all-reduce
        # over devices, so every device waited for the slowest at every iteration; with 8 fake CPU
        # devices on 2 cores such a program aborted the process twice (no XLA message survived).
        local = jax.shard_map(jax.vmap(self.run), mesh=mesh, in_specs=PartitionSpec("sweep"),
                              out_specs=PartitionSpec("sweep"), check_vma=False)
        self._fn = jax.jit(local, in_shardings=shard, out_shardings=shard)
        # One world at a time: a world's draw needs ~0.4 GB of temporaries at the cpu recipe (25 000
        # candidate mixing matrices per layer), so drawing all seeds in one vmapped call grew with N.
        self._world = jax.jit(static.draw_world)
        self._worlds: dict[int, object] = {}
        self.compile_seconds = 0.0
        self._compiled = None

    def worlds(self, seeds: Sequence[int]):
        """Per-seed worlds (drawn once per seed and shared across settings)."""
        for s in seeds:
            if s not in self._worlds:
                self._worlds[s] = self._world(jax.random.fold_in(jax.random.key(s), 0))
        return _stack([self._worlds[s] for s in seeds])

    def inputs(self, jobs: Sequence[Job]):
        """(params, worlds, keys) of jobs padded to chunk_size (so every chunk shares one compile)."""
        padded = list(jobs) + [jobs[-1]] * (self.chunk_size - len(jobs))
        params = _stack([j.setting.config.to_params() for j in padded])
        worlds = self.worlds([j.seed for j in padded])
        keys = jnp.stack([jax.random.fold_in(jax.random.key(j.seed), 1) for j in padded])
        return params, worlds, keys

    def compile(self, jobs: Sequence[Job]) -> float:
        """Compile for these jobs' inputs if not done yet; the seconds it took (0 if cached)."""
        if self._compiled is not None:
            return 0.0
        start = time.perf_counter()
        options = getattr(self.run, "compiler_options", None)  # see mmjax.parallel.cpu_compiler_options
        self._compiled = self._fn.lower(*self.inputs(jobs)).compile(options)
        self.compile_seconds = time.perf_counter() - start
        return self.compile_seconds

    def __call__(self, jobs: Sequence[Job]) -> tuple[RunResult, float]:
        """Run up to chunk_size jobs; host arrays of the real jobs and the run seconds."""
        self.compile(jobs)
        args = self.inputs(jobs)
        start = time.perf_counter()
        out = jax.tree.map(lambda x: np.asarray(x)[: len(jobs)], self._compiled(*args))
        return out, time.perf_counter() - start


def job_status(res: RunResult, log_every: int) -> str:
    """'ok', or 'failed: ...' when the loss or an evaluation went non-finite."""
    if (np.all(np.isfinite(res.loss_curve)) and np.all(np.isfinite(res.r2_linear))
            and np.all(np.isfinite(res.r2_nonlinear))):
        return "ok"
    bad = np.flatnonzero(~np.isfinite(res.loss_curve))
    return "failed: " + (f"loss non-finite from step ~{int(bad[0]) * log_every}" if bad.size
                         else "non-finite evaluation")


def job_rows(experiment: Experiment, job: Job, res: RunResult) -> list[dict]:
    """results.csv rows of one finished job: its identity, grid values, then the config's rows."""
    base = {"experiment": experiment.name, "run": job.index, "setting": job.setting.label,
            "seed": job.seed, **dict(job.setting.grid)}
    return [{**base, **row} for row in job.setting.config.result_rows(res)]


def _write_atomic(path: Path, data: bytes) -> None:
    """Write `path` so that no reader sees half a file; the temporary name is this process's own, so
    processes writing the same file on shared storage (plan.json) never rename each other's."""
    tmp = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def _rows_csv(rows: list[dict]) -> bytes:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue().encode()


def _run_chunk(experiment: Experiment, chunk: Chunk, runner: Runner, static, stem: Path) -> None:
    """Run one chunk and write its .npz, .csv and (last, marking it complete) .json."""
    compile_s = runner.compile(chunk.jobs)
    out, run_s = runner(chunk.jobs)
    buf = io.BytesIO()
    np.savez(buf, **out._asdict())
    _write_atomic(stem.with_suffix(".npz"), buf.getvalue())
    jobs, rows = {}, []
    for i, job in enumerate(chunk.jobs):
        res = jax.tree.map(lambda x, i=i: x[i], out)
        status = job_status(res, static.log_every)
        jobs[str(job.index)] = {"setting": job.setting.label, "seed": job.seed, "status": status,
                                "final_loss": float(res.loss_curve[-1]),
                                "config": job.setting.config.to_dict()}
        if status == "ok":
            rows += job_rows(experiment, job, res)
    _write_atomic(stem.with_suffix(".csv"), _rows_csv(rows))
    meta = {"chunk": chunk.index, "group": chunk.group, "runs": len(chunk.jobs), "size": chunk.size,
            "compile_seconds": compile_s, "run_seconds": run_s, "finished_at": time.time(),
            "process": jax.process_index(), "jobs": jobs}
    _write_atomic(stem.with_suffix(".json"), json.dumps(meta, default=str).encode())


def write_plan(experiment: Experiment, out_dir: Path, seeds: Sequence[int], chunk_size: int,
               n_devices: int) -> tuple[list[Group], list[Chunk], dict]:
    """Groups, chunks and the plan record, written to `out_dir/plan.json` before any chunk runs (so
    `mmjax report` can assemble a sweep that was killed)."""
    groups = group_jobs(experiment, seeds)
    chunks = plan_chunks(groups, chunk_size, n_devices)
    plan = {"experiment": experiment.name, "description": experiment.description,
            "metric_label": experiment.metric_label, "seeds": list(seeds),
            "runs": sum(len(g.jobs) for g in groups), "processes": jax.process_count(),
            "devices": [str(d) for d in jax.devices()], "jax_version": jax.__version__,
            "started_at": time.time(),
            "groups": [{"static": dataclasses.asdict(g.static), "jobs": len(g.jobs)} for g in groups],
            "chunks": [chunk_stem(c, groups[c.group].static) for c in chunks]}
    if jax.process_index() == 0 or not (Path(out_dir) / "plan.json").exists():
        _write_atomic(Path(out_dir) / "plan.json", json.dumps(plan, default=str).encode())
    return groups, chunks, plan


def run_sweep(
    experiment: Experiment,
    out_dir: Path,
    seeds: Sequence[int],
    chunk_size: int = 8,
    progress: Callable | None = None,
    runners: dict | None = None,
) -> dict:
    """Run every job of the experiment, resuming finished chunks from `out_dir/chunks`.

    `runners` (a dict the caller keeps) caches the compiled programs by (static config, chunk size), so
    several sweeps of one study compile once.

    With several JAX processes (`jax.distributed`), process p runs chunks p, p + P, p + 2P, ... on its
    own devices; the chunk files then reach process 0 (directly on shared storage, otherwise sent
    over the distributed runtime), which writes results.csv and sweep.json. Returns the sweep record.
    """
    out_dir = Path(out_dir)
    chunk_dir = out_dir / "chunks"
    chunk_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    mesh = _local_mesh()
    groups, chunks, plan = write_plan(experiment, out_dir, seeds, chunk_size, mesh.devices.size)
    me, procs = jax.process_index(), jax.process_count()
    mine = [c for c in chunks if c.index % procs == me]
    stems = {c.index: chunk_dir / name for c, name in zip(chunks, plan["chunks"], strict=True)}
    bar = progress(total=sum(len(c.jobs) for c in mine), unit="run") if progress else None
    runners = {} if runners is None else runners
    failed = 0
    for chunk in mine:
        stem = stems[chunk.index]
        if not stem.with_suffix(".json").exists():
            static = groups[chunk.group].static
            if (static, chunk.size) not in runners:
                runners[static, chunk.size] = Runner(static, mesh, chunk.size)
            _run_chunk(experiment, chunk, runners[static, chunk.size], static, stem)
        if bar is not None:
            meta = json.loads(stem.with_suffix(".json").read_text())
            failed += sum(j["status"] != "ok" for j in meta["jobs"].values())
            bar.update(len(chunk.jobs))
            bar.set_postfix(group=f"{chunk.group + 1}/{len(groups)}", failed=failed)
    if bar is not None:
        bar.close()
    if procs > 1:
        _collect_on_process_0(chunk_dir, [stems[c.index] for c in mine])
    if me != 0:
        return {**plan, "total_seconds": time.perf_counter() - started}
    record = assemble(out_dir)
    record["total_seconds"] = time.perf_counter() - started
    (out_dir / "sweep.json").write_text(json.dumps(record, indent=2, default=str))
    return record


def assemble(out_dir: Path) -> dict:
    """Rebuild results.csv and the sweep record from `plan.json` and the chunk files (streaming).

    A chunk that finished before the plan's start time counts as resumed. Missing chunks (a killed
    run) are listed under "missing_chunks"; results.csv then holds the finished ones.
    """
    out_dir = Path(out_dir)
    plan = json.loads((out_dir / "plan.json").read_text())
    record = {k: v for k, v in plan.items() if k != "chunks"}
    for g in record["groups"]:
        g.update(compile_seconds=0.0, run_seconds=0.0, resumed_chunks=0)
    record["jobs"], missing = {}, []
    header: list[str] | None = None
    tmp = out_dir / "results.csv.tmp"
    with open(tmp, "w", newline="") as out:
        for name in plan["chunks"]:
            stem = out_dir / "chunks" / name
            if not stem.with_suffix(".json").exists():
                missing.append(name)
                continue
            meta = json.loads(stem.with_suffix(".json").read_text())
            grec = record["groups"][meta["group"]]
            if meta["finished_at"] < plan["started_at"]:
                grec["resumed_chunks"] += 1
            else:
                grec["compile_seconds"] += meta["compile_seconds"]
                grec["run_seconds"] += meta["run_seconds"]
            record["jobs"].update(meta["jobs"])
            with open(stem.with_suffix(".csv")) as f:
                lines = f.read().splitlines(keepends=True)
            if not lines:
                continue
            if header is None:
                header = lines[0].rstrip("\n").split(",")
                out.write(lines[0])
            elif lines[0].rstrip("\n").split(",") != header:
                raise ConfigError(f"{stem}.csv has columns {lines[0].strip()}; other chunks have "
                                  f"{','.join(header)} (mixed experiments in one --out?)")
            out.writelines(lines[1:])
    tmp.replace(out_dir / "results.csv")
    record["jobs"] = dict(sorted(record["jobs"].items(), key=lambda kv: int(kv[0])))
    record["missing_chunks"] = missing
    return record


def _allgather_bytes(blob: bytes) -> list[bytes]:
    """Every process's bytes, on every process (padded to the longest, over the distributed runtime)."""
    from jax.experimental import multihost_utils as mh

    sizes = np.asarray(mh.process_allgather(np.array(len(blob), np.int64))).reshape(-1)
    padded = np.frombuffer(blob.ljust(int(sizes.max()) or 1, b"\0"), np.uint8)
    rows = np.asarray(mh.process_allgather(padded))
    return [bytes(row[: int(n)]) for row, n in zip(rows, sizes, strict=True)]


def _collect_on_process_0(chunk_dir: Path, stems: Sequence[Path], files_per_round: int = 64) -> None:
    """Send this process's chunk files to process 0 unless it already sees them (shared storage)."""
    from jax.experimental import multihost_utils as mh

    me = jax.process_index()
    lists = _allgather_bytes(json.dumps([s.name for s in stems]).encode())
    visible = me != 0 or all((chunk_dir / n).with_suffix(".json").exists()
                             for b in lists for n in json.loads(b))
    visible = bool(np.asarray(mh.broadcast_one_to_all(np.array(visible))))
    if not visible:
        files = [s.with_suffix(ext) for s in stems for ext in (".npz", ".csv", ".json")]
        counts = _allgather_bytes(str(-(-len(files) // files_per_round)).encode())
        for r in range(max(int(c) for c in counts)):
            part = files[r * files_per_round: (r + 1) * files_per_round]
            got = _allgather_bytes(json.dumps({p.name: p.read_bytes().hex() for p in part}).encode())
            if me != 0:
                continue
            for blob in got[1:]:
                sent = json.loads(blob)
                # .json last: a chunk counts as complete once its .json exists.
                for fname in sorted(sent, key=lambda n: n.endswith(".json")):
                    _write_atomic(chunk_dir / fname, bytes.fromhex(sent[fname]))
    mh.sync_global_devices("mmjax_sweep_chunks")


def dry_run(experiment: Experiment, seeds: Sequence[int], chunk_size: int = 8,
            time_one: bool = True) -> dict:
    """The plan (runs, compile groups, chunks) and, timing one chunk, an estimate of the wall time.

    The estimate compiles and runs the first chunk of the first group, then scales: each group pays
    one compile (taken equal to the measured one) and its chunks cost the measured chunk time times
    (steps × batch × chunk size) relative to the timed chunk, divided over the processes.
    """
    mesh = _local_mesh()
    groups = group_jobs(experiment, seeds)
    chunks = plan_chunks(groups, chunk_size, mesh.devices.size)
    info = {"runs": sum(len(g.jobs) for g in groups), "settings": len(experiment.settings),
            "seeds": len(seeds), "groups": [], "chunks": len(chunks), "processes": jax.process_count()}
    for gi, g in enumerate(groups):
        mine = [c for c in chunks if c.group == gi]
        info["groups"].append({"runs": len(g.jobs), "chunks": len(mine), "chunk_size": mine[0].size,
                               "steps": getattr(g.static, "steps", None),
                               "batch": getattr(g.static, "batch", None)})
    if not time_one or not chunks:
        return info
    first = chunks[0]
    runner = Runner(groups[first.group].static, mesh, first.size)
    compile_s = runner.compile(first.jobs)
    _, run_s = runner(first.jobs)
    work = lambda g: (g["steps"] or 1) * (g["batch"] or 1) * g["chunk_size"]
    unit = run_s / work(info["groups"][first.group])
    total = sum(compile_s + g["chunks"] * unit * work(g) for g in info["groups"])
    info.update(timed_compile_seconds=compile_s, timed_chunk_seconds=run_s,
                estimated_seconds=total / max(1, info["processes"]))
    return info
