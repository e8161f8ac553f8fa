"""The fake cluster on this machine: latune.cluster.fake (cluster.yaml turned by code into a cluster file that `ray
up` starts here; so that the derived file never drifts from the template, it must keep its head commands, node
types and resources) and the parts of latune.cluster.fake_node that need no running cluster: what the head's file
mounts copy, and a stop that ends only the processes of its own cluster. The whole round, `ray up` to `ray down`,
is tests/test_cluster_fake_up.py (slow)."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from latune.cluster.fake import BUCKET, PROVIDER, fake_config
from latune.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
FAKE_DIR = Path("/tmp/latune-fake-test")


def _shipped() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _derived(template: dict | None = None) -> dict:
    return fake_config(template or _shipped(), root=ROOT, fake_dir=FAKE_DIR)


def test_the_fake_cluster_keeps_the_heads_commands_node_types_and_resources():
    shipped, fake = _shipped(), _derived()
    assert fake["head_start_ray_commands"] == shipped["head_start_ray_commands"]  # verbatim, MLflow server included
    assert fake["head_setup_commands"] == [c.replace(BUCKET, f"{FAKE_DIR}/bucket") for c in shipped["head_setup_commands"]]
    assert fake["available_node_types"].keys() == shipped["available_node_types"].keys()
    for name, node_type in shipped["available_node_types"].items():
        kept = {k: v for k, v in node_type.items() if k != "node_config"}
        assert {k: v for k, v in fake["available_node_types"][name].items() if k != "node_config"} == kept, name
        assert fake["available_node_types"][name]["node_config"] == {}  # EC2's launch parameters
    for key in ("cluster_name", "max_workers", "idle_timeout_minutes", "upscaling_speed", "head_node_type",
                "rsync_exclude", "rsync_filter", "file_mounts_sync_continuously", "cluster_synced_files"):
        assert fake.get(key) == shipped.get(key), key
    assert fake["file_mounts"] == {remote: str(ROOT) for remote in shipped["file_mounts"]}
    # gone, each for its reason (latune.cluster.fake): Docker, SSH, ECR login, pip into the image, worker commands
    assert "docker" not in fake and set(fake["auth"]) == {"ssh_user"}
    assert fake["initialization_commands"] == ["mkdir -p ~/latune_state"]
    assert fake["setup_commands"] == fake["worker_setup_commands"] == fake["worker_start_ray_commands"] == []
    assert "YOUR-" not in yaml.safe_dump(fake) and "s3://" not in yaml.safe_dump(fake)


def test_ray_up_accepts_the_fake_cluster_file_and_its_provider_is_rays_fake_one():
    from ray.autoscaler._private.fake_multi_node.node_provider import FakeMultiNodeProvider
    from ray.autoscaler._private.util import prepare_config, validate_config

    from latune.cluster.fake_node import FakeNodeProvider

    fake = _derived()
    validate_config(prepare_config(copy.deepcopy(fake)))  # what `ray up` runs first
    assert fake["provider"]["type"] == "external" and fake["provider"]["module"] == PROVIDER
    assert issubclass(FakeNodeProvider, FakeMultiNodeProvider)
    assert fake["provider"]["disable_node_updaters"] and fake["provider"]["use_node_id_as_ip"]


def test_the_fake_cluster_follows_edits_of_the_template():
    template = _shipped()
    template["available_node_types"]["gpu_1x"]["resources"] = {"CPU": 8, "GPU": 2}
    template["available_node_types"]["gpu_8x"] = {"min_workers": 0, "max_workers": 1,
                                                  "resources": {"CPU": 96, "GPU": 8}, "node_config": {"X": 1}}
    template["head_start_ray_commands"].append("echo started")
    fake = _derived(template)
    assert fake["available_node_types"]["gpu_1x"]["resources"] == {"CPU": 8, "GPU": 2}
    assert fake["available_node_types"]["gpu_8x"]["resources"] == {"CPU": 96, "GPU": 8}
    assert fake["head_start_ray_commands"][-1] == "echo started"


@pytest.mark.parametrize(("edit", "match"), [
    (lambda c: c["head_setup_commands"].append("echo 'export TOKEN=YOUR-TOKEN' >> ~/latune_env.sh"),
     "placeholders YOUR-TOKEN"),
    (lambda c: c.__setitem__("head_setup_commands", [x.replace(BUCKET, "s3://b") for x in c["head_setup_commands"]]),
     "no longer name s3://YOUR-BUCKET"),
])
def test_the_fake_cluster_refuses_a_template_it_cannot_turn_into_one(edit, match):
    template = _shipped()
    edit(template)
    with pytest.raises(UserError, match=match):
        _derived(template)


def test_fake_config_command_writes_the_file_and_refuses_a_long_folder(tmp_path):
    out = tmp_path / "fake.yaml"
    done = subprocess.run([sys.executable, "-m", "latune.cluster", "fake-config", "--dir", str(FAKE_DIR), "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(out.read_text()) == _derived() and f"ray up -y {out}" in done.stdout
    long = subprocess.run([sys.executable, "-m", "latune.cluster", "fake-config", "--dir", f"/tmp/{'x' * 40}"],
                          cwd=ROOT, capture_output=True, text=True)
    assert long.returncode == 2 and long.stderr.startswith("error: --dir:") and len(long.stderr.splitlines()) == 1


def test_the_heads_file_mount_copies_what_rays_rsync_would(tmp_path):
    from latune.cluster.fake_node import _listed

    repo = tmp_path / "repo"
    for name in ("latune/a.py", "runs/x/result.json", ".venv/bin/python", "notes.txt", ".gitignore"):
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text("x")
    (repo / ".gitignore").write_text("runs/\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "add", "latune/a.py", ".gitignore"], check=True)
    options = {"rsync_exclude": _shipped()["rsync_exclude"], "rsync_filter": [".gitignore"]}
    # tracked and untracked files; not .gitignore's runs/, not rsync_exclude's .venv, not .git
    assert sorted(_listed(repo, options)) == [".gitignore", "latune/a.py", "notes.txt"]


def test_stop_node_ends_its_clusters_processes_and_no_other(tmp_path):
    from latune.cluster.fake_node import MARK, node_processes, stop_node

    def start(command: str, mark: str | None) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != MARK}
        return subprocess.Popen(["bash", "-c", command], env={**env, **({MARK: mark} if mark else {})})

    ours, theirs = str(tmp_path / "ours"), str(tmp_path / "theirs")
    # one of ours runs a child without the mark (as Ray's renamed workers show none): a descendant is ours too
    marked = start(f"env -u {MARK} sleep 60 & wait", ours)
    other, unmarked = start("sleep 60", theirs), start("sleep 60", None)
    try:
        deadline = time.monotonic() + 10
        while len(node_processes(ours)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        found = node_processes(ours)
        assert {p.name() for p in found} == {"bash", "sleep"} and len(found) == 2
        assert stop_node(ours, ray_only=True, grace_s=1) == 0  # `ray stop`: no Ray process among them
        assert stop_node(ours, ray_only=False, grace_s=1) == 2
        assert marked.wait(timeout=5) is not None and not node_processes(ours)
        assert other.poll() is None and unmarked.poll() is None  # another cluster's, and the machine's
    finally:
        for process in (marked, other, unmarked):
            process.kill()
            process.wait()
