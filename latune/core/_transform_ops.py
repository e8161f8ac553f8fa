"""The op implementations of latune.core.transforms: AugMix primitives, photometric, noise, blur, perturbations.

Private: use them through ``latune.core.transforms`` (``OPS``, ``TransformContext``, ``apply_label_augmentation``),
whose docstring states the op contract. ``OPS`` is the catalogue; its names are the ones of latune.registry, and
tests/test_registry.py checks that every set's op is in it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as nnf
import torchvision.transforms.v2.functional as tvf
from torch import Tensor

from latune.registry import AUGMIX_PRIMITIVES

__all__ = ["OPS", "Op", "TransformContext", "apply_grouped", "rand"]


@dataclass(frozen=True)
class TransformContext:
    """Shared state of one augmentation call.

    generator: on the same device as the images; every random draw of every op comes from it.
    severity: AugMix-style severity in 1..10; per-image levels are drawn from U(0.1, severity) / 10.
    eps: l_inf radius of the perturbation ops (``fgsm``, ``uniform_noise``) in [0, 1] pixel units.
    input_gradient: ``(x_subset float[B',C,H,W], batch_index long[B']) -> d loss / d x_subset`` (same shape),
        supplied by the training loop so that ``fgsm`` attacks the current model; ``None`` makes ``fgsm`` raise.
    """

    generator: torch.Generator
    severity: int = 3
    eps: float = 8 / 255
    input_gradient: Callable[[Tensor, Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(self.generator).__name__}")
        if isinstance(self.severity, bool) or not isinstance(self.severity, int) or not 1 <= self.severity <= 10:
            raise ValueError(f"severity must be an int in 1..10, got {self.severity!r}")
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise ValueError(f"eps must be a finite non-negative float, got {self.eps!r}")


Op = Callable[[Tensor, Tensor, TransformContext], Tensor]


# ----------------------------------------------------------------------------------------------- random draws


def rand(ctx: TransformContext, shape: Sequence[int], like: Tensor) -> Tensor:
    """U[0, 1) of ``shape`` on ``like``'s device/dtype, from ctx.generator (device checked for a clear error)."""
    gen_dev, x_dev = ctx.generator.device, like.device
    same_index = gen_dev.index is None or x_dev.index is None or gen_dev.index == x_dev.index
    if gen_dev.type != x_dev.type or not same_index:
        raise ValueError(f"ctx.generator is on {gen_dev} but the images are on {x_dev}; they must match")
    return torch.rand(tuple(shape), generator=ctx.generator, device=like.device, dtype=like.dtype)


def _levels(x: Tensor, ctx: TransformContext) -> Tensor:
    """Per-image AugMix level float[B] in [0.01, severity/10), i.e. U(0.1, severity) / 10."""
    return (0.1 + (ctx.severity - 0.1) * rand(ctx, (x.shape[0],), x)) / 10.0


def _signs(x: Tensor, ctx: TransformContext) -> Tensor:
    """Per-image random sign float[B] in {-1, +1} (AugMix flips geometric magnitudes with probability 1/2)."""
    return torch.where(rand(ctx, (x.shape[0],), x) < 0.5, -1.0, 1.0).to(x.dtype)


def _per_image(v: Tensor) -> Tensor:
    """float[B] -> float[B, 1, 1, 1] so a per-image scalar broadcasts over C, H, W."""
    return v.view(-1, 1, 1, 1)


# ------------------------------------------------------------------------------------------ AugMix primitives


def _autocontrast(x: Tensor, batch_index: Tensor, ctx: TransformContext) -> Tensor:
    # Deterministic (AugMix ignores the level); torchvision maps constant channels to themselves, so no NaN.
    return tvf.autocontrast(x)


def _to_uint8(x: Tensor) -> Tensor:
    # Round (not truncate) so a float image that came from uint8 maps back to the same byte values.
    return x.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)


def _equalize(x: Tensor, batch_index: Tensor, ctx: TransformContext) -> Tensor:
    # Histogram equalisation is defined on 256 bins (as in PIL); constant images are returned unchanged.
    return tvf.equalize(_to_uint8(x)).to(x.dtype).div_(255.0)


def _posterize(x: Tensor, batch_index: Tensor, ctx: TransformContext) -> Tensor:
    # AugMix: bits = 4 - int(4 * level); clamp to >= 1 because 0 bits would blank the image. tvf.posterize takes
    # one bit count per call, so apply torchvision's uint8 rule (keep the top `bits` bits) with a per-image mask.
    bits = (4 - torch.floor(4 * _levels(x, ctx))).clamp(1, 8).to(torch.int64)
    mask = ((0xFF << (8 - bits)) & 0xFF).to(torch.uint8)
    return (_to_uint8(x) & _per_image(mask)).to(x.dtype).div_(255.0)


