"""Sweep outputs that scale: per-chunk files, resume after an interrupted run, `mmjax report`,
and two processes producing the same results.csv as one."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from mmjax.cli import main
from mmjax.report import load_results, read_csv
from mmjax.train.sweep import assemble

sys.path.insert(0, str(Path(__file__).parent))
from test_sweep import TINY  # noqa: E402

GRID = ["--scale", "smoke", "--grid", "theta=size:1", "--seeds", "1", "--chunk", "4"]
SETS = [a for k, v in TINY.items() for a in ("--set", f"{k}={v}")]


def _sweep(out, *extra):
    return main(["sweep", "selection_independent", *GRID, *SETS, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    assert _sweep(out) == 0
    return out


def test_chunks_on_disk_and_results_assembled(finished):
    chunks = sorted((finished / "chunks").glob("*.json"))
    plan = json.loads((finished / "plan.json").read_text())
    # 10 single-θ runs in chunks of at most 4 per device multiple (the suite has 8 fake devices: 2)
    assert len(chunks) == len(plan["chunks"]) == (3 if len(jax.devices()) == 1 else 2)
    rows = read_csv(finished / "results.csv")
    assert sorted({r["run"] for r in rows}) == list(range(10))
    assert {r["theta"] for r in rows} == {str(i) for i in range(1, 11)}
    # 10 runs x 2 encoders x 13 factors, in run order
    assert len(rows) == 10 * 2 * 13 and [r["run"] for r in rows] == sorted(r["run"] for r in rows)
    record = json.loads((finished / "sweep.json").read_text())
    assert len(record["jobs"]) == 10 and record["missing_chunks"] == []
    assert (finished / "summary_by_theta.png").stat().st_size > 10_000
    assert (finished / "heatmap.png").stat().st_size > 10_000  # 10 settings: heatmap too
    frame = load_results(finished)
    assert len(frame) == len(rows) and set(frame["role"]) == {"unbiased", "omitted", "specific"}


def test_interrupted_sweep_resumes_only_missing_chunks(finished, tmp_path):
    out = tmp_path / "again"
    out.mkdir()
    (out / "chunks").mkdir()
    names = json.loads((finished / "plan.json").read_text())["chunks"]
    # As if killed after the first chunk: only its files exist.
    for name in names[:1]:
        for ext in (".npz", ".csv", ".json"):
            (out / "chunks" / f"{name}{ext}").write_bytes((finished / "chunks" / f"{name}{ext}").read_bytes())
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "chunks").iterdir()}
    assert _sweep(out) == 0
    assert {p.name: p.stat().st_mtime_ns for p in (out / "chunks").iterdir() if p.name in kept} == kept
    record = json.loads((out / "sweep.json").read_text())
    assert record["groups"][0]["resumed_chunks"] == 1 and record["groups"][0]["run_seconds"] > 0
    assert read_csv(out / "results.csv") == read_csv(finished / "results.csv")


def test_report_rebuilds_from_chunks(finished, tmp_path, capsys):
    before = (finished / "results.csv").read_bytes()
    (finished / "results.csv").unlink()
    (finished / "summary_by_theta.png").unlink()
    assert main(["report", str(finished)]) == 0
    assert (finished / "results.csv").read_bytes() == before
    assert (finished / "summary_by_theta.png").exists()
    assert main(["report", str(tmp_path)]) == 2
    assert "no plan.json there" in capsys.readouterr().err


def test_missing_chunk_is_reported_not_fatal(finished, tmp_path):
    out = tmp_path / "partial"
    (out / "chunks").mkdir(parents=True)
    (out / "plan.json").write_bytes((finished / "plan.json").read_bytes())
    name = json.loads((finished / "plan.json").read_text())["chunks"][0]
    for ext in (".npz", ".csv", ".json"):
        (out / "chunks" / f"{name}{ext}").write_bytes((finished / "chunks" / f"{name}{ext}").read_bytes())
    record = assemble(out)
    first = sorted(int(j) for j in json.loads((out / "chunks" / f"{name}.json").read_text())["jobs"])
    assert len(record["missing_chunks"]) == len(json.loads((out / "plan.json").read_text())["chunks"]) - 1
    assert sorted(int(j) for j in record["jobs"]) == first
    assert {r["run"] for r in read_csv(out / "results.csv")} == set(first)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _cli(out, env, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "mmjax.cli", "sweep", "selection_independent", *GRID, *SETS,
         "--out", str(out), *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(procs):
    logs = [p.communicate(timeout=600)[0] for p in procs]
    for i, (p, log) in enumerate(zip(procs, logs, strict=True)):
        assert p.returncode == 0, f"process {i} failed:\n{log[-3000:]}"


@pytest.mark.slow  # three CLI sweeps in subprocesses: ~1-2 min on 2 cores
@pytest.mark.parametrize("shared", [True, False], ids=["shared_dir", "own_dirs"])
def test_two_processes_give_the_same_results_csv(tmp_path, shared):
    """Two processes with one CPU device each (gloo), each writing its own directory (or one shared
    directory), end with the results.csv of one process with one device, on process 0."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
    port = _free_port()
    outs = [tmp_path / "p0", tmp_path / ("p0" if shared else "p1")]
    dist = lambda i: ["--coordinator", f"localhost:{port}", "--num_processes", "2", "--process_id", str(i)]
    _wait([_cli(outs[i], env, *dist(i)) for i in range(2)])
    _wait([_cli(tmp_path / "one", env)])
    # The same chunks (3 of 4, 4 and 2 runs) run the same compiled program on the same inputs in
    # either case, so the files are byte-identical.
    assert (outs[0] / "results.csv").read_bytes() == (tmp_path / "one" / "results.csv").read_bytes()
    metas = [json.loads(p.read_text()) for p in (outs[0] / "chunks").glob("*.json")]
    assert sorted(m["process"] for m in metas) == [0, 0, 1]
    if not shared:
        assert not (outs[1] / "results.csv").exists()  # only process 0 assembles
