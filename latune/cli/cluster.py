"""``python -m latune.cluster init|check|policy|doctor|fake-config``: your copy of cluster.yaml (init), the offline
preflight of a cluster file (check, before ``ray up``), the IAM policies of its instance profiles (policy), the
doctor of a running cluster's nodes, and cluster.yaml's cluster as a fake one on this machine (fake-config)
(latune.cluster.local, .preflight, .iam, .doctor, .fake).

Exit status: 0 nothing wrong; 2 problems found (check), a check failed (doctor), or a bad command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from latune.cli.common import examples, guarded
from latune.errors import UserError

if TYPE_CHECKING:
    from latune.cluster.doctor import Check

__all__ = ["main"]

EXIT_STATUS = ("exit status: 0 nothing wrong; 2 problems found (check), a check failed (doctor), or a bad "
               "command line")
_INIT_HELP = """Write your copy of the cluster file: cluster.yaml (the tracked template, never edited) with your
values in place of its YOUR-... placeholders, as cluster.local.yaml beside it (git ignores it), then check the
copy as `check` does. Use the copy's path wherever the docs write cluster.yaml."""
_CHECK_HELP = """Check a Ray cluster file offline, before `ray up`: the file's shape (a mapping where one belongs, a
number for GPU, ...), placeholders YOUR-... left, the region's zones, the AMI and S3 URI forms, instance types
that exist (botocore's list when installed), the image's Ray version against the Ray installed here and its tag
against the digest of the Dockerfile and constraints.txt beside the file, GPU counts against the instance types,
GPUs the lock's CUDA runs on, --gpus for GPU workers, shared storage on a multi-node cluster, SSH not open to the
world, the dashboard and MLflow on 127.0.0.1, IMDSv2 and encrypted disks in every node type, cache_stopped_nodes
false, instance profiles and setup commands that install nothing unpinned. Problems go to stderr as `error: ...`
lines, what is left open (the base image's digest) as `warning: ...` lines."""
_POLICY_HELP = """Print an IAM policy document (JSON) of the cluster's instance profiles: trust (EC2 may take the
role), node (both roles: the bucket's latune/ prefix, pulling the image) or autoscaler (the head: launch, tag,
stop and terminate only instances tagged with the cluster's name, in its region; pass only the workers' role,
only to EC2)."""
_FAKE_HELP = """Write cluster.yaml's cluster as a fake cluster on this machine: `RAY_FAKE_CLUSTER=1 ray up` then starts
it with Ray's fake multi-node provider (worker nodes are processes with the node types' resources, GPUs as
logical resources), runs the head's setup and start commands (the MLflow server included) and its autoscaler.
Derived by code from the template, so it never drifts from it; Docker, EC2, SSH, the ECR login and pip installs
are left out, and the S3 bucket is a folder under --dir."""
_DOCTOR_HELP = """Check a cluster node: GPU model and driver (nvidia-smi), torch's CUDA build and
torch.cuda.is_available() with a matrix product, the node type's declared GPUs against nvidia-smi and Ray's
resources, Ray/latune/torch versions and every pin of constraints.txt, a write/read/delete of a small object in
the storage, and the MLflow server (health, API, an artifact round trip). On the CPU head: --gpu worker runs the
GPU checks on a GPU worker (the autoscaler starts one if none is up)."""


