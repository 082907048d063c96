"""The notebook gallery: the repository URL, every notebook's setup cell, and the README gallery.

The repository's GitHub name is set once, in `REPO` below. Everything that names it is written from
here: the first code cell of every notebook (install mmjax from this repository in a fresh Colab
runtime, or use the checkout the notebook runs in), and the README gallery (an "Open in Colab" badge
per notebook). A fork changes `REPO` and runs `python colabs/gallery.py sync`.

    python colabs/gallery.py sync    # rewrite setup cells, strip outputs, rewrite the README gallery
    python colabs/gallery.py check   # exit 1 if a notebook or the README is out of sync (a test runs it)
    python colabs/gallery.py run [NAME ...]   # execute notebooks headless in a Jupyter kernel (SMALL = True),
                                              # record their times and save each one's last figure

A new notebook is added to `NOTEBOOKS` (file stem → title and one line), written with a
`SMALL = True` parameter cell, and then `run` + `sync` put it in the gallery.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = "mmjax/mmjax"  # GitHub owner/name of this repository: the one line a fork changes
BRANCH = "main"

NOTEBOOKS = {
    "numeric_study": (
        "Misalignment, numeric study",
        "Choose θ and ρ, run a vmapped grid of selection sweeps in one call, and read the identifiability "
        "staircase and the leakage of dependent latents off the R² heatmaps (Cai et al., arXiv 2504.10143).",
    ),
    "image_text": (
        "Misalignment, image–text",
        "Render scenes and captions with selection and perturbation bias, see what each caption dropped "
        "or changed, train briefly and read the MCC heatmap per factor (Cai et al., arXiv 2504.10143).",
    ),
    "modality_structures": (
        "Latent modality structures",
        "Train L_Con with and without L_Sep, L_Br and L_GC in one vmapped program on scenes where each "
        "modality holds what the other lacks, then read what the image features keep of every factor and "
        "see the modality gap (Jiang et al., arXiv 2303.05952).",
    ),
    "fusion": (
        "ALBEF-style fusion",
        "Pre-train the fusion model (ITC with a queue, ITM with hard negatives, MLM) briefly, fine-tune it "
        "on generated question answering, image pairs or entailment, and read its answers on test examples "
        "beside the unimodal baselines (Li et al., arXiv 2107.07651).",
    ),
}

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
README = ROOT / "README.md"
PICTURES = ROOT / "docs" / "colabs"
TIMES = HERE / "times.json"
START, END = "<!-- gallery:start -->", "<!-- gallery:end -->"
SETUP_TAG = "mmjax-setup"  # the metadata tag of the setup cell


def repo_url() -> str:
    return f"https://github.com/{REPO}"


def colab_url(stem: str) -> str:
    return f"https://colab.research.google.com/github/{REPO}/blob/{BRANCH}/colabs/{stem}.ipynb"


def setup_source() -> str:
    """The first code cell of every notebook."""
    return f'''# Setup (written by colabs/gallery.py). Inside a checkout of mmjax: install that checkout.
# Elsewhere (a fresh Colab runtime): install mmjax from GitHub, with the jax build for its GPU or TPU.
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

REPO_URL = "{repo_url()}"


def _checkout():
    for d in (pathlib.Path.cwd(), *pathlib.Path.cwd().parents):
        if (d / "mmjax" / "__init__.py").exists() and (d / "setup.cfg").exists():
            return d
    return None


if importlib.util.find_spec("mmjax") is None:
    _root = _checkout()
    if _root is not None:
        _pkgs = ["-e", str(_root)]
    else:
        _pkgs = [f"mmjax @ git+{{REPO_URL}}"]
        if shutil.which("nvidia-smi"):
            _pkgs.append("jax[cuda12]")
        elif os.environ.get("COLAB_TPU_ADDR") or any(map(os.path.exists, ("/dev/accel0", "/dev/vfio/0"))):
            _pkgs.append("jax[tpu]")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *_pkgs], check=True)

import jax  # noqa: E402

print("jax", jax.__version__, "devices:", jax.devices())'''


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + [parts[-1]]


def notebook_path(stem: str) -> Path:
    return HERE / f"{stem}.ipynb"


def _setup_cell() -> dict:
    return {"cell_type": "code", "execution_count": None, "id": SETUP_TAG,
            "metadata": {"tags": [SETUP_TAG]}, "outputs": [], "source": _lines(setup_source())}


def synced(nb: dict) -> dict:
    """The notebook with its setup cell rewritten (inserted as the first code cell if missing) and
    every output, execution count and widget state stripped."""
    nb = json.loads(json.dumps(nb))
    cells = [c for c in nb["cells"] if SETUP_TAG not in c.get("metadata", {}).get("tags", [])]
    first_code = next((i for i, c in enumerate(cells) if c["cell_type"] == "code"), len(cells))
    cells.insert(first_code, _setup_cell())
    for c in cells:
        if c["cell_type"] == "code":
            c["outputs"], c["execution_count"] = [], None
            c["metadata"].pop("execution", None)
    nb["cells"] = cells
    nb.setdefault("metadata", {}).pop("widgets", None)
    nb["metadata"]["colab"] = {"provenance": []}
    kernel = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb["metadata"].setdefault("kernelspec", kernel)
    return nb


def _dump(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def gallery_markdown() -> str:
    """The README gallery: one row per notebook (picture, badge, one line, time on this CPU)."""
    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    machine = times.get("_machine", "")
    rows = ["| | notebook |", "|---|---|"]
    for stem, (title, line) in NOTEBOOKS.items():
        picture = (f'<img src="docs/colabs/{stem}.png" width="240">'
                   if (PICTURES / f"{stem}.png").exists() else "")
        badge = f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(stem)})"
        t = times.get(stem)
        timing = f" Headless with `SMALL = True`: {t:.0f} s." if t is not None else ""
        rows.append(f"| {picture} | **[{title}](colabs/{stem}.ipynb)** {badge}<br>{line}{timing} |")
    note = (f"\nTimes: `python colabs/gallery.py run` on {machine}, each notebook executed in a fresh "
            "Jupyter kernel. Set `SMALL = False` on a GPU/TPU runtime for the cpu-scale recipes.")
    note = note if machine else ""
    return f"{START}\n" + "\n".join(rows) + "\n" + note + f"\n{END}"


def _readme_synced(text: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no gallery markers {START} … {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return head + gallery_markdown() + tail


def problems() -> list[str]:
    """What `sync` would change, one line per file, plus notebooks missing from the gallery."""
    out = []
    on_disk = {p.stem for p in HERE.glob("*.ipynb")}
    for stem in sorted(on_disk - set(NOTEBOOKS)):
        out.append(f"colabs/{stem}.ipynb is not in colabs/gallery.py NOTEBOOKS")
    for stem in NOTEBOOKS:
        path = notebook_path(stem)
        if not path.exists():
            out.append(f"colabs/{stem}.ipynb is listed in NOTEBOOKS but missing")
            continue
        nb = json.loads(path.read_text())
        if _dump(synced(nb)) != path.read_text():
            has_outputs = any(c.get("outputs") or c.get("execution_count") for c in nb["cells"]
                              if c["cell_type"] == "code")
            out.append(f"colabs/{stem}.ipynb: " + ("committed with outputs" if has_outputs
                                                   else "setup cell or metadata out of date"))
        sources = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
        if not any(s.lstrip().startswith("SMALL = True") for s in sources):
            out.append(f"colabs/{stem}.ipynb: no parameter cell starting with 'SMALL = True'")
    if README.read_text() != _readme_synced(README.read_text()):
        out.append("README.md: gallery out of date")
    return out


def sync() -> None:
    for stem in NOTEBOOKS:
        path = notebook_path(stem)
        if path.exists():
            path.write_text(_dump(synced(json.loads(path.read_text()))))
    README.write_text(_readme_synced(README.read_text()))


def execute(path: Path, cwd: Path, timeout: int = 900) -> tuple[dict, float]:
    """Run a notebook in a fresh Jupyter kernel (cwd as its working directory); raise on any error.

    Returns the executed notebook and its wall time in seconds.
    """
    import nbclient
    import nbformat

    nb = nbformat.read(str(path), as_version=4)
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(cwd)}})
    # The kernel sees the devices a user's runtime has: no fake host devices (the tests set 8).
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                     if not f.startswith("--xla_force_host_platform_device_count"))
    if flags:
        env["XLA_FLAGS"] = flags
    t0 = time.perf_counter()
    client.execute(env=env)
    return nb, time.perf_counter() - t0


def last_figure(nb) -> bytes | None:
    """The PNG bytes of the notebook's last image output."""
    found = None
    for c in nb.cells:
        for o in c.get("outputs", []):
            data = o.get("data", {})
            if "image/png" in data:
                found = base64.b64decode(data["image/png"])
    return found


