"""The early-stopping scheduler: asynchronous successive halving over Pareto ranks, as a Ray Tune scheduler.

Tune calls ``on_trial_result`` for every epoch a trial reports; at a rung epoch (latune.sweep.rungs) the
trial's objectives and constraint violation are recorded for that rung and the trial goes on (CONTINUE)
or is stopped (STOP) by ``rungs.continues``. Tune marks the result a trial was stopped on with
``done: True``; latune.analysis.outcome reads that as PRUNED everywhere (results.parquet, Optuna, MLflow).

A trial is judged at most once per rung, whatever happens: a retried or resumed trial that reports a rung
epoch again is not judged again, and a trial once stopped is stopped again should it ever report (a
sweep interrupted between the decision and Tune's stop). Tune saves its searcher with the experiment but
not its scheduler (``Tuner.restore`` unpickles the scheduler as it was when the sweep started), so a
resumed sweep rebuilds the rung records from Tune's own results: ``on_trial_add``, which Tune calls for
every restored trial, replays the trial's result.json. Tune writes a result there in the same step in
which the scheduler judged it, so the records come back exactly as they were, each in its rung's arrival
order (Tune's timestamps), and a trial's STOP comes back from its ``done`` flag.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from latune.analysis.constraints import Constraint
from latune.analysis.outcome import stopped_early
from latune.sweep.rungs import EarlyStopping, continues, rung_entry
from latune.sweep.spec import SweepSpec

__all__ = ["ParetoHalvingScheduler", "pareto_scheduler"]


class ParetoHalvingScheduler(FIFOScheduler):
    """Multi-objective ASHA over the sweep's ``objectives`` (metric -> "max" | "min"), judging results by
    epoch (the trainable's ``epoch``, which a resumed trial continues, unlike Tune's iteration count).

    ``rungs`` maps each rung epoch to ``{trial id: [objective values..., violation, timestamp]}`` in arrival
    order; ``stopped`` maps each stopped trial to the rung epoch it was stopped at.
    """

    _supports_buffered_results = False  # one result per call: a trial stops at its rung, not epochs later

    def __init__(self, objectives: Mapping[str, str], settings: EarlyStopping,
                 constraints: Sequence[Constraint] = ()) -> None:
        super().__init__()
        self.objectives = dict(objectives)
        self.settings = settings
        self.constraints = tuple(constraints)
        self.rungs: dict[int, dict[str, list[float]]] = {m: {} for m in settings.rungs}
        self.stopped: dict[str, int] = {}

    # -- Tune's hooks -------------------------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # the objectives are the scheduler's own; Tune's single metric and mode do not apply

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        """A new trial, or one restored with results behind it (a resumed sweep): replay those."""
        if (trial.last_result or {}).get("epoch") is not None:  # a new trial's holds only Tune's bookkeeping
            self.replay(trial.trial_id, _saved_results(trial))

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self.judge(trial.trial_id, result)

    def debug_string(self) -> str:
        recorded = "/".join(str(len(self.rungs[m])) for m in self.settings.rungs)
        return (f"latune Pareto ASHA: {self.settings.describe()}; results per rung {recorded}; "
                f"pruned {len(self.stopped)}")

    def save(self, checkpoint_path: str) -> None:
        """TrialScheduler's checkpoint API: the records as JSON in the file ``checkpoint_path``."""
        state = {"rungs": {str(m): entries for m, entries in self.rungs.items()}, "stopped": self.stopped}
        Path(checkpoint_path).write_text(json.dumps(state))

    def restore(self, checkpoint_path: str) -> None:
        state = json.loads(Path(checkpoint_path).read_text())
        self.rungs = {int(m): dict(entries) for m, entries in state["rungs"].items()}
        self.stopped = {k: int(v) for k, v in state["stopped"].items()}

    # -- the decision -------------------------------------------------------------------------------
    def judge(self, trial_id: str, result: Mapping[str, Any]) -> str:
        """CONTINUE or STOP for one reported result (module docstring)."""
        if trial_id in self.stopped:
            return TrialScheduler.STOP
        for milestone in self._new_rungs(trial_id, result):
            recorded = self.rungs[milestone]
            recorded[trial_id] = self._entry(result)
            entries = list(recorded.values())
            if not continues([e[:-2] for e in entries], list(self.objectives.values()), list(recorded).index(trial_id),
                             self.settings.reduction_factor, [e[-2] for e in entries],
                             front_order=self.settings.front_order, min_results=self.settings.min_results):
                self.stopped[trial_id] = milestone
                return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def replay(self, trial_id: str, history: Sequence[Mapping[str, Any]]) -> None:
        """Record what ``judge`` recorded for these results of one trial (in the order Tune received them),
        without judging again; a result marked ``done`` before the budget is the trial's STOP."""
        for result in history:
            for milestone in self._new_rungs(trial_id, result):
                self.rungs[milestone][trial_id] = self._entry(result)
                stamps = self.rungs[milestone]
                self.rungs[milestone] = dict(sorted(stamps.items(), key=lambda item: item[1][-1]))  # stable
        if stopped_early(history, self.settings.budget):
            reached = [m for m in self.settings.rungs if trial_id in self.rungs[m]]
            self.stopped[trial_id] = reached[-1] if reached else 0

    def _new_rungs(self, trial_id: str, result: Mapping[str, Any]) -> list[int]:
        """The rungs this result reaches that hold nothing of this trial yet."""
        epoch = result.get("epoch")
        if not isinstance(epoch, (int, float)):
            return []
        return [m for m in self.settings.rungs if m <= epoch and trial_id not in self.rungs.setdefault(m, {})]

    def _entry(self, result: Mapping[str, Any]) -> list[float]:
        stamp = result.get("timestamp")
        return rung_entry(result, list(self.objectives), self.constraints) + [
            float(stamp) if isinstance(stamp, (int, float)) else time.time()]


def _saved_results(trial: Any) -> list[dict[str, Any]]:
    """Every result Tune wrote to the trial's result.json (any pyarrow filesystem), in order."""
    storage = trial.storage
    try:
        with storage.storage_filesystem.open_input_stream(f"{storage.trial_fs_path}/result.json") as handle:
            lines = handle.read().decode().splitlines()
    except (OSError, RuntimeError):  # not written yet, or storage Tune has not set up: the last result alone
        return [dict(trial.last_result)]
    results = []
    for line in lines:
        try:
            results.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a driver that died while writing it
            continue
    return results


def pareto_scheduler(spec: SweepSpec) -> ParetoHalvingScheduler | None:
    """The sweep's early-stopping scheduler; None when it is off."""
    if spec.early_stopping is None:
        return None
    return ParetoHalvingScheduler(spec.objectives, spec.early_stopping, spec.constraints)
