"""Two JAX processes on localhost (gloo collectives, one CPU device each) reproduce a single-process run."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np

from mmjax import parallel
from mmjax.configs.clip import ClipConfig
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


def _losses(workdir: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one(tmp_path):
    port = _free_port()
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
    sets = [arg for k, v in SETS.items() for arg in ("--set", f"{k}={v}")]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "mmjax.cli", "train", "--config", str(CONFIG), "--workdir",
         str(tmp_path / "two"), "--coordinator", f"localhost:{port}", "--num_processes", "2",
         "--process_id", str(i), *sets], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    for i, (p, out) in enumerate(zip(procs, outs, strict=True)):
        assert p.returncode == 0, f"process {i} failed:\n{out[-3000:]}"

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
        atol = 2 * cfg.lr if "['key']['bias']" in name else 2e-5  # see test_clip: zero-gradient biases
        np.testing.assert_allclose(b, a, atol=atol, err_msg=name)
