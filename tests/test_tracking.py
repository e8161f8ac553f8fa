"""MLflow tracking of sweeps: the real sweep CLI logging over HTTP to a real ``mlflow server``.

One server for the session (conftest.mlflow_server: sqlite backend, proxied artifacts, all in tmp). Sweeps are
tiny (digits, 3 trials x 2 epochs, one of which diverges); the one interrupted part-way runs one trial at a time.
"""

import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from _mlflow_helpers import OBJECTIVES, MlflowServer, clean_env, free_port
from mlflow import MlflowClient

import latune
from latune.config import from_flat, resolve, to_flat
from latune.analysis.pareto import default_reference, front_table, hypervolume
from latune.provenance import git_commit
from latune.tracking.sync import sync
from latune.tracking.tracker import SweepTracker
from latune.tracking.records import SweepInfo, TrialRecord, by_epoch, outcome_tags, unmeasured_at_end

HUGE_LR = 1.0e12  # diverges in the first epoch: a FAILED trial
SWEEP = f"""name: {{name}}
description: the MLflow tests' sweep
base:
  la.transform_set: geometric
  eval.eps: 0.02   # a radius the 2-epoch models partly resist, so the objectives differ between trials
space:
  optim.lr: [0.02, {HUGE_LR}, 0.05]
search: {{{{algorithm: grid}}}}
resources: {{{{cpu: 1, gpu: 0}}}}
"""
TINY = ("optim.epochs=2", "data.limit_train=128", "eval.max_images=64", "eval.steps=5", "attack.steps=2")
RAY_KEYS = {"timestamp", "pid", "time_total_s", "training_iteration", "time_this_iter_s", "done", "node_ip",
            "iterations_since_restore", "time_since_restore"}


@pytest.fixture(scope="module")
def server(mlflow_server):
    """The session's ``mlflow server`` (conftest.mlflow_server), test_cluster_doctor's too."""
    return mlflow_server


def _sweep(folder: Path, name: str, server: MlflowServer, *args: str, concurrent: int = 1) -> subprocess.Popen:
    """Start ``python -m latune.sweep`` logging to ``server``; output in folder/NAME.out and .err."""
    (folder / f"{name}.yaml").write_text(SWEEP.format(name=name))
    command = [sys.executable, "-m", "latune.sweep", f"{name}.yaml", "--storage", "runs", "--verbose", "0",
               "--max-concurrent", str(concurrent), "--tracking-uri", server.url, *args]
    command += [a for pair in TINY for a in ("--set", pair)]
    with open(folder / f"{name}.out", "a") as out, open(folder / f"{name}.err", "a") as err:
        return subprocess.Popen(command, cwd=folder, stdout=out, stderr=err, env=clean_env())


def _finish(process: subprocess.Popen, timeout: float = 300) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise


