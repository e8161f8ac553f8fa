import math

import pytest
import torch

from latune.config import from_flat
from latune.core.train import setup, train

TINY = {"data.limit_train": 256, "optim.epochs": 2, "eval.max_images": 64, "eval.steps": 5, "attack.steps": 3,
        "device": "cpu"}
DETERMINISTIC_KEYS = ("train_loss", "train_acc", "clean_acc", "robust_acc", "robust_class_error", "lr")


def _run(**overrides):
    return [e.metrics for e in train(from_flat({**TINY, **overrides}))]


def test_same_seed_gives_identical_metrics():
    first, second = _run(), _run()
    for a, b in zip(first, second):
        assert {k: a[k] for k in DETERMINISTIC_KEYS} == {k: b[k] for k in DETERMINISTIC_KEYS}


def test_resume_from_a_snapshot_continues_exactly():
    config = from_flat(TINY)
    straight = [e.metrics for e in train(config)]
    first_epoch = next(iter(train(config)))
    snapshot = first_epoch.state_dict()
    resumed = [e.metrics for e in train(config, resume=snapshot)]
    assert [m["epoch"] for m in resumed] == [2]
    assert {k: resumed[0][k] for k in DETERMINISTIC_KEYS} == {k: straight[1][k] for k in DETERMINISTIC_KEYS}


def test_every_report_has_validation_metrics_and_the_last_has_test_metrics():
    metrics = _run(**{"optim.epochs": 4, "eval.every": 3})
    assert [m["eval_epoch"] for m in metrics] == [1, 1, 3, 4]  # first, every 3rd, last; carried forward between
    last = metrics[-1]
    for key in ("clean_acc", "robust_acc", "clean_class_error_sd", "robust_class_error_sd", "robust_worst_class_acc",
                "transform_acc", "test_clean_acc", "test_robust_acc", "test_robust_class_error", "images_per_s"):
        assert key in last, key
    assert len(last["robust_class_error"]) == 10


def test_la_off_has_no_transformation_head():
    run = setup(from_flat({**TINY, "la.delta": 0.0}))
    assert run.num_extra == 0 and run.ops == ()
    assert run.model(torch.zeros(1, 1, 16, 16)).shape == (1, 10)
    run = setup(from_flat({**TINY, "la.delta": 0.2, "la.transform_set": "geometric", "la.m": 2}))
    assert run.num_extra == 2 and run.model(torch.zeros(1, 1, 16, 16)).shape == (1, 12)


@pytest.mark.parametrize("overrides", [
    {"attack.eps": 0.0},  # standard training
    {"la.transform_set": "perturbations"},  # fgsm needs the model's input gradient
    {"la.transform_set": "augmix", "attack.target": "class"},
    {"optim.schedule": "multistep"}, {"optim.schedule": "onecycle"}, {"optim.schedule": "constant"},
    {"optim.precision": "bf16"},
    {"model.channels_last": True},
])
def test_variants_train(overrides):
    metrics = _run(**{**overrides, "optim.epochs": 1})
    assert math.isfinite(metrics[-1]["train_loss"]) and 0 <= metrics[-1]["test_clean_acc"] <= 1


def test_cosine_schedule_ends_near_zero():
    assert _run()[-1]["lr"] == pytest.approx(0.0, abs=1e-9)


def test_diverging_loss_raises():
    with pytest.raises(FloatingPointError, match="training loss is"):
        _run(**{"optim.lr": 1e12, "optim.epochs": 1, "optim.nesterov": False, "optim.momentum": 0.0})


def test_corruption_metrics_every_report_first_as_nan_then_measured():
    metrics = _run(**{"optim.epochs": 3, "eval.corruptions": "fog,gaussian_noise", "eval.corruption_severities": "1,5",
                      "eval.corruption_every": 2, "eval.corruption_max_images": 32})
    assert all("mce" in m and "corruption_class_error_sd" in m for m in metrics)  # a sweep objective must be
    assert math.isnan(metrics[0]["mce"]) and "ce_fog" not in metrics[0]
    assert [m.get("corruption_eval_epoch") for m in metrics] == [None, 2, 3]
    last = metrics[-1]
    for prefix in ("", "test_"):
        ce = [last[f"{prefix}ce_{n}_s{s}"] for n in ("fog", "gaussian_noise") for s in (1, 5)]
        assert all(0 <= e <= 1 for e in ce)
        assert last[f"{prefix}mce"] == pytest.approx(sum(ce) / 4)
        assert last[f"{prefix}ce_noise"] == last[f"{prefix}ce_gaussian_noise"]
        assert len(last[f"{prefix}corruption_class_error"]) == 10
        # pooled over the 4 (corruption, severity) pairs: accuracy = 1 - mean error
        assert last[f"{prefix}corruption_acc"] == pytest.approx(1 - sum(ce) / 4)


def test_corruption_baseline_from_a_metrics_json(tmp_path):
    import json

    keys = {"eval.corruptions": "contrast", "eval.corruption_severities": "5", "optim.epochs": 1}
    metrics = _run(**keys)[-1]
    baseline = tmp_path / "metrics.json"
    baseline.write_text(json.dumps({"final": {k: v for k, v in metrics.items() if "ce_" in k}}))
    again = _run(**keys, **{"eval.corruption_baseline": str(baseline)})[-1]
    assert again["test_mce_vs_baseline"] == pytest.approx(1.0)  # the same run as its own baseline
    from latune.config import ConfigError

    with pytest.raises(ConfigError, match="eval.corruption_baseline"):
        setup(from_flat({**TINY, **keys, "eval.corruption_baseline": str(tmp_path / "missing.json")}))
