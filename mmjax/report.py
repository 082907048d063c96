"""Results on disk: tidy CSV, sweep.json, and paper-style heatmaps (rows = factors, cols = settings)."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

ENCODER_NAMES = {"x": "image encoder f_x", "t": "text encoder f_t"}


def write_csv(rows: list[dict], path: Path) -> None:
    """Write rows (dicts with equal keys) as CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        if not rows:
            f.write("")
            return
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


SCORES = ("r2_linear", "r2_nonlinear", "r2_compare", "mcc_linear", "mcc_nonlinear")
INTS = ("run", "seed", "n_theta", "n_rho")


def read_csv(path: Path) -> list[dict]:
    """Read a results.csv back: score columns as floats, run/seed/|θ|/|ρ| as ints, others strings."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in SCORES:
            if r.get(k) not in (None, ""):
                r[k] = float(r[k])
        for k in INTS:
            if r.get(k) not in (None, ""):
                r[k] = int(r[k])
    return rows


def load_results(out_dir: Path):
    """A sweep's results.csv as a pandas DataFrame (pandas is optional: `pip install pandas`)."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("load_results needs pandas (pip install pandas); "
                          "mmjax.report.read_csv reads the same file without it") from None
    return pd.read_csv(Path(out_dir) / "results.csv", keep_default_na=False, na_values=[""])


def _score_columns(path: Path, by: str, metric: str):
    """Stream results.csv: (encoder, role, factor, x value, score) columns, skipping s̃ and blocks."""
    enc, role, factor, xs, score = [], [], [], [], []
    with open(path) as f:
        for r in csv.DictReader(f):
            if r["factor"].startswith("s_tilde") or r["factor"] == "s_unbiased":
                continue
            v = _value(r, metric)
            if not np.isfinite(v):
                continue
            enc.append(r["encoder"])
            role.append(r["role"])
            factor.append(r["factor"])
            xs.append(r.get(by, ""))
            score.append(v)
    return enc, role, factor, xs, np.asarray(score)


def _sort_key(v: str):
    try:
        return (0, float(v), v)
    except ValueError:
        return (1, 0.0, v)


ROLE_COLOURS = {"unbiased": "tab:green", "omitted": "tab:red", "perturbed": "tab:orange",
                "specific": "tab:grey", "downstream": "tab:blue"}


