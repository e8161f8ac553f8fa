"""EC2 GPU instance types as plain data: vCPUs, GPUs and GPU model per type, and the vCPU quota they count against.

The preflight check (latune.cluster.preflight) compares a node type's declared ``resources`` with this table, and
sums the vCPUs the autoscaler may run at once per quota. A GPU type missing here is reported, not guessed: add a
row (figures from the EC2 instance type pages, `aws ec2 describe-instance-types --instance-types TYPE`).
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["GpuInstance", "GPU_INSTANCES", "QUOTAS", "quota_of"]


class GpuInstance(NamedTuple):
    """One EC2 instance type with GPUs."""

    vcpus: int  # vCPUs of the instance: what the EC2 vCPU quota counts
    gpus: int  # NVIDIA GPUs of the instance: what the node type must declare as resources.GPU
    model: str  # the GPU, with its memory


def _family(sizes: dict[str, tuple[int, int]], family: str, model: str) -> dict[str, GpuInstance]:
    return {f"{family}.{size}": GpuInstance(vcpus, gpus, model) for size, (vcpus, gpus) in sizes.items()}


# The g4dn/g5/g6/g6e size ladders: 1 GPU up to 16xlarge, 4 GPUs at 12xlarge and 24xlarge, 8 at 48xlarge.
_G_SIZES = {"xlarge": (4, 1), "2xlarge": (8, 1), "4xlarge": (16, 1), "8xlarge": (32, 1), "16xlarge": (64, 1),
            "12xlarge": (48, 4), "24xlarge": (96, 4), "48xlarge": (192, 8)}
_G4DN_SIZES = {"xlarge": (4, 1), "2xlarge": (8, 1), "4xlarge": (16, 1), "8xlarge": (32, 1), "16xlarge": (64, 1),
               "12xlarge": (48, 4), "metal": (96, 8)}

GPU_INSTANCES: dict[str, GpuInstance] = {
    **_family(_G4DN_SIZES, "g4dn", "NVIDIA T4 16 GB"),
    **_family(_G_SIZES, "g5", "NVIDIA A10G 24 GB"),
    **_family(_G_SIZES, "g6", "NVIDIA L4 24 GB"),
    **_family(_G_SIZES, "g6e", "NVIDIA L40S 48 GB"),
    **_family({"2xlarge": (8, 1), "8xlarge": (32, 4), "16xlarge": (64, 8)}, "p3", "NVIDIA V100 16 GB"),
    "p3dn.24xlarge": GpuInstance(96, 8, "NVIDIA V100 32 GB"),
    "p4d.24xlarge": GpuInstance(96, 8, "NVIDIA A100 40 GB"),
    "p4de.24xlarge": GpuInstance(96, 8, "NVIDIA A100 80 GB"),
    "p5.4xlarge": GpuInstance(16, 1, "NVIDIA H100 80 GB"),
    "p5.48xlarge": GpuInstance(192, 8, "NVIDIA H100 80 GB"),
    "p5e.48xlarge": GpuInstance(192, 8, "NVIDIA H200 141 GB"),
    "p5en.48xlarge": GpuInstance(192, 8, "NVIDIA H200 141 GB"),
}

# The EC2 on-demand vCPU quota each family letter counts against: its name and code in Service Quotas (per
# region; spot instances count against separate "... Spot Instance Requests" quotas).
QUOTAS: dict[str, tuple[str, str]] = {
    "g": ("Running On-Demand G and VT instances", "L-DB2E81BA"),
    "p": ("Running On-Demand P instances", "L-417A185B"),
}


def quota_of(instance_type: str) -> tuple[str, str] | None:
    """(name, code) of the on-demand vCPU quota ``instance_type`` counts against; None for a type not in
    GPU_INSTANCES."""
    return QUOTAS.get(instance_type[:1]) if instance_type in GPU_INSTANCES else None
