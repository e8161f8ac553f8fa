"""Offline preflight of a Ray cluster file for AWS (cluster.yaml): what Ray's own validation accepts but a first
``ray up`` trips on later, found before anything is launched.

Ray's ``validate_config`` checks the file's shape. It does not know that ``YOUR-BUCKET`` is a placeholder (``ray
up`` then succeeds and sweeps fail on S3), that a node type without ``SecurityGroupIds`` gets Ray's own security
group with SSH open to 0.0.0.0/0, that ``resources.GPU`` disagrees with the instance type (trials stay PENDING),
or that the image's Ray differs from the Ray running ``ray up``. Each check here is a pure function of the parsed
YAML (a dict) returning problem strings, one line each, naming the field and what is allowed; no network, no AWS.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import re
from collections.abc import Iterator, Mapping
from typing import Any

from latune.cluster.instances import GPU_INSTANCES, quota_of

__all__ = ["PLACEHOLDER", "PLACEHOLDERS", "problems", "installed_ray_version", "lock_digest", "s3_uri_problem",
           "vcpu_needs"]

# How cluster.yaml writes a value you must fill in: YOUR-BUCKET, YOUR-AMI, ... (no <, >, $ or quotes: a value left
# unfilled in a shell command is then a plain word there, not a redirection)
PLACEHOLDER = re.compile(r"\bYOUR-[A-Z0-9]+(?:-[A-Z0-9]+)*\b")
# What each placeholder of the shipped cluster.yaml stands for (the README's AWS commands make them).
PLACEHOLDERS: dict[str, str] = {
    "YOUR-REGION": "the AWS region, e.g. us-west-2",
    "YOUR-ZONES": "availability zones of the region, comma-separated, e.g. us-west-2a,us-west-2b",
    "YOUR-AMI": "the AMI id (ami-...) of the newest Deep Learning Base OSS Nvidia Driver GPU AMI of the region",
    "YOUR-SECURITY-GROUP": "the id (sg-...) of the security group made as in the README",
    "YOUR-HEAD-PROFILE": "the head's instance profile name (README: latune-head)",
    "YOUR-WORKER-PROFILE": "the workers' instance profile name (README: latune-worker)",
    "YOUR-REGISTRY": "your ECR registry, ACCOUNT.dkr.ecr.REGION.amazonaws.com",
    "YOUR-BUCKET": "the S3 bucket name",
    "YOUR-KEY": "the name of your EC2 key pair",
}
_EXAMPLE_ACCOUNT = "123456789012"  # the account id of AWS's documentation, never a real one
_SETUP_KEYS = ("setup_commands", "head_setup_commands", "worker_setup_commands")
_ECR_HOST = re.compile(r"^\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com$")
_WORLD = ("0.0.0.0/0", "::/0")


def installed_ray_version() -> str | None:
    """The version of the ``ray`` distribution installed here, or None (read from its metadata, no import)."""
    try:
        return importlib.metadata.version("ray")
    except importlib.metadata.PackageNotFoundError:
        return None


def lock_digest(lock: bytes) -> str:
    """The first 8 hex digits of sha256(constraints.txt): the last part of the image tag built from it."""
    return hashlib.sha256(lock).hexdigest()[:8]


def problems(config: Mapping[str, Any], *, ray_version: str | None, lock: str | None = None) -> list[str]:
    """Every problem of ``config`` (cluster.yaml, parsed), one line each; [] when it is ready for ``ray up``.

    ``ray_version``: the Ray of the machine that runs ``ray up`` (None: not installed). ``lock``: lock_digest()
    of the repository's constraints.txt, to check the image tag names it (None: not checked).
    """
    return [*_placeholder_problems(config), *_region_problems(config), *_ami_problems(config),
            *_storage_problems(config), *_image_problems(config, ray_version, lock), *_gpu_problems(config),
            *_ssh_problems(config), *_profile_problems(config), *_key_problems(config), *_setup_problems(config)]


def _walk(value: Any, path: str) -> Iterator[tuple[str, str]]:
    """(path, string) for every string inside ``value``, with paths like ``a.b[0].c``."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _walk(item, f"{path}[{index}]")


def _filled(value: Any) -> bool:
    """A string with no placeholder left (its placeholders are reported once, by _placeholder_problems)."""
    return isinstance(value, str) and not PLACEHOLDER.search(value) and _EXAMPLE_ACCOUNT not in value


def _placeholder_problems(config: Mapping[str, Any]) -> list[str]:
    found: dict[str, list[str]] = {}
    for path, text in _walk(config, ""):
        markers = PLACEHOLDER.findall(text) + ([_EXAMPLE_ACCOUNT] if _EXAMPLE_ACCOUNT in text else [])
        for marker in markers:
            found.setdefault(marker, []).append(path)
    lines = []
    for marker, paths in found.items():
        where = _join_paths(paths)
        meaning = PLACEHOLDERS.get(marker, "the real value" if marker != _EXAMPLE_ACCOUNT
                                   else "your AWS account id (123456789012 is AWS's example)")
        lines.append(f"{where}: placeholder {marker} left; write {meaning}")
    return lines


