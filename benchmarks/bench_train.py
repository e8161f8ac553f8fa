#!/usr/bin/env python
"""Throughput of one PGD-10 adversarial-training epoch: latune's loop against two references.

All variants train the same model (latune ``small_cnn`` built by ``latune.models.build_model`` from the same
seed) on the same real images (MNIST test images resized to 32x32 and replicated to 3 channels; scikit-learn
digits if MNIST is absent) with batch 128, eps 8/255, alpha 2/255, PGD-10 with random start, random crop
(padding 4) + horizontal flip, and SGD (lr 0.05, momentum 0.9, weight decay 5e-4, constant schedule):

* ``public_w0`` / ``public_w2`` -- (a) the common public recipe (locuslab/robust_overfitting ``attack_pgd``):
  uint8 HWC images in a Dataset with per-sample torchvision v1 transforms (ToPILImage, RandomCrop(32, 4),
  RandomHorizontalFlip, ToTensor) through a DataLoader with 0 or 2 workers (persistent workers, so no
  start-up per epoch); model in train mode; the attack calls ``loss.backward()`` each step (which also
  computes and accumulates parameter gradients) and updates ``delta`` with sign and clamp; then the train
  step. robust_overfitting's extra restart-selection forward (a no-op for 1 restart) is left out, which
  only makes this reference faster. The better of the two worker settings is the (a) reference.
* ``torchattacks`` -- (b) the same device-resident batches and ``latune.data.augment_batch`` as latune
  (so only the attack differs), ``torchattacks.PGD(model, eps, alpha, steps=10, random_start=True)`` on
  each batch (it puts the model in eval mode while attacking), then the train step.
* ``latune`` -- ``latune.train.train`` with its default precision and layout (fp32, NCHW) and LA off
  (delta = 0): the like-for-like headline (same work as the references).
* ``latune_la`` -- the same with LA on (delta = 0.1, augmix_ops, p = 0.5).
* ``latune_bf16_cl`` / ``latune_bf16_cl_la`` -- latune with the settings it already has for speed,
  ``optim.precision=bf16`` (autocast for the attack and the training step) and ``model.channels_last=true``,
  LA off / on. The goals are evaluated for every latune variant (LA off ones are the comparable ones).
* ``torchattacks_bf16_cl`` (not run by default) -- (b) with the model and batches in channels_last and the
  attack and the training step under bf16 autocast: what a torchattacks user gets from the same two settings.

latune's figure is the ``images_per_s`` its loop reports (training only: evaluation runs after the timer
and is made cheap with ``eval.steps=0`` and a small ``eval.max_images``). The references are timed around
their epoch loop (DataLoader iteration included) with a device sync at the end.

Each variant runs one warm-up epoch, then ``--repeats`` timed epochs interleaved (a, b, latune, a, b, ...)
so machine noise hits all alike; the medians and the ratios latune/(a) and latune/(b) are reported. The
goals (on a 2-core CPU, small CNN at 32x32x3) are >= 3x (a) and >= 1.5x (b); they are reported, not
asserted. The last line of output is one JSON object with every figure.

With ``--device cuda`` (or ``--mfu``) it also measures latune's PreActResNet-18 PGD-10 training with
bf16 autocast and channels_last (``optim.precision=bf16``, ``model.channels_last=true``) and its
model-FLOP utilisation; see ``count_train_flops`` for exactly what is counted.

    python benchmarks/bench_train.py                 # default: 1024 images, 5 repeats
    python benchmarks/bench_train.py --quick         # 256 images, 1 repeat (smoke test)
    python benchmarks/bench_train.py --device cuda   # + PreActResNet-18 bf16 images/s and MFU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from latune import attacks  # noqa: E402
from latune import data as ldata  # noqa: E402
from latune.config import from_flat  # noqa: E402
from latune.core.data import DataBundle, Split, augment_batch, iterate_batches  # noqa: E402
from latune.core.models import build_model  # noqa: E402
from latune.core.train import setup, train  # noqa: E402

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 10
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4
CROP_PADDING, FLIP = 4, True
NUM_CLASSES, IMAGE_SIZE, CHANNELS = 10, 32, 3
GOAL_VS_PUBLIC, GOAL_VS_TORCHATTACKS = 3.0, 1.5
# shared/ beside the checkout holds the real MNIST test set (developers and CI only; users fall back to digits)
_BESIDE_CHECKOUT = Path(__file__).resolve().parents[2] / "shared/data/mnist-test"
DEFAULT_MNIST = Path(os.environ.get("LATUNE_BENCH_MNIST") or
                     (_BESIDE_CHECKOUT if _BESIDE_CHECKOUT.is_dir() else "/work/shared/data/mnist-test"))
VARIANTS = ("public_w0", "public_w2", "torchattacks", "torchattacks_bf16_cl", "latune", "latune_la", "latune_bf16_cl",
            "latune_bf16_cl_la")
DEFAULT_VARIANTS = ("public_w0", "public_w2", "torchattacks", "latune", "latune_la", "latune_bf16_cl",
                    "latune_bf16_cl_la")
QUICK_VARIANTS = ("public_w0", "torchattacks", "latune", "latune_la", "latune_bf16_cl")
LATUNE_VARIANTS = ("latune", "latune_la", "latune_bf16_cl", "latune_bf16_cl_la")


# ---------------------------------------------------------------------------------------------------- data


def _mnist_test(root: Path) -> tuple[torch.Tensor, torch.Tensor] | None:
    """MNIST test split via latune's reader: ``root/MNIST/raw/t10k-*`` or the idx files directly in ``root``."""
    names = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

    def present(folder: Path) -> bool:
        return all((folder / n).exists() or (folder / f"{n}.gz").exists() for n in names)

    if present(root / "MNIST" / "raw"):
        return ldata._load_mnist_split(root, train=False)
    if present(root):  # flat layout: link the files into the layout _load_mnist_split expects
        with tempfile.TemporaryDirectory(prefix="bench-mnist-") as tmp:
            raw = Path(tmp) / "MNIST" / "raw"
            raw.mkdir(parents=True)
            for n in names:
                for f in (root / n, root / f"{n}.gz"):
                    if f.exists():
                        (raw / f.name).symlink_to(f.resolve())
            return ldata._load_mnist_split(Path(tmp), train=False)
    return None


