"""The structure regularizers inside the two-tower trainer, and the modality-structures study."""

import csv
import dataclasses
import json

import jax
import numpy as np
import pytest

from mmjax import cli, parallel
from mmjax.configs.clip import ClipConfig
from mmjax.configs.common import ConfigError
from mmjax.configs.structures import METHODS, method_config, modality_structures_sweep
from mmjax.train.clip import make_trainer

VOCAB = 24
TINY = ClipConfig(image_size=16, patch=8, width=16, depth=1, heads=2, embed_dim=16, max_len=8, batch=16,
                  steps=10, warmup_steps=1, lr=1e-3, loss="con")
ALL = dataclasses.replace(TINY, sep_weight=0.5, br_weight=2.0, gc_weight=1.5, br_sample_t=True)


def _batch(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(4, VOCAB, (n, TINY.max_len)).astype(np.int32)
    tokens[:, 0], tokens[:, -1] = 1, 2
    return {"image": rng.uniform(0, 1, (n, 16, 16, 3)).astype(np.float32), "tokens": tokens}


def _steps(cfg, mesh, n_steps=2):
    trainer = make_trainer(cfg, VOCAB, mesh)
    state = trainer.init(jax.random.key(0))
    metrics = []
    for i in range(n_steps):
        state, m = trainer.step(state, parallel.global_batch(_batch(cfg.batch, i), trainer.mesh))
        metrics.append({k: float(v) for k, v in jax.device_get(m).items()})
    return metrics, jax.device_get(state["train"].params)


@pytest.mark.parametrize("weights", [dict(sep_weight=1.0), dict(br_weight=1.0),
                                     dict(br_weight=1.0, br_stop_gradient=True), dict(gc_weight=1.0),
                                     dict(sep_weight=0.5, br_weight=2.0, gc_weight=1.5, br_sample_t=True)])
def test_loss_is_contrastive_plus_weighted_regularizers(weights):
    cfg = dataclasses.replace(TINY, **weights)
    metrics, params = _steps(cfg, parallel.data_mesh(jax.devices()[:1]), 3)
    for m in metrics:
        assert all(np.isfinite(v) for v in m.values())
        weighted = [getattr(cfg, f"{r}_weight") * m[f"reg/{r}"] for r in cfg.regularizers]
        np.testing.assert_allclose(m["loss"], m["reg/contrastive"] + sum(weighted), rtol=1e-5)
        logged = {k for k in m if k.startswith("reg/")}
        assert logged == {"reg/contrastive", *(f"reg/{r}" for r in cfg.regularizers)}
    # Independent heads exist exactly when L_Sep is on.
    assert ("image_ind_proj" in params["params"]) == (cfg.sep_weight > 0)


def test_without_regularizers_the_loss_is_unchanged():
    plain, _ = _steps(TINY, parallel.data_mesh(jax.devices()[:1]), 1)
    zero = dataclasses.replace(TINY, sep_weight=0.0, br_weight=0.0, gc_weight=0.0)
    again, _ = _steps(zero, parallel.data_mesh(jax.devices()[:1]), 1)
    assert plain[0]["loss"] == again[0]["loss"] and "reg/contrastive" not in plain[0]


def test_gc_regularizer_lowers_its_term():
    """Training with a large L_GC weight drives L_GC below where L_Con alone leaves it."""
    mesh = parallel.data_mesh(jax.devices()[:1])
    probe = dataclasses.replace(TINY, gc_weight=1e-6, steps=40)  # logs L_GC, barely trains on it
    strong = dataclasses.replace(TINY, gc_weight=20.0, steps=40)
    base, _ = _steps(probe, mesh, 25)
    reg, _ = _steps(strong, mesh, 25)
    assert reg[-1]["reg/gc"] < 0.5 * base[-1]["reg/gc"]


@pytest.mark.needs_8_devices
def test_regularized_step_on_8_devices_matches_1():
    m1, p1 = _steps(ALL, parallel.data_mesh(jax.devices()[:1]))
    m8, p8 = _steps(ALL, parallel.data_mesh(jax.devices()[:8]))
    for a, b in zip(m1, m8, strict=True):
        for k in ("loss", "reg/sep", "reg/br", "reg/gc", "reg/contrastive"):
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, err_msg=k)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(p1), jax.tree.leaves(p8), strict=True):
        name = jax.tree_util.keystr(path)
        atol = 2 * ALL.lr if "['key']['bias']" in name else 2e-5  # see test_clip: zero-gradient biases
        np.testing.assert_allclose(b, a, atol=atol, err_msg=name)


