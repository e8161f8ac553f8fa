"""latune.cluster.local and ``python -m latune.cluster init``: your copy of cluster.yaml is written beside it as
cluster.local.yaml (ignored by git) with your values, passes the preflight, and the tracked template is never
touched: not by the flow, not when asked to write over it, not when a value is malformed."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from latune.cli.cluster import main
from latune.cluster.clusterfile import PLACEHOLDER
from latune.cluster.local import LOCAL_NAME, LocalValues, fill

ROOT = Path(__file__).resolve().parents[1]
VALUES = {"--account": "210987654321", "--region": "us-west-2", "--ami": "ami-0123456789abcdef0",
          "--security-group": "sg-0123456789abcdef0", "--bucket": "my-latune-bucket"}


def _flags(**changes: str) -> list[str]:
    given = {**VALUES, **{f"--{k.replace('_', '-')}": v for k, v in changes.items()}}
    return [part for flag, value in given.items() for part in (flag, value)]


@pytest.fixture
def checkout(tmp_path) -> Path:
    """The files `init` and `check` read, copied: a checkout of the repository in miniature."""
    for name in ("cluster.yaml", "constraints.txt", "Dockerfile"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    return tmp_path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_init_writes_a_checked_copy_and_never_touches_the_template(checkout, monkeypatch, capsys):
    tracked = _digest(ROOT / "cluster.yaml")
    template = _digest(checkout / "cluster.yaml")
    monkeypatch.chdir(checkout)
    assert main(["init", *_flags()]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"wrote {LOCAL_NAME}" in out and "no problems found" in out and f"ray up {LOCAL_NAME}" in out
    copy = yaml.safe_load((checkout / LOCAL_NAME).read_text())
    assert copy["provider"]["region"] == "us-west-2" and copy["provider"]["availability_zone"] == \
        "us-west-2a,us-west-2b,us-west-2c"
    assert copy["docker"]["image"].startswith("210987654321.dkr.ecr.us-west-2.amazonaws.com/latune:")
    assert "YOUR-" not in "\n".join(line for line in (checkout / LOCAL_NAME).read_text().splitlines()
                                    if not line.lstrip().startswith("#"))
    assert _digest(checkout / "cluster.yaml") == template and _digest(ROOT / "cluster.yaml") == tracked
    # again: refused without --force, the copy kept; with --force written again
    assert main(["init", *_flags(bucket="other-bucket")]) == 2
    assert "exists; give --force" in capsys.readouterr().err
    assert "my-latune-bucket" in (checkout / LOCAL_NAME).read_text()
    assert main(["init", *_flags(bucket="other-bucket"), "--force"]) == 0
    assert "other-bucket" in (checkout / LOCAL_NAME).read_text()
    assert _digest(checkout / "cluster.yaml") == template


def test_init_refuses_to_write_over_the_template(checkout, capsys):
    template = _digest(checkout / "cluster.yaml")
    assert main(["init", *_flags(), "--from", str(checkout / "cluster.yaml"), "--out", str(checkout / "cluster.yaml"),
                 "--force"]) == 2
    assert "is the template itself" in capsys.readouterr().err and _digest(checkout / "cluster.yaml") == template


@pytest.mark.parametrize("flag, value, message", [
    ("account", "12345", "--account: '12345' is not 12 digits"),
    ("account", "123456789012", "AWS's example account id"),
    ("region", "us-west", "--region: 'us-west' is not an AWS region name"),
    ("ami", "ami-123", "--ami: 'ami-123' is not an AMI id"),
    ("security_group", "latune", "--security-group: 'latune' is not a security group id"),
    ("bucket", "My_Bucket", "--bucket: 'My_Bucket' is not an S3 bucket name"),
    ("zones", "us-west-2a,eu-west-1b", "--zones: eu-west-1b not zones of us-west-2"),
    ("key", "my key", "--key: 'my key' is not an EC2 key pair name")])
def test_init_names_the_flag_of_a_malformed_value_and_writes_nothing(checkout, capsys, flag, value, message):
    assert main(["init", *_flags(**{flag: value}), "--from", str(checkout / "cluster.yaml")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (checkout / LOCAL_NAME).exists()


def test_init_with_a_key_pair_sets_it_in_every_node_type(checkout, capsys):
    assert main(["init", *_flags(key="my-key"), "--from", str(checkout / "cluster.yaml")]) == 0, capsys.readouterr()
    copy = yaml.safe_load((checkout / LOCAL_NAME).read_text())
    assert copy["auth"]["ssh_private_key"] == "~/.ssh/my-key.pem"
    assert {t["node_config"]["KeyName"] for t in copy["available_node_types"].values()} == {"my-key"}


def test_fill_leaves_no_placeholder_but_an_unused_key_in_a_comment():
    text = fill((ROOT / "cluster.yaml").read_text(), LocalValues(
        account="210987654321", region="eu-west-1", ami="ami-0123456789abcdef0", security_group="sg-0123456789abcdef0",
        bucket="my-latune-bucket", registry="210987654321.dkr.ecr.eu-central-1.amazonaws.com"))
    assert "eu-west-1a,eu-west-1b,eu-west-1c" in text and "dkr.ecr.eu-central-1" in text
    left = [(m, line) for line in text.splitlines() for m in PLACEHOLDER.findall(line)]
    assert left and all(marker == "YOUR-KEY" and line.lstrip().startswith("#") for marker, line in left)


def test_the_copy_is_ignored_by_git():
    done = subprocess.run(["git", "check-ignore", "--no-index", "-q", LOCAL_NAME], cwd=ROOT)
    assert done.returncode == 0, f"{LOCAL_NAME} is not in .gitignore"


def test_init_through_the_real_command_line(checkout):
    done = subprocess.run([sys.executable, "-m", "latune.cluster", "init", *_flags()], cwd=checkout,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (checkout / LOCAL_NAME).is_file() and _digest(checkout / "cluster.yaml") == _digest(ROOT / "cluster.yaml")
