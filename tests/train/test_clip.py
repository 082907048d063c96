"""The two-tower train step: 8 sharded devices = 1 device, accumulation, bfloat16, and the train loop
(loss falls, resumption is bit-identical, a NaN stops training and keeps the last good checkpoint)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax import parallel
from mmjax.configs.clip import ClipConfig
from mmjax.train.clip import make_trainer
from mmjax.train.loop import TrainingDiverged, load_data, train_and_evaluate
from mmjax.train.step import init_state, make_train_step

VOCAB = 24
TINY = ClipConfig(image_size=16, patch=8, width=16, depth=1, heads=2, embed_dim=16, max_len=8, batch=16,
                  steps=10, warmup_steps=1, lr=1e-3)


def _batch(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(4, VOCAB, (n, TINY.max_len)).astype(np.int32)
    tokens[:, 0], tokens[:, -1] = 1, 2  # sot ... eot
    return {"image": rng.uniform(0, 1, (n, 16, 16, 3)).astype(np.float32), "tokens": tokens}


def _run_steps(cfg: ClipConfig, mesh, n_steps: int = 2):
    trainer = make_trainer(cfg, VOCAB, mesh)
    state = trainer.init(jax.random.key(0))
    losses = []
    for i in range(n_steps):
        batch = parallel.global_batch(_batch(cfg.batch, seed=i), trainer.mesh)
        state, metrics = trainer.step(state, batch)
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state["train"].params)


@pytest.mark.needs_8_devices
# The sharded losses themselves (values, embedding and scalar gradients) are checked for every loss in
# tests/losses; "con" (two views) also runs through the trainer sharded, with every regularizer, in
# test_structures.test_regularized_step_on_8_devices_matches_1. Through the trainer, "clip" stays in the
# fast suite and the other two (about 15 s of compiles each) run with -m slow.
@pytest.mark.parametrize("loss", ["clip", pytest.param("siglip", marks=pytest.mark.slow),
                                  pytest.param("con", marks=pytest.mark.slow)])
def test_sharded_step_matches_single_device(loss, adam_zero_gradient_atol):
    cfg = dataclasses.replace(TINY, loss=loss)
    l1, p1 = _run_steps(cfg, parallel.data_mesh(jax.devices()[:1]))
    l8, p8 = _run_steps(cfg, parallel.data_mesh(jax.devices()[:8]))
    # Splitting the batch over devices reorders float32 sums. The loss is a mean of B = 16 non-negative
    # per-row terms, which a reordering moves by at most 2(B-1)·u = 1.8e-6 relative (u = 2^-24); the
    # second step's loss also sees the parameter differences below.
    np.testing.assert_allclose(l8, l1, rtol=1e-5)
    assert l1[1] != l1[0]
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(p1), jax.tree.leaves(p8), strict=True):
        name = jax.tree_util.keystr(path)
        # Attention key biases shift every logit of a query equally, so softmax makes their gradient
        # zero in exact arithmetic; Adam then turns float noise into steps of up to lr, bounded by
        # adam_zero_gradient_atol. Any other parameter, whose gradient g is far above the float noise e
        # of the reordered sums, moves by lr·(g ± e)/|g ± e|-like Adam steps: the runs differ by about
        # lr·e/|g| per step, and 2e-5 (2% of lr) holds while |g| > 50e.
        atol = adam_zero_gradient_atol(cfg, 2) if "['key']['bias']" in name else 2e-5
        np.testing.assert_allclose(b, a, atol=atol, err_msg=name)


def test_gradient_accumulation_equals_full_batch_for_a_row_separable_loss():
    params = {"w": jnp.arange(6.0).reshape(3, 2)}
    x = jax.random.normal(jax.random.key(1), (8, 3))
    y = jax.random.normal(jax.random.key(2), (8, 2))
    loss = lambda p, key, xb, yb: (jnp.mean((xb @ p["w"] - yb) ** 2), {})
    opt = optax.adam(0.1)
    full, m_full = make_train_step(loss, opt)(init_state(params, opt), jax.random.key(0), x, y)
    acc, m_acc = make_train_step(loss, opt, accum_steps=4)(init_state(params, opt), jax.random.key(0), x, y)
    np.testing.assert_allclose(m_acc["loss"], m_full["loss"], rtol=1e-6)
    np.testing.assert_allclose(acc.params["w"], full.params["w"], rtol=1e-6)
    # Each micro-batch is a strided slice, so a contrastive loss still sees every device's rows.
    seen = []

    def spy(p, key, xb):
        jax.debug.callback(lambda v: seen.append(np.asarray(v)), xb)
        return jnp.sum(p["w"]) * 0.0, {}

    make_train_step(spy, opt, accum_steps=2)(init_state(params, opt), jax.random.key(0), jnp.arange(8.0))
    np.testing.assert_array_equal(np.sort(np.concatenate(seen)), np.arange(8.0))
    np.testing.assert_array_equal(seen[0], [0.0, 2.0, 4.0, 6.0])


@pytest.mark.slow  # ~30-90 s: in the slow set to keep the default suite under 10 min
def test_accumulated_and_bfloat16_steps_train():
    mesh = parallel.data_mesh(jax.devices()[:1])
    l32, _ = _run_steps(TINY, mesh, 1)
    l_acc, _ = _run_steps(dataclasses.replace(TINY, accum_steps=2), mesh, 1)
    l_bf16, p_bf16 = _run_steps(dataclasses.replace(TINY, dtype="bfloat16"), mesh, 1)
    assert np.isfinite(l_acc[0]) and np.isfinite(l_bf16[0])
    # At initialisation the logits are small, so bfloat16 compute moves the loss little.
    np.testing.assert_allclose(l_bf16[0], l32[0], rtol=2e-2)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(p_bf16))


LOOP = ClipConfig(num_train=512, num_eval=128, image_size=16, patch=8, width=32, depth=1, heads=2,
                  embed_dim=32, max_len=12, batch=32, steps=12, warmup_steps=2, lr=2e-3, log_every=1,
                  eval_every=100, ckpt_every=6, keep=2)


def _losses(workdir) -> dict[int, float]:
    rows = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in rows}


def _rows(workdir) -> list[tuple[int, float]]:
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], r["loss"]) for r in map(json.loads, lines)]


def _loop_trainer(tmp_path):
    return make_trainer(LOOP, load_data(LOOP, tmp_path).tokenizer.vocab_size)


@pytest.mark.slow  # ~30-90 s: in the slow set to keep the default suite under 10 min
def test_resumed_run_is_bit_identical(tmp_path):
    trainer = _loop_trainer(tmp_path)
    full = train_and_evaluate(LOOP, tmp_path / "full", progress=False, trainer=trainer)
    first = train_and_evaluate(LOOP, tmp_path / "resumed", progress=False, trainer=trainer, stop_after=6)
    assert first["step"] == 6
    # As if the run had logged step 7 and was then killed before its next checkpoint.
    with (tmp_path / "resumed" / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 7, "loss": 123.0}) + "\n")
    resumed = train_and_evaluate(LOOP, tmp_path / "resumed", progress=False, trainer=trainer)
    assert resumed["step"] == 12
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(resumed["state"]),
                 jax.device_get(full["state"]))
    assert _rows(tmp_path / "resumed") == _rows(tmp_path / "full")  # the redone step 7 logged once
    for key in ("zeroshot/top1", "i2t_R@1", "probe/linear", "gap/centroid_distance"):
        assert resumed[key] == full[key]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    trainer = _loop_trainer(tmp_path)
    good_step = trainer.step

    def poisoned(state, batch):
        state, metrics = good_step(state, batch)
        bad = state["train"].step > 8
        return state, {**metrics, "loss": jnp.where(bad, jnp.nan, metrics["loss"])}

    trainer.step = poisoned
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 9: .*last good checkpoint \(step 6\)"):
        train_and_evaluate(LOOP, tmp_path, progress=False, trainer=trainer)
    assert sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == [6]


def test_tiny_training_learns(tmp_path):
    cfg = dataclasses.replace(LOOP, num_train=1024, steps=80, warmup_steps=5, log_every=10, ckpt_every=80)
    result = train_and_evaluate(cfg, tmp_path, progress=False)
    losses = list(_losses(tmp_path).values())
    assert losses[-1] < losses[0] - 1.0, losses
    chance_top1, chance_r10 = 1 / 12, 10 / cfg.num_eval
    assert result["zeroshot/top1"] > 2.5 * chance_top1
    assert result["i2t_R@10"] > 3 * chance_r10 and result["t2i_R@10"] > 3 * chance_r10
    assert result["probe/linear"] > 2.5 * chance_top1
    logged = json.loads((tmp_path / "eval.json").read_text())
    assert logged["step"] == 80 and logged["zeroshot/top1"] == result["zeroshot/top1"]
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())
