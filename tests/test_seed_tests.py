"""latune.analysis.seed_tests: the paired t-test over seeds and Holm's correction, on cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from latune.analysis.intervals import Run, class_figures
from latune.analysis.seed_tests import holm, seed_test


def _runs(errors_by_seed, n=100):
    """One run per seed whose single class has the given error rate exactly (n images)."""
    labels = np.zeros(n, dtype=int)
    return [Run(seed, np.arange(n) >= round(error * n), labels) for seed, error in errors_by_seed.items()]


def test_holm_known_answer():
    # sorted 0.01, 0.03, 0.04 of a family of 3: x3 = 0.03, x2 = 0.06, x1 = 0.04 -> kept non-decreasing: 0.06
    assert holm([0.01, 0.04, 0.03, math.nan])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([0.01, 0.04, 0.03, math.nan])[3])  # not counted in the family
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def test_seed_test_is_the_paired_t_test_of_the_per_seed_figures():
    treated, reference = _runs({0: 0.30, 1: 0.35, 2: 0.32}), _runs({0: 0.20, 1: 0.22, 2: 0.27, 3: 0.5})
    found = seed_test(treated, reference, 1, "class_error_mean")
    assert found.seeds == 3 and found.difference == pytest.approx((0.10 + 0.13 + 0.05) / 3)  # seed 3 unpaired
    expected = stats.ttest_rel([0.30, 0.35, 0.32], [0.20, 0.22, 0.27]).pvalue
    assert found.p == pytest.approx(expected)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 300)
    noisy = [Run(s, rng.random(300) < 0.7, labels) for s in range(4)]
    other = [Run(s, rng.random(300) < 0.6, labels) for s in range(4)]
    figures = [[class_figures(r.values, r.labels, 5)["class_error_sd_debiased"] for r in runs]
               for runs in (noisy, other)]
    assert seed_test(noisy, other, 5, "class_error_sd_debiased").p == pytest.approx(
        stats.ttest_rel(*figures).pvalue)


def test_seed_test_edge_cases():
    same = _runs({0: 0.2, 1: 0.3})
    assert seed_test(same, same, 1, "class_error_mean").p == 1.0  # no difference at all
    shifted = seed_test(_runs({0: 0.3, 1: 0.4}), same, 1, "class_error_mean")
    assert shifted.p < 1e-9 and shifted.difference == pytest.approx(0.1)  # the same difference on every seed
    one = seed_test(_runs({0: 0.3}), same, 1, "class_error_mean")
    assert one.seeds == 1 and math.isnan(one.p)
    none = seed_test(_runs({5: 0.3}), same, 1, "class_error_mean")
    assert none.seeds == 0 and math.isnan(none.difference)