def load_images(n: int, seed: int, root: Path) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``n`` images as uint8 [n, 3, 32, 32] (resized, grey replicated to RGB), int64 labels, and a source name.

    A seeded random subset; when the source has fewer than ``n`` images they are repeated (throughput only).
    """
    found = _mnist_test(root)
    if found is not None:
        images, targets = found
        source = f"mnist-test ({root})"
    else:
        images, targets, _ = ldata._load_digits()
        source = "sklearn-digits (MNIST not found at %s)" % root
    order = torch.randperm(len(targets), generator=torch.Generator().manual_seed(seed))
    order = order.repeat(math.ceil(n / len(order)))[:n]
    images = ldata._resize(images.index_select(0, order), IMAGE_SIZE)  # bilinear + antialias, uint8
    images = images.expand(-1, CHANNELS, -1, -1).contiguous()
    return images, targets.index_select(0, order), source


def make_bundle(images: torch.Tensor, targets: torch.Tensor, device: torch.device, eval_images: int) -> DataBundle:
    """A latune DataBundle on ``device``: train = all images; val = test = the first ``eval_images``."""
    floats = images.float().div_(255)
    mean = tuple(float(v) for v in floats.mean(dim=(0, 2, 3)))
    std = tuple(max(float(v), 1e-3) for v in floats.std(dim=(0, 2, 3)))
    train_split = Split(images.to(device), targets.to(device))
    small = Split(images[:eval_images].to(device), targets[:eval_images].to(device))
    return DataBundle(name="mnist32x3", train=train_split, val=small, test=small, num_classes=NUM_CLASSES,
                      channels=CHANNELS, image_size=IMAGE_SIZE, mean=mean, std=std,
                      class_names=tuple(str(i) for i in range(NUM_CLASSES)))


# ---------------------------------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def new_model(arch: str, bundle: DataBundle, seed: int, device: torch.device) -> nn.Module:
    """The same initialisation latune.train.setup gives a run with LA off (seeded global RNG, then build)."""
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=bundle.num_classes, num_extra=0, in_channels=bundle.channels,
                        image_size=bundle.image_size, mean=bundle.mean, std=bundle.std)
    return model.to(device)


def new_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


# ---------------------------------------------------------------------------------------------------- (a) public


class _HWCDataset(torch.utils.data.Dataset):
    """uint8 HWC images + labels, transformed per sample (as torchvision.datasets.CIFAR10 does)."""

    def __init__(self, images_hwc: np.ndarray, targets: np.ndarray, transform: Callable[[Any], torch.Tensor]):
        self.images, self.targets, self.transform = images_hwc, targets, transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.images[i]), int(self.targets[i])


def attack_pgd_public(model: nn.Module, X: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
                      steps: int) -> torch.Tensor:
    """locuslab/robust_overfitting ``attack_pgd`` (l_inf, 1 restart, no early stop), normalisation in the model."""
    delta = torch.zeros_like(X).uniform_(-eps, eps)
    delta = torch.clamp(delta, -X, 1 - X)  # clamp(delta, lower_limit - X, upper_limit - X)
    delta.requires_grad = True
    for _ in range(steps):
        output = model(X + delta)
        loss = F.cross_entropy(output, y)
        loss.backward()  # parameter gradients are computed (and accumulated) too
        grad = delta.grad.detach()
        d = torch.clamp(delta + alpha * torch.sign(grad), min=-eps, max=eps)
        d = torch.clamp(d, -X, 1 - X)
        delta.data = d
        delta.grad.zero_()
    return delta.detach()


class PublicRecipe:
    """(a): DataLoader with per-sample PIL transforms; attack via loss.backward() in fp32; model in train mode."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, bundle: DataBundle, arch: str, seed: int,
                 device: torch.device, batch_size: int, workers: int):
        from torchvision import transforms as T

        self.device, self.model = device, new_model(arch, bundle, seed, device)
        self.optimizer = new_optimizer(self.model)
        transform = T.Compose([T.ToPILImage(), T.RandomCrop(IMAGE_SIZE, padding=CROP_PADDING),
                               T.RandomHorizontalFlip(), T.ToTensor()])
        dataset = _HWCDataset(images.permute(0, 2, 3, 1).contiguous().numpy(), targets.numpy(), transform)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=workers,
            pin_memory=device.type == "cuda", persistent_workers=workers > 0,
            generator=torch.Generator().manual_seed(seed))
        self.train_loss = float("nan")

    def epoch(self) -> float:
        model, opt, device = self.model, self.optimizer, self.device
        model.train()
        sync(device)
        started = time.perf_counter()
        seen, loss_sum = 0, torch.zeros((), device=device)
        for X, y in self.loader:
            X, y = X.to(device, non_blocking=True), y.to(device, non_blocking=True)
            delta = attack_pgd_public(model, X, y, EPS, ALPHA, STEPS)
            output = model(torch.clamp(X + delta, min=0, max=1))
            loss = F.cross_entropy(output, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * y.shape[0]
            seen += y.shape[0]
        self.train_loss = float(loss_sum) / max(seen, 1)  # syncs
        return seen / (time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------------- (b) torchattacks


class TorchattacksLoop:
    """(b): latune's device-resident batches and augment_batch; torchattacks.PGD; then the train step."""

    def __init__(self, bundle: DataBundle, arch: str, seed: int, device: torch.device, batch_size: int,
                 bf16_channels_last: bool = False):
        import torchattacks

        self.device, self.split, self.batch_size = device, bundle.train, batch_size
        self.model = new_model(arch, bundle, seed, device)
        self.fast = bf16_channels_last
        if self.fast:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = new_optimizer(self.model)
        self.attack = torchattacks.PGD(self.model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.train_loss = float("nan")

    def epoch(self) -> float:
        model, opt, device = self.model, self.optimizer, self.device
        model.train()
        sync(device)
        started = time.perf_counter()
        seen, loss_sum = 0, torch.zeros((), device=device)
        for x_uint8, y in iterate_batches(self.split, self.batch_size, generator=self.generator, shuffle=True,
                                          drop_last=True):
            x = augment_batch(x_uint8, self.generator, crop_padding=CROP_PADDING, flip=FLIP)
            if self.fast:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.fast):
                x_adv = self.attack(x, y)  # eval mode during the attack, restored to train afterwards
                if self.fast:
                    x_adv = x_adv.contiguous(memory_format=torch.channels_last)
                logits = model(x_adv)
            loss = F.cross_entropy(logits.float(), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * y.shape[0]
            seen += y.shape[0]
        self.train_loss = float(loss_sum) / max(seen, 1)
        return seen / (time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------------- latune


def latune_config(*, arch: str, la: bool, epochs: int, batch_size: int, eval_images: int, seed: int,
                  device: torch.device, precision: str = "fp32", channels_last: bool = False):
    return from_flat({
        "data.name": "cifar10", "data.image_size": IMAGE_SIZE, "data.batch_size": batch_size,
        "data.crop_padding": CROP_PADDING, "data.flip": FLIP,
        "model.arch": arch, "model.channels_last": channels_last,
        "attack.eps": EPS, "attack.alpha": ALPHA, "attack.steps": STEPS, "attack.random_start": True,
        "la.delta": 0.1 if la else 0.0, "la.transform_set": "augmix_ops", "la.p": 0.5,
        "optim.epochs": epochs, "optim.lr": LR, "optim.momentum": MOMENTUM, "optim.weight_decay": WEIGHT_DECAY,
        "optim.nesterov": False, "optim.schedule": "constant", "optim.precision": precision,
        "eval.steps": 0, "eval.max_images": eval_images, "eval.every": 10**9,  # evaluate only after the last epoch
        "seed": seed, "device": str(device),
    })


class LatuneLoop:
    """latune.train.train as a generator: each ``epoch()`` advances it by one epoch (so it can be interleaved)."""

    def __init__(self, bundle: DataBundle, *, epochs: int, **config_kwargs: Any):
        config = latune_config(epochs=epochs, **config_kwargs)
        self.run = setup(config, data=bundle)
        self.model = self.run.model
        self._epochs: Iterator = train(config, run=self.run)
        self.train_loss = float("nan")
        self.last_metrics: dict[str, Any] = {}

    def epoch(self) -> float:
        ep = next(self._epochs)
        self.last_metrics = ep.metrics
        self.train_loss = ep.metrics["train_loss"]
        return ep.metrics["images_per_s"]


# ---------------------------------------------------------------------------------------------------- FLOPs


def count_train_flops(arch: str, bundle: DataBundle, steps: int, batch: int = 2) -> dict[str, float]:
    """Model FLOPs per image of one PGD-k training step, counted by torch.utils.flop_counter.FlopCounterMode.

    Counted on a CPU fp32 copy (FLOPs do not depend on device or precision); FlopCounterMode counts matmuls
    and convolutions (forward and backward, honouring which gradients autograd actually asks for), not
    element-wise ops (batch norm, ReLU, the loss, the PGD update). Per image:

    * ``forward``: one forward pass.
    * ``attack_step``: forward + backward for the input gradient only (parameters frozen as latune's attack
      does, so no weight gradients; the first conv's input gradient is included). About 2x forward.
    * ``train_step``: forward + backward with weight gradients, no input gradient (about 3x forward less the
      first conv's input gradient).
    * ``pgd_train`` = steps * attack_step + train_step: the model FLOPs of adversarial training per image
      (standard augmentation and label-augmentation transforms are not model FLOPs and are not counted).
    * ``pgd_train_public``: the same for recipe (a), whose attack steps use ``loss.backward()`` and so also
      compute weight gradients (``attack_step_public``): the FLOP ceiling of latune's advantage at equal speed
      per FLOP.
    """
    from torch.utils.flop_counter import FlopCounterMode

    model = new_model(arch, bundle, 0, torch.device("cpu"))
    x = torch.rand(batch, bundle.channels, bundle.image_size, bundle.image_size)
    y = torch.arange(batch) % bundle.num_classes

    def counted(fn: Callable[[], Any]) -> float:
        with FlopCounterMode(display=False) as counter:
            fn()
        return counter.get_total_flops() / batch

    def forward() -> None:
        with torch.no_grad():
            model(x)

    def attack_step() -> None:
        # backward() with frozen parameters asks for the same gradients as attacks.pgd's autograd.grad (which
        # FlopCounterMode's module hooks do not support): only the input's.
        with attacks.attack_mode(model):
            xa = x.clone().requires_grad_(True)
            F.cross_entropy(model(xa), y, reduction="sum").backward()

    def train_step() -> None:
        F.cross_entropy(model(x), y).backward()
        model.zero_grad(set_to_none=True)

    def attack_step_public() -> None:
        delta = torch.zeros_like(x, requires_grad=True)
        F.cross_entropy(model(x + delta), y).backward()
        model.zero_grad(set_to_none=True)

    model.eval()  # forward FLOPs do not depend on the mode; eval keeps the BN statistics of this copy unchanged
    fwd, atk = counted(forward), counted(attack_step)
    model.train()
    trn, atk_public = counted(train_step), counted(attack_step_public)
    return {"forward": fwd, "attack_step": atk, "train_step": trn, "pgd_train": steps * atk + trn,
            "pgd_train_approx_2x_3x": (2 * steps + 3) * fwd, "attack_step_public": atk_public,
            "pgd_train_public": steps * atk_public + trn}


# ---------------------------------------------------------------------------------------------------- GPU / MFU


def measure_bf16_preact(args: argparse.Namespace, device: torch.device, images: torch.Tensor,
                        targets: torch.Tensor) -> dict[str, Any]:
    """latune PreActResNet-18, PGD-10, bf16 autocast + channels_last: images/s (median) and model-FLOP utilisation."""
    arch = "preact_resnet18"
    bundle = make_bundle(images, targets, device, args.eval_images)
    flops = count_train_flops(arch, make_bundle(images[:8], targets[:8], torch.device("cpu"), 8), STEPS)
    loops = {name: LatuneLoop(bundle, arch=arch, la=la, epochs=args.warmup + args.repeats, batch_size=args.batch_size,
                              eval_images=args.eval_images, seed=args.seed, device=device, precision="bf16",
                              channels_last=True)
             for name, la in (("latune", False), ("latune_la", True))}
    samples: dict[str, list[float]] = {name: [] for name in loops}
    for round_ in range(args.warmup + args.repeats):
        for name, loop in loops.items():
            ips = loop.epoch()
            if round_ >= args.warmup:
                samples[name].append(ips)
            log(f"  [{arch} bf16 channels_last] round {round_}{' (warm-up)' if round_ < args.warmup else ''} "
                f"{name}: {ips:.1f} img/s")
    peak = args.peak_tflops * 1e12
    out: dict[str, Any] = {
        "arch": arch, "precision": "bf16 autocast", "channels_last": True, "images": len(targets),
        "batch_size": args.batch_size, "peak_tflops": args.peak_tflops,
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "flops_per_image": flops,
        "flops_counted": "FlopCounterMode (matmul+conv): 10 x (forward + input-gradient backward, params frozen) "
                         "+ 1 x (forward + weight-gradient backward); element-wise ops not counted",
        "images_per_s": {}, "images_per_s_all": samples, "achieved_tflops": {}, "mfu": {},
    }
    for name, values in samples.items():
        ips = statistics.median(values)
        out["images_per_s"][name] = ips
        out["achieved_tflops"][name] = ips * flops["pgd_train"] / 1e12
        out["mfu"][name] = ips * flops["pgd_train"] / peak
    return out


# ---------------------------------------------------------------------------------------------------- main


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1024,
                   help="training images per epoch (default 1024: 8 batches, ~10-15 s for the slowest variant on "
                        "2 CPU cores)")
    p.add_argument("--repeats", type=int, default=5, help="timed epochs per variant (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed epochs per variant before the timed ones (default 1)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 256 images, no warm-up, 1 repeat, variants " + ",".join(QUICK_VARIANTS))
    p.add_argument("--device", default="cpu", help="cpu (default), cuda or cuda:N")
    p.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="torch.set_num_threads for every variant (default: the CPUs this process may use)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--arch", default="small_cnn", help="model of the comparison (default small_cnn)")
    p.add_argument("--variants", default=None,
                   help=f"comma list of variants to time, from {','.join(VARIANTS)} "
                        f"(default {','.join(DEFAULT_VARIANTS)})")
    p.add_argument("--data-root", type=Path, default=DEFAULT_MNIST,
                   help="folder with the MNIST t10k idx files (flat or MNIST/raw); sklearn digits when absent")
    p.add_argument("--eval-images", type=int, default=64, help="images latune evaluates after its last epoch")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mfu", action=argparse.BooleanOptionalAction, default=None,
                   help="also measure PreActResNet-18 bf16 + channels_last images/s and MFU (default: on for cuda)")
    p.add_argument("--mfu-images", type=int, default=10000, help="training images per epoch for the MFU run")
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="peak dense bf16 TFLOP/s of the device for MFU (default 989: H100 SXM)")
    args = p.parse_args(argv)
    if args.quick:
        args.images, args.repeats, args.warmup, args.mfu_images = 256, 1, 0, min(args.mfu_images, 512)
    chosen = args.variants or ",".join(QUICK_VARIANTS if args.quick else DEFAULT_VARIANTS)
    args.variants = [v.strip() for v in chosen.split(",") if v.strip()]
    unknown = sorted(set(args.variants) - set(VARIANTS))
    if unknown or not args.variants:
        p.error(f"unknown or no variants {unknown}; allowed: {', '.join(VARIANTS)}")
    if args.images < args.batch_size or args.repeats < 1 or args.threads < 1 or args.warmup < 0:
        p.error("need --images >= --batch-size, --repeats >= 1, --warmup >= 0 and --threads >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    base: dict[str, Any] = {
        "benchmark": "bench_train", "device": str(device), "torch": torch.__version__,
        "python": platform.python_version(), "threads": args.threads, "images": args.images,
        "repeats": args.repeats, "warmup": args.warmup, "quick": args.quick,
    }
    if device.type == "cuda" and not torch.cuda.is_available():
        log(f"bench_train: --device {args.device} requested but CUDA is not available here; skipped "
            "(run with --device cpu for the CPU comparison)")
        print(json.dumps({**base, "skipped": "CUDA not available"}))
        return 0
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    if load_start[0] > 0.5:
        log(f"bench_train: warning: 1-min load average is {load_start[0]:.1f} before starting; other work on this "
            f"machine will slow some epochs down (compare the best-epoch ratios too)")
    images, targets, source = load_images(args.images, args.seed, args.data_root)
    bundle = make_bundle(images, targets, device, args.eval_images)
    epochs = args.warmup + args.repeats
    common = dict(arch=args.arch, epochs=epochs, batch_size=args.batch_size, eval_images=args.eval_images,
                  seed=args.seed, device=device)

    def public(workers: int) -> PublicRecipe:
        return PublicRecipe(images, targets, bundle, args.arch, args.seed, device, args.batch_size, workers)

    builders: dict[str, Callable[[], Any]] = {
        "public_w0": lambda: public(0),
        "public_w2": lambda: public(2),
        "torchattacks": lambda: TorchattacksLoop(bundle, args.arch, args.seed, device, args.batch_size),
        "torchattacks_bf16_cl": lambda: TorchattacksLoop(bundle, args.arch, args.seed, device, args.batch_size,
                                                         bf16_channels_last=True),
        "latune": lambda: LatuneLoop(bundle, la=False, **common),
        "latune_la": lambda: LatuneLoop(bundle, la=True, **common),
        "latune_bf16_cl": lambda: LatuneLoop(bundle, la=False, precision="bf16", channels_last=True, **common),
        "latune_bf16_cl_la": lambda: LatuneLoop(bundle, la=True, precision="bf16", channels_last=True, **common),
    }
    loops = {name: builders[name]() for name in VARIANTS if name in args.variants}
    log(f"bench_train: {args.images} images ({source}), 32x32x3, {args.arch}, batch {args.batch_size}, PGD-{STEPS} "
        f"eps 8/255 alpha 2/255, device {device}, torch threads {torch.get_num_threads()}, "
        f"{args.warmup} warm-up + {args.repeats} timed epochs per variant, interleaved")
    samples: dict[str, list[float]] = {name: [] for name in loops}
    for round_ in range(epochs):
        for name, loop in loops.items():
            ips = loop.epoch()
            if round_ >= args.warmup:
                samples[name].append(ips)
            log(f"  round {round_}{' (warm-up)' if round_ < args.warmup else ''} {name:20s} {ips:8.1f} img/s")

    ips, public_workers, ratios, goals_by_variant = summarize(samples, statistics.median)
    # Other work on a shared machine only ever slows an epoch down, so each variant's best epoch is the least
    # disturbed estimate of its own speed; reported next to the medians (which the goals use).
    ips_best, _, ratios_best, _ = summarize(samples, max)

    flops = count_train_flops(args.arch, bundle, STEPS)
    result: dict[str, Any] = {
        **base, "threads": torch.get_num_threads(), "data": source, "arch": args.arch,
        "batch_size": args.batch_size, "eps": EPS, "alpha": ALPHA, "steps": STEPS,
        "torchvision": _version("torchvision"), "torchattacks": _version("torchattacks"),
        "images_per_s": ips, "images_per_s_all": samples, "public_workers": public_workers,
        "ratios": ratios, "images_per_s_best": ips_best, "ratios_best": ratios_best,
        "goals": {"vs_public": GOAL_VS_PUBLIC, "vs_torchattacks": GOAL_VS_TORCHATTACKS},
        # headline: latune at its defaults (fp32, NCHW), LA off; per variant below
        "goals_met": goals_by_variant.get("latune", {}),
        "goals_met_by_variant": goals_by_variant,
        "model_gflop_per_image": {k: v / 1e9 for k, v in flops.items()},
        "useful_gflops": {name: v * flops["pgd_train"] / 1e9 for name, v in ips.items()},
        "train_loss_last_epoch": {name: loop.train_loss for name, loop in loops.items()},
        # 1-minute load averages around the timed rounds: above the thread count, other work shared the CPUs
        "loadavg_1min": {"start": load_start[0], "end": os.getloadavg()[0]},
    }
    run_mfu = args.mfu if args.mfu is not None else device.type == "cuda"
    if run_mfu:
        mfu_images, mfu_targets, _ = load_images(args.mfu_images, args.seed, args.data_root)
        result["bf16_preact_resnet18"] = measure_bf16_preact(args, device, mfu_images, mfu_targets)

    print_table(result)
    print(json.dumps(result))
    return 0


