"""latune.cluster.shape: a cluster file of the wrong shape ends ``python -m latune.cluster check`` in one line naming
the field, exit status 2, never a traceback: the named malformed files (a string provider, a list of node types,
``GPU: null``, ...), and, for every field of SHAPE the filled cluster.yaml has, a value of another type there."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from latune.cli.cluster import main
from latune.cluster.preflight import installed_ray_version, problems
from latune.cluster.shape import SHAPE, _found, shape_problem

ROOT = Path(__file__).resolve().parents[1]
# the values a user fills in (tests/test_cluster_preflight.py's), so the file is otherwise right
FILLED = {"YOUR-REGISTRY": "210987654321.dkr.ecr.us-west-2.amazonaws.com", "YOUR-REGION": "us-west-2",
          "YOUR-ZONES": "us-west-2a,us-west-2b", "YOUR-AMI": "ami-0123456789abcdef0",
          "YOUR-SECURITY-GROUP": "sg-0123456789abcdef0", "YOUR-HEAD-PROFILE": "latune-head",
          "YOUR-WORKER-PROFILE": "latune-worker", "YOUR-BUCKET": "my-latune-bucket"}


def _filled() -> dict:
    text = (ROOT / "cluster.yaml").read_text()
    for marker, value in FILLED.items():
        text = text.replace(marker, value)
    return json.loads(json.dumps(yaml.safe_load(text)))  # aliases (*ami, ...) become separate objects


def _node(c: dict, name: str = "gpu_1x") -> dict:
    return c["available_node_types"][name]


def _set(path: str, value):
    """An edit that sets the dotted ``path`` (node types by name) to ``value``."""
    def edit(c: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            c = c[key]
        c[last] = value
    edit.__name__ = f"{path}={value!r}"
    return edit


MALFORMED = [
    (_set("provider", "aws"), "provider: a string ('aws'); write a mapping"),
    (lambda c: c.update(available_node_types=list(c["available_node_types"].values())),
     "available_node_types: a list; write a mapping"),
    (_set("available_node_types.gpu_1x.resources.GPU", None), "available_node_types.gpu_1x.resources.GPU: null; write "
                                                              "a number"),
    (_set("available_node_types.gpu_1x.resources", [4, 1]), "available_node_types.gpu_1x.resources: a list"),
    (_set("available_node_types.gpu_4x", None), "available_node_types.gpu_4x: null; write a mapping"),
    (_set("available_node_types.head.node_config", "m5.xlarge"), "available_node_types.head.node_config: a string"),
    (_set("available_node_types.head.node_config.SecurityGroupIds", "sg-0123456789abcdef0"),
     "SecurityGroupIds: a string ('sg-0123456789abcdef0'); write a list"),
    (_set("max_workers", "four"), "max_workers: a string ('four'); write a whole number"),
    (_set("max_workers", True), "max_workers: true; write a whole number"),
    (_set("docker", "my-image"), "docker: a string ('my-image'); write a mapping"),
    (_set("docker.run_options", "--ulimit nofile=65536:65536"), "docker.run_options: a string"),
    (_set("head_setup_commands", "echo hi"), "head_setup_commands: a string ('echo hi'); write a list"),
    (lambda c: c["head_setup_commands"].insert(1, {"echo": "x"}), "head_setup_commands[1]: a mapping; write a string"),
    (_set("provider.cache_stopped_nodes", "false"), "provider.cache_stopped_nodes: a string ('false'); write true or "
                                                    "false"),
    (_set("available_node_types.gpu_1x.node_config.IamInstanceProfile", "latune-worker"),
     "IamInstanceProfile: a string ('latune-worker'); write a mapping"),
    (_set("available_node_types.gpu_1x.node_config.BlockDeviceMappings", {"DeviceName": "/dev/sda1"}),
     "BlockDeviceMappings: a mapping; write a list"),
    (lambda c: _node(c)["node_config"]["BlockDeviceMappings"][0]["Ebs"].update(Encrypted="yes"),
     "BlockDeviceMappings[0].Ebs.Encrypted: a string ('yes'); write true or false"),
    (_set("available_node_types.head.node_config.MetadataOptions", ["required"]), "MetadataOptions: a list"),
    (_set("auth", "ubuntu"), "auth: a string ('ubuntu'); write a mapping"),
    (_set("head_node_type", 1), "head_node_type: a number (1); write a string"),
    (_set("provider.availability_zone", ["us-west-2a"]), "provider.availability_zone: a list; write a string"),
    (_set("available_node_types.gpu_1x.max_workers", 2.5), "available_node_types.gpu_1x.max_workers: a number (2.5)"),
]


@pytest.mark.parametrize("edit, expected", MALFORMED, ids=[edit.__name__ for edit, _ in MALFORMED])
def test_malformed_file_is_one_line_exit_2_no_traceback(edit, expected, tmp_path, capsys):
    config = _filled()
    edit(config)
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["check", str(path)]) == 2  # in-process: any exception would fail the test with its traceback
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: {path}: ") and expected in err, err


def test_a_malformed_file_through_the_real_command_line(tmp_path):
    path = tmp_path / "cluster.yaml"
    path.write_text("provider: aws\navailable_node_types: []\n")
    done = subprocess.run([sys.executable, "-m", "latune.cluster", "check", str(path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and done.stdout == "" and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [f"error: {path}: provider: a string ('aws'); write a mapping"]


_WRONG = {"a mapping": "x", "a list": "x", "a string": 5, "a number": "x", "a whole number": "x", "true or false": "x"}


def _fields_present() -> list[tuple[str, str, str]]:
    """(pattern, kind, the first concrete path) of each SHAPE entry that the filled cluster.yaml has."""
    config = _filled()
    found = []
    for pattern, kind in SHAPE:
        paths = [path for path, _ in _found(config, pattern)]
        if paths:
            found.append((pattern, kind, paths[0]))
    return found


@pytest.mark.parametrize("pattern, kind, path", _fields_present(), ids=[row[0] for row in _fields_present()])
def test_every_field_of_another_type_is_one_problem_naming_it(pattern, kind, path):
    config = _filled()
    parts = [int(p) if p.isdigit() else p for p in path.replace("[", ".").replace("]", "").split(".")]
    target = config
    for part in parts[:-1]:
        target = target[part]
    target[parts[-1]] = _WRONG.get(kind, "x")
    [found] = problems(config, ray_version=installed_ray_version())
    assert found.startswith(f"{path}: ") and found.endswith(f"; write {kind}"), found


def test_the_shipped_and_filled_files_have_the_shape():
    assert shape_problem(yaml.safe_load((ROOT / "cluster.yaml").read_text())) is None
    assert shape_problem(_filled()) is None
    assert shape_problem(["a", "list"]).startswith("the file is a list")
    assert len(_fields_present()) > 40  # the walk reaches into node types, lists of mappings and commands
