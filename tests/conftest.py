"""Test-session setup: give the process 8 fake CPU devices before jax is imported anywhere, and share
compiled programs between tests through a persistent compilation cache that lives for one session."""

import os
import shutil
import tempfile

import pytest

_FLAG = "--xla_force_host_platform_device_count=8"
_existing = os.environ.get("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in _existing:
    os.environ["XLA_FLAGS"] = f"{_existing} {_FLAG}".strip()

_CACHE_ENV = "MMJAX_TEST_XLA_CACHE"
_cache_dir = None  # the cache directory this process made (and removes at the end)


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_8_devices: skipped unless jax sees at least 8 devices")
    # Many tests build the same tiny trainer (or sweep program) again: make_trainer returns new jitted
    # closures, so jax's in-memory cache misses, but the persistent cache is keyed by the compiled
    # program itself and returns the executable compiled earlier in this session. A fresh directory per
    # session keeps runs independent of each other (CI starts from nothing, and so does every run here);
    # pytest-xdist workers inherit the controller's directory through the environment and share it.
    global _cache_dir
    import jax

    if jax.config.jax_compilation_cache_dir is not None:
        return  # the caller chose a cache
    directory = os.environ.get(_CACHE_ENV)
    if directory is None:
        directory = _cache_dir = tempfile.mkdtemp(prefix="mmjax-test-xla-cache-")
        os.environ[_CACHE_ENV] = directory
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    try:
        import filelock  # noqa: F401
    except ImportError:
        return
    # A size limit turns on jax's file lock around cache reads and writes, so one process never reads
    # an entry another is still writing; the limit itself (16 GiB) is never reached.
    jax.config.update("jax_compilation_cache_max_size", 2**34)


def pytest_unconfigure(config):
    if _cache_dir is not None:
        shutil.rmtree(_cache_dir, ignore_errors=True)
        os.environ.pop(_CACHE_ENV, None)


def _adam_zero_gradient_atol(cfg, n_steps: int) -> float:
    """How far two runs of `n_steps` AdamW steps of a ClipConfig can move a parameter apart at most.

    With b1 = 0.9, b2 = 0.999: m_t = Σ a_i g_i, v_t = Σ b_i g_i² (a_i = (1-b1) b1^(t-i),
    b_i = (1-b2) b2^(t-i)), so by Cauchy–Schwarz |m̂_t / √v̂_t| ≤ r_t = √(Σ a_i²/b_i) · √(1-b2^t) / (1-b1^t)
    for any gradients (r_1 = 1, r_2 = 1.0013). A parameter whose exact gradient is zero (attention key
    biases: a shift of every logit of a query leaves the softmax unchanged) gets float noise as its
    gradient, so each run steps it by up to lr_t·r_t in either direction (biases have no weight decay):
    two runs differ by at most 2 Σ_t lr_t·r_t, whatever the CPU or the thread count.
    """
    import optax

    b1, b2 = 0.9, 0.999
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, cfg.warmup_steps, cfg.steps)
    total = 0.0
    for t in range(1, n_steps + 1):
        s = sum(((1 - b1) * b1 ** (t - i)) ** 2 / ((1 - b2) * b2 ** (t - i)) for i in range(1, t + 1))
        r_t = (s * (1 - b2 ** t)) ** 0.5 / (1 - b1 ** t)
        total += 2 * float(schedule(t - 1)) * r_t
    return total


@pytest.fixture
def adam_zero_gradient_atol():
    """`atol(cfg, n_steps)`: see `_adam_zero_gradient_atol`."""
    return _adam_zero_gradient_atol


def pytest_collection_modifyitems(config, items):
    """Skip `needs_8_devices` tests when jax was imported before this file could add the fake devices."""
    import jax

    found = len(jax.devices())
    if found >= 8:
        return
    skip = pytest.mark.skip(reason=f"needs 8 devices (this conftest sets {_FLAG} unless jax was "
                                   f"imported first); found {found}")
    for item in items:
        if "needs_8_devices" in item.keywords:
            item.add_marker(skip)
