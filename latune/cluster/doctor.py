"""Checks a cluster node can run latune's sweeps: the GPU and its driver, torch's CUDA, the versions of the lock,
the shared storage and the MLflow server. Run on a node (``ray exec cluster.yaml 'python -m latune.cluster doctor'``).

Each check returns a Check: passed (ok True), failed (ok False, with the fix), or skipped (ok None: nothing to
check, e.g. no storage URI given); a check that raises is a failed Check too (guarded), never a traceback that
hides the other rows. torch, ray, mlflow and pyarrow are imported inside the checks that need them. The GPU checks
(nvidia-smi, torch's CUDA, the GPUs Ray offers) can also run on a GPU worker, as a Ray task asking for a small
share of a GPU, from the head (which has none): on_gpu_worker().
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from latune.cluster.autoscaler import BOOTSTRAP_CONFIG

__all__ = ["Check", "MIN_DRIVER", "failure", "guarded", "gpu_check", "torch_cuda_check", "ray_resources_check",
           "declared_gpus", "versions_check", "storage_check", "mlflow_check", "node_checks", "on_gpu_worker"]

# The oldest Linux NVIDIA driver each CUDA major version runs on (NVIDIA's CUDA compatibility table; minor
# version compatibility lets every 12.x and 13.x build run on the driver of its .0 release).
MIN_DRIVER: dict[int, str] = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
_AMI = "the newest Deep Learning Base OSS Nvidia Driver GPU AMI (cluster.yaml ImageId)"


@dataclass(frozen=True)
class Check:
    """The outcome of one check."""

    name: str  # what was checked, e.g. "gpu"
    ok: bool | None  # True passed, False failed, None skipped
    detail: str  # what was found, one line
    fix: str = ""  # what to do when it failed


def failure(name: str, err: BaseException) -> Check:
    """The failed Check ``name`` for an exception a check raised: its type and message, on one line."""
    return Check(name, False, f"{type(err).__name__}: {' '.join(str(err).split())[:300]}",
                 "the check itself raised: the line above is its error; report it with this node's details")


def guarded(name: str, check: Callable[..., Check], *args: Any) -> Check:
    """``check(*args)``, or failure(name, the exception) when it raises: a doctor reports every row, and an
    exception in one check (a bug, a node in a state nobody foresaw) is a finding."""
    try:
        return check(*args)
    except Exception as err:  # noqa: BLE001 -- whatever a check raises becomes its row
        return failure(name, err)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


def gpu_check() -> Check:
    """The NVIDIA GPUs and driver this node (container) sees, from ``nvidia-smi``."""
    fix = ("on the CPU head run `doctor --gpu worker` (the GPU checks then run on a GPU worker) or `--gpu none`; "
           f"on a GPU node: {_AMI}, and the GPUs passed to the container (docker.worker_run_options: --gpus all)")
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        return Check("gpu", False, "no NVIDIA GPU on this node: nvidia-smi not found", fix)
    except subprocess.TimeoutExpired:
        return Check("gpu", False, "nvidia-smi did not answer within 60 s",
                     f"the driver is stuck: reboot the node; {fix}")
    rows = [[cell.strip() for cell in line.split(",")] for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not rows:
        message = " ".join((done.stdout + done.stderr).split())[:200] or f"exit status {done.returncode}"
        return Check("gpu", False, f"nvidia-smi failed: {message}", fix)
    models = sorted({f"{name} {memory}" for name, memory, _ in rows})
    return Check("gpu", True, f"{len(rows)} x {', '.join(models)}, driver {rows[0][2]}")


def _driver(gpu: Check) -> str | None:
    match = re.search(r"driver (\S+)", gpu.detail) if gpu.ok else None
    return match.group(1) if match else None


def torch_cuda_check(driver: str | None) -> Check:
    """torch's CUDA build, ``torch.cuda.is_available()`` and a matrix product on the GPU. ``driver``: the NVIDIA
    driver version from gpu_check(), or None when there is no GPU (the check is then skipped)."""
    import torch

    built = f"torch {torch.__version__} (built for CUDA {torch.version.cuda})"
    if torch.version.cuda is None:
        return Check("torch cuda", False, f"torch {torch.__version__} is a CPU-only build",
                     "install the lock's torch (constraints.txt: PyPI's Linux wheel, built for CUDA 13.0); the image "
                     "built from the Dockerfile has it")
    if driver is None:
        return Check("torch cuda", None, f"{built}; not tried: no GPU (see gpu)")
    needed = MIN_DRIVER.get(int(torch.version.cuda.split(".")[0]))
    old = needed is not None and _version_tuple(driver) < _version_tuple(needed)
    if not torch.cuda.is_available():
        if old:
            return Check("torch cuda", False, f"{built}: torch.cuda.is_available() is False; driver {driver} is "
                                              f"older than CUDA {torch.version.cuda} needs (>= {needed})",
                         f"use {_AMI}, or pin a torch built for an older CUDA in constraints.txt and rebuild the image")
        return Check("torch cuda", False, f"{built}: torch.cuda.is_available() is False; see the error of "
                                          "torch.cuda.init() on this node",
                     "check that the container sees the GPUs (nvidia-smi inside it) and CUDA_VISIBLE_DEVICES")
    x = torch.ones(256, 256, device="cuda")
    total = float((x @ x).sum())
    if total != 256.0**3:
        return Check("torch cuda", False, f"{built}: a 256x256 matrix product on the GPU gave {total}",
                     "the GPU computes wrong results: replace the node (ray down/up, or terminate the instance)")
    return Check("torch cuda", True, f"{built}: cuda available, {torch.cuda.device_count()} device(s), "
                                     f"{torch.cuda.get_device_name(0)}; a matrix product on it is right")


def ray_resources_check(declared: tuple[str, float] | None, listed: int,
                        ray: tuple[float, float] | None) -> Check:
    """The GPUs of this node three ways, which must agree: ``declared`` (node type, its resources.GPU in the cluster
    file; None: not known here), ``listed`` by nvidia-smi (0 when it failed), and ``ray`` (the GPUs Ray offers on
    this node, and in the whole cluster; None: Ray not reachable). Ray schedules trials by its count; a trial
    sees only the GPUs the container was given."""
    counts = {**({f"node type {declared[0]} declares": declared[1]} if declared else {}),
              "nvidia-smi lists": float(listed), **({"Ray offers": ray[0]} if ray else {})}
    detail = ", ".join(f"{what} {count:g}" for what, count in counts.items())
    detail += f" (the cluster: {ray[1]:g})" if ray else ""
    if declared is None and ray is None:
        return Check("ray resources", None, f"{detail}; no node type and no Ray cluster to compare with (on the head: "
                                            "RAY_ADDRESS, or --address)")
    if len(set(counts.values())) > 1:
        return Check("ray resources", False, f"GPUs disagree: {detail}",
                     "resources.GPU of the node type must be the instance's GPU count (`python -m latune.cluster "
                     "check`); nvidia-smi fewer than declared: the container lacks --gpus all "
                     "(docker.worker_run_options) or the driver is broken (see gpu); Ray fewer: Ray started before "
                     "the GPUs were visible: replace the node")
    return Check("ray resources", True, detail)


def declared_gpus(config: Mapping[str, Any]) -> dict[str, float]:
    """Node type name -> resources.GPU declared for it in ``config`` (a cluster file, parsed)."""
    types = config.get("available_node_types") or {}
    return {str(name): float(((t or {}).get("resources") or {}).get("GPU", 0)) for name, t in types.items()}


def _bootstrap_config() -> dict[str, Any] | None:
    """The cluster file `ray up` left on the head (None elsewhere)."""
    path = Path(BOOTSTRAP_CONFIG).expanduser()
    if not path.is_file():
        return None
    import yaml

    return yaml.safe_load(path.read_text()) or {}


def _declared_here(types: Mapping[str, float] | None) -> tuple[str, float] | None:
    """(this node's type, its declared GPUs): the type from RAY_NODE_TYPE_NAME (the autoscaler sets it for `ray
    start`), the declared counts from ``types`` or, on the head, from the config `ray up` left there."""
    name = os.environ.get("RAY_NODE_TYPE_NAME")
    if types is None:
        config = _bootstrap_config()
        if config is None:
            return None
        types, name = declared_gpus(config), name or config.get("head_node_type")
    return (name, types[name]) if name in types else None


def _ray_gpus(address: str | None) -> tuple[float, float] | None:
    """(GPUs Ray offers on this node, in the cluster), through the running Ray (inside a task) or a driver connected
    to ``address``; None without either ("local" would start a Ray of its own: not a cluster to compare with)."""
    ray: Any = sys.modules.get("ray")  # not imported: not in a Ray task, and no need to load it without an address
    connected = ray is not None and ray.is_initialized()
    if not connected:
        if not address or address == "local":
            return None
        import ray

        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except ConnectionError:
            return None
    try:
        here = ray.get_runtime_context().get_node_id()
        node = next((n for n in ray.nodes() if n.get("NodeID") == here), {})
        return float(node.get("Resources", {}).get("GPU", 0)), float(ray.cluster_resources().get("GPU", 0))
    finally:
        if not connected:
            ray.shutdown()


def _ray_resources_here(gpu: Check, types: Mapping[str, float] | None, address: str | None) -> Check:
    match = re.match(r"(\d+) x ", gpu.detail) if gpu.ok else None
    return ray_resources_check(_declared_here(types), int(match.group(1)) if match else 0, _ray_gpus(address))


def _lock_file() -> Path | None:
    import latune

    lock = Path(latune.__file__).resolve().parents[1] / "constraints.txt"
    return lock if lock.is_file() else None


def _pins(text: str) -> dict[str, str]:
    """name -> version of each ``name==version`` line of a lock (comments ignored)."""
    lines = (raw.split("#")[0].strip() for raw in text.splitlines())
    return dict(line.split("==", 1) for line in lines if "==" in line)


def versions_check(lock: Path | None = None) -> Check:
    """Ray, latune and torch versions, and every pin of the lock (``lock``, default: constraints.txt of the
    checkout latune runs from) compared with what is installed here."""
    import latune

    def installed(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    found = f"ray {installed('ray')}, latune {latune.__version__}, torch {installed('torch')}"
    lock = lock or _lock_file()
    if lock is None:
        return Check("versions", True, f"{found}; no constraints.txt beside latune: pins not compared")
    pins = _pins(lock.read_text())
    wrong = [f"{name} {installed(name) or 'missing'} (lock: {pin})" for name, pin in pins.items()
             if installed(name) != pin]
    if wrong:
        return Check("versions", False, f"{found}; {len(wrong)} of {len(pins)} pins of {lock.name} differ: "
                                        f"{', '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''}",
                     "run the image built from this checkout's Dockerfile (docs/cluster.md: build and push, then its "
                     "tag in cluster.yaml); on your machine: pip install -c constraints.txt -e '.[test]'")
    return Check("versions", True, f"{found}; all {len(pins)} pins of {lock.name} installed")


def storage_check(uri: str | None) -> Check:
    """Write, read back and delete a small object under ``uri`` (Tune's storage: s3://... or a folder), through
    pyarrow.fs as Tune does; skipped without a URI."""
    if not uri:
        return Check("storage", None, "no --storage and no LATUNE_STORAGE: nothing to check")
    import pyarrow.fs

    payload = f"latune doctor {socket.gethostname()} {time.time()}".encode()
    try:
        fs, root = pyarrow.fs.FileSystem.from_uri(uri)
        folder = f"{root.rstrip('/')}/_latune_doctor"
        path = f"{folder}/{socket.gethostname()}-{uuid.uuid4().hex[:8]}.txt"
        if fs.type_name == "local":
            fs.create_dir(folder, recursive=True)
        with fs.open_output_stream(path) as out:
            out.write(payload)
        with fs.open_input_stream(path) as stream:
            back = stream.read()
        fs.delete_file(path)
        if fs.type_name == "local" and not fs.get_file_info(pyarrow.fs.FileSelector(folder)):
            fs.delete_dir(folder)  # leave a local folder as it was; on S3 a "folder" is only a key prefix
    except Exception as err:  # noqa: BLE001 -- pyarrow raises OSError, ValueError, ArrowInvalid...: all mean "cannot"
        s3 = uri.startswith("s3://")
        return Check("storage", False, f"{uri}: {' '.join(str(err).split())[:300]}",
                     "the bucket must exist (aws s3 mb) and the node's instance profile allow s3:ListBucket on it and "
                     "s3:GetObject/PutObject/DeleteObject on its objects (docs/cluster.md policy)" if s3 else
                     "the folder must exist and be writable by this user")
    if back != payload:
        return Check("storage", False, f"{uri}: read back {len(back)} bytes, not the {len(payload)} written",
                     "the storage does not return what was written: check its consistency settings")
    return Check("storage", True, f"{uri}: wrote, read back and deleted {len(payload)} bytes")


def _http(method: str, url: str, body: bytes | None = None, timeout: float = 10) -> bytes:
    request = urllib.request.Request(url, data=body, method=method,
                                     headers={"Content-Type": "application/json"} if body else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def _mlflow_http(uri: str) -> str:
    """Health, the REST API and an artifact round trip through a tracking server; returns what worked."""
    base = uri.rstrip("/")
    _http("GET", f"{base}/health")
    found = json.loads(_http("POST", f"{base}/api/2.0/mlflow/experiments/search", b'{"max_results": 1}') or b"{}")
    artifact = f"{base}/api/2.0/mlflow-artifacts/artifacts/_latune_doctor/{uuid.uuid4().hex[:8]}.txt"
    _http("PUT", artifact, b"latune doctor")
    if _http("GET", artifact) != b"latune doctor":
        raise OSError("the artifact read back differs from the one written")
    _http("DELETE", artifact)
    return f"server healthy, {len(found.get('experiments', []))} experiment(s) listed, artifact written/read/deleted"


def mlflow_check(uri: str | None) -> Check:
    """The MLflow tracking server (or store) at ``uri`` answers: for http(s) its health, its REST API and an
    artifact round trip (proxied to S3 on the cluster); for a local store a search. Skipped without a URI."""
    if not uri:
        return Check("mlflow", None, "no --tracking-uri and no MLFLOW_TRACKING_URI: nothing to check")
    try:
        if uri.startswith(("http://", "https://")):
            detail = _mlflow_http(uri)
        else:
            from mlflow.tracking import MlflowClient

            detail = f"{len(MlflowClient(uri).search_experiments(max_results=1))} experiment(s) listed"
    except urllib.error.HTTPError as err:
        return Check("mlflow", False, f"{uri}: {err.url.split('/api/')[-1]}: HTTP {err.code} {err.reason}",
                     "artifacts: the head's instance profile needs the bucket (LATUNE_MLFLOW_ARTIFACTS); see "
                     "~/latune_state/mlflow.log on the head")
    except Exception as err:  # noqa: BLE001 -- connection refused, timeouts, MLflow errors: all mean unreachable
        return Check("mlflow", False, f"{uri}: {' '.join(str(err).split())[:300]}",
                     "start the server: `ray up cluster.yaml` starts it on the head (without --no-restart); its log "
                     "is ~/latune_state/mlflow.log; from your machine go through `ray attach cluster.yaml -p 5000`")
    return Check("mlflow", True, f"{uri}: {detail}")


def node_checks(storage: str | None, gpu: bool = True, types: Mapping[str, float] | None = None,
                address: str | None = None) -> list[Check]:
    """The checks of this node: GPU, torch's CUDA and the GPUs Ray offers (skipped when ``gpu`` is False; ``types``:
    declared_gpus() of the cluster file, default the head's copy; ``address``: the Ray cluster), versions, storage."""
    if gpu:
        found = guarded("gpu", gpu_check)
        checks = [found, guarded("torch cuda", torch_cuda_check, _driver(found)),
                  guarded("ray resources", _ray_resources_here, found, types, address)]
    else:
        checks = [Check("gpu", None, "not checked here (--gpu none)"), Check("torch cuda", None, "not checked here")]
    return [*checks, guarded("versions", versions_check), guarded("storage", storage_check, storage)]


def _worker_task(storage: str | None, types: Mapping[str, float] | None) -> tuple[str, list[Check]]:
    import ray

    return ray.util.get_node_ip_address(), node_checks(storage, types=types)


def on_gpu_worker(storage: str | None, address: str, wait: float, gpu_share: float = 0.01) -> list[Check]:
    """node_checks() run on a GPU worker of the cluster at ``address``, as a Ray task asking for ``gpu_share`` of a
    GPU (the autoscaler starts a worker if none is up); each check's name gets the worker's IP. One failed check
    when no worker took the task within ``wait`` seconds."""
    import ray

    config = _bootstrap_config()  # on the head: what each node type declares, for the worker to compare with
    ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    try:
        task = ray.remote(num_cpus=0, num_gpus=gpu_share, max_retries=0)(_worker_task)
        ref = task.remote(storage, declared_gpus(config) if config is not None else None)
        try:
            node, checks = ray.get(ref, timeout=wait)
        except ray.exceptions.RayTaskError as err:  # the task itself failed (each check is guarded inside it)
            cause = getattr(err, "cause", None) or err  # the task's own exception, without Ray's remote traceback
            return [Check("gpu worker", False, f"the checks' task failed: {type(cause).__name__}: "
                                               f"{' '.join(str(cause).split())[:300]}",
                          "the task's error is above; run `python -m latune.cluster doctor` on the worker itself "
                          "(ray attach, then ssh to its IP) to see more")]
        except ray.exceptions.GetTimeoutError:
            ray.cancel(ref, force=True)
            return [Check("gpu worker", False, f"no GPU worker ran the checks within {wait:g} s",
                          "see `ray status` on the head and `ray monitor cluster.yaml` (the autoscaler's log): EC2 "
                          "vCPU quota for G instances, instance capacity in the zones, the worker's setup; a first "
                          "worker takes 5-10 minutes (boot, image pull)")]
    finally:
        ray.shutdown()
    return [replace(check, name=f"{check.name} @ {node}") for check in checks]