def test_config_rejects_bad_regularizer_settings():
    cases = [("br_weight", -1.0, ">= 0"), ("br_t", 1.0, "(0, 1)"), ("sep_tau", 0.0, "> 0")]
    for field, value, allowed in cases:
        with pytest.raises(ConfigError, match=f"{field}.*{allowed}".replace("(", r"\(").replace(")", r"\)")):
            dataclasses.replace(TINY, **{field: value})


def test_method_configs_switch_on_their_regularizers():
    base = modality_structures_sweep("smoke", {}).methods
    assert tuple(base) == METHODS
    assert base["clip"].regularizers == () and base["sep+br+gc"].regularizers == ("sep", "br", "gc")
    assert base["gc"].regularizers == ("gc",) and base["gc"].gc_weight == 1.0
    tuned = modality_structures_sweep("smoke", {"br_weight": "0.3", "methods": "clip,br"}).methods
    assert tuple(tuned) == ("clip", "br") and tuned["br"].br_weight == 0.3 and tuned["clip"].br_weight == 0
    assert method_config(base["clip"], "sep+gc").regularizers == ("sep", "gc")


@pytest.mark.parametrize("argv, message", [
    (["--set", "methods=clip,foo"], "methods='clip,foo' is invalid"),
    (["--scale", "paper"], "scale='paper' is invalid"),
    (["--set", "gc_weight=-2"], "gc_weight"),
])
def test_study_bad_input_is_one_line(argv, message, capsys, tmp_path):
    assert cli.main(["sweep", "modality_structures", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_study_smoke_writes_results_and_resumes(tmp_path, capsys):
    argv = ["sweep", "modality_structures", "--scale", "smoke", "--seeds", "1", "--out", str(tmp_path),
            "--set", "methods=clip,sep+br+gc"]
    assert cli.main(argv) == 0
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["method", "seed", "metric", "value"]
    assert {r["method"] for r in rows} == {"clip", "sep+br+gc"}
    metrics = {r["metric"] for r in rows if r["method"] == "clip"}
    assert {"zeroshot/colour/top1", "zeroshot/mean/top1", "probe/shape/linear", "probe/size/5shot",
            "i2t_R@1", "t2i_R@10", "gap/centroid_distance"} <= metrics
    values = {(r["method"], r["metric"]): float(r["value"]) for r in rows}
    zs = [values[("clip", f"zeroshot/{a}/top1")] for a in ("colour", "shape", "size", "height", "background")]
    np.testing.assert_allclose(values[("clip", "zeroshot/mean/top1")], np.mean(zs), rtol=1e-6)
    assert "reg/br" in {r["metric"] for r in rows if r["method"] == "sep+br+gc"}
    assert (tmp_path / "results.png").stat().st_size > 10_000
    first = json.loads((tmp_path / "sweep.json").read_text())
    assert all(j["status"] == "ok" for j in first["jobs"].values())
    # A rerun finds every run finished and only re-reads the evaluations.
    assert cli.main(argv) == 0
    again = json.loads((tmp_path / "sweep.json").read_text())
    assert all(j["status"] == "ok (cached)" for j in again["jobs"].values())
    assert again["run_seconds"] == first["run_seconds"]
    with open(tmp_path / "results.csv") as f:
        assert list(csv.DictReader(f)) == rows
    # Another config into the same --out is refused, not answered with the old results.
    capsys.readouterr()
    assert cli.main([*argv, "--set", "lr=0.002"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mmjax: error")]
    assert len(errors) == 1 and "lr=0.001, not 0.002: use a new --out" in errors[0]
