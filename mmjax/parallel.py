"""Meshes, batch sharding, shard_map'd losses and multi-host start-up.

See docs/design.md#data-parallelism and docs/design.md#multi-host.

One data axis spans every device of every process. The model runs under plain `jit` on the sharded
global batch (XLA partitions it); the contrastive loss runs inside `jax.shard_map`, so each device scores
its local rows against embeddings gathered from all devices.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mmjax.configs.common import ConfigError

DATA_AXIS = "data"
_ENV = {"coordinator": "MMJAX_COORDINATOR", "num_processes": "MMJAX_NUM_PROCESSES",
        "process_id": "MMJAX_PROCESS_ID", "local_devices": "MMJAX_LOCAL_DEVICE_IDS"}


# XLA:CPU in jaxlib 0.10 hands dots and their neighbours to YNNPACK fusions by default. Measured
# side by side on the 2-core machines of benchmarks/README.md: XLA's own kernels run the paper-width
# synthetic step (750-wide layers, batch 6144) ~15 % faster and the MLP probe loop of the R² evaluation
# ~20 % faster; at widths 64 (the cpu recipe) they are 3-9 % slower, at paper widths and batch 512 even.
_NO_YNN_FUSIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


@functools.cache
def _compiler_option_accepted(name: str, value: str) -> bool:
    """Whether this jaxlib's XLA accepts the compiler option (older ones do not know the YNN flag)."""
    try:
        jax.jit(lambda x: x + 1).lower(np.float32(0)).compile({name: value})
    except jax.errors.JaxRuntimeError:
        return False
    return True


def cpu_compiler_options(*, ynn_fusions: bool = True) -> dict[str, str] | None:
    """Compiler options for an mmjax program (`Lowered.compile(options)`, `jax.jit(compiler_options=)`).

    None (XLA's defaults) unless the default backend is the CPU and `ynn_fusions` is False: then XLA's
    own dot kernels instead of YNNPACK fusions, where this jaxlib knows the option. Per program, so
    other programs of the process keep their defaults; other backends never see a CPU option.
    """
    if ynn_fusions or jax.default_backend() != "cpu":
        return None
    if not all(_compiler_option_accepted(k, v) for k, v in _NO_YNN_FUSIONS.items()):
        return None
    return dict(_NO_YNN_FUSIONS)


def data_mesh(devices: list | None = None, axis: str = DATA_AXIS) -> Mesh:
    """A 1-D mesh over all (global) devices with an Auto-typed data axis."""
    devs = np.asarray(jax.devices() if devices is None else devices)
    return Mesh(devs, (axis,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh, axis: str = DATA_AXIS) -> NamedSharding:
    """Leading (batch) dimension split over the data axis."""
    return NamedSharding(mesh, P(axis))


def replicated(mesh: Mesh) -> NamedSharding:
    """Every device holds the whole array."""
    return NamedSharding(mesh, P())


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh, axis: str = DATA_AXIS) -> dict:
    """Global arrays from this process's rows (each process passes its own slice, in process order)."""
    sharding = batch_sharding(mesh, axis)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}


def check_batch_divisible(batch: int, mesh: Mesh, name: str = "batch") -> None:
    """One-line error when the global batch cannot be split evenly over the devices."""
    n = mesh.devices.size
    if batch % n:
        raise ConfigError(f"{name}={batch} is invalid: must be divisible by the device count {n} "
                         f"(e.g. {max(n, batch // n * n)})")


def sharded_loss(loss: Callable[..., Any], mesh: Mesh, n_sharded: int, n_replicated: int = 0,
                 axis: str = DATA_AXIS, out_specs: Any = None) -> Callable[..., Any]:
    """Wrap `loss(*sharded, *replicated, axis_name=...)` in shard_map: batch args split, scalars shared.

    Each argument may be a pytree (every leaf of a sharded one is split along its leading axis). By
    default (`out_specs=None`) every output is replicated: the loss must reduce with `lax.pmean` (or
    gather) over `axis_name`, so every output leaf is the same on every device. `out_specs` (a pytree
    prefix of the outputs, e.g. `(P(), P("data"))`) may instead mark outputs that stay split by rows,
    such as one sampled index per local row.
    """
    fn = functools.partial(loss, axis_name=axis)
    specs = (P(axis),) * n_sharded + (P(),) * n_replicated
    return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P() if out_specs is None else out_specs)


def distributed_settings(**flags: Any) -> dict[str, Any]:
    """Multi-host settings from explicit flags, falling back to MMJAX_* environment variables."""
    out: dict[str, Any] = {}
    for name, env in _ENV.items():
        value = flags.get(name)
        if value is None and os.environ.get(env):
            value = os.environ[env]
        if value is None:
            continue
        if name in ("num_processes", "process_id"):
            try:
                value = int(value)
            except ValueError:
                raise ConfigError(f"{name}={value!r} is invalid: must be an integer ({env})") from None
        elif name == "local_devices":
            value = [int(v) for v in str(value).split(",")] if isinstance(value, str) else list(value)
        out[name] = value
    return out


def initialize_distributed(**flags: Any) -> bool:
    """Call `jax.distributed.initialize` when more than one process is configured; True if it did.

    Flags (or MMJAX_COORDINATOR / MMJAX_NUM_PROCESSES / MMJAX_PROCESS_ID) name the coordinator
    address, the process count and this process's id. On a Cloud TPU pod slice pass `auto=True` (or set
    MMJAX_AUTO_DISTRIBUTED=1): JAX finds all three itself.
    """
    auto_env = os.environ.get("MMJAX_AUTO_DISTRIBUTED", "").lower() in ("1", "true", "yes")
    if flags.pop("auto", False) or auto_env:
        jax.distributed.initialize()
        return True
    cfg = distributed_settings(**flags)
    if cfg.get("num_processes", 1) <= 1:
        return False
    missing = [n for n in ("coordinator", "process_id") if n not in cfg]
    if missing:
        raise ConfigError(f"num_processes={cfg['num_processes']} needs {' and '.join(missing)} "
                         f"(flags or {', '.join(_ENV[m] for m in missing)})")
    # CPU processes need a collectives backend to talk to each other (accelerators bring their own).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=cfg["coordinator"], num_processes=cfg["num_processes"],
        process_id=cfg["process_id"], local_device_ids=cfg.get("local_devices"))
    return True
