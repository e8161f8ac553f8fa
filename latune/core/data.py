"""Data sets as device-resident uint8 tensors, plus batched batching/augmentation.

airbench-style: a whole data set is one uint8 tensor ``[N, C, H, W]`` on the run's device, so
shuffling, batching and augmentation are a few tensor ops per batch instead of a DataLoader with
per-sample Python and PIL. Normalisation is deliberately not done here: it lives inside the model so
that attacks operate in [0, 1] pixel space. Heavy imports (sklearn, torchvision) happen lazily inside
functions so importing this module does no work.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from latune.errors import DataError


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a data set; ``mean``/``std`` are per channel in [0, 1] units."""

    channels: int
    native_size: int | None  # None: varies per image (imagefolder)
    num_classes: int | None  # None: taken from the class folders (imagefolder)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    downloadable: bool  # torchvision can fetch it when download=True


DATASETS: dict[str, DatasetInfo] = {
    # digits ships with scikit-learn. Stats over all 1797 images after scaling 0..16 -> 0..255 uint8
    # (the train split depends on the seed, so the full set is the stable reference): 0.3053 / 0.3759.
    "digits": DatasetInfo(1, 8, 10, (0.3053,), (0.3759,), False),
    "mnist": DatasetInfo(1, 28, 10, (0.1307,), (0.3081,), True),
    "cifar10": DatasetInfo(3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), True),
    "cifar100": DatasetInfo(3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), True),
    "svhn": DatasetInfo(3, 32, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970), True),
    # ImageNet statistics: the usual choice for arbitrary natural-image folders.
    "imagefolder": DatasetInfo(3, None, None, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), False),
}

_IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp"})
_RESIZE_CHUNK = 4096  # bounds the float32 temporary when resizing e.g. 50k CIFAR images


