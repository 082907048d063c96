"""Every notebook under colabs/ runs headless (its code cells, in order, with SMALL = True)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "colabs").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_headless(path, monkeypatch, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    cells = json.loads(path.read_text())["cells"]
    namespace: dict = {}
    for cell in cells:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{path.name}", "exec"), namespace)
    assert namespace["SMALL"] is True
    rows = namespace["rows"]
    assert {r["setting"] for r in rows} == {"θ=[10]", "θ=[6]", "θ=[3]"}
    assert (namespace["out"] / "heatmap.png").stat().st_size > 5_000
