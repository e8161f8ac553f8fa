"""The Ray Tune trainable: runs latune's epoch loop for one trial; no training logic lives here.

One ``tune.report`` per epoch with every metric (so every objective is in every report), and a
checkpoint of the full training state (model, optimizer, schedule, RNG, epoch) every
``checkpoint_every`` epochs and at the end. A retried or resumed trial restores the latest checkpoint
and continues with the next epoch exactly as an uninterrupted run would. After the last epoch the trial's
per-image test outcomes go into its trial folder as test_outcomes.npz (latune.core.outcomes), for the report.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from latune.config import from_flat, resolve
from latune.core.outcomes import write_outcomes
from latune.core.train import STATE_FILE, train
from latune.errors import ConfigError

__all__ = ["train_trial", "memory_fraction", "STATE_FILE"]

_GIB = 2**30
# A CUDA context (driver, runtime, cuBLAS/cuDNN handles) takes 0.3-0.6 GB outside torch's allocator. Measured on the
# device right after this process made its own, "in use" also holds what other trials on the GPU use, so the
# measure is kept within what a context takes: never less than the smallest, never more than the largest seen.
_CONTEXT_BYTES = (0.3 * _GIB, 1.0 * _GIB)
_MIN_ALLOCATOR_BYTES = 0.5 * _GIB  # the least a trial's tensors may have: below it no model of latune trains


def memory_fraction(share: float, total: int, in_use: int) -> float:
    """The fraction of a ``total``-byte GPU to cap this process's torch allocator at, for a trial holding ``share``
    (0 < share < 1) of the device: the share less this process's CUDA context, which the cap does not cover (four
    trials capped at 0.25 each would otherwise overfill the device by four contexts). ``in_use``: bytes in use on
    the device (total - free) right after this process made its context, kept within _CONTEXT_BYTES.

    Raises ConfigError when the share cannot hold the context and _MIN_ALLOCATOR_BYTES.
    """
    context = min(max(in_use, _CONTEXT_BYTES[0]), _CONTEXT_BYTES[1])
    fraction = share - context / total
    if fraction * total < _MIN_ALLOCATOR_BYTES:
        raise ConfigError(f"resources.gpu: a share of {share:g} of this {total / _GIB:.1f} GB GPU leaves "
                          f"{max(fraction, 0) * total / _GIB:.2f} GB for tensors after the CUDA context "
                          f"({context / _GIB:.2f} GB); at least {_MIN_ALLOCATOR_BYTES / _GIB:.1f} GB is needed: "
                          f"ask for at least {math.ceil((context + _MIN_ALLOCATOR_BYTES) / total * 100) / 100:g} "
                          "(--gpu)")
    return fraction


def _node() -> str:
    return f"node {ray.get_runtime_context().get_node_id()} ({socket.gethostname()})"


def _limit_to_trial_share(device: str) -> None:
    """Match torch to the trial's resources: threads = its CPUs; CUDA memory capped to its GPU share, less the
    CUDA context. ``device``: the trial's config key device.

    Ray gives a fractional-GPU trial a share of the device but neither caps its memory nor keeps torch from using
    every core, so packed trials would fight over both. A trial that holds a GPU share while torch sees no CUDA
    (a driver fault, a container started without --gpus) would train on one CPU core for hours: it stops here,
    naming the node, unless its config asks for the CPU.
    """
    resources = tune.get_context().get_trial_resources().required_resources
    torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    share = float(resources.get("GPU", 0))
    if share <= 0 or device == "cpu":
        return
    if not torch.cuda.is_available():
        raise RuntimeError(f"the trial holds {share:g} GPU on {_node()}, but torch sees no CUDA there (torch "
                           f"{torch.__version__}, built for CUDA {torch.version.cuda}, CUDA_VISIBLE_DEVICES="
                           f"{os.environ.get('CUDA_VISIBLE_DEVICES', '')!r}): a driver fault or a container without "
                           "--gpus; run `python -m latune.cluster doctor` on that node")
    if share < 1:
        index = torch.cuda.current_device()
        free, device_total = torch.cuda.mem_get_info(index)  # makes this process's CUDA context first
        total = torch.cuda.get_device_properties(index).total_memory  # what the allocator's fraction is of
        torch.cuda.set_per_process_memory_fraction(memory_fraction(share, total, device_total - free), index)


def _scalar_or_list(value: Any) -> Any:
    """Ray results hold numbers and lists; NaN stays NaN (Optuna is told such a trial failed)."""
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else value


def train_trial(params: dict[str, Any], checkpoint_every: int = 1) -> None:
    """Function trainable: ``params`` is the trial's flat config (dotted keys)."""
    config = resolve(from_flat(params))
    _limit_to_trial_share(config.device)
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
