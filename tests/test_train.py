import math

import pytest
import torch

from latune.config import from_flat
from latune.core.train import setup, train

TINY = {"data.limit_train": 256, "optim.epochs": 2, "eval.max_images": 64, "eval.steps": 5, "attack.steps": 3,
        "device": "cpu"}
DETERMINISTIC_KEYS = ("train_loss", "train_acc", "clean_acc", "robust_acc", "robust_class_error", "lr")

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: one thread is the fast setting


def _run(**overrides):
    return [e.metrics for e in train(from_flat({**TINY, **overrides}))]


@pytest.fixture(scope="module")
def tiny_run():
    """The metrics of each epoch of one TINY run, trained once for the tests that read it."""
    return _run()


@pytest.mark.slow
def test_same_seed_gives_identical_metrics(tiny_run):
    first, second = tiny_run, _run()
    for a, b in zip(first, second):
        assert {k: a[k] for k in DETERMINISTIC_KEYS} == {k: b[k] for k in DETERMINISTIC_KEYS}


@pytest.mark.slow
def test_resume_from_a_snapshot_continues_exactly(tiny_run):
    config = from_flat(TINY)
    straight = tiny_run
    first_epoch = next(iter(train(config)))  # the generator stops here: only epoch 1 is trained
    snapshot = first_epoch.state_dict()
    resumed = [e.metrics for e in train(config, resume=snapshot)]
    assert [m["epoch"] for m in resumed] == [2]
    assert {k: resumed[0][k] for k in DETERMINISTIC_KEYS} == {k: straight[1][k] for k in DETERMINISTIC_KEYS}


@pytest.mark.slow
def test_every_report_has_validation_metrics_and_the_last_has_test_metrics():
    metrics = _run(**{"optim.epochs": 4, "eval.every": 3})
    assert [m["eval_epoch"] for m in metrics] == [1, 1, 3, 4]  # first, every 3rd, last; carried forward between
    last = metrics[-1]
    for key in ("clean_acc", "robust_acc", "clean_class_error_sd", "robust_class_error_sd", "robust_worst_class_acc",
                "transform_acc", "test_clean_acc", "test_robust_acc", "test_robust_class_error", "images_per_s"):
        assert key in last, key
    assert len(last["robust_class_error"]) == 10


@pytest.mark.slow
def test_test_every_adds_test_curves_without_touching_training():
    """eval.test_every=1: clean and robust test_* metrics every epoch (a record's learning curves), the same
    training as without them (evaluation draws from its own generator), the full test evaluation at the end."""
    plain, curves = _run(**{"optim.epochs": 3}), _run(**{"optim.epochs": 3, "eval.test_every": 1})
    assert "test_clean_acc" not in plain[0] and "test_clean_acc" not in plain[1]
    for epoch in curves:
        assert {"test_clean_acc", "test_robust_acc", "test_robust_class_error_sd", "test_eval_time_s"} <= set(epoch)
    for a, b in zip(plain, curves):
        assert {k: a[k] for k in DETERMINISTIC_KEYS} == {k: b[k] for k in DETERMINISTIC_KEYS}
    assert curves[-1]["test_robust_acc"] == plain[-1]["test_robust_acc"]
    every_2nd = train(from_flat({**TINY, "optim.epochs": 3, "eval.test_every": 2}))
    assert "test_clean_acc" not in next(iter(every_2nd)).metrics  # epoch 1 only: the rest is not trained


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


def test_cosine_schedule_ends_near_zero(tiny_run):
    assert tiny_run[-1]["lr"] == pytest.approx(0.0, abs=1e-9)


def test_diverging_loss_raises():
    with pytest.raises(FloatingPointError, match="training loss is"):
        _run(**{"optim.lr": 1e12, "optim.epochs": 1, "optim.nesterov": False, "optim.momentum": 0.0})


@pytest.mark.slow
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


@pytest.mark.slow
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


# ------------------------------------------------------------------------------------------- LA wiring

MARKERS = ("_mark0", "_mark1", "_mark2")  # label groups with la.m=2: (0, 0, 1)


@pytest.fixture
def marker_set(monkeypatch):
    """A transformation set of three ops that paint the whole image (k+1)/10, so the op is read off the image."""
    from latune.core import transforms
    from latune.registry import TRANSFORM_SETS

    for k, name in enumerate(MARKERS):
        monkeypatch.setitem(transforms.OPS, name, lambda xs, idx, ctx, k=k: torch.full_like(xs, (k + 1) / 10))
    monkeypatch.setitem(TRANSFORM_SETS, "_markers", MARKERS)


