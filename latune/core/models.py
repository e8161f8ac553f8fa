"""Network architectures, the model builder and checkpoint I/O.

Every model built here takes images in [0, 1] pixel space, shape (N, C, H, W), and
returns logits of shape (N, K + M): K class logits followed by M transformation-label
logits (label augmentation, arXiv 2503.16179). Per-channel normalisation is the
first layer of the model so that attacks can perturb and clip in pixel space.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from latune.files import write_atomic

__all__ = ["MODELS", "Normalize", "build_model", "load_checkpoint", "save_checkpoint"]

_CHECKPOINT_FORMAT = "latune-checkpoint-v1"


class Normalize(nn.Module):
    """(x - mean) / std per channel.

    Input (N, C, H, W) in [0, 1] with C == len(mean); output same shape. mean/std are
    buffers, so they move with .to(device) and are saved in the state_dict. It lives
    inside the model so attacks work in [0, 1] pixel space.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != len(std) or len(mean) == 0:
            raise ValueError(f"mean and std need the same non-zero length, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        self.register_buffer("mean", torch.tensor([float(m) for m in mean]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _reject_large_stem(arch: str, small_stem: bool | None) -> None:
    # The CIFAR-style nets only have a 3x3 stride-1 stem; silently ignoring an explicit
    # request for the ImageNet stem would make the run differ from its config.
    if small_stem is False:
        raise ValueError(f"{arch} only has a small (3x3, stride 1) stem; small_stem=False is only valid for resnet50")


# ----------------------------------------------------------------------------- small CNN
def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    # bias=False: BatchNorm right after makes a conv bias redundant.
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _small_cnn(num_outputs: int, in_channels: int, image_size: int, small_stem: bool | None = None) -> nn.Module:
    """conv32-conv64-pool-conv128-pool-adaptive-avg(2x2)-fc; ~0.1M parameters.

    Works for any image_size >= 4 (digits 16x16, MNIST 28x28, CIFAR 32x32). Pooling to
    2x2 rather than 1x1 keeps a coarse layout, which a 3-conv net needs on digits.
    """
    _reject_large_stem("small_cnn", small_stem)
    return nn.Sequential(
        *_conv_bn_relu(in_channels, 32),
        *_conv_bn_relu(32, 64),
        nn.MaxPool2d(2),
        *_conv_bn_relu(64, 128),
        nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),  # flatten (not view) so channels_last inputs work
        nn.Linear(128 * 4, num_outputs),
    )


# ----------------------------------------------------------------------------- PreAct ResNet-18
class _PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016, 'Identity Mappings'), as in Rice et al. 2020."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # The projection shortcut sees the pre-activated input (the 'full pre-activation' variant).
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class _PreActResNet18(nn.Module):
    """CIFAR PreActResNet-18: 3x3 stem, [2, 2, 2, 2] blocks of 64/128/256/512, ~11.2M params.

    Parameter names match locuslab/robust_overfitting (conv1, layer1..4, bn, linear).
    Global average pooling replaces avg_pool2d(4) (identical at 32x32, valid at other sizes).
    """

    def __init__(self, num_outputs: int, in_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        planes, layers = 64, []
        for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers.append(nn.Sequential(_PreActBlock(planes, width, stride), _PreActBlock(width, width, 1)))
            planes = width
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
        out = F.adaptive_avg_pool2d(F.relu(self.bn(out)), 1)
        return self.linear(torch.flatten(out, 1))


def _preact_resnet18(num_outputs: int, in_channels: int, image_size: int, small_stem: bool | None = None) -> nn.Module:
    _reject_large_stem("preact_resnet18", small_stem)
    return _PreActResNet18(num_outputs, in_channels)


# ----------------------------------------------------------------------------- WideResNet-34-10
class _WideBasicBlock(nn.Module):
    """WRN basic block (BN-ReLU-conv x2) as in the TRADES / Madry CIFAR code, no dropout."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.conv_shortcut = None if self.equal_in_out else nn.Conv2d(in_planes, out_planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        # As in the reference: identity shortcut takes the raw input, the projection the activated one.
        return out + (x if self.conv_shortcut is None else self.conv_shortcut(act))


class _WideResNet(nn.Module):
    """WideResNet-depth-widen (Zagoruyko & Komodakis 2016); 34-10 has ~46.2M params.

    Kaiming-normal (fan_out) conv init, BN weight 1 / bias 0, zero linear bias, as in TRADES.
    """

    def __init__(self, num_outputs: int, in_channels: int, depth: int = 34, widen: int = 10):
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        blocks = []
        for i, stride in enumerate((1, 2, 2)):
            blocks.append(nn.Sequential(*[
                _WideBasicBlock(widths[i] if j == 0 else widths[i + 1], widths[i + 1], stride if j == 0 else 1)
                for j in range(n)
            ]))
        self.block1, self.block2, self.block3 = blocks
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_outputs)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.adaptive_avg_pool2d(F.relu(self.bn1(out)), 1)
        return self.fc(torch.flatten(out, 1))


def _wrn34_10(num_outputs: int, in_channels: int, image_size: int, small_stem: bool | None = None) -> nn.Module:
    _reject_large_stem("wrn34_10", small_stem)
    return _WideResNet(num_outputs, in_channels, depth=34, widen=10)


# ----------------------------------------------------------------------------- ResNet-50
def _resnet50(num_outputs: int, in_channels: int, image_size: int, small_stem: bool | None = None) -> nn.Module:
    """torchvision ResNet-50 (random init). small_stem=None -> True when image_size <= 64.

    The small stem (3x3 stride-1 conv1, no maxpool) is the usual 32x32 adaptation: the
    ImageNet stem would shrink a 32x32 image to 8x8 before the first residual stage.
    """
    if small_stem is None:
        small_stem = image_size <= 64
    model = torchvision.models.resnet50(weights=None, num_classes=num_outputs)
    if small_stem:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
    # Re-init a replaced conv1 the way torchvision initialises its convs.
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


MODELS: dict[str, Callable[..., nn.Module]] = {
    "small_cnn": _small_cnn,
    "preact_resnet18": _preact_resnet18,
    "wrn34_10": _wrn34_10,
    "resnet50": _resnet50,
}


def build_model(
    arch: str,
    *,
    num_classes: int,
    num_extra: int,
    in_channels: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    small_stem: bool | None = None,
) -> nn.Module:
    """nn.Sequential(Normalize(mean, std), MODELS[arch](num_classes + num_extra, ...)).

    Input (N, in_channels, H, W) in [0, 1]; output logits (N, num_classes + num_extra),
    class logits first. The returned module carries `latune_spec` (JSON-able dict of
    arch + these kwargs, enough to rebuild it) and `num_classes` / `num_extra` ints.
    Weights are drawn from the global torch RNG: seed it first for reproducibility.
    """
    if arch not in MODELS:
        raise ValueError(f"unknown architecture {arch!r}; allowed: {', '.join(MODELS)}")
    if num_classes < 1 or num_extra < 0:
        raise ValueError(f"need num_classes >= 1 and num_extra >= 0, got {num_classes} and {num_extra}")
    if len(mean) != in_channels or len(std) != in_channels:
        raise ValueError(f"mean/std need one value per input channel ({in_channels}), got {list(mean)} / {list(std)}")
    net = MODELS[arch](num_classes + num_extra, in_channels, image_size, small_stem)
    model = nn.Sequential(Normalize(mean, std), net)
    model.latune_spec = {
        "arch": arch,
        "num_classes": int(num_classes),
        "num_extra": int(num_extra),
        "in_channels": int(in_channels),
        "image_size": int(image_size),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "small_stem": None if small_stem is None else bool(small_stem),
    }
    model.num_classes = int(num_classes)
    model.num_extra = int(num_extra)
    return model


# ----------------------------------------------------------------------------- checkpoints
def _plain(value: Any, where: str) -> Any:
    """Copy of `value` made only of types torch.load(weights_only=True) accepts.

    Failing here, at save time, beats writing a checkpoint that cannot be loaded.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} must be str or int for a checkpoint")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # numpy scalars
        return _plain(value.item(), where)
    raise TypeError(f"{where}: {type(value).__name__} cannot be stored in a weights_only checkpoint")


