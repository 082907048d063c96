"""The notebooks under colabs/: in sync with colabs/gallery.py (setup cell, stripped outputs, README
gallery), and each one executed headless in a real Jupyter kernel with SMALL = True (slow)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("gallery", ROOT / "colabs" / "gallery.py")
gallery = importlib.util.module_from_spec(spec)
sys.modules["gallery"] = gallery
spec.loader.exec_module(gallery)


def test_notebooks_and_readme_in_sync_with_the_gallery():
    assert gallery.problems() == []


def test_check_catches_outputs_a_stale_setup_cell_and_an_unlisted_notebook(tmp_path, monkeypatch):
    path = gallery.notebook_path("numeric_study")
    nb = json.loads(path.read_text())
    code = next(c for c in nb["cells"]
                if c["cell_type"] == "code" and "mmjax-setup" not in c["metadata"].get("tags", []))
    code["outputs"] = [{"output_type": "stream", "name": "stdout", "text": ["hi\n"]}]
    code["execution_count"] = 3
    monkeypatch.setattr(gallery, "HERE", tmp_path)
    monkeypatch.setattr(gallery, "README", tmp_path / "README.md")
    (tmp_path / "README.md").write_text(gallery._readme_synced(f"# x\n{gallery.START}\n{gallery.END}\n"))
    for stem in gallery.NOTEBOOKS:
        (tmp_path / f"{stem}.ipynb").write_text(gallery._dump(gallery.synced(json.loads(
            gallery.ROOT.joinpath("colabs", f"{stem}.ipynb").read_text()))))
    assert gallery.problems() == []
    (tmp_path / "numeric_study.ipynb").write_text(json.dumps(nb))
    (tmp_path / "extra.ipynb").write_text(json.dumps(nb))
    monkeypatch.setattr(gallery, "REPO", "someone/fork")  # every setup cell now names the old URL
    found = gallery.problems()
    assert "colabs/numeric_study.ipynb: committed with outputs" in found
    assert "colabs/extra.ipynb is not in colabs/gallery.py NOTEBOOKS" in found
    assert "colabs/image_text.ipynb: setup cell or metadata out of date" in found
    assert "README.md: gallery out of date" in found
    gallery.sync()
    assert gallery.problems() == ["colabs/extra.ipynb is not in colabs/gallery.py NOTEBOOKS"]
    synced = json.loads((tmp_path / "numeric_study.ipynb").read_text())
    assert all(c["outputs"] == [] for c in synced["cells"] if c["cell_type"] == "code")
    assert "https://github.com/someone/fork" in "".join(synced["cells"][1]["source"])
    assert "github/someone/fork/blob/main/colabs/numeric_study.ipynb" in (tmp_path / "README.md").read_text()


def test_setup_cell_is_first_and_every_notebook_has_a_small_switch():
    for stem in gallery.NOTEBOOKS:
        cells = json.loads(gallery.notebook_path(stem).read_text())["cells"]
        code = [c for c in cells if c["cell_type"] == "code"]
        assert "".join(code[0]["source"]) == gallery.setup_source()
        assert "".join(code[1]["source"]).startswith("SMALL = True")
        assert cells[0]["cell_type"] == "markdown" and "".join(cells[0]["source"]).startswith("# ")


@pytest.mark.slow
@pytest.mark.parametrize("stem", list(gallery.NOTEBOOKS))
def test_notebook_executes_in_a_jupyter_kernel(stem, tmp_path):
    pytest.importorskip("nbclient")
    nb, seconds = gallery.execute(gallery.notebook_path(stem), tmp_path)
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert errors == []
    assert gallery.last_figure(nb) is not None, "the notebook showed no figure"
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", [])
                      if o.get("name") == "stdout")
    assert "devices:" in printed  # the setup cell ran and printed what jax uses
    print(f"{stem}: {seconds:.1f} s")
