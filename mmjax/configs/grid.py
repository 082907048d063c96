"""Grids of configs from `field=values` strings (the CLI's `--grid`), expanded over a sweep's settings.

Value syntax, per field:

- a list: `lr=1e-3,3e-3,1e-2`; index sets (`theta`, `rho`) join indices with `+`: `theta=1+2+3,4+5`
  (1-based as in the paper); `rho=none` is the empty set;
- a range: `lo:hi:K` (K values, evenly spaced) or `lo:hi:logK` (K values, log-spaced), e.g.
  `lr=1e-3:1e-1:log5`; integer fields need integral values;
- seeds: `seed=0,5,9` or `seed=0:9:10` replaces `--seeds N` (which runs seeds 0..N-1);
- bias sets: `theta=all` (every non-empty subset of the n_s semantics: 1023 for n_s = 10),
  `theta=size:K` (every subset of size K), `theta=sample:K` (K of the 1023, drawn uniformly without
  replacement with a fixed seed; `sample:K:SEED` picks another draw), `rho=all-proper` (every proper
  subset of each θ, ∅ included), `rho=size:K` (every K-subset of each θ, K < |θ|).

The grid is the Cartesian product of its fields. It is applied to every setting of the experiment;
settings that become identical are merged (so `--grid theta=all` on the 10-setting selection sweep
is 1023 runs). Every grid value is validated by the config itself before anything compiles.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mmjax.configs.common import ConfigError, _fail

SET_FIELDS = ("theta", "rho")
# At most this many runs from one grid: a typo such as lr=1e-5:1:log100000 fails before it builds.
MAX_RUNS = 1_000_000


@dataclass(frozen=True)
class GridAxis:
    """One `--grid field=values` argument, not yet expanded (set keywords depend on the config)."""

    field: str
    raw: str


def parse_grid(specs: Sequence[str]) -> list[GridAxis]:
    """`field=values` strings to axes, failing on a malformed one or a repeated field."""
    axes: list[GridAxis] = []
    for spec in specs:
        name, sep, raw = spec.partition("=")
        name = name.strip()
        if not sep or not name or not raw.strip():
            raise ConfigError(f"--grid {spec!r} is invalid: expected field=v1,v2,... or field=lo:hi:K")
        if any(a.field == name for a in axes):
            raise ConfigError(f"--grid {name}={raw} is invalid: field {name} appears twice")
        axes.append(GridAxis(name, raw.strip()))
    return axes


def _range_values(axis: GridAxis, integer: bool) -> list[str]:
    """Values of `lo:hi:K` / `lo:hi:logK` as strings."""
    parts = axis.raw.split(":")
    allowed = "a range is lo:hi:K or lo:hi:logK with numbers lo, hi and a count K >= 1"
    if len(parts) != 3:
        _fail(axis.field, axis.raw, allowed)
    log = parts[2].startswith("log")
    try:
        lo, hi = float(parts[0]), float(parts[1])
        count = int(parts[2][3:] if log else parts[2])
    except ValueError:
        _fail(axis.field, axis.raw, allowed)
    if count < 1:
        _fail(axis.field, axis.raw, allowed)
    if log and not (lo > 0 and hi > 0):
        _fail(axis.field, axis.raw, "a log range needs lo > 0 and hi > 0")
    values = np.geomspace(lo, hi, count) if log else np.linspace(lo, hi, count)
    if integer:
        if not np.allclose(values, np.round(values), rtol=0, atol=1e-9):
            _fail(axis.field, axis.raw, f"field {axis.field} is an integer; the range gives "
                                        f"{', '.join(f'{v:g}' for v in values)}")
        return [str(int(round(v))) for v in values]
    return [repr(float(v)) for v in values]


def seed_values(axis: GridAxis) -> list[int]:
    """The seeds of a `seed=...` grid axis: a list (`0,5,9`) or a range (`0:9:10`), integers >= 0."""
    values = _range_values(axis, integer=True) if ":" in axis.raw else [
        v.strip() for v in axis.raw.split(",") if v.strip()]
    try:
        seeds = [int(v) for v in values]
    except ValueError:
        seeds = [-1]
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        _fail(axis.field, axis.raw, "seeds are distinct integers >= 0, e.g. seed=0,5,9 or seed=0:9:10")
    return seeds


def _subsets(universe: Sequence[int], spec: str, axis: GridAxis, proper: bool) -> list[tuple[int, ...]]:
    """Subsets of `universe` (0-based) named by a keyword: all, all-proper, size:K."""
    n = len(universe)
    if spec.startswith("sample:"):
        if proper:
            _fail(axis.field, axis.raw, "sample:K is for theta")
        every = _subsets(universe, "all", axis, proper=False)
        try:
            parts = spec.split(":")
            k, seed = int(parts[1]), int(parts[2]) if len(parts) > 2 else 0
        except (ValueError, IndexError):
            k, seed = -1, 0
        if not 1 <= k <= len(every):
            _fail(axis.field, axis.raw, f"sample:K[:SEED] needs 1 <= K <= {len(every)} for n_s={n}")
        pick = np.random.default_rng(seed).choice(len(every), size=k, replace=False)
        return [every[i] for i in sorted(pick, key=lambda i: (len(every[i]), every[i]))]
    if spec == "all":
        if proper:
            _fail(axis.field, axis.raw, "rho takes all-proper (every proper subset of θ), not all")
        sizes = range(1, n + 1)
    elif spec == "all-proper":
        if not proper:
            _fail(axis.field, axis.raw, "theta takes all or size:K; all-proper is for rho")
        sizes = range(0, n)
    else:
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError:
            k = -1
        top = n - 1 if proper else n
        if not (0 if proper else 1) <= k <= top:
            where = f"|θ|={n}" if proper else f"n_s={n}"
            _fail(axis.field, axis.raw, f"size:K needs {0 if proper else 1} <= K <= {top} for {where}")
        sizes = (k,)
    return [c for size in sizes for c in itertools.combinations(universe, size)]


def _is_keyword(axis: GridAxis) -> bool:
    return axis.field in SET_FIELDS and (axis.raw in ("all", "all-proper")
                                         or axis.raw.startswith(("size:", "sample:")))


def _set_string(indices: Sequence[int]) -> str:
    """0-based indices as the 1-based `--set` string (empty: '')."""
    return ",".join(str(i + 1) for i in indices)


def _explicit_values(axis: GridAxis, cfg) -> list[str]:
    """Values of a list or range, as `--set` strings."""
    ann = _annotation(cfg, axis.field)
    if axis.field in SET_FIELDS:
        values = []
        for item in axis.raw.split(","):
            item = item.strip()
            if item.lower() in ("none", "empty", "∅"):
                values.append("")
            elif item:
                values.append(item.replace("+", ","))
            else:
                _fail(axis.field, axis.raw, "index sets join 1-based indices with +, e.g. 1+2+3,4")
        return values
    if ":" in axis.raw and ann.split("|")[0].strip() in ("int", "float"):
        return _range_values(axis, ann.startswith("int"))
    return [v.strip() for v in axis.raw.split(",") if v.strip()]


def _annotation(cfg, field: str) -> str:
    import dataclasses

    known = {f.name: str(f.type) for f in dataclasses.fields(cfg) if f.init and not f.name.startswith("_")}
    if field not in known:
        raise ConfigError(f"--grid {field}: unknown field; allowed fields: {', '.join(sorted(known))}")
    return known[field]


def expand(
    settings: Sequence[tuple[str, object]],
    axes: Sequence[GridAxis],
    override: Callable[[object, dict[str, str]], object],
) -> list[tuple[str, object, dict[str, str]]]:
    """(label, config, grid values) for every setting × grid point, identical configs merged.

    `override(cfg, {field: string})` applies `--set`-style strings and validates them (raising
    ConfigError). Non-set fields are applied first, then `theta`, then `rho`, so `rho=all-proper`
    sees each point's θ. The label names the grid values (and the setting, when several remain).
    """
    if not axes:
        return [(label, cfg, {}) for label, cfg in settings]
    order = sorted(axes, key=lambda a: SET_FIELDS.index(a.field) + 1 if a.field in SET_FIELDS else 0)
    out: dict[object, tuple[str, object, dict[str, str]]] = {}
    owners: dict[object, set[str]] = {}
    for label, cfg in settings:
        points: list[tuple[object, dict[str, str]]] = [(cfg, {})]
        for axis in order:
            nxt = []
            for c, chosen in points:
                for value in _axis_values(axis, c):
                    try:
                        nc = override(c, {axis.field: value})
                    except ConfigError as err:
                        # Name the grid argument and the value from it that failed.
                        raise ConfigError(f"--grid {axis.field}={axis.raw}: value {value!r}: {err}") from None
                    shown = value.replace(",", "+") if axis.field in SET_FIELDS else value
                    nxt.append((nc, {**chosen, axis.field: shown or "none"}))
                    if len(nxt) > MAX_RUNS:
                        raise ConfigError(f"--grid: more than {MAX_RUNS} runs per setting; "
                                          "split the sweep into several")
            points = nxt
        for c, chosen in points:
            key = c
            if key not in out:
                out[key] = (label, c, chosen)
                owners[key] = set()
            owners[key].add(label)
    several = len({lab for lab, _, _ in out.values()}) > 1
    result = []
    for key, (label, c, chosen) in out.items():
        name = " ".join(f"{k}={v}" for k, v in chosen.items())
        if several and len(owners[key]) == 1:
            name = f"{label} {name}"
        result.append((name, c, chosen))
    return result


def _axis_values(axis: GridAxis, cfg) -> list[str]:
    """The `--set` strings of one axis for one config (set keywords depend on n_s and θ)."""
    if _is_keyword(axis):
        if axis.field == "theta":
            n_s = int(cfg.n_s)
            return [_set_string(s) for s in _subsets(range(n_s), axis.raw, axis, proper=False)]
        theta = tuple(cfg.theta_set)
        return [_set_string(s) for s in _subsets(theta, axis.raw, axis, proper=True)]
    values = _explicit_values(axis, cfg)
    if not values:
        _fail(axis.field, axis.raw, "needs at least one value")
    return values

