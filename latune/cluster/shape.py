"""The shape of a Ray cluster file, as data: which fields latune's preflight reads must be a mapping, a list, a
string, a number or true/false. A file of another shape (``provider: aws``, a list of node types, ``GPU: null``)
is refused here with one line naming the first field that is wrong and what it must be, before any check reads it.

Ray's own schema (ray-schema.json) says more, and ``ray up`` applies it; this is only what the preflight must know
to read the file without guessing. Paths: ``a.b`` a key, ``*`` every key of a mapping, ``[]`` every item of a list.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

__all__ = ["SHAPE", "shape_problem"]

_MAP, _LIST, _STR, _NUM, _INT, _BOOL = "a mapping", "a list", "a string", "a number", "a whole number", "true or false"
_NODE_TYPE = "a mapping of node type keys (resources, node_config, ...)"  # a mapping that must not be null
_OPTIONAL = (_MAP, _LIST)  # null is read as empty there (a YAML key with nothing under it)
_COMMANDS = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
             "head_start_ray_commands", "worker_start_ray_commands")
_NODE = "available_node_types.*.node_config"

# (path, what it must be), parents before their children
SHAPE: tuple[tuple[str, str], ...] = (
    ("cluster_name", _STR), ("max_workers", _INT), ("upscaling_speed", _NUM), ("idle_timeout_minutes", _NUM),
    ("provider", _MAP), ("provider.type", _STR), ("provider.region", _STR), ("provider.availability_zone", _STR),
    ("provider.cache_stopped_nodes", _BOOL), ("provider.security_group", _MAP),
    ("provider.security_group.IpPermissions", _LIST), ("provider.security_group.IpPermissions[]", _MAP),
    ("provider.security_group.IpPermissions[].IpRanges", _LIST),
    ("provider.security_group.IpPermissions[].IpRanges[]", _MAP),
    ("provider.security_group.IpPermissions[].Ipv6Ranges", _LIST),
    ("provider.security_group.IpPermissions[].Ipv6Ranges[]", _MAP),
    ("auth", _MAP), ("auth.ssh_user", _STR), ("auth.ssh_private_key", _STR),
    ("docker", _MAP), ("docker.image", _STR), ("docker.head_image", _STR), ("docker.worker_image", _STR),
    ("docker.pull_before_run", _BOOL),
    *((f"docker.{key}", _LIST) for key in ("run_options", "head_run_options", "worker_run_options")),
    *((f"docker.{key}[]", _STR) for key in ("run_options", "head_run_options", "worker_run_options")),
    ("available_node_types", _MAP), ("available_node_types.*", _NODE_TYPE),
    ("available_node_types.*.min_workers", _INT), ("available_node_types.*.max_workers", _INT),
    ("available_node_types.*.resources", _MAP), ("available_node_types.*.resources.*", _NUM),
    ("available_node_types.*.docker", _MAP), ("available_node_types.*.docker.worker_image", _STR),
    ("available_node_types.*.docker.worker_run_options", _LIST),
    ("available_node_types.*.docker.worker_run_options[]", _STR),
    (_NODE, _MAP), (f"{_NODE}.InstanceType", _STR), (f"{_NODE}.ImageId", _STR), (f"{_NODE}.KeyName", _STR),
    (f"{_NODE}.SecurityGroupIds", _LIST), (f"{_NODE}.SecurityGroupIds[]", _STR),
    (f"{_NODE}.NetworkInterfaces", _LIST), (f"{_NODE}.NetworkInterfaces[]", _MAP),
    (f"{_NODE}.NetworkInterfaces[].Groups", _LIST), (f"{_NODE}.NetworkInterfaces[].Groups[]", _STR),
    (f"{_NODE}.IamInstanceProfile", _MAP), (f"{_NODE}.IamInstanceProfile.Name", _STR),
    (f"{_NODE}.IamInstanceProfile.Arn", _STR),
    (f"{_NODE}.BlockDeviceMappings", _LIST), (f"{_NODE}.BlockDeviceMappings[]", _MAP),
    (f"{_NODE}.BlockDeviceMappings[].Ebs", _MAP), (f"{_NODE}.BlockDeviceMappings[].Ebs.Encrypted", _BOOL),
    (f"{_NODE}.MetadataOptions", _MAP), (f"{_NODE}.MetadataOptions.HttpTokens", _STR),
    (f"{_NODE}.InstanceMarketOptions", _MAP), (f"{_NODE}.InstanceMarketOptions.MarketType", _STR),
    ("head_node_type", _STR), ("file_mounts", _MAP),
    *((key, _LIST) for key in _COMMANDS), *((f"{key}[]", _STR) for key in _COMMANDS),
)


def _fits(value: Any, kind: str) -> bool:
    if value is None:
        return kind in _OPTIONAL
    if kind in (_MAP, _NODE_TYPE):
        return isinstance(value, Mapping)
    if kind == _LIST:
        return isinstance(value, list)
    if kind == _STR:
        return isinstance(value, str)
    if kind == _BOOL:
        return isinstance(value, bool)
    if kind == _INT:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, (int, float)) and not isinstance(value, bool)  # _NUM


def _found(config: Mapping[str, Any], pattern: str) -> Iterator[tuple[str, Any]]:
    """(path, value) of every field ``pattern`` names that is present in ``config``."""
    found: list[tuple[str, Any]] = [("", config)]
    for part in re.findall(r"\[\]|[^.\[\]]+", pattern):
        deeper: list[tuple[str, Any]] = []
        for path, value in found:
            if part == "[]" and isinstance(value, list):
                deeper += [(f"{path}[{index}]", item) for index, item in enumerate(value)]
            elif part == "*" and isinstance(value, Mapping):
                deeper += [(f"{path}.{key}" if path else str(key), item) for key, item in value.items()]
            elif isinstance(value, Mapping) and part in value:
                deeper.append((f"{path}.{part}" if path else part, value[part]))
        found = deeper
    yield from found


def _written(value: Any) -> str:
    """How a wrong value reads in a message: its YAML type, with a short excerpt of a scalar."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return f"{'a string' if isinstance(value, str) else 'a number'} ({text})"


def shape_problem(config: Any) -> str | None:
    """The first field of ``config`` (a cluster file, parsed) whose value is not what SHAPE says, as one line
    ``path: found; write what`` (None when every field the preflight reads has its shape)."""
    if not isinstance(config, Mapping):
        return f"the file is {_written(config)}; write a mapping of Ray's cluster keys (cluster_name, provider, ...)"
    for pattern, kind in SHAPE:
        for path, value in _found(config, pattern):
            if not _fits(value, kind):
                return f"{path}: {_written(value)}; write {kind}"
    return None
