"""The early-stopping scheduler: asynchronous successive halving over Pareto ranks, as a Ray Tune scheduler.

Tune calls ``on_trial_result`` for every epoch a trial reports; at a rung epoch (latune.sweep.rungs) the
trial's objectives and constraint violation are recorded for that rung and the trial goes on (CONTINUE)
or is stopped (STOP) by ``rungs.continues``. Tune marks the result a trial was stopped on with
``done: True``; latune.analysis.outcome reads that as PRUNED everywhere (results.parquet, Optuna, MLflow).

A trial is judged at most once per rung, whatever happens: a retried or resumed trial that reports a rung
epoch again is not judged again, and a trial once stopped is stopped again should it ever report (a
sweep interrupted between the decision and Tune's stop). Tune saves its searcher with the experiment
but not its scheduler (``Tuner.restore`` brings back the scheduler pickled when the sweep started), so
the scheduler keeps its rung records in ``latune_rungs.json`` in the experiment folder (any pyarrow
filesystem), written before each decision is returned and read back in ``set_search_properties``,
which Tune calls at the start of every ``fit``, the resumed ones included.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from latune.analysis.constraints import Constraint
from latune.sweep.rungs import EarlyStopping, continues, rung_entry
from latune.sweep.spec import SweepSpec

__all__ = ["ParetoHalvingScheduler", "RUNGS_FILE", "pareto_scheduler"]

RUNGS_FILE = "latune_rungs.json"  # in Tune's experiment folder: the scheduler's rung records


class ParetoHalvingScheduler(FIFOScheduler):
    """Multi-objective ASHA over the sweep's ``objectives`` (metric -> "max" | "min"), judging results by
    epoch (the trainable's ``epoch``, which a resumed trial continues, unlike Tune's iteration count)."""

    def __init__(self, objectives: Mapping[str, str], settings: EarlyStopping, constraints: Sequence[Constraint] = (),
                 state_path: str | None = None) -> None:
        super().__init__()
        self.objectives = dict(objectives)
        self.settings = settings
        self.constraints = tuple(constraints)
        self.state_path = state_path  # folder or URI of the experiment; None = keep nothing (tests)
        self.rungs: dict[int, dict[str, list[float]]] = {m: {} for m in settings.rungs}  # epoch -> trial -> entry
        self.stopped: dict[str, int] = {}  # trial id -> the rung epoch it was stopped at

    # -- Tune's hooks -------------------------------------------------------------------------------
    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Tune's start of every fit: load the rung records of an earlier session (a resumed sweep)."""
        if self.state_path is not None:
            self.restore(self.state_path)
        return True

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        return self.judge(trial.trial_id, result)

    def debug_string(self) -> str:
        recorded = "/".join(str(len(self.rungs[m])) for m in self.settings.rungs)
        return (f"latune Pareto ASHA: {self.settings.describe()}; results per rung {recorded}; "
                f"pruned {len(self.stopped)}")

    def save(self, checkpoint_path: str) -> None:
        """Write the rung records to ``checkpoint_path/RUNGS_FILE`` (local folder or pyarrow URI)."""
        filesystem, root = _filesystem(checkpoint_path)
        state = {"rungs": {str(m): entries for m, entries in self.rungs.items()}, "stopped": self.stopped,
                 "objectives": list(self.objectives)}
        filesystem.create_dir(root, recursive=True)
        target = f"{root.rstrip('/')}/{RUNGS_FILE}"
        with filesystem.open_output_stream(target + ".tmp") as out:
            out.write(json.dumps(state).encode())
        filesystem.move(target + ".tmp", target)  # never a half-written file to resume from

    def restore(self, checkpoint_path: str) -> None:
        """Merge the records saved in ``checkpoint_path/RUNGS_FILE`` (nothing when there is none)."""
        filesystem, root = _filesystem(checkpoint_path)
        try:
            with filesystem.open_input_stream(f"{root.rstrip('/')}/{RUNGS_FILE}") as handle:
                state = json.loads(handle.read().decode())
        except (FileNotFoundError, OSError):
            return
        for epoch, entries in state.get("rungs", {}).items():
            self.rungs.setdefault(int(epoch), {}).update(entries)
        self.stopped.update({k: int(v) for k, v in state.get("stopped", {}).items()})

    # -- the decision -------------------------------------------------------------------------------
    def judge(self, trial_id: str, result: Mapping[str, Any]) -> str:
        """CONTINUE or STOP for one reported result (module docstring)."""
        if trial_id in self.stopped:
            return TrialScheduler.STOP
        epoch = result.get("epoch")
        if not isinstance(epoch, (int, float)):
            return TrialScheduler.CONTINUE
        decision, recorded_now = TrialScheduler.CONTINUE, False
        for milestone in self.settings.rungs:
            recorded = self.rungs.setdefault(milestone, {})
            if epoch < milestone or trial_id in recorded:
                continue
            recorded[trial_id] = rung_entry(result, list(self.objectives), self.constraints)
            recorded_now = True
            entries = list(recorded.values())  # arrival order: this trial's entry is the last
            if not continues([e[:-1] for e in entries], list(self.objectives.values()), len(entries) - 1,
                             self.settings.reduction_factor, [e[-1] for e in entries]):
                self.stopped[trial_id] = milestone
                decision = TrialScheduler.STOP
                break
        if recorded_now and self.state_path is not None:
            self.save(self.state_path)
        return decision


def _filesystem(location: str) -> tuple[Any, str]:
    import pyarrow.fs

    return pyarrow.fs.FileSystem.from_uri(location if "://" in location else f"file://{os.path.abspath(location)}")


def pareto_scheduler(spec: SweepSpec, experiment_path: str) -> ParetoHalvingScheduler | None:
    """The sweep's early-stopping scheduler, keeping its rungs in ``experiment_path``; None when it is off."""
    if spec.early_stopping is None:
        return None
    return ParetoHalvingScheduler(spec.objectives, spec.early_stopping, spec.constraints, state_path=experiment_path)
