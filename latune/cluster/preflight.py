"""Offline preflight of a Ray cluster file for AWS (cluster.yaml): what Ray's own validation accepts but a first
``ray up`` trips on later, found before anything is launched.

Ray's ``validate_config`` checks the file's shape. It does not know that ``YOUR-BUCKET`` is a placeholder (``ray
up`` then succeeds and sweeps fail on S3), that a node type without ``SecurityGroupIds`` gets Ray's own security
group with SSH open to 0.0.0.0/0, that ``resources.GPU`` disagrees with the instance type (trials stay PENDING),
or that the image's Ray differs from the Ray running ``ray up``. Each check is a pure function of the parsed
YAML (a dict) returning problem strings, one line each, naming the field and what is allowed; no network, no AWS.
The file's shape is checked first (latune.cluster.shape); the checks of node types against the hardware live in
latune.cluster.nodes, those of what the cluster exposes in latune.cluster.exposure; here the values you fill in,
the image and its tag, storage, profiles, keys and setup commands, and problems(), which runs them all.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from collections.abc import Mapping
from typing import Any

from latune.cluster import exposure, nodes
from latune.cluster.clusterfile import (EXAMPLE_ACCOUNT, PLACEHOLDER, declared_gpus, filled, head, head_exports,
                                        join_paths, node_types, walk, workers)
from latune.cluster.nodes import vcpu_needs
from latune.cluster.shape import shape_problem

__all__ = ["PLACEHOLDER", "PLACEHOLDERS", "problems", "installed_ray_version", "image_digest", "lock_cuda",
           "dockerfile_warnings", "s3_uri_problem", "vcpu_needs"]

# What each placeholder of the shipped cluster.yaml stands for (docs/cluster.md's AWS commands make them).
PLACEHOLDERS: dict[str, str] = {
    "YOUR-REGION": "the AWS region, e.g. us-west-2",
    "YOUR-ZONES": "availability zones of the region, comma-separated, e.g. us-west-2a,us-west-2b",
    "YOUR-AMI": "the AMI id (ami-...) of the newest Deep Learning Base OSS Nvidia Driver GPU AMI of the region",
    "YOUR-SECURITY-GROUP": "the id (sg-...) of the security group made as in docs/cluster.md",
    "YOUR-HEAD-PROFILE": "the head's instance profile name (docs/cluster.md: latune-head)",
    "YOUR-WORKER-PROFILE": "the workers' instance profile name (docs/cluster.md: latune-worker)",
    "YOUR-REGISTRY": "your ECR registry, ACCOUNT.dkr.ecr.REGION.amazonaws.com",
    "YOUR-BUCKET": "the S3 bucket name",
    "YOUR-KEY": "the name of your EC2 key pair",
}
_SETUP_KEYS = ("setup_commands", "head_setup_commands", "worker_setup_commands")
_ECR_HOST = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com$")
_REMOTE_URI = re.compile(r"[a-z][a-z0-9+.-]*://")  # s3://, gs://, hdfs://, ...; file:// is local
_BASE_DIGEST = re.compile(r"^ARG RAY_BASE_DIGEST=(\S*)\s*$", re.M)


def installed_ray_version() -> str | None:
    """The version of the ``ray`` distribution installed here, or None (read from its metadata, no import)."""
    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return None


def image_digest(dockerfile: bytes, lock: bytes) -> str:
    """The first 8 hex digits of sha256(Dockerfile, then constraints.txt): the last part of the image tag, so a
    change of either file is a new tag (shell: ``cat Dockerfile constraints.txt | sha256sum | cut -c1-8``)."""
    return hashlib.sha256(dockerfile + lock).hexdigest()[:8]


def lock_cuda(lock: str) -> int | None:
    """The CUDA major version of the lock's torch (its nvidia-cuda-runtime wheel), or None without one."""
    match = re.search(r"^nvidia-cuda-runtime(?:-cu\d+)?==(\d+)\.", lock, re.M)
    return int(match.group(1)) if match else None