def _capture_training_batches(monkeypatch, run):
    """Per training step: (labels y, the model's input, the target handed to the training loss)."""
    from latune.core import labels
    from latune.core import train as core_train

    ys, inputs, targets = [], [], []
    real_batches, real_loss = core_train.iterate_batches, labels.soft_cross_entropy

    def batches(*args, **kwargs):
        for x, y in real_batches(*args, **kwargs):
            ys.append(y)
            yield x, y

    def loss(logits, target, reduction="mean"):
        if reduction == "mean":  # the training loss (the attack's sums; it is off here anyway)
            targets.append(target.clone())
        return real_loss(logits, target, reduction)

    monkeypatch.setattr(core_train, "iterate_batches", batches)
    monkeypatch.setattr(labels, "soft_cross_entropy", loss)
    run.model.register_forward_pre_hook(lambda m, args: inputs.append(args[0].detach()) if m.training else None)
    return ys, inputs, targets


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_the_la_targets_reach_the_training_loss(marker_set, monkeypatch, p):
    delta, K, M = 0.3, 10, 2
    config = from_flat({**TINY, "data.limit_train": 96, "optim.epochs": 1, "attack.eps": 0, "eval.steps": 0,
                        "eval.max_images": 16, "la.transform_set": "_markers", "la.m": M, "la.delta": delta, "la.p": p})
    run = setup(config)
    ys, inputs, targets = _capture_training_batches(monkeypatch, run)
    list(train(config, run=run))
    assert len(ys) == len(inputs) == len(targets) == 96 // 64
    for y, x, target in zip(ys, inputs, targets):
        expected = torch.zeros(len(y), K + M)
        if p == 0:  # nothing transformed: the plain one-hot class, zeros in the M transformation columns
            expected[torch.arange(len(y)), y] = 1.0
        else:  # every image painted by a marker: 1-δ at its class, δ at its marker's group
            op = torch.round(x[:, 0, 0, 0] * 10).long() - 1
            assert ((0 <= op) & (op < 3)).all() and (x == x[:, :1, :1, :1]).all()
            expected[torch.arange(len(y)), y] = 1.0 - delta
            expected[torch.arange(len(y)), K + torch.tensor([0, 0, 1])[op]] = delta
        assert torch.equal(target, expected)


def test_augment_only_transforms_the_images_and_keeps_the_plain_labels(marker_set, monkeypatch):
    """la.mode=augment_only, p = 1: every training image painted by a marker, a K-logit head, one-hot targets."""
    K = 10
    config = from_flat({**TINY, "data.limit_train": 96, "optim.epochs": 1, "attack.eps": 0, "eval.steps": 0,
                        "eval.max_images": 16, "la.transform_set": "_markers", "la.mode": "augment_only",
                        "la.delta": 0, "la.p": 1})
    run = setup(config)
    assert run.num_extra == 0 and run.ops == MARKERS and run.model(torch.zeros(1, 1, 16, 16)).shape == (1, K)
    ys, inputs, targets = _capture_training_batches(monkeypatch, run)
    metrics = [e.metrics for e in train(config, run=run)][-1]
    assert len(ys) == len(inputs) == len(targets) == 96 // 64
    for y, x, target in zip(ys, inputs, targets):
        op = torch.round(x[:, 0, 0, 0] * 10).long() - 1
        assert ((0 <= op) & (op < 3)).all() and (x == x[:, :1, :1, :1]).all()  # transformed
        assert torch.equal(target, torch.nn.functional.one_hot(y, K).float())  # no transformation part
    assert "transform_acc" not in metrics  # no transformation head to score


@pytest.mark.slow
def test_the_transformation_head_learns_the_transformations():
    # standard training with LA on every image: after 3 epochs the head names the op's group well above chance
    config = from_flat({"device": "cpu", "attack.eps": 0, "la.delta": 0.3, "la.p": 1, "la.severity": 10,
                        "optim.epochs": 3, "eval.steps": 0, "eval.every": 100})
    last = [e.metrics for e in train(config)][-1]
    chance = 1 / setup(config).num_extra
    assert last["transform_acc"] > 2 * chance and last["test_transform_acc"] > 2 * chance, last["transform_acc"]


def test_a_run_without_an_evaluation_attack_reports_no_robust_metrics():
    metrics = _run(**{"optim.epochs": 1, "eval.eps": 0})[-1]
    assert "clean_acc" in metrics and "test_clean_acc" in metrics
    assert not [key for key in metrics if "robust" in key]


def test_standard_training_is_still_attacked_at_the_preset_radius():
    first = next(iter(train(from_flat({**TINY, "attack.eps": 0, "optim.epochs": 1}))))
    assert first.state_dict()["config"]["eval.eps"] == 0.1 and first.state_dict()["config"]["attack.alpha"] == 0
    assert first.metrics["robust_acc"] < first.metrics["clean_acc"]  # not a copy of the clean figure
