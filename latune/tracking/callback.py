"""The Ray Tune callback that records a sweep in MLflow, from the driver.

Tune calls it in the driver process for every trial event, whichever node the trial runs on, so
worker nodes need no access to MLflow and there is exactly one writer (no sqlite "database is
locked", no duplicate runs). It only turns Tune's events into ``TrialRecord`` s and hands copies to
one writer thread, where ``SweepTracker`` (latune.tracking) talks to MLflow: opening the store (seconds
for a new sqlite file), plots and uploads overlap training instead of holding up Tune's loop, and an
MLflow failure never reaches Tune.
"""

from __future__ import annotations

import functools
import json
import os
import queue
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from ray import tune

from latune.analysis.constraints import to_mapping
from latune.sweep.spec import SweepSpec, expected_trials
from latune.tracking.guard import is_outage
from latune.tracking.tracker import SweepTracker
from latune.tracking.records import (SweepInfo, TrialRecord, TrialStatus, reported_every_epoch, resolve_tracking_uri,
                                     unmeasured_at_end, was_pruned)

__all__ = ["MlflowCallback", "tracking_callbacks", "use_callbacks_on_restore"]

# Tune's trial status -> the MLflow status a trial ends the session with (other statuses: interrupted)
_FINAL_STATUS: dict[str, TrialStatus] = {"TERMINATED": "FINISHED", "ERROR": "FAILED"}
_CLOSE = object()  # tells the writer thread the sweep has ended
_JOIN_TIMEOUT_S = 600.0  # the sweep waits this long at most for the last MLflow writes
STRICT_ENV = "LATUNE_STRICT_TRACKING"  # "1": a bug in the MLflow bookkeeping raises (tests/conftest.py sets it)


def _strict() -> bool:
    """Read at each failure, not at construction: the callback is pickled with the Tuner and may run elsewhere."""
    return os.environ.get(STRICT_ENV) == "1"


def _never_raises(hook: Callable[..., None]) -> Callable[..., None]:
    """A Tune hook that raises ends the whole sweep: a bug in bookkeeping must not cost the training. Under
    LATUNE_STRICT_TRACKING=1 (the tests) a bug does raise, so that it fails the test; outages never do."""
    @functools.wraps(hook)
    def guarded(self: MlflowCallback, *args: Any, **kwargs: Any) -> None:
        try:
            hook(self, *args, **kwargs)
        except Exception as err:  # noqa: BLE001
            if _strict() and not is_outage(err):
                raise
            if hook.__name__ not in self._failed_hooks:
                self._failed_hooks.add(hook.__name__)
                warnings.warn(f"latune MLflow callback {hook.__name__} failed ({type(err).__name__}: {err}); "
                              "training goes on, backfill with python -m latune.sync", RuntimeWarning, stacklevel=2)
    return guarded


