"""The structure regularizers inside the two-tower trainer, and the modality-structures study."""

import csv
import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import cli, parallel
from mmjax.configs.clip import ClipConfig
from mmjax.configs.common import ConfigError
from mmjax.configs.structures import METHODS, method_config, modality_structures_sweep
from mmjax.losses.contrastive import con_loss
from mmjax.train.clip import build_model, make_objective, make_trainer
from mmjax.train.method_sweep import MethodSweep, run_method_sweep

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


def _assert_weighted_sum(loss: float, terms: dict, cfg: ClipConfig) -> None:
    """loss == reg/contrastive + Σ weight · reg/<r>, to float32 rounding.

    Both sides add n ≤ 4 float32 products, each multiply and add rounding by at most u = 2^-24 of a
    partial sum no larger than S = |reg/contrastive| + Σ |weight · reg/<r>|; so they differ by at most
    4n·u·S = 2n·eps32·S (terms can have either sign, hence the bound on S, not on |loss|).
    """
    parts = [terms["reg/contrastive"], *(getattr(cfg, f"{r}_weight") * terms[f"reg/{r}"]
                                         for r in cfg.regularizers)]
    bound = 2 * len(parts) * np.finfo(np.float32).eps * sum(abs(float(p)) for p in parts)
    np.testing.assert_allclose(loss, sum(float(p) for p in parts), rtol=0, atol=bound)


@pytest.fixture(scope="module")
def all_on_one_device():
    """Two steps of ALL (every regularizer on) on one device: compiled once, read by two tests."""
    return _steps(ALL, parallel.data_mesh(jax.devices()[:1]))


def _embeddings(n: int, seed: int) -> dict:
    """Unit-norm embeddings under every name the objective reads (first and second view, shared and
    independent heads)."""
    rng = np.random.default_rng(seed)
    names = ("img", "txt", "img_aug", "txt_aug", "img_ind", "txt_ind", "img_ind_aug", "txt_ind_aug")
    out = {}
    for name in names:
        x = rng.normal(size=(n, TINY.embed_dim)).astype(np.float32)
        out[name] = jnp.asarray(x / np.linalg.norm(x, axis=1, keepdims=True))
    return out


@pytest.mark.parametrize("weights", [dict(sep_weight=1.0), dict(br_weight=1.0),
                                     dict(br_weight=1.0, br_stop_gradient=True), dict(gc_weight=1.0),
                                     dict(sep_weight=0.5, br_weight=2.0, gc_weight=1.5, br_sample_t=True)])
def test_loss_is_contrastive_plus_weighted_regularizers(weights):
    """The objective the train step differentiates, for each regularizer alone and all together.

    The objective is what the trainer's loss function returns (its terms are the logged `reg/*`
    metrics), so it is checked here on its own, compiled without the towers and optimiser (about 1 s
    a config instead of 15); `test_regularized_trainer_logs_the_weighted_sum` checks the same sum on the
    metrics of real train steps.
    """
    cfg = dataclasses.replace(TINY, **weights)
    objective = jax.jit(make_objective(cfg))
    for seed in range(3):
        scalars = {"log_scale": jnp.float32(np.log(1 / 0.07) - seed), "logit_bias": jnp.float32(-10.0),
                   "key": jax.random.key_data(jax.random.key(seed))}
        loss, terms = jax.device_get(objective(_embeddings(cfg.batch, seed), scalars))
        assert np.isfinite(loss) and all(np.isfinite(v) for v in terms.values())
        assert set(terms) == {"reg/contrastive", *(f"reg/{r}" for r in cfg.regularizers)}
        _assert_weighted_sum(loss, terms, cfg)
        assert all(terms[f"reg/{r}"] != 0 for r in cfg.regularizers)
    # Independent heads exist exactly when L_Sep is on.
    images = jnp.zeros((1, cfg.image_size, cfg.image_size, 3), jnp.float32)
    shapes = jax.eval_shape(build_model(cfg, VOCAB).init, jax.random.key(0), images,
                            jnp.zeros((1, cfg.max_len), jnp.int32))
    assert ("image_ind_proj" in shapes["params"]) == (cfg.sep_weight > 0)


@pytest.mark.slow  # ~30-90 s: in the slow set to keep the default suite under 10 min
def test_regularized_trainer_logs_the_weighted_sum(all_on_one_device):
    metrics, params = all_on_one_device
    assert metrics[0]["loss"] != metrics[1]["loss"]  # the first step moved the parameters
    for m in metrics:
        assert all(np.isfinite(v) for v in m.values())
        _assert_weighted_sum(m["loss"], m, ALL)
        logged = {k for k in m if k.startswith("reg/")}
        assert logged == {"reg/contrastive", "reg/sep", "reg/br", "reg/gc"}
    assert "image_ind_proj" in params["params"] and "text_ind_proj" in params["params"]