def plot_role_summary(path: Path, out: Path, title: str, by: str = "n_theta",
                      metric: str = "r2_nonlinear", label: str | None = None) -> list[dict]:
    """Box plots of a score by role (unbiased / omitted / perturbed / specific) against `by`.

    Reads results.csv at `path` streaming, so it serves sweeps of 10⁵ runs; one panel per encoder.
    Returns the summary rows (encoder, by value, role, count, mean, quartiles, min, max).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    enc, role, _, xs, score = _score_columns(path, by, metric)
    if not score.size:
        return []
    encoders = [e for e in ("x", "t", "downstream") if e in set(enc)]
    roles = [r for r in ROLE_COLOURS if r in set(role)]
    xvals = sorted(set(xs), key=_sort_key)
    enc_a, role_a, xs_a = np.asarray(enc), np.asarray(role), np.asarray(xs)
    summary = []
    fig, axes = plt.subplots(1, len(encoders), squeeze=False, sharey=True,
                             figsize=(max(5.0, 0.55 * len(xvals) * len(roles)) * len(encoders) / 1.6, 3.6))
    width = 0.8 / len(roles)
    for ax, e in zip(axes[0], encoders, strict=True):
        for ri, rname in enumerate(roles):
            data, pos = [], []
            for xi, xv in enumerate(xvals):
                vals = score[(enc_a == e) & (role_a == rname) & (xs_a == xv)]
                if vals.size:
                    data.append(vals)
                    pos.append(xi + (ri - (len(roles) - 1) / 2) * width)
                    q = np.percentile(vals, [0, 25, 50, 75, 100])
                    summary.append({"encoder": e, by: xv, "role": rname, "count": int(vals.size),
                                    "mean": float(vals.mean()), "min": q[0], "q25": q[1],
                                    "median": q[2], "q75": q[3], "max": q[4]})
            if data:
                bp = ax.boxplot(data, positions=pos, widths=width * 0.9, patch_artist=True,
                                showfliers=True, flierprops={"markersize": 2})
                for box in bp["boxes"]:
                    box.set_facecolor(ROLE_COLOURS[rname])
                    box.set_alpha(0.7)
                ax.plot([], [], "s", color=ROLE_COLOURS[rname], label=rname)
        ax.set_xticks(range(len(xvals)), xvals, fontsize=8)
        ax.set_xlabel({"n_theta": "|θ| (number of selected semantics)",
                       "n_rho": "|ρ| (number of perturbed semantics)"}.get(by, by))
        ax.set_title(ENCODER_NAMES.get(e, e), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].set_ylabel(label or metric.replace("_", " "))
    axes[0, -1].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130, bbox_inches="tight")
    plt.close(fig)
    return summary


def factor_summary(path: Path, metric: str = "r2_nonlinear") -> list[dict]:
    """Per (encoder, factor, role): count, mean and quartiles of a score over all runs (streaming)."""
    enc, role, factor, _, score = _score_columns(path, "setting", metric)
    cells: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(enc, factor, role, strict=True)):
        cells[key].append(i)
    out = []
    for (e, f, r), idx in sorted(cells.items(), key=lambda kv: (kv[0][0], _factor_order(kv[0][1]), kv[0][2])):
        vals = score[idx]
        q = np.percentile(vals, [25, 50, 75])
        out.append({"encoder": e, "factor": f, "role": r, "count": len(idx), "mean": float(vals.mean()),
                    "q25": q[0], "median": q[1], "q75": q[2]})
    return out


def _factor_order(name: str):
    digits = "".join(ch for ch in name if ch.isdigit())
    return (0 if name.startswith("s") and digits else 1, int(digits) if digits else 0, name)


def write_json(record: dict, path: Path) -> None:
    """Write a JSON record (non-serialisable values become strings)."""
    path.write_text(json.dumps(record, indent=2, default=str))


def _value(row: dict, metric: str) -> float:
    """row[metric]; where a factor has no such score (MCC of a continuous factor, R² of a discrete
    one) the score of the other family with the same probe."""
    value = row.get(metric)
    if value in (None, ""):
        kind, _, probe = metric.partition("_")
        value = row.get(("r2" if kind == "mcc" else "mcc") + "_" + probe)
    return float(value) if value not in (None, "") else float("nan")


def seed_table(rows: list[dict], encoder: str, metric: str = "r2_nonlinear"):
    """(factors, settings, matrix) of seed-averaged R², clipped at 0 (the paper's aggregation)."""
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    settings: list[str] = []
    factors: list[str] = []
    for r in rows:
        if r["encoder"] != encoder or r["factor"].startswith("s_tilde") or r["factor"] == "s_unbiased":
            continue
        if r["setting"] not in settings:
            settings.append(r["setting"])
        if r["factor"] not in factors:
            factors.append(r["factor"])
        cells[(r["factor"], r["setting"])].append(_value(r, metric))
    mat = np.full((len(factors), len(settings)), np.nan)
    for (f, s), vals in cells.items():
        mat[factors.index(f), settings.index(s)] = max(float(np.mean(vals)), 0.0)
    return factors, settings, mat


def heatmap_panel(ax, mat: np.ndarray, rows: list[str], cols: list[str], fontsize: float = 8):
    """A factors × settings heatmap on [0, 1] (values outside are drawn clipped) with each finite cell's
    value written in it; returns the image for a colorbar."""
    im = ax.imshow(np.clip(mat, 0.0, 1.0), vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=fontsize)
    ax.set_yticks(range(len(rows)), rows, fontsize=fontsize)
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            if np.isfinite(mat[i, j]):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=fontsize * 0.8,
                        color="black" if mat[i, j] > 0.6 else "white")
    return im


