import math

import pytest
import torch

from latune.core.metrics import class_errors, corruption_errors, summarize


def test_class_errors_known_case():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2])
    correct = torch.tensor([1, 1, 1, 0, 1, 0, 0, 0], dtype=torch.bool)
    assert class_errors(correct, labels, 3) == [0.25, 0.5, 1.0]


def test_summary_known_case():
    # errors 0.25, 0.5, 1.0 -> mean 7/12, population SD sqrt(((1/3)^2 + (1/12)^2 + (5/12)^2)/3)
    summary = summarize("robust", [0.25, 0.5, 1.0], correct=3, total=8)
    assert summary["robust_acc"] == pytest.approx(3 / 8)
    assert summary["robust_class_error_mean"] == pytest.approx(7 / 12)
    assert summary["robust_class_error_sd"] == pytest.approx(math.sqrt((1 / 9 + 1 / 144 + 25 / 144) / 3))
    assert summary["robust_worst_class_acc"] == pytest.approx(0.0)
    assert summary["robust_class_error"] == [0.25, 0.5, 1.0]


def test_equal_errors_have_zero_sd_and_absent_classes_are_skipped():
    labels = torch.tensor([0, 0, 1, 1])
    errors = class_errors(torch.tensor([True, False, False, True]), labels, 3)
    assert errors[:2] == [0.5, 0.5] and math.isnan(errors[2])
    summary = summarize("clean", errors, correct=2, total=4)
    assert summary["clean_class_error_sd"] == 0.0 and summary["clean_class_error_mean"] == 0.5
    assert summary["clean_worst_class_acc"] == 0.5


def test_corruption_errors_known_case():
    # two corruptions of one family and one of another, two severities each
    errors = {("fog", 1): 0.1, ("fog", 2): 0.3, ("snow", 1): 0.2, ("snow", 2): 0.4, ("jpeg_compression", 1): 0.5,
              ("jpeg_compression", 2): 0.5}
    families = {"weather": ("snow", "frost", "fog"), "digital": ("jpeg_compression",), "noise": ("gaussian_noise",)}
    out = corruption_errors(errors, families, baseline={"fog": 0.4, "snow": 0.3, "jpeg_compression": 0.0})
    assert out["ce_fog_s2"] == 0.3 and out["ce_fog"] == pytest.approx(0.2) and out["ce_snow"] == pytest.approx(0.3)
    assert out["ce_weather"] == pytest.approx(0.25) and out["ce_digital"] == pytest.approx(0.5)
    assert "ce_noise" not in out  # no corruption of that family was evaluated
    assert out["mce"] == pytest.approx((0.2 + 0.3 + 0.5) / 3)
    # fog 0.2/0.4 and snow 0.3/0.3; jpeg's baseline of 0 cannot normalise and is left out
    assert out["mce_vs_baseline"] == pytest.approx((0.5 + 1.0) / 2)
    assert "mce_vs_baseline" not in corruption_errors(errors, families)
