"""Test-session setup: give the process 8 fake CPU devices before jax is imported anywhere."""

import os

_FLAG = "--xla_force_host_platform_device_count=8"
_existing = os.environ.get("XLA_FLAGS", "")
if "--xla_force_host_platform_device_count" not in _existing:
    os.environ["XLA_FLAGS"] = f"{_existing} {_FLAG}".strip()


def pytest_configure(config):
    config.addinivalue_line("markers", "needs_8_devices: skipped unless jax sees at least 8 devices")


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
