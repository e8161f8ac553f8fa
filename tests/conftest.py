"""Shared fixtures: the sweep CLI run for real in a subprocess, and the settings that keep its trials tiny; the
end-to-end results several test modules read, each made once per session (a tiny sweep, a trained model, an
``mlflow server``), so the suite pays for each scenario once."""

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

# a bug in the MLflow bookkeeping fails the test instead of a warning (latune.tracking.callback); outages stay
# forgiven. Set for this process and inherited by the sweeps the tests start.
os.environ.setdefault("LATUNE_STRICT_TRACKING", "1")

# 2 epochs on 128 digits images, evaluation on 64 images with PGD-5, PGD-2 while training: seconds per trial
TINY = ("optim.epochs=2", "data.limit_train=128", "eval.max_images=64", "eval.steps=5", "attack.steps=2")
# these tests are about the sweep layer; MLflow logging (tested elsewhere) adds ~15 s per sweep on 2 cores
NO_TRACKING = ("--no-mlflow",)
# the objectives of the shared tiny grid sweep (tiny_grid_sweep) and of the tests that read it
OBJECTIVES = {"clean_acc": "max", "robust_acc": "max", "robust_class_error_sd": "min"}


def run_sweep_cli(*args, cwd, tiny=False, timeout=300) -> subprocess.CompletedProcess:
    """``python -m latune.sweep ARGS`` in ``cwd``; the CompletedProcess with an extra ``seconds`` attribute (wall
    time). ``tiny``: tiny trials, no MLflow."""
    extra = [*[a for pair in TINY for a in ("--set", pair)], *NO_TRACKING] if tiny else []
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "latune.sweep", *map(str, args), *extra], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout)
    done.seconds = time.perf_counter() - started
    return done


@pytest.fixture
def sweep_cli():
    """``sweep_cli(*args, cwd=..., tiny=False)``: run_sweep_cli."""
    return run_sweep_cli


def write_sweep(folder: Path, name: str, **sweep) -> Path:
    """``folder/NAME.yaml``: a digits sweep evaluated at the training radius, one CPU per trial, plus ``sweep``."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "description": f"test sweep {name}",
                                    "base": {"eval.eps": {"preset": "attack.eps"}},
                                    "resources": {"cpu": 1, "gpu": 0}, **sweep}, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def tiny_grid_sweep(tmp_path_factory):
    """A real grid sweep through the CLI, run once per session: 4 tiny trials (la.delta x attack.eps), no MLflow.
    test_sweep checks what it writes and prints, test_audit audits its front. Returns (folder: where it ran,
    result: the CompletedProcess, experiment: its experiment folder)."""
    folder = tmp_path_factory.mktemp("tiny_grid")
    # a list of grids (their union, through Tune's variant generator): the first block's points are in the
    # second too and run once, so these are the 4 points of la.delta x attack.eps
    space = [{"la.delta": [0.0], "attack.eps": [0.0, 0.1]}, {"la.delta": [0.0, 0.2], "attack.eps": [0.0, 0.1]}]
    path = write_sweep(folder, "tiny_grid", space=space, search={"algorithm": "grid"}, objectives=OBJECTIVES)
    result = run_sweep_cli(path, "--verbose", "0", cwd=folder, tiny=True)
    experiments = [p for p in (folder / "runs").iterdir() if p.is_dir()] if (folder / "runs").is_dir() else []
    return SimpleNamespace(folder=folder, result=result, experiment=experiments[0] if len(experiments) == 1 else None)


@pytest.fixture(scope="session")
def digits8():
    """digits at their native 8x8 (4x less work per image than the 16x16 preset), seed 0."""
    from latune.core.data import load_data

    return load_data("digits", image_size=8, seed=0)


@pytest.fixture(scope="session")
def trained8(digits8):
    """latune's small CNN trained clean for 2 epochs on 8x8 digits (~95% test accuracy), in eval mode: the model
    test_attacks and test_audit attack, each module its own copy (an attack in train mode moves BatchNorm
    statistics)."""
    from _training import train_clean_small_cnn

    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # see single_thread (a session fixture is made before a module's single_thread)
    try:
        return train_clean_small_cnn(digits8, epochs=2)
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """One real ``mlflow server`` on 127.0.0.1 for the session (sqlite backend, proxied artifacts, in tmp); its
    start takes seconds. Each test uses its own experiment names; a test that stops it starts it again."""
    from _mlflow_helpers import MlflowServer

    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def single_thread():
    """torch on one intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("single_thread")``), then
    the previous setting again. Tiny tensors on a busy 2-core machine: extra threads only add synchronisation, and
    OpenMP spin-waiting made such tests up to ~100x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
