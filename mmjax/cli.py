"""Command line of mmjax.

  mmjax sweep <experiment> [--scale smoke|cpu|paper] [--seeds N] [--out DIR] [--set k=v] [--grid k=vs]
              [--dry-run] [multi-host flags]
  mmjax report DIR
  mmjax train --config <file> [--workdir DIR] [--set k=v] [multi-host flags]
  mmjax eval --workdir DIR
  mmjax finetune --task qa|pairs|entailment --from PRETRAIN_WORKDIR [--workdir DIR] [--inputs both|text|image]
                 [--set k=v]
"""

from __future__ import annotations

import os

# XLA runs its own thread pool; multi-threaded OpenBLAS under XLA's CPU eigh/SVD made them slow
# and occasionally hang on small machines. Must be set before numpy/scipy load.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

from mmjax.configs.common import ConfigError, parse_sets
from mmjax.configs.synthetic import SCALES
from mmjax.data.cli_data import add_data_parser

REPO_EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def find_experiment(name: str) -> Path:
    """Path of experiments/<name>.py (cwd first, then next to the installed package), or a file."""
    candidates = [Path(name), Path.cwd() / "experiments" / f"{name}.py",
                  REPO_EXPERIMENTS / f"{name}.py"]
    for path in candidates:
        if path.suffix == ".py" and path.is_file():
            return path
    known = sorted(p.stem for d in {Path.cwd() / "experiments", REPO_EXPERIMENTS} if d.is_dir()
                   for p in d.glob("*.py") if not p.stem.startswith("_"))
    raise ConfigError(f"experiment={name!r} not found; allowed: {', '.join(known) or '(none)'}")


