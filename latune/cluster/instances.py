"""EC2 instance types as plain data: vCPUs, GPUs, GPU model and compute capability per GPU type, the vCPU quota
each counts against (on-demand or spot), and the full list of EC2 instance types from botocore's data.

The preflight check (latune.cluster.preflight) compares a node type's declared ``resources`` with this table, and
sums the vCPUs the autoscaler may run at once per quota. A GPU type missing here is reported, not guessed: add a
row (figures from the EC2 instance type pages, `aws ec2 describe-instance-types --instance-types TYPE`).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
from pathlib import Path
from typing import NamedTuple

__all__ = ["GpuInstance", "GPU_INSTANCES", "CPU_INSTANCES", "QUOTAS", "MIN_SM", "quota_of", "ec2_instance_types"]


class GpuInstance(NamedTuple):
    """One EC2 instance type with GPUs."""

    vcpus: int  # vCPUs of the instance: what the EC2 vCPU quota counts
    gpus: int  # NVIDIA GPUs of the instance: what the node type must declare as resources.GPU
    model: str  # the GPU, with its memory
    sm: int  # the GPU's CUDA compute capability, major * 10 + minor (sm_86: 86)


def _family(sizes: dict[str, tuple[int, int]], family: str, model: str, sm: int) -> dict[str, GpuInstance]:
    return {f"{family}.{size}": GpuInstance(vcpus, gpus, model, sm) for size, (vcpus, gpus) in sizes.items()}


# The g4dn/g5/g6/g6e size ladders: 1 GPU up to 16xlarge, 4 GPUs at 12xlarge and 24xlarge, 8 at 48xlarge.
_G_SIZES = {"xlarge": (4, 1), "2xlarge": (8, 1), "4xlarge": (16, 1), "8xlarge": (32, 1), "16xlarge": (64, 1),
            "12xlarge": (48, 4), "24xlarge": (96, 4), "48xlarge": (192, 8)}
_G4DN_SIZES = {"xlarge": (4, 1), "2xlarge": (8, 1), "4xlarge": (16, 1), "8xlarge": (32, 1), "16xlarge": (64, 1),
               "12xlarge": (48, 4), "metal": (96, 8)}

GPU_INSTANCES: dict[str, GpuInstance] = {
    **_family(_G4DN_SIZES, "g4dn", "NVIDIA T4 16 GB", 75),
    **_family(_G_SIZES, "g5", "NVIDIA A10G 24 GB", 86),
    **_family(_G_SIZES, "g6", "NVIDIA L4 24 GB", 89),
    **_family(_G_SIZES, "g6e", "NVIDIA L40S 48 GB", 89),
    **_family({"2xlarge": (8, 1), "8xlarge": (32, 4), "16xlarge": (64, 8)}, "p3", "NVIDIA V100 16 GB", 70),
    "p3dn.24xlarge": GpuInstance(96, 8, "NVIDIA V100 32 GB", 70),
    "p4d.24xlarge": GpuInstance(96, 8, "NVIDIA A100 40 GB", 80),
    "p4de.24xlarge": GpuInstance(96, 8, "NVIDIA A100 80 GB", 80),
    "p5.4xlarge": GpuInstance(16, 1, "NVIDIA H100 80 GB", 90),
    "p5.48xlarge": GpuInstance(192, 8, "NVIDIA H100 80 GB", 90),
    "p5e.48xlarge": GpuInstance(192, 8, "NVIDIA H200 141 GB", 90),
    "p5en.48xlarge": GpuInstance(192, 8, "NVIDIA H200 141 GB", 90),
}

# CPU types a head is usually one of: with GPU_INSTANCES, the list an instance type is checked against when
# botocore (EC2's full list) is not installed.
CPU_INSTANCES: frozenset[str] = frozenset(
    f"{family}.{size}" for family in ("m5", "m5a", "m6i", "m6a", "m7i", "m7a", "c5", "c6i", "c6a", "c7i", "r5",
                                      "r6i", "r7i", "t3")
    for size in ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge"))

# The oldest GPU each CUDA major version's libraries still run on (sm): CUDA 13 dropped Maxwell, Pascal and Volta.
MIN_SM: dict[int, int] = {11: 35, 12: 50, 13: 75}

# The EC2 vCPU quota each family letter counts against, on demand and as spot: (name, code) in Service Quotas
# (per region).
QUOTAS: dict[tuple[str, bool], tuple[str, str]] = {
    ("g", False): ("Running On-Demand G and VT instances", "L-DB2E81BA"),
    ("p", False): ("Running On-Demand P instances", "L-417A185B"),
    ("g", True): ("All G and VT Spot Instance Requests", "L-3819A6DF"),
    ("p", True): ("All P Spot Instance Requests", "L-7212CCBC"),
}


def quota_of(instance_type: str, spot: bool = False) -> tuple[str, str] | None:
    """(name, code) of the vCPU quota ``instance_type`` counts against, on demand or (``spot``) as a spot
    instance; None for a type not in GPU_INSTANCES."""
    return QUOTAS.get((instance_type[:1], spot)) if instance_type in GPU_INSTANCES else None


@functools.lru_cache(maxsize=4)
def ec2_instance_types(botocore_root: Path | None = None) -> frozenset[str] | None:
    """Every EC2 instance type, from the EC2 API model botocore ships (``botocore_root``: the botocore package
    folder, default the installed one, found without importing it); None when botocore is not installed.
    boto3, which `ray up` needs on AWS, brings botocore, so the machine that runs `ray up` has the list."""
    if botocore_root is None:
        spec = importlib.util.find_spec("botocore")
        if spec is None or not spec.submodule_search_locations:
            return None
        botocore_root = Path(list(spec.submodule_search_locations)[0])
    versions = sorted((botocore_root / "data" / "ec2").glob("*/"))
    if not versions:
        return None
    model = versions[-1] / "service-2.json"  # the newest API version; botocore ships it gzipped since 1.32
    gzipped = versions[-1] / "service-2.json.gz"
    if model.is_file():
        text = model.read_bytes()
    elif gzipped.is_file():
        text = gzip.decompress(gzipped.read_bytes())
    else:
        return None
    return frozenset(json.loads(text)["shapes"]["InstanceType"]["enum"])
