"""Real sweeps through ``python -m latune.sweep`` (local Ray, real Optuna sqlite storage, tiny digits trials)."""

import math

import numpy as np
import optuna
import pandas as pd
import pytest
from conftest import OBJECTIVES, write_sweep as _write

from latune.config import ConfigError
from latune.analysis.pareto import non_dominated_ranks
from latune.sweep.run import error_line, plan_resources
from latune.sweep.spec import parse_sweep

# lr 1e12 without momentum blows the small CNN up within the 2 tiny epochs: train raises FloatingPointError
DIVERGE = ("--set", "optim.momentum=0", "--set", "optim.nesterov=false")
HUGE_LR = 1.0e12


def _experiment(tmp_path, name):
    folders = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    assert [p.name.rsplit("-", 2)[0] for p in folders] == [f"{name}-digits"], folders
    return folders[0]


def _table(experiment):
    path = experiment / "results.parquet"
    assert path.is_file()
    return pd.read_parquet(path)


def _study(experiment):
    db = experiment / "optuna.db"
    assert db.is_file(), sorted(p.name for p in experiment.iterdir())
    return optuna.load_study(study_name=experiment.name, storage=f"sqlite:///{db}")


def _assert_ranks_agree(table):
    finished = table[table["status"] == "TERMINATED"]
    recomputed = non_dominated_ranks(finished[list(OBJECTIVES)].to_numpy(float), list(OBJECTIVES.values()))
    assert recomputed.tolist() == finished["pareto_rank"].tolist()
    assert (table.loc[table["status"] != "TERMINATED", "pareto_rank"] == -1).all()
    assert table["pareto"].tolist() == (table["pareto_rank"] == 0).tolist()


