"""Bootstrap intervals of class-wise figures from per-image outcomes (numpy only).

The figures are latune.core.metrics' own: a class's error is 1 - its accuracy (the mean of its images'
outcomes: 0/1 correctness, or for corruptions the share of corruption pairs classified correctly); the
class-wise error mean and SD are the mean and *population* SD (ddof=0) of the K per-class errors; the
worst-class accuracy is 1 - the largest per-class error. A class with no images is left out of all three.

Intervals are bias-corrected percentile intervals (Efron's BC) of a plain bootstrap over test images: each
run's images are resampled with replacement (B replicates, no stratification by class), and for a setting
with several seeds each seed is resampled independently and the replicate's figure is the mean of the seeds'
figures -- as the report's point estimate is the mean over seeds. The resample indices of a run depend only on (bootstrap seed, run seed,
number of images), so the Adv and Adv+ runs of one seed, which are evaluated on the same test images, are
resampled identically: the relative change (Adv+ - Adv) / Adv is computed per replicate of that paired
resample. The intervals cover test-image sampling only, for the trained models at hand; the spread over
training seeds is what the report's ± SD shows.

Why bias-corrected: the class-wise SD and the worst-class accuracy are not means. Sampling noise in each class's
error widens their spread, so the plug-in SD is biased upward (and worst-class accuracy downward), and so is
every bootstrap replicate, a second time. A plain percentile interval then sits mostly on the far side of
the estimate: in a simulation (10 classes, true errors 0.1-0.4, 500 images, tests/test_intervals.py) it covered
the true SD in 69% of the data sets, the BC interval in 83%. BC moves the percentiles by z0, the normal quantile
of the share of replicates below the estimate. For a symmetric figure (the class-wise error mean), z0 is near 0
and BC is the percentile interval.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

__all__ = ["FIGURES", "DEFAULT_REPLICATES", "Interval", "Run", "class_figures", "resample", "bootstrap",
           "interval", "setting_intervals", "change_intervals"]

FIGURES = ("class_error_mean", "class_error_sd", "worst_class_acc")
DEFAULT_REPLICATES = 1000  # B: bootstrap replicates
DEFAULT_SEED = 0  # bootstrap RNG seed: the same outcomes always give the same intervals
_CHUNK = 2_000_000  # resampled images per vectorised step: bounds memory to a few tens of MB


@dataclass(frozen=True)
class Run:
    """One trained model's per-image test outcomes."""

    seed: int  # the run's seed (its test images and, paired, its resample indices)
    values: np.ndarray  # float or bool [N]: per-image outcome in [0, 1] (1 = correct)
    labels: np.ndarray  # int [N]: classes in [0, num_classes)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bias-corrected percentile interval (NaN when not computable)."""

    estimate: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        """The interval lies wholly above or below 0 (False when NaN)."""
        return self.low > 0 or self.high < 0


