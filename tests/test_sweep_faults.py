"""Fault tolerance of sweeps with real Ray Tune: Ctrl+C and --resume through the CLI, resuming a sweep that was
interrupted before Tune saved any state, and a two-node cluster with fractional (logical) GPUs.

What Tune 2.x does on SIGINT: its handler stops the trial loop, saves the experiment state one last time
(experiment_state-*.json: each trial's status and latest checkpoint) and ``Tuner.fit`` returns; latune then exits
130. ``Tuner.restore(resume_unfinished=True)`` restarts each unfinished trial from its latest checkpoint and
*appends* to its result.json, so a trial interrupted after epoch k has result.json epochs 1..k from the first run
followed by k+1..N with ``iterations_since_restore`` starting again at 1. (Tune takes a reported checkpoint in a
second round-trip to the actor after processing the result; a stop between the two leaves epoch k recorded but
its checkpoint not, and the resumed trial redoes epoch k.) A Ctrl+C before ``Tuner.fit`` installed that handler
is a KeyboardInterrupt, which latune also turns into exit 130.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import yaml

TINY_BASE = {"data.limit_train": 128, "eval.max_images": 64, "eval.steps": 5, "attack.steps": 2}
OBJECTIVES = ("clean_acc", "robust_acc", "robust_class_error_sd")


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """Sweeps run in tmp_path (./runs lands there, for the CLI subprocesses too). MLflow logging is off in these
    tests (--no-mlflow): it is not what they are about, and its store setup costs seconds per run."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def _write_sweep(folder: Path, space: dict, epochs: int, resources: dict | None = None, *, base: dict | None = None,
                 search: dict | None = None) -> Path:
    path = folder / "faults.yaml"
    path.write_text(yaml.safe_dump({
        "name": "faults", "description": "fault-tolerance test sweep",
        "base": {**TINY_BASE, "optim.epochs": epochs, **(base or {})}, "space": space,
        "search": {"algorithm": "grid", **(search or {})}, "resources": resources or {"cpu": 1, "gpu": 0}}))
    return path


def _start(sweep: Path, *args: str, cwd: Path, log: Path, tracking_uri: str | None = None) -> subprocess.Popen:
    """The sweep CLI in its own session; MLflow off unless ``tracking_uri``."""
    tracking = ["--tracking-uri", tracking_uri] if tracking_uri else ["--no-mlflow"]
    command = [sys.executable, "-m", "latune.sweep", str(sweep), "--verbose", "0", *tracking, *args]
    return subprocess.Popen(command, cwd=cwd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float) -> int:
    """Wait for the sweep; on timeout kill its process group (its own Ray processes) and fail."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"sweep (pid {proc.pid}) did not exit within {timeout}s")


def _run(sweep: Path, *args: str, cwd: Path, log: Path, timeout: float = 240, tracking_uri: str | None = None) -> int:
    return _finish(_start(sweep, *args, cwd=cwd, log=log, tracking_uri=tracking_uri), timeout)


def _wait_until(condition, proc: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"sweep exited ({proc.returncode}) before the interrupt:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"gave up waiting after {timeout}s:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def _reports(trial_dir: Path) -> list[dict]:
    """What Tune's driver recorded for a trial (one line per processed report)."""
    path = trial_dir / "result.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _only_experiment(tmp_path: Path) -> Path:
    experiments = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert len(experiments) == 1, experiments
    return experiments[0]


def _log(*logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in logs if p.exists())


