"""The three training loops bench_train times, each in either setting (fp32 NCHW, or bf16 autocast + channels_last).

Every loop has ``epoch() -> images/s`` (one epoch, timed around the loop with a device sync at the end) and
``train_loss`` (the last epoch's mean), so the benchmark can interleave them round by round.

* ``PublicRecipe`` -- the common public recipe (locuslab/robust_overfitting ``attack_pgd``): uint8 HWC images
  in a Dataset with per-sample torchvision v1 transforms through a DataLoader; the attack calls
  ``loss.backward()`` each step, which also computes and accumulates parameter gradients.
* ``TorchattacksLoop`` -- latune's device-resident batches and ``augment_batch`` (so only the attack differs),
  then ``torchattacks.PGD`` (which puts the model in eval mode while attacking), then the train step.
* ``LatuneLoop`` -- ``latune.core.train.train`` itself, advanced one epoch at a time.

With ``fast=True`` the references get the two settings latune has for speed, applied as a user of those codes
would: the model and batches in channels_last, and the attack's and the training step's forward passes under
bf16 autocast (losses in fp32).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from _train_data import (ALPHA, CROP_PADDING, EPS, FLIP, IMAGE_SIZE, LR, MOMENTUM, STEPS, WEIGHT_DECAY,
                         new_model, new_optimizer, sync)
from latune.config import from_flat
from latune.core.data import DataBundle, augment_batch, iterate_batches
from latune.core.train import setup, train


class Workload(NamedTuple):
    """What every loop of one comparison shares besides the data."""

    arch: str  # latune model name (build_model)
    seed: int  # model initialisation and batch order
    device: torch.device
    batch_size: int  # images per step


def _autocast(device: torch.device, fast: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast)


def _layout(x: torch.Tensor, fast: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if fast else x


class _HWCDataset(torch.utils.data.Dataset):
    """uint8 HWC images + labels, transformed per sample (as torchvision.datasets.CIFAR10 does)."""

    def __init__(self, images_hwc: np.ndarray, targets: np.ndarray, transform: Callable[[Any], torch.Tensor]):
        self.images, self.targets, self.transform = images_hwc, targets, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.targets[i])


def attack_pgd_public(model: nn.Module, X: torch.Tensor, y: torch.Tensor, fast: bool = False) -> torch.Tensor:
    """locuslab/robust_overfitting ``attack_pgd`` (l_inf, 1 restart, no early stop), normalisation in the model.

    Returns delta (same shape as X); ``fast``: the forward passes under bf16 autocast.
    """
    delta = torch.zeros_like(X).uniform_(-EPS, EPS)  # zeros_like keeps X's memory format
    delta = torch.clamp(delta, -X, 1 - X)  # clamp(delta, lower_limit - X, upper_limit - X)
    delta.requires_grad = True
    for _ in range(STEPS):
        with _autocast(X.device, fast):
            output = model(X + delta)
        loss = F.cross_entropy(output.float(), y)
        loss.backward()  # parameter gradients are computed (and accumulated) too
        grad = delta.grad.detach()
        d = torch.clamp(delta + ALPHA * torch.sign(grad), min=-EPS, max=EPS)
        d = torch.clamp(d, -X, 1 - X)
        delta.data = d
        delta.grad.zero_()
    return delta.detach()


class PublicRecipe:
    """The public recipe: DataLoader with per-sample PIL transforms; attack via loss.backward(); train mode."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, bundle: DataBundle, work: Workload, *,
                 workers: int, fast: bool = False):
        from torchvision import transforms as T

        self.device, self.fast = work.device, fast
        self.model = new_model(work.arch, bundle, work.seed, work.device, channels_last=fast)
        self.optimizer = new_optimizer(self.model)
        transform = T.Compose([T.ToPILImage(), T.RandomCrop(IMAGE_SIZE, padding=CROP_PADDING),
                               T.RandomHorizontalFlip(), T.ToTensor()])
        dataset = _HWCDataset(images.permute(0, 2, 3, 1).contiguous().numpy(), targets.numpy(), transform)
        # persistent workers: no worker start-up inside the timed epochs
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=work.batch_size, shuffle=True, drop_last=True, num_workers=workers,
            pin_memory=work.device.type == "cuda", persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(work.seed))
        self.train_loss = float("nan")

    def epoch(self) -> float:
        model, opt, device, fast = self.model, self.optimizer, self.device, self.fast
        model.train()
        sync(device)
        started = time.perf_counter()
        seen, loss_sum = 0, torch.zeros((), device=device)
        for X, y in self.loader:
            X, y = _layout(X.to(device, non_blocking=True), fast), y.to(device, non_blocking=True)
            delta = attack_pgd_public(model, X, y, fast)
            with _autocast(device, fast):
                output = model(torch.clamp(X + delta, min=0, max=1))
            loss = F.cross_entropy(output.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * y.shape[0]
            seen += y.shape[0]
        self.train_loss = float(loss_sum) / max(seen, 1)  # syncs
        return seen / (time.perf_counter() - started)


class TorchattacksLoop:
    """latune's device-resident batches and augment_batch; torchattacks.PGD; then the train step."""

    def __init__(self, bundle: DataBundle, work: Workload, *, fast: bool = False):
        import torchattacks

        self.device, self.split, self.batch_size, self.fast = work.device, bundle.train, work.batch_size, fast
        self.model = new_model(work.arch, bundle, work.seed, work.device, channels_last=fast)
        self.optimizer = new_optimizer(self.model)
        self.attack = torchattacks.PGD(self.model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
        self.generator = torch.Generator(device=work.device).manual_seed(work.seed)
        self.train_loss = float("nan")

    def epoch(self) -> float:
        model, opt, device, fast = self.model, self.optimizer, self.device, self.fast
        model.train()
        sync(device)
        started = time.perf_counter()
        seen, loss_sum = 0, torch.zeros((), device=device)
        for x_uint8, y in iterate_batches(self.split, self.batch_size, generator=self.generator, shuffle=True,
                                          drop_last=True):
            x = _layout(augment_batch(x_uint8, self.generator, crop_padding=CROP_PADDING, flip=FLIP), fast)
            with _autocast(device, fast):
                x_adv = _layout(self.attack(x, y), fast)  # eval mode during the attack, train mode restored after
                logits = model(x_adv)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * y.shape[0]
            seen += y.shape[0]
        self.train_loss = float(loss_sum) / max(seen, 1)
        return seen / (time.perf_counter() - started)


def latune_config(work: Workload, *, la: bool, epochs: int, eval_images: int, fast: bool = False):
    """latune's config for the same workload; ``fast``: optim.precision=bf16 and model.channels_last=true."""
    return from_flat({
        "data.name": "cifar10", "data.image_size": IMAGE_SIZE, "data.batch_size": work.batch_size,
        "data.crop_padding": CROP_PADDING, "data.flip": FLIP,
        "model.arch": work.arch, "model.channels_last": fast,
        "attack.eps": EPS, "attack.alpha": ALPHA, "attack.steps": STEPS, "attack.random_start": True,
        "la.delta": 0.1 if la else 0.0, "la.transform_set": "augmix_ops", "la.p": 0.5,
        "optim.epochs": epochs, "optim.lr": LR, "optim.momentum": MOMENTUM, "optim.weight_decay": WEIGHT_DECAY,
        "optim.nesterov": False, "optim.schedule": "constant", "optim.precision": "bf16" if fast else "fp32",
        "eval.steps": 0, "eval.max_images": eval_images, "eval.every": 10**9,  # evaluate only after the last epoch
        "seed": work.seed, "device": str(work.device),
    })


class LatuneLoop:
    """latune's train() as a generator: each ``epoch()`` advances it by one epoch (so it can be interleaved).

    The figure is the ``images_per_s`` latune's loop reports (training only: the evaluation after the last
    epoch runs after its timer and is made cheap with eval.steps=0 and a small eval.max_images).
    """

    def __init__(self, bundle: DataBundle, work: Workload, *, la: bool, epochs: int, eval_images: int,
                 fast: bool = False):
        config = latune_config(work, la=la, epochs=epochs, eval_images=eval_images, fast=fast)
        self.run = setup(config, data=bundle)
        self.model = self.run.model
        self._epochs: Iterator = train(config, run=self.run)
        self.train_loss = float("nan")

    def epoch(self) -> float:
        ep = next(self._epochs)
        self.train_loss = ep.metrics["train_loss"]
        return ep.metrics["images_per_s"]
