"""End-to-end sweep on a tiny config: files on disk, resume without recompute, NaN -> failed."""

import csv
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import parallel
from mmjax.configs.numeric import base_config
from mmjax.latent.simulator import make_world
from mmjax.report import read_csv
from mmjax.train.sweep import Experiment, Setting, run_sweep
from mmjax.train.synthetic import make_run

TINY = dict(widths="8,8", batch=16, steps=60, log_every=20, eval_fit=128, eval_test=128,
            probe_epochs=5, cond_samples=200, cond_rank=1)


def tiny_experiment(extra=None) -> Experiment:
    base = base_config("smoke", **TINY)
    settings = [Setting("θ=[2]", dataclasses.replace(base, theta=(1, 2))),
                Setting("θ=[3] ρ={1}", dataclasses.replace(base, theta=(1, 2, 3), rho=(1,)))]
    if extra is not None:
        settings.append(extra)
    return Experiment("tiny", tuple(settings))


@pytest.mark.slow  # ~30-90 s: in the slow set to keep the default suite under 10 min
def test_sweep_writes_rows_and_resumes_without_recompute(tmp_path):
    exp = tiny_experiment()
    first = run_sweep(exp, tmp_path, seeds=[0, 1], chunk_size=8)
    rows = read_csv(tmp_path / "results.csv")
    chunks = sorted(tmp_path.glob("chunks/*.npz"))
    assert len(chunks) == 1 and first["groups"][0]["compile_seconds"] > 0
    # 2 settings x 2 seeds x 2 encoders x (10 s_i + s_unbiased + m_x + m_t); smoke skips s~_i
    assert len(rows) == 2 * 2 * 2 * 13
    roles = {(r["setting"], r["factor"]): r["role"] for r in rows}
    assert roles[("θ=[3] ρ={1}", "s1")] == "perturbed"
    assert roles[("θ=[3] ρ={1}", "s2")] == "unbiased"
    assert roles[("θ=[2]", "s3")] == "omitted"
    assert roles[("θ=[2]", "m_x")] == "specific"
    mtime = chunks[0].stat().st_mtime_ns
    second = run_sweep(exp, tmp_path, seeds=[0, 1], chunk_size=8)
    assert second["groups"][0]["resumed_chunks"] == 1
    assert second["groups"][0]["compile_seconds"] == 0.0
    assert chunks[0].stat().st_mtime_ns == mtime
    assert read_csv(tmp_path / "results.csv") == rows


def test_nan_config_is_marked_failed_and_others_finish(tmp_path):
    bad = dataclasses.replace(base_config("smoke", **TINY), theta=(1, 2), lr=1e30, clip_norm=1e30)
    exp = tiny_experiment(Setting("exploding", bad))
    record = run_sweep(exp, tmp_path, seeds=[0], chunk_size=8)
    status = {j["setting"]: j["status"] for j in record["jobs"].values()}
    assert status["exploding"].startswith("failed")
    assert status["θ=[2]"] == status["θ=[3] ρ={1}"] == "ok"
    settings = {r["setting"] for r in read_csv(tmp_path / "results.csv")}
    assert settings == {"θ=[2]", "θ=[3] ρ={1}"}


@pytest.mark.slow  # ~45 s (two sweeps): in the slow set, which .ci/run also runs
def test_compare_probe_column_is_the_named_probe(tmp_path):
    """compare_probe adds r2_compare; swapping it with nonlinear_probe swaps the two columns."""
    setting = tiny_experiment().settings[:1]
    got = {}
    for main_probe, other in (("mlp", "nystrom"), ("nystrom", "mlp")):
        cfg = dataclasses.replace(setting[0].config, nonlinear_probe=main_probe, compare_probe=other,
                                  nystrom_landmarks=64)
        run_sweep(Experiment("tiny", (Setting("θ=[2]", cfg),)), tmp_path / main_probe, seeds=[0])
        got[main_probe] = read_csv(tmp_path / main_probe / "results.csv")
    a, b = got["mlp"], got["nystrom"]
    assert len(a) == len(b) == 2 * 13
    for ra, rb in zip(a, b, strict=True):
        assert ra["factor"] == rb["factor"] and ra["r2_linear"] == rb["r2_linear"]
        assert ra["r2_nonlinear"] == rb["r2_compare"] and ra["r2_compare"] == rb["r2_nonlinear"]
    assert any(ra["r2_nonlinear"] != ra["r2_compare"] for ra in a)  # two different probes


@pytest.mark.slow  # ~30-90 s: in the slow set to keep the default suite under 10 min
def test_vmapped_run_equals_single_runs():
    cfg = base_config("smoke", **TINY)
    configs = [dataclasses.replace(cfg, theta=(1, 2)), dataclasses.replace(cfg, theta=(3,))]
    static = configs[0].to_static()
    assert configs[1].to_static() == static
    run = make_run(static)
    world = make_world(jax.random.key(0), static.shape)
    key = jax.random.key(1)
    single = [jax.jit(run)(c.to_params(), world, key) for c in configs]
    params = jax.tree.map(lambda *x: jnp.stack(x), *[c.to_params() for c in configs])
    worlds = jax.tree.map(lambda x: jnp.stack([x, x]), world)
    batched = jax.jit(jax.vmap(run))(params, worlds, jnp.stack([key, key]))
    for i in range(2):
        for a, b in zip(single[i], jax.tree.map(lambda x, i=i: x[i], batched), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-4)


@pytest.mark.slow
def test_cli_smoke_sweep_end_to_end(tmp_path):
    from mmjax.cli import main

    out = tmp_path / "sel"
    assert main(["sweep", "selection_independent", "--scale", "smoke", "--seeds", "1",
                 "--out", str(out)]) == 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert set(rows[0]) == {"experiment", "run", "setting", "seed", "encoder", "factor", "role",
                            "n_theta", "n_rho", "r2_linear", "r2_nonlinear"}
    record = json.loads((out / "sweep.json").read_text())
    assert len(record["jobs"]) == 10 and (out / "heatmap.png").stat().st_size > 10_000



def test_wide_encoders_compile_without_ynn_fusions_narrow_ones_with():
    # the measured split (benchmarks/README.md): XLA's own dots win at the paper's 750, YNNPACK's at 64
    wide = make_run(base_config("smoke", widths="8,256").to_static())
    narrow = make_run(base_config("smoke", widths="8,8").to_static())
    assert wide.compiler_options == parallel.cpu_compiler_options(ynn_fusions=False)
    assert narrow.compiler_options is None
    assert make_run(base_config("paper").to_static()).compiler_options == wide.compiler_options