def load_experiment_module(path: Path):
    """Import an experiment file as a module."""
    spec = importlib.util.spec_from_file_location(f"mmjax_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HEATMAP_MAX_SETTINGS = 30  # beyond this a paper-style heatmap is unreadable; role summaries remain


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run an experiment's sweep and write results.csv, sweep.json and plots."""
    from tqdm import tqdm

    from mmjax.configs.common import override
    from mmjax.configs.grid import parse_grid, seed_values
    from mmjax.train.sweep import dry_run, run_sweep, with_grid

    given = {"seeds": args.seeds, "chunk": args.chunk}
    args.seeds = 3 if args.seeds is None else args.seeds
    args.chunk = 8 if args.chunk is None else args.chunk
    if args.seeds < 1:
        raise ConfigError(f"--seeds={args.seeds} is invalid: must be a positive integer")
    if args.chunk < 1:
        raise ConfigError(f"--chunk={args.chunk} is invalid: must be a positive integer")
    module = load_experiment_module(find_experiment(args.experiment))
    if hasattr(module, "get_structures_study"):
        if args.grid or args.dry_run:
            raise ConfigError(f"--grid/--dry-run are for synthetic and image-text sweeps; "
                              f"{args.experiment} is a three-stage study (use --set)")
        study = module.get_structures_study(args.scale, parse_sets(args.set or []))
        if given["seeds"] is not None:  # the test stage's seeds; the other stages take --set
            study = dataclasses.replace(study, seeds=tuple(range(args.seeds)))
        # Vmapping runs buys nothing on a CPU here (the convolutions are compute-bound) and compile
        # time grows with the chunk, so one run per compiled call unless --chunk says otherwise.
        return _structures_study(args, study, chunk=given["chunk"] or 1)
    if hasattr(module, "get_study"):
        if args.grid or args.dry_run:
            raise ConfigError(f"--grid/--dry-run are for synthetic and image-text sweeps; "
                              f"{args.experiment} is a pre-training + fine-tuning study")
        return _fusion_study(args, module.get_study(args.scale, parse_sets(args.set or [])))
    if hasattr(module, "get_method_sweep"):
        if args.grid or args.dry_run:
            raise ConfigError(f"--grid/--dry-run are for synthetic and image-text sweeps; "
                              f"{args.experiment} is a method sweep")
        return _method_sweep(args, module.get_method_sweep(args.scale, parse_sets(args.set or [])))
    _distributed(args)
    experiment = module.get_experiment(args.scale, parse_sets(args.set or []))
    axes = parse_grid(args.grid or [])
    seed_axes = [a for a in axes if a.field in ("seed", "seeds")]
    experiment = with_grid(experiment, [a for a in axes if a not in seed_axes], override)
    out = Path(args.out or f"runs/{experiment.name}_{args.scale}")
    seeds = seed_values(seed_axes[0]) if seed_axes else list(range(args.seeds))
    if args.dry_run:
        info = dry_run(experiment, seeds, args.chunk, time_one=not args.no_estimate)
        return _print_dry_run(experiment, info)
    print(f"mmjax sweep {experiment.name} --scale {args.scale}: {len(experiment.settings)} settings"
          f" x {len(seeds)} seeds -> {out}", file=sys.stderr)
    import jax

    record = run_sweep(experiment, out, seeds, chunk_size=args.chunk,
                       progress=lambda **kw: tqdm(desc=experiment.name, **kw))
    if jax.process_index() != 0:
        return 0
    record["scale"] = args.scale
    (out / "sweep.json").write_text(json.dumps(record, indent=2, default=str))
    return _write_report(out, record, metric_label=experiment.metric_label)


def _print_dry_run(experiment, info: dict) -> int:
    print(f"{experiment.name}: {info['runs']} runs = {info['settings']} settings x {info['seeds']} seeds; "
          f"{len(info['groups'])} compile groups, {info['chunks']} chunks, {info['processes']} process(es)")
    for gi, g in enumerate(info["groups"]):
        print(f"  group {gi}: {g['runs']} runs in {g['chunks']} chunks of {g['chunk_size']}"
              f" (steps {g['steps']}, batch {g['batch']})")
    shown = experiment.settings[:5]
    print("  settings: " + "; ".join(s.label for s in shown)
          + (f"; ... ({len(experiment.settings) - len(shown)} more)" if len(experiment.settings) > 5 else ""))
    if "estimated_seconds" in info:
        print(f"timed one chunk: compile {info['timed_compile_seconds']:.1f} s, run "
              f"{info['timed_chunk_seconds']:.1f} s; estimated wall time {info['estimated_seconds']:.0f} s"
              f" ({info['estimated_seconds'] / 3600:.2f} h)")
    return 0


def _write_report(out: Path, record: dict, metric_label: str = "non-linear R²") -> int:
    """Tables and plots of a sweep directory from its results.csv (what `mmjax report` rebuilds)."""
    from mmjax import report

    rows_path = out / "results.csv"
    name, scale = record.get("experiment", out.name), record.get("scale", "?")
    n_seeds = len(record.get("seeds", []))
    settings = _distinct(rows_path, "setting")
    label = f"{metric_label}, {{}} probe"
    written = ["results.csv", "sweep.json"]
    if 0 < len(settings) <= HEATMAP_MAX_SETTINGS:
        rows = report.read_csv(rows_path)
        title = f"{name} ({scale}, {n_seeds} seeds): seed-mean {metric_label}"
        report.plot_heatmaps(rows, out / "heatmap.png", title, label=label.format("non-linear"))
        report.plot_heatmaps(rows, out / "heatmap_linear.png",
                             title.replace("non-linear", "linear") if "non-linear" in title
                             else f"{title}, linear probe", metric="r2_linear", label=label.format("linear"))
        written += ["heatmap.png", "heatmap_linear.png"]
        print(report.format_table(rows, "x"))
    columns = _columns(rows_path)
    by = [c for c in ("n_theta", "n_rho") if len(_distinct(rows_path, c)) > 1]
    by += [c for c in columns if c not in by and c not in _FIXED_COLUMNS and len(_distinct(rows_path, c)) > 1
           and len(_distinct(rows_path, c)) <= HEATMAP_MAX_SETTINGS]
    if not by and "n_theta" in columns:
        by = ["n_theta"]  # one box per role still summarises a large sweep
    for field in by:
        summary = report.plot_role_summary(rows_path, out / f"summary_by_{field}.png",
                                           f"{name} ({scale}): {metric_label} by role", by=field,
                                           label=label.format("non-linear"))
        report.write_csv(summary, out / f"summary_by_{field}.csv")
        written += [f"summary_by_{field}.png", f"summary_by_{field}.csv"]
    if settings:
        report.write_csv(report.factor_summary(rows_path), out / "factor_summary.csv")
        check = report.role_check(rows_path)
        (out / "role_check.json").write_text(json.dumps(check, indent=2))
        written += ["factor_summary.csv", "role_check.json"]
        print(report.format_role_check(check))
    jobs = record.get("jobs", {})
    failed = [j for j in jobs.values() if j["status"] != "ok"]
    missing = record.get("missing_chunks", [])
    print(f"wrote {out}/{{{','.join(written)}}} in {record.get('total_seconds', 0):.0f} s;"
          f" {len(failed)} of {len(jobs)} runs failed"
          + (f"; {len(missing)} chunks missing" if missing else ""))
    return 0


_FIXED_COLUMNS = {"experiment", "run", "setting", "seed", "encoder", "factor", "role", "r2_linear",
                  "r2_nonlinear", "r2_compare", "mcc_linear", "mcc_nonlinear"}


def _columns(path: Path) -> list[str]:
    if not path.exists() or path.stat().st_size == 0:
        return []
    with open(path) as f:
        return f.readline().strip().split(",")


def _distinct(path: Path, column: str) -> list[str]:
    """Distinct values of one results.csv column, in order of appearance (streaming)."""
    import csv

    if column not in _columns(path):
        return []
    seen: dict[str, None] = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            seen.setdefault(r[column], None)
    return list(seen)


def cmd_report(args: argparse.Namespace) -> int:
    """Rebuild results.csv, sweep.json, tables and plots of a sweep directory from its chunk files."""
    from mmjax.train.sweep import assemble

    out = Path(args.dir)
    if not (out / "plan.json").exists():
        raise ConfigError(f"DIR={str(out)!r} is invalid: no plan.json there (not a sweep output dir)")
    record = assemble(out)
    old = out / "sweep.json"
    if old.exists():
        prev = json.loads(old.read_text())
        record.update({k: prev[k] for k in ("scale", "total_seconds") if k in prev})
    old.write_text(json.dumps(record, indent=2, default=str))
    return _write_report(out, record, metric_label=record.get("metric_label", "non-linear R²"))


def _method_sweep(args: argparse.Namespace, sweep) -> int:
    """Train every method of a `MethodSweep` for each seed; write results.csv, sweep.json, results.png."""
    from tqdm import tqdm

    from mmjax import report
    from mmjax.train.method_sweep import format_method_table, run_method_sweep

    out = Path(args.out or f"runs/{sweep.name}_{args.scale}")
    seeds = list(range(args.seeds))
    print(f"mmjax sweep {sweep.name} --scale {args.scale}: {len(sweep.methods)} methods x {len(seeds)}"
          f" seeds -> {out}", file=sys.stderr)
    record = run_method_sweep(sweep, out, seeds, progress=lambda **kw: tqdm(desc=sweep.name, **kw))
    rows = record.pop("rows")
    report.write_csv(rows, out / "results.csv")
    record["scale"] = args.scale
    report.write_json(record, out / "sweep.json")
    report.plot_grouped_bars(rows, out / "results.png", sweep.panels,
                             f"{sweep.name} ({args.scale}, {len(seeds)} seeds): seed mean ± std")
    headline = [m for m in ("zeroshot/mean/top1", "probe/mean/linear", "probe/mean/5shot", "i2t_R@10",
                            "t2i_R@10", "gap/centroid_distance")
                if any(r["metric"] == m for r in rows)]
    print(format_method_table(rows, headline))
    failed = [j for j, v in record["jobs"].items() if not v["status"].startswith("ok")]
    print(f"wrote {out}/results.csv, sweep.json, results.png in {record['total_seconds']:.0f} s;"
          f" {len(failed)} of {len(record['jobs'])} runs failed"
          + (f": {', '.join(failed)}" if failed else ""))
    return 0


def load_train_config(path: str, overrides: dict[str, str]):
    """`get_config()` of a config file (a path or an experiments/ name) with --set overrides applied."""
    from mmjax.configs.common import apply_overrides

    module = load_experiment_module(find_experiment(path))
    if not hasattr(module, "get_config"):
        raise ConfigError(f"--config {path}: the file has no get_config()")
    return apply_overrides(module.get_config(), overrides)


def _fusion_study(args: argparse.Namespace, study) -> int:
    """Pre-train every method, fine-tune each on every task (and the baselines); write results.csv,
    sweep.json, results.png and print the table."""
    from tqdm import tqdm

    from mmjax import report
    from mmjax.train.fusion_study import format_study_table, plot_rows, run_fusion_study

    out = Path(args.out or f"runs/{study.name}_{args.scale}")
    seeds = list(range(args.seeds))
    print(f"mmjax sweep {study.name} --scale {args.scale}: {len(study.pretrain)} pre-trainings x "
          f"{len(study.tasks)} tasks x {len(seeds)} seeds -> {out}", file=sys.stderr)
    record = run_fusion_study(study, out, seeds, progress=lambda **kw: tqdm(desc=study.name, **kw))
    rows = record.pop("rows")
    report.write_csv(rows, out / "results.csv")
    record["scale"] = args.scale
    report.write_json(record, out / "sweep.json")
    panels = {"test accuracy (model selected on val)": [f"test_accuracy/{t}" for t in study.tasks]}
    report.plot_grouped_bars(plot_rows(rows), out / "results.png", panels,
                             f"{study.name} ({args.scale}, {len(seeds)} seeds): seed mean ± std")
    print(format_study_table(rows, study.tasks))
    failed = [j for j, v in record["jobs"].items() if not v["status"].startswith("ok")]
    print(f"wrote {out}/results.csv, sweep.json, results.png in {record['total_seconds']:.0f} s "
          f"(jobs {record['run_seconds']:.0f} s); {len(failed)} of {len(record['jobs'])} jobs failed"
          + (f": {', '.join(failed)}" if failed else ""))
    return 0


def _structures_study(args: argparse.Namespace, study, chunk: int) -> int:
    """Tune, test and cross with misalignment (mmjax.train.structure_study); print the tables."""
    from tqdm import tqdm

    from mmjax.train.structure_study import run_structure_study

    out = Path(args.out or f"runs/{study.name}_{args.scale}")
    counts = (len(study.tune_experiment().settings) * len(study.tune_seeds),
              len(study.test_methods) * len(study.seeds),
              len(study.misalignment_experiment({}).settings) * len(study.misalignment_seeds))
    print(f"mmjax sweep {study.name} --scale {args.scale}: tune {counts[0]} + test {counts[1]} + "
          f"misalignment {counts[2]} runs -> {out}", file=sys.stderr)
    record = run_structure_study(study, out, chunk_size=chunk,
                                 progress=lambda **kw: tqdm(desc=study.name, **kw))
    print("tuned:", json.dumps(record["tuned"]))
    print((out / "test.md").read_text())
    print(f"wrote {out}/tuned.json, test.md, paired.csv, paired.png, misalignment.md, misalignment.png and "
          f"the stages' sweeps in {record['total_seconds']:.0f} s")
    return 0


def _distributed(args: argparse.Namespace) -> None:
    """Join a multi-process run when flags or MMJAX_* variables ask for one (before any JAX work)."""
    from mmjax import parallel

    parallel.initialize_distributed(coordinator=args.coordinator, num_processes=args.num_processes,
                                    process_id=args.process_id)


def _print_metrics(metrics: dict) -> None:
    keys = [k for k in sorted(metrics) if k not in ("state", "step")]
    print("\n".join(f"  {k:28s} {metrics[k]:.4f}" for k in keys))


def cmd_train(args: argparse.Namespace) -> int:
    """Train the config's model, two-tower or fusion (resuming the workdir's latest checkpoint), and
    evaluate it."""
    _distributed(args)
    from mmjax.data.tfds_io import DatasetError
    from mmjax.train.loop import ResumeMismatch, TrainingDiverged, train_and_evaluate

    cfg = load_train_config(args.config, parse_sets(args.set or []))
    workdir = Path(args.workdir or f"runs/{Path(args.config).stem}")
    try:
        result = train_and_evaluate(cfg, workdir)
    except (DatasetError, TrainingDiverged, ResumeMismatch) as err:
        raise ConfigError(str(err)) from None
    print(f"step {result['step']}: metrics in {workdir}/metrics.jsonl, checkpoints in {workdir}/checkpoints")
    _print_metrics(result)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate the latest checkpoint of a workdir; writes eval.json there."""
    from mmjax.data.tfds_io import DatasetError
    from mmjax.train.loop import evaluate_workdir

    try:
        result = evaluate_workdir(Path(args.workdir))
    except DatasetError as err:
        raise ConfigError(str(err)) from None
    print(f"step {result['step']} of {args.workdir}:")
    _print_metrics(result)
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    """Fine-tune a pre-trained fusion model on a generated downstream task; select on val, report test."""
    _distributed(args)
    from mmjax.configs.common import apply_overrides
    from mmjax.configs.finetune import FinetuneConfig
    from mmjax.data.tfds_io import DatasetError
    from mmjax.train.finetune import best_on_val, read_pretrained, task_data_config
    from mmjax.train.loop import ResumeMismatch, TrainingDiverged, train_and_evaluate

    cfg = apply_overrides(FinetuneConfig(task=args.task, pretrained=args.pretrained, inputs=args.inputs),
                          parse_sets(args.set or []))
    # A bad --from or task setting fails here, in one line, before anything is built.
    task_data_config(cfg, read_pretrained(cfg.pretrained)[0].image_size)
    suffix = "" if cfg.inputs == "both" else f"_{cfg.inputs}_only"
    workdir = Path(args.workdir or f"runs/finetune_{cfg.task}{suffix}")
    try:
        train_and_evaluate(cfg, workdir)
    except (DatasetError, TrainingDiverged, ResumeMismatch) as err:
        raise ConfigError(str(err)) from None
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    best = best_on_val(rows)
    record = {"task": cfg.task, "inputs": cfg.inputs, **best}
    (workdir / "result.json").write_text(json.dumps(record, indent=1))
    print(f"{cfg.task} ({cfg.inputs}): best val accuracy {best['val/accuracy']:.4f} at step {best['step']}, "
          f"test accuracy there {best['test/accuracy']:.4f}; {workdir}/result.json")
    _print_metrics({k: v for k, v in best.items() if k != "step"})
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argparse tree of the `mmjax` command."""
    parser = argparse.ArgumentParser(prog="mmjax", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sweep = sub.add_parser("sweep", help="run a synthetic experiment (vmapped over configs and seeds)")
    sweep.add_argument("experiment", help="name of a file in experiments/ (or a path)")
    sweep.add_argument("--scale", choices=SCALES, default="cpu")
    sweep.add_argument("--seeds", type=int, default=None,
                       help="seeds 0..N-1 (default 3; modality_structures: its test stage, default 5)")
    sweep.add_argument("--out", default=None, help="output directory (default runs/<name>_<scale>)")
    sweep.add_argument("--chunk", type=int, default=None,
                       help="runs vmapped together per compiled call (default 8; modality_structures 1)")
    sweep.add_argument("--set", action="append", metavar="FIELD=VALUE",
                       help="override any config field, e.g. --set batch=64 --set widths=32,32")
    sweep.add_argument("--grid", action="append", metavar="FIELD=VALUES",
                       help="sweep a field: lr=1e-3,1e-2 | lr=1e-3:1e-1:log5 | theta=all | theta=size:3 |"
                            " rho=all-proper | theta=1+2,3 (Cartesian product over --grid flags and seeds)")
    sweep.add_argument("--dry-run", action="store_true",
                       help="print runs, compile groups, chunks and a wall-time estimate (one timed chunk)")
    sweep.add_argument("--no-estimate", action="store_true", help="with --dry-run: skip the timed chunk")
    sweep.add_argument("--coordinator", default=None, help="multi-host: host:port of process 0")
    sweep.add_argument("--num_processes", type=int, default=None, help="multi-host: number of processes")
    sweep.add_argument("--process_id", type=int, default=None, help="multi-host: this process's index")
    sweep.set_defaults(func=cmd_sweep)
    rep = sub.add_parser("report", help="rebuild a sweep directory's results.csv, tables and plots")
    rep.add_argument("dir", help="a sweep output directory (holds plan.json and chunks/)")
    rep.set_defaults(func=cmd_report)
    train = sub.add_parser("train", help="train a two-tower or fusion model from a config file (resumes a "
                                         "workdir)")
    train.add_argument("--config", required=True, help="a config file with get_config() (or its name)")
    train.add_argument("--workdir", default=None, help="output directory (default runs/<config name>)")
    train.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a config field")
    train.add_argument("--coordinator", default=None, help="multi-host: host:port of process 0")
    train.add_argument("--num_processes", type=int, default=None, help="multi-host: number of processes")
    train.add_argument("--process_id", type=int, default=None, help="multi-host: this process's index")
    train.set_defaults(func=cmd_train)
    evaluate = sub.add_parser("eval", help="evaluate the latest checkpoint of a training workdir")
    evaluate.add_argument("--workdir", required=True)
    evaluate.set_defaults(func=cmd_eval)
    fine = sub.add_parser("finetune", help="fine-tune a pre-trained fusion model on a generated downstream "
                                           "task (resumes a workdir)")
    fine.add_argument("--task", required=True, choices=("qa", "pairs", "entailment"))
    fine.add_argument("--from", dest="pretrained", required=True, metavar="WORKDIR",
                      help="a fusion pre-training workdir (mmjax train --config experiments/fusion_tiny.py)")
    fine.add_argument("--workdir", default=None, help="output directory (default runs/finetune_<task>)")
    fine.add_argument("--inputs", default="both", choices=("both", "text", "image"),
                      help="text / image: the other modality blanked (the learned unimodal baselines)")
    fine.add_argument("--set", action="append", metavar="FIELD=VALUE", help="override a FinetuneConfig field")
    fine.add_argument("--coordinator", default=None, help="multi-host: host:port of process 0")
    fine.add_argument("--num_processes", type=int, default=None, help="multi-host: number of processes")
    fine.add_argument("--process_id", type=int, default=None, help="multi-host: this process's index")
    fine.set_defaults(func=cmd_finetune)
    add_data_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; configuration errors print one line and exit with status 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"mmjax: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
