"""Early stopping end to end: real sweeps through ``python -m latune.sweep`` on digits (local Ray, Optuna sqlite,
MLflow sqlite), one of them interrupted with SIGINT and resumed.

Trials are tiny (200 images, PGD-1 training, 4 epochs) and judged at rungs 1 and 2 (grace 1, η 2): from the
second result at a rung on, only the better half goes on, so six trials always lose some at a rung.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from _mlflow_helpers import fake_sweep
from mlflow import MlflowClient

from latune.tracking.sync import read_trials, sync

BUDGET, RUNGS = 4, (1, 2)
SWEEP = {
    "name": "es", "description": "early-stopping test sweep",
    "base": {"data.limit_train": 200, "eval.max_images": 50, "eval.steps": 3, "attack.steps": 1, "optim.epochs": BUDGET,
             "eval.eps": 0.1},
    "space": {"la.delta": {"uniform": [0.0, 0.5]}, "attack.eps": {"choice": [0.0, 0.1]},
              "optim.lr": {"loguniform": [0.005, 0.05]}},
    "search": {"algorithm": "optuna", "sampler": "nsga2", "seed": 0, "num_samples": 6, "max_concurrent": 2},
    "constraints": {"robust_acc": {"min": 0.02}},
    "early_stopping": {"grace_epochs": 1, "reduction_factor": 2},
    "resources": {"cpu": 1, "gpu": 0},
}
STATE = optuna.trial.TrialState


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    return {**env, "RAY_ADDRESS": "local"}


def _start(tmp_path: Path, *args: str, log: str) -> subprocess.Popen:
    (tmp_path / "es.yaml").write_text(yaml.safe_dump(SWEEP))
    command = [sys.executable, "-m", "latune.sweep", "es.yaml", *args]
    return subprocess.Popen(command, cwd=tmp_path, stdout=(tmp_path / log).open("w"), stderr=subprocess.STDOUT,
                            env=_env(), start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"sweep did not exit within {timeout} s")


def _experiment(tmp_path: Path) -> Path:
    [folder] = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    return folder


def _reports(experiment: Path) -> dict[str, list[dict]]:
    """Tune's result.json lines per trial id, in the order Tune received them."""
    found = {}
    for path in experiment.glob("train_trial_*/result.json"):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if lines:
            found[lines[0]["trial_id"]] = lines
    return found


def _study(experiment: Path) -> optuna.Study:
    return optuna.load_study(study_name=experiment.name, storage=f"sqlite:///{experiment / 'optuna.db'}")


def _check_outcomes(experiment: Path, slack: int = 0) -> pd.DataFrame:
    """What every copy of the results must agree on; returns results.parquet. ``slack``: epochs a pruned trial
    may have trained past its rung (a sweep interrupted between a STOP and Tune carrying it out resumes the
    trial from its checkpoint, and it is stopped again at its next result)."""
    table = pd.read_parquet(experiment / "results.parquet")
    assert len(table) == 6 and set(table["status"]) <= {"TERMINATED", "PRUNED"}, table[["trial_id", "status"]]
    pruned, full = table[table["status"] == "PRUNED"], table[table["status"] == "TERMINATED"]
    assert len(pruned) >= 1 and len(full) >= 1, table[["trial_id", "status", "epochs_done"]]
    assert (pruned["epochs_done"] < BUDGET).all() and (full["epochs_done"] == BUDGET).all()
    assert (pruned["pareto_rank"] == -1).all() and not pruned["pareto"].any()
    front = table[table["pareto"]]
    assert len(front) >= 1 and (front["status"] == "TERMINATED").all() and front["feasible"].all()
    assert (table.loc[~table["feasible"], "pareto_rank"] == -1).all()

    study = _study(experiment)
    assert study.metric_names == ["clean_acc", "robust_acc", "robust_class_error_sd"]
    state = {round(t.params["la.delta"], 9): t for t in study.trials}
    status = {round(d, 9): s for d, s in zip(table["la.delta"], table["status"])}
    assert set(state) == set(status)
    assert {d for d, t in state.items() if t.state == STATE.PRUNED} == {d for d, s in status.items() if s == "PRUNED"}
    assert {t.state for t in study.trials} <= {STATE.PRUNED, STATE.COMPLETE}
    for trial in study.trials:  # no COMPLETE trial trained fewer epochs than the budget
        epochs = trial.user_attrs["epochs_trained"]
        assert (epochs == BUDGET) if trial.state == STATE.COMPLETE else (epochs < BUDGET), (trial.state, epochs)
        assert "robust_acc" in trial.user_attrs and "robust_acc>=0.02" in trial.constraints

    reports = _reports(experiment)
    for trial_id, epochs in zip(table["trial_id"], table["epochs_done"]):  # Tune's files say the same
        assert max(r["epoch"] for r in reports[trial_id]) == epochs
        assert reports[trial_id][-1]["done"] == (trial_id in set(pruned["trial_id"]))
    for epochs in pruned["epochs_done"]:  # stopped at a rung (or, after a resume, at the epoch after it)
        assert any(0 <= epochs - rung <= slack for rung in RUNGS), epochs
    return table


