"""Test-session setup: give the process 8 fake CPU devices before jax is imported anywhere, and share
compiled programs between tests through a persistent compilation cache that lives for one session."""

import os
import shutil
import tempfile

_FLAG = "--xla_force_host_platform_device_count=8"
_existing = os.environ.get("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in _existing:
    os.environ["XLA_FLAGS"] = f"{_existing} {_FLAG}".strip()

_cache_dir = None


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_8_devices: skipped unless jax sees at least 8 devices")
    # Many tests build the same tiny trainer (or sweep program) again: make_trainer returns new jitted
    # closures, so jax's in-memory cache misses, but the persistent cache is keyed by the compiled
    # program itself and returns the executable compiled earlier in this session. A fresh directory per
    # session keeps runs independent of each other (CI starts from nothing, and so does every run here).
    global _cache_dir
    import jax

    if jax.config.jax_compilation_cache_dir is None:
        _cache_dir = tempfile.mkdtemp(prefix="mmjax-test-xla-cache-")
        jax.config.update("jax_compilation_cache_dir", _cache_dir)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


def pytest_unconfigure(config):
    if _cache_dir is not None:
        shutil.rmtree(_cache_dir, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    """Skip `needs_8_devices` tests when jax was imported before this file could add the fake devices."""
    import jax
    import pytest

    found = len(jax.devices())
    if found >= 8:
        return
    skip = pytest.mark.skip(reason=f"needs 8 devices (this conftest sets {_FLAG} unless jax was "
                                   f"imported first); found {found}")
    for item in items:
        if "needs_8_devices" in item.keywords:
            item.add_marker(skip)
