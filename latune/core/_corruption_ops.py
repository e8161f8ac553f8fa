"""Tensor building blocks for :mod:`latune.corruptions`, each matching the library call it replaces.

Images are float ``[B, C, H, W]``; every helper keeps device and dtype. Boundary modes are named as in
the originals: ``edge`` (aaa|abc|ccc, scipy 'nearest', ImageMagick's edge virtual pixels),
``symmetric`` (cba|abc|cba, scipy/skimage 'reflect') and ``mirror`` (cb|abc|ba, OpenCV
BORDER_REFLECT_101, torch 'reflect').
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import Tensor

__all__ = [
    "box_resize_matrix",
    "disk_kernel",
    "filter2d",
    "gaussian_blur",
    "glass_permutation",
    "motion_blur",
    "plasma_fractal",
    "resample_sum",
    "zoom_matrix",
]


def _pad_index(n: int, r: int, mode: str, device: torch.device) -> Tensor:
    """Source indices long[n + 2r] that pad a length-n axis by r on both sides (r may exceed n)."""
    i = torch.arange(-r, n + r, device=device)
    if mode == "edge":
        return i.clamp(0, n - 1)
    if mode == "symmetric":
        i = i.remainder(2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    if mode == "mirror":
        if n == 1:
            return torch.zeros_like(i)
        i = i.remainder(2 * n - 2)
        return torch.where(i >= n, 2 * n - 2 - i, i)
    raise ValueError(f"pad mode: unknown {mode!r}; allowed: edge, symmetric, mirror")


def _pad(x: Tensor, rh: int, rw: int, mode: str) -> Tensor:
    x = x.index_select(-2, _pad_index(x.shape[-2], rh, mode, x.device))
    return x.index_select(-1, _pad_index(x.shape[-1], rw, mode, x.device))


def filter2d(x: Tensor, kernel: Tensor, mode: str) -> Tensor:
    """Correlate every channel with an odd-sized 2-D ``kernel`` (cv2.filter2D semantics)."""
    kh, kw = kernel.shape
    b, c, h, w = x.shape
    y = _pad(x.reshape(b * c, 1, h, w), kh // 2, kw // 2, mode)
    return nnf.conv2d(y, kernel.to(x)[None, None]).reshape(b, c, h, w)


def gaussian_blur(x: Tensor, sigma: float, mode: str, truncate: float = 4.0) -> Tensor:
    """scipy.ndimage.gaussian_filter over H and W only (skimage.filters.gaussian on HWC images).

    Kernel radius ``int(truncate * sigma + 0.5)`` as scipy; sigma 0 (or a radius-0 kernel) is the identity.
    """
    radius = int(truncate * sigma + 0.5)
    if sigma <= 0 or radius == 0:
        return x.clone()
    k = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (k / sigma) ** 2)
    k = k / k.sum()
    b, c, h, w = x.shape
    y = _pad(x.reshape(b * c, 1, h, w), radius, radius, mode)
    y = nnf.conv2d(y, k.view(1, 1, -1, 1))
    return nnf.conv2d(y, k.view(1, 1, 1, -1)).reshape(b, c, h, w)


def disk_kernel(radius: float, alias_blur: float) -> Tensor:
    """make_cifar_c.py ``disk``: the aliased disk X^2 + Y^2 <= r^2, normalised, then cv2.GaussianBlur.

    The original builds it on a 17x17 grid (a 5x5 blur and a grid of half-integers when r > 8, only
    reachable for images >~170 px here); this returns the same kernel cropped to its support, always
    on an integer grid, so it is cheap to apply.
    """
    ksize = 3 if radius <= 8 else 5
    half = math.floor(radius) + ksize // 2
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = ((grid[:, None] ** 2 + grid[None, :] ** 2) <= radius**2).double()
    disk /= disk.sum()
    # cv2.getGaussianKernel for sigma > 0: exp(-d^2 / (2 sigma^2)), normalised (the disk sits far
    # enough inside the grid that the blur's border handling never matters).
    d = torch.arange(ksize, dtype=torch.float64) - ksize // 2
    g = torch.exp(-(d**2) / (2 * alias_blur**2))
    g /= g.sum()
    out = nnf.conv2d(nnf.pad(disk[None, None], (ksize // 2,) * 4), (g[:, None] * g[None, :])[None, None])
    return out[0, 0].float()


def zoom_matrix(size: int, factor: float) -> Tensor:
    """float64 [size, size] M with ``M @ a @ M.T`` = make_cifar_c.py ``clipped_zoom(a, factor)``.

    clipped_zoom crops the central ``ceil(size / factor)`` square, enlarges it with
    ``scipy.ndimage.zoom(order=1)`` (output ``round(crop * factor)``; output pixel o samples crop
    coordinate ``o * (crop - 1) / (out - 1)``) and trims the centre back to ``size``: one linear
    interpolation per axis, so a separable matrix reproduces it exactly.
    """
    crop = math.ceil(size / factor)
    top = (size - crop) // 2
    out = int(round(crop * factor))
    trim = (out - size) // 2
    step = (crop - 1) / (out - 1) if out > 1 else 0.0
    pos = top + (np.arange(size) + trim) * step
    lo = np.clip(np.floor(pos).astype(np.int64), 0, size - 1)
    hi = np.clip(lo + 1, 0, size - 1)
    frac = pos - lo
    m = np.zeros((size, size))
    np.add.at(m, (np.arange(size), lo), 1 - frac)
    np.add.at(m, (np.arange(size), hi), frac)
    return torch.from_numpy(m)


def box_resize_matrix(size_in: int, size_out: int) -> Tensor:
    """float64 [size_out, size_in]: one axis of PIL ``Image.resize(..., Image.BOX)`` (Pillow Resample.c).

    Output pixel i averages, with equal weights, the input pixels j whose offset
    ``(j - centre + 0.5) / filterscale`` lies in (-0.5, 0.5], ``centre = (i + 0.5) * scale``.
    """
    scale = size_in / size_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    m = np.zeros((size_out, size_in))
    for i in range(size_out):
        centre = (i + 0.5) * scale
        lo = max(int(centre - support + 0.5), 0)
        hi = min(int(centre + support + 0.5), size_in)
        j = np.arange(lo, hi)
        t = (j - centre + 0.5) / filterscale
        w = ((t > -0.5) & (t <= 0.5)).astype(np.float64)
        if w.sum() > 0:
            m[i, lo:hi] = w / w.sum()
    return torch.from_numpy(m)


def resample_sum(x: Tensor, mats: Tensor) -> Tensor:
    """``sum_k M_k @ x @ M_k.T`` over H and W for square matrices ``mats`` [K, S, S], as two GEMMs."""
    k, s, _ = mats.shape
    mats = mats.to(x)
    t = x @ mats.reshape(k * s, s).T  # [B, C, S(rows), K*S(cols)]
    t = t.unflatten(-1, (k, s)).permute(0, 1, 3, 2, 4).reshape(*x.shape[:2], k * s, s)
    return mats.permute(1, 0, 2).reshape(s, k * s) @ t  # contracts (k, source row) at once


def motion_blur(x: Tensor, radius: float, sigma: float, angles: Tensor) -> Tensor:
    """ImageMagick MagickMotionBlurImage(radius, sigma, angle) with a per-image angle (degrees, [B]).

    Width ``2 * ceil(radius) + 1`` taps weighted ``exp(-i^2 / (2 sigma^2))`` (normalised), tap i
    reading the pixel at column + ceil(i cos a - 0.5), row + ceil(i sin a - 0.5), edge pixels repeated
    (MagickCore/effect.c; the blur is one-sided, as there).
    """
    b, c, h, w = x.shape
    width = 2 * math.ceil(radius) + 1
    taps = torch.arange(width, device=x.device, dtype=torch.float64)
    weights = torch.exp(-(taps**2) / (2 * sigma**2))
    weights = (weights / weights.sum()).tolist()
    rad = torch.deg2rad(angles.double())
    ox = torch.ceil(taps[:, None] * torch.cos(rad)[None] - 0.5).long()  # [width, B]
    oy = torch.ceil(taps[:, None] * torch.sin(rad)[None] - 0.5).long()
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    flat = x.reshape(b, c, h * w)
    out = torch.zeros_like(flat)
    for i in range(width):
        src = (rows + oy[i].view(b, 1, 1)).clamp(0, h - 1) * w + (cols + ox[i].view(b, 1, 1)).clamp(0, w - 1)
        out += weights[i] * flat.gather(2, src.view(b, 1, h * w).expand(b, c, h * w))
    return out.view(b, c, h, w)


def plasma_fractal(
    batch: int, size: int, decay: float, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """make_cifar_c.py ``plasma_fractal`` (diamond-square) for a batch: float32 [B, size, size] in [0, 1].

    The map is built at the next power of two >= size (32 for CIFAR, as the original) and cropped to
    the top-left corner, as the original crops ``[:32, :32]``. Kept verbatim: the random offsets
    are ``wibble * U(-wibble, wibble)``, i.e. they scale with wibble squared.
    """
    m = max(2, 1 << (size - 1).bit_length())
    a = torch.zeros(batch, m, m, dtype=torch.float64, device=device)
    step, wibble = m, 100.0

    def wibbled_mean(t: Tensor) -> Tensor:
        u = torch.rand(t.shape, generator=generator, device=device, dtype=t.dtype)
        return t / 4 + wibble * (2 * u - 1) * wibble

    while step >= 2:
        half = step // 2
        corners = a[:, 0::step, 0::step]
        squares = corners + corners.roll(-1, 1)
        squares = squares + squares.roll(-1, 2)
        a[:, half::step, half::step] = wibbled_mean(squares)
        dr, ul = a[:, half::step, half::step], a[:, 0::step, 0::step]
        a[:, 0::step, half::step] = wibbled_mean(dr + dr.roll(1, 1) + ul + ul.roll(-1, 2))
        a[:, half::step, 0::step] = wibbled_mean(dr + dr.roll(1, 2) + ul + ul.roll(-1, 1))
        step //= 2
        wibble /= decay
    a = a - a.amin(dim=(1, 2), keepdim=True)
    a = a / a.amax(dim=(1, 2), keepdim=True)
    return a[:, :size, :size].float()


def glass_permutation(
    batch: int, size: int, delta: int, iterations: int, generator: torch.Generator | None, device: torch.device
) -> Tensor:
    """long [B, size*size] source index per pixel after make_cifar_c.py glass_blur's local swaps.

    The original visits (h, w) from the bottom-right corner (``range(size - delta, delta, -1)`` on
    both axes) and swaps the pixel with one at offset ``randint(-delta, delta)`` (upper bound
    excluded). The swaps chain (a pixel can be carried several steps), so they are replayed in
    order; only the index bookkeeping loops, in numpy (~1 us per fancy-index call vs ~5 us in
    torch), over positions with the whole batch at once. The images are gathered once, on device.
    """
    span = np.arange(size - delta, delta, -1)
    pos = (span[:, None] * size + span[None, :]).reshape(-1)
    offsets = torch.randint(-delta, delta, (iterations, pos.size, 2, batch), generator=generator, device=device)
    offsets = offsets.cpu().numpy()
    targets = pos[None, :, None] + offsets[:, :, 1] * size + offsets[:, :, 0]  # dy rows, dx cols
    perm = np.tile(np.arange(size * size)[:, None], (1, batch))  # [pixel, image]: row access is contiguous
    images = np.arange(batch)
    for it in range(iterations):
        for k, p in enumerate(pos):
            q = targets[it, k]
            held = perm[p].copy()
            perm[p] = perm[q, images]
            perm[q, images] = held
    return torch.from_numpy(np.ascontiguousarray(perm.T)).to(device)