@pytest.mark.slow
def test_an_optuna_sweep_with_early_stopping_prunes_everywhere_alike(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = _start(tmp_path, "--tracking-uri", uri, "--verbose", "1", log="out.log")
    rc = _finish(proc)
    out = (tmp_path / "out.log").read_text()
    assert rc == 0, out[-4000:]
    experiment = _experiment(tmp_path)
    table = _check_outcomes(experiment)
    counts = table["status"].value_counts()
    assert f"{counts['PRUNED']} pruned" in out and f"{counts['TERMINATED']} terminated" in out
    assert "finished infeasible (robust_acc >= 0.02)" in out
    assert "PRUNED@" in out and "| front " in out and "rungs at epochs 1, 2" in out  # the progress table

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("es").experiment_id], "", max_results=100)
    [parent] = [r for r in runs if r.data.tags.get("latune.role") == "sweep"]
    assert parent.info.status == "FINISHED"  # pruned trials ended: the sweep is not left looking interrupted
    assert parent.data.params["search.early_stopping"].startswith("rungs at epochs 1, 2 of 4")
    children = {r.data.tags["latune.trial_id"]: r for r in runs if "latune.trial_id" in r.data.tags}
    assert set(children) == set(table["trial_id"])
    for _, row in table.iterrows():
        run = children[row["trial_id"]]
        if row["status"] == "PRUNED":
            assert run.info.status == "KILLED" and run.data.tags["latune.status"] == "pruned", run.data.tags
            assert run.data.tags["pareto"] == "false" and run.data.metrics["pareto_rank"] == -1
        else:
            assert run.info.status == "FINISHED" and run.data.tags["latune.status"] == "finished"
            assert run.data.tags["pareto"] == ("true" if row["pareto"] else "false")
        assert run.data.tags["feasible"] == ("true" if row["feasible"] else "false")
        assert run.data.metrics["epoch"] == row["epochs_done"]


@pytest.mark.slow
def test_an_interrupted_sweep_with_early_stopping_resumes_with_its_rungs(tmp_path):
    proc = _start(tmp_path, "--no-mlflow", "--verbose", "0", log="first.log")
    deadline = time.monotonic() + 400

    def pruned_so_far() -> set[str]:
        folders = list((tmp_path / "runs").iterdir()) if (tmp_path / "runs").exists() else []
        return {t for f in folders for t, rs in _reports(f).items() if rs[-1]["done"] and rs[-1]["epoch"] < BUDGET}

    while time.monotonic() < deadline and proc.poll() is None and not pruned_so_far():
        time.sleep(0.2)  # interrupt once a trial was pruned
    assert pruned_so_far(), (tmp_path / "first.log").read_text()[-3000:]
    proc.send_signal(signal.SIGINT)
    assert _finish(proc) == 130, (tmp_path / "first.log").read_text()[-3000:]
    experiment = _experiment(tmp_path)
    before = _reports(experiment)
    first = pd.read_parquet(experiment / "results.parquet")
    assert "UNFINISHED" in set(first["status"]) or len(first) < 6, first[["trial_id", "status"]]

    proc = _start(tmp_path, "--no-mlflow", "--verbose", "0", "--resume", log="resume.log")
    assert _finish(proc) == 0, (tmp_path / "resume.log").read_text()[-3000:]
    assert _experiment(tmp_path) == experiment
    _check_outcomes(experiment, slack=1)
    after = _reports(experiment)
    for trial_id, reports in before.items():
        assert after[trial_id][:len(reports)] == reports  # Tune appended; the first session's results stand
        if reports[-1]["done"]:
            assert after[trial_id] == reports  # pruned before the interrupt: never trained again
            continue
        passed = {r["epoch"] for r in reports if r["epoch"] in RUNGS}  # rungs it went on from in the first session
        stops = [r["epoch"] for r in after[trial_id][len(reports):] if r["done"]]
        assert not set(stops) & passed, (trial_id, reports, after[trial_id])  # never judged at them again


