"""latune.core.evaluate on cases with known answers: a one-pixel threshold model whose margins decide which
images PGD breaks; for corruptions a model that reads the class off the image's brightness, released CIFAR-C
style arrays written by the test, and a constant model."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch import nn

from latune.config import ConfigError
from latune.core.corruptions import load_corruption_files
from latune.core import transforms
from latune.core.data import Split, to_float
from latune.core.evaluate import EvalSettings, evaluate, evaluate_corruptions
from latune.registry import corruption_names


class BrightnessClassifier(nn.Module):
    """Class k for an image whose mean pixel is k/9: a model whose answer on any image is known."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = x.mean(dim=(1, 2, 3))[:, None] * 9
        return -(level - torch.arange(10, dtype=x.dtype)) ** 2


class ConstantClassifier(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([1.0] + [0.0] * 9).expand(x.shape[0], 10)


def _corruption_settings(num_classes, names, severities=(1, 2, 3, 4, 5), seed=0):
    return EvalSettings(num_classes=num_classes, eps=0.0, alpha=0.0, steps=0, seed=seed, corruptions=tuple(names),
                        corruption_severities=tuple(severities))


def _constant_images(labels: torch.Tensor, size: int = 32) -> torch.Tensor:
    values = torch.round(labels.float() / 9 * 255).to(torch.uint8)
    return values[:, None, None, None].expand(-1, 3, size, size).contiguous()


def test_released_files_give_the_known_corruption_error(tmp_path):
    labels = torch.arange(20) % 10
    # severity 1: the clean images (all right); severity 2: every image one class brighter (all wrong)
    sev1 = _constant_images(labels)
    sev2 = _constant_images((labels + 1) % 10)
    np.save(tmp_path / "fog.npy", torch.cat([sev1, sev2, sev1, sev1, sev1]).permute(0, 2, 3, 1).numpy())
    np.save(tmp_path / "labels.npy", labels.repeat(5).numpy())
    split = Split(_constant_images(labels), labels)
    result = evaluate_corruptions(BrightnessClassifier(), split, _corruption_settings(10, ["fog"], [1, 2]),
                                  files=lambda name, severity: load_corruption_files(tmp_path, name, severity))
    assert result["ce_fog_s1"] == 0.0 and result["ce_fog_s2"] == 1.0
    assert result["ce_fog"] == result["ce_weather"] == result["mce"] == 0.5
    assert result["corruption_acc"] == 0.5 and result["corruption_class_error"] == [0.5] * 10
    assert result["corruption_class_error_sd"] == 0.0 and result["corruption_worst_class_acc"] == 0.5


def test_files_whose_labels_differ_from_the_split_are_refused(tmp_path):
    labels = torch.arange(10)
    np.save(tmp_path / "fog.npy", _constant_images(labels).repeat(5, 1, 1, 1).permute(0, 2, 3, 1).numpy())
    np.save(tmp_path / "labels.npy", ((labels + 1) % 10).repeat(5).numpy())
    with pytest.raises(ValueError, match="eval.corruptions_dir: the fog file's labels do not match"):
        evaluate_corruptions(BrightnessClassifier(), Split(_constant_images(labels), labels),
                             _corruption_settings(10, ["fog"]),
                             files=lambda n, s: load_corruption_files(tmp_path, n, s))


def test_a_constant_model_errs_on_every_class_but_one_under_any_corruption():
    labels = torch.tensor([0] * 4 + [1] * 4 + [2] * 8)  # class 0 is a quarter of the images
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    result = evaluate_corruptions(ConstantClassifier(), Split(images, labels),
                                  _corruption_settings(3, ["gaussian_noise", "pixelate"], [3]))
    assert result["ce_gaussian_noise"] == result["ce_pixelate"] == result["mce"] == 0.75
    assert result["corruption_class_error"] == [0.0, 1.0, 1.0]
    assert result["corruption_class_error_mean"] == pytest.approx(2 / 3)
    assert result["corruption_class_error_sd"] == pytest.approx(math.sqrt(2) / 3)


def test_evaluation_is_deterministic_and_restores_the_model_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10), nn.BatchNorm1d(10))
    model.train()
    labels = torch.arange(32) % 10
    images = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    settings = _corruption_settings(10, ["shot_noise", "glass_blur"], [2, 4], seed=3)
    first = evaluate_corruptions(model, Split(images, labels), settings)
    assert model.training
    assert evaluate_corruptions(model, Split(images, labels), settings) == first
    # a subset gives the same figures as in the larger set: one random stream per (corruption, severity)
    alone = evaluate_corruptions(model, Split(images, labels), _corruption_settings(10, ["glass_blur"], [2, 4], seed=3))
    assert alone["ce_glass_blur_s4"] == first["ce_glass_blur_s4"]


