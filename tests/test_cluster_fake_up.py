"""A real ``ray up`` of cluster.yaml's cluster on this machine (latune.cluster.fake, latune.cluster.fake_node): Ray's
cluster launcher runs the head's setup and start commands, the head runs the MLflow server and Ray's autoscaler,
the autoscaler starts a GPU worker (Ray's fake multi-node provider: a node of processes with a logical GPU) when
the sweep, submitted with ``ray exec`` as README says, asks for GPUs; four trials share its one GPU (--gpu 0.25);
``ray down`` ends every process the cluster started.

Not run: anything of AWS (EC2, Docker, the image, SSH, S3), a physical GPU. The ports are cluster.yaml's own
(GCS 6379, object manager 8076, MLflow 5000); the test skips when another process holds one of them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from latune.cluster.fake_node import node_processes, stop_node

import psutil  # noqa: I001 -- after ray (imported above), which vendors it

from conftest import TINY

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
PORTS = {6379: "Ray's GCS", 8076: "Ray's object manager", 5000: "the MLflow server"}  # cluster.yaml's
FAKE_WORKER = "f" * 51  # Ray's fake provider's node ids: this, then 00000 (the head), 00001, ... (workers)


def _busy_ports() -> list[str]:
    busy = []
    for port, what in PORTS.items():
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                busy.append(f"{port} ({what})")
    return busy


def _ray(*args: str, log: Path, env: dict[str, str], timeout: float) -> float:
    """Run the `ray` CLI with its output in ``log`` (a file, not a pipe: the head's daemons inherit it); fail
    with the log's tail on a non-zero exit status. Returns the seconds it took."""
    started = time.monotonic()
    with log.open("w") as out:
        done = subprocess.run([RAY, *args], stdout=out, stderr=subprocess.STDOUT, env=env, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, f"ray {args[0]} exited {done.returncode}:\n{log.read_text()[-4000:]}"
    return time.monotonic() - started


def _mlflow_health(timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen("http://127.0.0.1:5000/health", timeout=2) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _cluster_processes(fake_dir: Path) -> dict[int, psutil.Process]:
    """The fake cluster's processes two ways: by its mark (latune.cluster.fake_node), and by a command line that
    names its folder (Ray's daemons: session and socket paths), so the check does not rest on the mark alone."""
    found = {p.pid: p for p in node_processes(str(fake_dir))}
    for process in psutil.process_iter(["cmdline"]):
        if str(fake_dir) in " ".join(process.info["cmdline"] or []):
            found.setdefault(process.pid, process)
    found.pop(psutil.Process().pid, None)
    return found


def test_ray_up_runs_a_sweep_on_autoscaled_fake_gpu_workers_and_ray_down_ends_it(monkeypatch):
    busy = _busy_ports()
    if busy:
        pytest.skip(f"cluster.yaml's ports are taken on this machine: {', '.join(busy)}")
    # short: Ray's Unix socket paths lie under it (pytest's tmp_path is too long for them)
    fake_dir = Path(tempfile.mkdtemp(prefix="latune-fake-", dir="/tmp"))
    config, logs = fake_dir / "cluster.yaml", fake_dir / "logs"
    logs.mkdir()
    subprocess.run([sys.executable, "-m", "latune.cluster", "fake-config", "--dir", str(fake_dir)], cwd=ROOT,
                   check=True, capture_output=True)
    # the head's commands inherit this environment (as a node's image sets its own): RAY_FAKE_CLUSTER, which Ray's
    # fake provider requires; no MLflow job runner (seven processes that tracking does not use, on 2 cores)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    # AUTOSCALER_UPDATE_INTERVAL_S: the head's autoscaler looks every second, not every 5 s (as Ray's own
    # AutoscalingCluster tests do)
    env.update(RAY_FAKE_CLUSTER="1", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", AUTOSCALER_UPDATE_INTERVAL_S="1")
    seconds: dict[str, float] = {}
    before_down: dict[int, psutil.Process] = {}
    try:
        # 1. ray up: the launcher creates the head, syncs the checkout, runs the setup and start commands
        seconds["ray up"] = _ray("up", "-y", str(config), log=logs / "up.log", env=env, timeout=300)
        head = fake_dir / "head"
        assert (head / "latune" / "pyproject.toml").is_file() and not (head / "latune" / ".git").exists()
        assert (head / "ray_bootstrap_config.yaml").is_file()
        raylets = [p for p in _cluster_processes(fake_dir).values() if p.name() == "raylet"]
        assert len(raylets) == 1, "more than the head's raylet before any trial asked for a GPU"

        # 2. the head's MLflow server answers
        assert _mlflow_health(timeout=60) == "OK"

        # 3.-5. the sweep, on the head as README says; four trials of a quarter GPU each
        name = "fake-up"
        sweep = ["cd ~/latune && python -m latune.sweep pareto --num-samples 4 --gpu 0.25 --no-early-stopping",
                 f"--name {name} --verbose 1 --set device=cpu", *[f"--set {pair}" for pair in TINY]]
        seconds["sweep"] = _ray("exec", str(config), " ".join(sweep), log=logs / "sweep.log", env=env, timeout=420)

        # all four held their quarter of a GPU at once (Tune's RUNNING: resources acquired)
        assert "4 running" in (logs / "sweep.log").read_text()
        # the autoscaler started one gpu_1x worker (1 GPU, 4 CPUs), no other node, when the trials asked
        monitor = (fake_dir / "tmp" / "ray" / "session_latest" / "logs" / "monitor.log").read_text()
        assert monitor.count("Adding 1 node(s) of type gpu_1x") == 1, "\n".join(
            line for line in monitor.splitlines() if "Adding" in line or "Launch" in line)
        assert "of type gpu_4x" not in monitor

        # 6. results.parquet and MLflow hold every trial; all four ran on that worker, sharing its one GPU
        table = pd.read_parquet(fake_dir / "bucket" / "latune" / "runs" / name / "results.parquet")
        assert len(table) == 4 and set(table["status"]) == {"TERMINATED"}, table[["trial_id", "status", "error"]]
        [worker] = set(table["node_id"])
        assert worker.startswith(FAKE_WORKER) and worker != FAKE_WORKER + "00000", worker  # not the head
        from mlflow.tracking import MlflowClient

        client = MlflowClient("http://127.0.0.1:5000")
        runs = client.search_runs([client.get_experiment_by_name("pareto").experiment_id])
        [parent] = [r for r in runs if r.data.tags.get("latune.role") == "sweep"]
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        assert sorted(r.data.tags["latune.trial_id"] for r in children) == sorted(table["trial_id"])
        assert {r.info.status for r in children} == {"FINISHED"}

        before_down = _cluster_processes(fake_dir)
        names = [p.name() for p in before_down.values()]
        assert names.count("raylet") == 2 and names.count("gcs_server") == 1, names  # the head and the worker
    finally:
        # 7. ray down: nothing of the cluster is left (the head's `ray` stops only this cluster's Ray)
        try:
            seconds["ray down"] = _ray("down", "-y", str(config), log=logs / "down.log", env=env, timeout=180)
        finally:
            left = _cluster_processes(fake_dir)
            if left:  # never leave them running, whatever failed; by the mark only, nothing else of the machine
                stop_node(str(fake_dir), ray_only=False, grace_s=2)
            print(f"fake cluster: {', '.join(f'{k} {v:.0f} s' for k, v in seconds.items())}")
    assert not left, [(p.pid, p.name()) for p in left.values()]
    assert before_down and not [p for p in before_down.values() if p.is_running()]
    shutil.rmtree(fake_dir, ignore_errors=True)
