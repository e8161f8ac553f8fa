"""Parsing config values: a typed value from YAML, a sweep or a command-line string, or one ConfigError line.

Private to latune.config (which re-exports ``parse_number``); no imports beyond the standard library and
latune.errors, so validating a config loads no torch.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal

from latune.errors import ConfigError

__all__ = ["coerce", "parse_number"]


def _type_name(typ: Any) -> str:
    origin = typing.get_origin(typ)
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(typ)))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(typ))
    if origin is tuple:
        return f"list of {_type_name(typing.get_args(typ)[0])}"
    return "none" if typ is type(None) else getattr(typ, "__name__", str(typ))


def parse_number(text: str) -> float:
    """The number in ``text``: a decimal ("0.03", "1e-2") or a fraction as papers write radii ("8/255").

    Raises ValueError for anything else, division by zero included.
    """
    num, sep, den = text.strip().partition("/")
    try:
        return float(num) / float(den) if sep else float(num)
    except ZeroDivisionError:
        raise ValueError(f"{text!r} divides by zero") from None


def coerce(key: str, typ: Any, raw: Any) -> Any:
    """Value of ``raw`` as ``typ`` or ConfigError naming the key and the expected type."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("none", "null")):
            if type(None) in args:
                return None
        concrete = [a for a in args if a is not type(None)]
        if len(concrete) == 1:  # Optional[X]: X's own message names the allowed values
            return coerce(key, concrete[0], raw)
        for arg in concrete:
            try:
                return coerce(key, arg, raw)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(typ)}, got {raw!r}")
    if origin is Literal:
        allowed = typing.get_args(typ)
        if raw in allowed:
            return raw
        raise ConfigError(f"{key}: unknown value {raw!r}; allowed: {', '.join(map(str, allowed))}")
    if origin is tuple:
        inner = typing.get_args(typ)[0]
        items = raw.split(",") if isinstance(raw, str) else raw
        if not isinstance(items, (list, tuple)):
            raise ConfigError(f"{key}: expected a list of {_type_name(inner)}, got {raw!r}")
        return tuple(coerce(key, inner, item) for item in items if not (isinstance(item, str) and not item.strip()))
    if typ is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("true", "false", "1", "0", "yes", "no"):
            return raw.strip().lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true or false, got {raw!r}")
    if typ is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        if isinstance(raw, str):
            try:
                return int(raw.strip())
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected an integer, got {raw!r}")
    if typ is float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, str):
            try:
                return parse_number(raw)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number (e.g. 0.03 or 8/255), got {raw!r}")
    if typ is str:
        if isinstance(raw, str):
            return raw
        raise ConfigError(f"{key}: expected a string, got {raw!r}")
    raise TypeError(f"unsupported config type {typ!r} for {key}")  # a bug in this module, not user input
