"""What every bench_train variant shares: the workload constants, the images, the model and the optimiser.

All variants train latune's model (``latune.core.models.build_model``, seeded as ``latune.core.train.setup``
seeds it) on the same real images (MNIST test images resized to 32x32 and replicated to 3 channels;
scikit-learn digits when MNIST is absent) with the same optimiser, so only the training loop differs.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from latune.core import data as ldata
from latune.core.data import DataBundle, Split
from latune.core.models import build_model

EPS, ALPHA, STEPS = 8 / 255, 2 / 255, 10  # PGD-10, l_inf radius and step in [0,1] pixel units
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4  # SGD, constant schedule
CROP_PADDING, FLIP = 4, True  # standard augmentation: random crop with 4 px zero padding, horizontal flip
NUM_CLASSES, IMAGE_SIZE, CHANNELS = 10, 32, 3
# shared/ beside the checkout holds the real MNIST test set (developers and CI only; users fall back to digits)
_BESIDE_CHECKOUT = Path(__file__).resolve().parents[2] / "shared/data/mnist-test"
DEFAULT_MNIST = Path(os.environ.get("LATUNE_BENCH_MNIST") or
                     (_BESIDE_CHECKOUT if _BESIDE_CHECKOUT.is_dir() else "/work/shared/data/mnist-test"))


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


def sync(device: torch.device) -> None:
    """Wait for queued device work, so a timer read afterwards covers it (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def new_model(arch: str, bundle: DataBundle, seed: int, device: torch.device, channels_last: bool = False) -> nn.Module:
    """The same initialisation latune's setup gives a run with LA off (seeded global RNG, then build)."""
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=bundle.num_classes, num_extra=0, in_channels=bundle.channels,
                        image_size=bundle.image_size, mean=bundle.mean, std=bundle.std)
    return model.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)


def new_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """SGD as every variant uses it (latune's loop builds the same one from its config)."""
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
