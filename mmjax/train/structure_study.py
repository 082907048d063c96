"""Run the three stages of the modality-structures study and turn them into tables and plots.

`run_structure_study(study, out)` runs `out/tune`, `out/test` and `out/misalignment` as ordinary sweeps
(each resumable from its chunk files, one compile shared by all three), chooses each regularizer's
weight on the val stream between the first two, and writes `tuned.json`, `paired.csv`, `test.md`,
`misalignment.md`, `paired.png` and `misalignment.png` (docs/structures.md says what each holds).
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mmjax import report
from mmjax.configs.structure_scenes import IMAGE_ONLY, REGULARIZERS
from mmjax.configs.structure_study import StructureStudy
from mmjax.data.scenes import DISCRETE
from mmjax.train.sweep import run_sweep

# Two-sided 95 % Student t quantiles by degrees of freedom (scipy.stats.t.ppf(0.975, df)).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262,
        10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with `df` degrees of freedom (the next tabled df below)."""
    return T975[max(k for k in T975 if k <= df)] if df >= 1 else math.nan


def run_values(rows: list[dict]) -> dict[tuple[str, int], dict[str, float]]:
    """{(setting, seed): {"<feature>|<factor>|<metric>": value}} of a results.csv."""
    out: dict[tuple[str, int], dict[str, float]] = defaultdict(dict)
    for r in rows:
        out[(r["setting"], int(r["seed"]))][f"{r['feature']}|{r['factor']}|{r['metric']}"] = float(r["value"])
    return out


def representation(method: str) -> str:
    """The image feature a method offers downstream: L_Sep's shared and independent features together."""
    return "img_both" if "sep" in method.split("+") else "img"


def val_score(values: dict[str, float], method: str, named: list[str]) -> float:
    """Mean of zero-shot top-1 over the named attributes, linear-probe accuracy of every attribute from
    the method's image representation, and R² (floored at 0) of position and rotation from it."""
    feat = representation(method)
    parts = [values[f"img|{a}|zeroshot"] for a in named]
    parts += [values[f"{feat}|{a}|linear"] for a in DISCRETE]
    parts += [max(values[f"{feat}|{p}|linear"], 0.0) for p in IMAGE_ONLY]
    return float(np.mean(parts))


def choose_tuned(rows: list[dict], study: StructureStudy) -> tuple[dict, list[dict]]:
    """Each regularizer's grid point with the best seed-mean val score; and the score of every point."""
    named = [a for a in DISCRETE if a in study.base.selected]
    by_setting: dict[str, list[float]] = defaultdict(list)
    meta = {}
    for (setting, _), values in run_values(rows).items():
        method = setting.split(" ")[0]
        by_setting[setting].append(val_score(values, method, named))
        meta[setting] = method
    table = [{"setting": s, "method": meta[s], "val_score": float(np.mean(v)), "seeds": len(v)}
             for s, v in by_setting.items()]
    experiment = study.tune_experiment()
    configs = {s.label: s.config for s in experiment.settings}
    tuned = {}
    for r in REGULARIZERS:
        points = [t for t in table if t["method"] == r]
        if not points:
            continue
        best = configs[max(points, key=lambda t: t["val_score"])["setting"]]
        tuned[r] = {f"{r}_weight": getattr(best, f"{r}_weight")}
        tuned[r].update({"sep": {"sep_tau": best.sep_tau}, "br": {"br_t": best.br_t}}.get(r, {}))
    return tuned, sorted(table, key=lambda t: (t["method"], -t["val_score"]))


