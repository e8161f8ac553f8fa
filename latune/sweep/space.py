"""A sweep's searched keys: one ``Dimension`` per key of the sweep file's ``space``, parsed and validated.

A dimension is a grid (every value: a plain list or ``{grid: [...]}``), a sampled choice, or a range
(``uniform``, ``loguniform``, inclusive ``int``); ``scale: preset`` multiplies its numbers by the data set's
preset value of the key (latune.config.PRESETS), so one ε grid fits every data set.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from latune.config import PRESETS, ConfigError

__all__ = ["Dimension", "Kind", "parse_dimension", "scaled", "candidate_values"]

Kind = Literal["grid", "choice", "uniform", "loguniform", "int"]
_KINDS = ("grid", "choice", "uniform", "loguniform", "int")


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


@dataclass(frozen=True)
class Dimension:
    """One searched config key."""

    key: str  # dotted config key
    kind: Kind  # grid (every value, Tune grid search), choice (sampled), uniform, loguniform, int (inclusive)
    values: tuple[Any, ...]  # grid/choice: the values; ranges: (low, high)
    scale: bool = False  # numeric values are multiples of the data set's preset value of this key


def parse_dimension(key: str, raw: Any, where: str) -> Dimension:
    """The dimension of ``space.KEY: raw`` (``where`` names it in errors); one-line ConfigError if malformed."""
    if isinstance(raw, list):
        raw = {"grid": raw}
    if not isinstance(raw, dict):
        raise _fail(where, f"expected a list (grid) or a mapping with one of {', '.join(_KINDS)}")
    unknown = set(raw) - set(_KINDS) - {"scale"}
    kinds = [k for k in _KINDS if k in raw]
    if unknown or len(kinds) != 1:
        raise _fail(where, f"expected exactly one of {', '.join(_KINDS)} (and optionally scale: preset), "
                           f"got {', '.join(map(str, raw))}")
    kind = kinds[0]
    values = raw[kind]
    if not isinstance(values, list) or not values:
        raise _fail(f"{where}.{kind}", "expected a non-empty list")
    if kind in ("uniform", "loguniform", "int"):
        if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise _fail(f"{where}.{kind}", f"expected [low, high] numbers, got {values!r}")
        if not values[0] < values[1] or (kind == "loguniform" and values[0] <= 0):
            raise _fail(f"{where}.{kind}", f"expected low < high{' and low > 0' if kind == 'loguniform' else ''}, "
                                           f"got {values!r}")
        if kind == "int" and not all(float(v).is_integer() for v in values):
            raise _fail(f"{where}.int", f"expected integer bounds, got {values!r}")
    scale = raw.get("scale")
    if scale not in (None, "preset"):
        raise _fail(f"{where}.scale", f"unknown value {scale!r}; allowed: preset")
    if scale and not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise _fail(f"{where}.scale", "scale: preset needs numeric values")
    return Dimension(key=key, kind=kind, values=tuple(values), scale=scale == "preset")


def scaled(dim: Dimension, data: str) -> Dimension:
    """Multiply the values by the data set's preset value (e.g. ε grids that fit every data set)."""
    if not dim.scale:
        return dim
    if dim.key not in PRESETS[data]:
        raise _fail(f"space.{dim.key}.scale", f"no preset value of {dim.key}; keys with presets: "
                                              + ", ".join(PRESETS[data]))
    factor = PRESETS[data][dim.key]
    return Dimension(dim.key, dim.kind, tuple(v * factor for v in dim.values), scale=False)


def candidate_values(dim: Dimension) -> tuple[Any, ...]:
    """The values validation tries: every grid or choice value, a short int range whole, else the endpoints."""
    if dim.kind in ("grid", "choice"):
        return dim.values
    if dim.kind == "int":
        low, high = int(dim.values[0]), int(dim.values[1])
        return tuple(range(low, high + 1)) if high - low < 50 else (low, high)
    return dim.values  # continuous: the endpoints