@pytest.mark.slow
def test_interrupt_and_resume(tmp_path):
    sweep = _write_sweep(tmp_path, {"la.delta": [0.0, 0.1], "seed": [0, 1]}, epochs=3)
    first_log, resume_log = tmp_path / "first.log", tmp_path / "resume.log"
    proc = _start(sweep, cwd=tmp_path, log=first_log)

    def some_trial_reported() -> bool:  # the driver processed a report (and so registered its checkpoint)
        return any(_reports(d) for d in (tmp_path / "runs").glob("*/train_trial_*"))

    _wait_until(some_trial_reported, proc, first_log)
    time.sleep(0.2)  # let Tune take that report's checkpoint too (milliseconds; an epoch takes about a second)
    proc.send_signal(signal.SIGINT)  # once, to the driver only: Tune's handler stops and saves the state
    assert _finish(proc, timeout=120) == 130, _log(first_log)
    experiment = _only_experiment(tmp_path)
    assert list(experiment.glob("experiment_state-*.json")), "Tune saved no state on SIGINT"
    first = pd.read_parquet(experiment / "results.parquet")
    assert (first["status"] == "UNFINISHED").any(), first
    before = {d.name: _reports(d) for d in experiment.glob("train_trial_*")}

    assert _run(sweep, "--resume", cwd=tmp_path, log=resume_log) == 0, _log(first_log, resume_log)
    assert _only_experiment(tmp_path) == experiment  # --resume picked the interrupted experiment

    table = pd.read_parquet(experiment / "results.parquet")
    assert len(table) == 4 and table["trial_id"].is_unique, table[["trial_id", "status"]]
    assert set(table["status"]) == {"TERMINATED"}, table[["trial_id", "status", "error"]]
    assert set(table["epochs_done"]) == {3}
    assert set(zip(table["la.delta"], table["seed"])) == {(0.0, 0), (0.1, 0), (0.0, 1), (0.1, 1)}
    assert set(first["trial_id"]) <= set(table["trial_id"])  # resumed the same trials, made no new ones

    trial_dirs = sorted(experiment.glob("train_trial_*"))
    assert len(trial_dirs) == 4, trial_dirs
    continued_from = []
    for trial_dir in trial_dirs:
        reports = _reports(trial_dir)
        for report in reports:
            assert all(isinstance(report.get(m), float) for m in OBJECTIVES), report
            assert report["training_iteration"] == report["epoch"]
        earlier = before.get(trial_dir.name, [])
        assert reports[:len(earlier)] == earlier  # Tune appended; what the first run recorded is untouched
        assert [r["epoch"] for r in earlier] == list(range(1, len(earlier) + 1))
        later = reports[len(earlier):]
        if not later:  # finished before the interrupt: not rerun
            assert len(earlier) == 3, (trial_dir.name, reports)
            continue
        # the resumed run starts once (iterations since the restore count from 1) at the epoch after the
        # trial's latest registered checkpoint and goes on to the end, each epoch once
        start = later[0]["epoch"]
        assert [r["epoch"] for r in later] == list(range(start, 4)), (trial_dir.name, reports)
        assert [r["iterations_since_restore"] for r in later] == list(range(1, 4 - start + 1))
        # normally start = k + 1 after k recorded epochs; k when the loop stopped between epoch k's result and
        # its checkpoint (Tune takes the checkpoint in a second round-trip to the actor); never earlier
        k = len(earlier)
        assert start in (k + 1, k) and start >= 1, (trial_dir.name, k, start)
        if start > 1:
            assert earlier[start - 2]["checkpoint_dir_name"], earlier[start - 2]
            continued_from.append(start - 1)
    assert continued_from, f"no trial continued from a checkpoint (reports before the interrupt: {before})"


# what a trial's reports must repeat exactly when it is resumed (timings and Ray's bookkeeping differ)
DETERMINISTIC = ("train_loss", "train_acc", "lr", "eval_epoch", *OBJECTIVES)