def paired_metrics(study: StructureStudy) -> list[tuple[str, Callable[[dict, str], float]]]:
    """(name, value(run values, method)) of every metric of the paired table."""
    named = [a for a in DISCRETE if a in study.base.selected]
    out = [(f"zero-shot {a}", lambda v, m, a=a: v[f"img|{a}|zeroshot"]) for a in named]
    out.append(("zero-shot mean", lambda v, m: float(np.mean([v[f"img|{a}|zeroshot"] for a in named]))))
    for feature, tag in (("img", "shared"), (None, "repr.")):
        for a in DISCRETE:
            out.append((f"probe {a} ({tag})",
                        lambda v, m, a=a, f=feature: v[f"{f or representation(m)}|{a}|linear"]))
        for p in IMAGE_ONLY:
            out.append((f"R² {p} ({tag})",
                        lambda v, m, p=p, f=feature: v[f"{f or representation(m)}|{p}|linear"]))
    out.append(("probe template (text)", lambda v, m: v["txt|template|linear"]))
    k = study.base.k_shot
    out.append((f"{k}-shot mean (shared)",
                lambda v, m: float(np.mean([v[f"img|{a}|{k}shot"] for a in DISCRETE]))))
    for name in ("i2t_R@10", "t2i_R@10", "gap/centroid_distance", "gap/mean_paired_distance"):
        out.append((name, lambda v, m, n=name: v[f"||{n}"]))
    return out


def paired_table(rows: list[dict], study: StructureStudy) -> list[dict]:
    """Per method and metric: seed mean, and the paired difference to L_Con alone (same seeds) with its
    95 % t interval."""
    values = run_values(rows)
    seeds = sorted({s for _, s in values})
    out = []
    for method in study.test_methods:
        for name, fn in paired_metrics(study):
            paired = [s for s in seeds if (method, s) in values and ("clip", s) in values]
            mine = [fn(values[(method, s)], method) for s in seeds if (method, s) in values]
            base = [fn(values[("clip", s)], "clip") for s in paired]
            row = {"method": method, "metric": name, "mean": float(np.mean(mine)), "seeds": len(mine),
                   "diff": "", "ci_low": "", "ci_high": ""}  # filled for paired methods
            if method != "clip" and len(base) == len(mine) and len(mine) > 1:
                d = np.asarray(mine) - np.asarray(base)
                half = t975(len(d) - 1) * float(np.std(d, ddof=1)) / math.sqrt(len(d))
                mean = float(d.mean())
                row.update(diff=mean, ci_low=mean - half, ci_high=mean + half)
            out.append(row)
    return out