def run(stems: list[str]) -> None:
    import tempfile

    times = json.loads(TIMES.read_text()) if TIMES.exists() else {}
    PICTURES.mkdir(parents=True, exist_ok=True)
    for stem in stems or list(NOTEBOOKS):
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{stem}: running ...", flush=True)
            nb, seconds = execute(notebook_path(stem), Path(tmp))
        png = last_figure(nb)
        if png is None:
            raise SystemExit(f"{stem}: the notebook showed no figure")
        (PICTURES / f"{stem}.png").write_bytes(png)
        times[stem] = round(seconds, 1)
        print(f"{stem}: {seconds:.1f} s", flush=True)
    times["_machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    TIMES.write_text(json.dumps(times, indent=1, ensure_ascii=False) + "\n")
    sync()


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("sync", "check", "run"):
        print(__doc__)
        return 2
    if argv[0] == "sync":
        sync()
        return 0
    if argv[0] == "check":
        found = problems()
        for line in found:
            print(line)
        if found:
            print("run: python colabs/gallery.py sync")
        return 1 if found else 0
    unknown = [s for s in argv[1:] if s not in NOTEBOOKS]
    if unknown:
        print(f"unknown notebook(s) {', '.join(unknown)}: allowed {', '.join(NOTEBOOKS)}")
        return 2
    run(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
