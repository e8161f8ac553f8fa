"""Running on a Ray cluster: cluster.yaml (checked with Ray's own validation, as shipped, after typical edits, and
broken), the head's environment it sets up, latune.cluster (what an autoscaling cluster can grow to), and a sweep
across a multi-node cluster on this machine that loses a worker node mid-sweep.

``ray up`` runs ``prepare_config`` (Ray's defaults for the provider merged in, setup commands merged) and then
``validate_config`` (Ray's ray-schema.json plus its cross-checks) before it contacts AWS; the tests run the same
two functions. What comes after (boto3: IAM profile, key pair, subnets, security group, the AMI) needs an AWS
account and is not tested here.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
import yaml

from latune.cluster.autoscaler import autoscaler_capacity, with_autoscaler_capacity

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"


def _shipped() -> dict:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def _validate(config: dict) -> dict:
    """What `ray up` does to the file before it talks to the cloud; returns the prepared config."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def _commands(config: dict) -> str:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    return "\n".join(command for key in keys for command in config.get(key) or [])


# -- cluster.yaml ----------------------------------------------------------------------------------------------

def test_shipped_cluster_yaml_passes_rays_validation():
    config = _shipped()
    prepared = _validate(config)
    assert prepared["provider"]["type"] == "aws"
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"] == {"CPU": 0} and head["max_workers"] == 0  # no trial on the head
    gpu_types = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert sorted(t["resources"]["GPU"] for t in gpu_types.values()) == [1, 4]  # a 1-GPU and a multi-GPU type
    assert all(t["min_workers"] == 0 and t["max_workers"] >= 1 for t in gpu_types.values())  # autoscaling from 0
    assert all("IamInstanceProfile" in t["node_config"] for t in gpu_types.values())  # workers reach S3 without keys
    # one image for every node, built from the Dockerfile: its tag pins Ray (the cluster must run the Ray of the
    # machine that runs `ray up`) and the lock (tests/test_cluster_image.py checks both)
    assert re.fullmatch(r"YOUR-REGISTRY/latune:\d+\.\d+\.\d+-py3\d+-gpu-[0-9a-f]{8}", prepared["docker"]["image"])
    assert not {"head_image", "worker_image"} & prepared["docker"].keys()
    # latune from the file mount, installing nothing else: every dependency is in the image
    assert prepared["file_mounts"] == {"~/latune": "."}
    assert prepared["setup_commands"] == ["pip install -q --no-deps --no-build-isolation -e ~/latune"]
    # every key is commented (as in Ray's example files): a comment on its line or just above it, or it is the
    # first key inside a commented one
    lines = [line for line in CLUSTER_YAML.read_text().splitlines() if line.strip()]
    indent = [len(line) - len(line.lstrip(" ")) for line in lines]
    for number, line in enumerate(lines):
        if re.match(r"^[\s-]*[\w.\"~]+:", line) and "#" not in line:
            above = lines[number - 1].strip()
            assert above.startswith("#") or indent[number - 1] < indent[number], f"no comment on key: {line}"


def _edit_region(c):
    c["provider"].update(region="eu-west-1", availability_zone="eu-west-1a,eu-west-1b")


def _edit_instance_type(c):
    c["available_node_types"]["gpu_1x"]["node_config"]["InstanceType"] = "g6.xlarge"


def _edit_max_workers(c):
    c["max_workers"] = 20
    c["available_node_types"]["gpu_4x"]["max_workers"] = 5


def _edit_warm_gpu_node(c):
    c["available_node_types"]["gpu_1x"]["min_workers"] = 1


def _edit_add_worker_type(c):
    c["available_node_types"]["gpu_8x"] = {
        "min_workers": 0, "max_workers": 1, "resources": {"CPU": 96, "GPU": 8},
        "node_config": {"InstanceType": "p4d.24xlarge", "ImageId": "ami-0123456789abcdef0"}}


def _edit_spot_and_own_key(c):
    c["auth"]["ssh_private_key"] = "~/.ssh/my-ec2-key.pem"
    for node_type in c["available_node_types"].values():
        node_type["node_config"]["KeyName"] = "my-ec2-key"
    c["available_node_types"]["gpu_1x"]["node_config"]["InstanceMarketOptions"] = {"MarketType": "spot"}