def _solarize(x: Tensor, batch_index: Tensor, ctx: TransformContext) -> Tensor:
    # AugMix threshold 256 - 256 * level in uint8 units == 1 - level here; same rule as tvf.solarize, per image.
    threshold = _per_image(1.0 - _levels(x, ctx))
    return torch.where(x >= threshold, 1.0 - x, x)


def _warp(x: Tensor, matrix: Tensor) -> Tensor:
    """Bilinear affine warp with zero fill.

    ``matrix`` float[B, 2, 3] maps *output* to *input* pixel coordinates, in PIL's convention (continuous coordinates
    with the origin at the top-left corner of the top-left pixel, pixel centres at +0.5), so the AugMix
    ``Image.transform(..., AFFINE, data)`` tuples can be used verbatim. It is conjugated into affine_grid's
    normalised [-1, 1] frame (align_corners=False has the same pixel-centre convention).
    """
    b, _, h, w = x.shape
    if b == 0:  # affine_grid rejects an empty batch
        return x.clone()
    # to_norm maps pixel coordinates to normalised ones; from_norm is its inverse.
    to_norm = x.new_tensor([[2.0 / w, 0.0, -1.0], [0.0, 2.0 / h, -1.0], [0.0, 0.0, 1.0]])
    from_norm = x.new_tensor([[w / 2.0, 0.0, w / 2.0], [0.0, h / 2.0, h / 2.0], [0.0, 0.0, 1.0]])
    last_row = x.new_tensor([0.0, 0.0, 1.0]).expand(b, 1, 3)
    full = torch.cat([matrix.to(x.dtype), last_row], dim=1)
    theta = (to_norm @ full @ from_norm)[:, :2, :]
    grid = nnf.affine_grid(theta, list(x.shape), align_corners=False)
    return nnf.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).clamp_(0.0, 1.0)


def _affine_rows(a: Tensor, b: Tensor, c: Tensor, d: Tensor, e: Tensor, f: Tensor) -> Tensor:
    """Six float[B] coefficients (PIL's AFFINE data order) -> float[B, 2, 3]."""
    return torch.stack([torch.stack([a, b, c], dim=-1), torch.stack([d, e, f], dim=-1)], dim=-2)


def _rotation_matrix(degrees: Tensor, h: int, w: int) -> Tensor:
    """Output->input matrices float[B,2,3] for a counter-clockwise rotation by ``degrees`` float[B] about the centre.

    Same convention as PIL ``Image.rotate`` and ``tvf.rotate``.
    """
    t = torch.deg2rad(degrees)
    cos, sin = torch.cos(t), torch.sin(t)
    cx, cy = w / 2.0, h / 2.0
    # input = R(-t) (out - centre) + centre, written out in y-down image coordinates.
    return _affine_rows(cos, -sin, cx - cos * cx + sin * cy, sin, cos, cy - sin * cx - cos * cy)


def _rotate(x: Tensor, batch_index: Tensor, ctx: TransformContext) -> Tensor:
    # AugMix: +-30 degrees * level. Magnitudes stay continuous (AugMix truncates to whole degrees) so that small
    # levels are not silently the identity.
    degrees = 30.0 * _levels(x, ctx) * _signs(x, ctx)
    return _warp(x, _rotation_matrix(degrees, x.shape[-2], x.shape[-1]))


def _shear(x: Tensor, ctx: TransformContext, axis: int) -> Tensor:
    # AugMix/PIL shear about the top-left corner (not the centre): PIL AFFINE data (1, s, 0, 0, 1, 0) for x and
    # (1, 0, 0, s, 1, 0) for y.
    s = 0.3 * _levels(x, ctx) * _signs(x, ctx)
    one, zero = torch.ones_like(s), torch.zeros_like(s)
    if axis == 0:
        return _warp(x, _affine_rows(one, s, zero, zero, one, zero))
    return _warp(x, _affine_rows(one, zero, zero, s, one, zero))


def _shear_x(x: Tensor, batch_index: Tensor, ctx: TransformContext) -> Tensor:
    return _shear(x, ctx, axis=0)


def _shear_y(x: Tensor, batch_index: Tensor, ctx: TransformContext) -> Tensor:
    return _shear(x, ctx, axis=1)


