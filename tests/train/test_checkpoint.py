"""Checkpointer: interval and retention, typed restore, fallback past a corrupted newest step."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.train.checkpoint import Checkpointer, abstract_like
from mmjax.train.step import init_state


def _state(scale: float):
    params = {"w": jnp.full((3, 2), scale), "b": jnp.arange(2.0) * scale}
    state = init_state(params, optax.adamw(1e-3))
    return {"train": state, "key": jax.random.key_data(jax.random.key(int(scale)))}


def test_interval_keep_and_typed_restore(tmp_path):
    ckpt = Checkpointer(tmp_path, every=2, keep=2)
    for step in range(1, 8):
        ckpt.save(step, _state(step), {"data": {"epoch": 0, "pos": step}})
    assert ckpt.steps() == [4, 6]
    step, state, record = ckpt.restore_latest(abstract_like(_state(0.0)))
    assert step == 6 and record == {"data": {"epoch": 0, "pos": 6}}
    # The optax state comes back as its named tuples, not lists.
    assert isinstance(state["train"].opt_state[0], optax.ScaleByAdamState)
    jax.tree.map(np.testing.assert_array_equal, state, _state(6.0))
    # A forced save off the interval is kept too.
    assert ckpt.save(7, _state(7.0), {}, force=True)
    assert ckpt.steps() == [6, 7]
    ckpt.close()


def test_empty_directory_restores_nothing(tmp_path):
    assert Checkpointer(tmp_path / "none", every=1, keep=1).restore_latest(abstract_like(_state(0))) is None


def test_corrupted_latest_falls_back_with_warning(tmp_path):
    ckpt = Checkpointer(tmp_path, every=1, keep=3)
    for step in (1, 2):
        ckpt.save(step, _state(step), {"pos": step})
    # Truncate every data file of the newest step's state.
    for root, _, files in os.walk(tmp_path / "2" / "state"):
        for name in files:
            open(os.path.join(root, name), "wb").close()
    with pytest.warns(UserWarning, match="checkpoint step 2 .* could not be restored"):
        step, state, record = ckpt.restore_latest(abstract_like(_state(0.0)))
    assert step == 1 and record == {"pos": 1}
    jax.tree.map(np.testing.assert_array_equal, state, _state(1.0))
    # Training resumed from step 1 can write step 2 again; the unreadable one is kept aside.
    assert ckpt.save(2, _state(5.0), {"pos": 2}, force=True)
    assert ckpt.steps() == [1, 2] and (tmp_path / "2.unreadable").is_dir()
    restored = ckpt.restore_latest(abstract_like(_state(0.0)))[1]
    jax.tree.map(np.testing.assert_array_equal, restored, _state(5.0))