def _join_paths(paths: list[str]) -> str:
    """Paths that differ only in the node type, written once: available_node_types.{head,gpu_1x}.node_config.X."""
    grouped: dict[str, list[str]] = {}
    for path in paths:
        match = re.fullmatch(r"available_node_types\.([^.]+)\.(.+)", path)
        if match:
            grouped.setdefault(match.group(2), []).append(match.group(1))
        else:
            grouped[path] = []
    joined = []
    for rest, names in grouped.items():
        if not names:
            joined.append(rest)
        else:
            joined.append(f"available_node_types.{names[0] if len(names) == 1 else '{' + ','.join(names) + '}'}.{rest}")
    return ", ".join(joined)


def _node_types(config: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return dict(config.get("available_node_types") or {})


def _head(config: Mapping[str, Any]) -> str:
    return str(config.get("head_node_type", ""))


def _region_problems(config: Mapping[str, Any]) -> list[str]:
    provider = config.get("provider") or {}
    region, zones = provider.get("region"), provider.get("availability_zone")
    if not _filled(region):
        return [] if isinstance(region, str) else ["provider.region: missing; write the AWS region, e.g. us-west-2"]
    if not re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-\d+", region):
        return [f"provider.region: {region!r} is not an AWS region name (like us-west-2)"]
    if not _filled(zones):
        return []
    bad = [zone.strip() for zone in zones.split(",")
           if not re.fullmatch(re.escape(region) + r"([a-z]|-[a-z0-9-]+[a-z])", zone.strip())]
    if not bad:
        return []
    return [f"provider.availability_zone: {', '.join(bad)} not zones of {region} (like {region}a,{region}b)"]


def _ami_problems(config: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, node_type in _node_types(config).items():
        image = (node_type.get("node_config") or {}).get("ImageId")
        where = f"available_node_types.{name}.node_config.ImageId"
        if image is None:
            lines.append(f"{where}: missing; Ray would launch its default AMI, whose NVIDIA driver may be older than "
                         "torch's CUDA needs: write the Deep Learning AMI id")
        elif _filled(image) and not re.fullmatch(r"ami-[0-9a-f]{8}([0-9a-f]{9})?", image):
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
    for index, command in enumerate(config.get("head_setup_commands") or []):
        match = re.search(r"LATUNE_S3=([^'\"\s;]+)", command)
        if match:
            problem = s3_uri_problem(match.group(1)) if _filled(match.group(1)) else None
            return [f"head_setup_commands[{index}]: LATUNE_S3: {problem}"] if problem else []
    return ["head_setup_commands: no `export LATUNE_S3=s3://BUCKET/PREFIX`; sweeps would have no shared storage"]


def _split_image(image: str) -> tuple[str, str, str]:
    """'host/repo/name:tag' -> (host or '', repository path, tag or '')."""
    name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
    first, _, rest = name.partition("/")
    host = first if rest and ("." in first or ":" in first) else ""
    return host, (rest if host else name), tag


def _image_problems(config: Mapping[str, Any], ray_version: str | None, lock: str | None) -> list[str]:
    docker = config.get("docker") or {}
    image = docker.get("image")
    if not isinstance(image, str) or not image:
        return ["docker.image: missing; every node must run the image built from the Dockerfile (README), or each "
                "one installs its own versions at boot"]
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
        lines.append(f"docker.image: tag {tag!r} names no Ray version; tag the image <Ray version>-py311-gpu-<lock>")
    elif version.group() != ray_version:
        lines.append(f"docker.image: Ray {version.group()} in the tag, but this machine runs Ray {ray_version} (`ray "
                     f"up` needs the same Ray on both sides); install ray=={version.group()} or rebuild the image")
    if lock and not repository.startswith("rayproject/") and _filled(image) and not tag.endswith(f"-{lock}"):
        lines.append(f"docker.image: tag {tag!r} does not end with -{lock}, the digest of this constraints.txt: "
                     "rebuild and push the image (README) and write its tag here")
    gpus_everywhere = any("--gpus" in option for option in docker.get("run_options") or [])
    if gpus_everywhere and not _declared_gpus(config, _head(config)):
        lines.append("docker.run_options: --gpus is given to every node, but the head has no GPU (docker run fails "
                     "there); put it in docker.worker_run_options")
    if _filled(host) and _ECR_HOST.fullmatch(host) and not any(
            "docker login" in command and host in command for command in config.get("initialization_commands") or []):
        lines.append(f"initialization_commands: no `docker login` to {host}; the nodes cannot pull docker.image")
    return lines


def _declared_gpus(config: Mapping[str, Any], name: str) -> float:
    return float(((_node_types(config).get(name) or {}).get("resources") or {}).get("GPU", 0))


def _gpu_problems(config: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, node_type in _node_types(config).items():
        instance_type = str((node_type.get("node_config") or {}).get("InstanceType", ""))
        resources = node_type.get("resources") or {}
        gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 0))
        known = GPU_INSTANCES.get(instance_type)
        where = f"available_node_types.{name}.resources"
        if known is None:
            if gpus:
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


def _security_groups(node_config: Mapping[str, Any]) -> list[Any]:
    groups = list(node_config.get("SecurityGroupIds") or [])
    for interface in node_config.get("NetworkInterfaces") or []:
        groups += list(interface.get("Groups") or [])
    return groups


def _ssh_problems(config: Mapping[str, Any]) -> list[str]:
    lines = []
    for name, node_type in _node_types(config).items():
        where = f"available_node_types.{name}.node_config.SecurityGroupIds"
        groups = _security_groups(node_type.get("node_config") or {})
        if not groups:
            lines.append(f"{where}: missing; Ray would make its own security group, which lets SSH (port 22) in from "
                         "0.0.0.0/0: name the group made as in the README (SSH from your address only)")
        lines += [f"{where}: {group!r} is not a security group id (sg- and 8 or 17 hex digits)" for group in groups
                  if _filled(group) and not re.fullmatch(r"sg-[0-9a-f]{8}([0-9a-f]{9})?", group)]
    rules = ((config.get("provider") or {}).get("security_group") or {}).get("IpPermissions") or []
    for rule in rules:
        ranges = [r.get("CidrIp") for r in rule.get("IpRanges") or []] + \
                 [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges") or []]
        if any(cidr in _WORLD for cidr in ranges):
            ports = f"{rule.get('FromPort', 'all')}-{rule.get('ToPort', 'all')}"
            lines.append(f"provider.security_group.IpPermissions: ports {ports} open to the world "
                         f"({', '.join(c for c in ranges if c in _WORLD)}); allow your address only (a.b.c.d/32)")
    return lines


def _profile_problems(config: Mapping[str, Any]) -> list[str]:
    lines = []
    ecr = bool(_ECR_HOST.fullmatch(_split_image(str((config.get("docker") or {}).get("image", "")))[0]))
    for name, node_type in _node_types(config).items():
        profile = (node_type.get("node_config") or {}).get("IamInstanceProfile")
        where = f"available_node_types.{name}.node_config.IamInstanceProfile"
        if profile is None:
            if name != _head(config):
                lines.append(f"{where}: missing; workers would have no AWS access (S3 checkpoints, pulling the "
                             "image): write Name: of the workers' profile (README)")
            elif ecr:
                lines.append(f"{where}: missing; Ray's default head profile cannot pull from ECR: write Name: of the "
                             "head's profile (README)")
            continue
        value = profile.get("Name", profile.get("Arn")) if isinstance(profile, Mapping) else None
        if not isinstance(value, str):
            lines.append(f"{where}: write Name: PROFILE (or Arn: arn:aws:iam::ACCOUNT:instance-profile/PROFILE)")
        elif "Arn" in profile and _filled(value) and not re.fullmatch(
                r"arn:aws[a-z-]*:iam::\d{12}:instance-profile/.+", value):
            lines.append(f"{where}.Arn: {value!r} is not an instance profile ARN")
    return lines


def _key_problems(config: Mapping[str, Any]) -> list[str]:
    private_key = (config.get("auth") or {}).get("ssh_private_key")
    with_key = {name for name, t in _node_types(config).items() if (t.get("node_config") or {}).get("KeyName")}
    if private_key and len(with_key) < len(_node_types(config)):
        missing = sorted(set(_node_types(config)) - with_key)
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


def vcpu_needs(config: Mapping[str, Any]) -> dict[tuple[str, str], tuple[int, str, int]]:
    """Per EC2 vCPU quota (name, code): (the most vCPUs of its GPU instances that may run at once, the largest of those
    instance types, its vCPUs); quotas with no instance type of the cluster are left out.

    Worker types are counted largest first, each up to its max_workers, all of them up to the cluster's
    max_workers: the worst case the quota must allow. A GPU head counts once.
    """
    slots = int(config.get("max_workers", 0))
    found = []
    for name, node_type in _node_types(config).items():
        instance_type = str((node_type.get("node_config") or {}).get("InstanceType", ""))
        if instance_type in GPU_INSTANCES:
            found.append((GPU_INSTANCES[instance_type].vcpus, instance_type, name, node_type))
    needs: dict[tuple[str, str], tuple[int, str, int]] = {}
    for vcpus, instance_type, name, node_type in sorted(found, key=lambda row: row[:3], reverse=True):
        if name == _head(config):
            count = 1
        else:
            count = max(0, min(int(node_type.get("max_workers", slots)), slots))
            slots -= count
        quota = quota_of(instance_type) or ("?", "?")
        total, largest, largest_vcpus = needs.get(quota, (0, instance_type, vcpus))
        needs[quota] = (total + count * vcpus, largest, largest_vcpus)
    return needs