class MlflowCallback(tune.Callback):
    """Logs each trial as a child run of the sweep's parent run (layout: latune.tracking).

    Pickled with the Tuner (Tune saves its RunConfig), so only the settings are pickled: the writer
    starts in ``setup``, records are made as trials show up, and runs are found again by their tags.
    """

    def __init__(self, sweep: SweepInfo, tracking_uri: str, log_checkpoints: bool = False) -> None:
        self.sweep = sweep
        self.tracking_uri = tracking_uri
        self.log_checkpoints = log_checkpoints
        self._records: dict[str, TrialRecord] = {}
        self._queue: queue.Queue | None = None  # record snapshots (and _CLOSE) for the writer thread
        self._writer: threading.Thread | None = None
        self._writer_errors: list[BaseException] = []  # what stopped the writer thread (raised at the end if strict)
        self._failed_hooks: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {"sweep": self.sweep, "tracking_uri": self.tracking_uri, "log_checkpoints": self.log_checkpoints}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    # -- Tune's hooks -------------------------------------------------------------------------------
    @_never_raises
    def setup(self, **info: Any) -> None:
        tracker = SweepTracker(self.sweep, self.tracking_uri, log_checkpoints=self.log_checkpoints)
        self._queue = queue.Queue()
        # daemon: a driver that dies must not hang on MLflow; a normal end joins it (on_experiment_end)
        self._writer = threading.Thread(target=self._write, args=(tracker, self._queue, self._writer_errors),
                                        name="latune-mlflow", daemon=True)
        self._writer.start()

    @_never_raises
    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        # a resumed sweep: trials that ended in an earlier session count for the Pareto front from the start
        ended = [t for t in trials if t.trial_id not in self._records and t.status in _FINAL_STATUS]
        if ended:
            self._update([self._ended(trial) for trial in ended])

    @_never_raises
    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self._record(trial)
        record.status = "RUNNING"
        self._update([record])

    @_never_raises
    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        record = self._record(trial)
        record.history.append({k: v for k, v in result.items() if k != "config"})
        record.status = "RUNNING"
        self._update([record])

    @_never_raises
    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._update([self._ended(trial, "TERMINATED")])

    @_never_raises
    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._update([self._ended(trial, "ERROR")])

    @_never_raises
    def on_experiment_end(self, trials: list, **info: Any) -> None:
        """The sweep ended or was interrupted: unfinished trials become KILLED (a resume revives them)."""
        records = []
        for trial in trials:
            record = self._ended(trial) if trial.status in _FINAL_STATUS else self._record(trial)
            if trial.status not in _FINAL_STATUS:
                record.status = "KILLED"
            records.append(record)
        if self._writer is None:
            return
        self._update(records)
        self._queue.put(_CLOSE)
        self._writer.join(timeout=_JOIN_TIMEOUT_S)
        if self._writer.is_alive():
            warnings.warn(f"MLflow logging did not finish within {_JOIN_TIMEOUT_S:.0f} s; backfill with "
                          f"python -m latune.sync {self.sweep.experiment_path}", RuntimeWarning, stacklevel=1)
        self._writer = None
        if self._writer_errors and _strict():  # a bug stopped the writer: fail the sweep (the test) on it
            raise self._writer_errors[0]

    # -- the writer thread --------------------------------------------------------------------------
    @staticmethod
    def _write(tracker: SweepTracker, events: queue.Queue, errors: list[BaseException]) -> None:
        """Apply the snapshots in order (all that are waiting at once); close the tracker at _CLOSE. What stops it
        goes to ``errors``."""
        try:
            MlflowCallback._drain(tracker, events)
        except Exception as err:  # noqa: BLE001 - the tracker forgives outages; this is a bug, and must not hang Tune
            errors.append(err)
            warnings.warn(f"latune MLflow writer stopped ({type(err).__name__}: {err}); backfill with "
                          f"python -m latune.sync {tracker.sweep.experiment_path}", RuntimeWarning, stacklevel=1)

    @staticmethod
    def _drain(tracker: SweepTracker, events: queue.Queue) -> None:
        if tracker.update():  # the parent run appears as soon as the sweep starts
            _announce(tracker)
        while True:
            batch = [events.get()]
            while True:
                try:
                    batch.append(events.get_nowait())
                except queue.Empty:
                    break
            tracker.update([item for item in batch if item is not _CLOSE])
            if any(item is _CLOSE for item in batch):
                if tracker.close():
                    _announce(tracker)
                return

    # -- records ------------------------------------------------------------------------------------
    def _update(self, records: Sequence[TrialRecord]) -> None:
        """Hand the writer thread snapshots (it must not see a history that grows while it reads it)."""
        if self._queue is not None:
            for record in records:
                self._queue.put(replace(record, history=list(record.history)))

    def _record(self, trial: Any) -> TrialRecord:
        """The trial's record; a trial seen for the first time with results behind it (a resumed sweep)
        gets its earlier epochs from Tune's result.json, so MLflow never has gaps."""
        record = self._records.get(trial.trial_id)
        if record is None:
            record = TrialRecord(trial.trial_id, dict(trial.config))
            if trial.last_result:
                record.history = _saved_results(trial)
            self._records[trial.trial_id] = record
        return record

    def _ended(self, trial: Any, status: str | None = None) -> TrialRecord:
        """The record of a trial that ended (``status``: Tune's, if the trial does not carry it yet). A trial
        Tune stopped before its last epoch (the sweep was interrupted) is KILLED: a resume continues it."""
        record = self._record(trial)
        record.status = _FINAL_STATUS[status or trial.status]
        if record.status == "FINISHED" and not reported_every_epoch(record):
            record.status, record.pruned = "KILLED", was_pruned(record)
        unmeasured = unmeasured_at_end(record, self.sweep.objectives) if record.status == "FINISHED" else None
        if unmeasured:  # one rule with results.parquet and Optuna (latune.analysis.outcome)
            record.status, record.error = "FAILED", unmeasured
        elif record.status == "FAILED":
            record.error = _error_text(trial)
        if record.status == "FINISHED" and self.log_checkpoints and trial.checkpoint is not None:
            record.checkpoint = (trial.checkpoint.filesystem, trial.checkpoint.path)
        return record