def plot_heatmaps(rows: list[dict], path: Path, title: str, metric: str = "r2_nonlinear",
                  label: str | None = None) -> None:
    """One panel per encoder, cells annotated with the seed-mean score (clipped at 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    encoders = [e for e in ("x", "t") if any(r["encoder"] == e for r in rows)]
    if not encoders:
        return
    tables = [seed_table(rows, e, metric) for e in encoders]
    n_cols = max(len(t[1]) for t in tables)
    n_rows = max(len(t[0]) for t in tables)
    fig, axes = plt.subplots(1, len(encoders), squeeze=False,
                             figsize=(1.0 + 0.75 * n_cols * len(encoders) + 1.5, 0.45 * n_rows + 1.8))
    for ax, enc, (factors, settings, mat) in zip(axes[0], encoders, tables, strict=True):
        im = heatmap_panel(ax, mat, factors, settings, fontsize=8)
        ax.set_title(ENCODER_NAMES[enc], fontsize=9)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=label or metric.replace("_", " "))
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


def format_table(rows: list[dict], encoder: str = "x", metric: str = "r2_nonlinear") -> str:
    """The seed-averaged heatmap as a text table (for terminals and closing notes)."""
    factors, settings, mat = seed_table(rows, encoder, metric)
    width = max([len(s) for s in settings] + [5])
    lines = ["factor".ljust(10) + " ".join(s.rjust(width) for s in settings)]
    for i, f in enumerate(factors):
        lines.append(f.ljust(10) + " ".join(f"{v:.2f}".rjust(width) for v in mat[i]))
    return "\n".join(lines)


def plot_grouped_bars(rows: list[dict], path: Path, panels: dict[str, list[str]], title: str) -> None:
    """One panel per group of metrics: a bar per method at each metric, seed mean ± seed std.

    `rows` are tidy (method, seed, metric, value) records; metrics absent from the rows are skipped.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mmjax.train.method_sweep import seed_stats

    stats = seed_stats(rows)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    present = {t: [m for m in ms if any((meth, m) in stats for meth in methods)] for t, ms in panels.items()}
    present = {t: ms for t, ms in present.items() if ms}
    if not present or not methods:
        return
    widest = max(len(ms) for ms in present.values())
    fig, axes = plt.subplots(len(present), 1, squeeze=False,
                             figsize=(max(6.0, 1.1 * widest * (1 + len(methods) / 4)), 2.6 * len(present)))
    width = 0.8 / len(methods)
    colours = plt.get_cmap("tab10")
    for ax, (panel, metrics) in zip(axes[:, 0], present.items(), strict=True):
        x = np.arange(len(metrics))
        for i, meth in enumerate(methods):
            mean = [stats.get((meth, m), (np.nan, 0, 0))[0] for m in metrics]
            std = [stats.get((meth, m), (np.nan, 0, 0))[1] for m in metrics]
            ax.bar(x + (i - (len(methods) - 1) / 2) * width, mean, width, yerr=std, capsize=2,
                   label=meth, color=colours(i % 10))
        # "zeroshot/colour/top1" → "colour"; "gap/cone_img" → "cone_img"; "i2t_R@1" stays.
        labels = [m.split("/")[1] if m.count("/") == 2 else m.split("/")[-1] for m in metrics]
        ax.set_xticks(x, labels, fontsize=8, rotation=20 if max(map(len, labels)) > 10 else 0)
        ax.set_title(panel, fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7, ncol=len(methods), loc="lower right", bbox_to_anchor=(1.0, 1.12))
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


# The identifiability result's prediction per role (Cai et al., arXiv 2504.10143): unbiased
# semantics are recovered; omitted and perturbed semantics and modality-specific latents are not.
# A (setting, factor) cell meets it when its seed-mean R² is on the right side of the bound:
ROLE_TARGETS = {"unbiased": (">=", 0.9), "omitted": ("<=", 0.15), "perturbed": ("<=", 0.15),
                "specific": ("<=", 0.15)}


def role_check(path: Path, metric: str = "r2_nonlinear", worst: int = 10) -> dict:
    """Per encoder and role: the fraction of (setting, factor) cells whose seed-mean score meets the
    role's target (ROLE_TARGETS), and the `worst` cells furthest from it (streaming results.csv)."""
    sums: dict[tuple[str, str, str, str], list[float]] = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            skip = r["factor"].startswith("s_tilde") or r["factor"] == "s_unbiased"
            if r["role"] not in ROLE_TARGETS or skip:
                continue
            v = _value(r, metric)
            if np.isfinite(v):
                cell = sums.setdefault((r["encoder"], r["role"], r["setting"], r["factor"]), [0.0, 0])
                cell[0] += v
                cell[1] += 1
    out: dict[str, dict] = {}
    for (enc, role, setting, factor), (total, count) in sums.items():
        op, bound = ROLE_TARGETS[role]
        mean = total / count
        entry = out.setdefault(f"{enc}/{role}", {"target": f"{op} {bound}", "cells": 0, "met": 0,
                                                 "worst": []})
        entry["cells"] += 1
        entry["met"] += int(mean >= bound if op == ">=" else mean <= bound)
        entry["worst"].append((mean if op == ">=" else -mean, setting, factor, mean, count))
    for entry in out.values():
        entry["fraction"] = entry["met"] / entry["cells"]
        entry["worst"] = [{"setting": s, "factor": f, metric: m, "seeds": c}
                          for _, s, f, m, c in sorted(entry["worst"])[:worst]]
    return dict(sorted(out.items()))


def format_role_check(check: dict, metric: str = "r2_nonlinear") -> str:
    """One line per encoder/role: cells meeting the target, and the worst cell."""
    lines = []
    for key, e in check.items():
        line = f"{key:18s} {e['met']}/{e['cells']} cells ({100 * e['fraction']:.1f} %) {e['target']}"
        if e["worst"]:
            w = e["worst"][0]
            line += f"; worst {w['factor']} at {w['setting']}: {w[metric]:.2f}"
        lines.append(line)
    return "\n".join(lines)
