"""The fusion × regularizer study: pre-train the fusion model with each structure regularizer, fine-tune
each pre-training on the three generated downstream tasks, beside the unimodal and majority baselines.

Jiang et al. (arXiv 2303.05952, Table 3) pre-train ALBEF with L_Sep, L_Br or L_GC and fine-tune it on VQA,
NLVR² and SNLI-VE. `run_fusion_study` does the same at cpu scale on `mmjax.data.vl_tasks`' tasks:

1. one pre-training per (method, seed) (`mmjax train` of a `FusionConfig`), in `<out>/runs/pretrain/`;
2. one fine-tuning per (method, seed, task) (`FinetuneConfig`, selected on val, test reported), in
   `<out>/runs/<task>/`;
3. the learned unimodal baselines: the plain pre-training fine-tuned with `inputs="text"` and
   `inputs="image"` (the other modality blanked), per (seed, task);
4. the exact baselines of the generated data (`mmjax.data.vl_tasks.baselines`: majority class, and the
   best any text-only or image-only predictor can do on these texts and attributes).

Every job is a run of the one training loop in its own workdir: a finished one (its `eval.json` at the
last step) is not run again, an interrupted one resumes from its checkpoint, and a failed one is marked in
`sweep.json` while the others go on. Results are tidy rows (method, seed, task, metric, value).
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmjax.configs.fusion_study import FusionStudy

PRETRAIN_METRICS = ("itm/auc", "itm/balanced_accuracy", "mlm/attributes/accuracy", "zeroshot/mean/top1",
                    "i2t_R@10", "t2i_R@10")
UNIMODAL = {"text-only": "text", "image-only": "image"}  # baseline method → FinetuneConfig.inputs
EXACT = {"majority": "majority", "text-only Bayes": "text_only_bayes", "image-only Bayes": "image_only_bayes"}


@dataclasses.dataclass(frozen=True)
class Job:
    name: str  # e.g. "pretrain/albef/seed0", "qa/sep/seed1", "pairs/text-only/seed2"
    method: str
    seed: int
    task: str  # "pretrain" or a fine-tuning task
    cfg: Any
    workdir: Path


def plan(study: FusionStudy, out: Path, seeds: Sequence[int]) -> list[Job]:
    """Every job of the study, in the order they run (each fine-tuning after its pre-training)."""
    jobs, pre_dir = [], {}
    for seed in seeds:
        for method, cfg in study.pretrain.items():
            workdir = out / "runs" / "pretrain" / f"{method}_seed{seed}"
            pre_dir[method, seed] = workdir
            jobs.append(Job(f"pretrain/{method}/seed{seed}", method, seed, "pretrain",
                            dataclasses.replace(cfg, seed=seed), workdir))
    for seed in seeds:
        for task in study.tasks:
            tuned = [(m, m, "both") for m in study.pretrain]
            if study.baselines:
                tuned += [(b, study.reference, inputs) for b, inputs in UNIMODAL.items()]
            for method, source, inputs in tuned:
                cfg = dataclasses.replace(study.finetune, task=task, pretrained=str(pre_dir[source, seed]),
                                          inputs=inputs, seed=seed)
                jobs.append(Job(f"{task}/{method}/seed{seed}", method, seed, task, cfg,
                                out / "runs" / task / f"{method}_seed{seed}"))
    return jobs


def _finished(job: Job) -> bool:
    try:
        return json.loads((job.workdir / "eval.json").read_text()).get("step") == job.cfg.steps
    except (OSError, ValueError):
        return False


def _rows(job: Job) -> list[dict[str, Any]]:
    """The job's result rows: a pre-training's final evaluation, a fine-tuning's best-on-val evaluation."""
    from mmjax.train.finetune import best_on_val

    if job.task == "pretrain":
        result = json.loads((job.workdir / "eval.json").read_text())
        metrics = {k: result[k] for k in PRETRAIN_METRICS if k in result}
    else:
        rows = [json.loads(line) for line in (job.workdir / "metrics.jsonl").read_text().splitlines()]
        metrics = {k: v for k, v in best_on_val(rows).items() if k != "step"}
    return [{"method": job.method, "seed": job.seed, "task": job.task, "metric": k, "value": float(v)}
            for k, v in metrics.items()]


def exact_baseline_rows(study: FusionStudy, seeds: Sequence[int]) -> list[dict[str, Any]]:
    """The generated data's exact baselines on the test split, per task (the same for every seed: the
    data's seed is the fine-tuning config's `data_seed`; one row per seed keeps the table's layout)."""
    from mmjax.data.vl_tasks import baselines
    from mmjax.train.finetune import _task_data, task_data_config

    image_size = next(iter(study.pretrain.values())).image_size
    rows = []
    for task in study.tasks:
        cfg = dataclasses.replace(study.finetune, task=task)
        values = baselines(_task_data(task_data_config(cfg, image_size)), "test")
        for method, key in EXACT.items():
            rows += [{"method": method, "seed": seed, "task": task, "metric": "test/accuracy",
                      "value": float(values[key])} for seed in seeds]
    return rows


