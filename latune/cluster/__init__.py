"""The Ray cluster launcher layer: what an autoscaling cluster can grow to (autoscaler); your copy of cluster.yaml
(local); the offline preflight of a cluster file (preflight, with its shape in shape, the node types against the
hardware in nodes and the EC2 instance types in instances, what the cluster exposes in exposure, and the reading of
the file in clusterfile); the IAM policies of its instance profiles (iam); the node doctor (doctor); and
cluster.yaml's cluster as a fake one on this machine (fake, its nodes in fake_node). The commands are
``python -m latune.cluster init|check|policy|doctor|fake-config`` (latune.cli.cluster)."""