def _edit_ssh_from_one_address(c):
    c["provider"]["security_group"] = {"GroupName": "latune-ssh", "IpPermissions": [
        {"FromPort": 22, "ToPort": 22, "IpProtocol": "TCP", "IpRanges": [{"CidrIp": "203.0.113.7/32"}]}]}


def _edit_image_and_ami(c):
    c["docker"]["image"] = "rayproject/ray:2.60.0-py311-cu124"
    c["available_node_types"]["head"]["node_config"]["ImageId"] = "ami-0fedcba9876543210"


@pytest.mark.parametrize("edit", [_edit_region, _edit_instance_type, _edit_max_workers, _edit_warm_gpu_node,
                                  _edit_add_worker_type, _edit_spot_and_own_key, _edit_ssh_from_one_address,
                                  _edit_image_and_ami], ids=lambda f: f.__name__[len("_edit_"):])
def test_typical_edits_still_pass_rays_validation(edit):
    config = _shipped()
    edit(config)
    prepared = _validate(config)
    assert prepared["available_node_types"].keys() >= _shipped()["available_node_types"].keys()


def _broken_unknown_top_level_key(c):
    c["max_worker"] = 4  # a typo of max_workers


def _broken_wrong_type(c):
    c["max_workers"] = "four"


def _broken_fractional_gpu_resource(c):
    c["available_node_types"]["gpu_1x"]["resources"]["GPU"] = 0.5  # fractions are per trial (--gpu), not per node


def _broken_missing_node_resources(c):
    del c["available_node_types"]["gpu_4x"]["resources"]


def _broken_missing_node_config(c):
    del c["available_node_types"]["gpu_1x"]["node_config"]


def _broken_unknown_head_type(c):
    c["head_node_type"] = "ray.head.default"


def _broken_more_warm_nodes_than_allowed(c):
    c["available_node_types"]["gpu_1x"]["min_workers"] = 5  # > max_workers (4) of the whole cluster


def _broken_unknown_docker_key(c):
    c["docker"]["imag"] = c["docker"].pop("image")


_BROKEN = [
    (_broken_unknown_top_level_key, jsonschema.ValidationError, "max_worker"),
    (_broken_wrong_type, jsonschema.ValidationError, "four"),
    (_broken_fractional_gpu_resource, jsonschema.ValidationError, "0.5"),
    (_broken_missing_node_resources, jsonschema.ValidationError, "resources"),
    (_broken_missing_node_config, jsonschema.ValidationError, "node_config"),
    (_broken_unknown_head_type, ValueError, "head_node_type"),
    (_broken_more_warm_nodes_than_allowed, ValueError, "min_workers"),
    (_broken_unknown_docker_key, AssertionError, "image name"),  # Ray's docker check, before the schema's
]


@pytest.mark.parametrize("edit, error, match", _BROKEN, ids=[edit.__name__[len("_broken_"):] for edit, *_ in _BROKEN])
def test_broken_edits_are_caught_by_rays_validation(edit, error, match):
    config = _shipped()
    edit(config)
    with pytest.raises(error, match=match):
        _validate(config)


