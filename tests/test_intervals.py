"""latune.analysis.intervals: bootstrap intervals of class-wise figures on cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from latune.analysis.intervals import (Interval, Run, bootstrap, change_intervals, class_figures, interval, resample,
                                       setting_intervals)
from latune.core import metrics


def _run(seed, correct, labels):
    return Run(seed, np.asarray(correct), np.asarray(labels))


def test_class_figures_match_core_metrics():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 300)
    labels[labels == 3] = 2  # class 3 absent: left out as metrics.summarize leaves it out
    correct = rng.random(300) < 0.7
    per_class = metrics.class_errors(torch.from_numpy(correct), torch.from_numpy(labels), 4)
    expected = metrics.summarize("x", per_class, int(correct.sum()), len(correct))
    got = class_figures(correct, labels, 4)
    assert got["class_error_mean"] == pytest.approx(expected["x_class_error_mean"])
    assert got["class_error_sd"] == pytest.approx(expected["x_class_error_sd"])  # population SD, as metrics
    assert got["worst_class_acc"] == pytest.approx(expected["x_worst_class_acc"])


def test_fractional_outcomes_equal_the_pooled_corruption_figures():
    """corruption_correct (share of P pairs correct per image) gives the figures of the pooled P copies."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 3, 50)
    pairs = rng.random((4, 50)) < 0.6
    pooled = metrics.summarize("c", metrics.class_errors(torch.from_numpy(pairs.ravel()),
                                                         torch.from_numpy(np.tile(labels, 4)), 3), 0, 200)
    got = class_figures(pairs.mean(axis=0), labels, 3)
    assert got["class_error_mean"] == pytest.approx(pooled["c_class_error_mean"])
    assert got["class_error_sd"] == pytest.approx(pooled["c_class_error_sd"])


def test_deterministic_outcomes_give_zero_width_intervals():
    # every image of class 0 right, every image of class 1 wrong: any resample with both classes has
    # errors (0, 1): mean 0.5, SD 0.5, worst-class accuracy 0
    labels = np.array([0, 1] * 200)
    correct = labels == 0
    out = setting_intervals([_run(0, correct, labels)], 2, replicates=200)
    for key, value in (("class_error_mean", 0.5), ("class_error_sd", 0.5), ("worst_class_acc", 0.0)):
        assert out[key].estimate == pytest.approx(value)
        assert out[key].low == pytest.approx(value) and out[key].high == pytest.approx(value)


