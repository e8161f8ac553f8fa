"""The Pareto front of a sweep as MLflow shows it: the table, the hypervolume curve, the parent run's
front artifacts and a saved view of the runs page. Pure functions; latune.tracking does the logging.

The table is built exactly as ``results.parquet`` is (latune.results.trial_row / results_table), so a
run's ``pareto_rank`` in MLflow equals the trial's rank in results.parquet: rank 0 = front among the
trials that finished every epoch, -1 for unfinished and failed ones. The front is chosen on the
objectives' validation values; the front table carries each one's held-out ``test_<metric>`` beside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["sweep_table", "hypervolume_curve", "write_front", "pareto_view", "PARETO_VIEW_PREFIX"]

# objectives that are not fractions in [0, 1]: default_reference() would be meaningless for them
_UNBOUNDED = frozenset({"train_loss", "images_per_s"})
PARETO_VIEW_PREFIX = "latune-pareto-"  # the runs-page view of a sweep: viewStateShareKey = prefix + parent run id


def sweep_table(trials: Iterable[Mapping[str, Any]], objectives: Mapping[str, str],
                constraints: Sequence[Any] = ()) -> pd.DataFrame:
    """One row per trial as in results.parquet, plus ``run_id``. Each trial is a mapping with
    ``trial_id``, ``run_id``, ``config`` (flat), ``history`` (results by epoch, in order), ``epochs``
    (the trial's optim.epochs) and ``error`` (one line, or None); ``constraints`` as for results_table."""
    from latune.analysis.results import results_table, trial_row

    trials = list(trials)
    rows = [trial_row(t["trial_id"], t["config"], t["history"], objectives, t["error"], t["epochs"]) for t in trials]
    table = results_table(rows, objectives, constraints)
    if len(table):
        run_ids = {t["trial_id"]: t["run_id"] for t in trials}
        table.insert(1, "run_id", [run_ids.get(t) for t in table["trial_id"]])
    return table


def hypervolume_curve(table: pd.DataFrame, finished_at: Mapping[str, float],
                      objectives: Mapping[str, str]) -> list[tuple[int, float, float]]:
    """(k, hypervolume of the first k finished trials, when the k-th finished) for k = 1..finished, in
    the order trials finished, so the curve is the same however late it is logged. Empty when the
    objectives are not all fractions in [0, 1] (the reference point would mean nothing) or more than 3."""
    from latune.analysis.pareto import default_reference, hypervolume

    if len(objectives) > 3 or set(objectives) & _UNBOUNDED or not len(table):
        return []
    finished = table[(table["status"] == "TERMINATED") & table["feasible"]]  # full-budget feasible trials only
    ordered = finished.assign(_t=[finished_at[t] for t in finished["trial_id"]]).sort_values(["_t", "trial_id"])
    values = ordered[list(objectives)].to_numpy(dtype=float)
    directions = list(objectives.values())
    reference = default_reference(directions)
    return [(k, hypervolume(values[:k], directions, reference), stamp)
            for k, stamp in enumerate(ordered["_t"], start=1)]


def write_front(table: pd.DataFrame, objectives: Mapping[str, str], searched: Sequence[str], folder: Path) -> bool:
    """Write pareto_front.csv / .parquet (each objective on validation, then on the held-out test split),
    pareto_pairs.png and pareto_3d.html into ``folder``; False (nothing written) while no trial has finished."""
    from latune.analysis import plots
    from latune.analysis.front_files import front_columns
    from latune.analysis.results import objective_columns, parquet_ready

    finished = table[table["status"] == "TERMINATED"] if len(table) else table
    if not len(finished):
        return False
    front = finished[finished["pareto_rank"] == 0]
    columns = front_columns(front, objectives, searched)
    front[columns].to_csv(folder / "pareto_front.csv", index=False)
    parquet_ready(front[columns]).to_parquet(folder / "pareto_front.parquet", index=False)
    plots.save(plots.pairwise_figure(finished, objectives), folder / "pareto_pairs.png")
    held_out = [c for c in objective_columns(objectives, finished) if c not in objectives]
    (folder / "pareto_3d.html").write_text(plots.front_html(finished, objectives, ["trial_id", *held_out, *searched]))
    return True


def pareto_view(parent_run_id: str, objectives: Sequence[str], searched: Sequence[str]) -> dict[str, Any]:
    """A saved view of the MLflow runs page (experiment tag ``mlflow.sharedViewState.<key>``, opened with
    ``#/experiments/<id>/runs?viewStateShareKey=<key>``): the sweep's trials grouped by tag ``pareto``
    (group "true" = the front), objectives, rank and searched params as columns. This is the UI's own
    share format (MLflow 3); an MLflow that reads it differently only ignores the view."""
    def column(kind: str, key: str) -> str:
        return f"{kind}.`{key}`"

    return {
        "searchFilter": f"tags.mlflow.parentRunId = '{parent_run_id}'",
        "orderByKey": "metrics.`pareto_rank`", "orderByAsc": True,  # the front (rank 0) first
        "selectedColumns": [column("tags", "pareto"), column("metrics", "pareto_rank"),
                            *[column("metrics", m) for m in objectives], *[column("params", k) for k in searched]],
        "groupBy": {"aggregateFunction": "average", "groupByKeys": [{"mode": "tag", "groupByData": "pareto"}]},
        "runsHiddenMode": "SHOW_ALL",
    }