def _translate(x: Tensor, ctx: TransformContext, axis: int) -> Tensor:
    # AugMix: +-level * size / 3 pixels (continuous, not truncated to whole pixels; see _rotate).
    size = x.shape[-1] if axis == 0 else x.shape[-2]
    t = (size / 3.0) * _levels(x, ctx) * _signs(x, ctx)
    one, zero = torch.ones_like(t), torch.zeros_like(t)
    if axis == 0:
        return _warp(x, _affine_rows(one, zero, t, zero, one, zero))
    return _warp(x, _affine_rows(one, zero, zero, zero, one, t))


def _translate_x(x: Tensor, batch_index: Tensor, ctx: TransformContext) -> Tensor:
    return _translate(x, ctx, axis=0)


def _translate_y(x: Tensor, batch_index: Tensor, ctx: TransformContext) -> Tensor:
    return _translate(x, ctx, axis=1)


# -------------------------------------------------------------------------------------------------- photometric


def _blend(x: Tensor, degenerate: Tensor, ctx: TransformContext) -> Tensor:
    """torchvision's ``_blend`` with an AugMix enhance factor 0.1 + 1.8 * level drawn per image."""
    factor = _per_image(0.1 + 1.8 * _levels(x, ctx))
    return (factor * x + (1.0 - factor) * degenerate).clamp_(0.0, 1.0)


# The degenerate images come from torchvision itself (factor 0 returns exactly the degenerate image), so the
# per-image blend reproduces tvf.adjust_* with a per-image factor.
def _brightness(x: Tensor, batch_index: Tensor, ctx: TransformContext) -> Tensor:
    return _blend(x, torch.zeros_like(x), ctx)


def _contrast(x: Tensor, batch_index: Tensor, ctx: TransformContext) -> Tensor:
    return _blend(x, tvf.adjust_contrast(x, 0.0), ctx)


def _saturation(x: Tensor, batch_index: Tensor, ctx: TransformContext) -> Tensor:
    # For C == 1 torchvision returns the image itself as the "grayscale" degenerate, so this is the identity.
    return _blend(x, tvf.adjust_saturation(x, 0.0), ctx)


def _sharpness(x: Tensor, batch_index: Tensor, ctx: TransformContext) -> Tensor:
    return _blend(x, tvf.adjust_sharpness(x, 0.0), ctx)


# ---------------------------------------------------------------------------------------------- noise and blur


def _gaussian_noise(x: Tensor, batch_index: Tensor, ctx: TransformContext) -> Tensor:
    # std = 0.3 * level: severity 3 gives std up to 0.09, the range of CIFAR-10-C gaussian_noise (0.04..0.10).
    std = _per_image(0.3 * _levels(x, ctx))
    noise = torch.randn(x.shape, generator=ctx.generator, device=x.device, dtype=x.dtype)
    return (x + std * noise).clamp_(0.0, 1.0)


_BLUR_STEP = 0.2  # sigma quantum: tvf.gaussian_blur takes one sigma per call, so images are grouped by sigma bin.


def _blur(x: Tensor, batch_index: Tensor, ctx: TransformContext) -> Tensor:
    # sigma = 0.4 + 2 * level (severity 3: 0.42..1.0, the CIFAR-10-C gaussian_blur range), rounded to multiples of
    # _BLUR_STEP so that at most ~1 + 2 * severity blur calls are made, each on the sub-batch sharing that sigma.
    bins = torch.round((0.4 + 2.0 * _levels(x, ctx)) / _BLUR_STEP).to(torch.int64)
    out = torch.empty_like(x)
    max_kernel = min(x.shape[-2], x.shape[-1])
    max_kernel -= 1 - max_kernel % 2  # largest odd size that reflect padding accepts
    for b in torch.unique(bins).tolist():  # loop over sigma bins, not over images
        sigma = b * _BLUR_STEP
        kernel = min(2 * math.ceil(3.0 * sigma) + 1, max_kernel)
        idx = torch.nonzero(bins == b).squeeze(1)
        out.index_copy_(0, idx, tvf.gaussian_blur(x.index_select(0, idx), [kernel, kernel], [sigma, sigma]))
    return out.clamp_(0.0, 1.0)


# ---------------------------------------------------------------------------------------------- perturbations