def dockerfile_warnings(dockerfile: str) -> list[str]:
    """What the Dockerfile leaves open, one line each: the base image not pinned by digest (a tag can be pushed
    again, and every image built later would then differ from the one tested)."""
    match = _BASE_DIGEST.search(dockerfile)
    if match and re.fullmatch(r"sha256:[0-9a-f]{64}", match.group(1)):
        return []
    base = re.search(r"^FROM\s+(\S+?)(\$\{|\s|$)", dockerfile, re.M)
    image = base.group(1) if base else "the base image"
    return [f"Dockerfile: ARG RAY_BASE_DIGEST: {image} is not pinned by digest yet; write its sha256:... there "
            f"(`docker buildx imagetools inspect {image}`), then rebuild: the tag names the new digest"]


def problems(config: Mapping[str, Any], *, ray_version: str | None, digest: str | None = None,
             cuda: int | None = None) -> list[str]:
    """Every problem of ``config`` (cluster.yaml, parsed), one line each; [] when it is ready for ``ray up``. A file
    of the wrong shape (latune.cluster.shape) gives that one problem only.

    ``ray_version``: the Ray of the machine that runs ``ray up`` (None: not installed). ``digest``: image_digest()
    of the repository's Dockerfile and constraints.txt, to check the image tag names it, and ``cuda``: lock_cuda()
    of constraints.txt, to check the GPUs run it (None: not checked).
    """
    wrong = shape_problem(config)
    if wrong:
        return [wrong]
    return [*_placeholder_problems(config), *_region_problems(config), *_ami_problems(config),
            *nodes.instance_type_problems(config), *_storage_problems(config),
            *_image_problems(config, ray_version, digest), *nodes.gpu_problems(config),
            *nodes.cuda_problems(config, cuda), *nodes.gpu_option_problems(config), *exposure.ssh_problems(config),
            *exposure.public_host_problems(config), *exposure.metadata_problems(config),
            *exposure.disk_problems(config), *exposure.cache_problems(config), *_profile_problems(config),
            *_key_problems(config), *_setup_problems(config)]


def _placeholder_problems(config: Mapping[str, Any]) -> list[str]:
    found: dict[str, list[str]] = {}
    for path, text in walk(config, ""):
        markers = PLACEHOLDER.findall(text) + ([EXAMPLE_ACCOUNT] if EXAMPLE_ACCOUNT in text else [])
        for marker in markers:
            found.setdefault(marker, []).append(path)
    lines = []
    for marker, paths in found.items():
        where = join_paths(paths)
        meaning = PLACEHOLDERS.get(marker, "the real value" if marker != EXAMPLE_ACCOUNT
                                   else "your AWS account id (123456789012 is AWS's example)")
        lines.append(f"{where}: placeholder {marker} left; write {meaning}")
    return lines


def _region_problems(config: Mapping[str, Any]) -> list[str]:
    provider = config.get("provider") or {}
    region, zones = provider.get("region"), provider.get("availability_zone")
    if not filled(region):
        return [] if isinstance(region, str) else ["provider.region: missing; write the AWS region, e.g. us-west-2"]
    if not re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-\d+", region):
        return [f"provider.region: {region!r} is not an AWS region name (like us-west-2)"]
    if not filled(zones):
        return []
    bad = [zone.strip() for zone in zones.split(",")
           if not re.fullmatch(re.escape(region) + r"([a-z]|-[a-z0-9-]+[a-z])", zone.strip())]
    if not bad:
        return []
    return [f"provider.availability_zone: {', '.join(bad)} not zones of {region} (like {region}a,{region}b)"]


