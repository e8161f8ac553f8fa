"""latune.cluster.doctor and ``python -m latune.cluster doctor`` on this machine (no GPU): the GPU is reported
missing and the exit status is 2; a local folder as storage and a real ``mlflow server`` on 127.0.0.1 pass, and
fail with their fix when broken; nvidia-smi's output is read from a stand-in on PATH; --gpu worker runs the node
checks as a Ray task on a local cluster with a logical GPU. The GPUs a node type declares, nvidia-smi lists and Ray
offers are compared; a check that raises is a FAIL row with the exception's one line, never a traceback."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from _mlflow_helpers import clean_env, free_port
from latune.cluster import doctor
from latune.cli.cluster import main
from latune.cluster.doctor import (Check, gpu_check, guarded, mlflow_check, ray_resources_check, storage_check,
                                   torch_cuda_check, versions_check)


# mlflow_server: the session's real ``mlflow server`` on 127.0.0.1 (conftest.py; its start is most of this file's
# time, so the tests that need it are marked slow)


@pytest.fixture
def mlflow_url(mlflow_server):
    return mlflow_server.url


def _doctor(*args: str, env: dict | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "latune.cluster", "doctor", *args], capture_output=True, text=True,
                          timeout=timeout, env=env or clean_env())


def _row(output: str, name: str, worker: bool = False) -> str:
    """The table row of check ``name``, of this node or (``worker``) of the GPU worker ("name @ IP")."""
    [line] = [line for line in output.splitlines() if line.split()[1:2] == [name] and (" @ " in line) == worker]
    return line


@pytest.mark.slow
def test_doctor_on_this_machine_reports_no_gpu_and_exits_2(tmp_path, mlflow_url):
    done = _doctor("--storage", (tmp_path / "store").as_uri(), "--tracking-uri", mlflow_url)
    assert done.returncode == 2, done.stdout + done.stderr
    assert _row(done.stdout, "gpu").startswith("FAIL") and "no NVIDIA GPU on this node" in done.stdout
    assert "fix: on the CPU head run `doctor --gpu worker`" in done.stdout
    assert _row(done.stdout, "torch").startswith("skip") and "built for CUDA" in _row(done.stdout, "torch")
    versions = _row(done.stdout, "versions")
    assert "ray 2." in versions and "latune " in versions and "torch 2." in versions
    assert _row(done.stdout, "storage").startswith("ok") and _row(done.stdout, "mlflow").startswith("ok")
    assert "artifact written/read/deleted" in done.stdout
    assert done.stderr.strip().splitlines()[-1] == "error: 1 check(s) failed: gpu"
    assert list((tmp_path / "store").iterdir()) == []  # the test object is gone, and its folder


@pytest.mark.slow
def test_doctor_without_gpu_checks_exits_0_when_the_rest_passes(tmp_path, mlflow_url):
    done = _doctor("--gpu", "none", "--storage", (tmp_path / "store").as_uri(), "--tracking-uri", mlflow_url)
    versions_ok = _row(done.stdout, "versions").startswith("ok")  # this environment against constraints.txt
    assert done.returncode == (0 if versions_ok else 2), done.stdout + done.stderr
    assert _row(done.stdout, "gpu").startswith("skip") and "--gpu none" in done.stdout
    if versions_ok:
        assert done.stdout.strip().splitlines()[-1] == "all checks passed (2 skipped)" and done.stderr == ""


def test_doctor_takes_storage_and_tracking_uri_from_the_environment(tmp_path):
    env = clean_env(LATUNE_STORAGE=(tmp_path / "env-store").as_uri(),
                    MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    done = _doctor("--gpu", "none", env=env)
    assert done.returncode == 2
    assert _row(done.stdout, "storage").startswith("ok") and "env-store" in done.stdout
    assert _row(done.stdout, "mlflow").startswith("FAIL") and "Connection refused" in done.stdout
    assert "fix: start the server" in done.stdout


def test_storage_check_round_trip_and_failure(tmp_path):
    ok = storage_check((tmp_path / "runs").as_uri())
    assert ok.ok is True and "wrote, read back and deleted" in ok.detail
    (tmp_path / "file").write_text("not a folder")
    failed = storage_check((tmp_path / "file" / "runs").as_uri())
    assert failed.ok is False and "writable" in failed.fix
    assert storage_check(None).ok is None


@pytest.mark.slow
def test_mlflow_check_passes_on_a_real_server_and_fails_on_a_closed_port(mlflow_server):
    ok = mlflow_check(mlflow_server.url)
    assert ok.ok is True and "server healthy" in ok.detail
    closed = mlflow_check(f"http://127.0.0.1:{free_port()}")
    assert closed.ok is False and "ray attach cluster.yaml -p 5000" in closed.fix
    store = mlflow_check(mlflow_server.backend)  # a local store (the server's, already made): searched directly
    assert store.ok is True and "experiment(s) listed" in store.detail
    assert mlflow_check(None).ok is None


def _fake_nvidia_smi(folder: Path, output: str, status: int = 0) -> dict:
    script = folder / "nvidia-smi"
    script.write_text(f"#!/bin/sh\ncat <<'EOF'\n{output}\nEOF\nexit {status}\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}


def test_gpu_check_reads_model_and_driver_from_nvidia_smi(tmp_path, monkeypatch):
    for name, value in _fake_nvidia_smi(tmp_path, "NVIDIA A10G, 23028 MiB, 580.65.06\n"
                                                  "NVIDIA A10G, 23028 MiB, 580.65.06").items():
        monkeypatch.setenv(name, value)
    found = gpu_check()
    assert found == Check("gpu", True, "2 x NVIDIA A10G 23028 MiB, driver 580.65.06")
    assert doctor._driver(found) == "580.65.06"


def test_gpu_check_reports_a_driver_that_does_not_answer(tmp_path, monkeypatch):
    for name, value in _fake_nvidia_smi(tmp_path, "NVIDIA-SMI has failed because it couldn't communicate with the "
                                                  "NVIDIA driver.", status=9).items():
        monkeypatch.setenv(name, value)
    found = gpu_check()
    assert found.ok is False and "couldn't communicate with the NVIDIA driver" in found.detail and found.fix


def test_torch_cuda_check_names_a_driver_too_old_for_torchs_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    found = torch_cuda_check("535.183.01")
    assert found.ok is False and "driver 535.183.01 is older than CUDA 13.0 needs (>= 580.65.06)" in found.detail
    assert "Deep Learning Base OSS Nvidia Driver GPU AMI" in found.fix
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "CPU-only build" in torch_cuda_check("580.65.06").detail


def test_versions_check_compares_every_pin(tmp_path):
    import importlib.metadata

    lock = tmp_path / "constraints.txt"
    lock.write_text(f"# a comment\nPyYAML=={importlib.metadata.version('pyyaml')}\n")
    assert versions_check(lock).ok is True and "all 1 pins" in versions_check(lock).detail
    lock.write_text(lock.read_text() + "pyyaml-not-installed==1.0\nnumpy==0.0.1\n")
    found = versions_check(lock)
    assert found.ok is False and "2 of 3 pins" in found.detail
    assert "pyyaml-not-installed missing (lock: 1.0)" in found.detail and "(lock: 0.0.1)" in found.detail
    assert "Dockerfile" in found.fix


def test_ray_resources_check_compares_declared_listed_and_offered_gpus():
    ok = ray_resources_check(("gpu_4x", 4.0), 4, (4.0, 6.0))
    assert ok.ok is True
    assert ok.detail == "node type gpu_4x declares 4, nvidia-smi lists 4, Ray offers 4 (the cluster: 6)"
    no_gpus_option = ray_resources_check(("gpu_1x", 1.0), 0, (1.0, 1.0))
    assert no_gpus_option.ok is False and "GPUs disagree" in no_gpus_option.detail
    assert "--gpus all" in no_gpus_option.fix
    assert ray_resources_check(None, 1, (0.0, 0.0)).ok is False  # Ray started before the GPU was visible
    assert ray_resources_check(("gpu_1x", 1.0), 1, None).ok is True  # Ray not reachable: declared against listed
    skipped = ray_resources_check(None, 0, None)
    assert skipped.ok is None and "nothing" not in skipped.detail and "no node type" in skipped.detail


def test_declared_gpus_of_this_node_type(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_NODE_TYPE_NAME", "gpu_1x")
    assert doctor._declared_here({"head": 0.0, "gpu_1x": 1.0}) == ("gpu_1x", 1.0)
    monkeypatch.delenv("RAY_NODE_TYPE_NAME")
    bootstrap = tmp_path / "ray_bootstrap_config.yaml"  # on the head: the config `ray up` left there
    bootstrap.write_text("head_node_type: head\navailable_node_types:\n  head: {resources: {CPU: 0}}\n"
                         "  gpu_4x: {resources: {CPU: 48, GPU: 4}}\n")
    monkeypatch.setattr(doctor, "BOOTSTRAP_CONFIG", str(bootstrap))
    assert doctor._declared_here(None) == ("head", 0.0)
    assert doctor.declared_gpus(doctor._bootstrap_config()) == {"head": 0.0, "gpu_4x": 4.0}
    monkeypatch.setattr(doctor, "BOOTSTRAP_CONFIG", str(tmp_path / "none.yaml"))
    assert doctor._declared_here(None) is None


def test_no_ray_is_reached_without_an_address():
    assert doctor._ray_gpus(None) is None and doctor._ray_gpus("local") is None


def _raises(error: BaseException):
    def check(*args):
        raise error
    return check


def test_a_check_that_raises_is_a_fail_row_with_one_line():
    found = guarded("versions", _raises(RuntimeError("torch\n  version")))
    assert found == Check("versions", False, "RuntimeError: torch version", found.fix) and found.fix
    assert guarded("gpu", lambda: Check("gpu", True, "fine")).ok is True


@pytest.mark.parametrize("gpu", ["here", "worker"])
def test_doctor_reports_every_check_that_raises_as_a_fail_row(gpu, monkeypatch, capsys):
    for name, error in (("gpu_check", OSError("no device")), ("torch_cuda_check", RuntimeError("CUDA init")),
                        ("_ray_gpus", ValueError("GPU resource")), ("versions_check", KeyError("ray")),
                        ("storage_check", TypeError("bad URI")), ("mlflow_check", ZeroDivisionError("division")),
                        ("on_gpu_worker", AttributeError("task"))):
        monkeypatch.setattr(doctor, name, _raises(error))
    monkeypatch.delenv("RAY_NODE_TYPE_NAME", raising=False)
    assert main(["doctor", "--gpu", gpu, "--address", "127.0.0.1:1", "--wait", "1"]) == 2
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    expected = {"versions": "KeyError: 'ray'", "storage": "TypeError: bad URI", "mlflow": "ZeroDivisionError: division"}
    expected.update({"gpu": "OSError: no device", "torch cuda": "RuntimeError: CUDA init",
                     "ray resources": "ValueError: GPU resource"} if gpu == "here" else
                    {"gpu worker": "AttributeError: task"})
    rows = {line[6:].split("  ")[0].strip(): line for line in out.splitlines() if line.startswith("FAIL")}
    assert set(rows) == set(expected), out
    assert all(detail in rows[name] for name, detail in expected.items()), out
    assert err.strip().splitlines()[-1] == f"error: {len(expected)} check(s) failed: {', '.join(rows)}"


@pytest.mark.slow
def test_gpu_worker_mode_runs_the_node_checks_as_a_ray_task(tmp_path):
    """A local Ray cluster without a GPU: the doctor gives up after --wait, naming where to look. Then a node with
    a logical GPU (no real one) joins: the task lands there and its checks come back named after the node."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "object_store_memory": 80 * 1024**2})
    try:
        done = _doctor("--gpu", "worker", "--address", cluster.address, "--wait", "2")
        assert done.returncode == 2 and "no GPU worker ran the checks within 2 s" in done.stdout
        assert "ray monitor cluster.yaml" in done.stdout
        cluster.add_node(num_cpus=0, num_gpus=1, object_store_memory=80 * 1024**2)
        done = _doctor("--gpu", "worker", "--address", cluster.address, "--storage", (tmp_path / "s").as_uri())
        assert done.returncode == 2, done.stdout + done.stderr
        assert "waiting up to 1200 s for a GPU worker" in done.stderr
        assert "no NVIDIA GPU on this node" in _row(done.stdout, "gpu", worker=True)  # the "worker" has no nvidia-smi
        assert _row(done.stdout, "storage", worker=True).startswith("ok")
        assert _row(done.stdout, "storage").startswith("ok")  # and on the head
        assert _row(done.stdout, "mlflow").startswith("skip")  # the MLflow check runs where the doctor runs
    finally:
        cluster.shutdown()
