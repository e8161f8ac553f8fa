"""Shared fixtures: the sweep CLI run for real in a subprocess, and the settings that keep its trials tiny."""

import os
import subprocess
import sys
import time

import pytest
import torch

# a bug in the MLflow bookkeeping fails the test instead of a warning (latune.tracking.callback); outages stay
# forgiven. Set for this process and inherited by the sweeps the tests start.
os.environ.setdefault("LATUNE_STRICT_TRACKING", "1")

# 2 epochs on 128 digits images, evaluation on 64 images with PGD-5, PGD-2 while training: seconds per trial
TINY = ("optim.epochs=2", "data.limit_train=128", "eval.max_images=64", "eval.steps=5", "attack.steps=2")
# these tests are about the sweep layer; MLflow logging (tested elsewhere) adds ~15 s per sweep on 2 cores
NO_TRACKING = ("--no-mlflow",)


@pytest.fixture
def sweep_cli():
    """``sweep_cli(*args, cwd=..., tiny=False)``: runs ``python -m latune.sweep`` and returns the
    CompletedProcess with an extra ``seconds`` attribute (wall time). ``tiny``: tiny trials, no MLflow."""

    def run(*args, cwd, tiny=False, timeout=300):
        extra = [*[a for pair in TINY for a in ("--set", pair)], *NO_TRACKING] if tiny else []
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "latune.sweep", *map(str, args), *extra], cwd=cwd,
                              capture_output=True, text=True, timeout=timeout)
        done.seconds = time.perf_counter() - started
        return done

    return run


@pytest.fixture(scope="module")
def single_thread():
    """torch on one intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("single_thread")``), then
    the previous setting again. Tiny tensors on a busy 2-core machine: extra threads only add synchronisation, and
    OpenMP spin-waiting made such tests up to ~100x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