def _add_init(commands: argparse._SubParsersAction) -> None:
    init = commands.add_parser("init", help="write your copy of cluster.yaml with your values (cluster.local.yaml)",
                               description=_INIT_HELP, epilog=EXIT_STATUS)
    env = os.environ.get
    init.add_argument("--account", default=env("AWS_ACCOUNT_ID", ""), help="AWS account id, 12 digits "
                      "(default: $AWS_ACCOUNT_ID; aws sts get-caller-identity --query Account --output text)")
    init.add_argument("--region", default=env("AWS_REGION") or env("AWS_DEFAULT_REGION", ""),
                      help="AWS region, e.g. us-west-2 (default: $AWS_REGION, else $AWS_DEFAULT_REGION)")
    init.add_argument("--ami", default="", help="AMI id, ami-...: the region's newest Deep Learning Base OSS Nvidia "
                                                "Driver GPU AMI (Ubuntu 22.04)")
    init.add_argument("--security-group", default="", help="security group id, sg-... (made as in the docs)")
    init.add_argument("--bucket", default="", help="S3 bucket name; sweeps keep everything under s3://BUCKET/latune/")
    init.add_argument("--zones", default="", help="availability zones, comma-separated (default: REGION a, b, c)")
    init.add_argument("--head-profile", default="latune-head",
                      help="the head's instance profile (default: %(default)s)")
    init.add_argument("--worker-profile", default="latune-worker",
                      help="the workers' instance profile (default: %(default)s)")
    init.add_argument("--registry", default="", help="ECR registry (default: ACCOUNT.dkr.ecr.REGION.amazonaws.com)")
    init.add_argument("--key", default="", help="your EC2 key pair's name, its private key in ~/.ssh/KEY.pem "
                                                "(default: none; Ray makes and uses its own key pair)")
    init.add_argument("--from", dest="template", default="cluster.yaml", metavar="PATH",
                      help="the template (default: cluster.yaml in the current folder)")
    init.add_argument("--out", default=None, metavar="PATH", help="the copy (default: cluster.local.yaml beside "
                                                                  "the template)")
    init.add_argument("--force", action="store_true", help="write over an existing copy")


def _add_policy(commands: argparse._SubParsersAction) -> None:
    from latune.cluster.iam import POLICIES

    policy = commands.add_parser("policy", help="print an IAM policy of the cluster's instance profiles (JSON)",
                                 description=_POLICY_HELP, epilog=EXIT_STATUS)
    policy.add_argument("name", choices=POLICIES, help="which policy")
    policy.add_argument("--account", default=os.environ.get("AWS_ACCOUNT_ID", ""), help="AWS account id")
    policy.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION", ""),
                        help="AWS region of the cluster")
    policy.add_argument("--bucket", default="", help="S3 bucket name (node policy)")
    policy.add_argument("--cluster-name", default="latune",
                        help="cluster_name of the cluster file (default: %(default)s); the autoscaler may touch only "
                             "its nodes")
    policy.add_argument("--worker-role", default="latune-worker", help="the workers' role (default: %(default)s)")


def _add_doctor(commands: argparse._SubParsersAction) -> None:
    doctor = commands.add_parser("doctor", help="check a node: GPU, driver, CUDA, Ray's GPUs, versions, storage, "
                                                "MLflow", description=_DOCTOR_HELP, epilog=EXIT_STATUS)
    doctor.add_argument("--storage", default=os.environ.get("LATUNE_STORAGE") or None, metavar="URI",
                        help="Tune's storage to write to, s3://... or file:///... (default: $LATUNE_STORAGE)")
    doctor.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI") or None, metavar="URI",
                        help="MLflow tracking server or store (default: $MLFLOW_TRACKING_URI)")
    doctor.add_argument("--gpu", choices=("here", "worker", "none"), default="here",
                        help="where the GPU checks run: here (default), on a GPU worker of the cluster (from the "
                             "head), or none (this node has no GPU, by design)")
    doctor.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or None,
                        help="the Ray cluster: for --gpu worker (default: $RAY_ADDRESS, else auto) and for "
                             "comparing GPUs with Ray's resources (default: $RAY_ADDRESS, else not compared)")
    doctor.add_argument("--wait", type=float, default=1200, metavar="SECONDS",
                        help="how long --gpu worker waits for a GPU worker (default: 1200; a first one takes 5-10 min)")


