"""Tests for latune.data: offline, CPU only, a few seconds."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from latune.core.data import (
    DATASETS,
    DataBundle,
    DataError,
    Split,
    _load_mnist_split,
    augment_batch,
    default_data_dir,
    iterate_batches,
    load_data,
    to_float,
)

# the real MNIST test set lies in shared/ beside the checkout (CI and developers); not available to users
MNIST_TEST = next((p for p in (Path(__file__).resolve().parents[2] / "shared/data/mnist-test",
                               Path("/work/shared/data/mnist-test")) if p.is_dir()),
                  Path("/work/shared/data/mnist-test"))
needs_mnist = pytest.mark.skipif(
    not (MNIST_TEST / "t10k-images-idx3-ubyte.gz").exists(),
    reason=f"real MNIST test set not present in {MNIST_TEST}",
)


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    return load_data("digits", image_size=8, seed=0)


def _image_keys(split: Split) -> set[bytes]:
    return {img.numpy().tobytes() for img in split.images}


# ---------------------------------------------------------------------------------------------- registry


def test_registry_is_plain_data():
    assert set(DATASETS) == {"digits", "mnist", "cifar10", "cifar100", "svhn", "imagefolder"}
    for info in DATASETS.values():
        assert len(info.mean) == len(info.std) == info.channels
        assert all(0 < m < 1 for m in info.mean) and all(0 < s < 1 for s in info.std)
    assert DATASETS["imagefolder"].num_classes is None


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LATUNE_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
    monkeypatch.delenv("LATUNE_DATA")
    assert default_data_dir() == Path.home() / ".cache" / "latune" / "data"


def test_digits_mean_std_matches_registry(digits):
    x = torch.cat([digits.train.images, digits.val.images, digits.test.images]).float() / 255
    assert x.mean().item() == pytest.approx(DATASETS["digits"].mean[0], abs=1e-3)
    assert x.std().item() == pytest.approx(DATASETS["digits"].std[0], abs=1e-3)


# ---------------------------------------------------------------------------------------------- digits


def test_digits_shapes_dtypes_sizes(digits):
    assert (digits.num_classes, digits.channels, digits.image_size) == (10, 1, 8)
    assert digits.class_names == tuple(str(i) for i in range(10))
    for split in (digits.train, digits.val, digits.test):
        assert split.images.dtype == torch.uint8 and split.labels.dtype == torch.int64
        assert split.images.shape[1:] == (1, 8, 8) and len(split) == split.images.shape[0]
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1257, 270, 270)
    assert digits.train.images.max() == 255 and digits.train.images.min() == 0


def test_digits_splits_disjoint_and_stratified(digits):
    # Sizes sum to the full set and (near-)duplicate-free pixel contents don't leak across splits.
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    tr, va, te = (_image_keys(s) for s in (digits.train, digits.val, digits.test))
    # digits has a few exact duplicate images, so allow a handful of coincidental matches only.
    assert len(tr & va) + len(tr & te) + len(va & te) < 10
    overall = torch.bincount(torch.cat([digits.train.labels, digits.val.labels, digits.test.labels])) / 1797
    for split in (digits.train, digits.val, digits.test):
        frac = torch.bincount(split.labels, minlength=10) / len(split)
        assert (frac > 0).all()
        assert torch.allclose(frac, overall, atol=0.01)


def test_digits_deterministic_per_seed(digits):
    again = load_data("digits", image_size=8, seed=0)
    other = load_data("digits", image_size=8, seed=1)
    assert torch.equal(again.train.images, digits.train.images)
    assert torch.equal(again.test.labels, digits.test.labels)
    assert not torch.equal(other.test.images, digits.test.images)


@pytest.mark.parametrize("size", [16, 32])
def test_digits_resize(size, digits):
    b = load_data("digits", image_size=size, seed=0)
    assert b.train.images.shape[1:] == (1, size, size) and b.image_size == size
    assert b.train.images.dtype == torch.uint8
    # Same split, just upsampled: labels identical and downsampling back is close to the original.
    assert torch.equal(b.train.labels, digits.train.labels)
    down = torch.nn.functional.interpolate(b.train.images[:50].float(), size=8, mode="area")
    assert (down - digits.train.images[:50].float()).abs().mean() < 20


def test_limit_train_and_fraction_validation():
    b = load_data("digits", image_size=8, limit_train=100, seed=3)
    assert len(b.train) == 100 and len(b.val) == 270
    assert torch.bincount(b.train.labels, minlength=10).min() >= 8  # stratified
    with pytest.raises(ValueError):
        load_data("digits", image_size=8, val_fraction=0.6, test_fraction=0.5)


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown data set 'x'; allowed: digits, mnist, cifar10, cifar100, svhn, "
                                         "imagefolder"):
        load_data("x", image_size=8)


# ---------------------------------------------------------------------------------------------- mnist & co


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@needs_mnist
def test_mnist_test_split_from_idx(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in MNIST_TEST.glob("t10k-*.gz"):
        shutil.copy(f, raw / f.name)
    images, labels = _load_mnist_split(tmp_path, train=False)
    assert images.shape == (10000, 1, 28, 28) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and labels[0].item() == 7 and labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert images.max() == 255

    # Fake the train files from the first 2000 test images so the full load_data path runs offline.
    _write_idx(raw / "train-images-idx3-ubyte.gz", images[:2000, 0].numpy())
    _write_idx(raw / "train-labels-idx1-ubyte.gz", labels[:2000].numpy())
    b = load_data("mnist", image_size=28, data_dir=tmp_path, val_fraction=0.1, limit_train=500, download=False)
    assert (len(b.train), len(b.val), len(b.test)) == (500, 200, 10000)
    assert b.channels == 1 and b.train.images.shape[1:] == (1, 28, 28) and b.test.labels[0].item() == 7
    assert torch.equal(b.test.images[0], images[0])
    small = load_data("mnist", image_size=14, data_dir=tmp_path, val_fraction=0.1, limit_train=50, download=False)
    assert small.test.images.shape == (10000, 1, 14, 14)


@needs_mnist
def test_mnist_missing_train_files_offline(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in MNIST_TEST.glob("t10k-*.gz"):
        shutil.copy(f, raw / f.name)
    with pytest.raises(DataError, match="train-images-idx3-ubyte"):
        load_data("mnist", image_size=28, data_dir=tmp_path, download=False)


@pytest.mark.parametrize(
    "name, folder, files",
    [
        ("mnist", "MNIST/raw", "t10k-labels-idx1-ubyte.gz"),
        ("cifar10", "cifar-10-batches-py", "data_batch_1"),
        ("cifar100", "cifar-100-python", "meta"),
        ("svhn", "", "train_32x32.mat"),
    ],
)
def test_missing_files_offline_error(tmp_path, name, folder, files):
    with pytest.raises(DataError) as info:
        load_data(name, image_size=32, data_dir=tmp_path, download=False)
    msg = str(info.value)
    assert "\n" not in msg and name in msg and files in msg and "--data-dir" in msg and "LATUNE_DATA" in msg
    assert str((tmp_path / folder).resolve()) in msg
    assert info.value.__cause__ is None and info.value.__suppress_context__


# ---------------------------------------------------------------------------------------------- imagefolder

# torchvision 0.29 deprecates write_png (used only to build the fixture tree) in favour of torchcodec.
pytestmark_png = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _write_png(path: Path, color: tuple[int, int, int], h: int, w: int, gray: bool = False) -> None:
    from torchvision.io import write_png

    img = torch.tensor(color, dtype=torch.uint8)[:, None, None].expand(3, h, w).clone()
    write_png(img[:1] if gray else img, str(path))


def _image_tree(root: Path) -> None:
    colors = {"cat": (255, 0, 0), "dog": (0, 0, 255)}  # class is recoverable from the pixels
    for part, n in (("train", 4), ("val", 2)):
        for cls, color in colors.items():
            (root / part / cls).mkdir(parents=True)
            for i in range(n):
                _write_png(root / part / cls / f"{i}.png", color, 10 + 3 * i, 20 - 2 * i)
    (root / "train" / "cat" / "notes.txt").write_text("not an image")


@pytestmark_png
def test_imagefolder(tmp_path):
    _image_tree(tmp_path)
    b = load_data("imagefolder", image_size=12, data_dir=tmp_path, val_fraction=0.25)
    assert b.class_names == ("cat", "dog") and b.num_classes == 2 and b.channels == 3
    assert (len(b.train), len(b.val), len(b.test)) == (6, 2, 4)
    for split in (b.train, b.val, b.test):
        assert split.images.shape[1:] == (3, 12, 12) and split.images.dtype == torch.uint8
        red = split.images[:, 0].float().mean((1, 2)) > split.images[:, 2].float().mean((1, 2))
        assert torch.equal(split.labels, (~red).long())  # cat=0 is red, dog=1 is blue
    assert sorted(b.val.labels.tolist()) == [0, 1]  # stratified carve-out


@pytestmark_png
def test_imagefolder_grayscale_becomes_rgb(tmp_path):
    _image_tree(tmp_path)
    _write_png(tmp_path / "val" / "dog" / "gray.png", (128, 0, 0), 9, 9, gray=True)
    b = load_data("imagefolder", image_size=8, data_dir=tmp_path, val_fraction=0.25)
    assert len(b.test) == 5 and b.test.images.shape[1] == 3


@pytestmark_png
def test_imagefolder_missing_or_empty(tmp_path):
    with pytest.raises(DataError, match="train"):
        load_data("imagefolder", image_size=8, data_dir=tmp_path)
    (tmp_path / "train" / "cat").mkdir(parents=True)
    (tmp_path / "val" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_data("imagefolder", image_size=8, data_dir=tmp_path)


# ---------------------------------------------------------------------------------------------- batching


def _toy_split(n: int = 23) -> Split:
    images = torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 1, 2, 2).clone()
    return Split(images, torch.arange(n, dtype=torch.int64))


def test_split_validates_contract():
    with pytest.raises(ValueError):
        Split(torch.zeros(3, 1, 2, 2), torch.zeros(3, dtype=torch.int64))  # float images
    with pytest.raises(ValueError):
        Split(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64))


def test_iterate_batches_epoch_and_drop_last():
    split = _toy_split()
    batches = list(iterate_batches(split, 5, generator=torch.Generator().manual_seed(0)))
    assert [len(y) for _, y in batches] == [5, 5, 5, 5, 3]
    seen = torch.cat([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(23)) and seen.tolist() != list(range(23))
    for x, y in batches:  # images travel with their labels
        assert x.dtype == torch.uint8 and torch.equal(x[:, 0, 0, 0].long(), y)
    dropped = list(iterate_batches(split, 5, generator=torch.Generator().manual_seed(0), drop_last=True))
    assert [len(y) for _, y in dropped] == [5, 5, 5, 5]
    ordered = torch.cat([y for _, y in iterate_batches(split, 7, shuffle=False)])
    assert ordered.tolist() == list(range(23))


def test_iterate_batches_reproducible():
    split = _toy_split()

    def order(seed: int) -> list[int]:
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([y for _, y in iterate_batches(split, 4, generator=gen)]).tolist()

    assert order(1) == order(1) and order(1) != order(2)


# ---------------------------------------------------------------------------------------------- augmentation


def test_to_float():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8)
    assert torch.allclose(to_float(x), torch.tensor([0.0, 0.2, 1.0]))
    assert to_float(x).dtype == torch.float32


def test_augment_identity_without_crop_or_flip():
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    out = augment_batch(x, torch.Generator().manual_seed(0), crop_padding=0, flip=False)
    assert out.dtype == torch.float32 and torch.equal(out, x.float() / 255)


def test_augment_range_shape_and_reproducible():
    x = torch.randint(0, 256, (16, 3, 10, 10), dtype=torch.uint8)
    a = augment_batch(x, torch.Generator().manual_seed(5), crop_padding=2, flip=True)
    b = augment_batch(x, torch.Generator().manual_seed(5), crop_padding=2, flip=True)
    c = augment_batch(x, torch.Generator().manual_seed(6), crop_padding=2, flip=True)
    assert a.shape == x.shape and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    # float input in [0, 1] is accepted and gives the same result.
    assert torch.equal(augment_batch(x.float() / 255, torch.Generator().manual_seed(5), crop_padding=2, flip=True), a)


def test_augment_crop_shifts_marker_by_at_most_padding():
    n, size, p = 64, 12, 3
    x = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    x[:, 0, 5, 6] = 255  # one marker pixel, far enough from the border to survive any shift
    out = augment_batch(x, torch.Generator().manual_seed(0), crop_padding=p, flip=False)
    assert (out.flatten(1).sum(1) == 1).all()  # exactly one marker pixel, nothing else appears
    pos = out[:, 0].flatten(1).argmax(1)
    dy, dx = pos // size - 5, pos % size - 6
    assert dy.abs().max() <= p and dx.abs().max() <= p
    assert len(set(zip(dy.tolist(), dx.tolist()))) > 10  # offsets are per image, not one per batch
    # A full-image crop check: each output equals the zero-padded original shifted by (dy, dx).
    img = torch.randint(1, 256, (1, 1, size, size), dtype=torch.uint8).expand(n, 1, size, size)
    shifted = augment_batch(img, torch.Generator().manual_seed(0), crop_padding=p, flip=False)
    padded = torch.nn.functional.pad(img[0, 0], (p, p, p, p)).float() / 255
    for i in range(n):
        y0, x0 = p - dy[i].item(), p - dx[i].item()
        assert torch.equal(shifted[i, 0], padded[y0 : y0 + size, x0 : x0 + size])


def test_augment_flip_is_per_image_mirror():
    x = torch.randint(0, 256, (200, 3, 5, 7), dtype=torch.uint8)
    out = augment_batch(x, torch.Generator().manual_seed(0), crop_padding=0, flip=True)
    plain, mirror = x.float() / 255, x.flip(-1).float() / 255
    is_plain = (out == plain).flatten(1).all(1)
    is_mirror = (out == mirror).flatten(1).all(1)
    assert (is_plain ^ is_mirror).all()  # every image is exactly one of the two
    assert 60 < is_mirror.sum().item() < 140  # ~ p = 0.5
    again = augment_batch(x, torch.Generator().manual_seed(0), crop_padding=0, flip=True)
    assert torch.equal(out, again)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_everything_stays_on_cuda():
    b = load_data("digits", image_size=16, device="cuda", limit_train=200)
    assert b.train.images.is_cuda and b.test.labels.is_cuda
    gen = torch.Generator(device="cuda").manual_seed(0)
    x, y = next(iterate_batches(b.train, 64, generator=gen))
    out = augment_batch(x, gen, crop_padding=2, flip=True)
    assert x.is_cuda and y.is_cuda and out.is_cuda and out.dtype == torch.float32 and out.shape == (64, 1, 16, 16)
