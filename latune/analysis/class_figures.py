"""Class-wise figures of per-image outcomes, vectorised over any leading shape (numpy only).

The figures are latune.core.metrics' own, plus two: a class's error is 1 - its accuracy (the mean of its images'
outcomes: 0/1 correctness, or for corruptions the share of corruption pairs classified correctly); over the K'
classes that have images (an absent class is left out of every figure):

- ``class_error_mean``: the mean of the K' class errors;
- ``class_error_sd``: their *population* SD (ddof=0), the plug-in figure latune's metrics report;
- ``class_error_sd_debiased``: the plug-in SD less the part that is sampling noise of the class errors;
- ``worst_class_acc``: 1 - the largest class error;
- ``class_error_cv``: debiased SD / mean, a scale-free spread (SD grows with the error level itself).

Why a debiased SD. Each class error ê_k is measured on n_k images, with sampling variance σ²_k; the plug-in
variance V̂ = (1/K') Σ_k (ê_k - ē)² then has expectation V + (K'-1)/K'² Σ_k σ²_k, where V is the variance of
the true class errors (class errors independent given the class sizes). So

    SD_debiased = sqrt(max(0, V̂ - (K'-1)/K'² Σ_k s²_k / n_k))

with s²_k the sample variance (ddof=1) of class k's per-image outcomes, an unbiased estimate of n_k σ²_k. For 0/1
outcomes s²_k / n_k = ê_k (1 - ê_k) / (n_k - 1): the binomial variance. A class with one image has no estimate
and adds nothing to the correction. The clip at 0 (a spread smaller than the noise) keeps it a real SD; the square
root makes it slightly low for small V, the clip slightly high: both far smaller than the plug-in bias at the
sizes the report sees (tests/test_intervals.py measures it).
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["FIGURES", "DEBIASED", "class_sums", "figures_from_sums", "class_figures"]

FIGURES = ("class_error_mean", "class_error_sd", "class_error_sd_debiased", "worst_class_acc", "class_error_cv")
DEBIASED = ("class_error_sd_debiased", "class_error_cv")  # corrected for sampling noise (latune.analysis.intervals)


def class_sums(values: np.ndarray, labels: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images per class [..., K], sum of outcomes [R..., ..., K], sum of squared outcomes [R..., ..., K]).

    labels: int [..., N] in [0, K); values: float or bool [R..., ..., N] in [0, 1], the outcomes of any number of
    runs (leading dims R...) on those images. The class counts are shared by the runs: counted once.
    """
    labels, values = np.asarray(labels, dtype=np.int64), np.asarray(values)
    lead, n = labels.shape[:-1], labels.shape[-1]
    runs = values.shape[: values.ndim - labels.ndim]
    rows = int(np.prod(lead, dtype=np.int64))
    flat = (np.arange(rows, dtype=np.int64)[:, None] * num_classes + labels.reshape(rows, n)).ravel()
    size = rows * num_classes

    def count(weights: np.ndarray | None) -> np.ndarray:
        return np.bincount(flat, weights=weights, minlength=size).astype(np.float64)

    per_run = values.reshape(-1, rows * n)
    sums = np.stack([count(v) for v in per_run]).reshape(*runs, *lead, num_classes)
    # 0/1 outcomes are their own squares
    squares = sums if values.dtype == bool else np.stack([count(v * v) for v in per_run.astype(np.float64)]).reshape(
        *runs, *lead, num_classes)
    return count(None).reshape(*lead, num_classes), sums, squares


def figures_from_sums(counts: np.ndarray, sums: np.ndarray, squares: np.ndarray) -> dict[str, np.ndarray]:
    """Each figure (``FIGURES``) from class_sums' arrays [..., K] (counts broadcast against the sums): arrays
    [...] (NaN where no class has images)."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a row with no class at all: NaN figures
        present = counts > 0
        errors = np.where(present, 1.0 - sums / counts, np.nan)
        mean = np.nanmean(errors, axis=-1)
        sd = np.nanstd(errors, axis=-1)
        within = np.where(counts > 1, (squares - sums * sums / counts) / (counts - 1), 0.0)  # s²_k, ddof=1
        noise = np.sum(np.where(counts > 1, np.maximum(within, 0.0) / counts, 0.0), axis=-1)  # Σ s²_k / n_k
        k = present.sum(axis=-1)
        debiased = np.sqrt(np.maximum(sd * sd - (k - 1) / np.maximum(k, 1) ** 2 * noise, 0.0))
        debiased = np.where(k > 0, debiased, np.nan)
        return {"class_error_mean": mean, "class_error_sd": sd, "class_error_sd_debiased": debiased,
                "worst_class_acc": 1.0 - np.nanmax(errors, axis=-1),
                "class_error_cv": np.where(mean > 0, debiased / mean, np.nan)}


def class_figures(values: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """Every figure of one run's outcomes (values [N], labels [N]), as fractions."""
    found = figures_from_sums(*class_sums(np.asarray(values)[None], np.asarray(labels)[None], num_classes))
    return {key: float(value[0]) for key, value in found.items()}
