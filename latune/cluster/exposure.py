"""The preflight's checks of what a cluster exposes or leaves behind: SSH open to the world, the Ray dashboard or
the MLflow server listening on every address, instance metadata without session tokens (IMDSv1: any process or
SSRF on a node can read the node's role credentials), unencrypted disks, and stopped instances that keep billing
their disks. Pure functions of the parsed cluster file; problem strings, one line each.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from latune.cluster.clusterfile import filled, node_types

__all__ = ["ssh_problems", "cache_problems", "public_host_problems", "metadata_problems", "disk_problems"]

_WORLD = ("0.0.0.0/0", "::/0")
_ALL_ADDRESSES = r"(0\.0\.0\.0|::|\[::\]|\*)"
# (the command's name, the option that sets its address); a value of _ALL_ADDRESSES there listens on every interface
_LISTENERS = (("the Ray dashboard", re.compile(rf"--dashboard-host[= ]+['\"]?{_ALL_ADDRESSES}['\"]?(\s|$)")),
              ("the MLflow server", re.compile(rf"\bmlflow (server|ui)\b.*\s(--host|-h)[= ]+['\"]?{_ALL_ADDRESSES}"
                                               r"['\"]?(\s|$)", re.S)))


def _security_groups(node_config: Mapping[str, Any]) -> list[Any]:
    groups = list(node_config.get("SecurityGroupIds") or [])
    for interface in node_config.get("NetworkInterfaces") or []:
        groups += list(interface.get("Groups") or [])
    return groups


def ssh_problems(config: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, node_type in node_types(config).items():
        where = f"available_node_types.{name}.node_config.SecurityGroupIds"
        groups = _security_groups(node_type.get("node_config") or {})
        if not groups:
            lines.append(f"{where}: missing; Ray would make its own security group, which lets SSH (port 22) in from "
                         "0.0.0.0/0: name the group made as in docs/cluster.md (SSH from your address only)")
        lines += [f"{where}: {group!r} is not a security group id (sg- and 8 or 17 hex digits)" for group in groups
                  if filled(group) and not re.fullmatch(r"sg-[0-9a-f]{8}([0-9a-f]{9})?", group)]
    rules = ((config.get("provider") or {}).get("security_group") or {}).get("IpPermissions") or []
    for rule in rules:
        ranges = [r.get("CidrIp") for r in rule.get("IpRanges") or []] + \
                 [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges") or []]
        if any(cidr in _WORLD for cidr in ranges):
            ports = f"{rule.get('FromPort', 'all')}-{rule.get('ToPort', 'all')}"
            lines.append(f"provider.security_group.IpPermissions: ports {ports} open to the world "
                         f"({', '.join(c for c in ranges if c in _WORLD)}); allow your address only (a.b.c.d/32)")
    return lines


def cache_problems(config: Mapping[str, Any]) -> list[str]:
    value = (config.get("provider") or {}).get("cache_stopped_nodes")
    if value is False:
        return []
    found = "missing (Ray then defaults to true)" if value is None else "true"
    return [f"provider.cache_stopped_nodes: {found}; write false: `ray down` and idle workers would only stop "
            "instances, which keep billing their disks (150-200 GiB each) until someone terminates them"]


def public_host_problems(config: Mapping[str, Any]) -> list[str]:
    """The dashboard (job submission: code execution) and MLflow (no authentication) on the head must listen on
    127.0.0.1 only and be reached through SSH tunnels."""
    lines = []
    for key in ("head_setup_commands", "head_start_ray_commands", "setup_commands"):
        for index, command in enumerate(config.get(key) or []):
            for what, pattern in _LISTENERS:
                if pattern.search(command):
                    lines.append(f"{key}[{index}]: {what} listens on every address (0.0.0.0), open to anyone the "
                                 "security group lets in; bind it to 127.0.0.1 and tunnel to it (ray dashboard, "
                                 "ray attach -p 5000)")
    return lines


def metadata_problems(config: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, node_type in node_types(config).items():
        options = (node_type.get("node_config") or {}).get("MetadataOptions") or {}
        tokens = options.get("HttpTokens")
        if tokens != "required":
            lines.append(f"available_node_types.{name}.node_config.MetadataOptions.HttpTokens: "
                         f"{'missing' if tokens is None else repr(tokens)}; write required (IMDSv2 only: the node's "
                         "role credentials are then not readable by a plain GET from any process or proxied request)")
    return lines


def disk_problems(config: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, node_type in node_types(config).items():
        where = f"available_node_types.{name}.node_config.BlockDeviceMappings"
        mappings = (node_type.get("node_config") or {}).get("BlockDeviceMappings")
        if not mappings:
            lines.append(f"{where}: missing; write the root volume with Ebs: {{VolumeSize: ..., Encrypted: true}} (the "
                         "AMI's own volume is encrypted only if the account encrypts by default)")
            continue
        for index, mapping in enumerate(mappings):
            encrypted = (mapping.get("Ebs") or {}).get("Encrypted")
            if "Ebs" in mapping and encrypted is not True:
                lines.append(f"{where}[{index}].Ebs.Encrypted: {'missing' if encrypted is None else 'false'}; write "
                             "true (the disk holds the data set, checkpoints and, on the head, the MLflow database)")
    return lines
