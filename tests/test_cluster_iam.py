"""latune.cluster.iam and ``python -m latune.cluster policy``: the head's autoscaler may launch only instances tagged
with the cluster's name, and start, stop, terminate and tag only those, all in the cluster's region; it may pass
only the workers' role, only to EC2; nothing mutating is granted on "*"; the tag Ray puts on what it launches is
the one the conditions name; bad values end in one line naming the flag."""

from __future__ import annotations

import json

import pytest

from latune.cli.cluster import main
from latune.cluster.iam import POLICIES, policy

ARGS = {"account": "210987654321", "region": "us-west-2", "bucket": "my-latune-bucket"}
MUTATING = {"ec2:RunInstances", "ec2:CreateTags", "ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances"}


def _actions(statement: dict) -> set[str]:
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


def _resources(statement: dict) -> list[str]:
    resources = statement["Resource"]
    return [resources] if isinstance(resources, str) else list(resources)


def test_autoscaler_is_scoped_to_the_clusters_tag_and_region():
    statements = policy("autoscaler", **ARGS, cluster_name="my-cluster")["Statement"]
    for statement in statements:
        if _actions(statement) & MUTATING:
            assert "*" not in _resources(statement), statement
            assert statement["Condition"]["StringEquals"]["aws:RequestedRegion"] == "us-west-2", statement
            assert all(":us-west-2:" in r or ":us-west-2::image/" in r for r in _resources(statement)), statement
    by_sid = {s["Sid"]: s for s in statements}
    launch = by_sid["LaunchOnlyInstancesTaggedForThisCluster"]
    assert launch["Condition"]["StringEquals"]["aws:RequestTag/ray-cluster-name"] == "my-cluster"
    assert _resources(launch) == ["arn:aws:ec2:us-west-2:210987654321:instance/*"]
    manage = by_sid["ManageOnlyThisClustersInstances"]
    assert _actions(manage) == MUTATING - {"ec2:RunInstances"}
    assert manage["Condition"]["StringEquals"]["ec2:ResourceTag/ray-cluster-name"] == "my-cluster"
    assert by_sid["TagInstancesAtLaunch"]["Condition"]["StringEquals"]["ec2:CreateAction"] == "RunInstances"
    # what else a launch creates or uses carries no cluster tag (Ray tags the instance only): region-scoped
    others = _resources(by_sid["WhatALaunchCreatesOrUses"])
    assert not any(r.endswith(":instance/*") for r in others) and any("spot-instances-request" in r for r in others)
    assert by_sid["ReadTheRegion"]["Condition"]["StringEquals"]["aws:RequestedRegion"] == "us-west-2"


def test_the_workers_role_may_be_passed_to_ec2_only():
    [passing] = [s for s in policy("autoscaler", **ARGS)["Statement"] if "iam:PassRole" in _actions(s)]
    assert _resources(passing) == ["arn:aws:iam::210987654321:role/latune-worker"]
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}


def test_the_condition_tag_is_the_one_ray_puts_on_what_it_launches():
    from ray.autoscaler.tags import TAG_RAY_CLUSTER_NAME

    text = json.dumps(policy("autoscaler", **ARGS))
    assert f"aws:RequestTag/{TAG_RAY_CLUSTER_NAME}" in text and f"ec2:ResourceTag/{TAG_RAY_CLUSTER_NAME}" in text


def test_node_policy_reaches_the_buckets_latune_prefix_and_the_image_only():
    statements = policy("node", **ARGS)["Statement"]
    resources = {r for s in statements for r in _resources(s)}
    assert resources == {"arn:aws:s3:::my-latune-bucket", "arn:aws:s3:::my-latune-bucket/latune/*",
                         "arn:aws:ecr:us-west-2:210987654321:repository/latune", "*"}
    [anywhere] = [s for s in statements if _resources(s) == ["*"]]
    assert _actions(anywhere) == {"ecr:GetAuthorizationToken"}  # the one ECR call without resource-level scope


def test_trust_lets_ec2_take_the_role():
    [statement] = policy("trust")["Statement"]
    assert statement["Principal"] == {"Service": "ec2.amazonaws.com"} and statement["Action"] == "sts:AssumeRole"


@pytest.mark.parametrize("name", POLICIES)
def test_policy_command_prints_valid_json(name, capsys):
    assert main(["policy", name, "--account", ARGS["account"], "--region", ARGS["region"], "--bucket",
                 ARGS["bucket"]]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document == policy(name, **ARGS)


@pytest.mark.parametrize("flags, message", [
    (["autoscaler", "--account", "123", "--region", "us-west-2"], "error: --account: '123' is not 12 digits"),
    (["node", "--account", "210987654321", "--region", "us-west-2"], "error: --bucket: '' is not an S3 bucket name"),
    (["autoscaler", "--account", "210987654321", "--region", "us-west-2", "--cluster-name", "a b"],
     "error: --cluster-name: 'a b' is not a cluster name")])
def test_policy_command_names_the_flag_of_a_bad_value(flags, message, capsys, monkeypatch):
    for name in ("AWS_ACCOUNT_ID", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    assert main(["policy", *flags]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(message), err
