"""Seed-level tests of a change, and Holm's correction over the report's family of them (numpy and scipy).

The bootstrap intervals (latune.analysis.intervals) cover test-image sampling only: they say whether *these
trained models* differ on the population of test images, not whether the change (LA, an augmentation) would
give the same difference with other training seeds. Training randomness is what this test covers: for each
seed s both settings ran, d_s = figure(treated, seed s) - figure(reference, seed s), on the same test images,
and a two-sided paired t-test asks whether the mean of the d_s is 0 (``scipy.stats.ttest_1samp``).

Why a t-test: a sign-flip permutation test needs no normality, but with three seeds its smallest two-sided
p-value is 2/2³ = 0.25, so it can never reject; the t-test can, at the price of assuming the seed differences
are roughly normal. Each d_s also carries test-image noise, so the test is conservative for it, not blind to it.

Holm's step-down correction (Holm 1979) keeps the chance of any false claim in the family at most α, whatever
the dependence between the tests: the i-th smallest of m p-values is multiplied by (m - i + 1), and the adjusted
values are made non-decreasing and capped at 1.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from latune.analysis.class_figures import class_figures
from latune.analysis.intervals import Run

__all__ = ["SeedTest", "seed_test", "holm"]


@dataclass(frozen=True)
class SeedTest:
    """A paired t-test over seeds of one figure's change."""

    seeds: int  # seeds both settings ran (pairs)
    difference: float  # mean over the pairs of treated - reference (fraction; NaN without a pair)
    p: float  # two-sided p-value (NaN with fewer than two pairs)


def seed_test(treated: Sequence[Run], reference: Sequence[Run], num_classes: int, figure: str) -> SeedTest:
    """The paired t-test of ``figure`` (a latune.analysis.class_figures figure) over the seeds both ran.

    Pairs whose figure is NaN in either run are left out; identical differences on every seed give p = 1 when
    they are 0 and p = 0 otherwise (a t statistic of 0/0 or x/0).
    """
    ref = {run.seed: run for run in reference}
    pairs = [(run, ref[run.seed]) for run in treated if run.seed in ref]
    diffs = np.array([class_figures(a.values, a.labels, num_classes)[figure]
                      - class_figures(b.values, b.labels, num_classes)[figure] for a, b in pairs], dtype=np.float64)
    diffs = diffs[np.isfinite(diffs)]
    if not diffs.size:
        return SeedTest(0, math.nan, math.nan)
    mean = float(diffs.mean())
    if diffs.size < 2:
        return SeedTest(1, mean, math.nan)
    if np.all(diffs == diffs[0]):
        return SeedTest(int(diffs.size), mean, 1.0 if diffs[0] == 0 else 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = float(stats.ttest_1samp(diffs, 0.0).pvalue)
    return SeedTest(int(diffs.size), mean, p)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values, in the input order; NaN entries stay NaN and are not counted in the family."""
    values = np.asarray(pvalues, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(values))
    adjusted = np.full(values.shape, np.nan)
    order = finite[np.argsort(values[finite], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * values[index]))
        adjusted[index] = running
    return adjusted.tolist()
