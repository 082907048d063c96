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


def read_csv(path: Path) -> list[dict]:
    """Read a results.csv back (numbers stay strings except r2 columns)."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("r2_linear", "r2_nonlinear", "mcc_linear", "mcc_nonlinear"):
            if r.get(k) not in (None, ""):
                r[k] = float(r[k])
    return rows


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
        im = ax.imshow(mat, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(settings)), settings, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(len(factors)), factors, fontsize=8)
        for i in range(mat.shape[0]):
            for j in range(mat.shape[1]):
                if np.isfinite(mat[i, j]):
                    ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=6.5,
                            color="black" if mat[i, j] > 0.6 else "white")
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
