"""The 15 CIFAR-10-C common corruptions (Hendrycks & Dietterich, ICLR 2019) as batched torch ops.

``corrupt(images, name, severity)`` takes float ``[B, C, H, W]`` in [0, 1] (C = 1 or 3, H = W >= 8, any
device) and returns a new tensor of the same shape, dtype and device in [0, 1]. The constants are the
**CIFAR** ones of ``make_cifar_c.py`` (github.com/hendrycks/robustness,
``ImageNet-C/create_c/make_cifar_c.py``), quoted next to each op; the ImageNet-C ones differ.

Original library -> here. "exact" = same formula, checked against scipy/PIL/a literal port in
tests/test_corruptions.py. The originals also cut every image to uint8 (some mid-way, e.g. glass blur);
here values stay float, so expect close, not bit-identical, images to the released files.

- gaussian/shot/impulse_noise: numpy / skimage random_noise('s&p') -> torch.randn / torch.poisson /
  per-value flips to 0 or 1 with skimage's rule (same distributions, torch generator)
- defocus_blur: disk kernel, cv2.GaussianBlur + filter2D (BORDER_REFLECT_101) -> same kernel, conv2d (exact)
- glass_blur: skimage gaussian + sequential pixel swaps -> separable conv; the swaps replayed in the
  same order on an index map for the whole batch (exact)
- motion_blur: ImageMagick MotionBlurImage via Wand -> its one-sided Gaussian line kernel and offset
  rule from MagickCore/effect.c, edge pixels repeated, per-image angle (exact up to ImageMagick's quantum)
- zoom_blur: scipy.ndimage.zoom(order=1) in clipped_zoom -> equivalent interpolation matrices (exact)
- snow: clipped_zoom + ImageMagick motion blur + cv2 RGB2GRAY -> the two ops above, BT.601 weights
- frost: random crop of one of 6 frost photographs -> procedural texture (see below; approximation)
- fog: numpy diamond-square plasma fractal -> same algorithm in torch
- brightness: skimage rgb2hsv, V + c, hsv2rgb -> ``x * V'/V`` (RGB is linear in V at fixed H, S; exact)
- contrast: numpy -> torch (exact)
- elastic_transform: cv2.warpAffine + skimage gaussian + scipy map_coordinates -> grid_sample with the
  matching reflect borders and align_corners (exact up to cv2's 1/32-pixel fixed point)
- pixelate: PIL resize BOX down and up -> Pillow's BOX weights as matrices (exact)
- jpeg_compression: PIL JPEG save at quality q -> the same, on the CPU, one image at a time (exact)

Frost is the one real approximation: the photographs are not shipped, so the overlay is a
``1 - |2p - 1|`` ridge map of a rough plasma fractal ``p`` (thin bright crystal-like veins, mean ~0.5,
gray), blended with the original weights; its texture statistics are a choice, not measured.

Image size: the pixel constants are for 32x32. Relative ones always follow the actual size
(elastic's constants are fractions of the size, zoom and pixelate factors are ratios, the fog/frost
maps cover the image). Pixel lengths (blur sigmas and radii, glass swap distance, motion radius and
sigma) are multiplied by ``max(1, size / 32)``: larger images (64, 224) get proportionally larger
kernels, so a severity removes about the same share of the content at any resolution, while smaller
ones (MNIST's 28) keep the CIFAR values, because those are already at the one-pixel level and the
discrete kernels would collapse (defocus severity 4's radius-1 disk becomes a single pixel at
0.875). Per-pixel corruptions (noise, brightness, contrast, JPEG) are unscaled. At 32: the original.

Grayscale (C = 1) images are treated as gray: brightness adds to V = the value itself, snow's gray
is the image, frost and fog are gray overlays anyway, JPEG encodes one channel.

Randomness comes only from ``generator`` (per image: each image draws its own noise, angle, map),
so a fixed seed reproduces the output on a given device. Also here: a loader for the released
CIFAR-10-C / CIFAR-100-C ``.npy`` files.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import Tensor

from latune.core import _corruption_ops as ops
from latune.registry import CORRUPTION_FAMILIES, CORRUPTION_SEVERITIES, CORRUPTIONS

__all__ = [
    "CORRUPTIONS",
    "FAMILIES",
    "SEVERITIES",
    "CorruptionFileError",
    "available_corruption_files",
    "corrupt",
    "load_corruption_files",
]

FAMILIES = CORRUPTION_FAMILIES  # names are plain data in latune.registry
SEVERITIES = CORRUPTION_SEVERITIES

_REFERENCE_SIZE = 32  # the image size make_cifar_c.py's pixel constants are for

_Gen = torch.Generator | None


def _uniform(gen: _Gen, shape: tuple[int, ...], like: Tensor, low: float = 0.0, high: float = 1.0) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen, device=like.device, dtype=like.dtype)


def _gray(x: Tensor) -> Tensor:
    """[B,1,H,W]: cv2 RGB2GRAY (ITU-R BT.601) for colour, the image itself for one channel."""
    if x.shape[1] == 1:
        return x
    w = torch.tensor([0.299, 0.587, 0.114], device=x.device, dtype=x.dtype)
    return (x * w.view(1, 3, 1, 1)).sum(1, keepdim=True)


# ----------------------------------------------------------------------------------------------- noise


def _gaussian_noise(x: Tensor, sev: int, gen: _Gen, scale: float) -> Tensor:
    c = [0.04, 0.06, 0.08, 0.09, 0.10][sev - 1]  # std in [0, 1] pixel units
    return x + c * torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)


def _shot_noise(x: Tensor, sev: int, gen: _Gen, scale: float) -> Tensor:
    c = [500, 250, 100, 75, 50][sev - 1]  # photons at full intensity: fewer = noisier
    return torch.poisson(x * c, generator=gen) / c


def _impulse_noise(x: Tensor, sev: int, gen: _Gen, scale: float) -> Tensor:
    c = [0.01, 0.02, 0.03, 0.05, 0.07][sev - 1]  # fraction of values (per channel) set to 0 or 1
    flipped = _uniform(gen, x.shape, x) <= c
    salt = _uniform(gen, x.shape, x) <= 0.5  # skimage's default salt_vs_pepper
    return torch.where(flipped, salt.to(x.dtype), x)


# ----------------------------------------------------------------------------------------------- blur


def _defocus_blur(x: Tensor, sev: int, gen: _Gen, scale: float) -> Tensor:
    c = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][sev - 1]  # disk radius, alias blur (px)
    return ops.filter2d(x, ops.disk_kernel(c[0] * scale, c[1] * scale), "mirror")


def _glass_blur(x: Tensor, sev: int, gen: _Gen, scale: float) -> Tensor:
    # sigma (px), max_delta (px), iterations
    c = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][sev - 1]
    sigma, delta = c[0] * scale, max(1, round(c[1] * scale))
    b, ch, h, w = x.shape
    x = ops.gaussian_blur(x, sigma, "edge")  # skimage gaussian's default mode 'nearest'
    perm = ops.glass_permutation(b, h, delta, c[2], gen, x.device)
    x = x.reshape(b, ch, h * w).gather(2, perm[:, None].expand(b, ch, h * w)).view(b, ch, h, w)
    return ops.gaussian_blur(x, sigma, "edge")


def _motion_blur(x: Tensor, sev: int, gen: _Gen, scale: float) -> Tensor:
    c = [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)][sev - 1]  # ImageMagick radius, sigma (px)
    angles = _uniform(gen, (x.shape[0],), x, -45, 45)  # degrees
    return ops.motion_blur(x, c[0] * scale, c[1] * scale, angles)


def _zoom_blur(x: Tensor, sev: int, gen: _Gen, scale: float) -> Tensor:
    # Zoom factors. np.arange with these float ends is kept on purpose: it yields 7, 12, 16, 21, 26
    # factors (1.06 and 1.11 are included by rounding), and those are the ones the files were made with.
    c = [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01),
         np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)][sev - 1]  # fmt: skip
    mats = torch.stack([ops.zoom_matrix(x.shape[-1], float(z)) for z in c])
    return (x + ops.resample_sum(x, mats)) / (len(c) + 1)


# ----------------------------------------------------------------------------------------------- weather


def _snow(x: Tensor, sev: int, gen: _Gen, scale: float) -> Tensor:
    # flake mean, flake std, zoom, threshold, motion radius (px), motion sigma (px), image weight
    c = [(0.1, 0.2, 1, 0.6, 8, 3, 0.95),
         (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
         (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
         (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
         (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)][sev - 1]  # fmt: skip
    b, _, h, _ = x.shape
    layer = c[0] + c[1] * torch.randn((b, 1, h, h), generator=gen, device=x.device, dtype=x.dtype)
    layer = ops.resample_sum(layer, ops.zoom_matrix(h, c[2])[None])
    layer = torch.where(layer < c[3], 0.0, layer).clamp(0, 1)
    layer = ops.motion_blur(layer, c[4] * scale, c[5] * scale, _uniform(gen, (b,), x, -135, -45))
    x = c[6] * x + (1 - c[6]) * torch.maximum(x, _gray(x) * 1.5 + 0.5)
    return x + layer + layer.flip(-1, -2)  # flip(-1, -2) = np.rot90(k=2)


def _frost(x: Tensor, sev: int, gen: _Gen, scale: float) -> Tensor:
    c = [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)][sev - 1]  # image weight, frost weight
    # Substitute for the frost photographs (see module docstring). Decay 1.5 (our choice) is rougher
    # than fog's 1.75..3, for fine crystal detail; the ridge map turns level lines into bright veins.
    p = ops.plasma_fractal(x.shape[0], x.shape[-1], 1.5, gen, x.device).to(x.dtype)
    return c[0] * x + c[1] * (1 - (2 * p - 1).abs())[:, None]


def _fog(x: Tensor, sev: int, gen: _Gen, scale: float) -> Tensor:
    c = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][sev - 1]  # fog strength, plasma wibble decay
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    fog = ops.plasma_fractal(x.shape[0], x.shape[-1], c[1], gen, x.device).to(x.dtype)[:, None]
    return (x + c[0] * fog) * max_val / (max_val + c[0])


def _brightness(x: Tensor, sev: int, gen: _Gen, scale: float) -> Tensor:
    c = [0.05, 0.1, 0.15, 0.2, 0.3][sev - 1]  # added to HSV value
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + c).clamp(max=1)
    # hsv2rgb is linear in V for fixed H, S; black (V = 0) has S = 0 in skimage, so it becomes gray V'.
    return torch.where(v > 0, x * v_new / v.clamp(min=1e-12), v_new.expand_as(x))


# ----------------------------------------------------------------------------------------------- digital


def _contrast(x: Tensor, sev: int, gen: _Gen, scale: float) -> Tensor:
    c = [0.75, 0.5, 0.4, 0.3, 0.15][sev - 1]  # factor towards the per-channel mean
    means = x.mean(dim=(2, 3), keepdim=True)
    return (x - means) * c + means


def _elastic_transform(x: Tensor, sev: int, gen: _Gen, scale: float) -> Tensor:
    size = x.shape[-1]  # the original's IMSIZE; its constants are fractions of it
    # displacement magnitude alpha (px), displacement smoothness sigma (px), affine jitter (px)
    c = [(size * 0, size * 0, size * 0.08),
         (size * 0.05, size * 0.2, size * 0.07),
         (size * 0.08, size * 0.06, size * 0.06),
         (size * 0.1, size * 0.04, size * 0.05),
         (size * 0.1, size * 0.03, size * 0.03)][sev - 1]  # fmt: skip
    b = x.shape[0]
    dev = x.device
    # Random affine: three points (x, y) around the centre, each moved by U(-c2, c2) (cv2 order).
    centre, half = float(size // 2), float(size // 3)
    pts1 = torch.tensor([[centre + half, centre + half], [centre + half, centre - half],
                         [centre - half, centre - half]], device=dev, dtype=torch.float64)  # fmt: skip
    pts2 = pts1 + _uniform(gen, (b, 3, 2), x, -c[2], c[2]).double()
    # cv2.warpAffine samples the source at M^-1(dst): the affine map taking pts2 back to pts1.
    ones = torch.ones(b, 3, 1, device=dev, dtype=torch.float64)
    inv = torch.linalg.solve(torch.cat([pts2, ones], 2), pts1.expand(b, 3, 2))  # [B, 3, 2]
    ii, jj = torch.meshgrid(torch.arange(size, device=dev, dtype=torch.float64), torch.arange(size, device=dev,
                            dtype=torch.float64), indexing="ij")  # fmt: skip
    dst = torch.stack([jj, ii, torch.ones_like(ii)], -1).reshape(1, -1, 3)
    src = (dst @ inv).view(b, size, size, 2)  # (x, y) in pixels
    # BORDER_REFLECT_101 + bilinear == grid_sample 'reflection' with align_corners=True.
    x = nnf.grid_sample(x, (src * 2 / (size - 1) - 1).to(x.dtype), mode="bilinear", padding_mode="reflection",
                        align_corners=True)
    if c[0] == 0:
        return x
    noise = _uniform(gen, (b, 2, size, size), x, -1, 1)  # channel 0: dx (columns), 1: dy (rows)
    d = ops.gaussian_blur(noise, c[1], "symmetric", truncate=3) * c[0]
    grid = torch.stack([jj, ii], -1).to(x.dtype) + d.permute(0, 2, 3, 1)
    # map_coordinates(order=1, mode='reflect') == grid_sample 'reflection' with align_corners=False.
    return nnf.grid_sample(x, (grid * 2 + 1) / size - 1, mode="bilinear", padding_mode="reflection",
                           align_corners=False)


def _pixelate(x: Tensor, sev: int, gen: _Gen, scale: float) -> Tensor:
    c = [0.95, 0.9, 0.85, 0.75, 0.65][sev - 1]  # side of the low-resolution image, fraction of the original
    size = x.shape[-1]
    small = int(size * c)
    mat = ops.box_resize_matrix(small, size) @ ops.box_resize_matrix(size, small)
    return ops.resample_sum(x, mat[None])


def _jpeg_compression(x: Tensor, sev: int, gen: _Gen, scale: float) -> Tensor:
    # Pillow, as the original (bit-identical files) and because torchvision 0.29 deprecates its own
    # JPEG codecs; Pillow is a required dependency of torchvision, so nothing new is installed.
    from PIL import Image  # deferred: keeps importing latune cheap

    c = [80, 65, 58, 50, 40][sev - 1]  # JPEG quality
    u8 = (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = np.empty_like(u8)
    for i, img in enumerate(u8):  # JPEG is per image; ~0.1 ms each at 32x32
        buf = io.BytesIO()
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, "JPEG", quality=c)
        out[i] = np.asarray(Image.open(buf)).reshape(img.shape)
    return torch.from_numpy(out).to(x.device).permute(0, 3, 1, 2).to(x.dtype) / 255


_OPS: dict[str, Callable[[Tensor, int, _Gen, float], Tensor]] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "defocus_blur": _defocus_blur,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "frost": _frost,
    "fog": _fog,
    "brightness": _brightness,
    "contrast": _contrast,
    "elastic_transform": _elastic_transform,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}


def _check_name_severity(name: str, severity: int) -> None:
    if name not in _OPS:
        raise ValueError(f"corruption: unknown {name!r}; allowed: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or severity not in SEVERITIES:
        raise ValueError(f"severity: unknown {severity!r}; allowed: {', '.join(map(str, SEVERITIES))}")


def corrupt(images: Tensor, name: str, severity: int, *, generator: torch.Generator | None = None) -> Tensor:
    """Apply corruption ``name`` at ``severity`` (1..5) to a batch, with make_cifar_c.py's constants.

    images: float ``[B, C, H, W]`` with values in [0, 1], C in {1, 3}, H == W >= 8, on any device.
    generator: the source of all randomness (noise, angles, maps, swaps); it must live on the images'
        device (as torch requires for random ops there). ``None`` uses torch's default generator.
    Returns a new tensor with the same shape, dtype and device, clipped to [0, 1]; ``images`` is not
    modified. Deterministic for a given generator state and device. Work is done in float32 (float64
    inputs stay float64); jpeg_compression rounds to uint8 and runs on the CPU.
    Raises ValueError for an unknown name or severity, a bad shape/dtype or a generator on another device.
    """
    _check_name_severity(name, severity)
    severity = int(severity)
    if not isinstance(images, Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images: expected a float [B, C, H, W] tensor; got {got}")
    b, c, h, w = images.shape
    if c not in (1, 3) or h != w or h < 8:
        raise ValueError(f"images: need C in (1, 3) and square H = W >= 8; got shape {tuple(images.shape)}")
    if generator is not None:
        gdev, xdev = generator.device, images.device
        if gdev.type != xdev.type or (gdev.index is not None and xdev.index is not None and gdev.index != xdev.index):
            raise ValueError(f"generator: on {gdev} but the images are on {xdev}; they must be on the same device")
    if b == 0:
        return images.clone()
    # A copy in float32 (float64 kept), clamped so that e.g. Poisson rates are never negative.
    work = (images if images.dtype in (torch.float32, torch.float64) else images.float()).clamp(0, 1)
    out = _OPS[name](work, severity, generator, max(1.0, h / _REFERENCE_SIZE))
    return out.clamp(0, 1).to(images.dtype)


# ----------------------------------------------------------------------------------------------- released files


class CorruptionFileError(FileNotFoundError):
    """A CIFAR-10-C / CIFAR-100-C file is missing; the message says which file is expected where."""


def available_corruption_files(folder: str | Path) -> tuple[str, ...]:
    """Names (in CORRUPTIONS order) whose ``<name>.npy`` exists in ``folder``; () if the folder does not."""
    folder = Path(folder).expanduser()
    return tuple(name for name in CORRUPTIONS if (folder / f"{name}.npy").is_file())


def load_corruption_files(folder: str | Path, name: str, severity: int) -> tuple[Tensor, Tensor]:
    """One severity of a released CIFAR-10-C / CIFAR-100-C corruption: (uint8 [N, C, H, W], int64 [N]).

    ``folder`` holds ``<name>.npy`` (uint8 [5 * N, H, W, C], severity 1 first) and ``labels.npy``
    (5 * N labels, same order); N = len / 5 (10000 in the release). Only the requested slice is read
    (memory-mapped). Raises CorruptionFileError (a FileNotFoundError) for a missing file and
    ValueError for an unknown name/severity or arrays that do not have that layout.
    """
    _check_name_severity(name, severity)
    severity = int(severity)
    folder = Path(folder).expanduser()
    paths = {"images": folder / f"{name}.npy", "labels": folder / "labels.npy"}
    for path in paths.values():
        if not path.is_file():
            raise CorruptionFileError(f"corruption file missing: expected {path} "
                                      "(CIFAR-10-C layout: <corruption>.npy and labels.npy in one folder)")
    images = np.load(paths["images"], mmap_mode="r")
    labels = np.load(paths["labels"], mmap_mode="r")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) % 5:
        raise ValueError(f"{paths['images']}: expected uint8 [5*N, H, W, C] with C in (1, 3); "
                         f"got {images.dtype} {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{paths['labels']}: expected {len(images)} labels (one per image); got shape {labels.shape}")
    n = len(images) // 5
    part = slice((severity - 1) * n, severity * n)
    # np.array: a writable copy of just this slice (torch warns about read-only memory maps)
    x = torch.from_numpy(np.array(images[part])).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.asarray(labels[part]).astype(np.int64))
    return x, y
