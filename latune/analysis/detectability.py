"""What a comparison of two settings could detect: the smallest relative change of a class-wise figure that its
test-image interval and its seed-level test would tell from zero (numpy and scipy).

A report says whether a change is distinguishable from zero; a study that finds nothing must also say how large
an effect it could have missed. Two sizes answer that for one figure of one arm against its baseline:

- **test images**: half the width of the 95% bootstrap interval of the relative change
  (latune.analysis.intervals.change_intervals, seeds and arms resampled jointly where they share test images).
  A true change smaller than that half-width leaves 0 inside the interval about half the time or more, so an
  effect of that size is not reliably told from zero by these models on these images.
- **seeds**: the smallest mean difference the two-sided paired t-test over seeds (latune.analysis.seed_tests)
  would call significant at level α given the spread of the per-seed differences seen:
  t(1-α/2, n-1) · SD(d) / √n, as a fraction of the baseline's mean figure. It is a rough guide (the SD is
  itself estimated from n differences), unadjusted for multiplicity: Holm's correction in the report only
  raises it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from latune.analysis.class_figures import class_figures
from latune.analysis.intervals import DEFAULT_REPLICATES, change_intervals, runs_from_outcomes

__all__ = ["Detectable", "detectable_change"]


@dataclass(frozen=True)
class Detectable:
    """One figure of one arm against its baseline, relative changes as fractions (NaN where not computable)."""

    change: float  # the observed relative change (arm - baseline) / baseline
    low: float  # its 95% test-image interval
    high: float
    images_half_width: float  # (high - low) / 2: the change the images can tell from zero, roughly
    seeds: int  # seeds both ran
    seeds_smallest: float  # the smallest mean relative change the paired t-test over seeds would detect
    baseline: float  # the baseline's figure, mean over its seeds (a relative change from 0 means nothing)

    def detects(self, effect: float) -> bool:
        """Would a true relative change of ``effect`` stand out of both noises at this size? Both sizes must be
        below its magnitude (NaN sizes count as not)."""
        sizes = (self.images_half_width, self.seeds_smallest)
        return all(math.isfinite(s) and s < abs(effect) for s in sizes)


def detectable_change(treated: Mapping[int, Mapping[str, Any]], reference: Mapping[int, Mapping[str, Any]],
                      kind: str, figure: str = "class_error_sd_debiased", *, replicates: int = DEFAULT_REPLICATES,
                      alpha: float = 0.05) -> Detectable | None:
    """The Detectable of ``figure`` (a latune.analysis.class_figures figure) on the ``kind`` outcomes
    (clean_correct, robust_correct, corruption_correct) of ``treated`` against ``reference`` (seed -> outcome
    arrays, latune.core.outcomes layout); None when either lacks that kind."""
    runs, base = runs_from_outcomes(treated, kind), runs_from_outcomes(reference, kind)
    if not runs or not base:
        return None
    classes = int(next(iter(treated.values()))["num_classes"])
    interval = change_intervals(runs, base, classes, replicates=replicates)[figure]
    by_seed = {run.seed: class_figures(run.values, run.labels, classes)[figure] for run in base}
    diffs = np.array([class_figures(run.values, run.labels, classes)[figure] - by_seed[run.seed]
                      for run in runs if run.seed in by_seed], dtype=np.float64)
    baseline = float(np.mean(list(by_seed.values())))
    smallest = math.nan
    if diffs.size >= 2 and baseline > 0:
        spread = float(diffs.std(ddof=1))
        smallest = float(stats.t.ppf(1 - alpha / 2, diffs.size - 1)) * spread / math.sqrt(diffs.size) / baseline
    return Detectable(interval.estimate, interval.low, interval.high, (interval.high - interval.low) / 2,
                      int(diffs.size), smallest, baseline)
