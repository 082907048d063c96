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


def test_cpu_compiler_options_turn_ynn_fusions_off_and_keep_the_product():
    assert parallel.cpu_compiler_options() is None  # XLA's defaults unless asked
    options = parallel.cpu_compiler_options(ynn_fusions=False)
    accepted = parallel._compiler_option_accepted("xla_cpu_experimental_ynn_fusion_type", "")
    assert jax.default_backend() == "cpu"
    if not accepted:  # an older jaxlib without the option: nothing to set
        assert options is None
        return
    assert options == {"xla_cpu_experimental_ynn_fusion_type": ""}
    rng = np.random.default_rng(0)
    a = rng.normal(size=(256, 300)).astype(np.float32)
    b = rng.normal(size=(300, 200)).astype(np.float32)
    lowered = jax.jit(lambda x, y: x @ y).lower(a, b)
    plain, chosen = lowered.compile(), lowered.compile(options)
    assert "__ynn_fusion" not in chosen.as_text()  # the fusion kind YNNPACK dots carry
    # Either kernel is a float32 dot of length K = 300: whatever its summation order, the error is at
    # most gamma_K * (|a| |b|) elementwise, gamma_K = K u / (1 - K u), u = 2^-24 (Higham, Thm 3.5).
    exact = a.astype(np.float64) @ b.astype(np.float64)
    u, k = 2.0**-24, a.shape[1]
    bound = k * u / (1 - k * u) * (np.abs(a).astype(np.float64) @ np.abs(b).astype(np.float64))
    for compiled in (plain, chosen):
        assert np.all(np.abs(np.asarray(compiled(a, b), np.float64) - exact) <= bound)
