"""latune.cluster.preflight and ``python -m latune.cluster check``: the shipped cluster.yaml fails naming each
placeholder, a filled copy passes (and still passes Ray's own validation), and broken copies of the filled one
each give one problem naming the field: SSH open to the world, GPU counts, the Ray version, the lock, S3, zones,
profiles, keys, setup commands."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from latune.cluster.preflight import (PLACEHOLDERS, installed_ray_version, lock_digest, problems, s3_uri_problem,
                                      vcpu_needs)

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
RAY = installed_ray_version()
LOCK = lock_digest((ROOT / "constraints.txt").read_bytes())
# What a user writes for each placeholder (an account id other than AWS's example one).
FILLED = {"YOUR-REGISTRY": "210987654321.dkr.ecr.us-west-2.amazonaws.com", "YOUR-REGION": "us-west-2",
          "YOUR-ZONES": "us-west-2a,us-west-2b", "YOUR-AMI": "ami-0123456789abcdef0",
          "YOUR-SECURITY-GROUP": "sg-0123456789abcdef0", "YOUR-HEAD-PROFILE": "latune-head",
          "YOUR-WORKER-PROFILE": "latune-worker", "YOUR-BUCKET": "my-latune-bucket"}


def _filled_text() -> str:
    text = CLUSTER_YAML.read_text()
    for marker, value in FILLED.items():
        text = text.replace(marker, value)
    return text


def _filled() -> dict:
    """The filled copy as plain data: JSON round trip, so that YAML aliases (*ami, ...) are separate objects."""
    return json.loads(json.dumps(yaml.safe_load(_filled_text())))


def _check(config: dict) -> list[str]:
    return problems(config, ray_version=RAY, lock=LOCK)


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latune.cluster", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


def test_shipped_file_fails_naming_each_placeholder():
    found = _check(yaml.safe_load(CLUSTER_YAML.read_text()))
    shipped = set(re.findall(r"YOUR-[A-Z0-9-]*[A-Z0-9]", "\n".join(
        line for line in CLUSTER_YAML.read_text().splitlines() if not line.lstrip().startswith("#"))))
    assert shipped == set(FILLED) and shipped <= set(PLACEHOLDERS)  # every marker in use has a meaning
    for marker in shipped:
        [line] = [line for line in found if f"placeholder {marker} left" in line]
        assert PLACEHOLDERS[marker] in line
    assert len(found) == len(shipped)  # a placeholder is reported once, not again by the checks of its field
    assert any(line.startswith("available_node_types.{head,gpu_1x,gpu_4x}.node_config.ImageId:") for line in found)


def test_check_cli_on_the_shipped_file_exits_2_with_one_error_line_per_problem():
    done = _cli("check")  # default: cluster.yaml in the current folder
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(FILLED) and all(f"placeholder {m} left" in done.stderr for m in FILLED)
    assert done.stdout == ""


def test_filled_copy_passes_the_check_and_rays_validation(tmp_path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    assert _check(_filled()) == []
    validate_config(prepare_config(_filled()))
    (tmp_path / "cluster.yaml").write_text(_filled_text())
    (tmp_path / "constraints.txt").write_bytes((ROOT / "constraints.txt").read_bytes())
    done = _cli("check", str(tmp_path / "cluster.yaml"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "no problems found" in done.stdout and "ray up" in done.stdout and "doctor --gpu worker" in done.stdout
    assert "104 vCPUs" in done.stdout and "L-DB2E81BA" in done.stdout  # 2 x g5.12xlarge + 2 x g5.xlarge


def test_check_cli_refuses_a_missing_or_unreadable_file(tmp_path):
    done = _cli("check", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "no such file" in done.stderr
    (tmp_path / "bad.yaml").write_text("max_workers: [1\n")
    done = _cli("check", str(tmp_path / "bad.yaml"))
    assert done.returncode == 2 and "not valid YAML" in done.stderr and "Traceback" not in done.stderr


def _types(c: dict) -> dict:
    return c["available_node_types"]


def _ssh_default_group(c):
    del _types(c)["gpu_4x"]["node_config"]["SecurityGroupIds"]


def _ssh_world_rule(c):
    c["provider"]["security_group"] = {"GroupName": "latune-ssh", "IpPermissions": [
        {"FromPort": 22, "ToPort": 22, "IpProtocol": "tcp", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}


def _gpu_count_too_low(c):
    _types(c)["gpu_4x"]["resources"]["GPU"] = 1


def _gpu_on_a_cpu_type(c):
    _types(c)["head"]["resources"]["GPU"] = 1


def _gpu_missing(c):
    del _types(c)["gpu_1x"]["resources"]["GPU"]


def _cpus_beyond_the_instance(c):
    _types(c)["gpu_1x"]["resources"]["CPU"] = 8


def _ray_version_mismatch(c):
    c["docker"]["image"] = c["docker"]["image"].replace(f":{RAY}-", ":2.50.0-")


def _image_of_another_lock(c):
    c["docker"]["image"] = c["docker"]["image"].replace(LOCK, "0badc0de")


def _rays_own_image(c):
    c["docker"]["image"] = f"rayproject/ray:{RAY}-py311-gpu"
    c["initialization_commands"] = c["initialization_commands"][:1]


def _two_images(c):
    c["docker"]["worker_image"] = c["docker"]["image"] + "-other"


def _gpus_on_the_head(c):
    c["docker"]["run_options"].append("--gpus all")


def _no_registry_login(c):
    c["initialization_commands"] = c["initialization_commands"][:1]


def _bucket_name_invalid(c):
    c["head_setup_commands"][0] = "echo 'export LATUNE_S3=s3://My_Bucket/latune' > ~/latune_env.sh"


def _s3_prefix_trailing_slash(c):
    c["head_setup_commands"][0] = "echo 'export LATUNE_S3=s3://my-latune-bucket/latune/' > ~/latune_env.sh"


def _no_s3(c):
    c["head_setup_commands"] = c["head_setup_commands"][1:]


def _zone_of_another_region(c):
    c["provider"]["availability_zone"] = "us-west-2a,eu-west-1b"


def _region_invalid(c):
    c["provider"]["region"] = "us-west"


def _ami_invalid(c):
    _types(c)["gpu_1x"]["node_config"]["ImageId"] = "ami-123"


def _ami_missing(c):
    del _types(c)["gpu_4x"]["node_config"]["ImageId"]


def _security_group_invalid(c):
    _types(c)["head"]["node_config"]["SecurityGroupIds"] = ["latune-ssh"]


def _worker_profile_missing(c):
    del _types(c)["gpu_1x"]["node_config"]["IamInstanceProfile"]


def _head_profile_missing(c):
    del _types(c)["head"]["node_config"]["IamInstanceProfile"]


def _example_account_id(c):
    _types(c)["gpu_4x"]["node_config"]["IamInstanceProfile"] = {
        "Arn": "arn:aws:iam::123456789012:instance-profile/latune-worker"}


def _key_without_key_names(c):
    c["auth"]["ssh_private_key"] = "~/.ssh/my-key.pem"
    _types(c)["head"]["node_config"]["KeyName"] = "my-key"


def _pip_install_at_boot(c):
    c["setup_commands"].append("pip install -q torch torchvision")


_BROKEN = [
    (_ssh_default_group, ["available_node_types.gpu_4x.node_config.SecurityGroupIds: missing", "0.0.0.0/0"]),
    (_ssh_world_rule, ["provider.security_group.IpPermissions: ports 22-22 open to the world"]),
    (_gpu_count_too_low, ["available_node_types.gpu_4x.resources.GPU: 1 declared", "g5.12xlarge has 4"]),
    (_gpu_on_a_cpu_type, ["available_node_types.head.resources.GPU: 1 declared", "m5.xlarge is not a GPU"]),
    (_gpu_missing, ["available_node_types.gpu_1x.resources.GPU: 0 declared", "g5.xlarge has 1"]),
    (_cpus_beyond_the_instance, ["available_node_types.gpu_1x.resources.CPU: 8 declared", "has 4 vCPUs"]),
    (_ray_version_mismatch, ["docker.image: Ray 2.50.0 in the tag", f"this machine runs Ray {RAY}"]),
    (_image_of_another_lock, ["docker.image: tag", f"does not end with -{LOCK}"]),
    (_rays_own_image, ["docker.image: 'rayproject/ray:", "without latune's dependencies"]),
    (_two_images, ["docker.worker_image:", "differs from docker.image"]),
    (_gpus_on_the_head, ["docker.run_options: --gpus", "worker_run_options"]),
    (_no_registry_login, ["initialization_commands: no `docker login` to 210987654321.dkr.ecr"]),
    (_bucket_name_invalid, ["head_setup_commands[0]: LATUNE_S3: 'My_Bucket' is not an S3 bucket name"]),
    (_s3_prefix_trailing_slash, ["head_setup_commands[0]: LATUNE_S3:", "must not end with /"]),
    (_no_s3, ["head_setup_commands: no `export LATUNE_S3=s3://BUCKET/PREFIX`"]),
    (_zone_of_another_region, ["provider.availability_zone: eu-west-1b not zones of us-west-2"]),
    (_region_invalid, ["provider.region: 'us-west' is not an AWS region name"]),
    (_ami_invalid, ["available_node_types.gpu_1x.node_config.ImageId: 'ami-123' is not an AMI id"]),
    (_ami_missing, ["available_node_types.gpu_4x.node_config.ImageId: missing", "default AMI"]),
    (_security_group_invalid, ["available_node_types.head.node_config.SecurityGroupIds: 'latune-ssh' is not"]),
    (_worker_profile_missing, ["available_node_types.gpu_1x.node_config.IamInstanceProfile: missing", "S3"]),
    (_head_profile_missing, ["available_node_types.head.node_config.IamInstanceProfile: missing", "ECR"]),
    (_example_account_id, ["IamInstanceProfile.Arn: placeholder 123456789012 left", "your AWS account id"]),
    (_key_without_key_names, ["KeyName: missing in available_node_types gpu_1x, gpu_4x"]),
    (_pip_install_at_boot, ["setup_commands[1]: 'pip install -q torch torchvision' installs packages at every boot"]),
]


@pytest.mark.parametrize("edit, expected", _BROKEN, ids=[edit.__name__.lstrip("_") for edit, _ in _BROKEN])
def test_each_broken_copy_gives_one_problem_naming_the_field(edit, expected):
    config = _filled()
    edit(config)
    found = _check(config)
    assert len(found) == 1, found
    assert all(part in found[0] for part in expected), found[0]


def test_ray_not_installed_is_a_problem():
    [found] = problems(_filled(), ray_version=None, lock=LOCK)
    assert found.startswith("ray: not installed on this machine")


def test_lock_is_not_compared_without_one():
    config = _filled()
    _image_of_another_lock(config)
    assert problems(config, ray_version=RAY, lock=None) == []


def test_ssh_through_network_interfaces_counts_as_a_security_group():
    config = _filled()
    node = _types(config)["gpu_1x"]["node_config"]
    node["NetworkInterfaces"] = [{"DeviceIndex": 0, "Groups": node.pop("SecurityGroupIds")}]
    assert _check(config) == []


@pytest.mark.parametrize("uri, problem", [
    ("s3://my-bucket/latune", None), ("s3://my.bucket-2", None), ("s3://abc/a/b/c", None),
    ("S3://my-bucket/x", "is not an s3://BUCKET/PREFIX URI"), ("gs://my-bucket/x", "is not an s3://"),
    ("s3://ab/x", "is not an S3 bucket name"), ("s3://-bucket/x", "is not an S3 bucket name"),
    ("s3://my..bucket/x", "is not an S3 bucket name"), ("s3://192.168.1.1/x", "is not an S3 bucket name"),
    ("s3://" + "b" * 64, "is not an S3 bucket name"), ("s3://my-bucket/a//b", "empty part")])
def test_s3_uri_forms(uri, problem):
    found = s3_uri_problem(uri)
    assert (found is None) if problem is None else (problem in found), found


def test_vcpu_needs_count_the_largest_cluster_against_each_quota():
    config = _filled()
    assert vcpu_needs(config) == {("Running On-Demand G and VT instances", "L-DB2E81BA"): (104, "g5.12xlarge", 48)}
    config["max_workers"] = 1  # one worker at most: the largest type alone
    assert vcpu_needs(config)[("Running On-Demand G and VT instances", "L-DB2E81BA")] == (48, "g5.12xlarge", 48)
    _types(config)["gpu_8x"] = copy.deepcopy(_types(config)["gpu_4x"])
    _types(config)["gpu_8x"]["node_config"]["InstanceType"] = "p4d.24xlarge"
    _types(config)["gpu_8x"]["resources"] = {"CPU": 96, "GPU": 8}
    assert vcpu_needs(config)[("Running On-Demand P instances", "L-417A185B")] == (96, "p4d.24xlarge", 96)


def test_installed_ray_version_is_the_distributions():
    import importlib.metadata

    assert RAY == importlib.metadata.version("ray")
