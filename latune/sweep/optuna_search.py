"""The Optuna searcher of ``algorithm: optuna`` sweeps: Ray's OptunaSearch, telling Optuna what happened.

Ray's OptunaSearch tells Optuna COMPLETE for every trial that ends with objective values, so a trial the
early-stopping scheduler stopped at a rung would enter ``study.best_trials`` and the sampler's model with
its partial-budget values. Here a trial's end is told as:

- FAIL: it raised, or it trained its budget but an objective is missing or NaN (Ray's tells COMPLETE, or
  leaves the trial RUNNING when ``tell`` raises on NaN);
- PRUNED: it reported fewer epochs than its budget (optuna-dashboard shows it as pruned), NaN values or not;
- COMPLETE: otherwise, with its final objective values.

That is latune.analysis.outcome's one rule, so Optuna, results.parquet and MLflow agree on every trial.

PRUNED and COMPLETE trials carry user attributes ``epochs_trained``, each objective's last value (a pruned
trial's values at its rung) and ``feasible``, and, with sweep constraints, the constraint values Optuna's
samplers rank by (<= 0 holds; latune.analysis.constraints.bound_gaps): set on the trial before ``tell``
with ``Trial.set_constraint`` (Optuna >= 5, where samplers read them from the trial), or through the
sampler's ``constraints_func`` from a user attribute (Optuna 4). The study names its objectives
(``set_metric_names``), so optuna-dashboard labels its Pareto-front axes with them.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from ray.tune.search import ConcurrencyLimiter
from ray.tune.search.optuna import OptunaSearch

from latune.analysis.constraints import Constraint, bound_gaps
from latune.analysis.outcome import unmeasured_error
from latune.config import ConfigError, from_flat, resolve
from latune.sweep.samplers import make_sampler
from latune.sweep.spec import SweepSpec

__all__ = ["LatuneOptunaSearch", "optuna_search"]

_CONSTRAINTS_ATTR = "latune.constraints"  # Optuna 4: the constraint values, read by constraints_func
_HAS_SET_CONSTRAINT = hasattr(optuna.trial.Trial, "set_constraint")  # Optuna >= 5


def _constraints_from_attrs(trial: optuna.trial.FrozenTrial) -> Sequence[float]:
    """constraints_func for Optuna 4 samplers (module level: the searcher is pickled with the sampler)."""
    return trial.user_attrs.get(_CONSTRAINTS_ATTR, ())


class LatuneOptunaSearch(OptunaSearch):
    """OptunaSearch that tells FAIL, PRUNED or COMPLETE as the module docstring says. ``budget``: the
    sweep's optim.epochs (a trial whose config sets optim.epochs is measured against its own)."""

    def __init__(self, *args: Any, budget: int, constraints: Sequence[Constraint] = (), **kwargs: Any) -> None:
        self._budget = budget
        self._constraints = tuple(constraints)
        super().__init__(*args, **kwargs)

    def _setup_study(self, mode: str | list) -> None:
        super()._setup_study(mode)
        if isinstance(self._metric, list):
            with warnings.catch_warnings():  # experimental since Optuna 3.2, and what the dashboard reads
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                self._ot_study.set_metric_names(list(self._metric))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id not in self._ot_trials or trial_id in self._completed_trials:
            super().on_trial_complete(trial_id, result, error)  # Ray's warning for a repeated completion
            return
        ot_trial = self._ot_trials[trial_id]
        epochs = int((result or {}).get("epoch") or 0)
        complete = result is not None and epochs >= self._budget_of(result)
        unmeasured = complete and unmeasured_error(result, self._metric) is not None
        if error or result is None or unmeasured:
            self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.FAIL)
        elif complete:
            self._annotate(ot_trial, result, epochs)
            self._ot_study.tell(ot_trial, [float(result[m]) for m in self._metric],
                                state=optuna.trial.TrialState.COMPLETE)
        else:  # stopped at a rung: pruned whatever its values there, as in results.parquet and MLflow
            self._annotate(ot_trial, result, epochs)
            self._ot_study.tell(ot_trial, state=optuna.trial.TrialState.PRUNED)
        self._completed_trials.add(trial_id)

    def _budget_of(self, result: Mapping[str, Any]) -> int:
        config = {k[len("config/"):]: v for k, v in result.items() if k.startswith("config/")}
        if "optim.epochs" not in config:
            return self._budget
        try:
            return resolve(from_flat(config)).optim.epochs
        except ConfigError:
            return self._budget

    def _annotate(self, ot_trial: optuna.trial.Trial, result: Mapping[str, Any], epochs: int) -> None:
        ot_trial.set_user_attr("epochs_trained", epochs)
        for metric in self._metric:
            value = result.get(metric)
            ot_trial.set_user_attr(metric, float(value) if isinstance(value, (int, float)) else math.nan)
        gaps = {key: gap for key, gap in bound_gaps(result, self._constraints).items() if not math.isnan(gap)}
        ot_trial.set_user_attr("feasible", all(gap <= 0 for gap in gaps.values()))
        if not gaps:
            return
        if _HAS_SET_CONSTRAINT:
            for key, gap in gaps.items():
                ot_trial.set_constraint(key, gap)
        else:
            ot_trial.set_user_attr(_CONSTRAINTS_ATTR, list(gaps.values()))


def optuna_search(spec: SweepSpec, storage_url: str, study_name: str, concurrent: int,
                  budget: int) -> ConcurrencyLimiter:
    """The sweep's searcher: one objective per metric (multi-objective), the sweep's sampler and seed,
    the study in ``storage_url`` (Optuna RDB), at most ``concurrent`` trials asked for at once."""
    constraints_func = _constraints_from_attrs if spec.constraints and not _HAS_SET_CONSTRAINT else None
    sampler = make_sampler(spec.sampler, seed=spec.seed, num_samples=spec.num_samples,
                           constraints_func=constraints_func)
    search = LatuneOptunaSearch(
        metric=list(spec.objectives), mode=list(spec.objectives.values()), sampler=sampler,
        study_name=study_name, storage=optuna.storages.RDBStorage(storage_url), budget=budget,
        constraints=spec.constraints)
    return ConcurrencyLimiter(search, max_concurrent=concurrent)
