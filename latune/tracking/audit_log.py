"""The audit's figures on the sweep's MLflow runs: each audited trial's results go to its child run."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["log_to_mlflow"]


def log_to_mlflow(experiment: Path, reports: Sequence[dict[str, Any]], tracking_uri: str) -> list[str]:
    """Log each audited trial's figures (``audit_clean_acc``, ``audit_robust_acc``,
    ``audit_<attack>_robust_acc`` with '-' as '_', tag ``latune.audit_warnings``) to its child run, found
    by the tags latune.tracking writes; returns notes for what could not be logged. ``reports`` are
    latune.core.audit.audit results with their ``trial_id``; those without one, or not audited, are skipped."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    from latune.tracking.records import SweepInfo, resolve_tracking_uri

    info = SweepInfo.load(str(experiment))
    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    found = client.get_experiment_by_name(info.mlflow_experiment or info.name) if info else None
    if found is None:
        return [f"MLflow: no experiment of this sweep at {tracking_uri}; audit not logged"]
    notes, now = [], int(time.time() * 1000)
    for report in reports:
        if report.get("trial_id") is None or "attacks" not in report:
            continue
        runs = client.search_runs([found.experiment_id], max_results=1, filter_string=(
            f"tags.`latune.trial_id` = '{report['trial_id']}' "
            f"and tags.`latune.experiment_path` = '{info.experiment_path}'"))
        if not runs:
            notes.append(f"MLflow: no run of trial {report['trial_id']}; audit not logged")
            continue
        values = {"audit_clean_acc": report["clean_acc"], "audit_robust_acc": report["robust_acc"]}
        values.update({f"audit_{name.replace('-', '_')}_robust_acc": run["robust_acc"]
                       for name, run in report["attacks"].items()})
        client.log_batch(runs[0].info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()],
                         tags=[RunTag("latune.audit_warnings", " | ".join(report["warnings"])[:5000] or "none")])
    return notes