def _add_fake_config(commands: argparse._SubParsersAction) -> None:
    from latune.cluster.fake import DEFAULT_DIR

    fake = commands.add_parser("fake-config", help="cluster.yaml's cluster as a fake one on this machine (ray up "
                                                   "with Ray's fake multi-node provider)",
                               description=_FAKE_HELP, epilog=EXIT_STATUS)
    fake.add_argument("--from", dest="template", default="cluster.yaml", metavar="PATH",
                      help="the template (default: cluster.yaml in the current folder)")
    fake.add_argument("--dir", default=str(DEFAULT_DIR), metavar="DIR",
                      help="the fake cluster's folder: the head's home, its Ray session, the stand-in bucket (default: "
                           "%(default)s; at most 40 characters, for Ray's socket paths)")
    fake.add_argument("--out", default=None, metavar="PATH", help="the fake cluster file (default: DIR/cluster.yaml)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="latune cluster", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=examples("latune cluster init --account 123456789012 --region us-west-2 --ami ami-... "
                        "--security-group sg-... --bucket my-bucket",
                        "latune cluster check cluster.local.yaml",
                        "latune cluster doctor --gpu worker",
                        "latune cluster fake-config   # then: RAY_FAKE_CLUSTER=1 ray up -y /tmp/latune-fake/cluster.yaml")
        + "\n\n" + EXIT_STATUS,
        description="The Ray cluster of cluster.yaml: your copy, preflight, IAM policies, node doctor, and a fake "
                    "cluster on this machine.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_init(commands)
    check = commands.add_parser("check", help="offline preflight of a cluster file, before `ray up`",
                                description=_CHECK_HELP, epilog=EXIT_STATUS)
    check.add_argument("path", nargs="?", default="cluster.yaml", metavar="PATH",
                       help="the cluster file (default: cluster.yaml in the current folder; yours: cluster.local.yaml)")
    _add_policy(commands)
    _add_doctor(commands)
    _add_fake_config(commands)
    args = parser.parse_args(argv)
    run = {"init": _init, "check": lambda a: _check(Path(a.path)), "policy": _policy, "doctor": _doctor,
           "fake-config": _fake_config}
    return guarded(lambda: run[args.command](args))


def _load(path: Path) -> dict:
    import yaml

    from latune.cluster.shape import shape_problem

    if not path.is_file():
        raise UserError(f"{path}: no such file (run from the repository root, or give the cluster file's path)")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {' '.join(str(err).split())}") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: not a cluster file (a YAML mapping of Ray's cluster keys)")
    wrong = shape_problem(config)
    if wrong:
        raise UserError(f"{path}: {wrong}")
    return config


def _check(path: Path) -> int:
    from latune.cluster.preflight import (dockerfile_warnings, image_digest, installed_ray_version, lock_cuda,
                                          problems, vcpu_needs)

    config = _load(path)
    lock, dockerfile = path.resolve().parent / "constraints.txt", path.resolve().parent / "Dockerfile"
    ray_version = installed_ray_version()
    image = lock.is_file() and dockerfile.is_file()
    found = problems(config, ray_version=ray_version,
                     digest=image_digest(dockerfile.read_bytes(), lock.read_bytes()) if image else None,
                     cuda=lock_cuda(lock.read_text()) if lock.is_file() else None)
    for problem in found:
        print(f"error: {problem}", file=sys.stderr)
    for warning in dockerfile_warnings(dockerfile.read_text()) if dockerfile.is_file() else []:
        print(f"warning: {warning}", file=sys.stderr)
    if found:
        hint = (" (the YOUR-... values: write your copy with `python -m latune.cluster init`)"
                if any("placeholder YOUR-" in problem for problem in found) else "")
        print(f"{path}: {len(found)} problem(s); fix them before `ray up`{hint}", file=sys.stderr)
        return 2
    region = config["provider"]["region"]
    print(f"{path}: no problems found (offline: placeholders, region, AMI and S3 forms, instance types, image tag "
          f"against Ray {ray_version}{' and the Dockerfile and constraints.txt' if image else ''}, GPU counts and "
          "CUDA, --gpus, shared storage, SSH, dashboard and MLflow hosts, IMDSv2, encrypted disks, stopped nodes, "
          "profiles, setup).")
    for (quota, code), (vcpus, largest, largest_vcpus) in vcpu_needs(config).items():
        print(f"EC2 quota {quota!r} must allow {vcpus} vCPUs in {region} for the largest cluster (one {largest} "
              f"alone needs {largest_vcpus}); see it with\n"
              f"    aws service-quotas get-service-quota --region {region} --service-code ec2 --quota-code {code}")
    print("Next (docs/cluster.md):\n"
          f"    docker push {config['docker']['image']}   # once per image tag\n"
          f"    ray up {path}\n"
          f"    ray exec {path} 'latune cluster doctor --gpu worker'\n"
          f"    ray exec {path} 'latune sweep pareto --data cifar10'")
    return 0


