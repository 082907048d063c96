"""Two JAX processes on localhost (gloo collectives, one CPU device each) reproduce a single-process run.

The two-process run itself takes about a minute (two interpreters, two compiles, gloo start-up) and is
in the slow set; the fast test checks, in one process, the two facts it rests on.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from mmjax import parallel
from mmjax.configs.clip import ClipConfig
from mmjax.data.pipeline import ArraySource, make_dataset
from mmjax.train.checkpoint import Checkpointer
from mmjax.train.clip import make_trainer
from mmjax.train.loop import load_data, train_and_evaluate

SETS = dict(num_train=256, num_eval=64, image_size=16, patch=8, width=16, depth=1, heads=2, embed_dim=16,
            max_len=12, batch=16, steps=4, warmup_steps=1, log_every=1, eval_every=100, ckpt_every=4,
            final_eval=False)
CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "clip_tiny.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _train_in_two_processes(config: Path, workdir: Path, sets: dict) -> None:
    """`mmjax train --config config` in two processes on localhost (one CPU device each), to the end."""
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
    args = [arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "mmjax.cli", "train", "--config", str(config), "--workdir", str(workdir),
         "--coordinator", f"localhost:{port}", "--num_processes", "2", "--process_id", str(i), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    for i, (p, out) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 0, f"process {i} failed:\n{out[-3000:]}"


def _losses(workdir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


# test_clip's TINY, so the 8-device step compiled there is reused (persistent compilation cache).
VOCAB = 24
TINY = ClipConfig(image_size=16, patch=8, width=16, depth=1, heads=2, embed_dim=16, max_len=8, batch=16,
                  steps=10, warmup_steps=1, lr=1e-3)


def _steps(batches, mesh):
    trainer = make_trainer(TINY, VOCAB, mesh)
    state = trainer.init(jax.random.key(0))
    losses = []
    for batch in batches:
        state, metrics = trainer.step(state, parallel.global_batch(batch, trainer.mesh))
        losses.append(float(metrics["loss"]))
    return losses, jax.device_get(state["train"].params)


@pytest.mark.needs_8_devices
def test_process_shards_reorder_the_global_batch_and_the_step_ignores_the_order(adam_zero_gradient_atol):
    # 1. The data: the two processes' per-process batches of every step hold the rows of the one
    #    process's global batch (the pipeline as train_and_evaluate builds it, with explicit shards).
    source = ArraySource({"index": np.arange(64), "image": np.zeros((64, 2, 2, 3), np.uint8)})
    one = make_dataset(source, batch_size=TINY.batch, seed=3, shard_index=0, shard_count=1, num_epochs=1)
    two = [make_dataset(source, batch_size=TINY.batch // 2, seed=3, shard_index=i, shard_count=2,
                        num_epochs=1) for i in range(2)]
    orders = []
    for step, batch in enumerate(one):
        halves = np.concatenate([two[i][step]["index"] for i in range(2)])
        assert sorted(halves) == sorted(batch["index"])
        position = {int(k): i for i, k in enumerate(batch["index"])}
        orders.append(np.array([position[int(k)] for k in halves]))  # one-process rows → two-process
    assert len(orders) == 4 and all((o != np.arange(TINY.batch)).any() for o in orders)
    # 2. The sharded step: the same rows in the two processes' order give the same losses and parameters.
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(2):
        tokens = rng.integers(4, VOCAB, (TINY.batch, TINY.max_len)).astype(np.int32)
        tokens[:, 0], tokens[:, -1] = 1, 2
        batches.append({"image": rng.uniform(0, 1, (TINY.batch, 16, 16, 3)).astype(np.float32),
                        "tokens": tokens})
    mesh = parallel.data_mesh(jax.devices()[:8])
    l1, p1 = _steps(batches, mesh)
    reordered = [{k: v[order] for k, v in b.items()} for b, order in zip(batches, orders[:2], strict=True)]
    l2, p2 = _steps(reordered, mesh)
    # A reordering of the rows only reorders float32 sums: bounds as in test_clip's sharded step.
    np.testing.assert_allclose(l2, l1, rtol=1e-5)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(p1), jax.tree.leaves(p2), strict=True):
        name = jax.tree_util.keystr(path)
        atol = adam_zero_gradient_atol(TINY, 2) if "['key']['bias']" in name else 2e-5
        np.testing.assert_allclose(b, a, atol=atol, err_msg=name)


@pytest.mark.slow
def test_two_processes_match_one(tmp_path, adam_zero_gradient_atol):
    _train_in_two_processes(CONFIG, tmp_path / "two", SETS)

    cfg = ClipConfig(**SETS)
    mesh = parallel.data_mesh(jax.devices()[:2])
    (tmp_path / "one").mkdir()
    trainer = make_trainer(cfg, load_data(cfg, tmp_path / "one").tokenizer.vocab_size, mesh)
    one = train_and_evaluate(cfg, tmp_path / "one", progress=False, trainer=trainer)
    # Each process read its own half of every global batch: the same rows in another order, which a
    # contrastive loss does not see.
    np.testing.assert_allclose(_losses(tmp_path / "two"), _losses(tmp_path / "one"), rtol=1e-5)
    step, state, _ = Checkpointer(tmp_path / "two" / "checkpoints", 4, 1).restore_latest(
        trainer.abstract_state())
    assert step == 4
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(jax.device_get(one["state"])),
                            jax.tree.leaves(jax.device_get(state)), strict=True):
        name = jax.tree_util.keystr(path)
        # See test_clip.test_sharded_step_matches_single_device: zero-gradient key biases.
        atol = adam_zero_gradient_atol(cfg, step) if "['key']['bias']" in name else 2e-5
        np.testing.assert_allclose(b, a, atol=atol, err_msg=name)


FUSION_CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "fusion_tiny.py"
FUSION_SETS = dict(dataset="generated", num_train=256, num_eval=64, image_size=16, patch=8, width=16, depth=1,
                   heads=2, embed_dim=16, max_len=12, batch=16, steps=4, warmup_steps=1, text_depth=2,
                   fusion_layers=1, queue_size=32, log_every=1, eval_every=100, ckpt_every=4,
                   final_eval=False)


@pytest.mark.slow  # two fusion compiles in two interpreters, then one here (about 2 minutes on 2 cores)
def test_two_processes_train_the_fusion_model_as_one_process_on_their_rows(tmp_path, adam_zero_gradient_atol):
    """The fusion step draws per global row (MLM masks, hard negatives) and enqueues rows in order, so the
    two-process run must equal one process on 2 devices fed the same global batches in the same order:
    process 0's rows, then process 1's. Parameters, momentum model, both queues and the pointer."""
    from mmjax.cli import load_train_config
    from mmjax.train.fusion import make_trainer as make_fusion_trainer

    _train_in_two_processes(FUSION_CONFIG, tmp_path / "two", FUSION_SETS)

    cfg = load_train_config(str(FUSION_CONFIG), {k: str(v) for k, v in FUSION_SETS.items()})
    (tmp_path / "one").mkdir()
    data = load_data(cfg, tmp_path / "one")
    trainer = make_fusion_trainer(cfg, data.tokenizer.vocab_size, parallel.data_mesh(jax.devices()[:2]))
    halves = [make_dataset(data.train, batch_size=cfg.batch // 2, seed=cfg.seed, tokenizer=data.tokenizer,
                           max_len=cfg.max_len, shard_index=i, shard_count=2) for i in range(2)]
    state, losses = trainer.init(jax.random.key(cfg.seed)), []
    for step in range(cfg.steps):
        batch = {k: np.concatenate([h[step][k] for h in halves]) for k in trainer.batch_keys}
        state, metrics = trainer.step(state, parallel.global_batch(batch, trainer.mesh))
        losses.append(float(metrics["loss"]))
    # Same rows, order, keys and initial state: only how the 2-way reductions are carried out differs
    # (gloo all-reduce vs in-process), which reorders float32 sums (see test_fusion_trainer's
    # 8-device bounds).
    np.testing.assert_allclose(_losses(tmp_path / "two"), losses, rtol=2e-5)
    step, restored, _ = Checkpointer(tmp_path / "two" / "checkpoints", 4, 1).restore_latest(
        trainer.abstract_state())
    assert step == cfg.steps
    state = jax.device_get(state)
    assert set(restored["momentum"]) == {"params", "img_queue", "txt_queue", "ptr"}
    assert int(restored["momentum"]["ptr"]) == int(state["momentum"]["ptr"])
    restored = jax.device_get(restored)
    leaves = jax.tree.leaves(restored)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(state), leaves, strict=True):
        name = jax.tree_util.keystr(path)
        # Attention key biases get exactly zero gradient (see test_clip's sharded step); everything else,
        # the momentum model ((1 − m) of the same steps) and the queues (unit features) within 2e-5.
        atol = adam_zero_gradient_atol(cfg, step) if "['key']['bias']" in name else 2e-5
        np.testing.assert_allclose(b, a, atol=atol, err_msg=name)