def save_checkpoint(
    path: str | os.PathLike, model: nn.Module, *, config: dict | None = None, extra: dict | None = None
) -> None:
    """Atomically write a latune checkpoint of a model made by build_model.

    Writes {"format", "spec", "config", "state_dict" (CPU tensors), "extra"} with
    latune.files.write_atomic (temp file, fsync, rename), so readers never see a partial
    file. config/extra may hold only None/bool/int/float/str/tensors/lists/dicts (tuples
    become lists, numpy scalars Python numbers); anything else raises TypeError.
    """
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile so keys have no prefix
    spec = getattr(model, "latune_spec", None)
    if not isinstance(spec, dict):
        raise ValueError("model has no latune_spec; build it with latune.models.build_model")
    payload = {
        "format": _CHECKPOINT_FORMAT,
        "spec": _plain(spec, "spec"),
        "config": _plain(config, "config"),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": _plain(extra, "extra"),
    }
    write_atomic(path, lambda handle: torch.save(payload, handle))


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> nn.Module:
    """Rebuild a model from a save_checkpoint file; weights loaded strictly, eval() mode.

    The result also has latune_spec, latune_config (dict, {} when none was saved),
    latune_extra and num_classes / num_extra. With a str/torch.device map_location the
    model is moved there. A file that is not a latune checkpoint raises ValueError.
    """
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except OSError:
        raise  # missing / unreadable file: not a format problem, keep the precise error
    except Exception as err:  # garbage bytes surface as many types (UnpicklingError, IndexError, ...)
        raise ValueError(f"{os.fspath(path)!r} is not a latune checkpoint (unreadable by torch.load): {err}") from err
    if not isinstance(ckpt, dict) or ckpt.get("format") != _CHECKPOINT_FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"{os.fspath(path)!r} is not a latune checkpoint (expected format "
                         f"{_CHECKPOINT_FORMAT!r}, found {found!r})")
    if not isinstance(ckpt.get("spec"), dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"{os.fspath(path)!r}: latune checkpoint lacks 'spec' or 'state_dict'")
    spec = dict(ckpt["spec"])
    try:
        # fork_rng: the random init is overwritten anyway; loading must not shift the
        # caller's RNG stream (e.g. evaluating a checkpoint in the middle of a seeded run).
        with torch.random.fork_rng(devices=[]):
            model = build_model(**spec)
    except TypeError as err:
        raise ValueError(f"{os.fspath(path)!r}: checkpoint spec {spec} does not match build_model: {err}") from err
    model.load_state_dict(ckpt["state_dict"], strict=True)
    if isinstance(map_location, (str, torch.device)):
        model.to(map_location)
    model.eval()
    model.latune_config = ckpt.get("config") or {}
    model.latune_extra = ckpt.get("extra")
    return model
