"""Tests for latune.models: architectures, Normalize, build_model and checkpoint I/O."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from torch import nn

from latune.core import models
from latune.core.models import MODELS, Normalize, build_model, load_checkpoint, save_checkpoint

NUM_CLASSES, NUM_EXTRA = 10, 3

# (arch, in_channels, image_size, small_stem): every MODELS entry at a size it is used at.
CASES = [
    ("small_cnn", 1, 16, None),
    ("small_cnn", 3, 32, None),
    ("preact_resnet18", 3, 32, None),
    ("wrn34_10", 3, 32, None),
    ("resnet50", 3, 32, True),
    ("resnet50", 3, 64, None),
]
HEAVY = ("wrn34_10", "resnet50")  # seconds per forward and backward pass on a 2-core CPU: marked slow


def _marked(cases):
    """``cases`` for parametrize, those of a HEAVY architecture marked slow."""
    return [pytest.param(*case, marks=pytest.mark.slow) if case[0] in HEAVY else case for case in cases]


def _build(arch: str, in_channels: int = 3, image_size: int = 32, small_stem: bool | None = None, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(arch, num_classes=NUM_CLASSES, num_extra=NUM_EXTRA, in_channels=in_channels,
                       image_size=image_size, mean=[0.5] * in_channels, std=[0.25] * in_channels,
                       small_stem=small_stem)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_cases_cover_every_model():
    assert {case[0] for case in CASES} == set(MODELS)


@pytest.mark.parametrize("arch,in_channels,image_size,small_stem", _marked(CASES))
def test_forward_shape_finite_and_input_gradient(arch, in_channels, image_size, small_stem):
    model = _build(arch, in_channels, image_size, small_stem)
    x = torch.rand(2, in_channels, image_size, image_size, requires_grad=True)
    out = model(x)
    assert out.shape == (2, NUM_CLASSES + NUM_EXTRA)
    assert torch.isfinite(out).all()
    # Attacks need d(loss)/d(input) in pixel space, through the Normalize layer.
    out[:, :NUM_CLASSES].logsumexp(1).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_resnet50_stem_choice():
    auto_small = _build("resnet50", image_size=64)[1]
    assert auto_small.conv1.kernel_size == (3, 3) and auto_small.conv1.stride == (1, 1)
    assert isinstance(auto_small.maxpool, nn.Identity)
    auto_large = _build("resnet50", image_size=224)[1]
    assert auto_large.conv1.kernel_size == (7, 7) and isinstance(auto_large.maxpool, nn.MaxPool2d)
    gray_large = _build("resnet50", in_channels=1, image_size=32, small_stem=False)[1]
    assert gray_large.conv1.in_channels == 1 and gray_large.conv1.kernel_size == (7, 7)


@pytest.mark.parametrize("arch", ["small_cnn", "preact_resnet18", "wrn34_10"])
def test_cifar_nets_reject_large_stem(arch):
    with pytest.raises(ValueError, match="small_stem=False"):
        MODELS[arch](13, 3, 32, False)


def test_normalize_known_values_and_buffers():
    norm = Normalize([0.5, 0.5], [0.25, 0.25])
    x = torch.tensor([0.5, 0.75, 0.25, 1.0]).view(1, 2, 2, 1)
    torch.testing.assert_close(norm(x), torch.tensor([0.0, 1.0, -1.0, 2.0]).view(1, 2, 2, 1))
    assert set(norm.state_dict()) == {"mean", "std"}
    assert norm.to(torch.float64).mean.dtype == torch.float64  # buffers follow .to()


def test_normalize_and_build_validate_arguments():
    with pytest.raises(ValueError):
        Normalize([0.5, 0.5], [0.25])
    with pytest.raises(ValueError):
        Normalize([0.5], [0.0])
    with pytest.raises(ValueError, match="one value per input channel"):
        build_model("small_cnn", num_classes=10, num_extra=0, in_channels=3, image_size=32,
                    mean=[0.5], std=[0.25])


def test_unknown_arch_names_allowed_values():
    with pytest.raises(ValueError) as err:
        _build("vgg16")
    message = str(err.value)
    assert "unknown architecture 'vgg16'" in message
    for arch in MODELS:
        assert arch in message


def test_build_structure_and_spec():
    model = _build("small_cnn", in_channels=1, image_size=16)
    assert isinstance(model, nn.Sequential) and isinstance(model[0], Normalize)
    assert model.num_classes == NUM_CLASSES and model.num_extra == NUM_EXTRA
    spec = model.latune_spec
    assert json.loads(json.dumps(spec)) == spec  # plain JSON-able
    assert spec == {"arch": "small_cnn", "num_classes": 10, "num_extra": 3, "in_channels": 1,
                    "image_size": 16, "mean": [0.5], "std": [0.25], "small_stem": None}


@pytest.mark.parametrize("arch", ["small_cnn", "preact_resnet18", "resnet50"])
def test_deterministic_given_seed(arch):
    a, b = _build(arch, seed=3), _build(arch, seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    # Normalize has only buffers, so the first parameter is the stem conv's weight.
    assert not torch.equal(next(a.parameters()), next(_build(arch, seed=4).parameters()))


@pytest.mark.parametrize("arch", ["small_cnn", "preact_resnet18"])
def test_channels_last_and_bf16_autocast(arch):
    model = _build(arch).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        out_cl = model_cl(x.to(memory_format=torch.channels_last))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out_bf16 = model(x)
    torch.testing.assert_close(out_cl, ref, rtol=1e-4, atol=1e-4)
    assert out_bf16.shape == ref.shape and torch.isfinite(out_bf16.float()).all()
    assert (out_bf16.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.1


def test_small_cnn_is_much_smaller_than_preact_resnet18():
    assert _n_params(_build("small_cnn")) * 50 < _n_params(_build("preact_resnet18"))


@pytest.mark.parametrize("arch,image_size", _marked([("small_cnn", 16), ("preact_resnet18", 32), ("resnet50", 32)]))
def test_checkpoint_round_trip(tmp_path, arch, image_size):
    model = _build(arch, image_size=image_size)
    # A train-mode pass moves the BatchNorm running stats away from their init values,
    # so the round trip also checks that buffers are saved.
    model.train()
    model(torch.rand(4, 3, image_size, image_size))
    model.eval()
    x = torch.rand(2, 3, image_size, image_size)
    config = {"model.arch": arch, "train.lr": 0.1, "attack.steps": 10, "la.transforms": ("rot90", "flip"),
              "seed": np.int64(7), "out_dir": tmp_path}
    path = tmp_path / "ckpt.pt"
    save_checkpoint(path, model, config=config, extra={"epoch": 3, "best": torch.tensor(0.5)})

    rng_before = torch.random.get_rng_state()
    loaded = load_checkpoint(path)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # loading leaves the caller's RNG alone
    assert not loaded.training
    assert loaded.latune_spec == model.latune_spec
    assert loaded.num_classes == NUM_CLASSES and loaded.num_extra == NUM_EXTRA
    assert type(loaded.num_classes) is int and type(loaded.num_extra) is int
    assert loaded.latune_config == {"model.arch": arch, "train.lr": 0.1, "attack.steps": 10,
                                    "la.transforms": ["rot90", "flip"], "seed": 7, "out_dir": str(tmp_path)}
    assert loaded.latune_extra["epoch"] == 3 and loaded.latune_extra["best"].item() == 0.5
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    # A resumed run builds with the same spec and loads the raw state_dict too.
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "latune-checkpoint-v1" and raw["config"]["train.lr"] == 0.1
    assert all(t.device.type == "cpu" for t in raw["state_dict"].values())


def test_checkpoint_without_config(tmp_path):
    model = _build("small_cnn")
    save_checkpoint(tmp_path / "c.pt", model)
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded.latune_config == {} and loaded.latune_extra is None


def test_non_latune_files_raise_value_error(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint")
    state_dict_only = tmp_path / "state_dict.pt"
    torch.save(_build("small_cnn").state_dict(), state_dict_only)
    other_dict = tmp_path / "other.pt"
    torch.save({"format": "something-else", "spec": {}}, other_dict)
    truncated = tmp_path / "truncated.pt"
    save_checkpoint(tmp_path / "full.pt", _build("small_cnn"))
    truncated.write_bytes((tmp_path / "full.pt").read_bytes()[:1000])
    for path in (garbage, state_dict_only, other_dict, truncated):
        with pytest.raises(ValueError, match="not a latune checkpoint"):
            load_checkpoint(path)


def test_save_requires_a_built_model(tmp_path):
    with pytest.raises(ValueError, match="latune_spec"):
        save_checkpoint(tmp_path / "x.pt", nn.Linear(2, 2))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    model = _build("small_cnn")
    path = tmp_path / "sub" / "ckpt.pt"
    save_checkpoint(path, model, config={"a": 1})
    save_checkpoint(path, model, config={"a": 2})  # overwrite in place
    assert os.listdir(path.parent) == ["ckpt.pt"]
    assert load_checkpoint(path).latune_config == {"a": 2}

    # Unstorable config: refused before anything is written.
    with pytest.raises(TypeError, match="config.bad"):
        save_checkpoint(path, model, config={"bad": object()})
    assert os.listdir(path.parent) == ["ckpt.pt"]

    # A crash mid-write leaves the previous checkpoint intact and no temp file behind.
    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(models.torch, "save", crashing_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, model, config={"a": 3})
    monkeypatch.undo()
    assert os.listdir(path.parent) == ["ckpt.pt"]
    assert load_checkpoint(path).latune_config == {"a": 2}
