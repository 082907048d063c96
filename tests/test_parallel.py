"""mmjax.parallel: multi-host settings from flags and environment, batch checks, global batches."""

import jax
import numpy as np
import pytest

from mmjax import parallel
from mmjax.configs.common import ConfigError


def test_distributed_settings_flags_override_environment(monkeypatch):
    monkeypatch.setenv("MMJAX_COORDINATOR", "10.0.0.1:1234")
    monkeypatch.setenv("MMJAX_NUM_PROCESSES", "4")
    monkeypatch.setenv("MMJAX_PROCESS_ID", "3")
    assert parallel.distributed_settings() == {"coordinator": "10.0.0.1:1234", "num_processes": 4,
                                               "process_id": 3}
    assert parallel.distributed_settings(process_id=1)["process_id"] == 1


def test_single_process_needs_no_initialisation(monkeypatch):
    for name in ("MMJAX_COORDINATOR", "MMJAX_NUM_PROCESSES", "MMJAX_PROCESS_ID", "MMJAX_AUTO_DISTRIBUTED"):
        monkeypatch.delenv(name, raising=False)
    assert parallel.initialize_distributed() is False
    assert parallel.initialize_distributed(num_processes=1) is False
    with pytest.raises(ConfigError, match="num_processes=2 needs coordinator and process_id"):
        parallel.initialize_distributed(num_processes=2)


def test_batch_divisibility_and_global_batch():
    mesh = parallel.data_mesh(jax.devices()[:4])
    with pytest.raises(ConfigError, match=r"batch=6 is invalid: must be divisible by the device count 4"):
        parallel.check_batch_divisible(6, mesh)
    local = {"x": np.arange(16.0).reshape(8, 2)}
    batch = parallel.global_batch(local, mesh)
    assert batch["x"].sharding.spec == jax.sharding.PartitionSpec("data")
    assert len(batch["x"].addressable_shards) == 4
    np.testing.assert_array_equal(np.asarray(batch["x"]), local["x"])
