"""latune.analysis.interval_report: trial outcomes saved to one compressed file and read back unchanged."""

import numpy as np

from latune.analysis.interval_report import load_trial_outcomes, save_trial_outcomes


def test_trial_outcomes_round_trip_through_one_compressed_file(tmp_path):
    found = {"a_00001": {"labels": np.arange(6) % 3, "clean_correct": np.array([1, 0, 1, 1, 0, 1], bool),
                         "num_classes": 3, "test_set": "images-6-x"},
             "a_00002": {"labels": np.arange(6) % 3, "robust_correct": np.zeros(6, bool), "num_classes": 3,
                         "test_set": "images-6-x"}}
    save_trial_outcomes(tmp_path / "o.npz", found)
    loaded = load_trial_outcomes(tmp_path / "o.npz")
    assert set(loaded) == set(found)
    for trial, arrays in found.items():
        assert set(loaded[trial]) == set(arrays)
        assert loaded[trial]["num_classes"] == 3 and loaded[trial]["test_set"] == "images-6-x"
        for key in set(arrays) - {"num_classes", "test_set"}:
            assert np.array_equal(loaded[trial][key], arrays[key])
