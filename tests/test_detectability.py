"""latune.analysis.detectability: the smallest change a comparison could tell from zero, on outcomes whose
figures are set exactly."""

import math

import numpy as np
import pytest
from scipy import stats

from latune.analysis.detectability import detectable_change


def _outcomes(error: float, images_per_class: int, seed: int) -> dict:
    """10 classes, every class wrong on exactly ``error`` of its images (shuffled): class-wise error mean = error,
    SD = 0; one test set shared by every seed and arm."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(10), images_per_class)
    wrong = int(round(error * images_per_class))
    correct = np.concatenate([rng.permutation(np.arange(images_per_class) >= wrong) for _ in range(10)])
    return {"labels": labels, "num_classes": 10, "test_set": f"shared-{images_per_class}",
            "clean_correct": correct}


def test_seed_level_size_is_the_t_test_threshold_over_the_baseline():
    reference = {s: _outcomes(0.20, 100, s) for s in range(3)}
    treated = {s: _outcomes(e, 100, 10 + s) for s, e in enumerate((0.21, 0.22, 0.23))}
    found = detectable_change(treated, reference, "clean_correct", "class_error_mean", replicates=400)
    assert found.change == pytest.approx(0.10)  # (0.22 - 0.20) / 0.20
    assert found.seeds == 3
    # per-seed differences 0.01, 0.02, 0.03: SD 0.01; t(0.975, 2) * 0.01 / sqrt(3), over the baseline's 0.20
    assert found.seeds_smallest == pytest.approx(stats.t.ppf(0.975, 2) * 0.01 / math.sqrt(3) / 0.20)
    assert found.low < found.change < found.high and found.images_half_width == pytest.approx(
        (found.high - found.low) / 2)
    assert found.detects(0.5) and not found.detects(0.05) and not found.detects(-0.05)


def test_four_times_the_images_halve_the_image_half_width():
    widths = []
    for per_class in (100, 400):
        reference = {s: _outcomes(0.20, per_class, s) for s in range(3)}
        treated = {s: _outcomes(0.22, per_class, 10 + s) for s in range(3)}
        widths.append(detectable_change(treated, reference, "clean_correct", "class_error_mean",
                                        replicates=1000).images_half_width)
    assert widths[1] / widths[0] == pytest.approx(0.5, abs=0.1)


def test_identical_seeds_leave_no_seed_noise_and_a_missing_kind_gives_none():
    reference = {s: _outcomes(0.20, 100, s) for s in range(2)}
    treated = {s: _outcomes(0.25, 100, 10 + s) for s in range(2)}
    found = detectable_change(treated, reference, "clean_correct", "class_error_mean", replicates=200)
    assert found.seeds_smallest == 0.0 and found.baseline == pytest.approx(0.20) and found.change == pytest.approx(0.25)
    assert detectable_change(treated, reference, "robust_correct", replicates=200) is None
    one_seed = detectable_change({0: treated[0]}, {0: reference[0]}, "clean_correct", "class_error_mean",
                                 replicates=200)
    assert math.isnan(one_seed.seeds_smallest) and not one_seed.detects(10.0)  # one seed: no seed-level test