def summarize(samples: dict[str, list[float]], reduce: Callable[[list[float]], float]):
    """(images/s per variant incl. "public" = the better DataLoader setting, its workers, ratios, goals met)."""
    ips = {name: reduce(values) for name, values in samples.items()}
    public_ips = {name: ips[name] for name in ("public_w0", "public_w2") if name in ips}
    public_workers = None
    if public_ips:
        best = max(public_ips, key=public_ips.get)
        ips["public"], public_workers = public_ips[best], int(best[-1])
    ratios: dict[str, float] = {}
    goals: dict[str, dict[str, bool]] = {}
    for lat in LATUNE_VARIANTS:
        for ref, goal in (("public", GOAL_VS_PUBLIC), ("torchattacks", GOAL_VS_TORCHATTACKS)):
            if lat in ips and ref in ips:
                ratios[f"{lat}_vs_{ref}"] = ips[lat] / ips[ref]
                goals.setdefault(lat, {})[f"vs_{ref}"] = ips[lat] / ips[ref] >= goal
    if "torchattacks_bf16_cl" in ips and "latune_bf16_cl" in ips:
        ratios["latune_bf16_cl_vs_torchattacks_bf16_cl"] = ips["latune_bf16_cl"] / ips["torchattacks_bf16_cl"]
    return ips, public_workers, ratios, goals


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


