"""Your copy of the cluster file: the tracked cluster.yaml with your account's values in place of its YOUR-...
placeholders, written to cluster.local.yaml (which git ignores), so the template is never edited, a ``git pull``
never conflicts with your values, and none of them is committed by mistake.

``python -m latune.cluster init`` (latune.cli.cluster) writes it; ``check``, ``ray up`` and the rest then take its
path. The values are checked for their form here (an AMI id is ami-..., ...); the whole file is checked by the
preflight afterwards.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from latune.cluster.clusterfile import EXAMPLE_ACCOUNT, PLACEHOLDER
from latune.cluster.preflight import s3_uri_problem
from latune.errors import UserError

__all__ = ["LocalValues", "LOCAL_NAME", "fill", "write_local"]

LOCAL_NAME = "cluster.local.yaml"  # beside the template; listed in .gitignore


@dataclass(frozen=True)
class LocalValues:
    """What the template leaves to fill in; each field's flag is --field-name (latune.cli.cluster)."""

    account: str  # the AWS account id, 12 digits
    region: str  # the AWS region, e.g. us-west-2
    ami: str  # the Deep Learning Base OSS Nvidia Driver GPU AMI of the region, ami-...
    security_group: str  # the security group made as in the docs, sg-...
    bucket: str  # the S3 bucket name (sweeps keep everything under s3://BUCKET/latune/)
    zones: str = ""  # availability zones, comma-separated; "" = the region's a, b and c
    head_profile: str = "latune-head"  # the head's instance profile name
    worker_profile: str = "latune-worker"  # the workers' instance profile name
    registry: str = ""  # the ECR registry; "" = ACCOUNT.dkr.ecr.REGION.amazonaws.com
    key: str = ""  # an EC2 key pair name for SSH; "" = the key pair Ray makes (ray-autoscaler_REGION)

    def resolved(self) -> LocalValues:
        """The defaults that depend on other values, filled in."""
        zones = self.zones or ",".join(f"{self.region}{letter}" for letter in "abc")
        registry = self.registry or f"{self.account}.dkr.ecr.{self.region}.amazonaws.com"
        return LocalValues(**{**{f.name: getattr(self, f.name) for f in fields(self)}, "zones": zones,
                              "registry": registry})


# field -> (form, what is allowed), checked on resolved values
_FORMS: dict[str, tuple[str, str]] = {
    "account": (r"\d{12}", "12 digits (aws sts get-caller-identity --query Account)"),
    "region": (r"[a-z]{2}(-gov)?-[a-z]+-\d+", "an AWS region name, like us-west-2"),
    "ami": (r"ami-[0-9a-f]{8}([0-9a-f]{9})?", "an AMI id: ami- and 8 or 17 hex digits"),
    "security_group": (r"sg-[0-9a-f]{8}([0-9a-f]{9})?", "a security group id: sg- and 8 or 17 hex digits"),
    "zones": (r"[a-z0-9-]+(,[a-z0-9-]+)*", "zone names, comma-separated, like us-west-2a,us-west-2b"),
    "head_profile": (r"[\w+=,.@-]{1,128}", "an instance profile name"),
    "worker_profile": (r"[\w+=,.@-]{1,128}", "an instance profile name"),
    "registry": (r"\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com",
                 "an ECR registry, ACCOUNT.dkr.ecr.REGION.amazonaws.com"),
    "key": (r"([\w.@+=,-]{1,255})?", "an EC2 key pair name (letters, digits, . @ + = , - _)"),
}
# placeholder -> the field it is filled with
_MARKERS = {"YOUR-REGION": "region", "YOUR-ZONES": "zones", "YOUR-AMI": "ami", "YOUR-SECURITY-GROUP": "security_group",
            "YOUR-HEAD-PROFILE": "head_profile", "YOUR-WORKER-PROFILE": "worker_profile", "YOUR-REGISTRY": "registry",
            "YOUR-BUCKET": "bucket", "YOUR-KEY": "key"}


def _check_values(values: LocalValues) -> None:
    for field, (form, allowed) in _FORMS.items():
        value = getattr(values, field)
        if not re.fullmatch(form, value):
            raise UserError(f"--{field.replace('_', '-')}: {value!r} is not {allowed}")
    if values.account == EXAMPLE_ACCOUNT:
        raise UserError(f"--account: {EXAMPLE_ACCOUNT} is AWS's example account id; write yours")
    wrong = [zone for zone in values.zones.split(",") if not zone.startswith(values.region)]
    if wrong:
        raise UserError(f"--zones: {', '.join(wrong)} not zones of {values.region} (like {values.region}a)")
    problem = s3_uri_problem(f"s3://{values.bucket}/latune")
    if problem:
        raise UserError(f"--bucket: {problem}")


def _with_key(text: str, key: str) -> str:
    """The template with auth.ssh_private_key and every node type's KeyName set to ``key`` (the template has both
    commented out or absent: Ray's own key pair is the default)."""
    text = re.sub(r"^(\s*)# (ssh_private_key: )~/\.ssh/YOUR-KEY\.pem$", rf"\g<1>\g<2>~/.ssh/{key}.pem", text,
                  flags=re.M)
    text = re.sub(r"^(\s+)(InstanceType: .*)$", rf"\g<1>\g<2>\n\g<1>KeyName: {key}", text, flags=re.M)
    config = yaml.safe_load(text) or {}
    types = config.get("available_node_types") or {}
    if (config.get("auth") or {}).get("ssh_private_key") != f"~/.ssh/{key}.pem" or any(
            (t.get("node_config") or {}).get("KeyName") != key for t in types.values()):
        raise UserError("--key: the template's layout changed (no `# ssh_private_key:` line, or an InstanceType "
                        "outside node_config); write auth.ssh_private_key and each KeyName in your copy by hand")
    return text


def fill(template: str, values: LocalValues) -> str:
    """``template`` (cluster.yaml's text) with each YOUR-... placeholder replaced by its value (comments included,
    so the commands written there are ready to run). Raises UserError naming the flag of a malformed value."""
    values = values.resolved()
    _check_values(values)

    def value(match: re.Match) -> str:  # a marker with no value (YOUR-KEY without --key) stays, in a comment
        field = _MARKERS.get(match.group())
        return (getattr(values, field) if field else "") or match.group()

    return PLACEHOLDER.sub(value, _with_key(template, values.key) if values.key else template)


def write_local(template: Path, values: LocalValues, out: Path | None = None, force: bool = False) -> Path:
    """Write fill(template's text) to ``out`` (default: cluster.local.yaml beside the template) and return its
    path. Refuses to write over the template itself, and over an existing file unless ``force``."""
    out = out or template.with_name(LOCAL_NAME)
    if not template.is_file():
        raise UserError(f"--from: {template}: no such file (run from the repository root, or give the template's path)")
    if out.resolve() == template.resolve():
        raise UserError(f"--out: {out} is the template itself; the template is never edited: write another file")
    text = fill(template.read_text(), values)
    if out.exists() and not force:
        raise UserError(f"--out: {out} exists; give --force to write over it (your values there are lost)")
    partial = out.with_name(f".{out.name}.partial")
    partial.write_text(text)
    partial.replace(out)  # never a half-written file under the real name
    return out