def _announce(tracker: SweepTracker) -> None:
    """Where to look: one line on stdout at the start and at the end of the sweep."""
    url = tracker.pareto_url()
    if url is None:  # a local store: the UI is one command away
        url = (f"run `mlflow ui --backend-store-uri {tracker.tracking_uri}` and open "
               f"{tracker.pareto_url('http://127.0.0.1:5000')}")
    print(f"MLflow: sweep run {tracker.parent_run_id} in experiment {tracker.experiment!r}; trials by Pareto rank: "
          f"{url}", flush=True)


def _error_text(trial: Any) -> str:
    """The trial's error.txt: the driver's local copy (Tune syncs it to storage only later), else storage's."""
    try:
        if trial.error_file:
            with open(trial.error_file) as handle:
                return handle.read()
    except OSError:
        pass
    error = trial.get_error()
    return str(error) if error is not None else "the trial failed (Tune kept no error text)"


def _saved_results(trial: Any) -> list[dict[str, Any]]:
    """Every result Tune wrote to the trial's result.json (on any pyarrow filesystem)."""
    storage = trial.storage
    try:
        with storage.storage_filesystem.open_input_stream(f"{storage.trial_fs_path}/result.json") as handle:
            lines = handle.read().decode().splitlines()
    except (FileNotFoundError, OSError):
        return [dict(trial.last_result)]
    return [json.loads(line) for line in lines if line.strip()]


def tracking_callbacks(spec: SweepSpec, experiment_path: str, *, enabled: bool = True, tracking_uri: str | None = None,
                       experiment: str | None = None, log_checkpoints: bool = False) -> list[MlflowCallback]:
    """The callbacks to give Tune's RunConfig: one MlflowCallback, or none when not ``enabled``.

    Either way the sweep's identity is saved in Tune's experiment folder (``latune_sweep.json``), so
    ``python -m latune.sync`` can backfill MLflow later. ``tracking_uri`` None: ``$MLFLOW_TRACKING_URI``,
    else MLflow's default sqlite store in the current directory (made absolute here, before Tune runs).
    """
    text = None
    if spec.path:
        try:
            with open(spec.path) as handle:
                text = handle.read()
        except OSError:
            pass
    sweep = SweepInfo(
        name=spec.name, experiment_path=experiment_path, objectives=dict(spec.objectives),
        data=str(spec.base.get("data.name", "digits")), searched=tuple(d.key for d in spec.space), base=dict(spec.base),
        search={"algorithm": spec.algorithm, "sampler": spec.sampler, "seed": spec.seed, "num_samples": spec.num_samples,
                **({"early_stopping": spec.early_stopping.describe()} if spec.early_stopping else {})},
        constraints=to_mapping(spec.constraints),
        trials=expected_trials(spec),
        sweep_file=spec.path, sweep_text=text, tracking_uri=resolve_tracking_uri(tracking_uri),
        mlflow_experiment=experiment or spec.name, provenance=_provenance_history(experiment_path))
    sweep.save()
    return [MlflowCallback(sweep, sweep.tracking_uri, log_checkpoints)] if enabled else []


def _provenance_history(experiment_path: str) -> list[dict[str, Any]]:
    """The provenance of every earlier start or resume of this sweep (its saved SweepInfo), then this one's: the
    trials of a resumed sweep may have run different code, and a record (benchmarks/la_record.py) says which."""
    import time

    from latune.provenance import provenance

    earlier = SweepInfo.load(experiment_path)
    return [*(earlier.provenance if earlier else []), {**provenance(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]


def use_callbacks_on_restore(tuner: Any, callbacks: Sequence[tune.Callback]) -> None:
    """Give a restored Tuner this invocation's tracking callbacks.

    ``Tuner.restore`` brings back the RunConfig pickled when the sweep first started, callbacks
    included; a resume must log where it is told now (another --tracking-uri, or --no-mlflow). Ray has
    no public way to change a restored RunConfig, hence the private attribute, checked.
    """
    internal = getattr(tuner, "_local_tuner", None)
    if internal is None or not hasattr(internal, "get_run_config"):
        import warnings

        warnings.warn("cannot replace the restored Tuner's callbacks (Ray Client?): the resumed sweep logs to "
                      "MLflow with the settings it was started with", RuntimeWarning, stacklevel=2)
        return
    run_config = internal.get_run_config()
    # latune's own callbacks (MLflow, the progress table) are this invocation's; anything else is kept
    kept = [c for c in (run_config.callbacks or []) if not type(c).__module__.startswith("latune.")]
    run_config.callbacks = kept + list(callbacks)