def _wait_for(condition, timeout: float = 120, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _runs(client: MlflowClient, experiment: str):
    """(parents, {trial_id: child run}) of an MLflow experiment; fails if a trial has two runs."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return [], {}
    runs = client.search_runs([found.experiment_id], "", max_results=1000)
    parents = [r for r in runs if r.data.tags.get("latune.role") == "sweep"]
    children = [r for r in runs if "latune.trial_id" in r.data.tags]
    trial_ids = [r.data.tags["latune.trial_id"] for r in children]
    assert len(set(trial_ids)) == len(trial_ids) and len(runs) == len(parents) + len(children), trial_ids
    return parents, {r.data.tags["latune.trial_id"]: r for r in children}


def _trials(experiment_path: Path) -> dict[str, dict]:
    """Tune's files per trial id: params, the results by epoch, and whether it failed."""
    trials = {}
    for folder in experiment_path.glob("train_trial_*"):
        result = folder / "result.json"
        lines = [json.loads(line) for line in (result.read_text() if result.exists() else "").splitlines() if line]
        trial_id = "_".join(folder.name.split("_")[2:4])  # train_trial_<trial id>_<index>_...
        params = json.loads((folder / "params.json").read_text())
        trials[trial_id] = {"params": params, "results": by_epoch(lines), "failed": params["optim.lr"] == HUGE_LR}
    return trials


@pytest.fixture(scope="module")
def resumed(server, tmp_path_factory):
    """A sweep interrupted (SIGINT) once its first trial finished, then resumed to the end."""
    folder = tmp_path_factory.mktemp("resumed")
    client = MlflowClient(server.url)
    process = _sweep(folder, "mlresume", server)
    _wait_for(lambda: any(r.info.status == "FINISHED" for r in _runs(client, "mlresume")[1].values()),
              what="a finished trial in MLflow")
    process.send_signal(signal.SIGINT)
    interrupted_rc = _finish(process)
    (parent,), children = _runs(client, "mlresume")
    experiment_path = Path(parent.data.tags["latune.experiment_path"])
    front_while_interrupted = subprocess.run(
        [sys.executable, "-m", "latune.pareto", "mlresume", "--tracking-uri", server.url],
        capture_output=True, text=True, timeout=300, env=clean_env())
    resume_rc = _finish(_sweep(folder, "mlresume", server, "--resume", "--name", experiment_path.name))
    return SimpleNamespace(
        client=client, folder=folder, experiment_path=experiment_path, interrupted_rc=interrupted_rc,
        interrupted={t: (r.info.run_id, r.info.status) for t, r in children.items()},
        interrupted_parent=(parent.info.run_id, parent.info.status), front_while_interrupted=front_while_interrupted,
        resume_rc=resume_rc, output=(folder / "mlresume.out").read_text() + (folder / "mlresume.err").read_text())


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_into_the_same_runs(resumed):
    assert "Experiment has been interrupted" in resumed.output and resumed.interrupted_rc in (0, 130)
    assert resumed.resume_rc == 0, resumed.output[-3000:]
    statuses = [status for _, status in resumed.interrupted.values()]
    # trials not yet started have no run (Tune creates grid trials as they start), started ones are KILLED
    assert resumed.interrupted_parent[1] == "KILLED" and "FINISHED" in statuses, statuses
    assert len(statuses) < 3 or "KILLED" in statuses, statuses
    (parent,), children = _runs(resumed.client, "mlresume")
    assert parent.info.run_id == resumed.interrupted_parent[0] and parent.info.status == "FINISHED"
    for trial_id, (run_id, _) in resumed.interrupted.items():
        assert children[trial_id].info.run_id == run_id
    # the front of the interrupted sweep, read from MLflow
    finished = [t for t, (_, status) in resumed.interrupted.items() if status == "FINISHED"]
    assert resumed.front_while_interrupted.returncode == 0, resumed.front_while_interrupted.stderr
    assert "Pareto front" in resumed.front_while_interrupted.stdout
    assert any(t in resumed.front_while_interrupted.stdout for t in finished)


@pytest.mark.slow
def test_one_nested_run_per_trial_with_the_resolved_config_as_params(resumed):
    (parent,), children = _runs(resumed.client, "mlresume")
    trials = _trials(resumed.experiment_path)
    assert len(trials) == 3 and set(children) == set(trials)
    assert parent.info.run_name == resumed.experiment_path.name
    assert parent.data.params["objective.robust_acc"] == "max" and parent.data.params["searched"] == "optim.lr"
    for trial_id, run in children.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id and run.info.run_name == trial_id
        if trials[trial_id]["failed"]:
            assert run.info.status == "FAILED" and run.data.tags["pareto"] == "false"
            assert run.data.tags["latune.error"].startswith("FloatingPointError: training loss is")
        else:
            assert run.info.status == "FINISHED"
        resolved = to_flat(resolve(from_flat(trials[trial_id]["params"])))
        assert run.data.params == {key: str(value) for key, value in resolved.items()}
        assert run.data.params["model.arch"] == "small_cnn" and run.data.params["optim.epochs"] == "2"


@pytest.mark.slow
def test_every_metric_every_epoch_and_no_ray_internals(resumed):
    client = resumed.client
    _, children = _runs(client, "mlresume")
    trials = _trials(resumed.experiment_path)
    for trial_id, run in children.items():
        results = trials[trial_id]["results"]
        assert not RAY_KEYS & set(run.data.metrics) and not [k for k in run.data.metrics if k.startswith("config")]
        for metric in (*OBJECTIVES, "train_loss", "lr", "epoch", "images_per_s"):
            history = client.get_metric_history(run.info.run_id, metric)
            assert [(m.step, m.value) for m in history] == [
                (epoch, pytest.approx(result[metric])) for epoch, result in results.items()], (trial_id, metric)
        last = [2] if not trials[trial_id]["failed"] else []
        assert [m.step for m in client.get_metric_history(run.info.run_id, "test_robust_acc")] == last


@pytest.mark.slow
def test_tags_and_artifacts(resumed):
    client = resumed.client
    (parent,), children = _runs(client, "mlresume")
    trials = _trials(resumed.experiment_path)
    for trial_id, run in children.items():
        tags = run.data.tags
        assert (tags["latune.sweep"], tags["latune.trial_id"], tags["latune.data"]) == ("mlresume", trial_id, "digits")
        assert tags["latune.version"] == latune.__version__ and tags["latune.git_commit"] == (git_commit() or "unknown")
        assert tags["latune.experiment_path"] == str(resumed.experiment_path)
        expected = {"config.yaml"} | ({"class_errors.csv", "class_errors.png"} if trials[trial_id]["results"] else set())
        expected |= {"error.txt"} if trials[trial_id]["failed"] else set()
        assert {a.path for a in client.list_artifacts(run.info.run_id)} == expected
    finished = next(r for t, r in children.items() if not trials[t]["failed"])
    errors = pd.read_csv(client.download_artifacts(finished.info.run_id, "class_errors.csv", str(resumed.folder)))
    assert list(errors["class"]) == list(range(10)) and "test_robust_error" in errors
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {
        "pareto_front.csv", "pareto_front.parquet", "pareto_pairs.png", "pareto_3d.html", "sweep.yaml"}
    page = Path(client.download_artifacts(parent.info.run_id, "pareto_3d.html", str(resumed.folder))).read_text()
    assert "<script src=" not in page and "Plotly.newPlot" in page  # plotly.js embedded: works offline


@pytest.mark.slow
def test_pareto_ranks_tags_and_hypervolume_match_results_parquet(resumed, capsys, tmp_path):
    client = resumed.client
    (parent,), children = _runs(client, "mlresume")
    table = pd.read_parquet(resumed.experiment_path / "results.parquet")
    finished = table[table["status"] == "TERMINATED"]
    ranks = front_table(finished, OBJECTIVES)["pareto_rank"]
    assert list(ranks.sort_index()) == list(finished["pareto_rank"].sort_index())
    for trial_id, rank in zip(table["trial_id"], table["pareto_rank"]):
        run = children[trial_id]
        assert run.data.metrics["pareto_rank"] == rank
        assert run.data.tags["pareto"] == ("true" if rank == 0 else "false")
    directions = list(OBJECTIVES.values())
    curve = client.get_metric_history(parent.info.run_id, "hypervolume")
    assert [m.step for m in curve] == [1, 2]  # one trial failed
    assert curve[-1].value == pytest.approx(hypervolume(finished[list(OBJECTIVES)].to_numpy(), directions,
                                                        default_reference(directions)))
    # python -m latune.pareto reads the same front from MLflow
    from latune.cli.pareto import main

    out = tmp_path / "front.parquet"
    assert main([parent.info.run_id, "--tracking-uri", client.tracking_uri, "--parquet", str(out)]) == 0
    printed = capsys.readouterr().out
    front = set(table.loc[table["pareto_rank"] == 0, "trial_id"])
    assert set(pd.read_parquet(out)["trial_id"]) == front and all(t in printed for t in front)
    # the front is chosen on validation; MLflow's front table and latune.pareto carry the held-out test values
    assert "chosen on the validation split" in printed and "test_robust_acc" in printed
    held_out = [f"test_{m}" for m in OBJECTIVES]
    expected = table.set_index("trial_id").loc[sorted(front), held_out]
    from_cli = pd.read_parquet(out).set_index("trial_id").loc[sorted(front), held_out]
    csv = pd.read_csv(client.download_artifacts(parent.info.run_id, "pareto_front.csv", str(tmp_path)))
    assert list(csv.columns[2:8]) == [c for m in OBJECTIVES for c in (m, f"test_{m}")]
    from_csv = csv.set_index("trial_id").loc[sorted(front), held_out]
    assert expected.notna().all().all()
    assert from_cli.to_numpy() == pytest.approx(expected.to_numpy()) and from_csv.to_numpy() == pytest.approx(
        expected.to_numpy())


@pytest.mark.slow
def test_server_down_mid_sweep_then_sync_backfills_without_duplicates(server, tmp_path):
    client = MlflowClient(server.url)
    process = _sweep(tmp_path, "mldown", server, concurrent=2)
    _wait_for(lambda: any("epoch" in r.data.metrics for r in _runs(client, "mldown")[1].values()),
              what="the first epoch in MLflow")
    server.kill()
    try:
        returncode = _finish(process)
        output = (tmp_path / "mldown.out").read_text() + (tmp_path / "mldown.err").read_text()
        assert returncode == 0, output[-3000:]
        assert output.count(f"MLflow tracking at {server.url} failed") == 1, output[-3000:]  # once, not per call
        assert "python -m latune.sync" in output
    finally:
        server.start()  # the same backend and port
    (experiment_path,) = (tmp_path / "runs").glob("mldown-digits-*")
    done = subprocess.run([sys.executable, "-m", "latune.sync", str(experiment_path), "--tracking-uri", server.url],
                          capture_output=True, text=True, timeout=300, env=clean_env())
    assert done.returncode == 0, done.stderr
    (parent,), children = _runs(client, "mldown")
    assert parent.info.status == "FINISHED"
    trials = _trials(experiment_path)
    table = pd.read_parquet(experiment_path / "results.parquet")
    assert set(children) == set(trials) and len(trials) == 3
    for trial_id, run in children.items():
        assert run.info.status == ("FAILED" if trials[trial_id]["failed"] else "FINISHED")
        history = client.get_metric_history(run.info.run_id, "robust_acc")
        assert [(m.step, m.value) for m in history] == [
            (e, pytest.approx(r["robust_acc"])) for e, r in trials[trial_id]["results"].items()]
        assert run.data.metrics["pareto_rank"] == table.set_index("trial_id").loc[trial_id, "pareto_rank"]
    # again, and a resume of the finished sweep: nothing new
    assert sync(str(experiment_path), tracking_uri=server.url).stats == {"runs_created": 0, "epochs_logged": 0}
    assert _finish(_sweep(tmp_path, "mldown", server, "--resume", "--name", experiment_path.name)) == 0
    (parent,), after = _runs(client, "mldown")
    assert parent.info.status == "FINISHED"
    assert {t: r.info.run_id for t, r in after.items()} == {t: r.info.run_id for t, r in children.items()}
    assert [len(client.get_metric_history(r.info.run_id, "epoch")) for r in after.values()].count(2) == 2


def test_tracker_never_raises_and_warns_once_when_mlflow_is_unreachable(tmp_path, caplog):
    dead = f"http://127.0.0.1:{free_port()}"
    sweep = SweepInfo(name="nowhere", experiment_path=str(tmp_path), objectives=dict(OBJECTIVES), data="digits")
    tracker = SweepTracker(sweep, dead)
    record = TrialRecord("abcde_00000", {"la.delta": 0.1}, [{"epoch": 1, "clean_acc": 0.5, "timestamp": time.time()}])
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="latune.tracking"):
        assert tracker.update([record]) is False
        record.status = "FINISHED"
        assert tracker.update([record]) is False
        assert tracker.close() is False
    assert time.monotonic() - started < 30
    messages = [r.getMessage() for r in caplog.records]
    assert sum("failed" in m for m in messages) == 1 and "python -m latune.sync" in messages[-1], messages