def test_bootstrap_se_matches_the_binomial_se():
    """One class: class-wise error mean = error rate p, whose SE over N images is sqrt(p(1-p)/N)."""
    n, p = 4000, 0.3
    correct = np.random.default_rng(3).random(n) >= p
    point, draws = bootstrap([_run(0, correct, np.zeros(n, dtype=int))], 1, replicates=1000)
    rate = 1 - correct.mean()
    assert point["class_error_mean"] == pytest.approx(rate)
    assert draws["class_error_mean"].std() == pytest.approx(math.sqrt(rate * (1 - rate) / n), rel=0.1)
    # two balanced classes: mean of two rates, SE sqrt(sum p(1-p)/n_k) / 2 (class sizes vary a little in a resample)
    labels = np.repeat([0, 1], n // 2)
    correct = np.concatenate([np.random.default_rng(4).random(n // 2) >= 0.1,
                              np.random.default_rng(5).random(n // 2) >= 0.4])
    _, draws = bootstrap([_run(0, correct, labels)], 2, replicates=1000)
    expected = math.sqrt(0.1 * 0.9 / (n // 2) + 0.4 * 0.6 / (n // 2)) / 2
    assert draws["class_error_mean"].std() == pytest.approx(expected, rel=0.1)


def test_pooling_averages_seeds_and_shrinks_the_interval():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 10, 500)
    runs = [_run(s, rng.random(500) < 0.8, labels) for s in range(3)]
    one = setting_intervals(runs[:1], 10)
    three = setting_intervals(runs, 10)
    expected = np.mean([class_figures(r.values, r.labels, 10)["class_error_mean"] for r in runs])
    assert three["class_error_mean"].estimate == pytest.approx(expected)
    width = lambda i: i.high - i.low  # noqa: E731
    assert width(three["class_error_mean"]) < width(one["class_error_mean"])  # ~1/sqrt(3) as wide
    assert three["class_error_mean"].low <= expected <= three["class_error_mean"].high


def test_identical_settings_change_contains_zero_and_is_paired():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 10, 400)
    runs = [_run(s, rng.random(400) < 0.7, labels) for s in range(2)]
    out = change_intervals(runs, runs, 10, replicates=300)
    for key, value in out.items():
        # the same resample for both (paired by seed): every replicate's change is exactly 0
        assert value.estimate == 0 and value.low == 0 and value.high == 0, key
        assert not value.excludes_zero


def test_similar_settings_change_contains_zero_and_different_ones_exclude_it():
    rng = np.random.default_rng(8)
    labels = rng.integers(0, 10, 2000)
    base = [_run(s, rng.random(2000) < 0.6, labels) for s in range(3)]
    same = [_run(s, rng.random(2000) < 0.6, labels) for s in range(3)]  # other models, same accuracy
    better = [_run(s, rng.random(2000) < 0.8, labels) for s in range(3)]  # error 0.4 -> 0.2: -50%
    assert not change_intervals(same, base, 10)["class_error_mean"].excludes_zero
    drop = change_intervals(better, base, 10)["class_error_mean"]
    assert drop.excludes_zero and drop.high < 0
    assert drop.low < drop.estimate < drop.high and drop.estimate == pytest.approx(-0.5, abs=0.05)


def test_resample_depends_only_on_seed_stream_and_size():
    assert np.array_equal(resample(50, 4, 0, 1), resample(50, 4, 0, 1))
    assert not np.array_equal(resample(50, 4, 0, 1), resample(50, 4, 0, 2))
    assert resample(50, 4).shape == (4, 50) and resample(50, 4).max() < 50


def test_interval_edge_cases():
    assert math.isnan(interval(0.5, np.array([np.nan, np.nan])).low)
    assert not Interval(0.1, math.nan, math.nan).excludes_zero
    assert Interval(-0.2, -0.3, -0.1).excludes_zero and not Interval(0.0, -0.1, 0.1).excludes_zero
    with pytest.raises(ValueError):
        bootstrap([], 2)
    with pytest.raises(ValueError):
        bootstrap([_run(0, [True], [0]), _run(0, [False], [0])], 1)


def test_bc_interval_shifts_by_the_share_of_replicates_below_the_estimate():
    replicates = np.arange(1, 1001, dtype=float)  # uniform 1..1000
    # estimate at the median: z0 = 0, BC is the percentile interval
    assert interval(500.5, replicates) == interval(500.5, replicates, method="percentile")
    # estimate at the 15.87th percentile: z0 = -1, so the tails move to Phi(-2 -/+ 1.96) = 0.0000 .. 0.484
    shifted = interval(float(np.percentile(replicates, 15.865)), replicates)
    assert shifted.low == pytest.approx(1.0, abs=0.5) and shifted.high == pytest.approx(484.4, abs=2)
    plain = interval(float(np.percentile(replicates, 15.865)), replicates, method="percentile")
    assert plain.low == pytest.approx(25.975) and plain.high == pytest.approx(975.025)
    with pytest.raises(ValueError, match="method"):
        interval(1.0, replicates, method="bca")


def test_bc_covers_the_true_class_error_sd_more_often_than_the_percentile_interval():
    """Simulated test sets from known per-class error rates: the true class-wise SD and worst-class accuracy are
    known, and the plug-in figures are biased (sampling noise widens the spread of class errors)."""
    true_errors = np.linspace(0.1, 0.4, 10)
    truth = {"class_error_sd": true_errors.std(), "worst_class_acc": 1 - true_errors.max(),
             "class_error_mean": true_errors.mean()}
    rng = np.random.default_rng(0)
    covered = {(key, method): 0 for key in truth for method in ("bc", "percentile")}
    data_sets = 150
    for index in range(data_sets):
        labels = rng.integers(0, 10, 500)
        correct = rng.random(500) >= true_errors[labels]
        point, draws = bootstrap([_run(0, correct, labels)], 10, replicates=500, seed=index)
        for key, method in covered:
            found = interval(point[key], draws[key], method=method)
            covered[key, method] += found.low <= truth[key] <= found.high
    share = {key: count / data_sets for key, count in covered.items()}
    # measured: SD 0.69 (percentile) -> 0.83 (BC); worst-class 0.83 -> 0.89; the mean ~0.91 either way
    assert share["class_error_sd", "bc"] >= share["class_error_sd", "percentile"] + 0.08, share
    assert share["class_error_sd", "bc"] >= 0.78 and share["class_error_sd", "percentile"] <= 0.75, share
    assert share["worst_class_acc", "bc"] >= share["worst_class_acc", "percentile"], share
    assert abs(share["class_error_mean", "bc"] - share["class_error_mean", "percentile"]) <= 0.03, share
