"""The stronger-attack audit (latune.core.audit): masked models must warn, a sound one must not; the CLI
(``python -m latune.audit``, latune.analysis.checkpoints, latune.tracking.audit_log) on a checkpoint, a Tune
layout and a real tiny sweep."""

import copy
import json
import os
import subprocess
import sys
import warnings

import pandas as pd
import pytest
import torch
from torch import nn

from latune.core.attacks import attack_mode
from latune.core.audit import AuditWarning, ClassHead, audit
from latune.analysis.checkpoints import find_targets
from latune.cli.audit import main
from latune.config import from_flat, resolve, to_flat
from latune.core.data import to_float
from latune.core.evaluate import EvalSettings, evaluate
from latune.core.models import save_checkpoint

EPS = 0.03  # digits' preset is 0.1, where a clean-trained model has ~0 robust accuracy: nothing to compare
# the fixture model's run: digits at their native 8x8 (4x less work than the 16x16 preset), no LA head
CONFIG = to_flat(resolve(from_flat({"data.name": "digits", "data.image_size": 8, "la.delta": 0})))
# one thread: on a shared 2-core machine two threads per tiny model oversubscribe and run up to 50x slower
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def digits(digits8):
    """8x8 digits, the session's (conftest.digits8)."""
    return digits8


@pytest.fixture(scope="module")
def trained(trained8):
    """A small CNN trained clean for 2 epochs on 8x8 digits (~95% test accuracy), in eval mode; the session's
    (conftest.trained8), which test_attacks attacks too; this module's own copy."""
    return copy.deepcopy(trained8)  # a copy: attacks in train mode move its BatchNorm statistics


