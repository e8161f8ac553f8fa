"""PGD adversarial training with label augmentation: the epoch loop.

``train(config)`` yields one ``Epoch`` per epoch (metrics plus a way to snapshot the full training state), so the
Ray Tune trainable can report and checkpoint each epoch and resume from a snapshot (saved as ``STATE_FILE``).
Each batch goes through the same named steps, in the paper's order: standard augmentation, label augmentation,
the PGD attack, the optimiser step; each epoch ends with the evaluations that are due. The single-run command
line is latune.cli.train (``python -m latune.train``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from latune.config import Config, ConfigError, resolve, to_flat
from latune.core import attacks, labels, transforms
from latune.core.data import DataBundle, augment_batch, iterate_batches, load_data
from latune.core.evaluate import CorruptionFiles, EvalSettings, evaluate, evaluate_corruptions
from latune.core.models import build_model
from latune.registry import CORRUPTION_SUMMARY_KEYS, corruption_names

__all__ = ["Epoch", "RunSetup", "STATE_FILE", "setup", "train", "pick_device"]

# file name of a checkpoint of Epoch.state_dict() (torch.save): the Tune trainable writes it, the audit reads it
STATE_FILE = "state.pt"


@dataclass
class Epoch:
    """What the loop yields after each epoch."""

    epoch: int  # 1-based number of the epoch just finished
    metrics: dict[str, Any]  # train_*, timing, and (when evaluated) validation and, at the end, test_* metrics
    state_dict: Callable[[], dict[str, Any]]  # snapshot to resume from (model, optimizer, schedule, RNG, epoch)
    model: nn.Module  # the model being trained (for checkpoints); do not modify
    test_outcomes: dict[str, Any] | None = None  # last epoch: per-image test outcomes (latune.core.outcomes)


@dataclass
class RunSetup:
    """Everything a run derives from its config before training: data, label layout, model."""

    config: Config  # resolved (presets and derived settings filled)
    device: torch.device
    data: DataBundle
    ops: tuple[str, ...]  # transformation ops applied to training images (LA or augment_only); () otherwise
    num_extra: int  # M: transformation logits after the K class logits; 0 when LA is off
    model: nn.Module
    corruptions: tuple[str, ...] = ()  # eval.corruptions resolved to names; () = no corruption evaluation
    # ce_<corruption> of the eval.corruption_baseline run, by split prefix ("" validation, "test_")
    corruption_baseline: dict[str, dict[str, float]] = field(default_factory=dict)
    test_corruption_files: CorruptionFiles | None = None  # released CIFAR-C arrays for the test split


def pick_device(name: str) -> torch.device:
    """The torch device of config key ``device``: 'auto' -> cuda when available, else cpu.

    Raises ConfigError (one line naming ``device`` and what is allowed here) for cuda or cuda:N on a machine
    without CUDA or without device N.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {name!r} needs CUDA, which is not available on this machine; "
                              "allowed here: auto, cpu")
        count, index = torch.cuda.device_count(), int(name.partition(":")[2] or 0)
        if index >= count:
            raise ConfigError(f"device: {name!r} but this machine has {count} CUDA device(s); allowed here: auto, "
                              f"cpu, cuda, cuda:0..cuda:{count - 1}")
    return torch.device(name)


def setup(config: Config, data: DataBundle | None = None) -> RunSetup:
    """Resolve the config, check the device, read the files it names, load data onto the device, build the
    model (seeded). Every user error (ConfigError, DataError) surfaces here, before any training."""
    c = resolve(config)
    device = pick_device(c.device)
    corruptions = corruption_names(c.eval.corruptions)
    # files named by the config are read before the data and the model: a wrong path fails before any compute
    baseline = _read_corruption_baseline(c.eval.corruption_baseline, corruptions) if corruptions else {}
    files = _corruption_files(c.eval.corruptions_dir) if corruptions and c.eval.corruptions_dir else None
    if data is None:
        data = load_data(c.data.name, image_size=c.data.image_size, data_dir=c.data.data_dir,
                         val_fraction=c.data.val_fraction, test_fraction=c.data.test_fraction, seed=c.seed,
                         device=device, limit_train=c.data.limit_train)
    torch.manual_seed(c.seed)
    model = build_model(c.model.arch, num_classes=data.num_classes, num_extra=c.num_extra, in_channels=data.channels,
                        image_size=data.image_size, mean=data.mean, std=data.std, small_stem=c.model.small_stem)
    model = model.to(device, memory_format=torch.channels_last if c.model.channels_last else torch.preserve_format)
    return RunSetup(config=c, device=device, data=data, ops=c.la_ops, num_extra=c.num_extra, model=model,
                    corruptions=corruptions, corruption_baseline=baseline, test_corruption_files=files)