def format_paired(table: list[dict], study: StructureStudy) -> str:
    """Markdown: metrics as rows; L_Con's mean, then each method's paired difference [95 % CI]."""
    methods = list(study.test_methods)
    cell = {(r["method"], r["metric"]): r for r in table}
    lines = ["| metric | clip | " + " | ".join(f"{m} − clip" for m in methods[1:]) + " |",
             "|---|" + "---|" * len(methods)]
    for name, _ in paired_metrics(study):
        parts = [f"{cell[('clip', name)]['mean']:.3f}" if ("clip", name) in cell else ""]
        for m in methods[1:]:
            r = cell.get((m, name), {})
            if r.get("diff", "") != "":
                sig = "**" if r["ci_low"] > 0 or r["ci_high"] < 0 else ""
                parts.append(f"{sig}{r['diff']:+.3f}{sig} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]")
            else:
                parts.append("")
        lines.append(f"| {name} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


MISALIGNMENT_PANELS = (("clip", "img"), ("sep", "img"), ("sep", "img_ind"), ("sep", "img_both"),
                       ("br", "img"), ("gc", "img"))


def misalignment_tables(rows: list[dict]) -> dict[tuple[str, str], tuple[list[str], list[str], np.ndarray]]:
    """{(method, feature): (factors, bias settings, seed-mean score matrix)}: MCC for attributes, R² for
    position and rotation, from the image features."""
    factors = [*DISCRETE, *IMAGE_ONLY]
    acc: dict = defaultdict(list)
    settings: list[str] = []
    for r in rows:
        metric = "mcc" if r["factor"] in DISCRETE else "linear"
        if r["factor"] in factors and r["metric"] == metric:
            acc[(r["method"], r["feature"], r["bias"], r["factor"])].append(float(r["value"]))
            if r["bias"] not in settings:
                settings.append(r["bias"])
    out = {}
    for method, feature in MISALIGNMENT_PANELS:
        mat = np.full((len(factors), len(settings)), np.nan)
        for i, f in enumerate(factors):
            for j, s in enumerate(settings):
                if v := acc.get((method, feature, s, f)):
                    mat[i, j] = np.mean(v)
        if np.isfinite(mat).any():
            out[(method, feature)] = (factors, settings, mat)
    return out


def format_misalignment(tables: dict, roles: dict[str, dict[str, str]]) -> str:
    """Markdown, one block per panel: factors × settings, the cell's role initial beside its score."""
    blocks = []
    for (method, feature), (factors, settings, mat) in tables.items():
        lines = [f"**{method}, {feature}** (MCC; R² for position and rotation; u unbiased, p perturbed, "
                 "o omitted, i image-only)", "", "| factor | " + " | ".join(settings) + " |",
                 "|---|" + "---|" * len(settings)]
        for i, f in enumerate(factors):
            cells = [f"{mat[i, j]:.2f} {roles.get(s, {}).get(f, '?')[0]}" for j, s in enumerate(settings)]
            lines.append(f"| {f} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


ROLE_ORDER = ("unbiased", "perturbed", "omitted", "image-only")


def role_summary(tables: dict, roles: dict[str, dict[str, str]]) -> list[dict]:
    """Per panel and factor role: the mean score over every (factor, setting) cell of that role (MCC for
    attributes; R² for position and rotation, the image-only role), its cell count, and the mean of the
    cell-wise difference to L_Con's image feature on the same cells."""
    base = tables.get(("clip", "img"))
    out = []
    for (method, feature), (factors, settings, mat) in tables.items():
        for role in ROLE_ORDER:
            cells = [(i, j) for i, f in enumerate(factors) for j, st in enumerate(settings)
                     if roles.get(st, {}).get(f) == role and np.isfinite(mat[i, j])]
            if not cells:
                continue
            diff = (float(np.mean([mat[i, j] - base[2][i, j] for i, j in cells]))
                    if base is not None and (method, feature) != ("clip", "img") else float("nan"))
            out.append({"method": method, "feature": feature, "role": role, "cells": len(cells),
                        "mean": float(np.mean([mat[i, j] for i, j in cells])), "diff_to_clip": diff})
    return out


def format_role_summary(summary: list[dict]) -> str:
    """Markdown: panels × roles, each cell `mean (difference to L_Con's img)`."""
    present = [r for r in ROLE_ORDER if any(s["role"] == r for s in summary)]
    panels = list(dict.fromkeys((s["method"], s["feature"]) for s in summary))
    cell = {(s["method"], s["feature"], s["role"]): s for s in summary}
    counts = {r: next(s["cells"] for s in summary if s["role"] == r) for r in present}
    head = " | ".join(f"{r} ({counts[r]} cells)" for r in present)
    lines = [f"| method, feature | {head} |", "|---|" + "---|" * len(present)]
    for method, feature in panels:
        parts = []
        for r in present:
            c = cell.get((method, feature, r))
            parts.append("" if c is None else f"{c['mean']:.2f}" + (
                "" if not np.isfinite(c["diff_to_clip"]) else f" ({c['diff_to_clip']:+.2f})"))
        lines.append(f"| {method}, {feature} | " + " | ".join(parts) + " |")
    return "\n".join(lines)


def plot_misalignment(tables: dict, path: Path, title: str) -> None:
    """Heatmaps laid out like the image–text study's: one panel per (method, feature)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(tables.items())
    if not panels:
        return
    cols = min(3, len(panels))
    n_rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(n_rows, cols, squeeze=False, figsize=(4.6 * cols, 4.3 * n_rows),
                             gridspec_kw={"hspace": 0.75, "wspace": 0.5})
    for ax, ((method, feature), (factors, settings, mat)) in zip(axes.flat, panels, strict=False):
        im = report.heatmap_panel(ax, mat, factors, settings, fontsize=7)
        ax.set_title(f"{method}: {feature}", fontsize=9)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.7, label="MCC (R² for position, rotation)")
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def plot_paired(table: list[dict], study: StructureStudy, path: Path, title: str) -> None:
    """Paired differences to L_Con with 95 % intervals, one row of bars per metric group."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, _ in paired_metrics(study) if not n.startswith(("gap/", "zero-shot ")) or
             n == "zero-shot mean"]
    groups = [[n for n in names if not n.startswith("R²")], [n for n in names if n.startswith("R²")]]
    methods = [m for m in study.test_methods if m != "clip"]
    cell = {(r["method"], r["metric"]): r for r in table}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [3, 1]})
    width = 0.8 / max(len(methods), 1)
    for ax, group, ylabel in zip(axes, groups, ("accuracy / recall difference", "R² difference"),
                                 strict=True):
        for k, m in enumerate(methods):
            xs, ys, lo, hi = [], [], [], []
            for i, n in enumerate(group):
                r = cell.get((m, n))
                if r and r["diff"] != "":
                    xs.append(i + (k - (len(methods) - 1) / 2) * width)
                    ys.append(r["diff"])
                    lo.append(r["diff"] - r["ci_low"])
                    hi.append(r["ci_high"] - r["diff"])
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=f"{m} − clip")
        ax.axhline(0, color="black", lw=0.6)
        ax.set_xticks(range(len(group)), group, rotation=60, ha="right", fontsize=7)
        ax.set_ylabel(f"paired {ylabel} (95 % CI)", fontsize=8)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def stage_seconds(stage_dir: Path) -> float:
    """Compile + run seconds recorded in a stage's chunk files, resumed ones included: what computing
    the stage's results took, whichever invocation did it."""
    metas = [json.loads(f.read_text()) for f in sorted((Path(stage_dir) / "chunks").glob("*.json"))]
    return float(sum(m["compile_seconds"] + m["run_seconds"] for m in metas))


