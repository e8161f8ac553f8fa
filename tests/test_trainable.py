"""The Ray Tune trainable with real Tune (in-process), and the resource planning of sweeps."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from latune.config import ConfigError, from_flat
from latune.sweep.run import plan_resources
from latune.sweep.spec import SweepSpec

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