def _read_corruption_baseline(path: str | None, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """ce_<name> (validation) and test_ce_<name> from the final metrics of a latune.train metrics.json."""
    if path is None:
        return {}
    try:
        final = json.loads(Path(path).expanduser().read_text())["final"] or {}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"eval.corruption_baseline: cannot read final metrics from {path!r} (expected the "
                          f"metrics.json of a finished python -m latune.train run): {err}") from None
    found = {prefix: {n: float(final[f"{prefix}ce_{n}"]) for n in names if f"{prefix}ce_{n}" in final}
             for prefix in ("", "test_")}
    if not found["test_"]:
        raise ConfigError(f"eval.corruption_baseline: {path!r} has no corruption errors (ce_*) for "
                          f"{', '.join(names)}; train the baseline with eval.corruptions set")
    return found


def _corruption_files(folder: str) -> CorruptionFiles:
    from latune.core.corruptions import available_corruption_files, load_corruption_files

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ConfigError(f"eval.corruptions_dir: {folder!r} is not a folder (expected the CIFAR-10-C or "
                          "CIFAR-100-C folder with <corruption>.npy and labels.npy)")
    present = set(available_corruption_files(root))

    def released(name: str, severity: int) -> tuple[Tensor, Tensor] | None:
        return load_corruption_files(root, name, severity) if name in present else None

    return released


