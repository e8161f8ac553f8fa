"""The IAM policies of cluster.yaml's two instance profiles, least privilege, as plain data.

Both roles (latune-head, latune-worker) get ``node``: the bucket's latune/ prefix and pulling the image, nothing
else. The head also gets ``autoscaler``: what Ray's autoscaler on it needs to start, tag, stop and terminate the
workers of this cluster, and no other instance: launches must carry the cluster's tag (Ray tags every instance
it launches ``ray-cluster-name: <cluster_name>`` in the RunInstances call), later calls are allowed only on
instances that carry it, all of it in the cluster's region, and the workers' role may be passed to EC2 only.
(Ray's own default head role, ray-autoscaler-v1, has full EC2 and S3 access instead.) ``trust`` lets EC2
instances take either role. ``python -m latune.cluster policy NAME`` prints one as JSON.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["POLICIES", "policy"]

POLICIES = ("trust", "node", "autoscaler")
_CLUSTER_TAG = "ray-cluster-name"  # ray.autoscaler.tags.TAG_RAY_CLUSTER_NAME
# What a launch also creates or uses, none of which Ray tags: the root volume, the network interface, a spot
# request; the subnet, security group, key pair and AMI it names.
_LAUNCH_USES = ("volume", "network-interface", "spot-instances-request", "subnet", "security-group", "key-pair")


def _statement(sid: str, actions: list[str] | str, resources: list[str] | str, **conditions: dict) -> dict[str, Any]:
    found: dict[str, Any] = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": resources}
    if conditions:
        found["Condition"] = conditions
    return found


def _autoscaler(account: str, region: str, cluster: str, worker_role: str) -> list[dict[str, Any]]:
    instances = f"arn:aws:ec2:{region}:{account}:instance/*"
    here = {"aws:RequestedRegion": region}
    return [
        _statement("LaunchOnlyInstancesTaggedForThisCluster", "ec2:RunInstances", instances,
                   StringEquals={**here, f"aws:RequestTag/{_CLUSTER_TAG}": cluster}),
        _statement("WhatALaunchCreatesOrUses", "ec2:RunInstances",
                   [*(f"arn:aws:ec2:{region}:{account}:{kind}/*" for kind in _LAUNCH_USES),
                    f"arn:aws:ec2:{region}::image/*"], StringEquals=here),
        _statement("TagInstancesAtLaunch", "ec2:CreateTags", instances,
                   StringEquals={**here, "ec2:CreateAction": "RunInstances"}),
        _statement("ManageOnlyThisClustersInstances",
                   ["ec2:CreateTags", "ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances"],
                   instances, StringEquals={**here, f"ec2:ResourceTag/{_CLUSTER_TAG}": cluster}),
        _statement("ReadTheRegion", "ec2:Describe*", "*", StringEquals=here),  # Describe* has no resource-level scope
        _statement("GiveWorkersTheirRole", "iam:PassRole", f"arn:aws:iam::{account}:role/{worker_role}",
                   StringEquals={"iam:PassedToService": "ec2.amazonaws.com"}),
    ]


def _node(account: str, region: str, bucket: str) -> list[dict[str, Any]]:
    return [
        _statement("TheBucket", ["s3:ListBucket", "s3:GetBucketLocation"], f"arn:aws:s3:::{bucket}"),
        _statement("ItsLatunePrefix", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                   f"arn:aws:s3:::{bucket}/latune/*"),
        _statement("PullTheImage", ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer",
                                    "ecr:BatchCheckLayerAvailability"],
                   f"arn:aws:ecr:{region}:{account}:repository/latune"),
        _statement("LogInToEcr", "ecr:GetAuthorizationToken", "*"),  # account-wide by design: no resource scope
    ]


# policy -> the arguments it is made from
_ARGUMENTS = {"trust": (), "node": ("account", "region", "bucket"),
              "autoscaler": ("account", "region", "cluster_name", "worker_role")}
# argument -> (its form, what is allowed)
_FORMS = {"account": (r"\d{12}", "12 digits"),
          "region": (r"[a-z]{2}(-gov)?-[a-z]+-\d+", "an AWS region name, like us-west-2"),
          "bucket": (r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", "an S3 bucket name"),
          "cluster_name": (r"[A-Za-z0-9_.-]+", "a cluster name (letters, digits, _ . -)"),
          "worker_role": (r"[\w+=,.@-]{1,64}", "an IAM role name")}


def policy(name: str, *, account: str = "", region: str = "", bucket: str = "", cluster_name: str = "latune",
           worker_role: str = "latune-worker") -> dict[str, Any]:
    """The policy document ``name`` (one of POLICIES) for AWS account ``account``, region ``region``, S3 bucket
    ``bucket``, the cluster named ``cluster_name`` (the cluster file's cluster_name) whose workers run as
    ``worker_role``. Raises ValueError (one line naming the argument and what is allowed) for an unknown policy or
    a malformed value of an argument it is made from."""
    if name not in _ARGUMENTS:
        raise ValueError(f"policy: {name!r} is not one of {', '.join(POLICIES)}")
    given = {"account": account, "region": region, "bucket": bucket, "cluster_name": cluster_name,
             "worker_role": worker_role}
    for argument in _ARGUMENTS[name]:
        form, allowed = _FORMS[argument]
        if not re.fullmatch(form, given[argument]):
            raise ValueError(f"{argument}: {given[argument]!r} is not {allowed}")
    if name == "trust":
        statements = [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}]
    elif name == "node":
        statements = _node(account, region, bucket)
    else:
        statements = _autoscaler(account, region, cluster_name, worker_role)
    return {"Version": "2012-10-17", "Statement": statements}