def _ami_problems(config: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, node_type in node_types(config).items():
        image = (node_type.get("node_config") or {}).get("ImageId")
        where = f"available_node_types.{name}.node_config.ImageId"
        if image is None:
            lines.append(f"{where}: missing; Ray would launch its default AMI, whose NVIDIA driver may be older than "
                         "torch's CUDA needs: write the Deep Learning AMI id")
        elif filled(image) and not re.fullmatch(r"ami-[0-9a-f]{8}([0-9a-f]{9})?", image):
            lines.append(f"{where}: {image!r} is not an AMI id (ami- and 8 or 17 hex digits)")
    return lines


def s3_uri_problem(uri: str) -> str | None:
    """Why ``uri`` is not an ``s3://BUCKET/PREFIX`` URI with a valid bucket name, or None when it is."""
    match = re.fullmatch(r"s3://([^/]*)(/.*)?", uri)
    if not match:
        return f"{uri!r} is not an s3://BUCKET/PREFIX URI"
    bucket, prefix = match.group(1), match.group(2) or ""
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket) or ".." in bucket \
            or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", bucket):
        return (f"{bucket!r} is not an S3 bucket name (3-63 characters: lowercase letters, digits, dots, hyphens; "
                "starting and ending with a letter or digit)")
    if prefix.endswith("/") or "//" in prefix:
        return f"{uri!r}: the prefix must not end with / nor hold an empty part (paths are appended with /)"
    return None


def _storage_problems(config: Mapping[str, Any]) -> list[str]:
    lines = _shared_storage_problems(config)
    for index, command in enumerate(config.get("head_setup_commands") or []):
        match = re.search(r"LATUNE_S3=([^'\"\s;]+)", command)
        if match:
            problem = s3_uri_problem(match.group(1)) if filled(match.group(1)) else None
            return [*lines, f"head_setup_commands[{index}]: LATUNE_S3: {problem}"] if problem else lines
    return [*lines, "head_setup_commands: no `export LATUNE_S3=s3://BUCKET/PREFIX`; sweeps would have no shared "
                    "storage"]


def _shared_storage_problems(config: Mapping[str, Any]) -> list[str]:
    """With workers, Tune's storage (LATUNE_STORAGE on the head) must be a URI every node reaches: in a local folder
    each node keeps its own trials' checkpoints, and a trial moved to another node restarts from nothing."""
    found = head_exports(config).get("LATUNE_STORAGE")
    if not workers(config) or found is None:
        return []
    index, value = found
    if _REMOTE_URI.match(value) and not value.startswith("file://"):
        return []
    if re.search(r"\$(?!HOME\b|\{HOME\})", value):
        return []  # names a variable not exported before it: cannot tell
    return [f"head_setup_commands[{index}]: LATUNE_STORAGE={value} is a local folder, but the cluster has workers "
            f"({', '.join(workers(config))}); write a URI every node reaches (s3://BUCKET/PREFIX/runs)"]


def _split_image(image: str) -> tuple[str, str, str]:
    """'host/repo/name:tag' -> (host or '', repository path, tag or '')."""
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    first, _, rest = name.partition("/")
    host = first if rest and ("." in first or ":" in first) else ""
    return host, (rest if host else name), tag


