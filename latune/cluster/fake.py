"""cluster.yaml's cluster on this machine: the cluster file turned, by code, into one that a real ``ray up`` starts
here, with Ray's fake multi-node provider in place of AWS (latune.cluster.fake_node), so that the cluster launcher,
the head's setup and start commands (the MLflow server included) and the autoscaler all run for real.

What stays as in cluster.yaml: the head's setup and start commands, the node types with their ``resources`` (GPUs
become logical Ray resources: the fake workers have none physically), ``max_workers``, the idle timeout, the file
mounts and their filters. What goes or changes, each for a reason written where it happens below: Docker, the
EC2 launch parameters, SSH, the ECR login, ``pip install`` into the image, the worker nodes' commands, and the S3
bucket (a local folder). ``python -m latune.cluster fake-config`` (latune.cli.cluster) writes the file.
"""

from __future__ import annotations

import copy
import getpass
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from latune.cluster.clusterfile import PLACEHOLDER
from latune.errors import UserError

__all__ = ["DEFAULT_DIR", "PROVIDER", "BUCKET", "fake_config", "write_fake"]

DEFAULT_DIR = Path("/tmp/latune-fake")  # short: Ray's Unix sockets live under it (at most 107 characters)
PROVIDER = "latune.cluster.fake_node.FakeNodeProvider"
BUCKET = "s3://YOUR-BUCKET"  # cluster.yaml's bucket; here a folder of the fake cluster's own
_MAX_DIR = 40  # characters: DIR/tmp/ray/session_<date>_<pid>/sockets/plasma_store must stay under 107


def fake_config(template: Mapping[str, Any], *, root: Path, fake_dir: Path) -> dict[str, Any]:
    """``template`` (cluster.yaml, parsed) as a fake cluster on this machine whose every file (the head's home,
    its Ray session, the stand-in bucket) lies under ``fake_dir``; ``root``: the folder the template's relative
    file mounts are relative to (the repository root). Raises UserError when the template no longer has what the
    derivation replaces (then this module needs the same change as cluster.yaml)."""
    if len(str(fake_dir)) > _MAX_DIR:
        raise UserError(f"--dir: {fake_dir} is longer than {_MAX_DIR} characters; Ray's socket paths under it "
                        "would pass the 107-character limit of Unix sockets (use a short path under /tmp)")
    config = copy.deepcopy(dict(template))
    # No Docker: every fake node is a set of processes on this machine, running this checkout's virtual
    # environment (what the image holds on a real node). The head's ~/latune_state, a host folder mounted into
    # the container there (docker.head_run_options), is a folder of the head's home here.
    config.pop("docker", None)
    config["provider"] = {
        "type": "external", "module": PROVIDER, "fake_dir": str(fake_dir),
        # the settings of Ray's fake_multi_node/example.yaml: worker nodes are processes the autoscaler starts
        # itself (no setup, no SSH, no `ray start` on them), found by their node id
        "use_node_id_as_ip": True, "disable_node_updaters": True, "disable_launch_config_check": True}
    # No SSH: the head's commands run in a local shell (FakeNodeProvider's command runner).
    config["auth"] = {"ssh_user": getpass.getuser()}
    for node_type in config["available_node_types"].values():
        node_type["node_config"] = {}  # EC2 launch parameters (instance type, AMI, disks, profiles)
    config["file_mounts"] = {remote: str((root / local).resolve()) for remote, local in config["file_mounts"].items()}
    host_user = (template.get("auth") or {}).get("ssh_user", "ubuntu")
    config["initialization_commands"] = [_on_host(command, host_user)
                                         for command in template.get("initialization_commands") or []
                                         if "docker login" not in command]  # the ECR login: no image to pull
    # the image's job: the nodes share this checkout's environment, where latune is installed already
    config["setup_commands"] = [c for c in template.get("setup_commands") or [] if "pip install" not in c]
    config["head_setup_commands"] = _with_local_bucket(template.get("head_setup_commands") or [], fake_dir)
    # never run: Ray's fake provider starts worker nodes as processes of the head's autoscaler (see provider)
    config["worker_setup_commands"] = []
    config["worker_start_ray_commands"] = []
    left = sorted({match.group() for match in PLACEHOLDER.finditer(yaml.safe_dump(config))})
    if left:
        raise UserError(f"the fake cluster file would keep placeholders {', '.join(left)}: cluster.yaml has a new "
                        "value to fill in that latune.cluster.fake does not replace yet")
    return config


def _on_host(command: str, host_user: str) -> str:
    """An initialization command (run on the host, outside the container) with the host user's home written as
    ``~``: on the fake head the host's folder and the container's are one."""
    return command.replace(f"/home/{host_user}/", "~/")


def _with_local_bucket(commands: list[str], fake_dir: Path) -> list[str]:
    """The head's setup commands with the S3 bucket replaced by a folder of the fake cluster: every fake node
    sees this machine's files, so a folder is the storage all nodes share (what S3 is on AWS)."""
    if not any(BUCKET in command for command in commands):
        raise UserError(f"cluster.yaml's head_setup_commands no longer name {BUCKET}: update latune.cluster.fake")
    return [command.replace(BUCKET, str(fake_dir / "bucket")) for command in commands]


def write_fake(template: Path, out: Path | None = None, fake_dir: Path = DEFAULT_DIR) -> Path:
    """Write the fake cluster file derived from ``template`` to ``out`` (default: FAKE_DIR/cluster.yaml) and
    return its path. The file mounts are relative to the template's folder, as `ray up` reads them from there."""
    if not template.is_file():
        raise UserError(f"--from: {template}: no such file (run from the repository root, or give its path)")
    config = yaml.safe_load(template.read_text())
    if not isinstance(config, dict) or not isinstance(config.get("available_node_types"), dict):
        raise UserError(f"--from: {template}: not a cluster file with available_node_types")
    fake_dir = fake_dir.absolute()
    derived = fake_config(config, root=template.resolve().parent, fake_dir=fake_dir)
    out = out or fake_dir / "cluster.yaml"
    if out.resolve() == template.resolve():
        raise UserError(f"--out: {out} is the template itself; write another file")
    out.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# Generated from {template.resolve()} by `python -m latune.cluster fake-config`: do not edit; write\n"
              "# it again after a change of the template. `RAY_FAKE_CLUSTER=1 ray up` starts it on this machine.\n")
    out.write_text(header + yaml.safe_dump(derived, sort_keys=False, width=120))
    return out
