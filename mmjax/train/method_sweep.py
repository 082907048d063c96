"""Sweeps of whole two-tower trainings: one config per method, each trained for several seeds.

`run_method_sweep` trains every (method, seed) with `train_and_evaluate` in its own workdir
`<out>/runs/<method>_seed<seed>` and collects the final evaluation as tidy rows
(`method`, `seed`, `metric`, `value`). A finished run (its `eval.json` at the last step) is not trained
again, an interrupted one resumes from its checkpoint, and a run that diverges is marked failed in
`sweep.json` while the others go on.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmjax.configs.clip import ClipConfig
from mmjax.configs.experiment import MethodSweep, parse_methods  # noqa: F401 (re-exported)

NON_METRICS = ("step",)


def _finished(workdir: Path, cfg: ClipConfig) -> dict[str, Any] | None:
    """The final evaluation of a finished run of `cfg`, or None."""
    path = workdir / "eval.json"
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    return result if result.get("step") == cfg.steps else None


def run_method_sweep(sweep: MethodSweep, out: str | Path, seeds: Sequence[int],
                     progress: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Train and evaluate every (method, seed); write `sweep.json`; return the record with `rows`.

    Before any training, every existing run directory must hold the same config (ConfigError if not),
    so a changed `--set` never silently reuses old results.
    """
    from mmjax.train.loop import TrainingDiverged, check_workdir_config, train_and_evaluate

    out = Path(out)
    jobs = [(m, seed, dataclasses.replace(cfg, seed=seed), out / "runs" / f"{m}_seed{seed}")
            for m, cfg in sweep.methods.items() for seed in seeds]
    for _, _, run_cfg, workdir in jobs:
        check_workdir_config(workdir, run_cfg, hint="use a new --out (or the same --set values) to resume")
    out.mkdir(parents=True, exist_ok=True)
    try:  # a rerun keeps the training time of the runs it finds finished
        earlier = json.loads((out / "sweep.json").read_text())["jobs"]
    except (OSError, ValueError, KeyError):
        earlier = {}
    record: dict[str, Any] = {"name": sweep.name, "description": sweep.description, "seeds": list(seeds),
                              "methods": {m: dataclasses.asdict(c) for m, c in sweep.methods.items()},
                              "jobs": {}}
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    bar = progress(total=len(jobs)) if progress else None
    for method, seed, run_cfg, workdir in jobs:
        job = f"{method}/seed{seed}"
        if bar is not None:
            bar.set_postfix_str(job)
        t0 = time.perf_counter()
        result = _finished(workdir, run_cfg)
        status = "ok (cached)" if result is not None else "ok"
        if result is None:
            try:
                result = train_and_evaluate(run_cfg, workdir, progress=False)
                result.pop("state", None)
            except TrainingDiverged as err:
                status, result = f"failed: {err}", None
        metrics = {k: float(v) for k, v in (result or {}).items()
                   if k not in NON_METRICS and isinstance(v, int | float)}
        if result is not None and not all(math.isfinite(v) for v in metrics.values()):
            status = "failed: non-finite metric"
        rows += [{"method": method, "seed": seed, "metric": k, "value": v} for k, v in metrics.items()]
        seconds = round(time.perf_counter() - t0, 2)
        if status == "ok (cached)":
            seconds = earlier.get(job, {}).get("seconds", seconds)
        record["jobs"][job] = {"status": status, "seconds": seconds, "workdir": str(workdir)}
        record["total_seconds"] = round(time.perf_counter() - start, 2)  # of this invocation
        record["run_seconds"] = round(sum(j["seconds"] for j in record["jobs"].values()), 2)
        (out / "sweep.json").write_text(json.dumps(record, indent=1))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    record["rows"] = rows
    return record


def seed_stats(rows: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], tuple[float, float, int]]:
    """(method, metric) → (mean, sample standard deviation over seeds, number of seeds)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["metric"]), []).append(float(r["value"]))
    out = {}
    for key, vals in groups.items():
        mean = sum(vals) / len(vals)
        std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
        out[key] = (mean, std, len(vals))
    return out


def format_method_table(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> str:
    """A markdown table: one row per method, `mean ± std` over seeds for each metric."""
    stats = seed_stats(rows)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    lines = ["| method | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for m in methods:
        cells = [f"{stats[(m, k)][0]:.3f} ± {stats[(m, k)][1]:.3f}" if (m, k) in stats else "–"
                 for k in metrics]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