@pytest.mark.slow  # a new sqlite MLflow store: seconds of migrations
def test_the_backfill_marks_pruned_trials_as_the_live_sweep_does(tmp_path):
    """latune.sync reads the STOP from result.json's done flag: KILLED with latune.status=pruned, never on the front."""
    folder = fake_sweep(tmp_path, {"aaaaa_00000": {"delta": 0.0, "scores": [(0.5, 0.2, 0.3), (0.6, 0.3, 0.2)]},
                                   "aaaaa_00001": {"delta": 0.1, "scores": [(0.9, 0.9, 0.1)]},
                                   "aaaaa_00002": {"delta": 0.2, "scores": [(0.4, 0.1, 0.5)]}})
    stopped = next(folder.glob("train_trial_aaaaa_00001_*")) / "result.json"
    stopped.write_text(stopped.read_text().replace('"done": false', '"done": true'))
    records = {r.trial_id: r for r in read_trials(str(folder))}
    assert {t: (r.status, r.pruned) for t, r in records.items()} == {
        "aaaaa_00000": ("FINISHED", False), "aaaaa_00001": ("KILLED", True), "aaaaa_00002": ("KILLED", False)}

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = sync(str(folder), tracking_uri=uri)
    table = tracker.table().set_index("trial_id")
    assert table["status"].to_dict() == {"aaaaa_00000": "TERMINATED", "aaaaa_00001": "PRUNED",
                                         "aaaaa_00002": "UNFINISHED"}
    runs = {r.data.tags["latune.trial_id"]: r for r in MlflowClient(uri).search_runs(
        [tracker.experiment_id], "tags.`latune.trial_id` != ''")}
    assert runs["aaaaa_00001"].info.status == "KILLED" and runs["aaaaa_00001"].data.tags["latune.status"] == "pruned"
    assert runs["aaaaa_00002"].data.tags["latune.status"] == "killed"  # interrupted, not pruned
    assert runs["aaaaa_00001"].data.tags["pareto"] == "false" and runs["aaaaa_00000"].data.tags["pareto"] == "true"


@pytest.mark.slow
def test_a_grid_sweep_stops_early_with_the_cli_flag(tmp_path):
    """--early-stopping GRACE,ETA on a grid sweep without early_stopping in its file. One trial at a time: the first
    trial is the first at every rung, so it always goes on; the others meet the results before them."""
    grid = {**SWEEP, "search": {"algorithm": "grid", "max_concurrent": 1},
            "space": {"attack.eps": [0.1, 0.0, 0.001, 0.08]}}
    del grid["early_stopping"]
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    done = subprocess.run([sys.executable, "-m", "latune.sweep", "grid.yaml", "--no-mlflow", "--verbose", "0",
                           "--early-stopping", "1,2"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=_env())
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = pd.read_parquet(_experiment(tmp_path) / "results.parquet")
    first = table.set_index("attack.eps").loc[0.1]
    assert first["status"] == "TERMINATED" and first["epochs_done"] == BUDGET
    pruned = table[table["status"] == "PRUNED"]
    assert len(pruned) >= 1 and set(pruned["epochs_done"]) <= set(RUNGS), table[["attack.eps", "status", "epochs_done"]]
    assert set(table["status"]) <= {"TERMINATED", "PRUNED"}
    assert (table.loc[table["pareto"], "status"] == "TERMINATED").all()
    assert f"{len(pruned)} pruned" in done.stdout


def test_dry_run_shows_the_rungs_and_the_flags_turn_them_off(tmp_path, capsys):
    from latune.cli.sweep import main

    (tmp_path / "es.yaml").write_text(yaml.safe_dump(SWEEP))
    assert main([str(tmp_path / "es.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert ("early stopping: rungs at epochs 1, 2 of 4 (grace 1, reduction factor 2, judged from the 2nd result, "
            "fronts ordered by hypervolume)") in out
    assert "constraints: robust_acc >= 0.02" in out
    assert main([str(tmp_path / "es.yaml"), "--dry-run", "--no-early-stopping"]) == 0
    assert "early stopping: off" in capsys.readouterr().out
    assert main([str(tmp_path / "es.yaml"), "--dry-run", "--early-stopping", "4,2"]) == 2
    assert "error: --early-stopping.grace_epochs: must be auto or an integer from 1 to 3" in capsys.readouterr().err