@pytest.mark.slow
def test_resume_leaves_finished_trials_alone_and_carries_validation_over(tmp_path):
    """Two identical trials (num_samples 2), one at a time, with validation only at epochs 1 and 6 (eval.every 6):
    epochs 2-5 report epoch 1's validation metrics. Ctrl+C once the first trial finished and the second reported
    epoch 1; then --resume. The finished trial is not run again: its result.json is byte-identical and its MLflow
    run has each epoch once. The resumed trial reports exactly what its uninterrupted twin reported, carried-over
    validation metrics included (a resumed run must not evaluate early)."""
    from mlflow import MlflowClient

    epochs = 6
    sweep = _write_sweep(tmp_path, {}, epochs=epochs, base={"eval.every": epochs},
                         search={"num_samples": 2, "max_concurrent": 1})
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first_log, resume_log = tmp_path / "first.log", tmp_path / "resume.log"
    proc = _start(sweep, cwd=tmp_path, log=first_log, tracking_uri=uri)

    def trials() -> dict[int, list[Path]]:  # trial folders by the number of epochs they reported
        found: dict[int, list[Path]] = {}
        for folder in (tmp_path / "runs").glob("*/train_trial_*"):
            found.setdefault(len(_reports(folder)), []).append(folder)
        return found

    # one trial at a time: the second reports only after the first finished
    _wait_until(lambda: epochs in trials() and any(0 < n < epochs for n in trials()), proc, first_log)
    time.sleep(0.2)  # let Tune take the second trial's checkpoint of that report too
    proc.send_signal(signal.SIGINT)
    assert _finish(proc, timeout=180) == 130, _log(first_log)
    [finished] = trials()[epochs]
    [stopped] = [folder for n, folders in trials().items() if n < epochs for folder in folders]
    finished_bytes = (finished / "result.json").read_bytes()
    before = _reports(stopped)

    assert _run(sweep, "--resume", cwd=tmp_path, log=resume_log, tracking_uri=uri) == 0, _log(first_log, resume_log)
    experiment = _only_experiment(tmp_path)
    table = pd.read_parquet(experiment / "results.parquet")
    assert len(table) == 2 and set(table["status"]) == {"TERMINATED"}, table[["trial_id", "status", "error"]]
    assert (finished / "result.json").read_bytes() == finished_bytes  # the finished trial was left alone

    twin = _reports(finished)
    reports = _reports(stopped)
    later = reports[len(before):]
    assert reports[:len(before)] == before and later, reports
    resumed_at = later[0]["epoch"]
    assert 2 <= resumed_at < epochs, f"resumed at epoch {resumed_at}: no carried-over epoch was resumed; retime"
    final = {r["epoch"]: r for r in reports}  # a redone epoch: its latest report counts
    assert sorted(final) == list(range(1, epochs + 1))
    for straight in twin:
        again = final[straight["epoch"]]
        assert {k: again[k] for k in DETERMINISTIC} == {k: straight[k] for k in DETERMINISTIC}, straight["epoch"]
    assert [r["eval_epoch"] for r in twin] == [1] * (epochs - 1) + [epochs]  # validation at epochs 1 and 6 only
    tests = [k for k in twin[-1] if k.startswith("test_") and isinstance(twin[-1][k], float)
             and not k.endswith("_time_s")]  # the test evaluation's seconds differ run to run
    assert tests and {k: final[epochs][k] for k in tests} == {k: twin[-1][k] for k in tests}

    client = MlflowClient(uri)
    runs = [r for r in client.search_runs([client.get_experiment_by_name("faults").experiment_id])
            if "latune.trial_id" in r.data.tags]
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        for metric in ("epoch", "robust_acc", "train_loss"):
            steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
            assert sorted(steps) == list(range(1, epochs + 1)), (run.data.tags["latune.trial_id"], metric, steps)


