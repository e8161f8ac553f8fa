"""Class-wise metrics from predictions.

All error and accuracy values are fractions in [0,1]. The class-wise error SD is the population
standard deviation (ddof=0) of the K per-class error rates, as numpy.std computes it: the spread
of errors between classes that label augmentation aims to narrow.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

__all__ = ["class_errors", "summarize", "corruption_errors"]


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


def corruption_errors(errors: Mapping[tuple[str, int], float], families: Mapping[str, Sequence[str]],
                      baseline: Mapping[str, float] | None = None) -> dict[str, float]:
    """Corruption error (CE) figures from the error rate of each (corruption, severity) pair.

    Following Hendrycks & Dietterich (2019): ``ce_<c>_s<k>`` is the error on corruption c at severity k;
    ``ce_<c>`` its mean over the evaluated severities; ``ce_<family>`` the mean of ``ce_<c>`` over the
    family's evaluated corruptions; ``mce`` the mean of ``ce_<c>`` over all evaluated corruptions
    (unnormalised). With ``baseline`` (corruption -> that run's ``ce_<c>``, same severities) also
    ``mce_vs_baseline``: the mean over corruptions of ce_c / baseline ce_c (the paper's normalised mCE,
    which it reports against AlexNet; 1.0 = as good as the baseline). Corruptions the baseline lacks or
    gets exactly right are left out of that mean.
    """
    by_corruption: dict[str, list[float]] = {}
    out: dict[str, float] = {}
    for (name, severity), error in sorted(errors.items()):
        out[f"ce_{name}_s{severity}"] = float(error)
        by_corruption.setdefault(name, []).append(float(error))
    ce = {name: sum(v) / len(v) for name, v in by_corruption.items()}
    out.update({f"ce_{name}": value for name, value in ce.items()})
    for family, names in families.items():
        present = [ce[n] for n in names if n in ce]
        if present:
            out[f"ce_{family}"] = sum(present) / len(present)
    out["mce"] = sum(ce.values()) / len(ce) if ce else math.nan
    if baseline is not None:
        usable = {n: b for n, b in baseline.items() if n in ce and b and not math.isnan(b)}
        ratios = [ce[n] / b for n, b in usable.items()]
        out["mce_vs_baseline"] = sum(ratios) / len(ratios) if ratios else math.nan
    return out
