"""``python -m latune.cluster check|doctor``: the offline preflight of cluster.yaml (before ``ray up``) and the
doctor of a running cluster's nodes (latune.cluster.preflight, latune.cluster.doctor).

Exit status: 0 nothing wrong; 2 problems found (check), a check failed (doctor), or a bad command line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from latune.cli.common import guarded
from latune.errors import UserError

if TYPE_CHECKING:
    from latune.cluster.doctor import Check

__all__ = ["main"]

EXIT_STATUS = ("exit status: 0 nothing wrong; 2 problems found (check), a check failed (doctor), or a bad "
               "command line")
_CHECK_HELP = """Check a Ray cluster file offline, before `ray up`: placeholders YOUR-... left (region, zones, AMI,
security group, instance profiles, registry, bucket, key), the region's zones, the AMI and S3 URI forms, the
image's Ray version against the Ray installed here and its tag against constraints.txt, GPU counts against the
instance types, SSH not open to the world (SecurityGroupIds in every node type), instance profiles and setup
commands that install nothing unpinned. Problems go to stderr as `error: ...` lines."""
_DOCTOR_HELP = """Check a cluster node: GPU model and driver (nvidia-smi), torch's CUDA build and
torch.cuda.is_available() with a matrix product, Ray/latune/torch versions and every pin of constraints.txt, a
write/read/delete of a small object in the storage, and the MLflow server (health, API, an artifact round trip).
On the CPU head: --gpu worker runs the GPU checks on a GPU worker (the autoscaler starts one if none is up)."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latune.cluster", epilog=EXIT_STATUS,
                                     description="The Ray cluster of cluster.yaml: preflight and node doctor.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser("check", help="offline preflight of cluster.yaml, before `ray up`",
                                description=_CHECK_HELP, epilog=EXIT_STATUS)
    check.add_argument("path", nargs="?", default="cluster.yaml", metavar="PATH",
                       help="the cluster file (default: cluster.yaml in the current folder)")
    doctor = commands.add_parser("doctor", help="check a node: GPU, driver, CUDA, versions, storage, MLflow",
                                 description=_DOCTOR_HELP, epilog=EXIT_STATUS)
    doctor.add_argument("--storage", default=os.environ.get("LATUNE_STORAGE") or None, metavar="URI",
                        help="Tune's storage to write to, s3://... or file:///... (default: $LATUNE_STORAGE)")
    doctor.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or None, metavar="URI",
                        help="MLflow tracking server or store (default: $MLFLOW_TRACKING_URI)")
    doctor.add_argument("--gpu", choices=("here", "worker", "none"), default="here",
                        help="where the GPU checks run: here (default), on a GPU worker of the cluster (from the "
                             "head), or none (this node has no GPU, by design)")
    doctor.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or "auto",
                        help="the Ray cluster for --gpu worker (default: $RAY_ADDRESS, else auto)")
    doctor.add_argument("--wait", type=float, default=1200, metavar="SECONDS",
                        help="how long --gpu worker waits for a GPU worker (default: 1200; a first one takes 5-10 min)")
    args = parser.parse_args(argv)
    return guarded(lambda: _check(Path(args.path)) if args.command == "check" else _doctor(args))


def _load(path: Path) -> dict:
    import yaml

    if not path.is_file():
        raise UserError(f"{path}: no such file (run from the repository root, or give the cluster file's path)")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: not a cluster file (a YAML mapping of Ray's cluster keys)")
    return config


def _check(path: Path) -> int:
    from latune.cluster.preflight import installed_ray_version, lock_digest, problems, vcpu_needs

    config = _load(path)
    lock = path.resolve().parent / "constraints.txt"
    ray_version = installed_ray_version()
    found = problems(config, ray_version=ray_version, lock=lock_digest(lock.read_bytes()) if lock.is_file() else None)
    for problem in found:
        print(f"error: {problem}", file=sys.stderr)
    if found:
        print(f"{path}: {len(found)} problem(s); fix them before `ray up`", file=sys.stderr)
        return 2
    region = config["provider"]["region"]
    print(f"{path}: no problems found (offline: placeholders, region, AMI and S3 forms, image tag against Ray "
          f"{ray_version}{' and constraints.txt' if lock.is_file() else ''}, GPU counts, SSH, profiles, setup).")
    for (quota, code), (vcpus, largest, largest_vcpus) in vcpu_needs(config).items():
        print(f"EC2 quota {quota!r} must allow {vcpus} vCPUs in {region} for the largest cluster (one {largest} "
              f"alone needs {largest_vcpus}); see it with\n"
              f"    aws service-quotas get-service-quota --region {region} --service-code ec2 --quota-code {code}")
    print("Next (README, \"Running on a cluster\"):\n"
          f"    docker push {config['docker']['image']}   # once per image tag\n"
          f"    ray up {path}\n"
          f"    ray exec {path} 'python -m latune.cluster doctor --gpu worker'\n"
          f"    ray exec {path} 'python -m latune.sweep pareto --data cifar10'")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from latune.cluster import doctor

    if args.gpu == "worker":
        checks = [doctor.versions_check(), doctor.storage_check(args.storage), doctor.mlflow_check(args.tracking_uri)]
        print(f"waiting up to {args.wait:g} s for a GPU worker to run the GPU checks (a first worker takes 5-10 "
              "minutes: boot, image pull, setup)", file=sys.stderr, flush=True)
        try:
            checks += doctor.on_gpu_worker(args.storage, args.address, args.wait)
        except ConnectionError as err:
            checks.append(doctor.Check("gpu worker", False, f"no Ray cluster at {args.address}: {err}",
                                       "run it on the head (`ray exec cluster.yaml '...'`), where RAY_ADDRESS=auto"))
    else:
        checks = [*doctor.node_checks(args.storage, gpu=args.gpu == "here"), doctor.mlflow_check(args.tracking_uri)]
    _print_table(checks)
    failed = [check.name for check in checks if check.ok is False]
    if failed:
        print(f"error: {len(failed)} check(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 2
    skipped = sum(check.ok is None for check in checks)
    print(f"all checks passed{f' ({skipped} skipped)' if skipped else ''}")
    return 0


def _print_table(checks: Sequence[Check]) -> None:
    """One row per check (status, name, detail), and a fix: line under each failed one."""
    width = max(len(check.name) for check in checks)
    for check in checks:
        status = {True: "ok", False: "FAIL", None: "skip"}[check.ok]
        print(f"{status:<5} {check.name:<{width}}  {check.detail}")
        if check.ok is False and check.fix:
            print(f"{'':<5} {'':<{width}}  fix: {check.fix}")
