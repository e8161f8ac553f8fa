"""The Ray Tune trainable with real Tune (in-process), its fit to the trial's share (CUDA memory capped at the share
less the CUDA context; a GPU share without CUDA refused, naming the node; torch.cuda and Tune's context faked, no
Ray started), and the resource planning of sweeps."""

from __future__ import annotations

import json
import os
import signal
import socket
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from latune.config import ConfigError, from_flat
from latune.sweep import trainable
from latune.sweep.run import plan_resources
from latune.sweep.spec import SweepSpec
from latune.sweep.trainable import memory_fraction

TINY = {"data.limit_train": 128, "optim.epochs": 3, "eval.max_images": 64, "eval.steps": 5, "attack.steps": 2,
        "device": "cpu", "la.transform_set": "geometric", "la.delta": 0.1}
OBJECTIVES = ("clean_acc", "robust_acc", "robust_class_error_sd")
DETERMINISTIC = ("train_loss", "train_acc", "lr", "clean_acc", "robust_acc", "robust_class_error_sd")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    if ray.is_initialized():  # another test module's Ray: start a known one
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=80 * 1024**2)
    yield
    ray.shutdown()


def _reports(trial_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_trainable_reports_checkpoints_and_restores_after_a_worker_crash(ray_local, tmp_path):
    """Two identical trials; the worker process of the first to report epoch 1 is SIGKILLed while it trains
    epoch 2. Tune restarts it from its epoch-1 checkpoint (``tune.get_checkpoint`` in the trainable) and it
    must report exactly what the uninterrupted twin reports."""
    from ray import tune

    from latune.sweep.trainable import STATE_FILE, train_trial

    class KillOnce(tune.Callback):
        """SIGKILLs the trial's actor process (a real crash) once Tune registered its epoch-1 checkpoint.

        Not in on_trial_result: Tune takes a reported checkpoint in a second round-trip to the actor (a
        "save" task) after the result, so a worker killed then would restart from scratch."""

        killed: str | None = None

        def on_trial_save(self, iteration, trials, trial, **info):
            if self.killed is None and trial.last_result.get("epoch") == 1:
                self.killed = trial.trial_id
                os.kill(trial.last_result["pid"], signal.SIGKILL)

    killer = KillOnce()
    tuner = tune.Tuner(
        tune.with_resources(train_trial, {"cpu": 1}), param_space=TINY,
        tune_config=tune.TuneConfig(num_samples=2, reuse_actors=False),
        run_config=tune.RunConfig(storage_path=str(tmp_path), name="trainable", verbose=0, callbacks=[killer],
                                  failure_config=tune.FailureConfig(max_failures=1)))
    grid = tuner.fit()
    assert not grid.errors, grid.errors
    assert killer.killed is not None

    trial_dirs = {r.metrics["trial_id"]: Path(r.path) for r in grid}
    reports = {trial_id: _reports(path) for trial_id, path in trial_dirs.items()}
    assert len(reports) == 2
    for trial_id, rows in reports.items():
        assert [r["epoch"] for r in rows] == [1, 2, 3], (trial_id, rows)  # one report per epoch, none repeated
        for row in rows:
            assert all(isinstance(row.get(m), float) for m in OBJECTIVES), row  # every objective, every report
            assert row["node_id"] == ray_node_id()
            assert row["checkpoint_dir_name"], row  # a checkpoint with every report
        for name in {r["checkpoint_dir_name"] for r in rows}:
            assert (trial_dirs[trial_id] / name / STATE_FILE).is_file()
    assert "test_clean_acc" in rows[-1]

    crashed, straight = reports[killer.killed], next(v for k, v in reports.items() if k != killer.killed)
    assert [r["iterations_since_restore"] for r in straight] == [1, 2, 3]
    assert [r["iterations_since_restore"] for r in crashed] == [1, 1, 2]  # restarted at epoch 2, from epoch 1
    assert crashed[1]["pid"] != crashed[0]["pid"]
    for a, b in zip(crashed, straight):
        assert {k: a[k] for k in DETERMINISTIC} == {k: b[k] for k in DETERMINISTIC}, a["epoch"]

    # the epoch-1 checkpoint holds the full state: train(resume=...) continues it exactly
    from latune.core.train import train

    state = torch.load(trial_dirs[killer.killed] / straight[0]["checkpoint_dir_name"] / STATE_FILE,
                       map_location="cpu", weights_only=True)
    assert state["epoch"] == 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the trial (one CPU): same float sums
    try:
        resumed = [e.metrics for e in train(from_flat(TINY), resume=state)]
    finally:
        torch.set_num_threads(threads)
    assert [m["epoch"] for m in resumed] == [2, 3]
    for a, b in zip(resumed, straight[1:]):
        assert {k: a[k] for k in DETERMINISTIC} == {k: b[k] for k in DETERMINISTIC}


def ray_node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


# plan_resources: no Ray needed, the cluster is the dict ray.cluster_resources() returns
SPEC = SweepSpec(name="t", description="", base={}, space=())


@pytest.mark.parametrize("changes, cluster, expected", [
    ({"cpu": 2.0}, {"CPU": 8.0}, (2.0, 0.0, 4)),
    ({"cpu": 0.5, "gpu": 0.5}, {"CPU": 2.0, "GPU": 2.0}, (0.5, 0.5, 4)),
    ({"cpu": 1.0, "gpu": 0.25}, {"CPU": 16.0, "GPU": 2.0}, (1.0, 0.25, 8)),  # GPUs limit
    ({"cpu": 4.0, "gpu": 0.25}, {"CPU": 8.0, "GPU": 2.0}, (4.0, 0.25, 2)),  # CPUs limit
    ({"cpu": 1.0, "gpu": 1.0}, {"CPU": 8.0, "GPU": 2.0}, (1.0, 1.0, 2)),
    ({"cpu": 0.2}, {"CPU": 0.6}, (0.2, 0.0, 3)),  # 0.6 / 0.2 is 2.999... in floats
    ({"gpu": "auto"}, {"CPU": 4.0}, (1.0, 0.0, 4)),
    ({"gpu": "auto"}, {"CPU": 16.0, "GPU": 1.0}, (1.0, 0.25, 4)),
    ({"max_concurrent": 3}, {"CPU": 8.0}, (1.0, 0.0, 3)),
    ({"max_concurrent": 30}, {"CPU": 8.0}, (1.0, 0.0, 8)),  # capped to what fits
    ({"max_concurrent": 1, "gpu": "auto"}, {"CPU": 8.0, "GPU": 1.0}, (1.0, 0.25, 1)),
])
def test_plan_resources(changes, cluster, expected):
    assert plan_resources(replace(SPEC, **changes), cluster) == expected


@pytest.mark.parametrize("changes, cluster, message", [
    ({"gpu": 0.5}, {"CPU": 4.0}, "no GPU"),
    ({"gpu": 1.0}, {"CPU": 4.0, "GPU": 0.0}, "no GPU"),
    ({"gpu": 2.0}, {"CPU": 4.0, "GPU": 1.0}, "more than the cluster"),
    ({"cpu": 4.0}, {"CPU": 2.0}, "more than the cluster"),
])
def test_plan_resources_rejects_what_cannot_fit(changes, cluster, message):
    with pytest.raises(ConfigError, match=message):
        plan_resources(replace(SPEC, **changes), cluster)


# -- the trial's share of the machine -------------------------------------------------------------------------------
GIB = 2**30


@pytest.mark.parametrize("share, total, in_use, context", [
    (0.25, 24 * GIB, int(0.45 * GIB), 0.45 * GIB),  # the first trial on the device: its own context, measured
    (0.25, 24 * GIB, int(0.1 * GIB), 0.3 * GIB),  # less than any context measures: the smallest
    (0.25, 24 * GIB, 12 * GIB, 1.0 * GIB),  # other trials' memory counted too: the largest context at most
    (0.5, 80 * GIB, int(0.6 * GIB), 0.6 * GIB),
])
def test_memory_fraction_is_the_share_less_the_cuda_context(share, total, in_use, context):
    assert memory_fraction(share, total, in_use) == pytest.approx(share - context / total)


def test_four_capped_trials_and_their_contexts_fit_the_device():
    total, context = 16 * GIB, int(0.6 * GIB)
    assert 4 * (memory_fraction(0.25, total, context) * total + context) <= total


def test_a_share_too_small_for_the_context_is_refused():
    with pytest.raises(ConfigError, match=r"resources.gpu: a share of 0.05 of this 16.0 GB GPU leaves .* ask for at "
                                          r"least 0.1 \(--gpu\)"):
        memory_fraction(0.05, 16 * GIB, 1 * GIB)


@pytest.fixture
def fake_trial(monkeypatch):
    """``fake_trial(gpu_share, cuda=True)``: Tune's context of a trial holding 1 CPU and ``gpu_share``, torch.cuda
    of a 24 GB device with 0.5 GB in use (or no CUDA); returns what set_per_process_memory_fraction received."""
    received: dict = {}

    def make(share: float, cuda: bool = True) -> dict:
        resources = SimpleNamespace(required_resources={"CPU": 1.0, "GPU": share})
        context = SimpleNamespace(get_trial_resources=lambda: resources)
        monkeypatch.setattr(trainable.tune, "get_context", lambda: context)
        monkeypatch.setattr(trainable.ray, "get_runtime_context",
                            lambda: SimpleNamespace(get_node_id=lambda: "node-abc123"))
        monkeypatch.setattr(torch, "set_num_threads", lambda n: received.update(threads=n))
        monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(23.5 * GIB), 24 * GIB))
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(total_memory=24 * GIB))
        monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                            lambda fraction, device=None: received.update(fraction=fraction, device=device))
        return received

    return make


def test_a_gpu_share_caps_torchs_memory_at_the_share_less_the_context(fake_trial):
    received = fake_trial(0.25)
    trainable._limit_to_trial_share("auto")
    assert received == {"threads": 1, "fraction": pytest.approx(0.25 - 0.5 / 24), "device": 0}


@pytest.mark.parametrize("share, device", [(1.0, "auto"), (2.0, "cuda"), (0.0, "auto"), (0.25, "cpu")])
def test_whole_gpus_no_gpu_and_cpu_trials_are_not_capped(fake_trial, share, device):
    received = fake_trial(share)
    trainable._limit_to_trial_share(device)
    assert received == {"threads": 1}


def test_a_gpu_share_without_cuda_refuses_to_start_naming_the_node(fake_trial):
    received = fake_trial(0.25, cuda=False)
    with pytest.raises(RuntimeError, match="holds 0.25 GPU") as raised:
        trainable._limit_to_trial_share("auto")
    message = str(raised.value)
    assert "node-abc123" in message and socket.gethostname() in message and "sees no CUDA" in message
    assert "\n" not in message and "fraction" not in received
    trainable._limit_to_trial_share("cpu")  # asked for the CPU: trains there, as told
