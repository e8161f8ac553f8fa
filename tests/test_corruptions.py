"""Tests for latune.corruptions: contracts, severity ordering, seeds, sizes, the .npy loader, and
agreement with the libraries make_cifar_c.py used (scipy, Pillow, literal ports) where those exist here."""

from __future__ import annotations

import colorsys
import io
import math
from itertools import pairwise

import numpy as np
import pytest
import torch
import torch.nn.functional as nnf

from latune.core import _corruption_ops as ops
from latune.core.corruptions import (
    CORRUPTIONS,
    FAMILIES,
    SEVERITIES,
    CorruptionFileError,
    available_corruption_files,
    corrupt,
    load_corruption_files,
)

# Corruptions that draw nothing from the generator.
DETERMINISTIC = {"defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression"}

# Where mean |corrupt(x, s) - x| is not non-decreasing in s because make_cifar_c.py's constants are not:
# name -> (reason, check on the five distances d[0..4]).
NOT_MONOTONE = {
    # sigma is (0.05, 0.25, 0.4, 0.25, 0.4) and only the swap iterations (1, 1, 1, 2, 2) grow; on smooth
    # images more blur pulls swapped pixels back towards the original. The iteration step must show.
    "glass_blur": ("sigma goes up and down; only iterations grow", lambda d: max(d[:3]) < min(d[3:])),
    # The random affine's jitter (0.08 .. 0.03 of the size) shrinks with severity while the local elastic
    # field grows (alpha 0 .. 0.1 of the size, sigma 0.2 .. 0.03): the affine moves pixels the most.
    "elastic_transform": ("affine jitter shrinks with severity", lambda d: all(b < a for a, b in pairwise(d))),
    # Image weight (1, 1, 0.9, 0.85, 0.75) falls while frost weight (0.2, 0.3, 0.4, 0.4, 0.45) stalls at
    # 3 -> 4: the darkening cancels part of the frost's brightening, so the distance plateaus after 3.
    "frost": ("image weight falls, frost weight stalls", lambda d: d[0] < d[1] < d[2] and min(d[3:]) > 0.85 * d[2]),
}
# Relative slack for float noise; motion_blur's severities 3 and 4 ((6, 2) and (8, 2)) differ only in
# taps whose weight is exp(-7^2 / 8) < 3e-3 of the total, so their distances are nearly equal.
MONOTONE_RTOL = 1e-4


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    """(gray [24,1,32,32], colour [24,3,32,32]) sklearn digits upsampled 8 -> 32, in [0, 1].

    The colour copy paints each digit in a class colour on a darker, differently tinted background,
    so hue, saturation and per-channel paths all see real variation.
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = torch.arange(0, 1797, 75)[:24]
    x = torch.from_numpy(d.images[idx.numpy()]).float()[:, None] / 16
    x = nnf.interpolate(x, size=32, mode="bilinear", align_corners=False).clamp(0, 1)
    labels = torch.from_numpy(d.target[idx.numpy()])
    palette = torch.tensor([[1, .2, .2], [.2, 1, .2], [.2, .2, 1], [1, 1, .2], [1, .2, 1], [.2, 1, 1],
                            [1, .6, .2], [.6, .2, 1], [.9, .9, .9], [.5, 1, .5]])  # fmt: skip
    fg = palette[labels][:, :, None, None]
    bg = 0.5 * (1 - 0.7 * palette[(labels + 3) % 10])[:, :, None, None]
    return x, x * fg + (1 - x) * bg


def _seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_registry():
    assert list(FAMILIES) == ["noise", "blur", "weather", "digital"]
    assert CORRUPTIONS == sum(FAMILIES.values(), ())
    assert len(CORRUPTIONS) == len(set(CORRUPTIONS)) == 15
    assert SEVERITIES == (1, 2, 3, 4, 5)


@pytest.mark.parametrize("severity", SEVERITIES)
@pytest.mark.parametrize("name", CORRUPTIONS)
def test_contract_and_changes_each_image(digits, name, severity):
    x = digits[1]
    before = x.clone()
    y = corrupt(x, name, severity, generator=_seeded())
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    assert y.data_ptr() != x.data_ptr() and torch.equal(x, before)
    assert y.min() >= 0 and y.max() <= 1 and torch.isfinite(y).all()
    assert ((y - x).abs().amax(dim=(1, 2, 3)) > 1e-3).all(), "some image came back (nearly) unchanged"


@pytest.mark.parametrize("name", CORRUPTIONS)
@pytest.mark.parametrize("channels", [1, 3])
def test_distortion_grows_with_severity(digits, name, channels):
    x = digits[0] if channels == 1 else digits[1]
    d = [float((corrupt(x, name, s, generator=_seeded()) - x).abs().mean()) for s in SEVERITIES]
    if name in NOT_MONOTONE:
        reason, check = NOT_MONOTONE[name]
        assert check(d), f"{name} ({reason}): {d}"
    else:
        assert all(b >= a * (1 - MONOTONE_RTOL) for a, b in pairwise(d)), d


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_seeded(digits, name):
    x = digits[1][:8]
    a = corrupt(x, name, 3, generator=_seeded(1))
    assert torch.equal(a, corrupt(x, name, 3, generator=_seeded(1)))
    other = corrupt(x, name, 3, generator=_seeded(2))
    assert torch.equal(a, other) == (name in DETERMINISTIC)
    assert corrupt(x, name, 3).shape == x.shape  # generator=None: torch's default generator


@pytest.mark.parametrize("name", CORRUPTIONS)
@pytest.mark.parametrize(("channels", "size"), [(1, 32), (1, 28), (3, 28), (3, 64)])
def test_channels_and_sizes(digits, name, channels, size):
    x = digits[0 if channels == 1 else 1][:6]
    x = nnf.interpolate(x, size=size, mode="bilinear", antialias=True).clamp(0, 1) if size != 32 else x
    for severity in (1, 5):
        y = corrupt(x, name, severity, generator=_seeded())
        assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
        assert ((y - x).abs().amax(dim=(1, 2, 3)) > 1e-3).all()


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_dtypes_kept(digits, dtype):
    for name in CORRUPTIONS:
        y = corrupt(digits[1][:2].to(dtype), name, 2, generator=_seeded())
        assert y.dtype == dtype and y.min() >= 0 and y.max() <= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_contract(digits):
    x = digits[1][:4].cuda()
    for name in CORRUPTIONS:
        g = torch.Generator(device="cuda").manual_seed(0)
        y = corrupt(x, name, 5, generator=g)
        assert y.device == x.device and y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    with pytest.raises(ValueError, match="generator: on cpu"):
        corrupt(x, "gaussian_noise", 1, generator=_seeded())


def test_bad_arguments(digits):
    x = digits[1][:2]
    with pytest.raises(ValueError, match=r"^corruption: unknown 'foo'; allowed: gaussian_noise, shot_noise"):
        corrupt(x, "foo", 1)
    for severity in (0, 6, True, 2.0, "3"):
        with pytest.raises(ValueError, match=r"^severity: unknown .*; allowed: 1, 2, 3, 4, 5$"):
            corrupt(x, "fog", severity)
    for bad in ((x * 255).to(torch.uint8), x[0], x[:, :2], x[:, :, :30], x[:, :, :4, :4]):
        with pytest.raises(ValueError, match="^images: "):
            corrupt(bad, "fog", 1)
    assert corrupt(x[:0], "glass_blur", 5).shape == (0, 3, 32, 32)


# ----------------------------------------------------------------------------------------------- released files


def _write_release(folder, names, n=4, size=32, channels=3):
    rng = np.random.default_rng(0)
    for name in names:
        np.save(folder / f"{name}.npy", rng.integers(0, 256, (5 * n, size, size, channels), dtype=np.uint8))
    np.save(folder / "labels.npy", np.tile(np.arange(n, dtype=np.uint8), 5))


def test_load_corruption_files(tmp_path):
    _write_release(tmp_path, ["fog", "snow"])
    assert available_corruption_files(tmp_path) == ("snow", "fog")  # CORRUPTIONS order
    assert available_corruption_files(tmp_path / "absent") == ()
    raw = np.load(tmp_path / "fog.npy")
    images, labels = load_corruption_files(str(tmp_path), "fog", 3)
    assert images.dtype == torch.uint8 and images.shape == (4, 3, 32, 32) and images.is_contiguous()
    assert torch.equal(images, torch.from_numpy(raw[8:12]).permute(0, 3, 1, 2))
    assert labels.dtype == torch.int64 and labels.tolist() == [0, 1, 2, 3]


def test_load_corruption_files_errors(tmp_path):
    with pytest.raises(CorruptionFileError, match=f"expected {tmp_path / 'fog.npy'}") as info:
        load_corruption_files(tmp_path, "fog", 1)
    assert isinstance(info.value, FileNotFoundError)
    _write_release(tmp_path, ["fog"])
    (tmp_path / "labels.npy").unlink()
    with pytest.raises(FileNotFoundError, match="labels.npy"):
        load_corruption_files(tmp_path, "fog", 1)
    with pytest.raises(ValueError, match="^corruption: unknown 'speckle_noise'"):
        load_corruption_files(tmp_path, "speckle_noise", 1)
    np.save(tmp_path / "labels.npy", np.zeros(7, dtype=np.uint8))
    with pytest.raises(ValueError, match="expected 20 labels"):
        load_corruption_files(tmp_path, "fog", 1)
    np.save(tmp_path / "fog.npy", np.zeros((7, 32, 32, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"expected uint8 \[5\*N, H, W, C\]"):
        load_corruption_files(tmp_path, "fog", 1)


# ----------------------------------------------------------------------------------------------- vs the originals


def test_zoom_blur_matches_scipy(digits):
    scipy_zoom = pytest.importorskip("scipy.ndimage").zoom

    def clipped_zoom(img, factor):  # make_cifar_c.py, verbatim logic
        h = img.shape[0]
        ch = int(np.ceil(h / factor))
        top = (h - ch) // 2
        img = scipy_zoom(img[top:top + ch, top:top + ch], (factor, factor, 1), order=1)
        trim = (img.shape[0] - h) // 2
        return img[trim:trim + h, trim:trim + h]

    x = digits[1][:2].double()
    img = x[1].permute(1, 2, 0).numpy()
    factors = np.arange(1, 1.26, 0.01)
    ref = (img + sum(clipped_zoom(img, z) for z in factors)) / (len(factors) + 1)
    np.testing.assert_allclose(corrupt(x, "zoom_blur", 5)[1].permute(1, 2, 0).numpy(), ref, atol=1e-12)


def test_pixelate_matches_pillow(digits):
    from PIL import Image

    x = digits[1][:1]
    for severity, c in zip(SEVERITIES, [0.95, 0.9, 0.85, 0.75, 0.65], strict=True):
        got = corrupt(x, "pixelate", severity)[0]
        for ch in range(3):
            im = Image.fromarray(x[0, ch].numpy(), mode="F")
            im = im.resize((int(32 * c),) * 2, Image.BOX).resize((32, 32), Image.BOX)
            np.testing.assert_allclose(got[ch].numpy(), np.asarray(im), atol=1e-6)


def test_jpeg_matches_pillow(digits):
    from PIL import Image

    x = digits[1][:2]
    got = corrupt(x, "jpeg_compression", 5)
    for i in range(2):
        buf = io.BytesIO()
        Image.fromarray((x[i].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(buf, "JPEG", quality=40)
        ref = np.asarray(Image.open(buf), dtype=np.float32) / 255
        np.testing.assert_allclose(got[i].permute(1, 2, 0).numpy(), ref, atol=1e-6)


def test_brightness_matches_hsv(digits):
    x = digits[1][:1].double()
    got = corrupt(x, "brightness", 5)[0].permute(1, 2, 0).reshape(-1, 3).numpy()
    pixels = x[0].permute(1, 2, 0).reshape(-1, 3).numpy()
    ref = [colorsys.hsv_to_rgb(h, s, min(v + 0.3, 1)) for h, s, v in (colorsys.rgb_to_hsv(*p) for p in pixels)]
    np.testing.assert_allclose(got, np.array(ref), atol=1e-12)


def test_defocus_kernel_matches_cv2_recipe():
    correlate = pytest.importorskip("scipy.ndimage").correlate
    grid = np.arange(-8, 9)  # make_cifar_c.py's disk(): 17x17, then a 3x3 cv2.GaussianBlur (reflect-101)
    for radius, alias in [(0.3, 0.4), (1, 0.2), (1.5, 0.1)]:
        disk = ((grid[:, None] ** 2 + grid[None] ** 2) <= radius**2).astype(np.float64)
        g = np.exp(-((np.arange(3) - 1) ** 2) / (2 * alias**2))
        ref = correlate(disk / disk.sum(), np.outer(g, g) / g.sum() ** 2, mode="mirror")
        got = ops.disk_kernel(radius, alias).double().numpy()
        half = got.shape[0] // 2
        np.testing.assert_allclose(got, ref[8 - half:9 + half, 8 - half:9 + half], atol=1e-7)
        assert np.abs(ref).sum() == pytest.approx(np.abs(got).sum(), abs=1e-6)  # nothing cropped away


def test_motion_blur_matches_imagemagick_rule():
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64, generator=_seeded())
    angles = torch.tensor([-40.0, 17.0], dtype=torch.float64)
    got = ops.motion_blur(x, 3, 1.5, angles)
    width = 7  # GetOptimalKernelWidth1D: 2 * ceil(radius) + 1
    k = np.exp(-np.arange(width) ** 2 / (2 * 1.5**2))
    k /= k.sum()
    for b, angle in enumerate(angles.tolist()):
        a = math.radians(angle)
        img = x[b, 0].numpy()
        ref = np.zeros_like(img)
        for i in range(width):  # MagickCore/effect.c: offset = ceil(i * (cos, sin) - 0.5), edge virtual pixels
            ox, oy = math.ceil(i * math.cos(a) - 0.5), math.ceil(i * math.sin(a) - 0.5)
            rows = np.clip(np.arange(12) + oy, 0, 11)
            cols = np.clip(np.arange(12) + ox, 0, 11)
            ref += k[i] * img[np.ix_(rows, cols)]
        np.testing.assert_allclose(got[b, 0].numpy(), ref, atol=1e-12)


def test_glass_swaps_match_literal_loop():
    perm = ops.glass_permutation(3, 10, 1, 2, _seeded(4), torch.device("cpu"))
    span = range(10 - 1, 1, -1)
    offsets = torch.randint(-1, 1, (2, len(span) ** 2, 2, 3), generator=_seeded(4)).numpy()  # same draws
    for b in range(3):
        a = np.arange(100).reshape(10, 10)
        for it in range(2):  # make_cifar_c.py glass_blur's loop, one image
            for k, (h, w) in enumerate((h, w) for h in span for w in span):
                dx, dy = offsets[it, k, :, b]
                a[h, w], a[h + dy, w + dx] = a[h + dy, w + dx], a[h, w]
        assert (a.reshape(-1) == perm[b].numpy()).all()


def test_elastic_matches_scipy(digits):
    ndimage = pytest.importorskip("scipy.ndimage")
    x = digits[1][:2].double()
    size, (alpha, sigma, jitter) = 32, (3.2, 0.96, 0.96)  # severity 5: 0.1, 0.03, 0.03 of 32
    got = corrupt(x, "elastic_transform", 5, generator=_seeded(5))
    g = _seeded(5)  # replay corrupt's draws: affine jitter, then the two displacement noises
    moved = (-jitter + 2 * jitter * torch.rand((2, 3, 2), generator=g, dtype=torch.float64)).numpy()
    noise = (-1 + 2 * torch.rand((2, 2, size, size), generator=g, dtype=torch.float64)).numpy()
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    for b in range(2):
        img = x[b].permute(1, 2, 0).numpy()
        pts1 = np.array([[26, 26], [26, 6], [6, 6]], dtype=np.float64)  # centre 16 +- size // 3
        affine = np.linalg.solve(np.hstack([pts1 + moved[b], np.ones((3, 1))]), pts1)  # dst -> src (x, y)
        src_x = cols * affine[0, 0] + rows * affine[1, 0] + affine[2, 0]
        src_y = cols * affine[0, 1] + rows * affine[1, 1] + affine[2, 1]
        # cv2.warpAffine(BORDER_REFLECT_101) == map_coordinates(mode='mirror') for bilinear sampling
        warped = np.stack([ndimage.map_coordinates(img[..., c], [src_y, src_x], order=1, mode="mirror")
                           for c in range(3)], -1)  # fmt: skip
        dx = ndimage.gaussian_filter(noise[b, 0], sigma, mode="reflect", truncate=3) * alpha
        dy = ndimage.gaussian_filter(noise[b, 1], sigma, mode="reflect", truncate=3) * alpha
        ref = np.stack([ndimage.map_coordinates(warped[..., c], [rows + dy, cols + dx], order=1, mode="reflect")
                        for c in range(3)], -1)  # fmt: skip
        np.testing.assert_allclose(got[b].permute(1, 2, 0).numpy(), np.clip(ref, 0, 1), atol=1e-10)


@pytest.mark.parametrize("mode", ["edge", "symmetric", "mirror"])
def test_gaussian_blur_matches_scipy(mode):
    gaussian_filter = pytest.importorskip("scipy.ndimage").gaussian_filter
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64, generator=_seeded())
    scipy_mode = {"edge": "nearest", "symmetric": "reflect", "mirror": "mirror"}[mode]
    for sigma, truncate in [(0.4, 4.0), (6.4, 3.0)]:  # 6.4 * 3: the padding is wider than the image
        ref = gaussian_filter(x[0, 0].numpy(), sigma, mode=scipy_mode, truncate=truncate)
        np.testing.assert_allclose(ops.gaussian_blur(x, sigma, mode, truncate)[0, 0].numpy(), ref, atol=1e-12)
