"""latune.sync: backfilling MLflow from Tune's files, without duplicates (sqlite store, hand-written Tune folder).

The server-down scenario with a real sweep and a real tracking server is in test_tracking.py.
"""

import json
import shutil
import subprocess
import sys

import pytest
from _mlflow_helpers import OBJECTIVES, clean_env, fake_sweep
from mlflow import MlflowClient

from latune.analysis.pareto import default_reference, hypervolume
from latune.cli.sync import main
from latune.tracking.sync import read_trials, sync

ERROR = ("Failure # 1 (occurred at 2026-01-01_00-00-00)\n\x1b[36mray::ImplicitFunc.train()\x1b[39m (pid=1)\n"
         "  File \"latune/train.py\", line 160, in train\nFloatingPointError: training loss is nan at epoch 1\n")
TRIALS = {  # (clean_acc, robust_acc, robust_class_error_sd) per reported epoch
    "abcde_00000": {"delta": 0.0, "scores": [(0.5, 0.2, 0.3), (0.9, 0.3, 0.2)]},  # front
    "abcde_00001": {"delta": 0.1, "scores": [(0.5, 0.3, 0.3), (0.8, 0.5, 0.1)]},  # front
    "abcde_00002": {"delta": 0.3, "scores": [(0.4, 0.1, 0.3), (0.7, 0.2, 0.3)]},  # dominated by both
    "abcde_00003": {"delta": 0.5, "scores": [(0.3, 0.1, 0.4)], "error": ERROR},  # failed
    "abcde_00004": {"delta": 0.7, "scores": [(0.3, 0.1, 0.4)]},  # interrupted after epoch 1 of 2
}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (MLflow migrates a new one for seconds). Run from its folder: a
    local store puts artifacts in ./mlruns of the current directory."""
    folder = tmp_path_factory.mktemp("store")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        yield f"sqlite:///{folder / 'mlflow.db'}"


def _runs(client, experiment):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], "", max_results=1000)
    parents = [r for r in runs if r.data.tags.get("latune.role") == "sweep"]
    children = {r.data.tags["latune.trial_id"]: r for r in runs if "latune.trial_id" in r.data.tags}
    assert len(runs) == len(parents) + len(children), "a trial has two runs"
    return parents, children


def test_read_trials_infers_status_from_the_files(tmp_path):
    records = {r.trial_id: r for r in read_trials(str(fake_sweep(tmp_path, TRIALS)))}
    assert {t: r.status for t, r in records.items()} == {
        "abcde_00000": "FINISHED", "abcde_00001": "FINISHED", "abcde_00002": "FINISHED", "abcde_00003": "FAILED",
        "abcde_00004": "KILLED"}
    assert "FloatingPointError" in records["abcde_00003"].error and len(records["abcde_00000"].history) == 2


@pytest.mark.slow  # with the module's store (MLflow migrates it for seconds), as each test that uses it
def test_sync_logs_each_trial_once_with_history_status_and_front(tmp_path, store):
    folder = fake_sweep(tmp_path, TRIALS, name="layout")
    tracker = sync(str(folder), tracking_uri=store)
    assert tracker.stats == {"runs_created": 6, "epochs_logged": 8}
    client = MlflowClient(store)
    (parent,), children = _runs(client, "layout")
    assert set(children) == set(TRIALS)
    assert parent.info.status == "KILLED" and parent.info.run_name == folder.name  # a trial was interrupted
    assert parent.data.params["objective.robust_class_error_sd"] == "min" and parent.data.params["searched"] == "la.delta"
    statuses = {t: r.info.status for t, r in children.items()}
    assert statuses == {"abcde_00000": "FINISHED", "abcde_00001": "FINISHED", "abcde_00002": "FINISHED",
                        "abcde_00003": "FAILED", "abcde_00004": "KILLED"}
    for trial_id, run in children.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["latune.experiment_path"] == str(folder)
        assert run.data.params["la.delta"] == str(TRIALS[trial_id]["delta"])
        assert run.data.params["model.arch"] == "small_cnn"  # resolved: the digits preset filled in
        history = client.get_metric_history(run.info.run_id, "clean_acc")
        assert [(m.step, m.value) for m in history] == [(e, s[0]) for e, s in enumerate(TRIALS[trial_id]["scores"], 1)]
        assert not {"pid", "timestamp", "time_total_s", "training_iteration", "done"} & set(run.data.metrics)
        assert not [k for k in run.data.metrics if k.startswith("config")]
    ranks = {t: (r.data.metrics["pareto_rank"], r.data.tags["pareto"]) for t, r in children.items()}
    assert ranks == {"abcde_00000": (0, "true"), "abcde_00001": (0, "true"), "abcde_00002": (1, "false"),
                     "abcde_00003": (-1, "false"), "abcde_00004": (-1, "false")}
    failed = children["abcde_00003"]
    assert failed.data.tags["latune.error"] == "FloatingPointError: training loss is nan at epoch 1"
    assert "error.txt" in [a.path for a in client.list_artifacts(failed.info.run_id)]
    assert {a.path for a in client.list_artifacts(children["abcde_00000"].info.run_id)} == {
        "class_errors.csv", "class_errors.png", "config.yaml"}
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} == {
        "pareto_front.csv", "pareto_front.parquet", "pareto_pairs.png", "pareto_3d.html", "sweep.yaml"}
    # hypervolume after each finished trial, in the order they finished
    finals = [TRIALS[t]["scores"][-1] for t in ("abcde_00000", "abcde_00001", "abcde_00002")]
    curve = client.get_metric_history(parent.info.run_id, "hypervolume")
    reference = default_reference(list(OBJECTIVES.values()))
    assert [(m.step, m.value) for m in curve] == [
        (k, pytest.approx(hypervolume(finals[:k], list(OBJECTIVES.values()), reference))) for k in (1, 2, 3)]


@pytest.mark.slow
def test_sync_adds_only_missing_epochs_and_never_a_second_run(tmp_path, store):
    folder = fake_sweep(tmp_path, {k: TRIALS[k] for k in ("abcde_00000", "abcde_00001")}, name="partial")
    complete = {p: p.read_text() for p in folder.glob("*/result.json")}
    for path, text in complete.items():  # the server went down after epoch 1 of every trial
        path.write_text(text.splitlines(keepends=True)[0])
    assert sync(str(folder), tracking_uri=store).stats == {"runs_created": 3, "epochs_logged": 2}
    for path, text in complete.items():
        path.write_text(text)
    assert sync(str(folder), tracking_uri=store).stats == {"runs_created": 0, "epochs_logged": 2}
    assert sync(str(folder), tracking_uri=store).stats == {"runs_created": 0, "epochs_logged": 0}

    moved = tmp_path / "elsewhere" / folder.name  # the folder moved: its runs are found by the sweep's name
    shutil.copytree(folder, moved)
    assert sync(str(moved), tracking_uri=store).stats == {"runs_created": 0, "epochs_logged": 0}

    client = MlflowClient(store)
    (parent,), children = _runs(client, "partial")
    for run in children.values():
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "robust_acc")] == [1, 2]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "pareto_rank")] == [0, 2]  # -1, then 0


@pytest.mark.slow
def test_cli_backfills_and_reports_bad_folders_in_one_line(tmp_path, store, capsys):
    folder = fake_sweep(tmp_path, {"abcde_00000": TRIALS["abcde_00000"]}, name="cli")
    done = subprocess.run([sys.executable, "-m", "latune.sync", str(folder), "--tracking-uri", store],
                          capture_output=True, text=True, timeout=300, env=clean_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "1 trials" in done.stdout and "2 runs created, 2 epochs added" in done.stdout
    saved = json.loads((folder / "latune_sweep.json").read_text())
    assert saved["objectives"] == OBJECTIVES and saved["experiment_path"] == str(folder)

    assert main([str(tmp_path), "--tracking-uri", store]) == 2  # not a sweep folder
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "latune_sweep.json" in error


class _Tracker:
    """What the CLI prints of latune.tracking.sync.sync's tracker."""

    stats = {"runs_created": 1, "epochs_logged": 2}
    experiment, tracking_uri, parent_run_id = "e", "sqlite:///x.db", "p"

    def table(self):
        return [1]


@pytest.mark.parametrize("flags, logged, warned", [([], False, False), (["--mlflow-checkpoints"], True, False),
                                                   (["--checkpoints"], True, True)])
def test_the_checkpoint_flag_is_named_as_in_latune_sweep_and_the_old_name_still_works(flags, logged, warned,
                                                                                       monkeypatch, capsys):
    import latune.cli.sync as cli

    seen = {}
    monkeypatch.setattr(cli, "sync", lambda folder, **kwargs: seen.update(kwargs) or _Tracker())
    assert main(["runs/x", *flags]) == 0
    assert seen["log_checkpoints"] is logged
    err = capsys.readouterr().err
    assert ("--checkpoints is deprecated; use --mlflow-checkpoints" in err) is warned


def test_an_mlflow_error_is_exit_2_like_every_bad_input(monkeypatch, capsys):
    import mlflow.exceptions

    import latune.cli.sync as cli

    def fail(folder, **kwargs):
        raise mlflow.exceptions.MlflowException("bad\nstore")

    monkeypatch.setattr(cli, "sync", fail)
    assert main(["runs/x", "--tracking-uri", "nope://x"]) == 2
    assert capsys.readouterr().err == "error: MLflow: bad store\n"