def _schedule(optimizer: torch.optim.Optimizer, config: Config, total_steps: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step learning-rate schedule over ``total_steps`` optimizer steps."""
    o = config.optim
    if o.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=o.lr, total_steps=total_steps,
                                                   pct_start=0.3, anneal_strategy="linear")
    if o.schedule == "cosine":
        factor = lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps))  # noqa: E731
    elif o.schedule == "multistep":
        bounds = [m * total_steps for m in o.milestones]
        factor = lambda step: o.gamma ** sum(step >= b for b in bounds)  # noqa: E731
    else:
        factor = lambda step: 1.0  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _Loop:
    """A run's optimiser, schedule and generator, and the steps of one training batch.

    Every random draw of training (batch order, crop and flip, the LA transformations, the attacks' random
    starts) comes from the one ``generator``, in the order of ``train_epoch``, so a run resumed from a snapshot
    makes exactly the draws an uninterrupted run would have made.
    """

    def __init__(self, run: RunSetup, resume: dict[str, Any] | None) -> None:
        c = self.config = run.config
        self.run, self.model, self.num_classes = run, run.model, run.data.num_classes
        self.batch_size = min(c.data.batch_size, len(run.data.train))
        steps_per_epoch = len(run.data.train) // self.batch_size  # drop_last: equal batches keep batch-norm sound
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=c.optim.lr, momentum=c.optim.momentum,
                                         weight_decay=c.optim.weight_decay, nesterov=c.optim.nesterov)
        self.scheduler = _schedule(self.optimizer, c, total_steps=c.optim.epochs * steps_per_epoch)
        self.generator = torch.Generator(device=run.device).manual_seed(c.seed)
        self.autocast_dtype = torch.bfloat16 if c.optim.precision == "bf16" else None
        self.start_epoch = 0
        if resume is not None:
            self.model.load_state_dict(resume["model"])
            self.optimizer.load_state_dict(resume["optimizer"])
            self.scheduler.load_state_dict(resume["scheduler"])
            self.generator.set_state(resume["generator"].cpu())  # generator states are CPU byte tensors everywhere
            self.start_epoch = int(resume["epoch"])

    def snapshot(self, epoch: int, latest_eval: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        """Epoch.state_dict: everything a resumed run needs to continue after ``epoch``."""
        latest_eval = dict(latest_eval)
        return lambda: {"epoch": epoch, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(), "generator": self.generator.get_state(),
                        "latest_eval": latest_eval, "config": to_flat(self.config)}

    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over the training split (shuffled, whole batches); its train_* and timing metrics."""
        c, device = self.config, self.run.device
        self.model.train()
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)  # summed on the device: no host sync per step
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for x_uint8, y in iterate_batches(self.run.data.train, self.batch_size, generator=self.generator,
                                          shuffle=True, drop_last=True):
            x = self.augment(x_uint8)
            x, z = self.label_augment(x, y)
            target = labels.la_targets(y, z, self.num_classes, self.run.num_extra, c.la.delta)
            x = self.attack(x, y, target)
            loss, logits = self.optimise(x, target)
            loss_sum += loss * y.shape[0]
            correct += (labels.predict(logits, self.num_classes) == y).sum()
            seen += y.shape[0]
        train_loss = float(loss_sum) / max(seen, 1)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss is {train_loss} at epoch {epoch + 1}; lower optim.lr "
                                     f"(now {c.optim.lr}) or check the data")
        seconds = time.perf_counter() - started
        return {"epoch": epoch + 1, "train_loss": train_loss,
                "train_acc": float(correct) / max(seen, 1),  # on the attacked batches, first K logits
                "lr": self.scheduler.get_last_lr()[0], "epoch_time_s": seconds, "images_per_s": seen / seconds}

    def augment(self, x_uint8: Tensor) -> Tensor:
        """Standard augmentation (random crop, flip) of a uint8 batch; float[B,C,H,W] in [0,1]."""
        d = self.config.data
        return augment_batch(x_uint8, self.generator, crop_padding=d.crop_padding, flip=d.flip)

    def label_augment(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """LA: (images, z long[B]) with z the transformation group of each image, -1 where none changed it (and
        everywhere with la.mode augment_only: the images are transformed, the labels stay plain)."""
        run, c = self.run, self.config
        if not run.ops:
            return x, torch.full_like(y, -1)
        loss = labels.class_loss(y, self.num_classes)  # fgsm attacks the current model's class head
        ctx = transforms.TransformContext(
            generator=self.generator, severity=c.la.severity, eps=c.la.perturbation_eps,
            input_gradient=lambda xs, idx: attacks.input_gradient(self.model, xs, loss, idx, bn_eval=c.attack.bn_eval))
        # augment_only has no transformation logits (num_extra 0): any grouping draws the same images and ops
        x, z = transforms.apply_label_augmentation(x, run.ops, run.num_extra or 1, c.la.p, ctx)
        return x, z if run.num_extra else torch.full_like(y, -1)

    def attack(self, x: Tensor, y: Tensor, target: Tensor) -> Tensor:
        """PGD on the LA target (attack.target=la) or the class label; x itself when ε or steps is 0."""
        a = self.config.attack
        if a.eps == 0 or a.steps == 0:
            return x
        loss = labels.target_loss(target) if a.target == "la" else labels.class_loss(y, self.num_classes)
        return attacks.pgd(self.model, x, loss, eps=a.eps, alpha=a.alpha, steps=a.steps, random_start=a.random_start,
                           generator=self.generator, bn_eval=a.bn_eval, autocast_dtype=self.autocast_dtype)

    def optimise(self, x: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """One SGD and schedule step on the soft-target loss of the batch; (loss, logits), detached."""
        if self.config.model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.run.device.type, dtype=torch.bfloat16, enabled=self.autocast_dtype is not None):
            logits = self.model(x)
        loss = labels.soft_cross_entropy(logits, target)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.scheduler.step()
        return loss.detach(), logits.detach()


def train(config: Config, *, resume: dict[str, Any] | None = None, run: RunSetup | None = None) -> Iterator[Epoch]:
    """Train per ``config``, yielding an Epoch after each epoch.

    resume: a dict from an earlier Epoch.state_dict(); training continues after its epoch, with the
    same batches, transformations and attacks as an uninterrupted run would have had.
    run: a prepared RunSetup (to share loaded data); by default ``setup(config)``.
    Raises FloatingPointError when the training loss becomes NaN or infinite.
    """
    run = run or setup(config)
    c = run.config
    loop = _Loop(run, resume)
    settings = EvalSettings.from_config(c, run.data.num_classes)
    latest = _first_eval(run, resume)
    for epoch in range(loop.start_epoch, c.optim.epochs):
        metrics = loop.train_epoch(epoch)
        # first epoch of a fresh run only: a resumed one carries its last evaluation over, as if never stopped
        if epoch + 1 == c.optim.epochs or "eval_epoch" not in latest or (epoch + 1) % c.eval.every == 0:
            latest = _validate(run, settings, epoch, latest)
        latest = _check_corruptions(run, settings, epoch, latest)
        # validation metrics in every report (the latest ones between evaluations): sweeps need each objective
        # in each report; eval_epoch says how fresh they are
        metrics.update(latest)
        outcomes: dict[str, Any] = {}
        if epoch + 1 == c.optim.epochs:
            metrics.update(_test(run, settings, outcomes))
        elif c.eval.test_every and (epoch + 1) % c.eval.test_every == 0:
            metrics.update(_test_curve(run, settings))
        yield Epoch(epoch=epoch + 1, metrics=metrics, state_dict=loop.snapshot(epoch + 1, latest), model=run.model,
                    test_outcomes=outcomes or None)


def _first_eval(run: RunSetup, resume: dict[str, Any] | None) -> dict[str, Any]:
    """The validation metrics carried into the first report: the snapshot's, or NaN corruption summaries."""
    latest: dict[str, Any] = dict(resume.get("latest_eval", {})) if resume else {}
    if run.corruptions and not latest:
        # the summary keys are in every report from the start (NaN until measured): a sweep objective must be
        latest.update({key: math.nan for key in CORRUPTION_SUMMARY_KEYS})
        if run.corruption_baseline:
            latest["mce_vs_baseline"] = math.nan
    return latest


def _validate(run: RunSetup, settings: EvalSettings, epoch: int, latest: dict[str, Any]) -> dict[str, Any]:
    """Clean, robust and transformation-head metrics on the validation split, over the ``latest`` ones."""
    started = time.perf_counter()
    latest = {**latest, **evaluate(run.model, run.data.val, settings)}
    latest["eval_epoch"] = epoch + 1
    latest["eval_time_s"] = time.perf_counter() - started
    return latest


def _check_corruptions(run: RunSetup, settings: EvalSettings, epoch: int, latest: dict[str, Any]) -> dict[str, Any]:
    """Corruption metrics on the validation split when due: every eval.corruption_every epochs on a subsample
    (so training stays fast), on the whole split (or eval.max_images) after the last epoch."""
    e, last = run.config.eval, epoch + 1 == run.config.optim.epochs
    if not run.corruptions or not (last or (e.corruption_every and (epoch + 1) % e.corruption_every == 0)):
        return latest
    limit = e.max_images if last else min(filter(None, (e.max_images, e.corruption_max_images)))
    started = time.perf_counter()
    latest = {**latest, **evaluate_corruptions(run.model, run.data.val, settings, max_images=limit,
                                               baseline=run.corruption_baseline.get(""))}
    latest["corruption_eval_epoch"] = epoch + 1
    latest["corruption_eval_time_s"] = time.perf_counter() - started
    return latest


def _test_curve(run: RunSetup, settings: EvalSettings) -> dict[str, Any]:
    """The clean and robust test_* metrics of an epoch before the last (eval.test_every): the learning curves a
    recorded benchmark replays (benchmarks/replay_search.py) judge a front chosen on validation by these."""
    started = time.perf_counter()
    test = {f"test_{key}": value for key, value in evaluate(run.model, run.data.test, settings).items()}
    test["test_eval_time_s"] = time.perf_counter() - started
    return test


def _test(run: RunSetup, settings: EvalSettings, outcomes: dict[str, Any]) -> dict[str, Any]:
    """The test_* metrics after the last epoch: clean, robust, transformation head and corruptions; ``outcomes``
    gets the per-image results the report's bootstrap intervals resample."""
    started = time.perf_counter()
    test = evaluate(run.model, run.data.test, settings, outcomes=outcomes)
    test["eval_time_s"] = time.perf_counter() - started
    if run.corruptions:
        test.update(evaluate_corruptions(run.model, run.data.test, settings, files=run.test_corruption_files,
                                         baseline=run.corruption_baseline.get("test_"), outcomes=outcomes))
    return {f"test_{key}": value for key, value in test.items()}
