"""What every config shares: the one-line ConfigError and parsing of `--set field=value` overrides."""

from __future__ import annotations

import dataclasses
import typing


class ConfigError(ValueError):
    """A config field has a value outside what is allowed (message: field, value, allowed)."""


def _fail(name: str, value, allowed: str) -> typing.NoReturn:
    raise ConfigError(f"{name}={value!r} is invalid: {allowed}")


def parse_sets(pairs: list[str]) -> dict[str, str]:
    """`field=value` strings to a dict, failing on a malformed one."""
    out = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--set {pair!r} is invalid: expected field=value")
        out[name.strip()] = value
    return out


def parse_value(name: str, raw: str, annotation: str):
    """Parse a --set string for field `name` given its type annotation (as a string)."""
    text = raw.strip()
    try:
        if "tuple" in annotation:
            if text.lower() in ("none", "all") and "None" in annotation:
                return None
            parts = [p for p in text.strip("[]()").replace(" ", "").split(",") if p]
            return tuple(parts) if "tuple[str" in annotation else tuple(int(p) for p in parts)
        if annotation.startswith("bool"):
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if "None" in annotation and text.lower() == "none":
            return None
        if annotation.startswith("int"):
            return int(text)
        if annotation.startswith("float"):
            return float(text)
        return text
    except ValueError:
        _fail(name, raw, f"could not parse as {annotation}")


def parse_overrides(cfg, overrides: dict[str, str]) -> dict:
    """Typed values of `field=value` strings for the init fields of dataclass `cfg` (unknown: error)."""
    known = {f.name: f for f in dataclasses.fields(cfg) if f.init and not f.name.startswith("_")}
    updates = {}
    for name, raw in overrides.items():
        if name not in known:
            allowed = ", ".join(sorted(known))
            raise ConfigError(f"--set {name}={raw}: unknown field; allowed fields: {allowed}")
        updates[name] = parse_value(name, raw, str(known[name].type))
    return updates


def apply_overrides(cfg, overrides: dict[str, str]):
    """Return dataclass `cfg` with `field=value` strings applied (re-validated by its __post_init__)."""
    return dataclasses.replace(cfg, **parse_overrides(cfg, overrides))


def override(cfg, overrides: dict[str, str]):
    """`cfg.with_overrides(overrides)` where the config defines it (it resolves linked fields, e.g.
    theta and theta_code), else the plain dataclass replacement of `apply_overrides`."""
    method = getattr(cfg, "with_overrides", None)
    return method(overrides) if method is not None else apply_overrides(cfg, overrides)