def test_corruption_names():
    assert corruption_names("none") == () and len(corruption_names("all")) == 15
    assert corruption_names("blur") == ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur")
    assert corruption_names(" fog, snow,fog ") == ("fog", "snow")
    with pytest.raises(ConfigError, match="allowed: none, all, noise, blur, weather, digital"):
        corruption_names("mist")


# ----------------------------------------------------------------------------------- clean and robust accuracy

THRESHOLD = 0.5


class ThresholdModel(nn.Module):
    """Class 1 iff the one pixel exceeds THRESHOLD (class 0 otherwise), then two transformation logits that always
    name group 0. Its batch norm is the identity in eval mode (running mean 0, variance 1) but standardises by the
    batch in train mode, where every answer would change."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.bn(x.flatten(1).mean(1, keepdim=True) - THRESHOLD)
        return torch.cat([torch.zeros_like(v), 10 * v, torch.ones_like(v), torch.zeros_like(v)], dim=1)


def _threshold_split():
    # A: class 0, 0.029 below the threshold: one PGD step of 0.01 from a random start in ±0.05 breaks some
    # B: class 1, 0.28 above it, and D: class 0, 0.30 below it: out of reach of ε = 0.05; C: class 0 but above
    values = [120] * 200 + [200] * 50 + [200] * 30 + [50] * 40
    labels = [0] * 200 + [1] * 50 + [0] * 30 + [0] * 40
    return Split(torch.tensor(values, dtype=torch.uint8).view(-1, 1, 1, 1), torch.tensor(labels))


def _broken_by_each_restart(split, settings):
    """Which A images each restart breaks: the random starts are the first draws of the seeded generator, and
    from x + u the step α·sign(gradient) = +α moves the pixel up, projected to at most x + ε."""
    generator = torch.Generator().manual_seed(settings.seed)
    x = to_float(split.images)
    broken = []
    for _ in range(settings.restarts):
        u = (2 * torch.rand(x.shape, generator=generator) - 1) * settings.eps
        broken.append((torch.minimum(x + u + settings.alpha, x + settings.eps) > THRESHOLD).flatten())
    return broken


def test_an_image_is_robust_only_if_it_survives_every_restart_at_known_margins():
    split, model = _threshold_split(), ThresholdModel()
    model.train()  # handed over in train mode: evaluated in eval mode, and given back in train mode
    settings = EvalSettings(num_classes=2, eps=0.05, alpha=0.01, steps=1, restarts=2, batch_size=1024, seed=4)
    result = evaluate(model, split, settings)
    assert model.training and model.bn.num_batches_tracked == 0 and model.bn.running_mean == 0
    first, second = _broken_by_each_restart(split, settings)
    a = torch.arange(len(split)) < 200
    assert (a & second & ~first).sum() > 10  # images only the second restart breaks: they must not count
    robust = ~(a & (first | second))
    robust[250:280] = False  # C is wrong clean already
    assert result["clean_acc"] == pytest.approx(290 / 320)
    assert result["robust_acc"] == pytest.approx(float(robust.float().mean()))
    class0 = split.labels == 0
    assert result["robust_class_error"] == pytest.approx([1 - float(robust[class0].float().mean()), 0.0])
    once = ~(a & first)  # one restart: the same first random start, fewer images broken
    once[250:280] = False
    alone = evaluate(model, split, dataclasses.replace(settings, restarts=1))
    assert alone["robust_acc"] == pytest.approx(float(once.float().mean()))
    assert alone["robust_acc"] > result["robust_acc"]


@pytest.mark.parametrize("eps, steps", [(0.0, 10), (0.05, 0)])
def test_no_attack_means_no_robust_metrics(eps, steps):
    result = evaluate(ThresholdModel(), _threshold_split(),
                      EvalSettings(num_classes=2, eps=eps, alpha=0.01, steps=steps))
    assert result["clean_acc"] == pytest.approx(290 / 320)
    assert not [key for key in result if key.startswith("robust_")]


def test_transform_acc_counts_only_the_images_an_op_changed(monkeypatch):
    # the head always names group 0: right on every image the marker op (group 0) painted; saturation (group 1)
    # leaves one-channel images as they are, so those images are not scored at all
    monkeypatch.setitem(transforms.OPS, "_paint", lambda xs, idx, ctx: torch.full_like(xs, 0.3))
    settings = EvalSettings(num_classes=2, eps=0.0, alpha=0.0, steps=0, transform_ops=("_paint", "saturation"),
                            num_extra=2)
    assert evaluate(ThresholdModel(), _threshold_split(), settings)["transform_acc"] == 1.0
