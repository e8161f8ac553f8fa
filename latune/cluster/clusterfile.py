"""Reading a parsed Ray cluster file (cluster.yaml as a dict): its node types and head, the values still left as
placeholders, the ``export NAME=VALUE`` lines of the head's setup, and field paths written the way the
preflight's messages name them. Plain functions shared by the preflight's checks; the file's shape (a mapping
where a mapping belongs, ...) is checked before, by latune.cluster.shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["PLACEHOLDER", "EXAMPLE_ACCOUNT", "walk", "filled", "join_paths", "node_types", "head", "workers",
           "declared_gpus", "head_exports"]

# How cluster.yaml writes a value you must fill in: YOUR-BUCKET, YOUR-AMI, ... (no <, >, $ or quotes: a value left
# unfilled in a shell command is then a plain word there, not a redirection)
PLACEHOLDER = re.compile(r"\bYOUR-[A-Z0-9]+(?:-[A-Z0-9]+)*\b")
EXAMPLE_ACCOUNT = "123456789012"  # the account id of AWS's documentation, never a real one
_EXPORT = re.compile(r"\bexport\s+([A-Za-z_][A-Za-z0-9_]*)=([^'\"\s;]+)")
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def walk(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, string) for every string inside ``value``, with paths like ``a.b[0].c``."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from walk(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, f"{path}[{index}]")


def filled(value: Any) -> bool:
    """A string with no placeholder left (placeholders are reported once, by the placeholder check)."""
    return isinstance(value, str) and not PLACEHOLDER.search(value) and EXAMPLE_ACCOUNT not in value


def join_paths(paths: list[str]) -> str:
    """Paths that differ only in the node type, written once: available_node_types.{head,gpu_1x}.node_config.X."""
    grouped: dict[str, list[str]] = {}
    for path in paths:
        match = re.fullmatch(r"available_node_types\.([^.]+)\.(.+)", path)
        if match:
            grouped.setdefault(match.group(2), []).append(match.group(1))
        else:
            grouped[path] = []
    joined = []
    for rest, names in grouped.items():
        if not names:
            joined.append(rest)
        else:
            joined.append(f"available_node_types.{names[0] if len(names) == 1 else '{' + ','.join(names) + '}'}.{rest}")
    return ", ".join(joined)


def node_types(config: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return dict(config.get("available_node_types") or {})


def head(config: Mapping[str, Any]) -> str:
    return str(config.get("head_node_type", ""))


def workers(config: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The node types the autoscaler may launch as workers: not the head, and allowed at least one node (a type's
    max_workers defaults to the cluster's)."""
    slots = int(config.get("max_workers") or 0)
    return {name: node_type for name, node_type in node_types(config).items() if name != head(config)
            and max(int(node_type.get("max_workers", slots) or 0), int(node_type.get("min_workers") or 0)) > 0}


def declared_gpus(config: Mapping[str, Any], name: str) -> float:
    return float(((node_types(config).get(name) or {}).get("resources") or {}).get("GPU", 0))


def head_exports(config: Mapping[str, Any]) -> dict[str, tuple[int, str]]:
    """NAME -> (index in head_setup_commands, value) of each ``export NAME=VALUE`` there (the head's
    ~/latune_env.sh), ``$NAME`` of an earlier export expanded; the last export of a name wins."""
    found: dict[str, tuple[int, str]] = {}
    for index, command in enumerate(config.get("head_setup_commands") or []):
        for name, value in _EXPORT.findall(command):
            expanded = _VARIABLE.sub(lambda m: found[m.group(1)][1] if m.group(1) in found else m.group(0), value)
            found[name] = (index, expanded)
    return found
