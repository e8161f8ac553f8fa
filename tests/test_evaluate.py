"""latune.evaluate's corruption evaluation on cases with known answers: a model that reads the class off the
image's brightness, released CIFAR-C style arrays written by the test, and a constant model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from latune.config import ConfigError
from latune.core.corruptions import load_corruption_files
from latune.core.data import Split
from latune.core.evaluate import evaluate_corruptions
from latune.registry import corruption_names


class BrightnessClassifier(nn.Module):
    """Class k for an image whose mean pixel is k/9: a model whose answer on any image is known."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        level = x.mean(dim=(1, 2, 3))[:, None] * 9
        return -(level - torch.arange(10, dtype=x.dtype)) ** 2


class ConstantClassifier(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([1.0] + [0.0] * 9).expand(x.shape[0], 10)


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
    result = evaluate_corruptions(BrightnessClassifier(), split, num_classes=10, names=["fog"], severities=[1, 2],
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
        evaluate_corruptions(BrightnessClassifier(), Split(_constant_images(labels), labels), num_classes=10,
                             names=["fog"], files=lambda n, s: load_corruption_files(tmp_path, n, s))


def test_a_constant_model_errs_on_every_class_but_one_under_any_corruption():
    labels = torch.tensor([0] * 4 + [1] * 4 + [2] * 8)  # class 0 is a quarter of the images
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    result = evaluate_corruptions(ConstantClassifier(), Split(images, labels), num_classes=3,
                                  names=["gaussian_noise", "pixelate"], severities=[3])
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
    kwargs = dict(num_classes=10, names=["shot_noise", "glass_blur"], severities=[2, 4], seed=3)
    first = evaluate_corruptions(model, Split(images, labels), **kwargs)
    assert model.training
    assert evaluate_corruptions(model, Split(images, labels), **kwargs) == first
    # a subset gives the same figures as in the larger set: one random stream per (corruption, severity)
    alone = evaluate_corruptions(model, Split(images, labels), **{**kwargs, "names": ["glass_blur"]})
    assert alone["ce_glass_blur_s4"] == first["ce_glass_blur_s4"]


def test_corruption_names():
    assert corruption_names("none") == () and len(corruption_names("all")) == 15
    assert corruption_names("blur") == ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur")
    assert corruption_names(" fog, snow,fog ") == ("fog", "snow")
    with pytest.raises(ConfigError, match="allowed: none, all, noise, blur, weather, digital"):
        corruption_names("mist")
