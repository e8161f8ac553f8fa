"""The Ray cluster launcher layer: what an autoscaling cluster can grow to (autoscaler); your copy of cluster.yaml
(local); the offline preflight of a cluster file (preflight, with its shape in shape, the node types against the
hardware in nodes and the EC2 instance types in instances, what the cluster exposes in exposure, and the reading of
the file in clusterfile); the IAM policies of its instance profiles (iam); and the node doctor (doctor). The
commands are ``python -m latune.cluster init|check|policy|doctor`` (latune.cli.cluster)."""