def _image_problems(config: Mapping[str, Any], ray_version: str | None, digest: str | None) -> list[str]:
    docker = config.get("docker") or {}
    image = docker.get("image")
    if not isinstance(image, str) or not image:
        return ["docker.image: missing; every node must run the image built from the Dockerfile (docs/cluster.md), or "
                "each one installs its own versions at boot"]
    lines = [f"docker.{key}: {docker[key]!r} differs from docker.image; every node must run the same image"
             for key in ("head_image", "worker_image") if docker.get(key) not in (None, image)]
    host, repository, tag = _split_image(image)
    if repository.startswith("rayproject/"):
        lines.append(f"docker.image: {image!r} is Ray's own image, without latune's dependencies (setup_commands "
                     "install latune with --no-deps); build the Dockerfile's image and name it here")
    version = re.search(r"\d+\.\d+\.\d+", tag)
    if ray_version is None:
        lines.append("ray: not installed on this machine; install the image's Ray (pip install -c constraints.txt "
                     "'ray[default]') to run `ray up`")
    elif not version:
        lines.append(f"docker.image: tag {tag!r} names no Ray version; tag the image <Ray version>-py311-gpu-<digest>")
    elif version.group() != ray_version:
        lines.append(f"docker.image: Ray {version.group()} in the tag, but this machine runs Ray {ray_version} (`ray "
                     f"up` needs the same Ray on both sides); install ray=={version.group()} or rebuild the image")
    if digest and not repository.startswith("rayproject/") and filled(image) and not tag.endswith(f"-{digest}"):
        lines.append(f"docker.image: tag {tag!r} does not end with -{digest}, the digest of this Dockerfile and "
                     "constraints.txt: rebuild and push the image (docs/cluster.md) and write its tag here")
    gpus_everywhere = any("--gpus" in option for option in docker.get("run_options") or [])
    if gpus_everywhere and not declared_gpus(config, head(config)):
        lines.append("docker.run_options: --gpus is given to every node, but the head has no GPU (docker run fails "
                     "there); put it in docker.worker_run_options")
    if filled(host) and _ECR_HOST.fullmatch(host) and not any(
            "docker login" in command and host in command for command in config.get("initialization_commands") or []):
        lines.append(f"initialization_commands: no `docker login` to {host}; the nodes cannot pull docker.image")
    return lines


def _profile_problems(config: Mapping[str, Any]) -> list[str]:
    lines = []
    ecr = bool(_ECR_HOST.fullmatch(_split_image(str((config.get("docker") or {}).get("image", "")))[0]))
    for name, node_type in node_types(config).items():
        profile = (node_type.get("node_config") or {}).get("IamInstanceProfile")
        where = f"available_node_types.{name}.node_config.IamInstanceProfile"
        if profile is None:
            if name != head(config):
                lines.append(f"{where}: missing; workers would have no AWS access (S3 checkpoints, pulling the "
                             "image): write Name: of the workers' profile (docs/cluster.md)")
            elif ecr:
                lines.append(f"{where}: missing; Ray's default head profile cannot pull from ECR: write Name: of the "
                             "head's profile (docs/cluster.md)")
            continue
        value = profile.get("Name", profile.get("Arn")) if isinstance(profile, Mapping) else None
        if not isinstance(value, str):
            lines.append(f"{where}: write Name: PROFILE (or Arn: arn:aws:iam::ACCOUNT:instance-profile/PROFILE)")
        elif "Arn" in profile and filled(value) and not re.fullmatch(
                r"arn:aws[a-z-]*:iam::\d{12}:instance-profile/.+", value):
            lines.append(f"{where}.Arn: {value!r} is not an instance profile ARN")
    return lines


def _key_problems(config: Mapping[str, Any]) -> list[str]:
    private_key = (config.get("auth") or {}).get("ssh_private_key")
    with_key = {name for name, t in node_types(config).items() if (t.get("node_config") or {}).get("KeyName")}
    if private_key and len(with_key) < len(node_types(config)):
        missing = sorted(set(node_types(config)) - with_key)
        return [f"node_config.KeyName: missing in available_node_types {', '.join(missing)}; auth.ssh_private_key is "
                "set, and Ray can log in with it only to nodes launched with its key pair"]
    if with_key and not private_key:
        return ["auth.ssh_private_key: missing; node types name a KeyName, so Ray needs the matching private key"]
    return []


def _setup_problems(config: Mapping[str, Any]) -> list[str]:
    lines = []
    for key in _SETUP_KEYS:
        for index, command in enumerate(config.get(key) or []):
            if re.search(r"\bpip3? install\b", command) and "--no-deps" not in command:
                lines.append(f"{key}[{index}]: {command.strip()[:60]!r} installs packages at every boot, unpinned "
                             "(torch alone brings 3 GB of CUDA wheels): put them in constraints.txt and the image")
    return lines