@pytest.fixture(scope="module")
def checkpoint(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(path, trained, config=CONFIG)
    return path


def _quiet_audit(model, split, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AuditWarning)
        return audit(model, split, num_classes=10, **kwargs)


class _Rounded(nn.Module):
    """Quantises the input to 5 grey levels first: round() has zero derivative, so no gradient gets through."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(torch.round(x * 4) / 4)


class _Scaled(nn.Module):
    """Logits x 1e4 (optionally softmaxed): the cross-entropy saturates in fp32, its gradient is exactly 0."""

    def __init__(self, model, softmax=False):
        super().__init__()
        self.model, self.softmax = model, softmax

    def forward(self, x):
        logits = self.model(x) * 1e4
        return logits.softmax(1) if self.softmax else logits


class _GridLiar(nn.Module):
    """Wrong (classes shifted by one) on inputs on the 1/255 grid, i.e. clean images; right off it."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        logits = self.model(x)
        on_grid = ((x * 255 - (x * 255).round()).abs().flatten(1).amax(1) < 1e-3)[:, None]
        return torch.where(on_grid, logits.roll(1, dims=1), logits)


class _WithExtras(nn.Module):
    """K class logits plus M=3 extra logits far above them (and depending on the input): any use of the
    extras would wreck predictions and the attack's loss."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        logits = self.model(x)
        extra = 100 + x.flatten(1).sum(1, keepdim=True) * torch.tensor([1.0, -1.0, 2.0])
        return torch.cat([logits, extra], dim=1)


@pytest.fixture(scope="module")
def sound(trained, digits):
    """The default audit (pgd40 40 steps, apgd-ce 100 iterations) of the sound model on 64 test images."""
    return _quiet_audit(trained, digits.test, eps=EPS, max_images=64)


def test_a_sound_model_raises_no_warning(sound):
    assert sound["warnings"] == [] and sound["zero_gradient_images"] == 0
    assert 0.5 < sound["clean_acc"] and 0 < sound["attacks"]["pgd40"]["robust_acc"] < sound["clean_acc"]
    assert sound["robust_acc"] == min(r["robust_acc"] for r in sound["attacks"].values())  # survived every attack
    for run in sound["attacks"].values():
        assert {"robust_acc", "robust_class_error", "robust_class_error_mean", "robust_class_error_sd",
                "robust_worst_class_acc", "adv_acc", "steps", "seconds"} <= set(run)
        assert len(run["robust_class_error"]) == 10
    assert [sound["attacks"][n]["steps"] for n in ("pgd40", "apgd-ce")] == [40, 100]


def test_pgd40_agrees_with_latune_evaluate_on_the_same_images(sound, trained, digits):
    settings = EvalSettings(num_classes=10, eps=EPS, alpha=EPS / 4, steps=40, max_images=64)
    ours = evaluate(trained, digits.test, settings)
    assert ours["clean_acc"] == sound["clean_acc"]
    assert abs(ours["robust_acc"] - sound["attacks"]["pgd40"]["robust_acc"]) <= 3 / 64  # other random starts


@pytest.mark.parametrize("masked, names, expected", [
    (_Rounded, ("pgd40", "apgd-ce"), ["zero gradients"]),
    (lambda m: _Scaled(m, softmax=True), ("pgd40",), ["zero gradients", "probability outputs"]),
    # APGD-T's DLR loss is scale-invariant: AutoAttack breaks what CE-based PGD cannot even move
    (_Scaled, ("pgd40", "apgd-ce", "autoattack"), ["possible gradient masking", "zero gradients"]),
], ids=["quantised-input", "softmax-output", "scaled-logits"])
def test_a_model_with_masked_gradients_warns(trained, digits, masked, names, expected):
    with pytest.warns(AuditWarning) as caught:
        result = audit(masked(trained), digits.test, num_classes=10, eps=0.1, attack_names=names, steps=5,
                       max_images=32)
    assert sorted(w.split(":")[0] for w in result["warnings"]) == sorted(expected), result["warnings"]
    assert [str(w.message) for w in caught] == result["warnings"]
    assert result["zero_gradient_images"] > 16


def test_robust_above_clean_warns(trained, digits):
    result = _quiet_audit(_GridLiar(trained), digits.test, eps=0.01, attack_names=("pgd40",), steps=2,
                          max_images=32)
    assert result["clean_acc"] < 0.2 < result["attacks"]["pgd40"]["adv_acc"]
    assert result["robust_acc"] <= result["clean_acc"]  # RobustBench: robust needs clean-correct as well
    assert [w.split(":")[0] for w in result["warnings"]] == ["robust accuracy exceeds clean accuracy"]


def test_eps_zero_gives_robust_equal_to_clean(trained, digits):
    result = _quiet_audit(trained, digits.test, eps=0.0, attack_names=("pgd40", "apgd-ce"), steps=2, max_images=64)
    for run in result["attacks"].values():
        assert run["robust_acc"] == run["adv_acc"] == result["clean_acc"]
        assert run["robust_class_error"] == result["clean_class_error"]
    assert result["warnings"] == []


def test_only_the_first_k_logits_are_attacked_and_predicted(trained, digits):
    extras = _WithExtras(trained)
    assert ClassHead(extras, 10)(to_float(digits.test.images[:4])).shape == (4, 10)
    kwargs = dict(eps=EPS, attack_names=("pgd40", "apgd-ce"), steps=3, max_images=32)
    with_extras, plain = _quiet_audit(extras, digits.test, **kwargs), _quiet_audit(trained, digits.test, **kwargs)
    for key in ("clean_acc", "robust_acc", "zero_gradient_images"):
        assert with_extras[key] == plain[key], key
    for name in kwargs["attack_names"]:
        assert with_extras["attacks"][name]["robust_acc"] == plain["attacks"][name]["robust_acc"]


def test_eval_mode_is_used_and_mode_flags_and_rng_are_restored(trained, digits):
    trained.train()
    seen = []
    hook = trained.register_forward_pre_hook(lambda module, inputs: seen.append(module.training))
    rng = torch.get_rng_state()
    try:
        _quiet_audit(trained, digits.test, eps=EPS, attack_names=("pgd40", "apgd-ce"), steps=2, max_images=8)
        assert trained.training and seen and not any(seen)
        assert all(p.requires_grad and p.grad is None for p in trained.parameters())
        assert torch.equal(torch.get_rng_state(), rng)
        with attack_mode(trained):  # frozen by the caller: the audit restores that too
            _quiet_audit(trained, digits.test, eps=EPS, attack_names=("pgd40",), steps=1, max_images=4)
            assert not any(p.requires_grad for p in trained.parameters())
    finally:
        hook.remove()
        trained.eval()


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "latune.audit", *map(str, args)], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=ONE_THREAD)


@pytest.mark.slow
def test_cli_on_a_checkpoint(checkpoint, tmp_path):
    out = tmp_path / "audit" / "result.json"
    done = _cli(checkpoint, "--attack", "pgd40,apgd-ce", "--steps", "3", "--max-images", "64", "--out", out)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == (3 if summary["warnings"] else 0), done.stderr
    (target,) = summary["targets"]
    assert target["target"] == str(checkpoint) and target["eps"] == pytest.approx(0.1)  # the run's eval eps
    assert 0 <= target["pgd40_robust_acc"] <= target["clean_acc"] and "apgd-ce_robust_acc" in target
    assert "clean 0." in done.stdout and "pgd40 " in done.stdout and "class-error sd" in done.stdout
    report = json.loads(out.read_text())["reports"][0]
    assert report["split"] == "test" and report["images"] == 64 and report["attacks"]["apgd-ce"]["steps"] == 3


@pytest.mark.slow
def test_cli_unknown_attack_is_one_line_exit_2(checkpoint):
    done = _cli(checkpoint, "--attack", "pgd40,cw")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.strip() == "error: --attack: unknown attack 'cw'; allowed: pgd40, apgd-ce, autoattack"


@pytest.mark.parametrize("args, line", [
    (["--split", "train"], "error: --split: unknown split 'train'; allowed: val, test"),
    (["--eps", "lots"], "error: --eps: expected a number in [0, 1] (e.g. 0.1 or 8/255), got 'lots'"),
    (["--steps", "0"], "error: --steps: must be >= 1, got 0"),
    (["--data", "mnist"], "error: --data: {path} was trained on digits, not mnist"),
])
def test_bad_options_are_one_line_exit_2(checkpoint, capsys, args, line):
    assert main([str(checkpoint), *args]) == 2
    assert capsys.readouterr().err.strip() == line.format(path=checkpoint)


def test_missing_targets_are_exit_2(tmp_path, capsys):
    assert main([str(tmp_path / "nope.pt")]) == 2
    (tmp_path / "latune_sweep.json").write_text("{}")
    assert main([str(tmp_path)]) == 2
    assert "sweep folder without results.parquet" in capsys.readouterr().err


def test_without_torchattacks_the_audit_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "torchattacks", None)  # what importlib finds when it is not installed
    assert main([str(tmp_path / "model.pt")]) == 2
    assert capsys.readouterr().err == ("error: the audit's attacks need torchattacks, which is not installed: "
                                       "pip install 'latune[test]' (or pip install torchattacks)\n")


def _tune_layout(root, trained):
    """A sweep folder as Tune and latune.sweep lay it out (checked against a real sweep): results.parquet,
    trial folders {trainable}_{trial_id}_{index}_{tag}_{date}/checkpoint_NNNNNN/state.pt."""
    experiment = root / "tiny-digits-20260101-000000"
    front, behind, lost = "ab12c_00001", "ab12c_00000", "ab12c_00002"
    experiment.mkdir(parents=True)
    pd.DataFrame({"trial_id": [front, lost, behind], "pareto_rank": [0, 0, 1]}).to_parquet(
        experiment / "results.parquet")
    state = {"epoch": 2, "model": trained.state_dict(), "config": CONFIG, "latest_eval": {}}
    for trial_id, index, checkpoints in ((front, 1, (0, 1)), (behind, 0, (1,))):
        folder = experiment / f"train_trial_{trial_id}_{index}_la_delta={index / 10:.4f}_2026-01-01_00-00-0{index}"
        for number in checkpoints:
            (folder / f"checkpoint_{number:06d}").mkdir(parents=True)
            torch.save({**state, "epoch": number + 1}, folder / f"checkpoint_{number:06d}" / "state.pt")
    (experiment / f"train_trial_{front}0_3_x").mkdir()  # another trial whose id starts with the front's
    return experiment, front, lost


def test_sweep_folder_audits_the_front_at_its_latest_checkpoint(tmp_path, trained, capsys):
    experiment, front, lost = _tune_layout(tmp_path, trained)
    targets, found = find_targets(experiment)
    assert found == experiment and [t.trial_id for t in targets] == [front, lost]
    assert targets[0].path.parent.name == "checkpoint_000001" and targets[1].path is None

    code = main([str(experiment), "--attack", "pgd40", "--steps", "2", "--max-images", "32"])
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert code == 3 and [t["trial_id"] for t in summary["targets"]] == [front, lost]
    assert summary["targets"][0]["clean_acc"] > 0.5  # the trained weights were loaded, not a fresh init
    assert "no checkpoint" in summary["targets"][1]["warnings"][0]


@pytest.mark.slow  # a new sqlite MLflow store: seconds of migrations
def test_audit_is_logged_to_the_trials_mlflow_run(tmp_path, trained, capsys):
    from mlflow.tracking import MlflowClient

    from latune.tracking.audit_log import log_to_mlflow
    from latune.tracking.records import SweepInfo

    experiment, front, _ = _tune_layout(tmp_path, trained)
    SweepInfo(name="tiny", experiment_path=str(experiment), objectives={"clean_acc": "max"}, data="digits").save()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("tiny"),  # as latune.tracking tags a trial's child run
                            tags={"latune.trial_id": front, "latune.experiment_path": str(experiment)})
    main([str(experiment), "--attack", "pgd40,apgd-ce", "--steps", "1", "--max-images", "8", "--tracking-uri", uri])
    (report, _) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["targets"]
    logged = client.get_run(run.info.run_id).data
    assert logged.metrics == {"audit_clean_acc": report["clean_acc"], "audit_robust_acc": report["robust_acc"],
                              "audit_pgd40_robust_acc": report["pgd40_robust_acc"],
                              "audit_apgd_ce_robust_acc": report["apgd-ce_robust_acc"]}
    assert logged.tags["latune.audit_warnings"] == (" | ".join(report["warnings"]) or "none")
    missing = {"trial_id": "zz_00009", "attacks": {}, "warnings": []}
    assert log_to_mlflow(experiment, [missing], uri) == ["MLflow: no run of trial zz_00009; audit not logged"]


@pytest.mark.slow
def test_cli_on_a_real_tiny_sweep(tiny_grid_sweep):
    # the session's tiny grid sweep (conftest.tiny_grid_sweep, which test_sweep checks), not one of its own
    swept, experiment = tiny_grid_sweep.result, tiny_grid_sweep.experiment
    assert swept.returncode == 0 and experiment, swept.stdout[-2000:] + swept.stderr[-2000:]
    front = pd.read_parquet(experiment / "results.parquet").query("pareto_rank == 0")["trial_id"].tolist()
    done = _cli(experiment, "--attack", "pgd40", "--steps", "2", "--max-images", "32")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode in (0, 3) and done.returncode == (3 if summary["warnings"] else 0), done.stderr
    assert sorted(t["trial_id"] for t in summary["targets"]) == sorted(front)
    assert all("/checkpoint_" in t["target"] and t["target"].endswith("/state.pt") for t in summary["targets"])
