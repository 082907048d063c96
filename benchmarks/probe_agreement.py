"""Agreement of the compare probe with the main non-linear probe in finished sweeps.

A sweep run with `--set compare_probe=nystrom` writes both probes' R² per (run, factor): r2_nonlinear
(the MLP probe) and r2_compare (Nyström kernel ridge). This prints, per sweep directory and encoder,
the largest and mean |difference| over the heatmap's cells (setting x factor, seed-mean R² clipped at
0, as `mmjax.report.seed_table` aggregates), and the worst cell:

    python benchmarks/probe_agreement.py runs/numeric_study/*/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mmjax.report import ENCODER_NAMES, read_csv, seed_table


def agreement(rows: list[dict], encoder: str) -> dict:
    """Cells, max and mean |seed-mean r2_compare − seed-mean r2_nonlinear|, and the worst cell."""
    factors, settings, main = seed_table(rows, encoder, "r2_nonlinear")
    _, _, other = seed_table(rows, encoder, "r2_compare")
    diff = np.abs(other - main)
    i, j = np.unravel_index(np.nanargmax(diff), diff.shape)
    return {"cells": int(np.sum(np.isfinite(diff))), "max": float(np.nanmax(diff)),
            "mean": float(np.nanmean(diff)),
            "worst": f"{factors[i]} at {settings[j]}: {main[i, j]:.2f} vs {other[i, j]:.2f}"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweeps", nargs="+", type=Path, help="sweep output directories")
    args = parser.parse_args(argv)
    print("| sweep | encoder | cells | max \\|Δ\\| | mean \\|Δ\\| | worst cell (MLP vs compare) |")
    print("|---|---|---|---|---|---|")
    for sweep in args.sweeps:
        rows = read_csv(sweep / "results.csv")
        if not rows or "r2_compare" not in rows[0]:
            print(f"{sweep}: results.csv has no r2_compare column (run the sweep with "
                  "--set compare_probe=nystrom)", file=sys.stderr)
            return 2
        for enc in ENCODER_NAMES:
            a = agreement(rows, enc)
            print(f"| {sweep.name} | {enc} | {a['cells']} | {a['max']:.3f} | {a['mean']:.3f} "
                  f"| {a['worst']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
