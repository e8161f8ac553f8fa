"""The Ray Tune trainable: runs latune's epoch loop for one trial; no training logic lives here.

One ``tune.report`` per epoch with every metric (so every objective is in every report), and a
checkpoint of the full training state (model, optimizer, schedule, RNG, epoch) every
``checkpoint_every`` epochs and at the end. A retried or resumed trial restores the latest checkpoint
and continues with the next epoch exactly as an uninterrupted run would. After the last epoch the trial's
per-image test outcomes go into its trial folder as test_outcomes.npz (latune.core.outcomes), for the report.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from latune.config import from_flat, resolve
from latune.core.outcomes import write_outcomes
from latune.core.train import STATE_FILE, train

__all__ = ["train_trial", "STATE_FILE"]


def _limit_to_trial_share() -> None:
    """Match torch to the trial's resources: threads = its CPUs; CUDA memory capped to its GPU share.

    Ray gives a fractional-GPU trial a share of the device but neither caps its memory nor keeps
    torch from using every core, so packed trials would fight over both.
    """
    resources = tune.get_context().get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    share = float(resources.get("GPU", 0))
    if 0 < share < 1 and torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(share, torch.cuda.current_device())


def _scalar_or_list(value: Any) -> Any:
    """Ray results hold numbers and lists; NaN stays NaN (Optuna is told such a trial failed)."""
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else value


def train_trial(params: dict[str, Any], checkpoint_every: int = 1) -> None:
    """Function trainable: ``params`` is the trial's flat config (dotted keys)."""
    _limit_to_trial_share()
    config = resolve(from_flat(params))
    resume = None
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            resume = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)
    node_id = ray.get_runtime_context().get_node_id()  # where the trial ran (nodes of one host share node_ip)
    for epoch in train(config, resume=resume):
        metrics = {key: _scalar_or_list(value) for key, value in epoch.metrics.items()}
        metrics["node_id"] = node_id
        if epoch.test_outcomes:  # before the report: its checkpoint syncs the trial folder to storage
            write_outcomes(tune.get_context().get_trial_dir(), epoch.test_outcomes)
        if epoch.epoch % checkpoint_every == 0 or epoch.epoch == config.optim.epochs:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(epoch.state_dict(), os.path.join(folder, STATE_FILE))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(metrics)