def _prune_to_tuner_pkl(experiment: Path) -> None:
    """Leave what Tune writes before it saves any state: tuner.pkl (and its storage marker)."""
    import shutil

    for path in experiment.iterdir():
        if path.name not in ("tuner.pkl", ".validate_storage_marker"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()


@pytest.mark.slow
def test_resume_before_first_trial(tmp_path):
    """--resume of a sweep interrupted before Tune saved experiment state runs the whole sweep afresh.

    empty: nothing but the experiment folder (``Tuner.can_restore`` is False).
    tuner_pkl: Ctrl+C as soon as the folder appears. Tune has then written tuner.pkl but no
    experiment_state-*.json (when the signal comes a little later, the files Tune wrote after tuner.pkl are
    removed to get that state). ``Tuner.can_restore`` is True there, but ``Tuner.restore`` from it restarts
    without the param space: one trial of the default config instead of the sweep.
    Both --resume runs are in-process (``main``, the CLI without a second interpreter), sharing one local Ray.
    """
    import ray

    from latune.cli.sweep import main

    sweep = _write_sweep(tmp_path, {"la.delta": [0.0, 0.1]}, epochs=1)
    (tmp_path / "empty" / "faults-digits-early").mkdir(parents=True)
    first_log = tmp_path / "first.log"
    proc = _start(sweep, "--storage", "tuner_pkl", cwd=tmp_path, log=first_log)
    _wait_until(lambda: bool(list((tmp_path / "tuner_pkl").glob("*/tuner.pkl"))), proc, first_log)
    proc.send_signal(signal.SIGINT)
    assert _finish(proc, timeout=120) == 130, _log(first_log)  # interrupted, whoever caught the signal
    [interrupted] = (tmp_path / "tuner_pkl").iterdir()
    _prune_to_tuner_pkl(interrupted)

    try:
        assert main([str(sweep), "--resume", "--name", "faults-digits-early", "--storage", "empty",
                     "--verbose", "0", "--no-mlflow"]) == 0
        assert main([str(sweep), "--resume", "--storage", "tuner_pkl", "--verbose", "0", "--no-mlflow"]) == 0
    finally:
        ray.shutdown()
    for experiment in (tmp_path / "empty" / "faults-digits-early", interrupted):
        assert [p.parent for p in tmp_path.glob(f"{experiment.parent.name}/*/results.parquet")] == [experiment]
        table = pd.read_parquet(experiment / "results.parquet")
        assert len(table) == 2 and table["trial_id"].is_unique, table
        assert set(table["status"]) == {"TERMINATED"}, table[["trial_id", "status", "error"]]
        assert sorted(table["la.delta"]) == [0.0, 0.1]  # the sweep's own trials, not Tune's default one
        assert set(table["epochs_done"]) == {1} and set(table["data.limit_train"]) == {128}


@pytest.mark.slow
def test_two_node_cluster_with_fractional_gpus(tmp_path):
    """Head + worker node, 1 CPU and 1 logical GPU each; trials of 0.5 CPU + 0.5 GPU pack 2 per GPU (torch
    sees no CUDA: the GPUs are Ray resources only, so the trials say device cpu; with auto a trial holding a GPU
    share without CUDA refuses to start), so the 4 trials run 2 on each node."""
    import ray
    from ray.cluster_utils import Cluster

    from latune.sweep.run import plan_resources, run_sweep
    from latune.sweep.spec import load_sweep

    spec = load_sweep(str(_write_sweep(tmp_path, {"la.delta": [0.0, 0.1], "seed": [0, 1]}, epochs=1,
                                       resources={"cpu": 0.5, "gpu": 0.5}, base={"device": "cpu"})))
    node_args = {"num_cpus": 1, "num_gpus": 1, "object_store_memory": 80 * 1024**2}
    cluster = Cluster(initialize_head=True, head_node_args={**node_args, "include_dashboard": False})
    try:
        cluster.add_node(**node_args)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        assert plan_resources(spec, ray.cluster_resources()) == (0.5, 0.5, 4)
        nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
        assert len(nodes) == 2

        outcome = run_sweep(spec, storage=str(tmp_path / "runs"), address=cluster.address, verbose=0,
                            mlflow=False)
    finally:
        ray.shutdown()
        cluster.shutdown()

    table = outcome.table
    assert len(table) == 4 and set(table["status"]) == {"TERMINATED"}, table[["trial_id", "status", "error"]]
    assert not outcome.interrupted
    per_node = Counter(table["node_id"])
    assert set(per_node) == nodes and sorted(per_node.values()) == [2, 2], per_node  # 2 trials per logical GPU
    assert pd.read_parquet(outcome.results_path)["node_id"].nunique() == 2
