"""Helpers of the MLflow tests: a real ``mlflow server`` process, and a Tune experiment folder written by hand."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from latune.tracking.records import SweepInfo

OBJECTIVES = {"clean_acc": "max", "robust_acc": "max", "robust_class_error_sd": "min"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for subprocesses: no tracking URI inherited, and Ray never joins a cluster that
    another process on this machine started (Ray otherwise attaches to the latest local one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(RAY_ADDRESS="local", **extra)
    return env


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a sqlite backend and proxied artifacts under ``root``; stop() and
    start() again keep the port and the backend (a restarted tracking server)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backend = f"sqlite:///{root / 'mlflow.db'}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", self.backend,
                   "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts"),
                   "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
        log = open(self.root / "server.log", "ab")
        # its own session: stop() ends the server and its worker processes, and nothing else; no job runner
        # (seven more processes for GenAI jobs that tracking does not use)
        self.process = subprocess.Popen(command, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True,
                                        env=clean_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"))
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.root / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"mlflow server not healthy after {timeout} s")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Signal the server's process group, give it 5 s, then kill whatever of the group is left."""
        if self.process is None:
            return
        for signal_, wait in ((sig, 5), (signal.SIGKILL, 20)):
            try:
                os.killpg(self.process.pid, signal_)
            except ProcessLookupError:
                break
            try:
                self.process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass

    def kill(self) -> None:
        """Die as a crashed server does: no shutdown, connections refused from now on."""
        self.stop(signal.SIGKILL)


def _result(trial_id: str, epoch: int, clean: float, robust: float, sd: float, stamp: float) -> dict:
    """One line of Tune's result.json, as latune's trainable reports it (with Ray's bookkeeping)."""
    return {"epoch": epoch, "train_loss": 2.0 / epoch, "clean_acc": clean, "robust_acc": robust,
            "robust_class_error_sd": sd, "clean_class_error": [1 - clean] * 3, "robust_class_error": [1 - robust] * 3,
            "timestamp": stamp, "trial_id": trial_id, "training_iteration": epoch, "pid": 4242, "time_total_s": 1.5,
            "node_ip": "10.0.0.7", "config": {"la.delta": 0.1}, "done": False}


def fake_sweep(root: Path, trials: dict[str, dict], *, name: str = "fake", epochs: int = 2) -> Path:
    """A Tune experiment folder as a latune sweep leaves it, without running one. ``trials`` maps a trial
    id (``abcde_00000``) to ``{"delta": δ, "scores": [(clean, robust, sd) per reported epoch],
    "error": text or None}``. Returns the folder."""
    folder = root / f"{name}-digits-20260101-000000"
    folder.mkdir(parents=True)
    SweepInfo(name=name, experiment_path=str(folder), objectives=dict(OBJECTIVES), data="digits",
              searched=("la.delta",), base={"data.name": "digits", "optim.epochs": epochs},
              search={"algorithm": "grid"}, sweep_text=f"name: {name}\n", mlflow_experiment=name).save()
    start = time.time() - 3600
    for index, (trial_id, spec) in enumerate(trials.items()):
        trial = folder / f"train_trial_{trial_id}_{index}_la_delta={spec['delta']:.4f}_2026-01-01_00-00-00"
        trial.mkdir()
        params = {"data.name": "digits", "optim.epochs": str(epochs), "la.delta": spec["delta"]}
        (trial / "params.json").write_text(json.dumps(params))
        lines = [_result(trial_id, epoch, *scores, start + 60 * index + epoch)
                 for epoch, scores in enumerate(spec["scores"], start=1)]
        (trial / "result.json").write_text("".join(json.dumps(line) + "\n" for line in lines))
        if spec.get("error"):
            (trial / "error.txt").write_text(spec["error"])
    return folder
