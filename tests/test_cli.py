"""The single-run CLI, run for real in a subprocess (as users run it)."""

import json
import os
import subprocess
import sys
import time

import pytest

from latune.config import describe_keys

# every proxy variable pointed at a closed local port: a data set download fails at once, so no test fetches data
# (urllib, which torchvision downloads with, honours them). One OpenMP thread: tiny tensors on a busy machine run
# many times faster so (see conftest.single_thread)
_OFFLINE = {**os.environ, **dict.fromkeys(("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY",
                                           "ALL_PROXY"), "http://127.0.0.1:9"), "no_proxy": "", "NO_PROXY": "",
            "OMP_NUM_THREADS": "1"}


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "latune.train", *args], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=_OFFLINE)


def _cli_at_once(folder, *commands, timeout=600):
    """Each of ``commands`` (argument lists) run by the CLI at the same time, in its own process (one thread each:
    two of them keep two cores busy); their CompletedProcess, in order. Output goes to files in ``folder``."""
    started = []
    for index, args in enumerate(commands):
        out, err = (folder / f"cli{index}.{stream}" for stream in ("out", "err"))
        with out.open("w") as stdout, err.open("w") as stderr:
            started.append((subprocess.Popen([sys.executable, "-m", "latune.train", *args], stdout=stdout,
                                             stderr=stderr, text=True, env=_OFFLINE), out, err))
    deadline = time.monotonic() + timeout
    try:
        codes = [process.wait(timeout=max(1.0, deadline - time.monotonic())) for process, _, _ in started]
    finally:
        for process, _, _ in started:
            if process.poll() is None:
                process.kill()
                process.wait()
    return [subprocess.CompletedProcess(process.args, code, out.read_text(), err.read_text())
            for (process, out, err), code in zip(started, codes)]


@pytest.mark.slow
def test_adversarial_training_on_digits_beats_an_undefended_model(tmp_path):
    # digits at their native 8x8 (4x less work per image than the 16x16 preset) and eval.every=4: validation
    # (PGD-40) only on the first and last epochs: the suite's slowest test made cheaper;
    # the two trainings run side by side (one thread each), in about the time of the defended one alone
    defended, undefended = _cli_at_once(
        tmp_path,
        ["--data", "digits", "--out", str(tmp_path / "la"), "--set", "data.image_size=8", "--set", "optim.epochs=4",
         "--set", "la.delta=0.1",
         "--set", "attack.eps=0.1", "--corruptions", "noise", "--set", "eval.every=4"],
        ["--data", "digits", "--out", str(tmp_path / "std"), "--set", "data.image_size=8", "--set", "optim.epochs=4",
         "--set", "attack.eps=0",
         "--set", "eval.eps=0.1", "--set", "eval.every=4", "--quiet"])
    assert defended.returncode == 0, defended.stderr
    assert undefended.returncode == 0, undefended.stderr

    record = json.loads((tmp_path / "la" / "metrics.json").read_text())
    baseline = json.loads((tmp_path / "std" / "metrics.json").read_text())["final"]
    final = record["final"]
    assert final["test_clean_acc"] > 0.8
    assert final["test_robust_acc"] > baseline["test_robust_acc"] + 0.2, (final["test_robust_acc"],
                                                                        baseline["test_robust_acc"])
    assert (tmp_path / "la" / "model.pt").is_file()
    assert "epoch   4/4" in defended.stdout and "final (test split)" in defended.stdout
    assert len(record["epochs"]) == 4 and record["config"]["la.delta"] == 0.1 and record["latune_version"]
    for prefix in ("", "test_"):
        for kind in ("clean", "robust"):
            for metric in ("acc", "class_error", "class_error_mean", "class_error_sd", "worst_class_acc"):
                assert f"{prefix}{kind}_{metric}" in final
        assert f"{prefix}transform_acc" in final
    for key in ("train_loss", "train_acc", "epoch_time_s", "images_per_s", "lr", "eval_epoch"):
        assert key in final
    for key in ("mce", "ce_noise", "ce_shot_noise_s5", "corruption_class_error_sd", "corruption_acc"):
        assert 0 <= final[key] <= 1 and 0 <= final[f"test_{key}"] <= 1, key
    assert "ce_fog" not in final and "test_mce=" in defended.stdout


def test_help_lists_every_config_key():
    result = _cli("--help")
    assert result.returncode == 0
    for key, _, _ in describe_keys():
        assert key in result.stdout


@pytest.mark.parametrize("args, fragment", [
    # each error led by the flag that caused it
    (["--set", "attack.eps=-1"], "error: --set attack.eps=-1: attack.eps: must be in [0, 1]"),
    (["--set", "la.delta=1"], "error: --set la.delta=1: la.delta: must be in [0, 1)"),
    (["--set", "attack.epz=0.1"], "error: --set attack.epz=0.1: unknown config key 'attack.epz'"),
    (["--data", "imagenet"], "error: --data imagenet: data.name: unknown value 'imagenet'; allowed: digits"),
    (["--set", "la.transform_set=nope"], "error: --set la.transform_set=nope: la.transform_set: unknown set 'nope'"),
    (["--set", "novalue"], "error: --set: expected key=value"),
    (["--corruptions", "rain"], "error: --corruptions rain: eval.corruptions: unknown 'rain'; allowed: none, all"),
    (["--corruptions-dir", "/tmp"], "error: --corruptions-dir /tmp: eval.corruptions_dir: must be none unless "
                                    "data.name is cifar10"),
    pytest.param(["--corruptions", "all", "--set", "eval.corruption_baseline=/no/metrics.json"],
                 "error: --set eval.corruption_baseline=/no/metrics.json: eval.corruption_baseline: cannot read final "
                 "metrics from '/no/metrics.json'", marks=pytest.mark.slow),  # seconds; the other cases under one
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, args, fragment):
    out = tmp_path / "out"
    result = _cli(*args, "--out", str(out))
    assert result.returncode == 2
    assert result.stderr.strip().startswith(fragment) and result.stderr.strip().count("\n") == 0, result.stderr
    assert not out.exists()


@pytest.mark.slow
def test_missing_data_set_offline_says_where_to_put_it(tmp_path):
    out = tmp_path / "out"
    result = _cli("--data", "svhn", "--data-dir", str(tmp_path / "data"), "--out", str(out))
    assert result.returncode == 2 and str(tmp_path / "data") in result.stderr, result.stderr
    assert "download failed" in result.stderr and result.stderr.strip().count("\n") == 0 and not out.exists()


@pytest.mark.slow  # torch is loaded to find the device missing: seconds
@pytest.mark.parametrize("device", ["cuda", "cuda:99"])
def test_a_device_this_machine_lacks_is_one_line_exit_2(tmp_path, device):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out"
    result = _cli("--set", f"device={device}", "--out", str(out))
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip()
    assert message.startswith(f"error: --set device={device}: device: '{device}' "), message  # led by its flag
    assert "allowed here: auto, cpu" in message, message
    assert message.count("\n") == 0 and not out.exists()