def _figures(values: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """The figures of each row of ``values``/``labels`` [R, N]: arrays [R]."""
    rows = values.shape[0]
    flat = (np.arange(rows)[:, None] * num_classes + labels).ravel()
    counts = np.bincount(flat, minlength=rows * num_classes).reshape(rows, num_classes)
    hits = np.bincount(flat, weights=values.ravel().astype(np.float64),
                       minlength=rows * num_classes).reshape(rows, num_classes)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a row with no class at all: NaN figures
        errors = 1.0 - hits / counts  # 0/0 -> NaN: an absent class
        return {"class_error_mean": np.nanmean(errors, axis=1), "class_error_sd": np.nanstd(errors, axis=1),
                "worst_class_acc": 1.0 - np.nanmax(errors, axis=1)}


def class_figures(values: np.ndarray, labels: np.ndarray, num_classes: int) -> dict[str, float]:
    """Class-wise error mean, SD (ddof=0) and worst-class accuracy of one run's outcomes, as fractions."""
    values, labels = np.asarray(values), np.asarray(labels, dtype=np.int64)
    return {key: float(value[0]) for key, value in _figures(values[None], labels[None], num_classes).items()}


def resample(n: int, replicates: int, seed: int = DEFAULT_SEED, stream: int = 0) -> np.ndarray:
    """Bootstrap indices int64 [replicates, n]: draws with replacement from range(n), a function of
    (seed, stream, n) only. ``stream`` is the run's seed (non-negative), which pairs runs of the same seed."""
    rng = np.random.default_rng([seed, stream, n])
    return rng.integers(0, n, size=(replicates, n), dtype=np.int64)


def _run_replicates(run: Run, num_classes: int, replicates: int, seed: int) -> dict[str, np.ndarray]:
    values, labels = np.asarray(run.values, dtype=np.float64), np.asarray(run.labels, dtype=np.int64)
    indices = resample(len(labels), replicates, seed, run.seed)
    step = max(1, _CHUNK // max(len(labels), 1))
    parts = [_figures(values[block], labels[block], num_classes) for block in np.split(
        indices, range(step, replicates, step))]
    return {key: np.concatenate([p[key] for p in parts]) for key in FIGURES}


def bootstrap(runs: Sequence[Run], num_classes: int, *, replicates: int = DEFAULT_REPLICATES,
              seed: int = DEFAULT_SEED) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(point estimates, replicates [B]) of each figure of a setting: means over its runs (seeds).

    Raises ValueError without runs or with two runs of one seed (their resamples would not be independent).
    """
    if not runs:
        raise ValueError("bootstrap needs at least one run")
    if len({run.seed for run in runs}) != len(runs):
        raise ValueError("bootstrap: two runs share a seed")
    estimates = [class_figures(run.values, run.labels, num_classes) for run in runs]
    draws = [_run_replicates(run, num_classes, replicates, seed) for run in runs]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns stay NaN
        point = {key: float(np.nanmean([e[key] for e in estimates])) for key in FIGURES}
        pooled = {key: np.nanmean(np.stack([d[key] for d in draws]), axis=0) for key in FIGURES}
    return point, pooled


def interval(estimate: float, replicates: np.ndarray, level: float = 0.95, method: str = "bc") -> Interval:
    """The interval of the finite replicates at ``level``: ``method`` "bc" (bias-corrected percentile, the
    default) or "percentile"; NaN bounds when none is finite."""
    if method not in ("bc", "percentile"):
        raise ValueError(f"interval: method must be 'bc' or 'percentile', got {method!r}")
    finite = replicates[np.isfinite(replicates)]
    if not finite.size or not math.isfinite(estimate):
        return Interval(estimate, math.nan, math.nan)
    normal = NormalDist()
    z_tail = normal.inv_cdf((1.0 - level) / 2)
    bias = 0.0
    if method == "bc":
        # share of replicates below the estimate, ties counted half (all tied: no correction), kept off 0 and 1
        below = (np.count_nonzero(finite < estimate) + 0.5 * np.count_nonzero(finite == estimate)) / finite.size
        below = min(max(below, 1.0 / (finite.size + 1)), finite.size / (finite.size + 1))
        bias = normal.inv_cdf(below)
    low, high = np.percentile(finite, [normal.cdf(2 * bias + z_tail) * 100, normal.cdf(2 * bias - z_tail) * 100])
    return Interval(float(estimate), float(low), float(high))


def setting_intervals(runs: Sequence[Run], num_classes: int, *, replicates: int = DEFAULT_REPLICATES,
                      seed: int = DEFAULT_SEED, level: float = 0.95) -> dict[str, Interval]:
    """Each figure of a setting (runs pooled over seeds) with its interval."""
    point, draws = bootstrap(runs, num_classes, replicates=replicates, seed=seed)
    return {key: interval(point[key], draws[key], level) for key in FIGURES}


def _relative(new: np.ndarray | float, ref: np.ndarray | float) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (np.asarray(new, dtype=np.float64) - ref) / ref
    return np.where(np.asarray(ref) == 0, np.nan, out)  # no relative change from 0


def change_intervals(treated: Sequence[Run], reference: Sequence[Run], num_classes: int, *,
                     replicates: int = DEFAULT_REPLICATES, seed: int = DEFAULT_SEED,
                     level: float = 0.95) -> dict[str, Interval]:
    """Relative change (treated - reference) / reference of each figure (e.g. Adv+ against Adv), with its
    interval from the per-replicate changes; replicates where the reference is 0 are left out."""
    point_t, draws_t = bootstrap(treated, num_classes, replicates=replicates, seed=seed)
    point_r, draws_r = bootstrap(reference, num_classes, replicates=replicates, seed=seed)
    return {key: interval(float(_relative(point_t[key], point_r[key])), _relative(draws_t[key], draws_r[key]), level)
            for key in FIGURES}


def runs_from_outcomes(outcomes: Mapping[int, Mapping[str, np.ndarray]], kind: str) -> list[Run]:
    """Runs of one kind of outcome (clean_correct, robust_correct, corruption_correct) from seed -> outcome
    arrays (latune.core.outcomes layout); seeds whose file lacks that kind are left out."""
    return [Run(seed, np.asarray(arrays[kind]), np.asarray(arrays["labels"]))
            for seed, arrays in sorted(outcomes.items()) if kind in arrays]
