"""latune.cluster.preflight (with its checks in latune.cluster.nodes and .exposure) and ``python -m latune.cluster
check``: the shipped cluster.yaml fails naming each placeholder, a filled copy passes (and still passes Ray's own
validation), and broken copies of the filled one each give one problem naming the field: SSH open to the world,
GPU counts, instance types, Volta under CUDA 13, --gpus, the Ray version, the image digest, S3 and shared
storage, zones, the dashboard and MLflow hosts, IMDSv2, encrypted disks, cache_stopped_nodes, profiles, keys,
setup commands. The vCPU quotas, spot included; the Dockerfile's base digest warning."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from latune.cluster import instances
from latune.cluster.preflight import (PLACEHOLDERS, dockerfile_warnings, image_digest, installed_ray_version,
                                      lock_cuda, problems, s3_uri_problem, vcpu_needs)

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
RAY = installed_ray_version()
DIGEST = image_digest((ROOT / "Dockerfile").read_bytes(), (ROOT / "constraints.txt").read_bytes())
CUDA = lock_cuda((ROOT / "constraints.txt").read_text())
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
    return problems(config, ray_version=RAY, digest=DIGEST, cuda=CUDA)


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
    for name in ("constraints.txt", "Dockerfile"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    done = _cli("check", str(tmp_path / "cluster.yaml"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "no problems found" in done.stdout and "ray up" in done.stdout and "doctor --gpu worker" in done.stdout
    assert "104 vCPUs" in done.stdout and "L-DB2E81BA" in done.stdout  # 2 x g5.12xlarge + 2 x g5.xlarge
    assert "the Dockerfile and constraints.txt" in done.stdout  # the tag was compared with their digest
    # what is still open is a warning, not a problem: the base image's digest (no machine here could read it)
    assert [line.split(":")[0] for line in done.stderr.splitlines()] == (
        ["warning"] if dockerfile_warnings((ROOT / "Dockerfile").read_text()) else [])


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
    c["docker"]["image"] = c["docker"]["image"].replace(DIGEST, "0badc0de")


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


def _cache_stopped_nodes_missing(c):
    del c["provider"]["cache_stopped_nodes"]


def _cache_stopped_nodes_true(c):
    c["provider"]["cache_stopped_nodes"] = True


def _replace_in_command(c, key, old, new):
    [index] = [i for i, command in enumerate(c[key]) if old in command]
    c[key][index] = c[key][index].replace(old, new)


def _dashboard_on_every_address(c):
    _replace_in_command(c, "head_start_ray_commands", "--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0")


def _mlflow_on_every_address(c):
    _replace_in_command(c, "head_start_ray_commands", "mlflow server --host 127.0.0.1", "mlflow server --host 0.0.0.0")


def _local_storage_on_a_cluster(c):
    _replace_in_command(c, "head_setup_commands", "LATUNE_STORAGE=$LATUNE_S3/runs",
                        "LATUNE_STORAGE=$HOME/latune_state/runs")


def _volta_under_cuda_13(c):
    _types(c)["gpu_1x"]["node_config"]["InstanceType"] = "p3.2xlarge"


def _misspelt_instance_type(c):
    _types(c)["gpu_1x"]["node_config"]["InstanceType"] = "g5.xlarg"


def _gpu_workers_without_gpus_option(c):
    del c["docker"]["worker_run_options"]


def _imds_optional(c):
    _types(c)["gpu_4x"]["node_config"]["MetadataOptions"]["HttpTokens"] = "optional"


def _imds_missing(c):
    del _types(c)["head"]["node_config"]["MetadataOptions"]


def _disk_unencrypted(c):
    _types(c)["gpu_1x"]["node_config"]["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] = False


def _disk_encryption_missing(c):
    del _types(c)["gpu_4x"]["node_config"]["BlockDeviceMappings"][0]["Ebs"]["Encrypted"]


def _disk_mappings_missing(c):
    del _types(c)["head"]["node_config"]["BlockDeviceMappings"]


_BROKEN = [
    (_ssh_default_group, ["available_node_types.gpu_4x.node_config.SecurityGroupIds: missing", "0.0.0.0/0"]),
    (_ssh_world_rule, ["provider.security_group.IpPermissions: ports 22-22 open to the world"]),
    (_gpu_count_too_low, ["available_node_types.gpu_4x.resources.GPU: 1 declared", "g5.12xlarge has 4"]),
    (_gpu_on_a_cpu_type, ["available_node_types.head.resources.GPU: 1 declared", "m5.xlarge is not a GPU"]),
    (_gpu_missing, ["available_node_types.gpu_1x.resources.GPU: 0 declared", "g5.xlarge has 1"]),
    (_cpus_beyond_the_instance, ["available_node_types.gpu_1x.resources.CPU: 8 declared", "has 4 vCPUs"]),
    (_ray_version_mismatch, ["docker.image: Ray 2.50.0 in the tag", f"this machine runs Ray {RAY}"]),
    (_image_of_another_lock, ["docker.image: tag", f"does not end with -{DIGEST}", "Dockerfile and constraints"]),
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
    (_cache_stopped_nodes_missing, ["provider.cache_stopped_nodes: missing", "write false"]),
    (_cache_stopped_nodes_true, ["provider.cache_stopped_nodes: true", "keep billing their disks"]),
    (_dashboard_on_every_address, ["head_start_ray_commands[1]: the Ray dashboard listens on every address"]),
    (_mlflow_on_every_address, ["head_start_ray_commands[2]: the MLflow server listens on every address"]),
    (_local_storage_on_a_cluster, ["head_setup_commands[1]: LATUNE_STORAGE=$HOME/latune_state/runs is a local",
                                   "gpu_1x, gpu_4x", "s3://"]),
    (_volta_under_cuda_13, ["available_node_types.gpu_1x.node_config.InstanceType: p3.2xlarge has NVIDIA V100",
                            "sm_70", f"CUDA {CUDA}"]),
    (_misspelt_instance_type, ["available_node_types.gpu_1x.node_config.InstanceType: 'g5.xlarg' is not",
                               "did you mean g5.xlarge?"]),
    (_gpu_workers_without_gpus_option, ["docker.worker_run_options: no --gpus for available_node_types gpu_1x, "
                                        "gpu_4x", "--gpus all"]),
    (_imds_optional, ["available_node_types.gpu_4x.node_config.MetadataOptions.HttpTokens: 'optional'; write "
                      "required"]),
    (_imds_missing, ["available_node_types.head.node_config.MetadataOptions.HttpTokens: missing"]),
    (_disk_unencrypted, ["available_node_types.gpu_1x.node_config.BlockDeviceMappings[0].Ebs.Encrypted: false"]),
    (_disk_encryption_missing, ["available_node_types.gpu_4x.node_config.BlockDeviceMappings[0].Ebs.Encrypted: "
                                "missing"]),
    (_disk_mappings_missing, ["available_node_types.head.node_config.BlockDeviceMappings: missing"]),
]


@pytest.mark.parametrize("edit, expected", _BROKEN, ids=[edit.__name__.lstrip("_") for edit, _ in _BROKEN])
def test_each_broken_copy_gives_one_problem_naming_the_field(edit, expected):
    config = _filled()
    edit(config)
    found = _check(config)
    assert len(found) == 1, found
    assert all(part in found[0] for part in expected), found[0]


def test_ray_not_installed_is_a_problem():
    [found] = problems(_filled(), ray_version=None, digest=DIGEST, cuda=CUDA)
    assert found.startswith("ray: not installed on this machine")


def test_image_digest_is_not_compared_without_one():
    config = _filled()
    _image_of_another_lock(config)
    assert problems(config, ray_version=RAY, digest=None, cuda=CUDA) == []


def test_image_digest_is_the_shells_digest_of_the_dockerfile_then_the_lock():
    done = subprocess.run("cat Dockerfile constraints.txt | sha256sum | cut -c1-8", shell=True, cwd=ROOT,
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == DIGEST


def test_lock_cuda_is_the_major_version_of_the_locks_cuda_runtime():
    assert CUDA == 13  # torch 2.14.1 from PyPI: CUDA 13.0 wheels
    assert lock_cuda("nvidia-cuda-runtime-cu12==12.8.90\n") == 12 and lock_cuda("torch==2.4.0\n") is None


def test_volta_is_fine_under_cuda_12():
    config = _filled()
    _volta_under_cuda_13(config)
    assert problems(config, ray_version=RAY, digest=DIGEST, cuda=12) == []


def test_local_storage_is_fine_on_a_single_node_and_for_file_uris():
    config = _filled()
    _local_storage_on_a_cluster(config)
    single = copy.deepcopy(config)
    single["max_workers"] = 0
    for node_type in ("gpu_1x", "gpu_4x"):
        _types(single)[node_type]["max_workers"] = 0
    assert _check(single) == []
    _replace_in_command(config, "head_setup_commands", "$HOME/latune_state/runs", "file:///shared/runs")
    [found] = _check(config)
    assert "LATUNE_STORAGE=file:///shared/runs is a local folder" in found


def test_misspelt_instance_type_against_botocores_list(monkeypatch):
    monkeypatch.setattr(instances, "ec2_instance_types", lambda: frozenset({"m5.xlarge", "g5.xlarge", "g5.12xlarge",
                                                                            "g6f.xlarge"}))
    config = _filled()
    _misspelt_instance_type(config)
    [found] = _check(config)
    assert found.endswith("'g5.xlarg' is not an EC2 instance type (botocore's list); did you mean g5.xlarge?")
    _types(config)["gpu_1x"]["node_config"]["InstanceType"] = "g6f.xlarge"  # real, but not in latune's GPU table
    [found] = _check(config)
    assert "resources.GPU: 1 declared, but g6f.xlarge is not a GPU instance type latune knows" in found


def test_without_botocore_the_message_says_so(monkeypatch):
    monkeypatch.setattr(instances, "ec2_instance_types", lambda: None)
    config = _filled()
    _misspelt_instance_type(config)
    [found] = _check(config)
    assert "not in latune's list of instance types" in found and "botocore" in found and "pip install boto3" in found
    assert _check(_filled()) == []  # the shipped types are in latune's own list


@pytest.mark.parametrize("gzipped", [True, False])
def test_ec2_instance_types_reads_botocores_newest_ec2_model(tmp_path, gzipped):
    import gzip

    for version, types in (("2015-10-01", ["m4.large"]), ("2016-11-15", ["m5.xlarge", "g5.xlarge"])):
        folder = tmp_path / "data" / "ec2" / version
        folder.mkdir(parents=True)
        model = json.dumps({"shapes": {"InstanceType": {"type": "string", "enum": types}}}).encode()
        if gzipped:
            (folder / "service-2.json.gz").write_bytes(gzip.compress(model))
        else:
            (folder / "service-2.json").write_bytes(model)
    assert instances.ec2_instance_types(tmp_path) == {"m5.xlarge", "g5.xlarge"}
    assert instances.ec2_instance_types(tmp_path / "nothing") is None


def test_the_shipped_dockerfile_warns_until_its_base_is_pinned_by_digest():
    dockerfile = (ROOT / "Dockerfile").read_text()
    pinned = re.search(r"^ARG RAY_BASE_DIGEST=sha256:[0-9a-f]{64}\s*$", dockerfile, re.M)
    [warning] = dockerfile_warnings(dockerfile) if not pinned else [None]
    assert pinned or ("not pinned by digest yet" in warning and "rayproject/ray:" in warning)
    fixed = re.sub(r"^ARG RAY_BASE_DIGEST=.*$", "ARG RAY_BASE_DIGEST=sha256:" + "ab" * 32, dockerfile, flags=re.M)
    assert dockerfile_warnings(fixed) == []


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


def test_spot_node_types_count_against_the_spot_quotas():
    config = _filled()
    _types(config)["gpu_1x"]["node_config"]["InstanceMarketOptions"] = {"MarketType": "spot"}
    assert vcpu_needs(config) == {("Running On-Demand G and VT instances", "L-DB2E81BA"): (96, "g5.12xlarge", 48),
                                  ("All G and VT Spot Instance Requests", "L-3819A6DF"): (8, "g5.xlarge", 4)}
    _types(config)["gpu_8x"] = copy.deepcopy(_types(config)["gpu_1x"])
    _types(config)["gpu_8x"]["node_config"]["InstanceType"] = "p4d.24xlarge"
    _types(config)["gpu_8x"]["resources"] = {"CPU": 96, "GPU": 8}
    _types(config)["gpu_8x"]["max_workers"] = 1
    assert vcpu_needs(config)[("All P Spot Instance Requests", "L-7212CCBC")] == (96, "p4d.24xlarge", 96)
    assert _check(config) == []


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