def print_table(result: dict[str, Any]) -> None:
    ips, best, all_ = result["images_per_s"], result["images_per_s_best"], result["images_per_s_all"]
    print(f"PGD-{result['steps']} adversarial training, {result['arch']} 32x32x3, {result['images']} images/epoch, "
          f"batch {result['batch_size']}, device {result['device']}, {result['threads']} threads, "
          f"{result['repeats']} timed epochs per variant; 1-min load average "
          f"{result['loadavg_1min']['start']:.1f} -> {result['loadavg_1min']['end']:.1f}")
    print(f"img/s: median (min..max) of the epochs; GFLOP/s = median img/s x "
          f"{result['model_gflop_per_image']['pgd_train']:.3f} GFLOP/image (latune's PGD-10 model FLOPs); "
          f"ratios latune/reference from the medians and [from each variant's best epoch]")
    print(f"{'variant':22s} {'img/s':>8s} {'min':>8s} {'max':>8s} {'GFLOP/s':>8s} {'vs public':>16s} "
          f"{'vs torchattacks':>16s}")
    for name in (*VARIANTS, "public"):
        if name not in ips:
            continue
        values = all_.get(name, [])
        vs = {}
        for ref in ("public", "torchattacks"):
            vs[ref] = (f"{ips[name] / ips[ref]:.2f}x [{best[name] / best[ref]:.2f}x]"
                       if ref in ips and name in LATUNE_VARIANTS else "")
        lo = f"{min(values):8.1f}" if values else " " * 8
        hi = f"{max(values):8.1f}" if values else " " * 8
        label = f"public (best: w{result['public_workers']})" if name == "public" else name
        print(f"{label:22s} {ips[name]:8.1f} {lo} {hi} {result['useful_gflops'][name]:8.1f} {vs['public']:>16s} "
              f"{vs['torchattacks']:>16s}")
    same = "latune_bf16_cl_vs_torchattacks_bf16_cl"
    if same in result["ratios"]:
        print(f"latune_bf16_cl / torchattacks_bf16_cl (same two settings on both): {result['ratios'][same]:.2f}x "
              f"[{result['ratios_best'][same]:.2f}x]")
    goals = result["goals"]
    for lat, met in result["goals_met_by_variant"].items():
        print(f"goals {lat:18s} " + ", ".join(
            f"{k} >= {goals[k]}x: {'met' if v else 'NOT met'}" for k, v in met.items()))
    mfu = result.get("bf16_preact_resnet18")
    if mfu:
        for name, v in mfu["images_per_s"].items():
            print(f"{mfu['arch']} bf16 channels_last {name}: {v:.1f} img/s, {mfu['achieved_tflops'][name]:.2f} "
                  f"TFLOP/s, MFU {100 * mfu['mfu'][name]:.2f}% of {mfu['peak_tflops']:g} TFLOP/s "
                  f"({mfu['flops_per_image']['pgd_train'] / 1e9:.2f} GFLOP/image)")


if __name__ == "__main__":
    raise SystemExit(main())