def test_outcome_tags_of_a_trial_that_has_started_but_reported_no_epoch():
    """Tune's first result of a trial holds only its bookkeeping: no feasibility yet, and no IndexError (which
    the MLflow guard used to report as "MLflow tracking failed")."""
    record = TrialRecord("abcde_00000", {"la.delta": 0.1}, [{"trial_id": "abcde_00000", "timestamp": 1.0}])
    assert outcome_tags(record, {"robust_acc": {"min": 0.2}}) == {"latune.status": "running"}
    record.history.append({"epoch": 1, "robust_acc": 0.1})
    assert outcome_tags(record, {"robust_acc": {"min": 0.2}}) == {"latune.status": "running", "feasible": "false"}


def test_a_finished_trial_without_an_objective_is_failed_in_mlflow_too():
    history = [{"epoch": 1, "clean_acc": 0.5, "robust_acc": float("nan")}]
    record = TrialRecord("abcde_00000", {"optim.epochs": 1}, history)
    assert unmeasured_at_end(record, ["clean_acc", "robust_acc"]).startswith("ValueError: objective robust_acc not")
    assert unmeasured_at_end(record, ["clean_acc"]) is None
    assert unmeasured_at_end(TrialRecord("x", {}, []), ["clean_acc"]) is None


def test_each_start_and_resume_of_a_sweep_records_its_code(tmp_path):
    """latune_sweep.json keeps the provenance of every start and resume: a resumed sweep's trials may have run other
    code, and the recorded benchmark (benchmarks/la_record.py) says which."""
    from latune.sweep.spec import parse_sweep
    from latune.tracking.callback import tracking_callbacks

    spec = parse_sweep({"space": {"la.delta": [0.0, 0.1]}})
    for _ in range(2):
        assert tracking_callbacks(spec, str(tmp_path), enabled=False) == []
    history = SweepInfo.load(str(tmp_path)).provenance
    assert len(history) == 2 and all(h["git_commit"] == git_commit() and h["started"] for h in history)
