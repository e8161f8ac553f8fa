"""latune.sweep.optuna_search: what Optuna is told when a trial ends (real Optuna sqlite storage, no Ray started)."""

import math

import optuna
import pytest
from ray import tune

from latune.analysis.constraints import Constraint
from latune.sweep.optuna_search import LatuneOptunaSearch, optuna_search
from latune.sweep.spec import parse_sweep

OBJECTIVES = {"clean_acc": "max", "robust_acc": "max", "robust_class_error_sd": "min"}
STATE = optuna.trial.TrialState


def _search(tmp_path, constraints=()):
    search = LatuneOptunaSearch(metric=list(OBJECTIVES), mode=list(OBJECTIVES.values()),
                                sampler=optuna.samplers.RandomSampler(seed=0), study_name="s",
                                storage=optuna.storages.RDBStorage(f"sqlite:///{tmp_path}/optuna.db"), budget=4,
                                constraints=constraints)
    assert search.set_search_properties(None, None, {"la.delta": tune.uniform(0.0, 0.5)})
    return search


def _result(epoch, robust=0.5, **extra):
    return {"clean_acc": 0.9, "robust_acc": robust, "robust_class_error_sd": 0.2, "epoch": epoch, **extra}


def _trials(tmp_path):
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/optuna.db")
    return study, {t.number: t for t in study.trials}


def test_a_trial_stopped_before_its_budget_is_pruned_never_complete(tmp_path):
    search = _search(tmp_path)
    for trial_id in ("pruned", "complete", "error", "nan", "nan_at_rung"):
        search.suggest(trial_id)
    search.on_trial_complete("pruned", _result(2, robust=0.3))
    search.on_trial_complete("complete", _result(4))
    search.on_trial_complete("error", _result(1), error=True)
    search.on_trial_complete("nan", _result(4, robust=math.nan))
    search.on_trial_complete("nan_at_rung", _result(1, robust=math.nan))
    search.on_trial_complete("complete", _result(4))  # a repeated completion changes nothing

    study, trials = _trials(tmp_path)
    # one rule with results.parquet and MLflow (latune.analysis.outcome): stopped at a rung is PRUNED, NaN or not;
    # a NaN objective after the whole budget is FAIL
    assert [trials[i].state for i in range(5)] == [STATE.PRUNED, STATE.COMPLETE, STATE.FAIL, STATE.FAIL, STATE.PRUNED]
    assert math.isnan(trials[4].user_attrs["robust_acc"]) and trials[4].user_attrs["epochs_trained"] == 1
    assert study.metric_names == list(OBJECTIVES)  # optuna-dashboard labels the front's axes with them
    pruned, complete = trials[0], trials[1]
    assert pruned.values is None and pruned.user_attrs["epochs_trained"] == 2
    assert pruned.user_attrs["robust_acc"] == pytest.approx(0.3)  # its last values, kept
    assert complete.values == pytest.approx([0.9, 0.5, 0.2]) and complete.user_attrs["epochs_trained"] == 4
    assert [t.number for t in study.best_trials] == [1]


def test_a_trial_that_sets_its_own_epochs_is_measured_against_them(tmp_path):
    search = _search(tmp_path)
    search.suggest("short")
    search.on_trial_complete("short", _result(2, **{"config/optim.epochs": 2, "config/data.name": "digits"}))
    assert _trials(tmp_path)[1][0].state == STATE.COMPLETE


def test_constraint_values_reach_the_study(tmp_path):
    search = _search(tmp_path, constraints=[Constraint("robust_acc", min=0.4), Constraint("clean_acc", max=0.95)])
    search.suggest("feasible")
    search.suggest("infeasible")
    search.on_trial_complete("feasible", _result(4, robust=0.5))
    search.on_trial_complete("infeasible", _result(2, robust=0.1))
    _, trials = _trials(tmp_path)
    feasible, infeasible = trials[0], trials[1]
    assert feasible.user_attrs["feasible"] is True and infeasible.user_attrs["feasible"] is False
    if hasattr(optuna.trial.Trial, "set_constraint"):  # Optuna >= 5: what its samplers and dashboard read
        assert feasible.constraints == pytest.approx({"robust_acc>=0.4": -0.1, "clean_acc<=0.95": -0.05})
        assert infeasible.constraints["robust_acc>=0.4"] == pytest.approx(0.3)


def test_the_sweeps_searcher_has_the_sweeps_sampler_and_names(tmp_path):
    spec = parse_sweep({"space": {"la.delta": {"uniform": [0.0, 0.3]}}, "search": {"algorithm": "optuna", "seed": 3},
                        "constraints": {"robust_acc": {"min": 0.2}}})
    limiter = optuna_search(spec, f"sqlite:///{tmp_path}/o.db", "study", concurrent=2, budget=10)
    inner = limiter.searcher
    assert isinstance(inner, LatuneOptunaSearch) and inner._budget == 10
    assert isinstance(inner._sampler, optuna.samplers.TPESampler) and inner._constraints == spec.constraints


@pytest.mark.parametrize(("name", "kind"), [("nsga2", optuna.samplers.NSGAIISampler),
                                            ("tpe", optuna.samplers.TPESampler), ("gp", optuna.samplers.GPSampler),
                                            ("random", optuna.samplers.RandomSampler)])
def test_every_sampler_of_the_sweep_file_reaches_the_searcher(tmp_path, name, kind):
    spec = parse_sweep({"space": {"la.delta": {"uniform": [0.0, 0.3]}},
                        "search": {"algorithm": "optuna", "sampler": name, "num_samples": 16}})
    inner = optuna_search(spec, f"sqlite:///{tmp_path}/o.db", "study", concurrent=2, budget=10).searcher
    assert isinstance(inner._sampler, kind)
