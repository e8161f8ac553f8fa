"""The preflight's checks of the node types against the hardware: instance types that exist, GPU counts that
match them, GPUs the lock's CUDA still runs on, GPUs handed to the container, and the vCPU quotas the largest
cluster needs (on demand or spot). Pure functions of the parsed cluster file; problem strings, one line each.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from latune.cluster import instances
from latune.cluster.clusterfile import declared_gpus, filled, head, node_types, workers
from latune.cluster.instances import CPU_INSTANCES, GPU_INSTANCES, MIN_SM, quota_of

__all__ = ["instance_type_problems", "gpu_problems", "cuda_problems", "gpu_option_problems", "vcpu_needs",
           "is_spot"]


def _instance_type(node_type: Mapping[str, Any]) -> str:
    return str((node_type.get("node_config") or {}).get("InstanceType", ""))


def is_spot(node_type: Mapping[str, Any]) -> bool:
    """Whether the node type launches spot instances (node_config.InstanceMarketOptions.MarketType: spot)."""
    market = (node_type.get("node_config") or {}).get("InstanceMarketOptions") or {}
    return str(market.get("MarketType", "")).lower() == "spot"


def _unknown_types(config: Mapping[str, Any]) -> dict[str, str]:
    """name -> its instance type, for node types whose InstanceType is not in the list checked against."""
    known = instances.ec2_instance_types() or CPU_INSTANCES | set(GPU_INSTANCES)
    return {name: _instance_type(t) for name, t in node_types(config).items()
            if filled(_instance_type(t)) and _instance_type(t) not in known}  # a placeholder is reported as one


def instance_type_problems(config: Mapping[str, Any]) -> list[str]:
    """InstanceType values EC2 does not have (botocore's list), or, without botocore, latune's short list has not."""
    full = instances.ec2_instance_types()
    lines = []
    for name, instance_type in _unknown_types(config).items():
        known = full or CPU_INSTANCES | set(GPU_INSTANCES)
        close = difflib.get_close_matches(instance_type, sorted(known), n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        where = f"available_node_types.{name}.node_config.InstanceType: {instance_type!r}"
        if full is not None:
            lines.append(f"{where} is not an EC2 instance type (botocore's list){hint}")
        else:
            lines.append(f"{where} is not in latune's list of instance types (latune/cluster/instances.py; botocore, "
                         f"with EC2's full list, is not installed here: pip install boto3, which `ray up` needs){hint}")
    return lines


def gpu_problems(config: Mapping[str, Any]) -> list[str]:
    """resources.GPU against the instance type's GPUs, resources.CPU against its vCPUs."""
    lines = []
    unknown = _unknown_types(config)  # reported once, by instance_type_problems
    for name, node_type in node_types(config).items():
        instance_type = _instance_type(node_type)
        resources = node_type.get("resources") or {}
        gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 0))
        known = GPU_INSTANCES.get(instance_type)
        where = f"available_node_types.{name}.resources"
        if known is None:
            if gpus and name not in unknown:
                lines.append(f"{where}.GPU: {gpus:g} declared, but {instance_type or 'the InstanceType'} is not a GPU "
                             "instance type latune knows (latune/cluster/instances.py: add its row)")
            continue
        if gpus != known.gpus:
            lines.append(f"{where}.GPU: {gpus:g} declared, but {instance_type} has {known.gpus} ({known.model}); "
                         f"write GPU: {known.gpus} (Ray schedules by the declared count: fewer idles GPUs, more "
                         "overbooks them)")
        if cpus > known.vcpus:
            lines.append(f"{where}.CPU: {cpus:g} declared, but {instance_type} has {known.vcpus} vCPUs")
    return lines


def cuda_problems(config: Mapping[str, Any], cuda: int | None) -> list[str]:
    """GPUs older than the lock's CUDA major version ``cuda`` supports (None: not checked): CUDA 13 dropped Volta,
    so torch's CUDA 13 wheels find no kernel for a V100 (p3)."""
    oldest = MIN_SM.get(cuda) if cuda is not None else None
    lines = []
    for name, node_type in node_types(config).items():
        known = GPU_INSTANCES.get(_instance_type(node_type))
        if oldest is not None and known is not None and known.sm < oldest:
            lines.append(f"available_node_types.{name}.node_config.InstanceType: {_instance_type(node_type)} has "
                         f"{known.model} (sm_{known.sm}), which CUDA {cuda} of constraints.txt's torch no longer runs "
                         f"on (sm_{oldest} and newer); pick g4dn, g5, g6, p4d or newer, or lock a torch for CUDA 12")
    return lines


def _gpu_options(options: list[str]) -> bool:
    return any("--gpus" in option or "--runtime=nvidia" in option or "--runtime nvidia" in option
               for option in options)


def gpu_option_problems(config: Mapping[str, Any]) -> list[str]:
    """Worker types with GPUs whose container is started without --gpus (the container then sees no GPU, and a
    trial holding a GPU share trains on one CPU core)."""
    docker = config.get("docker") or {}
    if not docker.get("image"):
        return []  # no container: the processes run on the host and see its GPUs
    missing = []
    for name, node_type in workers(config).items():
        if not (declared_gpus(config, name) or _instance_type(node_type) in GPU_INSTANCES):
            continue
        own = (node_type.get("docker") or {}).get("worker_run_options")  # a node type's docker overrides the global
        options = list(docker.get("run_options") or []) + list(own if own is not None else
                                                              docker.get("worker_run_options") or [])
        if not _gpu_options(options):
            missing.append(name)
    if not missing:
        return []
    return [f"docker.worker_run_options: no --gpus for available_node_types {', '.join(missing)}, which have GPUs; "
            "the container would see none: add --gpus all"]


def vcpu_needs(config: Mapping[str, Any]) -> dict[tuple[str, str], tuple[int, str, int]]:
    """Per EC2 vCPU quota (name, code): (the most vCPUs of its GPU instances that may run at once, the largest of those
    instance types, its vCPUs); quotas with no instance type of the cluster are left out. Spot node types count
    against the spot quotas.

    Worker types are counted largest first, each up to its max_workers, all of them up to the cluster's
    max_workers: the worst case the quota must allow. A GPU head counts once.
    """
    slots = int(config.get("max_workers") or 0)
    found = []
    for name, node_type in node_types(config).items():
        instance_type = _instance_type(node_type)
        if instance_type in GPU_INSTANCES:
            found.append((GPU_INSTANCES[instance_type].vcpus, instance_type, name, node_type))
    needs: dict[tuple[str, str], tuple[int, str, int]] = {}
    for vcpus, instance_type, name, node_type in sorted(found, key=lambda row: row[:3], reverse=True):
        if name == head(config):
            count = 1
        else:
            count = max(0, min(int(node_type.get("max_workers", slots) or 0), slots))
            slots -= count
        quota = quota_of(instance_type, spot=is_spot(node_type)) or ("?", "?")
        total, largest, largest_vcpus = needs.get(quota, (0, instance_type, vcpus))
        needs[quota] = (total + count * vcpus, largest, largest_vcpus)
    return needs
