"""Backfill MLflow from Tune's files: ``python -m latune.sync SWEEP_DIR [--tracking-uri URI]``.

For a sweep whose tracking server was down (or that ran with --no-mlflow): reads every trial folder
of Tune's experiment folder (``params.json``, the ``result.json`` lines, ``error.txt``) and brings
MLflow up to date with latune.tracking's layout: existing runs are found by their tags, only epochs
MLflow lacks are added, so running it twice changes nothing. Run it after the sweep has ended (a
live sweep logs by itself). SWEEP_DIR may be a local folder or a pyarrow filesystem URI (s3://...).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from latune.errors import UserError
from latune.storage import filesystem
from latune.tracking.tracker import SweepTracker
from latune.tracking.records import (SWEEP_INFO_FILE, SweepInfo, TrialRecord, reported_every_epoch, unmeasured_at_end,
                                    was_pruned)

__all__ = ["read_trials", "sync"]

_TRIAL_ID = re.compile(r"_([0-9a-f]{5}_\d{5})_")  # Tune's trial folder: <trainable>_<trial id>_<index>_<params>_<time>


def _read_text(filesystem: Any, path: str) -> str | None:
    try:
        with filesystem.open_input_stream(path) as handle:
            return handle.read().decode()
    except (FileNotFoundError, OSError):
        return None


def _results(text: str) -> list[dict[str, Any]]:
    """result.json's lines; a line cut short (the driver died while writing it) is skipped."""
    results = []
    for line in text.splitlines():
        try:
            results.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return results


def read_trials(experiment_path: str, objectives: Iterable[str] = ()) -> list[TrialRecord]:
    """One record per trial folder (a folder with params.json), status from the files: FINISHED when it
    reported its last epoch (optim.epochs of its resolved config), else FAILED when Tune wrote
    error.txt, else KILLED: ``pruned`` when its last result is the one the early-stopping scheduler stopped
    it on (latune.analysis.outcome), otherwise interrupted (a resume continues it). A finished trial without
    one of ``objectives`` at its last epoch is FAILED (latune.analysis.outcome)."""
    import pyarrow.fs

    fs, root = filesystem(experiment_path)
    records = []
    folders = [info for info in fs.get_file_info(pyarrow.fs.FileSelector(root))
               if info.type == pyarrow.fs.FileType.Directory]
    for folder in sorted(folders, key=lambda info: info.path):
        params = _read_text(fs, f"{folder.path}/params.json")
        if params is None:
            continue
        history = _results(_read_text(fs, f"{folder.path}/result.json") or "")
        match = _TRIAL_ID.search(folder.base_name)
        trial_id = next((str(r["trial_id"]) for r in history if r.get("trial_id")), None) or (
            match.group(1) if match else folder.base_name)
        record = TrialRecord(trial_id, json.loads(params), history)
        error = _read_text(fs, f"{folder.path}/error.txt")
        record.status = "FINISHED" if reported_every_epoch(record) else ("FAILED" if error else "KILLED")
        record.error = error if record.status == "FAILED" else None
        unmeasured = unmeasured_at_end(record, objectives) if record.status == "FINISHED" else None
        if unmeasured:  # one rule with results.parquet and Optuna (latune.analysis.outcome)
            record.status, record.error = "FAILED", unmeasured
        record.pruned = record.status == "KILLED" and was_pruned(record)
        checkpoints = sorted(info.path for info in fs.get_file_info(pyarrow.fs.FileSelector(folder.path))
                             if info.type == pyarrow.fs.FileType.Directory and info.base_name.startswith("checkpoint_"))
        record.checkpoint = (fs, checkpoints[-1]) if checkpoints else None
        records.append(record)
    return records


def sync(experiment_path: str, *, tracking_uri: str | None = None, experiment: str | None = None,
         log_checkpoints: bool = False) -> SweepTracker:
    """Bring MLflow up to date with the sweep in ``experiment_path``; returns the tracker (``.stats``).

    tracking_uri None: the one the sweep logged to (saved in its folder), else $MLFLOW_TRACKING_URI or
    MLflow's default store. MLflow errors raise (MlflowException).
    """
    from latune.tracking.records import resolve_tracking_uri

    location = experiment_path if "://" in experiment_path else os.path.abspath(experiment_path)
    sweep = SweepInfo.load(location)
    if sweep is None:
        raise UserError(f"{experiment_path}: no {SWEEP_INFO_FILE}; not the folder of a latune sweep "
                        "(python -m latune.sweep prints it as 'Tune: ...')")
    if sweep.experiment_path != location:  # the folder moved: runs are still found by name (tracking)
        sweep = replace(sweep, experiment_path=location)
    tracker = SweepTracker(sweep, resolve_tracking_uri(tracking_uri or sweep.tracking_uri),
                           experiment=experiment, log_checkpoints=log_checkpoints, strict=True)
    tracker.update(read_trials(location, sweep.objectives))
    tracker.close()
    return tracker
