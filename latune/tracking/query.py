"""Read a sweep back from MLflow: its parent run, and the front over its child runs."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from latune.analysis.pareto import Direction, rank_trials
from latune.analysis.results import TEST_PREFIX
from latune.errors import UserError

__all__ = ["sweep_parent_run", "mlflow_front", "attach_to_sweep_run"]


_RUN_ID_LENGTH = 32  # MLflow run ids are 32 hex digits


def sweep_parent_run(client: Any, sweep: str, experiment: str | None) -> Any:
    """The parent run of a sweep: ``sweep`` is a parent (or child) run id, an MLflow experiment name
    (its latest sweep), or a parent run's name (Tune's experiment folder name)."""
    if len(sweep) == _RUN_ID_LENGTH and all(c in "0123456789abcdef" for c in sweep):
        run = client.get_run(sweep)
        parent_id = run.data.tags.get("mlflow.parentRunId")
        return client.get_run(parent_id) if parent_id else run
    names = [experiment] if experiment else [sweep]
    experiments = [e for e in (client.get_experiment_by_name(n) for n in names) if e is not None]
    if not experiments and not experiment:
        experiments = list(client.search_experiments())
    ids = [e.experiment_id for e in experiments]
    parents = client.search_runs(ids, "tags.`latune.role` = 'sweep'", order_by=["attributes.start_time DESC"],
                                 max_results=1000) if ids else []
    named = [r for r in parents if r.info.run_name == sweep]
    chosen = named or [r for r in parents if any(e.name == sweep and e.experiment_id == r.info.experiment_id
                                                 for e in experiments)]
    if not chosen:
        where = f"experiment {experiment!r}" if experiment else "MLflow"
        raise UserError(f"SWEEP: no sweep {sweep!r} in {where} (give an experiment name, a parent run id "
                        "or a sweep's run name)")
    return chosen[0]


def mlflow_front(client: Any, parent: Any) -> tuple[pd.DataFrame, dict[str, Direction], list[str]]:
    """One row per child run (trial_id, run_id, status, each objective and its held-out ``test_`` value,
    searched params) with pareto_rank over the FINISHED ones not tagged ``feasible=false`` (-1 for the
    others), as latune.analysis.results does for results.parquet; a run tagged ``latune.status=pruned`` has
    status PRUNED."""
    params = parent.data.params
    objectives: dict[str, Direction] = {k.removeprefix("objective."): v for k, v in params.items()  # type: ignore[misc]
                                        if k.startswith("objective.")}
    searched = [k for k in params.get("searched", "").split(",") if k]
    metrics = [c for m in objectives for c in (m, TEST_PREFIX + m)]
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                                  max_results=50000)
    statuses = {"FINISHED": "TERMINATED", "FAILED": "ERROR"}
    rows = []
    for run in children:
        row: dict[str, Any] = {"trial_id": run.data.tags.get("latune.trial_id", run.info.run_name),
                               "run_id": run.info.run_id, "status": statuses.get(run.info.status, "UNFINISHED"),
                               "feasible": run.data.tags.get("feasible") != "false"}
        if run.data.tags.get("latune.status") == "pruned":
            row["status"] = "PRUNED"
        row.update({m: run.data.metrics.get(m, np.nan) for m in metrics})
        row.update({key: _param_value(run.data.params.get(key)) for key in searched})
        rows.append(row)
    table = pd.DataFrame(rows, columns=["trial_id", "run_id", "status", "feasible", *metrics, *searched])
    return rank_trials(table, objectives), objectives, searched


def _param_value(value: str | None) -> Any:
    """An MLflow param (always a string) as a number where it is one."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return value


def attach_to_sweep_run(experiment_path: str, report_file: str, tracking_uri: str | None) -> str | None:
    """Attach the report to the sweep's MLflow parent run (found by its tags); its run id, or None."""
    from mlflow import MlflowClient

    from latune.tracking.records import resolve_tracking_uri

    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    path = experiment_path if "://" in experiment_path else os.path.abspath(experiment_path)
    ids = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(ids, f"tags.`latune.role` = 'sweep' and tags.`latune.experiment_path` = '{path}'",
                              max_results=1) if ids else []
    if not runs:
        return None
    client.log_artifact(runs[0].info.run_id, report_file)
    return runs[0].info.run_id