def test_no_credentials_in_the_cluster_file_or_the_repository():
    patterns = [re.compile(p, re.I) for p in (
        r"\b(AKIA|ASIA)[0-9A-Z]{16}\b",  # an AWS access key id
        r"aws_(secret_access_key|access_key_id|session_token)\s*[=:]\s*\S",  # a key in config or ini syntax
        r"AWS_(SECRET_ACCESS_KEY|ACCESS_KEY_ID|SESSION_TOKEN)\s*=\s*\S",  # in an environment assignment
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----")]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    files = {CLUSTER_YAML, *(ROOT / name for name in tracked)}
    for path in sorted(files):
        if path.is_file() and path.stat().st_size < 2_000_000:
            text = path.read_text(errors="ignore")
            for pattern in patterns:
                assert not pattern.search(text), f"{path.relative_to(ROOT)} looks like it holds a credential"


def test_dashboard_and_mlflow_listen_on_the_heads_localhost_only():
    config = _shipped()
    head_start = "\n".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    mlflow = [command for command in config["head_start_ray_commands"] if "mlflow server" in command]
    assert len(mlflow) == 1 and "--host 127.0.0.1" in mlflow[0] and "--port 5000" in mlflow[0]
    assert "--artifacts-destination" in mlflow[0] and "--backend-store-uri" in mlflow[0]
    everything = _commands(config) + json.dumps(config.get("docker", {}))
    assert "0.0.0.0" not in everything and "-p 5000" not in everything and "--publish" not in everything
    # no group made by Ray (its own opens SSH to 0.0.0.0/0): docs/cluster.md's group, named in every node type
    assert "security_group" not in config["provider"]
    assert all(t["node_config"]["SecurityGroupIds"] for t in config["available_node_types"].values())


def test_head_environment_is_what_the_sweep_cli_reads(tmp_path):
    """Run the head's commands that write ~/latune_env.sh (HOME = tmp_path), source it, and check the values the
    sweep CLI ends up with: storage on S3, Optuna and MLflow databases on the head's disk, the MLflow server."""
    config = _shipped()
    writes = [c for c in config["head_setup_commands"] if "latune_env.sh" in c]
    assert writes and not [c for c in config["head_setup_commands"] if "$HOME" in c and c not in writes]
    script = "\n".join([*writes, "source ~/latune_env.sh", "env"])
    env = {"HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    for _ in range(2):  # a second `ray up` runs them again: same file, one line in ~/.bashrc
        done = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=True)
    values = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    assert values["LATUNE_STORAGE"] == "s3://YOUR-BUCKET/latune/runs"
    assert values["LATUNE_OPTUNA_STORAGE"] == f"sqlite:///{tmp_path}/latune_state/optuna.db"
    assert values["LATUNE_MLFLOW_BACKEND"] == f"sqlite:///{tmp_path}/latune_state/mlflow.db"
    assert values["LATUNE_MLFLOW_ARTIFACTS"] == "s3://YOUR-BUCKET/latune/mlflow-artifacts"
    assert values["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000" and values["RAY_ADDRESS"] == "auto"
    assert (tmp_path / ".bashrc").read_text().count("latune_env.sh") == 1
    mlflow = next(c for c in config["head_start_ray_commands"] if "mlflow server" in c)
    assert "$LATUNE_MLFLOW_BACKEND" in mlflow and "$LATUNE_MLFLOW_ARTIFACTS" in mlflow


def test_sweep_cli_takes_storage_defaults_from_the_environment(monkeypatch, capsys):
    import latune.cli.sweep as sweep
    from latune.analysis.results import results_table
    from latune.sweep.run import SweepOutcome

    seen = {}

    def fake_run_sweep(spec, **kwargs):
        seen.update(kwargs)
        return SweepOutcome("s3://b/p/x", "s3://b/p/x/results.parquet", results_table([], spec.objectives), False)

    monkeypatch.setattr(sweep, "run_sweep", fake_run_sweep)
    monkeypatch.setenv("LATUNE_STORAGE", "s3://bucket/latune/runs")
    monkeypatch.setenv("LATUNE_OPTUNA_STORAGE", "sqlite:////home/ray/latune_state/optuna.db")
    assert sweep.main(["delta_eps_grid", "--verbose", "0"]) == 0
    assert seen["storage"] == "s3://bucket/latune/runs"
    assert seen["optuna_storage"] == "sqlite:////home/ray/latune_state/optuna.db"
    assert sweep.main(["delta_eps_grid", "--storage", "elsewhere", "--optuna-storage", "sqlite:///o.db"]) == 0
    assert (seen["storage"], seen["optuna_storage"]) == ("elsewhere", "sqlite:///o.db")  # flags win
    capsys.readouterr()
    assert sweep.main(["delta_eps_grid", "--dry-run"]) == 0
    assert "results would go under s3://bucket/latune/runs/delta_eps_grid-digits-<time>" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        sweep.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "$LATUNE_STORAGE" in help_text and "$LATUNE_OPTUNA_STORAGE" in help_text and "$RAY_ADDRESS" in help_text


# -- latune.cluster --------------------------------------------------------------------------------------------

def test_autoscaler_capacity_of_the_shipped_cluster():
    # head: no CPU for trials; 4 workers in all: the two 4-GPU nodes first, then two of the 1-GPU nodes
    assert autoscaler_capacity(_validate(_shipped())) == {"CPU": 2 * 48 + 2 * 4, "GPU": 2 * 4 + 2 * 1}


@pytest.mark.parametrize("types, max_workers, expected", [
    ({"a": {"resources": {"CPU": 4, "GPU": 1}, "max_workers": 3}}, 10, {"CPU": 12, "GPU": 3}),  # the type's cap
    ({"a": {"resources": {"CPU": 4, "GPU": 1}, "max_workers": 3}}, 2, {"CPU": 8, "GPU": 2}),  # the cluster's cap
    ({"a": {"resources": {"CPU": 8}}, "b": {"resources": {"CPU": 4, "GPU": 1}}}, 1, {"CPU": 4, "GPU": 1}),  # GPUs first
    ({"a": {"resources": {}, "max_workers": 5}}, 5, {"CPU": 0, "GPU": 0}),  # undeclared: nothing counted
])
def test_autoscaler_capacity_fills_gpu_types_first_within_both_caps(types, max_workers, expected):
    config = {"head_node_type": "h", "max_workers": max_workers,
              "available_node_types": {"h": {"resources": {"CPU": 2}}, **types}}
    assert autoscaler_capacity(config) == {"CPU": expected["CPU"] + 2, "GPU": expected["GPU"]}


def test_sweep_on_an_autoscaling_head_plans_for_the_gpu_workers_to_come(tmp_path):
    """On the head of a `ray up` cluster before any worker is up (Ray reports CPU 0, no GPU), a GPU sweep must
    not fail for lack of GPUs nor fall back to CPU: it plans with what the autoscaler can add."""
    from latune.config import ConfigError
    from latune.sweep.run import plan_resources
    from latune.sweep.spec import load_sweep

    bootstrap = tmp_path / "ray_bootstrap_config.yaml"
    bootstrap.write_text(yaml.safe_dump(_validate(_shipped())))
    now = {"CPU": 0.0, "memory": 1e10}
    assert with_autoscaler_capacity(now, tmp_path / "absent.yaml") == now  # not a `ray up` head: unchanged
    grown = with_autoscaler_capacity(now, bootstrap)
    assert grown == {"CPU": 104.0, "GPU": 10.0, "memory": 1e10}
    spec = load_sweep("pareto", data="cifar10")
    assert (spec.cpu, spec.gpu, spec.max_concurrent) == (1.0, "auto", 0)
    assert plan_resources(spec, grown) == (1.0, 0.25, 40)  # 10 GPUs at a quarter each (104 CPUs would fit more)
    assert plan_resources(replace(spec, gpu=1.0, max_concurrent=0), grown) == (1.0, 1.0, 10)
    with pytest.raises(ConfigError, match="no GPU"):
        plan_resources(replace(spec, gpu=0.25), now)  # without the autoscaler's capacity: refused, as before


# -- a sweep across nodes that loses one ------------------------------------------------------------------------

TINY_BASE = {"data.limit_train": 256, "eval.max_images": 64, "eval.steps": 5, "attack.steps": 2}
EPOCHS = 8  # epochs of a fraction of a second: the node is killed after epoch 2, the trial must not end before


def _reports(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError):  # not there yet, or a line being written
        return []


def _trial_to_kill(storage: Path) -> tuple[Path, dict] | None:
    """A trial that has reported (and checkpointed) two epochs and has more to go, with its latest report. After
    two, not one: even if the kill lands between epoch 2's report and Tune registering its checkpoint, there is a
    checkpoint to resume from."""
    for trial_dir in sorted(storage.glob("*/train_trial_*")):
        reports = _reports(trial_dir)
        if 2 <= len(reports) <= EPOCHS // 2 and all(r.get("checkpoint_dir_name") for r in reports):
            return trial_dir, reports[-1]
    return None


@pytest.mark.slow
def test_sweep_on_a_cluster_runs_on_workers_that_join_and_survives_losing_one(tmp_path):
    """The sweep CLI, started on the head of an autoscaling cluster (CPU 0, no GPU, no worker yet; the head's
    ~/ray_bootstrap_config.yaml declares a 1-GPU worker type), plans GPU trials for the workers to come, runs them
    on the workers when they join, and survives losing one mid-sweep. The test plays the autoscaler and the cloud
    (Ray's cluster_utils nodes with logical GPUs): it adds two workers once the sweep has planned, and kills one as
    soon as a trial on it has checkpointed two epochs. A real `mlflow server`; shared storage in a local folder
    (what NFS or S3 is on a real cluster); three trials of eight epochs, two at a time.

    For Tune the killed node's trial failed (Ray's ActorDiedError: its node died); as max_retries allows, Tune
    restarts it from its latest checkpoint on the node that is left. Every trial ends TERMINATED, with one MLflow
    run holding every epoch once. (The driver is a subprocess: Ray adds nodes only from the main thread.)
    """
    import ray
    from mlflow.tracking import MlflowClient
    from ray.cluster_utils import Cluster

    from _mlflow_helpers import MlflowServer, clean_env

    sweep = tmp_path / "cluster_sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "cluster_sweep", "description": "multi-node test sweep",
        # device cpu: the workers' GPUs are Ray resources only (a GPU share without CUDA refuses to start on auto)
        "base": {**TINY_BASE, "optim.epochs": EPOCHS, "device": "cpu"},
        "space": {"la.delta": [0.0, 0.1, 0.3]}, "search": {"algorithm": "grid"},
        "resources": {"cpu": 1, "gpu": "auto"}, "max_retries": 2}))
    head_home = tmp_path / "head_home"  # the driver's $HOME: where `ray up` leaves the bootstrap config
    head_home.mkdir()
    (head_home / "ray_bootstrap_config.yaml").write_text(yaml.safe_dump({
        "max_workers": 2, "head_node_type": "head", "available_node_types": {
            "head": {"resources": {"CPU": 0}, "node_config": {}},
            "gpu_1x": {"resources": {"CPU": 1, "GPU": 1}, "min_workers": 0, "max_workers": 2, "node_config": {}}}}))
    (tmp_path / "mlflow").mkdir()
    server = MlflowServer(tmp_path / "mlflow")
    storage, log = tmp_path / "shared", tmp_path / "driver.log"
    store = 80 * 1024**2
    # a killed node is declared dead after ~1.5 s of failed health checks (Ray's default: ~15 s)
    fast_death = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500,
                  "health_check_timeout_ms": 500, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": store, "include_dashboard": False, "_system_config": fast_death})
    proc = None
    started = time.monotonic()
    try:
        server.start()
        ray.init(address=cluster.address, log_to_driver=False)  # the test watches the cluster's resources
        assert ray.cluster_resources().get("CPU", 0) == 0 and "GPU" not in ray.cluster_resources()
        proc = subprocess.Popen(
            [sys.executable, "-m", "latune.sweep", str(sweep), "--address", cluster.address, "--storage", str(storage),
             "--tracking-uri", server.url, "--verbose", "0"],
            cwd=tmp_path, env=clean_env(HOME=str(head_home)), stdout=log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True)
        deadline = time.monotonic() + 240

        def alive() -> bool:
            if time.monotonic() > deadline:
                pytest.fail(f"the sweep did not end within 240 s:\n{log.read_text()[-3000:]}")
            return proc.poll() is None

        while alive() and not list(storage.glob("*/latune_sweep.json")):  # written once resources are planned
            time.sleep(0.05)
        gpus_at_plan = ray.cluster_resources().get("GPU", 0.0)
        workers = {cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=store).node_id for _ in range(2)}
        victim, least_free_gpus = None, math.inf
        while alive():
            least_free_gpus = min(least_free_gpus, ray.available_resources().get("GPU", math.inf))
            found = None if victim else _trial_to_kill(storage)
            if found:
                victim = {"trial_dir": found[0], "node_id": found[1]["node_id"]}
                node = {n.node_id: n for n in cluster.worker_nodes}[victim["node_id"]]  # KeyError: ran on the head
                cluster.remove_node(node, allow_graceful=False)  # killed, not drained: the trial gets no warning
            time.sleep(0.05)
        assert proc.returncode == 0, log.read_text()[-3000:]
        seconds = time.monotonic() - started
        client = MlflowClient(server.url)
        runs = client.search_runs([client.get_experiment_by_name("cluster_sweep").experiment_id])
        epochs_logged = {r.info.run_id: {m: [x.step for x in client.get_metric_history(r.info.run_id, m)]
                                         for m in ("epoch", "clean_acc")} for r in runs}
    finally:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        ray.shutdown()
        cluster.shutdown()
        server.stop()

    assert gpus_at_plan == 0  # the sweep had planned (GPU trials, see below) on a cluster without a GPU
    assert victim is not None, "no trial reported two checkpoints before the sweep ended: no node was killed"
    assert least_free_gpus <= 2 - 2 * 0.25  # two trials at once on the two workers, a quarter GPU each (gpu: auto)
    [experiment] = [p for p in storage.iterdir() if p.is_dir()]

    # every trial finished, in results.parquet on the shared storage
    table = pd.read_parquet(experiment / "results.parquet")
    assert len(table) == 3 and table["trial_id"].is_unique, table
    assert set(table["status"]) == {"TERMINATED"}, table[["trial_id", "status", "error"]]
    assert set(table["epochs_done"]) == {EPOCHS}
    assert set(table["node_id"]) <= workers  # nothing ran on the head

    # the trial on the removed node went on from its checkpoint on the other node, not from epoch 1
    dead, (survivor,) = victim["node_id"], workers - {victim["node_id"]}
    reports = _reports(victim["trial_dir"])
    before = [r for r in reports if r["node_id"] == dead]
    after = [r for r in reports if r["node_id"] != dead]
    assert before and after and reports == before + after, [(r["epoch"], r["node_id"][:8]) for r in reports]
    assert {r["node_id"] for r in after} == {survivor}
    assert [r["epoch"] for r in before] == list(range(1, len(before) + 1))
    # it went on after the last epoch it reported from the lost node (k; the trial runs on while its node is being
    # killed), or redid epoch k when the kill came between epoch k's report and Tune registering its checkpoint
    k, first = len(before), after[0]["epoch"]
    assert first in (k, k + 1) and first >= 2, (k, [r["epoch"] for r in reports])
    assert before[first - 2]["checkpoint_dir_name"]  # it restored the checkpoint of the epoch before
    assert [r["epoch"] for r in after] == list(range(first, EPOCHS + 1))
    assert after[0]["iterations_since_restore"] == 1 and after[0]["training_iteration"] == first
    trial_id = reports[-1]["trial_id"]
    row = table.set_index("trial_id").loc[trial_id]
    assert row["node_id"] == survivor and row["epochs_done"] == EPOCHS
    # Tune saw one failure of that trial, the node's death, and retried it; no other trial failed
    assert [p.parent for p in experiment.glob("train_trial_*/error.txt")] == [victim["trial_dir"]]
    error = (victim["trial_dir"] / "error.txt").read_text()
    assert "node has died" in error and dead in error, error
    [state] = experiment.glob("experiment_state-*.json")
    failures = {json.loads(trial)["trial_id"]: json.loads(run)["num_failures"]
                for trial, run in json.loads(state.read_text())["trial_data"]}
    assert failures == {t: int(t == trial_id) for t in table["trial_id"]}, failures

    # MLflow (through the server, while it ran): one parent run, one child per trial with every epoch exactly once
    parents = [r for r in runs if r.data.tags.get("latune.role") == "sweep"]
    assert len(parents) == 1, [r.data.tags for r in runs]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1 == 3
    assert sorted(r.data.tags["latune.trial_id"] for r in children) == sorted(table["trial_id"])
    for run in children:  # the retried trial too: a failure Tune recovers from is not the trial's end
        assert run.info.status == "FINISHED", (run.data.tags["latune.trial_id"], run.info.status)
        assert "latune.error" not in run.data.tags
        for metric, steps in epochs_logged[run.info.run_id].items():
            assert sorted(steps) == list(range(1, EPOCHS + 1)), (run.data.tags["latune.trial_id"], metric, steps)
    print(f"multi-node sweep: {seconds:.0f} s; trial {trial_id} lost node {dead[:8]} after epoch {k}, "
          f"went on at epoch {first} on {survivor[:8]}")
