"""95% intervals of class-wise figures over test images: ``scipy.stats.bootstrap`` (BCa), resampled jointly.

The figures are latune.analysis.class_figures' (class-wise error mean, plug-in and debiased SD, worst-class
accuracy, SD/mean). A setting's figure is the mean over its runs (seeds) of each run's figure, as the report's
point estimate is; a change is the relative change (treated - reference) / reference of two settings' figures.

Joint resampling. Runs evaluated on the same test images -- every seed and every arm of a sweep on MNIST or
CIFAR, whose test split does not depend on the seed -- are resampled together: one draw of image indices per
replicate, used for every run on that test set. Their outcomes are correlated (an image one model gets wrong,
another model often gets wrong too); resampling each run's images independently, as latune did before, treats
the seeds as independent evidence and gave intervals about a third too narrow per setting (15-20% for changes)
in a simulation with outcomes correlated 0.67 across seeds. Runs on different test sets (digits: the split
depends on the seed) are resampled independently. A run's test set is its outcome file's ``test_set`` id
(latune.core.outcomes), else a digest of its labels.

How scipy does it. Each test set is one sample of ``scipy.stats.bootstrap``: its image indices 0..N-1.
Samples are resampled independently (``paired=False``) and the statistic looks each run's outcomes up at the
resampled indices of its test set. With one test set this is ``paired=True`` over all the runs' per-image
arrays; BCa's jackknife leaves out one image of one test set at a time, from every run that saw it.

Which interval. The worst-class accuracy and the plug-in SD get scipy's BCa interval: both are biased (sampling
noise in each class error widens their spread, and each replicate adds that noise once more) and skewed, and BCa
moves the percentiles of the replicates by their bias (z0, from the share of replicates below the estimate) and
skew (the acceleration, from the jackknife). Where BCa has no bounds -- the estimate lies beyond every replicate,
so z0 is infinite, as happens to a worst-class accuracy whose classes are near-tied -- the same replicates' basic
interval (2 × estimate - their quantiles, scipy's ``method="basic"``) stands in. The class-wise error mean, the
debiased SD and SD/mean get the normal interval ``estimate ± z × SE``, SE the replicates' SD (scipy's
``standard_error``). The mean is an average of class errors, near-normal, and the SE uses every replicate where
a percentile uses the few in each tail (BCa's covered 91-94% at 300-1,000 replicates in the simulation below, the
normal interval 95-96%). The debiased figures (latune.analysis.class_figures) cannot use percentiles at all: a
replicate resamples the test set itself, so its debiased SD estimates the test set's *plug-in* SD and the
replicates centre there, above the estimate; their spread is still the estimator's. (BCa or percentile intervals
of the debiased SD covered the true SD in 75-88% of simulated test sets.) When the spread of class errors is not
much larger than their sampling noise, BCa's interval of the plug-in SD can collapse beside the estimate: the
report shows the plug-in SD without one.
Coverage, measured in tests/test_intervals.py with three seeds sharing a test set of 2,000 images and outcomes
correlated 0.67 (about a minute): at least 93% at nominal 95% for the mean, the debiased SD and the worst-class
accuracy when the worst class stands clear of the next (as in the MNIST study). Where several classes are
near-tied for worst (ten errors evenly spaced 0.1-0.4 on 500 images) the worst-class interval covers about 84%
(the mean and debiased SD still 95% and 93%): the largest of noisy class errors is not a smooth function of the
data, and no bootstrap repairs that.

What an interval covers: test-image sampling only, for the trained models at hand. The spread over training
seeds is the report's ± SD and its seed-level test (latune.analysis.seed_tests).

Cost: BCa's jackknife evaluates the statistic N times on N-1 images, O(N²) per run and test set whatever the
number of replicates: about a second per interval at N = 2,000 with six runs, minutes at N = 10,000.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from latune.analysis.class_figures import DEBIASED, FIGURES, class_figures, class_sums, figures_from_sums
from latune.core.outcomes import labels_id

__all__ = ["FIGURES", "DEFAULT_REPLICATES", "Interval", "Run", "class_figures", "setting_intervals",
           "change_intervals", "runs_from_outcomes", "resampling_group"]

DEFAULT_REPLICATES = 1000  # B: bootstrap replicates
DEFAULT_SEED = 0  # bootstrap RNG seed: the same outcomes always give the same intervals
_CHUNK = 4_000_000  # run-images per vectorised step (scipy's batch): bounds memory to a few hundred MB
_NON_NEGATIVE = ("class_error_sd", "class_error_sd_debiased", "class_error_cv")  # a setting's bounds start at 0
_NORMAL = ("class_error_mean", *DEBIASED)  # estimate ± z × bootstrap SE; the others BCa (module docstring)


@dataclass(frozen=True)
class Run:
    """One trained model's per-image test outcomes."""

    seed: int  # the run's seed (pairs runs in the seed-level test)
    values: np.ndarray  # float or bool [N]: per-image outcome in [0, 1] (1 = correct)
    labels: np.ndarray  # int [N]: classes in [0, num_classes)
    test_set: str = ""  # id of the N test images (latune.core.outcomes); "" = a digest of the labels