def test_without_regularizers_the_loss_is_unchanged():
    zero = dataclasses.replace(TINY, sep_weight=0.0, br_weight=0.0, gc_weight=0.0)
    assert zero == TINY and zero.regularizers == ()  # the same config, hence the same compiled step
    # Its objective is L_Con alone, with no reg/ terms.
    emb = _embeddings(TINY.batch, 0)
    log_scale = jnp.float32(np.log(1 / 0.07))
    scalars = {"log_scale": log_scale, "logit_bias": jnp.float32(-10.0),
               "key": jax.random.key_data(jax.random.key(0))}
    loss, terms = jax.jit(make_objective(zero))(emb, scalars)
    assert terms == {}
    want = jax.jit(con_loss)(emb["img"], emb["txt"], emb["img_aug"], emb["txt_aug"], log_scale)
    # The same float32 operations; compiled as part of another program XLA may fuse them differently,
    # which moves a mean of four O(1) cross-entropies by a few ulp (8·eps32 ≈ 1e-6 relative).
    np.testing.assert_allclose(float(loss), float(want), rtol=8 * np.finfo(np.float32).eps)
    # And a train step logs no reg/ metric (the clip loss makes this test_clip's TINY: compiled there).
    plain, _ = _steps(dataclasses.replace(TINY, loss="clip"), parallel.data_mesh(jax.devices()[:1]), 1)
    assert "loss" in plain[0] and not any(k.startswith("reg/") for k in plain[0])


@pytest.mark.slow  # ~30-90 s: in the slow set to keep the default suite under 10 min
def test_gc_regularizer_lowers_its_term():
    """Training with a large L_GC weight drives L_GC below where L_Con alone leaves it."""
    mesh = parallel.data_mesh(jax.devices()[:1])
    probe = dataclasses.replace(TINY, gc_weight=1e-6, steps=40)  # logs L_GC, barely trains on it
    strong = dataclasses.replace(TINY, gc_weight=20.0, steps=40)
    base, _ = _steps(probe, mesh, 25)
    reg, _ = _steps(strong, mesh, 25)
    assert reg[-1]["reg/gc"] < 0.5 * base[-1]["reg/gc"]


@pytest.mark.slow  # ~30-90 s: in the slow set to keep the default suite under 10 min
@pytest.mark.needs_8_devices
def test_regularized_step_on_8_devices_matches_1(all_on_one_device, adam_zero_gradient_atol):
    m1, p1 = all_on_one_device
    m8, p8 = _steps(ALL, parallel.data_mesh(jax.devices()[:8]))
    for a, b in zip(m1, m8, strict=True):
        for k in ("loss", "reg/sep", "reg/br", "reg/gc", "reg/contrastive"):
            np.testing.assert_allclose(b[k], a[k], rtol=1e-5, err_msg=k)  # bound: see test_clip
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(p1), jax.tree.leaves(p8), strict=True):
        name = jax.tree_util.keystr(path)
        # See test_clip.test_sharded_step_matches_single_device: zero-gradient key biases.
        atol = adam_zero_gradient_atol(ALL, 2) if "['key']['bias']" in name else 2e-5
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
    assert cli.main(["sweep", "structures_two_tower", "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


# The config of test_clip's LOOP, so the programs compiled there are reused here (persistent cache).
RUN = ClipConfig(num_train=512, num_eval=128, image_size=16, patch=8, width=32, depth=1, heads=2,
                 embed_dim=32, max_len=12, batch=32, steps=12, warmup_steps=2, lr=2e-3, log_every=1,
                 eval_every=100, ckpt_every=6, keep=2)


@pytest.mark.slow  # ~30-90 s: in the slow set to keep the default suite under 10 min
def test_method_sweep_rows_rerun_from_cache_and_refuses_another_config(tmp_path):
    """The loop of the modality-structures study (the slow test below runs the study itself)."""
    sweep = MethodSweep("tiny", {"clip": RUN})
    first = run_method_sweep(sweep, tmp_path, seeds=[0, 1])
    assert [j["status"] for j in first["jobs"].values()] == ["ok", "ok"]
    rows = first["rows"]
    assert {(r["method"], r["seed"]) for r in rows} == {("clip", 0), ("clip", 1)}
    assert {"loss", "zeroshot/top1", "probe/linear", "i2t_R@1", "gap/centroid_distance"} <= {
        r["metric"] for r in rows}
    loss = {r["seed"]: r["value"] for r in rows if r["metric"] == "loss"}
    assert loss[0] != loss[1]  # each run got its seed
    # A rerun finds every run finished, trains nothing and keeps the recorded training times.
    again = run_method_sweep(sweep, tmp_path, seeds=[0, 1])
    assert [j["status"] for j in again["jobs"].values()] == ["ok (cached)", "ok (cached)"]
    assert again["run_seconds"] == first["run_seconds"] and again["rows"] == rows
    # Another config for the same runs is refused before anything is trained.
    changed = MethodSweep("tiny", {"clip": dataclasses.replace(RUN, lr=4e-3)})
    with pytest.raises(ConfigError, match=r"lr=0\.002, not 0\.004: use a new --out"):
        run_method_sweep(changed, tmp_path, seeds=[0, 1])


@pytest.mark.slow
def test_study_smoke_writes_results_and_resumes(tmp_path, capsys):
    argv = ["sweep", "structures_two_tower", "--scale", "smoke", "--seeds", "1", "--out", str(tmp_path),
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
