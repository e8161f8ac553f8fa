"""PGD adversarial training with label augmentation: the epoch loop, and the single-run CLI.

``train(config)`` yields one ``Epoch`` per epoch (metrics plus a way to snapshot the full training
state), so the Ray Tune trainable can report and checkpoint each epoch and resume from a snapshot.
``python -m latune.train --data digits --set attack.eps=0.1 --set la.delta=0.1 --out DIR`` runs
one training and writes DIR/metrics.json and DIR/model.pt.
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

from latune.core import attacks, labels, transforms
from latune.config import Config, ConfigError, resolve, to_flat
from latune.core.data import DataBundle, augment_batch, iterate_batches, load_data
from latune.core.evaluate import CorruptionFiles, evaluate, evaluate_corruptions
from latune.registry import CORRUPTION_SUMMARY_KEYS, corruption_names
from latune.core.models import build_model

__all__ = ["Epoch", "RunSetup", "setup", "train", "pick_device"]


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

    config: Config  # resolved (presets filled)
    device: torch.device
    data: DataBundle
    ops: tuple[str, ...]  # transformation ops of the LA set; () when LA is off
    num_extra: int  # M: transformation logits after the K class logits; 0 when LA is off
    model: nn.Module
    corruptions: tuple[str, ...] = ()  # eval.corruptions resolved to names; () = no corruption evaluation
    # ce_<corruption> of the eval.corruption_baseline run, by split prefix ("" validation, "test_")
    corruption_baseline: dict[str, dict[str, float]] = field(default_factory=dict)
    test_corruption_files: CorruptionFiles | None = None  # released CIFAR-C arrays for the test split


def pick_device(name: str) -> torch.device:
    """'auto' -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available on this machine")
    return torch.device(name)


