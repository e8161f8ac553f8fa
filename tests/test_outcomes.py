"""latune.core.outcomes: the last epoch's per-image test outcomes reproduce the run's own test metrics, and
survive the file round trip."""

from __future__ import annotations

import numpy as np
import pytest

from latune.analysis.intervals import class_figures
from latune.config import from_flat
from latune.core.outcomes import OUTCOMES_FILE, labels_id, read_outcomes, identify_test_set, write_outcomes
from latune.core.train import train

pytestmark = pytest.mark.usefixtures("single_thread")

TINY = {"data.limit_train": 128, "optim.epochs": 2, "eval.max_images": 48, "eval.steps": 3, "attack.steps": 2,
        "device": "cpu", "eval.corruptions": "gaussian_noise,fog", "eval.corruption_severities": [1, 5]}


@pytest.fixture(scope="module")
def epochs():
    return list(train(from_flat(TINY)))


def test_only_the_last_epoch_has_outcomes_of_the_evaluated_test_images(epochs):
    assert epochs[0].test_outcomes is None
    outcomes = epochs[-1].test_outcomes
    assert outcomes["num_classes"] == 10 and len(outcomes["labels"]) == 48  # eval.max_images
    for key in ("clean_correct", "robust_correct", "corruption_correct"):
        assert tuple(outcomes[key].shape) == (48,), key
    fractions = outcomes["corruption_correct"].numpy()
    assert set(np.round(fractions * 4).tolist()) <= {0, 1, 2, 3, 4}  # shares of 2 corruptions x 2 severities


@pytest.mark.parametrize("kind", ["clean", "robust", "corruption"])
def test_outcomes_reproduce_the_test_metrics(epochs, kind, tmp_path):
    final = epochs[-1].metrics
    path = write_outcomes(tmp_path, epochs[-1].test_outcomes)
    assert path == tmp_path / OUTCOMES_FILE and not list(tmp_path.glob("*.partial*"))
    back = read_outcomes(path)
    assert back["labels"].dtype == np.int64 and back["clean_correct"].dtype == bool
    figures = class_figures(back[f"{kind}_correct"], back["labels"], back["num_classes"])
    assert figures["class_error_mean"] == pytest.approx(final[f"test_{kind}_class_error_mean"])
    assert figures["class_error_sd"] == pytest.approx(final[f"test_{kind}_class_error_sd"])
    assert figures["worst_class_acc"] == pytest.approx(final[f"test_{kind}_worst_class_acc"])


def test_the_test_set_id_names_the_evaluated_images(epochs, tmp_path):
    """Runs of different seeds on one fixed test split share the id (so the report resamples them jointly); other
    images, or the same ones in another order, do not; files written before the id read back with the labels'."""
    import torch

    outcomes = epochs[-1].test_outcomes
    assert outcomes["test_set"].startswith("images-48-")
    back = read_outcomes(write_outcomes(tmp_path, outcomes))
    assert back["test_set"] == outcomes["test_set"]
    images, labels = torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1])
    assert identify_test_set(images, labels) == identify_test_set(images.numpy(), labels.numpy())
    other = images.clone()
    other[0, 0, 0, 0] = 1
    first = identify_test_set(images, labels)
    assert identify_test_set(other, labels) != first != identify_test_set(images, labels.flip(0))
    old = {k: v for k, v in outcomes.items() if k != "test_set"}
    assert read_outcomes(write_outcomes(tmp_path / "old", old))["test_set"] == labels_id(outcomes["labels"])


def test_bad_outcomes_are_refused(tmp_path):
    with pytest.raises(ValueError, match="labels"):
        write_outcomes(tmp_path, {"clean_correct": np.ones(3, bool)})
    with pytest.raises(ValueError, match="shape"):
        write_outcomes(tmp_path, {"labels": np.zeros(3, int), "num_classes": 2, "clean_correct": np.ones(4, bool)})
    (tmp_path / OUTCOMES_FILE).write_text("not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        read_outcomes(tmp_path / OUTCOMES_FILE)
