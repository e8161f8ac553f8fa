"""The Ray cluster launcher layer: what an autoscaling cluster can grow to (autoscaler), the offline preflight of
cluster.yaml (preflight, with the GPU instance types in instances) and the node doctor (doctor); the commands are
``python -m latune.cluster check|doctor`` (latune.cli.cluster)."""