def _compile_cache(directory: Path) -> None:
    """Keep compiled programs in `directory` unless the caller chose a cache: the jobs of one method share
    their programs across seeds, and the fine-tunings theirs across pre-training methods (same shapes)."""
    import jax

    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(directory))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


def run_fusion_study(study: FusionStudy, out: str | Path, seeds: Sequence[int],
                     progress: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Run (or resume) every job; write `sweep.json` after each; return the record with `rows`.

    Before any training, every existing workdir must hold the same config (ConfigError if not), so a
    changed `--set` never silently reuses old results.
    """
    from mmjax.train.loop import TrainingDiverged, check_workdir_config, train_and_evaluate

    out = Path(out)
    jobs = plan(study, out, seeds)
    _compile_cache(out / "xla_cache")
    for job in jobs:
        check_workdir_config(job.workdir, job.cfg,
                             hint="use a new --out (or the same --set values) to resume")
    out.mkdir(parents=True, exist_ok=True)
    try:
        earlier = json.loads((out / "sweep.json").read_text())["jobs"]
    except (OSError, ValueError, KeyError):
        earlier = {}
    record: dict[str, Any] = {
        "name": study.name, "description": study.description, "seeds": list(seeds),
        "tasks": list(study.tasks),
        "pretrain": {m: dataclasses.asdict(c) for m, c in study.pretrain.items()},
        "finetune": dataclasses.asdict(study.finetune), "jobs": {}}
    rows: list[dict[str, Any]] = []
    failed_pretrain: set[tuple[str, int]] = set()
    start = time.perf_counter()
    bar = progress(total=len(jobs)) if progress else None
    for job in jobs:
        if bar is not None:
            bar.set_postfix_str(job.name)
        t0 = time.perf_counter()
        source = (job.method if job.method not in UNIMODAL else study.reference, job.seed)
        if job.task != "pretrain" and source in failed_pretrain:
            status = "skipped: its pre-training failed"
        elif _finished(job):
            status = "ok (cached)"
        else:
            status = "ok"
            try:
                train_and_evaluate(job.cfg, job.workdir, progress=False)
            except TrainingDiverged as err:
                status = f"failed: {err}"
        if status.startswith("ok"):
            job_rows = _rows(job)
            if not all(math.isfinite(r["value"]) for r in job_rows):
                status = "failed: non-finite metric"
            rows += job_rows
        if job.task == "pretrain" and not status.startswith("ok"):
            failed_pretrain.add((job.method, job.seed))
        seconds = round(time.perf_counter() - t0, 2)
        if status == "ok (cached)":
            seconds = earlier.get(job.name, {}).get("seconds", seconds)
        record["jobs"][job.name] = {"status": status, "seconds": seconds, "workdir": str(job.workdir)}
        record["total_seconds"] = round(time.perf_counter() - start, 2)  # of this invocation
        record["run_seconds"] = round(sum(j["seconds"] for j in record["jobs"].values()), 2)
        (out / "sweep.json").write_text(json.dumps(record, indent=1, default=str))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if study.baselines:
        rows += exact_baseline_rows(study, seeds)
    record["rows"] = rows
    return record


def plot_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Fine-tuning rows as (method, seed, metric="<metric>/<task>", value) for the grouped bar plot."""
    return [{"method": r["method"], "seed": r["seed"], "value": r["value"],
             "metric": f"{r['metric'].replace('/', '_')}/{r['task']}"}
            for r in rows if r["task"] != "pretrain"]


def format_study_table(rows: Sequence[Mapping[str, Any]], tasks: Sequence[str],
                       metric: str = "test/accuracy") -> str:
    """A markdown table: one row per method, `mean ± std` over seeds of `metric` on each task."""
    from mmjax.train.method_sweep import seed_stats

    stats = seed_stats([{"method": r["method"], "seed": r["seed"], "metric": f"{r['task']}:{r['metric']}",
                         "value": r["value"]} for r in rows])
    methods = list(dict.fromkeys(r["method"] for r in rows if r["task"] != "pretrain"))
    lines = ["| method | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    for m in methods:
        cells = []
        for t in tasks:
            mean, std, n = stats.get((m, f"{t}:{metric}"), (math.nan, 0.0, 0))
            cells.append("–" if n == 0 else f"{mean:.3f}" if std == 0 else f"{mean:.3f} ± {std:.3f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