@pytest.mark.slow
def test_grid_sweep_writes_one_row_per_trial_with_pareto_ranks(tiny_grid_sweep):
    # the session's shared grid sweep (conftest.tiny_grid_sweep): the 4 points of la.delta x attack.eps, given as
    # a list of two grids that overlap
    result = tiny_grid_sweep.result
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Pareto front (" in result.stdout and "trials: 4 terminated" in result.stdout

    experiment = _experiment(tiny_grid_sweep.folder, "tiny_grid")
    table = _table(experiment)
    assert f"results: {experiment / 'results.parquet'}" in result.stdout
    assert len(table) == 4 and table["trial_id"].is_unique
    assert (table["status"] == "TERMINATED").all() and table["error"].isna().all()
    assert (table["epochs_done"] == 2).all()
    assert sorted(zip(table["la.delta"], table["attack.eps"])) == [(0.0, 0.0), (0.0, 0.1), (0.2, 0.0), (0.2, 0.1)]
    assert (table["eval.eps"] == 0.1).all() and (table["data.name"] == "digits").all()
    assert table["optim.epochs"].tolist() == [2] * 4  # --set values are typed, not strings
    for metric, mode in OBJECTIVES.items():
        assert table[metric].between(0, 1).all(), metric
        best, final = table[f"best_{metric}"], table[metric]
        assert ((best >= final) if mode == "max" else (best <= final)).all(), metric
    assert {"pareto_rank", "pareto", "time_total_s", "clean_class_error"} <= set(table.columns)
    assert all(len(v) == 10 for v in table["clean_class_error"])  # per-class lists survive the round trip
    _assert_ranks_agree(table)
    assert table["pareto_rank"].tolist() == sorted(table["pareto_rank"])  # front first
    front = table[table["pareto"]]
    assert len(front) >= 1
    stdout_rows = result.stdout.split("Pareto front (", 1)[1].splitlines()
    assert stdout_rows[0].startswith(f"{len(front)} of 4 trials, chosen on the validation split")
    # validation objectives (the front is chosen on them) beside their held-out test values
    assert stdout_rows[2].split()[:7] == ["trial_id", "clean_acc", "test_clean_acc", "robust_acc", "test_robust_acc",
                                          "robust_class_error_sd", "test_robust_class_error_sd"]
    for metric in OBJECTIVES:
        assert table[f"test_{metric}"].between(0, 1).all(), metric
    for trial_id in table["trial_id"]:
        assert any(line.startswith(trial_id) for line in stdout_rows) == (trial_id in set(front["trial_id"]))
    assert not (experiment / "optuna.db").exists()  # grid search: no study
    # the front files beside results.parquet, without MLflow (--no-mlflow), and where to look at them
    files = [experiment / name for name in ("front.csv", "front.png", "front.html")]
    assert all(f.is_file() and f.stat().st_size for f in files), sorted(p.name for p in experiment.iterdir())
    assert set(pd.read_csv(files[0])["trial_id"]) == set(front["trial_id"])
    assert f"front: {', '.join(map(str, files))}" in result.stdout
    assert "mlflow ui" not in result.stdout and "optuna-dashboard" not in result.stdout


@pytest.mark.slow
def test_optuna_multi_objective_sweep_persists_a_complete_study(tmp_path, sweep_cli):
    path = _write(tmp_path, "tiny_optuna",
                  space={"la.delta": {"uniform": [0.0, 0.3]}, "attack.eps": {"choice": [0.0, 0.1]}},
                  search={"algorithm": "optuna", "sampler": "nsga2", "seed": 0, "num_samples": 3, "max_concurrent": 2},
                  objectives=OBJECTIVES)
    result = sweep_cli(path, "--verbose", "0", cwd=tmp_path, tiny=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Pareto front (" in result.stdout and "trials: 3 terminated" in result.stdout

    experiment = _experiment(tmp_path, "tiny_optuna")
    assert f"optuna-dashboard sqlite:///{experiment / 'optuna.db'}" in result.stdout
    table = _table(experiment)
    assert len(table) == 3 and (table["status"] == "TERMINATED").all()
    assert table["la.delta"].between(0.0, 0.3).all() and set(table["attack.eps"]) <= {0.0, 0.1}
    _assert_ranks_agree(table)

    study = _study(experiment)
    assert study.directions == [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MAXIMIZE,
                                optuna.study.StudyDirection.MINIMIZE]
    states = [t.state for t in study.trials]
    assert states == [optuna.trial.TrialState.COMPLETE] * 3, states
    finals = sorted(tuple(row) for row in table[list(OBJECTIVES)].to_numpy(float))
    told = sorted(tuple(t.values) for t in study.trials)
    assert all(len(v) == 3 for v in told)
    assert np.allclose(told, finals)  # Optuna was told each trial's final objectives
    sampled = sorted(t.params["la.delta"] for t in study.trials)
    assert np.allclose(sampled, sorted(table["la.delta"]))


@pytest.mark.slow
def test_a_diverging_trial_is_an_error_row_and_the_sweep_still_succeeds(tmp_path, sweep_cli):
    path = _write(tmp_path, "diverge_grid", space={"optim.lr": [0.02, HUGE_LR]}, search={"algorithm": "grid"})
    result = sweep_cli(path, "--verbose", "0", *DIVERGE, cwd=tmp_path, tiny=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "1 terminated" in result.stdout and "1 error" in result.stdout
    assert "failed: FloatingPointError: training loss is" in result.stdout

    table = _table(_experiment(tmp_path, "diverge_grid")).set_index("optim.lr")
    good, bad = table.loc[0.02], table.loc[HUGE_LR]
    assert good["status"] == "TERMINATED" and pd.isna(good["error"]) and good["pareto_rank"] == 0
    assert bad["status"] == "ERROR" and bad["pareto_rank"] == -1 and not bad["pareto"]
    assert bad["error"].startswith("FloatingPointError: training loss is "), bad["error"]
    assert "\n" not in bad["error"] and "\x1b" not in bad["error"] and "lower optim.lr" in bad["error"]
    assert bad["epochs_done"] < 2
    # held-out figures: each objective's test_ value for the finished trial (its last epoch), NaN for the failed one
    for metric in OBJECTIVES:
        assert 0 <= good[f"test_{metric}"] <= 1 and pd.isna(bad[f"test_{metric}"]), metric
    assert "test_*: the same metric on the held-out test split" in result.stdout


@pytest.mark.slow
def test_a_diverging_optuna_trial_is_failed_in_the_study_not_left_running(tmp_path, sweep_cli):
    # NSGA-II seed 0 draws the huge lr first and 0.02 second (the first generation is random sampling)
    path = _write(tmp_path, "diverge_optuna", space={"optim.lr": {"choice": [0.02, HUGE_LR]}},
                  search={"algorithm": "optuna", "seed": 0, "num_samples": 2, "max_concurrent": 2})
    result = sweep_cli(path, "--verbose", "0", *DIVERGE, cwd=tmp_path, tiny=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    experiment = _experiment(tmp_path, "diverge_optuna")
    table = _table(experiment)
    study = _study(experiment)
    lrs = sorted(t.params["optim.lr"] for t in study.trials)
    assert lrs == [0.02, HUGE_LR], f"the sampler's draws changed ({lrs}); pick a seed that draws both values"
    state = {t.params["optim.lr"]: t.state for t in study.trials}
    assert state == {0.02: optuna.trial.TrialState.COMPLETE, HUGE_LR: optuna.trial.TrialState.FAIL}
    status = dict(zip(table["optim.lr"], table["status"]))
    assert status == {0.02: "TERMINATED", HUGE_LR: "ERROR"}
    assert table.set_index("optim.lr").loc[HUGE_LR, "error"].startswith("FloatingPointError")
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete[0].values) == 3 and not any(math.isnan(v) for v in complete[0].values)


@pytest.mark.slow
def test_a_nan_objective_without_an_exception_is_failed_in_the_study(tmp_path):
    """A trial that ends normally with a NaN objective (nothing raised) is FAIL in Optuna's storage, not COMPLETE
    with NaN (which Optuna rejects) nor left RUNNING; the other trial is COMPLETE. Real Tune and Optuna storage
    through latune's search (sweep.run); the trainable only reports (training is not what this is about)."""
    import ray
    from ray import tune

    from latune.sweep.optuna_search import optuna_search
    from latune.sweep.run import _tune_space

    spec = parse_sweep({"space": {"la.delta": {"choice": [0.0, 0.2]}}, "objectives": OBJECTIVES,
                        "search": {"algorithm": "optuna", "seed": 0, "num_samples": 2}})

    def reports_nan_for_delta(config):
        robust = math.nan if config["la.delta"] > 0 else 0.25  # as a metric not measured would be
        tune.report({"epoch": 1, "clean_acc": 0.5, "robust_acc": robust, "robust_class_error_sd": 0.1})

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=80 * 1024**2)
    try:
        grid = tune.Tuner(reports_nan_for_delta, param_space=_tune_space(spec),
                          tune_config=tune.TuneConfig(search_alg=optuna_search(spec, storage, "nan", 2, budget=1),
                                                      num_samples=spec.num_samples),
                          run_config=tune.RunConfig(storage_path=str(tmp_path), name="nan", verbose=0)).fit()
    finally:
        ray.shutdown()
    assert not grid.errors and len(grid) == 2
    study = optuna.load_study(study_name="nan", storage=storage)
    state = {t.params["la.delta"]: t.state for t in study.trials}
    assert len(state) == 2, f"the sampler's draws changed ({state}); pick a seed that draws both values"
    assert state == {0.0: optuna.trial.TrialState.COMPLETE, 0.2: optuna.trial.TrialState.FAIL}
    complete = next(t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert complete.values == [0.5, 0.25, 0.1]


@pytest.mark.slow
@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without GPUs")
def test_a_gpu_request_without_gpus_is_a_one_line_error_and_no_trial_runs(tmp_path, sweep_cli):
    path = _write(tmp_path, "gpu", space={"la.delta": [0.0, 0.2]})
    result = sweep_cli(path, "--gpu", "0.5", cwd=tmp_path, tiny=True)
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "resources.gpu" in errors[0] and "no GPU" in errors[0], result.stderr
    assert not (tmp_path / "runs").exists()
    assert "Pareto front" not in result.stdout and "trial" not in result.stdout.lower()


def test_plan_resources_fits_concurrency_to_the_cluster():
    spec = parse_sweep({"space": {"la.delta": [0.0, 0.1]}})
    assert plan_resources(spec, {"CPU": 2.0}) == (1.0, 0.0, 2)
    from dataclasses import replace

    assert plan_resources(replace(spec, max_concurrent=1), {"CPU": 8.0}) == (1.0, 0.0, 1)
    assert plan_resources(replace(spec, cpu=2.0), {"CPU": 5.0}) == (2.0, 0.0, 2)
    assert plan_resources(replace(spec, gpu="auto"), {"CPU": 2.0}) == (1.0, 0.0, 2)  # auto: CPU without GPUs
    assert plan_resources(replace(spec, gpu="auto"), {"CPU": 16.0, "GPU": 1.0}) == (1.0, 0.25, 4)
    assert plan_resources(replace(spec, gpu=0.5), {"CPU": 16.0, "GPU": 2.0}) == (1.0, 0.5, 4)
    with pytest.raises(ConfigError, match=r"^resources\.gpu: 0\.5 GPU per trial requested but the Ray cluster has no"):
        plan_resources(replace(spec, gpu=0.5), {"CPU": 2.0})
    with pytest.raises(ConfigError, match=r"^resources\.gpu: 2\.0 GPU per trial is more than the cluster's 1 GPUs"):
        plan_resources(replace(spec, gpu=2.0), {"CPU": 2.0, "GPU": 1.0})
    with pytest.raises(ConfigError, match=r"^resources\.cpu: 4 CPUs per trial is more than the cluster's 2 CPUs"):
        plan_resources(replace(spec, cpu=4.0), {"CPU": 2.0})


def testerror_line_names_the_trials_own_exception_not_rays_wrapper():
    from ray.exceptions import RayTaskError

    cause = FloatingPointError("training loss is nan at epoch 2; lower optim.lr\nsecond line")
    wrapped = RayTaskError("train", "Traceback (most recent call last): ...", cause,
                           proctitle="\x1b[36mray::ImplicitFunc.train()\x1b[39m", pid=1, ip="10.0.0.1")
    wrapped = wrapped.as_instanceof_cause()  # what Tune hands back: RayTaskError(FloatingPointError)
    assert error_line(wrapped) == "FloatingPointError: training loss is nan at epoch 2; lower optim.lr"
    assert error_line(RuntimeError("\x1b[31mboom\x1b[0m")) == "RuntimeError: boom"


def test_resume_under_a_name_that_has_no_folder_is_refused_from_python_too(tmp_path):
    """The Python API refuses a misspelt --name like the command line does, before Ray starts or a folder is made."""
    from latune.errors import UserError
    from latune.sweep.run import run_sweep

    spec = parse_sweep({"space": {"la.delta": [0.0, 0.1]}})
    with pytest.raises(UserError, match=r"^--resume: no experiment folder 'typo' under "):
        run_sweep(spec, storage=str(tmp_path / "runs"), name="typo", resume=True, mlflow=False)
    assert not (tmp_path / "runs").exists()
    import ray
    assert not ray.is_initialized()
