"""The training core: data, transforms, labels, attacks, models, metrics, corruptions, the train loop,
evaluation and the stronger-attack audit. Pure PyTorch (torchattacks in audit): no Ray, MLflow, Optuna,
pandas or command line; it uses only latune.config, latune.errors and latune.registry."""