def _init(args: argparse.Namespace) -> int:
    from latune.cluster.local import LocalValues, write_local

    values = LocalValues(account=args.account, region=args.region, ami=args.ami, security_group=args.security_group,
                         bucket=args.bucket, zones=args.zones, head_profile=args.head_profile,
                         worker_profile=args.worker_profile, registry=args.registry, key=args.key)
    out = write_local(Path(args.template), values, Path(args.out) if args.out else None, force=args.force)
    print(f"wrote {out} (from {args.template}, which is unchanged); checking it:", flush=True)
    return _check(out)


def _fake_config(args: argparse.Namespace) -> int:
    from latune.cluster.fake import write_fake

    out = write_fake(Path(args.template), Path(args.out) if args.out else None, Path(args.dir))
    print(f"wrote {out} (from {args.template}, which is unchanged). On this machine, from any folder:\n"
          f"    RAY_FAKE_CLUSTER=1 ray up -y {out}\n"
          f"    RAY_FAKE_CLUSTER=1 ray exec {out} 'cd ~/latune && python -m latune.sweep delta_eps_grid --gpu 0.25 "
          "--set device=cpu --set optim.epochs=2'   # fake GPUs: train on the CPU\n"
          f"    RAY_FAKE_CLUSTER=1 ray down -y {out}   # stops this cluster's processes only")
    return 0


def _policy(args: argparse.Namespace) -> int:
    from latune.cluster.iam import policy

    try:
        document = policy(args.name, account=args.account, region=args.region, bucket=args.bucket,
                          cluster_name=args.cluster_name, worker_role=args.worker_role)
    except ValueError as err:  # "argument: ..." -> the flag that gave it
        raise UserError(f"--{str(err).replace('_', '-', 1)}") from None
    print(json.dumps(document, indent=2))
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from latune.cluster import doctor

    if args.gpu == "worker":
        address = args.address or "auto"
        checks = [doctor.guarded("versions", doctor.versions_check),
                  doctor.guarded("storage", doctor.storage_check, args.storage),
                  doctor.guarded("mlflow", doctor.mlflow_check, args.tracking_uri)]
        print(f"waiting up to {args.wait:g} s for a GPU worker to run the GPU checks (a first worker takes 5-10 "
              "minutes: boot, image pull, setup)", file=sys.stderr, flush=True)
        try:
            checks += doctor.on_gpu_worker(args.storage, address, args.wait)
        except ConnectionError as err:
            checks.append(doctor.Check("gpu worker", False, f"no Ray cluster at {address}: {err}",
                                       "run it on the head (`ray exec cluster.yaml '...'`), where RAY_ADDRESS=auto"))
        except Exception as err:  # noqa: BLE001 -- any other failure is that row's, never a traceback
            checks.append(doctor.failure("gpu worker", err))
    else:
        checks = [*doctor.node_checks(args.storage, gpu=args.gpu == "here", address=args.address),
                  doctor.guarded("mlflow", doctor.mlflow_check, args.tracking_uri)]
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