@dataclass(frozen=True)
class Split:
    """``images``: uint8 ``[N, C, H, W]``; ``labels``: int64 ``[N]``; both on the same device."""

    images: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        # Cheap checks that catch the classic mistakes (HWC layout, int32 labels, split devices) early.
        if self.images.dtype != torch.uint8 or self.images.dim() != 4:
            raise ValueError(f"images must be uint8 [N,C,H,W], got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.dim() != 1:
            raise ValueError(f"labels must be int64 [N], got {self.labels.dtype} {tuple(self.labels.shape)}")
        if self.images.shape[0] != self.labels.shape[0] or self.images.device != self.labels.device:
            raise ValueError("images and labels must have the same length and device")

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class DataBundle:
    """train/val/test splits (all on one device) plus what the model needs to know about them."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]


def default_data_dir() -> Path:
    """``$LATUNE_DATA`` if set (and non-empty), else ``~/.cache/latune/data``."""
    env = os.environ.get("LATUNE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "latune" / "data"


def load_data(name: str, *, image_size: int, data_dir: str | os.PathLike | None = None, val_fraction: float = 0.15,
              test_fraction: float = 0.15, seed: int = 0, device: str | torch.device = "cpu", limit_train: int = 0,
              download: bool = True) -> DataBundle:
    """Load data set ``name`` as uint8 ``[N, C, image_size, image_size]`` splits on ``device``.

    digits: stratified train/val/test split of all images (``test_fraction`` and ``val_fraction`` of
    the total). Others: val is a stratified ``val_fraction`` of the official train split and test is
    the official test split (``test_fraction`` unused). Splits depend only on ``seed``.
    ``limit_train > 0`` keeps that many training images (stratified when possible), for small runs.
    Raises ValueError for an unknown name or bad fractions, DataError for missing/unusable files.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; allowed: {', '.join(DATASETS)}")
    if not (0.0 <= val_fraction < 1.0 and 0.0 <= test_fraction < 1.0 and val_fraction + test_fraction < 1.0):
        raise ValueError(f"need 0 <= val_fraction, test_fraction, sum < 1; got {val_fraction}, {test_fraction}")
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    info = DATASETS[name]
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()

    if name == "digits":
        images, labels, class_names = _load_digits()
        rest, test_idx = _split_indices(labels, round(test_fraction * len(labels)), seed)
        train_rel, val_rel = _split_indices(labels[rest], round(val_fraction * len(labels)), seed)
        train_idx, val_idx = rest[train_rel], rest[val_rel]
        test_images, test_labels = images, labels
    else:
        if name == "imagefolder":
            (images, labels), (test_images, test_labels), class_names = _load_imagefolder(root, image_size)
        else:
            (images, labels), (test_images, test_labels), class_names = _load_torchvision(name, root, download)
        train_idx, val_idx = _split_indices(labels, round(val_fraction * len(labels)), seed)
        test_idx = torch.arange(len(test_labels))

    if 0 < limit_train < len(train_idx):
        keep, _ = _split_indices(labels[train_idx], len(train_idx) - limit_train, seed)
        train_idx = train_idx[keep]

    def make(imgs: Tensor, labs: Tensor, idx: Tensor) -> Split:
        # Index on CPU first so only the kept images travel to the device; resize there (fast on GPU).
        out = _resize(imgs.index_select(0, idx).to(device), image_size)
        return Split(out, labs.index_select(0, idx).to(device))

    return DataBundle(name=name, train=make(images, labels, train_idx), val=make(images, labels, val_idx),
                      test=make(test_images, test_labels, test_idx),
                      num_classes=info.num_classes if info.num_classes is not None else len(class_names),
                      channels=info.channels, image_size=image_size, mean=info.mean, std=info.std,
                      class_names=tuple(class_names))


def iterate_batches(
    split: Split,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (uint8 images ``[B,C,H,W]``, int64 labels ``[B]``) on ``split``'s device, one epoch.

    With ``shuffle`` the order is ``torch.randperm(generator=generator)``; the generator must live on
    the split's device. Without shuffle batches are slices (views, no copy).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    n = len(split)
    stop = n - n % batch_size if drop_last else n
    order = torch.randperm(n, generator=generator, device=split.labels.device) if shuffle else None
    for start in range(0, stop, batch_size):
        if order is None:
            yield split.images[start : start + batch_size], split.labels[start : start + batch_size]
        else:
            idx = order[start : start + batch_size]
            yield split.images.index_select(0, idx), split.labels.index_select(0, idx)


def augment_batch(images: Tensor, generator: torch.Generator, *, crop_padding: int, flip: bool) -> Tensor:
    """Random zero-padded crop and horizontal flip, per image, in one gather; returns float32 in [0, 1].

    ``images``: uint8 ``[B,C,H,W]`` (or float already in [0, 1]); ``generator`` on the same device.
    Each image is shifted by independent offsets in ``[-crop_padding, crop_padding]`` (vacated pixels
    are 0) and mirrored with probability 0.5 if ``flip``. With no padding and no flip: ``to_float``.
    """
    if crop_padding < 0:
        raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
    if crop_padding == 0 and not flip:
        return to_float(images)
    b, c, h, w = images.shape
    dev, p = images.device, crop_padding
    # Work on the uint8 data (4x less memory traffic), convert once at the end.
    padded = F.pad(images, (p, p, p, p)) if p else images
    dy = torch.randint(0, 2 * p + 1, (b, 1), generator=generator, device=dev)
    dx = torch.randint(0, 2 * p + 1, (b, 1), generator=generator, device=dev)
    rows = dy + torch.arange(h, device=dev)  # [B, H] source rows in the padded image
    cols = torch.arange(w, device=dev).expand(b, w)
    if flip:
        # Flipping = reading columns right-to-left; folding it into the gather avoids a second copy.
        mirrored = torch.rand(b, 1, generator=generator, device=dev) < 0.5
        cols = torch.where(mirrored, w - 1 - cols, cols)
    cols = dx + cols  # [B, W]
    batch = torch.arange(b, device=dev)[:, None, None, None]
    chan = torch.arange(c, device=dev)[None, :, None, None]
    out = padded[batch, chan, rows[:, None, :, None], cols[:, None, None, :]]
    return to_float(out)


def to_float(images: Tensor) -> Tensor:
    """uint8 -> float32 / 255 (same shape/device); float input is assumed in [0, 1] and cast to float32."""
    if images.dtype == torch.uint8:
        return images.float().div_(255.0)
    if images.is_floating_point():
        return images.float()
    raise TypeError(f"expected uint8 or floating images, got {images.dtype}")


# ----------------------------------------------------------------------------------------------
# private helpers


def _split_indices(labels: Tensor, n_second: int, seed: int) -> tuple[Tensor, Tensor]:
    """Split ``range(len(labels))`` into (first, second) with ``len(second) == n_second``.

    Stratified by label when sklearn can (every class needs >= 2 members and both parts room for
    every class); otherwise a plain seeded shuffle, so tiny data sets (tests, limit_train) still work.
    """
    from sklearn.model_selection import train_test_split

    n = len(labels)
    idx = np.arange(n)
    if n_second <= 0:
        return torch.from_numpy(idx), torch.empty(0, dtype=torch.int64)
    if n_second >= n:
        return torch.empty(0, dtype=torch.int64), torch.from_numpy(idx)
    y = labels.numpy()
    counts = np.bincount(y)
    counts = counts[counts > 0]
    can_stratify = counts.min() >= 2 and min(n_second, n - n_second) >= len(counts)
    first, second = train_test_split(idx, test_size=n_second, random_state=seed, stratify=y if can_stratify else None)
    return torch.from_numpy(np.sort(first)), torch.from_numpy(np.sort(second))


def _resize(images: Tensor, size: int) -> Tensor:
    """uint8 ``[N,C,h,w]`` -> uint8 ``[N,C,size,size]``: bilinear + antialias on float, rounded."""
    if images.shape[-2:] == (size, size):
        return images
    chunks = [
        F.interpolate(chunk.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        .round_()
        .clamp_(0, 255)
        .to(torch.uint8)
        for chunk in images.split(_RESIZE_CHUNK)
    ]
    return torch.cat(chunks) if chunks else images.new_empty((0, images.shape[1], size, size))


def _load_digits() -> tuple[Tensor, Tensor, list[str]]:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8))
    return images[:, None], torch.from_numpy(d.target.astype(np.int64)), [str(i) for i in range(10)]


def _read_idx(path_without_gz: Path) -> np.ndarray:
    """Read an MNIST idx file, extracted or still ``.gz`` (so offline users need not gunzip)."""
    gz = path_without_gz.with_name(path_without_gz.name + ".gz")
    data = path_without_gz.read_bytes() if path_without_gz.exists() else gzip.decompress(gz.read_bytes())
    if len(data) < 4 or data[:3] != b"\x00\x00\x08":
        raise DataError(f"{path_without_gz} (or .gz) is truncated or not a uint8 idx file; replace it")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _mnist_files(root: Path) -> list[Path]:
    # torchvision.datasets.MNIST keeps the idx files in <root>/MNIST/raw (extracted names).
    raw = root / "MNIST" / "raw"
    return [raw / f"{p}-{k}-idx{d}-ubyte" for p in ("train", "t10k") for k, d in (("images", 3), ("labels", 1))]


def _load_mnist_split(root: Path, train: bool) -> tuple[Tensor, Tensor]:
    """uint8 ``[N,1,28,28]`` images and int64 ``[N]`` labels from ``root/MNIST/raw`` (.gz or extracted)."""
    raw, prefix = Path(root) / "MNIST" / "raw", "train" if train else "t10k"
    images = torch.from_numpy(_read_idx(raw / f"{prefix}-images-idx3-ubyte").copy())
    labels = torch.from_numpy(_read_idx(raw / f"{prefix}-labels-idx1-ubyte").astype(np.int64))
    return images[:, None], labels


# Where torchvision looks under data_dir and what to place there; used for the offline error message.
_TV_LAYOUT = {
    "mnist": ("MNIST/raw", "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
              "t10k-labels-idx1-ubyte.gz (gzipped or extracted)", None),
    "cifar10": ("cifar-10-batches-py", "data_batch_1..5, test_batch, batches.meta", "cifar-10-python.tar.gz"),
    "cifar100": ("cifar-100-python", "train, test, meta", "cifar-100-python.tar.gz"),
    "svhn": (".", "train_32x32.mat, test_32x32.mat", None),
}


def _load_torchvision(name: str, root: Path, download: bool):
    """((train images, labels), (test images, labels), class names) as CPU uint8 NCHW / int64."""
    import torchvision.datasets as tvd

    try:
        if name == "mnist":
            if download and not all(f.exists() or f.with_name(f.name + ".gz").exists() for f in _mnist_files(root)):
                tvd.MNIST(str(root), train=True, download=True)  # fetches (or just extracts) all four files
            train, test = _load_mnist_split(root, True), _load_mnist_split(root, False)
            return train, test, [str(i) for i in range(10)]
        if name == "svhn":
            sets = [tvd.SVHN(str(root), split=s, download=download) for s in ("train", "test")]
            pairs = [(torch.from_numpy(s.data), torch.from_numpy(s.labels.astype(np.int64))) for s in sets]
            return pairs[0], pairs[1], [str(i) for i in range(10)]
        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        sets = [cls(str(root), train=t, download=download) for t in (True, False)]
        # .data is NHWC numpy uint8; permute to NCHW and make contiguous once, here at load time.
        pairs = [(torch.from_numpy(s.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(s.targets)) for s in sets]
        return pairs[0], pairs[1], list(sets[0].classes)
    except DataError:
        raise
    except (RuntimeError, OSError, ValueError) as exc:
        folder, files, archive = _TV_LAYOUT[name]
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:120].rstrip(":")
        why = f"download failed: {reason}" if download else "download disabled"
        # torchvision extracts an archive already in root (md5-checked) without network when download=True.
        alt = f" (or {archive} into {root.resolve()} with download on)" if archive else ""
        raise DataError(
            f"{name} not found in {(root / folder).resolve()} ({why}); put {files} there{alt}, "
            f"or point --data-dir / LATUNE_DATA at a folder that has them"
        ) from None


def _list_class_images(folder: Path) -> tuple[list[str], list[tuple[Path, str]]]:
    if not folder.is_dir():
        raise DataError(f"imagefolder: {folder} does not exist; expected {folder}/<class>/<image files>")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    files = [
        (f, c)
        for c in classes
        for f in sorted((folder / c).iterdir())
        if f.suffix.lower() in _IMAGE_EXTENSIONS
    ]
    if not files:
        raise DataError(f"imagefolder: no images ({', '.join(sorted(_IMAGE_EXTENSIONS))}) in {folder}/<class>/")
    return classes, files


def _decode_square(path: Path, size: int) -> Tensor:
    """Decode to RGB uint8, resize the shorter side to ``size``, center-crop to ``size x size``."""
    import warnings

    from torchvision.io import ImageReadMode, decode_image

    try:
        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its image codecs for torchcodec; they still work and are load-time only.
            warnings.simplefilter("ignore", DeprecationWarning)
            img = decode_image(str(path), mode=ImageReadMode.RGB)
    except RuntimeError as exc:
        raise DataError(f"imagefolder: cannot decode {path}: {str(exc).splitlines()[0][:120]}") from None
    if img.dim() == 4:  # animated GIF: keep the first frame
        img = img[0]
    h, w = img.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    img = F.interpolate(img[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    return img[0, :, top : top + size, left : left + size].round_().clamp_(0, 255).to(torch.uint8)


def _load_imagefolder(root: Path, size: int):
    """Decode ``root/train/<class>/*`` and ``root/val/<class>/*`` once, at ``size``; val is the test split."""
    classes, train_files = _list_class_images(root / "train")
    _, test_files = _list_class_images(root / "val")
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted({c for _, c in test_files} - index.keys())
    if unknown:
        raise DataError(f"imagefolder: classes {unknown} in {root / 'val'} have no folder in {root / 'train'}")

    def stack(files: list[tuple[Path, str]]) -> tuple[Tensor, Tensor]:
        images = torch.stack([_decode_square(f, size) for f, _ in files])
        return images, torch.tensor([index[c] for _, c in files], dtype=torch.int64)

    return stack(train_files), stack(test_files), classes
