"""What a sweep is made of, as plain data: settings, experiments, method sweeps, and the protocol a
sweepable config follows. Configs build these; `mmjax.train` runs them (configs never import train).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from mmjax.configs.common import ConfigError


@runtime_checkable
class Sweepable(Protocol):
    """A config that `mmjax sweep` can vmap: a static half fixing shapes (one compile per distinct
    value), a traced half (stacked along the sweep axis), a JSON-able record, and its result rows.

    `to_static()` returns a hashable static config that also provides `draw_world(key)` (the per-seed
    structure shared by every setting of a seed); `mmjax.train.sweep.build_run` turns it into the pure
    `run(params, world, key)` it vmaps. `with_overrides` applies `--set`/`--grid` strings.
    """

    def to_static(self) -> Any: ...

    def to_params(self) -> Any: ...

    def to_dict(self) -> dict: ...

    def result_rows(self, result: Any) -> list[dict]: ...

    def with_overrides(self, overrides: dict[str, str]) -> Sweepable: ...


@dataclass(frozen=True)
class Setting:
    """One column of a paper figure (or one grid point): a label and the config it runs."""

    label: str
    config: Sweepable
    grid: tuple[tuple[str, str], ...] = ()  # (field, value) of the grid point, results.csv columns


@dataclass(frozen=True)
class Experiment:
    """A named list of settings, run for several seeds."""

    name: str
    settings: tuple[Setting, ...]
    description: str = ""
    metric_label: str = "non-linear R²"  # what the heatmap cells show


def with_grid(experiment: Experiment, axes: Sequence, override: Callable | None = None) -> Experiment:
    """The experiment's settings × the grid (identical configs merged); see `mmjax.configs.grid`."""
    from mmjax.configs.common import override as default_override
    from mmjax.configs.grid import expand

    if not axes:
        return experiment
    points = expand([(s.label, s.config) for s in experiment.settings], axes, override or default_override)
    settings = tuple(Setting(label, cfg, tuple(chosen.items())) for label, cfg, chosen in points)
    return dataclasses.replace(experiment, settings=settings)


@dataclass(frozen=True)
class MethodSweep:
    """A named set of methods, each a full training config (its `seed` is replaced per run)."""

    name: str
    methods: Mapping[str, Any]
    description: str = ""
    # Panels of the bar plot: title → metric names (each a key of the final evaluation).
    panels: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)


def parse_methods(spec: str, known: Sequence[str]) -> tuple[str, ...]:
    """Comma-separated method names, each checked against `known`."""
    names = tuple(m.strip() for m in spec.split(",") if m.strip())
    bad = [m for m in names if m not in known]
    if not names or bad:
        raise ConfigError(f"methods={spec!r} is invalid: comma-separated names from {', '.join(known)}")
    return names
