"""What a Ray cluster started with ``ray up cluster.yaml`` can grow to, read from its autoscaler's config.

A sweep sizes itself (GPU share, concurrency) from the cluster's resources. On an autoscaling cluster whose
GPU workers start at zero, Ray reports only the head's resources (no GPU at all) until trials ask for more, so
the sweep also counts what the autoscaler may add: ``ray up`` leaves the resolved cluster config on the head as
``~/ray_bootstrap_config.yaml`` (the file Ray Tune also looks for to tell it runs on an autoscaling cluster).
Plain data, no Ray import.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["BOOTSTRAP_CONFIG", "autoscaler_capacity", "with_autoscaler_capacity"]

BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # written on the head by `ray up`; Tune's _is_ray_cluster reads it


def autoscaler_capacity(config: Mapping[str, Any]) -> dict[str, float]:
    """The most CPUs and GPUs the cluster described by ``config`` (a cluster YAML, parsed) can hold at once:
    the head's resources plus the largest worker mix the autoscaler may launch.

    Worker types are filled GPUs first, each up to its ``max_workers``, all of them together up to the
    cluster's ``max_workers``. A node type without declared ``resources`` counts as none (``ray up`` fills
    them in from the instance type on AWS, so the bootstrap config has them).
    """
    types: Mapping[str, Any] = config.get("available_node_types") or {}
    head = config.get("head_node_type")

    def resources(node_type: Mapping[str, Any]) -> tuple[float, float]:
        declared = node_type.get("resources") or {}
        return float(declared.get("GPU", 0)), float(declared.get("CPU", 0))

    gpus, cpus = resources(types.get(head) or {})
    slots = int(config.get("max_workers", 0))
    workers = sorted((resources(t), int(t.get("max_workers", slots))) for name, t in types.items() if name != head)
    for (gpu, cpu), most in reversed(workers):  # the most GPUs (then CPUs) per node first
        count = max(0, min(most, slots))
        gpus, cpus, slots = gpus + count * gpu, cpus + count * cpu, slots - count
    return {"CPU": cpus, "GPU": gpus}


def with_autoscaler_capacity(current: Mapping[str, float], path: str | Path | None = None) -> dict[str, float]:
    """``current`` (Ray's cluster_resources()) with CPU and GPU raised to what the autoscaler can add, when
    this machine is the head of a ``ray up`` cluster (``path``, default BOOTSTRAP_CONFIG, exists); else
    ``current`` unchanged."""
    merged = dict(current)
    file = Path(path or BOOTSTRAP_CONFIG).expanduser()
    if not file.is_file():
        return merged
    capacity = autoscaler_capacity(yaml.safe_load(file.read_text()) or {})
    for key, most in capacity.items():
        merged[key] = max(float(merged.get(key, 0)), most)
    return merged
