"""Tests for latune.transforms: op contracts, label groups, label augmentation sampling."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as nnf
import torchvision.transforms.v2.functional as tvf
from torchvision.transforms.v2 import InterpolationMode

from latune.core._transform_ops import _affine_rows, _rotation_matrix, _warp
from latune.core.transforms import (
    OPS,
    SETS,
    TransformContext,
    apply_label_augmentation,
    label_groups,
    set_ops,
)

# (op, channels) pairs allowed to return the input unchanged for every test image, with the reason.
IDENTITY_OK = {
    ("saturation", 1): "grayscale of a 1-channel image is itself (torchvision/PIL behaviour)",
}
# Ops without per-image randomness: identical inputs give identical outputs.
DETERMINISTIC = {"autocontrast", "equalize", "fgsm"}


pytestmark = pytest.mark.usefixtures("single_thread")


def _digits() -> torch.Tensor:
    """64 sklearn digits, 1 channel, bilinearly upsampled 8x8 -> 16x16, in [0, 1]."""
    from sklearn.datasets import load_digits

    images = torch.tensor(load_digits().images[:64], dtype=torch.float32).unsqueeze(1) / 16.0
    return nnf.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False).clamp(0.0, 1.0)


def _smooth_rgb() -> torch.Tensor:
    """32 random smooth 3-channel 32x32 images with per-image range inside (0, 1) (not full-range)."""
    g = torch.Generator().manual_seed(1234)
    low = torch.rand(32, 3, 5, 5, generator=g)
    x = nnf.interpolate(low, size=(32, 32), mode="bicubic", align_corners=False).clamp(0.0, 1.0)
    return 0.05 + 0.9 * x


class _Model(nn.Module):
    """Tiny linear model (no ReLU, so input gradients are almost surely non-zero everywhere)."""

    def __init__(self, channels: int, size: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * size * size, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _gradient_fn(x_full: torch.Tensor):
    """Closure computing d CE / d x for a fixed random model and labels of the full batch ``x_full``."""
    torch.manual_seed(0)
    model = _Model(x_full.shape[1], x_full.shape[-1])
    labels = torch.arange(x_full.shape[0]) % 10

    def input_gradient(xs: torch.Tensor, batch_index: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            xs = xs.detach().requires_grad_(True)
            loss = nnf.cross_entropy(model(xs), labels[batch_index])
            return torch.autograd.grad(loss, xs)[0]

    return input_gradient


@pytest.fixture(scope="module", params=["digits", "rgb"])
def batch(request):
    x = _digits() if request.param == "digits" else _smooth_rgb()
    return x, _gradient_fn(x)


def _ctx(seed: int, grad=None, severity: int = 3) -> TransformContext:
    return TransformContext(generator=torch.Generator().manual_seed(seed), severity=severity, input_gradient=grad)


def _run(name, x, grad, seed=0, severity=3):
    return OPS[name](x, torch.arange(x.shape[0]), _ctx(seed, grad, severity))


# ---------------------------------------------------------------------------------------------- per-op contract


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_contract(name, batch):
    x, grad = batch
    x_before = x.clone()
    out = _run(name, x, grad)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert torch.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert torch.equal(x, x_before), "op modified its input in place"
    assert torch.equal(out, _run(name, x, grad)), "same seed must reproduce the output"
    changed = (out - x).flatten(1).abs().amax(dim=1) > 1e-6
    if (name, x.shape[1]) in IDENTITY_OK:
        assert not changed.any()
    else:
        assert changed.any(), f"{name} left every image unchanged"


@pytest.mark.parametrize("name", sorted(set(OPS) - DETERMINISTIC - {"saturation"}))
def test_op_draws_per_image_magnitudes(name):
    # One image repeated: per-image randomness must make the outputs differ across the batch.
    x = _smooth_rgb()[:1].expand(16, -1, -1, -1).contiguous()
    out = _run(name, x, None)
    assert not torch.allclose(out, out[:1].expand_as(out))


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_severity_10_stays_in_range(name):
    x = _smooth_rgb()[:8]
    out = _run(name, x, _gradient_fn(x), severity=10)
    assert out.shape == x.shape and out.min() >= 0.0 and out.max() <= 1.0 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_empty_batch_float64_and_tiny_images(name):
    grad = lambda xs, idx: torch.ones_like(xs)  # noqa: E731 - fgsm only needs some gradient here
    for shape, dtype in [((0, 3, 8, 8), torch.float32), ((4, 3, 8, 8), torch.float64), ((3, 1, 2, 3), torch.float32)]:
        x = torch.rand(shape, generator=torch.Generator().manual_seed(1)).to(dtype)
        out = _run(name, x, grad)
        assert out.shape == x.shape and out.dtype == dtype
        assert out.numel() == 0 or (out.min() >= 0 and out.max() <= 1)


@pytest.mark.parametrize("name", ["autocontrast", "equalize", "contrast", "sharpness", "saturation", "posterize"])
def test_constant_images_no_nan(name):
    x = torch.cat([torch.zeros(2, 3, 8, 8), torch.full((2, 3, 8, 8), 0.5), torch.ones(2, 3, 8, 8)])
    out = _run(name, x, None)
    assert torch.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0
    if name in ("autocontrast", "equalize"):
        assert torch.allclose(out, x, atol=1 / 255)


def test_posterize_keeps_top_bits():
    x = torch.rand(16, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    out = _run("posterize", x, None, severity=10)
    bytes_ = (out * 255).round().to(torch.int64)
    # At most 4 bits survive (AugMix), at least 1: the low 4 bits are always zero.
    assert (bytes_ & 0x0F == 0).all()


def test_solarize_inverts_above_threshold_only():
    x = torch.linspace(0, 1, 64).view(1, 1, 8, 8).expand(4, 1, 8, 8).contiguous()
    out = _run("solarize", x, None)
    kept = torch.isclose(out, x)
    inverted = torch.isclose(out, 1.0 - x)
    assert (kept | inverted).all()
    assert kept[:, :, 0, 0].all()  # value 0 is below every threshold in (0.7, 0.99]


# ------------------------------------------------------------------------- geometric conventions vs torchvision


def _rgb_small() -> torch.Tensor:
    return _smooth_rgb()[:2, :, :20, :24].contiguous()


@pytest.mark.parametrize("degrees", [17.0, -25.0])
def test_rotation_matches_torchvision(degrees):
    x = _rgb_small()
    ours = _warp(x, _rotation_matrix(torch.full((2,), degrees), 20, 24))
    ref = tvf.rotate(x, degrees, interpolation=InterpolationMode.BILINEAR)
    assert torch.allclose(ours, ref, atol=1e-4)


def test_shear_and_translate_match_torchvision_pil_convention():
    x = _rgb_small()
    one, zero, s, t = torch.ones(2), torch.zeros(2), torch.full((2,), 0.2), torch.full((2,), 3.0)
    shear_deg = math.degrees(math.atan(0.2))
    bilinear = InterpolationMode.BILINEAR
    ref = tvf.affine(x, angle=0.0, translate=[0, 0], scale=1.0, shear=[shear_deg, 0.0], interpolation=bilinear,
                     center=[0, 0])  # PIL shears about the top-left corner; torchvision's AutoAugment does the same
    assert torch.allclose(_warp(x, _affine_rows(one, s, zero, zero, one, zero)), ref, atol=1e-4)
    ref = tvf.affine(x, angle=0.0, translate=[0, 0], scale=1.0, shear=[0.0, shear_deg], interpolation=bilinear,
                     center=[0, 0])
    assert torch.allclose(_warp(x, _affine_rows(one, zero, zero, s, one, zero)), ref, atol=1e-4)
    ref = tvf.affine(x, angle=0.0, translate=[-3, 0], scale=1.0, shear=[0.0, 0.0], interpolation=bilinear)
    assert torch.allclose(_warp(x, _affine_rows(one, zero, t, zero, one, zero)), ref, atol=1e-4)


# -------------------------------------------------------------------------------------------------------- fgsm


def test_fgsm_moves_each_pixel_by_eps_or_clamps(batch):
    x, grad_fn = batch
    ctx = TransformContext(generator=torch.Generator().manual_seed(0), eps=4 / 255, input_gradient=grad_fn)
    idx = torch.arange(x.shape[0])
    out = OPS["fgsm"](x, idx, ctx)
    grad = grad_fn(x, idx)
    target = x + ctx.eps * torch.sign(grad)
    moved = torch.isclose((out - x).abs(), torch.tensor(ctx.eps), atol=1e-6)
    clamped = ((target < 0) & (out == 0)) | ((target > 1) & (out == 1))
    assert ((grad == 0) | moved | clamped).all()
    assert (grad != 0).float().mean() > 0.9  # the check above is not vacuous
    assert torch.allclose(out, target.clamp(0, 1), atol=1e-6)


def test_fgsm_uses_batch_positions():
    x = _smooth_rgb()
    grad_fn = _gradient_fn(x)
    sub = torch.tensor([3, 7, 11])
    ctx = _ctx(0, grad_fn)
    out_sub = OPS["fgsm"](x[sub], sub, ctx)
    out_full = OPS["fgsm"](x, torch.arange(x.shape[0]), ctx)
    # Per-image CE gradients are independent of the rest of the batch up to the mean's scale, so signs agree.
    assert torch.allclose(out_sub, out_full[sub], atol=1e-6)


def test_fgsm_without_gradient_raises():
    with pytest.raises(ValueError, match="input_gradient"):
        _run("fgsm", _smooth_rgb()[:2], None)


def test_uniform_noise_within_eps():
    x = _smooth_rgb()
    out = _run("uniform_noise", x, None)
    assert (out - x).abs().max() <= 8 / 255 + 1e-6


# ------------------------------------------------------------------------------------------------------ context


def test_context_validation():
    g = torch.Generator()
    with pytest.raises(ValueError, match="severity"):
        TransformContext(generator=g, severity=0)
    with pytest.raises(ValueError, match="severity"):
        TransformContext(generator=g, severity=11)
    with pytest.raises(ValueError, match="eps"):
        TransformContext(generator=g, eps=-0.1)
    with pytest.raises(TypeError, match="generator"):
        TransformContext(generator=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_generator_device_mismatch_raises():
    ctx = TransformContext(generator=torch.Generator(device="cuda").manual_seed(0))
    with pytest.raises(ValueError, match="device|generator"):
        OPS["rotate"](torch.rand(2, 3, 8, 8), torch.arange(2), ctx)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(OPS))
def test_ops_on_cuda(name):
    x = _smooth_rgb().cuda()
    grad = lambda xs, idx: torch.sign(xs - 0.5)  # noqa: E731 - any device-local gradient will do
    outs = [
        OPS[name](x, torch.arange(x.shape[0], device="cuda"),
                  TransformContext(generator=torch.Generator(device="cuda").manual_seed(0), input_gradient=grad))
        for _ in range(2)
    ]
    assert outs[0].device == x.device and outs[0].shape == x.shape
    assert outs[0].min() >= 0 and outs[0].max() <= 1 and torch.equal(outs[0], outs[1])


# ------------------------------------------------------------------------------------------- sets and groups


def test_sets_reference_known_ops_and_all_covers_catalogue():
    for name, ops in SETS.items():
        assert isinstance(ops, tuple) and ops and set(ops) <= set(OPS), name
        assert set_ops(name) == ops
    assert set(SETS["all"]) == set(OPS) - {"augmix"} and len(SETS["all"]) == len(OPS) - 1
    assert len(SETS["augmix_ops"]) == 9 and SETS["augmix"] == ("augmix",)


def test_set_ops_unknown_lists_allowed():
    with pytest.raises(ValueError) as info:
        set_ops("nope")
    message = str(info.value)
    assert "'nope'" in message and all(name in message for name in SETS)


def test_label_groups():
    ops = SETS["all"]
    n = len(ops)
    assert label_groups(ops, 1) == (0,) * n
    assert label_groups(ops, n) == tuple(range(n))
    assert label_groups(("a", "b", "c", "d", "e"), 2) == (0, 0, 0, 1, 1)  # numpy.array_split sizes
    for m in range(1, n + 1):
        groups = label_groups(ops, m)
        sizes = [groups.count(g) for g in range(m)]
        assert list(groups) == sorted(groups) and max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    for bad in (0, -1, n + 1):
        with pytest.raises(ValueError):
            label_groups(ops, bad)


# ---------------------------------------------------------------------------------- apply_label_augmentation


def test_p0_identity_and_p1_all_transformed():
    x = _smooth_rgb()
    x_before = x.clone()
    out, z = apply_label_augmentation(x, SETS["geometric"], 2, 0.0, _ctx(0))
    assert torch.equal(out, x) and (z == -1).all() and z.dtype == torch.int64
    out, z = apply_label_augmentation(x, SETS["geometric"], 2, 1.0, _ctx(0))
    assert (z >= 0).all() and z.max() <= 1
    assert torch.equal(x, x_before)


def test_p_half_fraction_and_group_consistency(monkeypatch):
    # Marker ops paint each image with a constant identifying the op, so z can be checked against what was applied.
    names = tuple(f"_marker{k}" for k in range(5))
    for k, name in enumerate(names):
        monkeypatch.setitem(OPS, name, lambda xs, idx, ctx, k=k: torch.full_like(xs, (k + 1) / 10))
    x = torch.zeros(2000, 1, 4, 4)
    out, z = apply_label_augmentation(x, names, 3, 0.5, _ctx(5))
    assert abs((z >= 0).float().mean().item() - 0.5) < 0.05
    applied = torch.round(out[:, 0, 0, 0] * 10).long() - 1  # op index, -1 where untouched
    assert (out == out[:, :1, :1, :1]).all()
    groups = torch.tensor(label_groups(names, 3))  # (0, 0, 1, 1, 2)
    expected = torch.where(applied >= 0, groups[applied.clamp(min=0)], -1)
    assert torch.equal(z, expected)
    counts = torch.bincount(applied[applied >= 0], minlength=5).float()
    assert (counts / counts.sum() - 0.2).abs().max() < 0.05  # ops drawn uniformly


def test_untouched_images_are_bit_identical():
    x = _digits()[:8].repeat(25, 1, 1, 1)
    out, z = apply_label_augmentation(x, SETS["augmix_ops"], 3, 0.5, _ctx(2))
    assert torch.equal(out[z == -1], x[z == -1]) and set(z.unique().tolist()) == {-1, 0, 1, 2}


@pytest.mark.parametrize("set_name", sorted(SETS))
def test_sets_end_to_end(set_name, batch):
    x, grad = batch
    ops = set_ops(set_name)
    m = min(2, len(ops))
    out, z = apply_label_augmentation(x, ops, m, 0.7, _ctx(11, grad))
    assert out.shape == x.shape and out.dtype == x.dtype and out.min() >= 0 and out.max() <= 1
    assert z.shape == (x.shape[0],) and z.dtype == torch.int64 and z.min() >= -1 and z.max() < m
    out2, z2 = apply_label_augmentation(x, ops, m, 0.7, _ctx(11, grad))
    assert torch.equal(out, out2) and torch.equal(z, z2)


def test_apply_rejects_bad_arguments():
    x = _smooth_rgb()[:4]
    with pytest.raises(ValueError, match="unknown ops"):
        apply_label_augmentation(x, ("rotate", "nope"), 1, 0.5, _ctx(0))
    with pytest.raises(ValueError, match="p must"):
        apply_label_augmentation(x, ("rotate",), 1, 1.5, _ctx(0))
    with pytest.raises(ValueError):
        apply_label_augmentation(x, ("rotate",), 2, 0.5, _ctx(0))
    with pytest.raises(ValueError):
        apply_label_augmentation(x[0], ("rotate",), 1, 0.5, _ctx(0))


def test_an_image_the_op_left_unchanged_gets_no_transformation_label(monkeypatch):
    # saturation of gray images, fgsm / uniform_noise of size 0: the image is untouched, so z = -1 (plain target)
    gray = _digits()[:16]
    _, z = apply_label_augmentation(gray, ("saturation",), 1, 1.0, _ctx(0))
    assert (z == -1).all()
    zero = TransformContext(generator=torch.Generator().manual_seed(0), eps=0.0, input_gradient=_gradient_fn(gray))
    out, z = apply_label_augmentation(gray, ("fgsm", "uniform_noise"), 2, 1.0, zero)
    assert torch.equal(out, gray) and (z == -1).all()
    # autocontrast changes an image that does not span [0, 1] and leaves one that does
    full = gray.clone()
    full[:8, :, 0, 0], full[:8, :, 0, 1] = 0.0, 1.0
    full[8:] = 0.2 + 0.5 * full[8:]
    _, z = apply_label_augmentation(full, ("autocontrast",), 1, 1.0, _ctx(0))
    assert z.tolist() == [-1] * 8 + [0] * 8
    # an op that changes only every other image: exactly those are labelled with its group
    monkeypatch.setitem(OPS, "_odd", lambda xs, idx, ctx: torch.where((idx % 2 == 1).view(-1, 1, 1, 1), 1 - xs, xs))
    rgb = _smooth_rgb()
    _, z = apply_label_augmentation(rgb, ("rotate", "_odd"), 2, 1.0, _ctx(3))
    drew_odd = z != 0
    assert drew_odd.any() and (z[drew_odd] == torch.where(torch.arange(32)[drew_odd] % 2 == 1, 1, -1)).all()
