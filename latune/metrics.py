"""Class-wise metrics from predictions.

All error and accuracy values are fractions in [0,1]. The class-wise error SD is the population
standard deviation (ddof=0) of the K per-class error rates, as numpy.std computes it: the spread
of errors between classes that label augmentation aims to narrow.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["class_errors", "summarize"]


def class_errors(correct: Tensor, labels: Tensor, num_classes: int) -> list[float]:
    """Error rate of each class: share of that class's images not classified correctly.

    correct: bool[N] (prediction == label, or "survived the attack"); labels: long[N] in [0, K).
    A class with no images gets NaN, and ``summarize`` leaves it out of the mean, SD and worst class.
    """
    labels = labels.long().cpu()
    wrong = (~correct.bool().cpu()).double()
    totals = torch.bincount(labels, minlength=num_classes).double()
    errors = torch.bincount(labels, weights=wrong, minlength=num_classes)
    per_class = errors / totals  # 0/0 -> nan for an absent class
    return [float(v) for v in per_class]


def summarize(prefix: str, per_class_error: list[float], correct: int, total: int) -> dict[str, float | list[float]]:
    """Metrics of one kind of input (prefix "clean" or "robust").

    Returns {prefix_acc, prefix_class_error, prefix_class_error_mean, prefix_class_error_sd,
    prefix_worst_class_acc}. ``prefix_acc`` is over images (correct/total), the class-wise figures
    are over classes, so they differ when classes are unbalanced.
    """
    present = [e for e in per_class_error if not math.isnan(e)]
    mean = sum(present) / len(present) if present else math.nan
    sd = math.sqrt(sum((e - mean) ** 2 for e in present) / len(present)) if present else math.nan
    return {
        f"{prefix}_acc": correct / total if total else math.nan,
        f"{prefix}_class_error": per_class_error,
        f"{prefix}_class_error_mean": mean,
        f"{prefix}_class_error_sd": sd,
        f"{prefix}_worst_class_acc": 1.0 - max(present) if present else math.nan,
    }