def setup(config: Config, data: DataBundle | None = None) -> RunSetup:
    """Resolve presets, load data onto the device, build the model (seeded)."""
    config = resolve(config)
    device = pick_device(config.device)
    c = config
    corruptions = corruption_names(c.eval.corruptions)
    # files named by the config are read before the data and the model: a wrong path fails before any compute
    baseline = _read_corruption_baseline(c.eval.corruption_baseline, corruptions) if corruptions else {}
    files = _corruption_files(c.eval.corruptions_dir) if corruptions and c.eval.corruptions_dir else None
    if data is None:
        data = load_data(c.data.name, image_size=c.data.image_size, data_dir=c.data.data_dir,
                         val_fraction=c.data.val_fraction, test_fraction=c.data.test_fraction, seed=c.seed,
                         device=device, limit_train=c.data.limit_train)
    ops = transforms.set_ops(c.la.transform_set) if c.la_active else ()
    num_extra = (c.la.m or len(ops)) if ops else 0
    torch.manual_seed(c.seed)
    model = build_model(c.model.arch, num_classes=data.num_classes, num_extra=num_extra, in_channels=data.channels,
                        image_size=data.image_size, mean=data.mean, std=data.std, small_stem=c.model.small_stem)
    model = model.to(device, memory_format=torch.channels_last if c.model.channels_last else torch.preserve_format)
    return RunSetup(config=config, device=device, data=data, ops=ops, num_extra=num_extra, model=model,
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


def train(config: Config, *, resume: dict[str, Any] | None = None, run: RunSetup | None = None) -> Iterator[Epoch]:
    """Train per ``config``, yielding an Epoch after each epoch.

    resume: a dict from an earlier Epoch.state_dict(); training continues after its epoch, with the
    same batches, transformations and attacks as an uninterrupted run would have had.
    run: a prepared RunSetup (to share loaded data); by default ``setup(config)``.
    Raises FloatingPointError when the training loss becomes NaN or infinite.
    """
    run = run or setup(config)
    c, device, data, model = run.config, run.device, run.data, run.model
    K, M, ops = data.num_classes, run.num_extra, run.ops
    batch_size = min(c.data.batch_size, len(data.train))
    steps_per_epoch = len(data.train) // batch_size  # drop_last: equal batches keep batch-norm statistics sound
    attack_eps = c.attack.eps
    attack_alpha = c.attack.alpha or attack_eps / 4
    eval_eps = c.eval.eps if c.eval.eps is not None else attack_eps
    eval_alpha = c.eval.alpha or eval_eps / 4
    perturbation_eps = c.la.perturbation_eps if c.la.perturbation_eps is not None else attack_eps
    autocast_dtype = torch.bfloat16 if c.optim.precision == "bf16" else None

    optimizer = torch.optim.SGD(model.parameters(), lr=c.optim.lr, momentum=c.optim.momentum,
                                weight_decay=c.optim.weight_decay, nesterov=c.optim.nesterov)
    scheduler = _schedule(optimizer, c, total_steps=c.optim.epochs * steps_per_epoch)
    generator = torch.Generator(device=device).manual_seed(c.seed)
    start_epoch = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        generator.set_state(resume["generator"].cpu())  # generator states are CPU byte tensors on every device
        start_epoch = int(resume["epoch"])

    def snapshot(epoch: int, latest_eval: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        return lambda: {"epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                        "latest_eval": latest_eval, "config": to_flat(c)}

    eval_kwargs = dict(num_classes=K, eps=eval_eps, alpha=eval_alpha, steps=c.eval.steps, restarts=c.eval.restarts,
                       batch_size=c.eval.batch_size, max_images=c.eval.max_images, seed=c.seed, transform_ops=ops,
                       num_extra=M, severity=c.la.severity, perturbation_eps=perturbation_eps)
    latest_eval: dict[str, Any] = dict(resume.get("latest_eval", {})) if resume else {}
    corruption_kwargs = dict(num_classes=K, names=run.corruptions, severities=c.eval.corruption_severities,
                             batch_size=c.eval.batch_size, seed=c.seed)
    if run.corruptions and not latest_eval:
        # the summary keys are in every report from the start (NaN until measured): a sweep objective must be
        latest_eval.update({key: math.nan for key in CORRUPTION_SUMMARY_KEYS})
        if run.corruption_baseline:
            latest_eval["mce_vs_baseline"] = math.nan
    for epoch in range(start_epoch, c.optim.epochs):
        model.train()
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=device)  # summed on the device: no host sync per step
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen = 0
        for x_uint8, y in iterate_batches(data.train, batch_size, generator=generator, shuffle=True, drop_last=True):
            # standard augmentation, then label augmentation, then the attack (the paper's order)
            x = augment_batch(x_uint8, generator, crop_padding=c.data.crop_padding, flip=c.data.flip)
            z = torch.full_like(y, -1)
            if ops:
                def class_loss(logits: Tensor, index: Tensor, y: Tensor = y) -> Tensor:
                    return nn.functional.cross_entropy(logits[:, :K], y[index], reduction="sum")

                ctx = transforms.TransformContext(
                    generator=generator, severity=c.la.severity, eps=perturbation_eps,
                    input_gradient=lambda xs, idx, loss=class_loss: attacks.input_gradient(
                        model, xs, loss, idx, bn_eval=c.attack.bn_eval))
                x, z = transforms.apply_label_augmentation(x, ops, M, c.la.p, ctx)
            target = labels.la_targets(y, z, K, M, c.la.delta)

            if attack_eps > 0 and c.attack.steps > 0:
                if c.attack.target == "la":
                    def attack_loss(logits: Tensor, index: Tensor, target: Tensor = target) -> Tensor:
                        return labels.soft_cross_entropy(logits, target[index], reduction="sum")
                else:
                    def attack_loss(logits: Tensor, index: Tensor, y: Tensor = y) -> Tensor:
                        return nn.functional.cross_entropy(logits[:, :K], y[index], reduction="sum")
                x = attacks.pgd(model, x, attack_loss, eps=attack_eps, alpha=attack_alpha, steps=c.attack.steps,
                                random_start=c.attack.random_start, generator=generator, bn_eval=c.attack.bn_eval,
                                autocast_dtype=autocast_dtype)
            if c.model.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)

            # one SGD step on the (transformed, attacked) batch
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_dtype is not None):
                logits = model(x)
            loss = labels.soft_cross_entropy(logits, target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.detach() * y.shape[0]
            correct += (labels.predict(logits.detach(), K) == y).sum()
            seen += y.shape[0]

        train_loss = float(loss_sum) / max(seen, 1)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss is {train_loss} at epoch {epoch + 1}; lower optim.lr "
                                     f"(now {c.optim.lr}) or check the data")
        seconds = time.perf_counter() - started
        metrics: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "train_acc": float(correct) / max(seen, 1),  # on the attacked batches, first K logits
            "lr": scheduler.get_last_lr()[0],
            "epoch_time_s": seconds,
            "images_per_s": seen / seconds,
        }
        last = epoch + 1 == c.optim.epochs
        if last or epoch == start_epoch or (epoch + 1) % c.eval.every == 0:
            latest_eval = {**latest_eval, **evaluate(model, data.val, **eval_kwargs)}
            latest_eval["eval_epoch"] = epoch + 1
            latest_eval["eval_time_s"] = time.perf_counter() - started - seconds
        every = c.eval.corruption_every
        if run.corruptions and (last or (every and (epoch + 1) % every == 0)):
            # the periodic check runs on a subsample so training stays fast; the last epoch on the full split
            subsample = min(filter(None, (c.eval.max_images, c.eval.corruption_max_images)))
            limit = c.eval.max_images if last else subsample
            measured = time.perf_counter()
            latest_eval.update(evaluate_corruptions(model, data.val, max_images=limit,
                                                    baseline=run.corruption_baseline.get(""), **corruption_kwargs))
            latest_eval["corruption_eval_epoch"] = epoch + 1
            latest_eval["corruption_eval_time_s"] = time.perf_counter() - measured
        # validation metrics in every report (the latest ones between evaluations): sweeps need each objective
        # in each report; eval_epoch says how fresh they are
        metrics.update(latest_eval)
        outcomes: dict[str, Any] = {}
        if last:
            test = evaluate(model, data.test, outcomes=outcomes, **eval_kwargs)
            if run.corruptions:
                test.update(evaluate_corruptions(model, data.test, max_images=c.eval.max_images,
                                                 files=run.test_corruption_files, outcomes=outcomes,
                                                 baseline=run.corruption_baseline.get("test_"), **corruption_kwargs))
            metrics.update({f"test_{key}": value for key, value in test.items()})
        yield Epoch(epoch=epoch + 1, metrics=metrics, state_dict=snapshot(epoch + 1, latest_eval), model=model,
                    test_outcomes=outcomes or None)
