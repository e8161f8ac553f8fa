"""Batched, generator-driven image transformations for label augmentation (arXiv 2503.16179).

Every op has the signature ``op(x, batch_index, ctx) -> Tensor`` where ``x`` is float[B, C, H, W] with values in
[0, 1] and C in {1, 3} (torchvision's colour kernels reject other channel counts), ``batch_index`` is long[B] (the
positions of these images in the full training batch, only used by ``fgsm``) and ``ctx`` is a
:class:`TransformContext`. Ops return a new tensor of the same shape, dtype and device with values in [0, 1] and never
modify ``x`` in place. All randomness is drawn from ``ctx.generator``, which must live on the images' device, so a
fixed seed reproduces the output exactly on a given device.

Per-image magnitudes follow AugMix (Hendrycks et al. 2020): ``level = U(0.1, severity) / 10`` per image, so
severity 3 gives levels in [0.01, 0.3). Geometric ops additionally draw a random sign per image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from latune.core._transform_ops import OPS, Op, TransformContext, apply_grouped, rand
from latune.registry import TRANSFORM_SETS

__all__ = [
    "OPS",
    "SETS",
    "Op",
    "TransformContext",
    "UNCHANGED_TOL",
    "apply_label_augmentation",
    "label_groups",
    "set_ops",
]


SETS = TRANSFORM_SETS  # the names are plain data in latune.registry (validation loads no torch)
# largest pixel change (in [0,1] units) that still counts as "unchanged": float rounding of an identity blend
# (saturation of a gray image is f*x + (1-f)*x) is ~1e-7; a real op moves some pixel by orders of magnitude more
UNCHANGED_TOL = 1e-6


def set_ops(name: str) -> tuple[str, ...]:
    """Op names of the transformation set ``name``; ValueError (naming the allowed sets) if unknown."""
    if name not in SETS:
        raise ValueError(f"unknown transformation set {name!r}; allowed: {', '.join(sorted(SETS))}")
    return SETS[name]


def label_groups(ops: Sequence[str], m: int) -> tuple[int, ...]:
    """Group index in 0..m-1 of each op: contiguous split of ``ops`` in listed order into m near-equal groups.

    Same sizes as ``numpy.array_split`` (the first ``len(ops) % m`` groups get one extra op). ValueError unless
    1 <= m <= len(ops).
    """
    n = len(ops)
    if isinstance(m, bool) or not isinstance(m, int) or not 1 <= m <= n:
        raise ValueError(f"m must be an int in 1..{n} (number of ops), got {m!r}")
    size, extra = divmod(n, m)
    groups: list[int] = []
    for g in range(m):
        groups.extend([g] * (size + (1 if g < extra else 0)))
    return tuple(groups)


def apply_label_augmentation(
    x: Tensor, ops: Sequence[str], m: int, p: float, ctx: TransformContext
) -> tuple[Tensor, Tensor]:
    """Transform each image independently with probability ``p`` by one op drawn uniformly from ``ops``.

    x: float[B, C, H, W] in [0, 1], C in {1, 3}, on ctx.generator's device; not modified.
    Returns ``(x_out, z)``: x_out has x's shape/dtype/device with values in [0, 1]; z is long[B] on x's device with
    the label group (``label_groups(ops, m)``) of the op applied to each image, or -1 where no op was applied.
    Each op is called once, on the sub-batch of images that drew it, with their positions as ``batch_index``.

    Only an image that was actually transformed gets a group: where the drawn op moved no pixel by more than
    ``UNCHANGED_TOL`` (saturation of a one-channel image, autocontrast of a full-range one, fgsm with a zero
    gradient, fgsm / uniform_noise of size 0), z is -1 as for an untransformed image, so its LA target is the
    plain one-hot class (``labels.la_targets``): no transformation label for an image that shows none.
    """
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a float tensor [B, C, H, W], got dtype {x.dtype} and shape {tuple(x.shape)}")
    unknown = [name for name in ops if name not in OPS]
    if unknown:
        raise ValueError(f"unknown ops {unknown}; allowed: {', '.join(OPS)}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p!r}")
    groups = x.new_tensor(label_groups(ops, m), dtype=torch.int64)  # also rejects empty ops / bad m
    b = x.shape[0]
    # Both draws always happen so the generator stream does not depend on p.
    transformed = rand(ctx, (b,), x) < p
    choice = torch.floor(len(ops) * rand(ctx, (b,), x)).to(torch.int64).clamp_(max=len(ops) - 1)
    batch_index = torch.arange(b, device=x.device)
    x_out = apply_grouped(x, batch_index, transformed, choice, ops, ctx)
    changed = (x_out - x).abs().flatten(1).amax(dim=1) > UNCHANGED_TOL  # one pass over the batch: cheap
    z = torch.where(transformed & changed, groups[choice], torch.full_like(choice, -1))
    return x_out, z