def write_misalignment_report(study: StructureStudy, tuned: dict, out: Path) -> list[dict]:
    """From `out/misalignment/results.csv`: misalignment.md (role summary, then every panel),
    misalignment_roles.csv and misalignment.png. Returns the role summary."""
    out = Path(out)
    tables = misalignment_tables(report.read_csv(out / "misalignment" / "results.csv"))
    roles = {s.grid[1][1]: {f: s.config.role(f) for f in (*DISCRETE, *IMAGE_ONLY)}
             for s in study.misalignment_experiment(tuned).settings}
    summary = role_summary(tables, roles)
    report.write_csv(summary, out / "misalignment_roles.csv")
    (out / "misalignment.md").write_text(
        "Mean score by factor role over the settings (MCC; R² for the image-only position and rotation), "
        "in brackets the cell-wise difference to clip, img:\n\n" + format_role_summary(summary) + "\n\n"
        + format_misalignment(tables, roles) + "\n")
    plot_misalignment(tables, out / "misalignment.png",
                      f"{study.name}: what each regularizer keeps in the image features "
                      f"({len(study.misalignment_seeds)} seed(s))")
    return summary


def run_structure_study(study: StructureStudy, out: Path, chunk_size: int = 1,
                        progress: Callable | None = None) -> dict:
    """Tune on val, test the tuned methods, cross them with the bias settings; write tables and plots."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    runners: dict = {}
    run_sweep(study.tune_experiment(), out / "tune", study.tune_seeds, chunk_size, progress, runners)
    tuned, scores = choose_tuned(report.read_csv(out / "tune" / "results.csv"), study)
    report.write_json({"tuned": tuned, "val_scores": scores}, out / "tuned.json")
    run_sweep(study.test_experiment(tuned), out / "test", study.seeds, chunk_size, progress, runners)
    table = paired_table(report.read_csv(out / "test" / "results.csv"), study)
    report.write_csv(table, out / "paired.csv")
    (out / "test.md").write_text(format_paired(table, study) + "\n")
    plot_paired(table, study, out / "paired.png",
                f"{study.name}: tuned regularizers − L_Con, {len(study.seeds)} paired seeds")
    run_sweep(study.misalignment_experiment(tuned), out / "misalignment", study.misalignment_seeds,
              chunk_size, progress, runners)
    write_misalignment_report(study, tuned, out)
    record = {"name": study.name, "tuned": tuned, "base": study.base.to_dict(),
              "seeds": {"tune": list(study.tune_seeds), "test": list(study.seeds),
                        "misalignment": list(study.misalignment_seeds)},
              "stage_seconds": {s: stage_seconds(out / s) for s in ("tune", "test", "misalignment")},
              "total_seconds": time.perf_counter() - started}
    (out / "sweep.json").write_text(json.dumps(record, indent=2, default=str))
    return record