def _fgsm(x: Tensor, batch_index: Tensor, ctx: TransformContext) -> Tensor:
    if ctx.input_gradient is None:
        raise ValueError("op 'fgsm' needs ctx.input_gradient (the training loop's d loss / d x closure); got None")
    grad = ctx.input_gradient(x, batch_index)
    if grad.shape != x.shape:
        raise ValueError(f"ctx.input_gradient returned shape {tuple(grad.shape)}, expected {tuple(x.shape)}")
    # Zero-gradient pixels stay put (sign(0) == 0); detach so no graph to the model leaks into the batch.
    return (x + ctx.eps * torch.sign(grad.detach()).to(x.dtype)).clamp_(0.0, 1.0)


def _uniform_noise(x: Tensor, batch_index: Tensor, ctx: TransformContext) -> Tensor:
    noise = (2.0 * rand(ctx, x.shape, x) - 1.0) * ctx.eps
    return (x + noise).clamp_(0.0, 1.0)


# ------------------------------------------------------------------------------------------------------ AugMix

_AUGMIX_PRIMITIVES = AUGMIX_PRIMITIVES
_AUGMIX_WIDTH = 3
_AUGMIX_MAX_DEPTH = 3


def apply_grouped(
    x: Tensor, batch_index: Tensor, active: Tensor, choice: Tensor, names: Sequence[str], ctx: TransformContext
) -> Tensor:
    """Apply ``OPS[names[choice[i]]]`` to each image i with ``active[i]``; others are copied through.

    One op call per name on the sub-batch that chose it, in the order of ``names`` (keeps draws reproducible).
    """
    out = x.clone()
    for k, name in enumerate(names):
        idx = torch.nonzero(active & (choice == k)).squeeze(1)
        if idx.numel() == 0:
            continue
        out.index_copy_(0, idx, OPS[name](x.index_select(0, idx), batch_index.index_select(0, idx), ctx))
    return out


def _augmix(x: Tensor, batch_index: Tensor, ctx: TransformContext) -> Tensor:
    # The whole AugMix mixture as one op: `width` chains of depth U{1,2,3}, chain weights Dirichlet(1,..,1), skip
    # weight Beta(1,1). torch.distributions cannot take a generator, so use Dirichlet(1..1) = normalised Exp(1) =
    # normalised -log(U) and Beta(1,1) = U(0,1). Mixing is in [0,1] pixel space, which equals AugMix's mixing after
    # `preprocess` because normalisation is affine and the weights sum to one.
    b = x.shape[0]
    exp1 = -torch.log1p(-rand(ctx, (_AUGMIX_WIDTH, b), x))  # log1p(-u) is finite since u < 1
    weights = exp1 / exp1.sum(dim=0, keepdim=True).clamp_min(torch.finfo(x.dtype).tiny)
    skip = _per_image(rand(ctx, (b,), x))
    # All chains run side by side as one [width * B] batch (chain-major), so each depth step is one grouped call per
    # primitive instead of one per primitive and chain.
    depth = 1 + torch.floor(_AUGMIX_MAX_DEPTH * rand(ctx, (_AUGMIX_WIDTH * b,), x))
    chains = x.repeat(_AUGMIX_WIDTH, 1, 1, 1)
    chain_index = batch_index.repeat(_AUGMIX_WIDTH)
    n_ops = len(_AUGMIX_PRIMITIVES)
    for step in range(_AUGMIX_MAX_DEPTH):
        choice = torch.floor(n_ops * rand(ctx, (_AUGMIX_WIDTH * b,), x)).to(torch.int64).clamp_(max=n_ops - 1)
        chains = apply_grouped(chains, chain_index, depth > step, choice, _AUGMIX_PRIMITIVES, ctx)
    mix = (_per_image(weights.reshape(-1)) * chains).view(_AUGMIX_WIDTH, *x.shape).sum(dim=0)
    return ((1.0 - skip) * x + skip * mix).clamp_(0.0, 1.0)


# ---------------------------------------------------------------------------------------------- catalogue

OPS: dict[str, Op] = {
    "autocontrast": _autocontrast,
    "equalize": _equalize,
    "posterize": _posterize,
    "solarize": _solarize,
    "rotate": _rotate,
    "shear_x": _shear_x,
    "shear_y": _shear_y,
    "translate_x": _translate_x,
    "translate_y": _translate_y,
    "brightness": _brightness,
    "contrast": _contrast,
    "saturation": _saturation,
    "sharpness": _sharpness,
    "gaussian_noise": _gaussian_noise,
    "blur": _blur,
    "fgsm": _fgsm,
    "uniform_noise": _uniform_noise,
    "augmix": _augmix,
}