@dataclass(frozen=True)
class Interval:
    """A point estimate and its interval (NaN bounds when not computable)."""

    estimate: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        """The interval lies wholly above or below 0 (False when NaN)."""
        return self.low > 0 or self.high < 0


def resampling_group(run: Run) -> str:
    """The id runs are grouped by for joint resampling: ``run.test_set``, else latune.core.outcomes.labels_id."""
    return run.test_set or labels_id(run.labels)


class _Design:
    """The runs of some arms (settings) grouped by test set: what the bootstrap statistic reads."""

    def __init__(self, arms: Sequence[Sequence[Run]], num_classes: int) -> None:
        self.num_classes = num_classes
        keys: dict[str, int] = {}
        labels: list[np.ndarray] = []
        rows: list[list[np.ndarray]] = []
        self.arms: list[list[tuple[int, int]]] = []  # per arm: (test set index, row) of each run
        for arm in arms:
            if not arm:
                raise ValueError("bootstrap needs at least one run per setting")
            if len({run.seed for run in arm}) != len(arm):
                raise ValueError("bootstrap: two runs of one setting share a seed")
            self.arms.append([])
            for run in arm:
                key, run_labels = resampling_group(run), np.asarray(run.labels, dtype=np.int64)
                if key not in keys:
                    keys[key] = len(labels)
                    labels.append(run_labels)
                    rows.append([])
                group = keys[key]
                if not np.array_equal(labels[group], run_labels):
                    raise ValueError(f"bootstrap: runs of test set {key} differ in their labels")
                rows[group].append(np.asarray(run.values))
                self.arms[-1].append((group, len(rows[group]) - 1))
        self.labels = labels
        # per test set: [runs, N], bool where every outcome is 0 or 1 (cheaper to gather; its own square)
        self.values = [_compact(np.stack(r)) for r in rows]

    def figures(self, indices: Sequence[np.ndarray]) -> list[dict[str, np.ndarray]]:
        """Each arm's figures (means over its runs) at the image ``indices`` [..., n] of each test set."""
        per_set = [figures_from_sums(*class_sums(values[:, i], labels[i], self.num_classes))
                   for values, labels, i in zip(self.values, self.labels, indices)]  # each figure [runs, ...]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN stays NaN
            return [{key: np.nanmean(np.stack([per_set[g][key][row] for g, row in arm]), axis=0)
                     for key in FIGURES} for arm in self.arms]

    def intervals(self, statistic: Callable[[list[dict[str, np.ndarray]]], dict[str, np.ndarray]], replicates: int,
                  seed: int, level: float, clip: bool) -> dict[str, Interval]:
        """The interval of each figure of ``statistic(arm figures) -> {figure: float [...]}``, from one
        scipy.stats.bootstrap run; ``clip``: non-negative figures' bounds start at 0."""
        def vectorised(*indices: np.ndarray, axis: int = -1) -> np.ndarray:
            found = statistic(self.figures(indices))
            return np.stack([found[key] for key in FIGURES])

        samples = tuple(np.arange(len(labels)) for labels in self.labels)
        estimate = dict(zip(FIGURES, vectorised(*samples).tolist()))
        if min(map(len, samples)) < 2:
            return {key: Interval(estimate[key], math.nan, math.nan) for key in FIGURES}
        batch = max(1, _CHUNK // (max(map(len, samples)) * sum(len(v) for v in self.values)))
        common = dict(vectorized=True, paired=False, axis=-1, confidence_level=level)
        with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
            warnings.simplefilter("ignore")  # scipy's DegenerateDataWarning: NaN bounds, handled below
            bca = stats.bootstrap(samples, vectorised, n_resamples=replicates, batch=batch, method="BCa",
                                  rng=np.random.default_rng(seed), **common)
            # the same replicates' basic interval, where BCa has none (no resampling: bootstrap_result)
            basic = stats.bootstrap(samples, vectorised, n_resamples=0, bootstrap_result=bca, method="basic",
                                    **common).confidence_interval
        z = stats.norm.ppf((1 + level) / 2)
        out = {}
        for f, key in enumerate(FIGURES):
            low, high = bca.confidence_interval.low[f], bca.confidence_interval.high[f]
            if key in _NORMAL:
                low, high = estimate[key] - z * bca.standard_error[f], estimate[key] + z * bca.standard_error[f]
            elif not (math.isfinite(low) and math.isfinite(high)):
                low, high = basic.low[f], basic.high[f]
            found = _interval(estimate[key], bca.bootstrap_distribution[f], float(low), float(high))
            out[key] = Interval(found.estimate, max(found.low, 0.0), found.high) if clip and key in _NON_NEGATIVE \
                and math.isfinite(found.low) else found
        return out


def _compact(values: np.ndarray) -> np.ndarray:
    """0/1 outcomes as bool (a gather moves an eighth of the bytes, and class_sums skips their squares)."""
    return values.astype(bool) if np.isin(values, (0, 1)).all() else values.astype(np.float64)


def _interval(estimate: float, draws: np.ndarray, low: float, high: float) -> Interval:
    """The bounds found, except: NaN without an estimate, zero width where every replicate equals the estimate
    (e.g. 0% robust accuracy: BCa has no bounds there)."""
    if not math.isfinite(estimate):
        return Interval(estimate, math.nan, math.nan)
    if np.all(draws == estimate):
        return Interval(estimate, estimate, estimate)
    return Interval(estimate, low, high)


def setting_intervals(runs: Sequence[Run], num_classes: int, *, replicates: int = DEFAULT_REPLICATES,
                      seed: int = DEFAULT_SEED, level: float = 0.95) -> dict[str, Interval]:
    """Each figure of a setting (the mean over its runs) with its interval (module docstring).

    Raises ValueError without runs, with two runs of one seed, or with runs of one test set whose labels differ.
    """
    return _Design([runs], num_classes).intervals(lambda arms: arms[0], replicates, seed, level, clip=True)


def _relative(new: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """(new - ref) / ref; 0 where the two are equal (0 to 0 included), NaN from 0 to anything else."""
    with np.errstate(invalid="ignore", divide="ignore"):
        change = np.where(ref == 0, np.nan, (new - ref) / np.where(ref == 0, 1.0, ref))
    return np.where(new == ref, 0.0, change)


def change_intervals(treated: Sequence[Run], reference: Sequence[Run], num_classes: int, *,
                     replicates: int = DEFAULT_REPLICATES, seed: int = DEFAULT_SEED,
                     level: float = 0.95) -> dict[str, Interval]:
    """Relative change (treated - reference) / reference of each figure (e.g. Adv+ against Adv) with its
    interval, both settings resampled jointly where they share test images. NaN bounds where the reference
    figure is 0 and the treated one is not, in the data or in a replicate (no relative change from 0)."""
    return _Design([treated, reference], num_classes).intervals(
        lambda arms: {key: _relative(arms[0][key], arms[1][key]) for key in FIGURES}, replicates, seed, level,
        clip=False)


def runs_from_outcomes(outcomes: Mapping[int, Mapping[str, np.ndarray]], kind: str) -> list[Run]:
    """Runs of one kind of outcome (clean_correct, robust_correct, corruption_correct) from seed -> outcome
    arrays (latune.core.outcomes layout); seeds whose file lacks that kind are left out."""
    return [Run(seed, np.asarray(arrays[kind]), np.asarray(arrays["labels"]), str(arrays.get("test_set", "")))
            for seed, arrays in sorted(outcomes.items()) if kind in arrays]
