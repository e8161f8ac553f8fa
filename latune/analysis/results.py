"""A sweep's results as one table: a row per trial with config, final and best metrics, Pareto rank.

Written as ``results.parquet`` beside Tune's results (local folder or any pyarrow filesystem URI,
e.g. s3://), readable with ``pandas.read_parquet``.

The objective columns (``robust_acc``, ...) are validation-split metrics: the Pareto front is chosen on
them. ``test_<metric>`` columns hold the same metrics on the held-out test split, measured at a trial's last
epoch (NaN for trials that did not finish unless eval.test_every measured them at the epoch they stopped, and
for metrics of training such as train_loss):
they say how the chosen trials do on data the choice never saw.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from latune.analysis.constraints import Constraint, is_feasible
from latune.analysis.outcome import PRUNED, stopped_early, unmeasured_error
from latune.analysis.pareto import rank_trials

__all__ = ["trial_folders", "RAY_KEYS", "PLACEMENT_KEYS", "trial_row", "results_table", "parquet_ready", "write_parquet",
           "read_parquet", "latest_experiment", "objective_columns", "format_front", "TEST_PREFIX"]

# Ray Tune's bookkeeping in every result: not metrics (neither results.parquet nor MLflow keeps them as such)
RAY_KEYS = frozenset({
    "timestamp", "checkpoint_dir_name", "should_checkpoint", "done", "training_iteration", "trial_id",
    "experiment_id", "experiment_tag", "date", "time_this_iter_s", "time_total_s", "pid", "hostname", "node_ip",
    "node_id", "config", "time_since_restore", "timesteps_since_restore", "iterations_since_restore",
    "timesteps_total", "episodes_total", "timesteps_this_iter", "episodes_this_iter", "warmup_time"})
# ...of which these say where a trial ran: results.parquet keeps them as columns, MLflow as a tag
PLACEMENT_KEYS = frozenset({"hostname", "node_ip", "node_id"})
TEST_PREFIX = "test_"  # a metric on the held-out test split (latune.core.train reports them at the last epoch)


def trial_row(trial_id: str, config: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
              objectives: Mapping[str, str], error: str | None, epochs: int) -> dict[str, Any]:
    """One trial: its flat config, last reported metrics (with the test_* ones of a finished trial), best
    value of each objective over epochs."""
    final = dict(history[-1]) if history else {}
    done = int(final.get("epoch", 0) or 0)
    if not error and done >= epochs:  # one rule with MLflow and Optuna (latune.analysis.outcome)
        error = unmeasured_error(final, objectives)
    status = "ERROR" if error else ("TERMINATED" if done >= epochs else
                                    PRUNED if stopped_early(history, epochs) else "UNFINISHED")
    row: dict[str, Any] = {"trial_id": trial_id, "status": status, "error": error, "epochs_done": done}
    row.update({key: value for key, value in config.items()})
    for key, value in final.items():
        if key == "epoch" or key in row or key in RAY_KEYS - PLACEMENT_KEYS or key.startswith("config/"):
            continue
        if isinstance(value, (int, float, list, str)) and not isinstance(value, bool):
            row[key] = value  # metrics (test_* at the last epoch), and where the trial ran
    for metric, mode in objectives.items():
        values = [h[metric] for h in history if isinstance(h.get(metric), (int, float)) and not math.isnan(h[metric])]
        row[f"best_{metric}"] = (max(values) if mode == "max" else min(values)) if values else math.nan
    row["time_total_s"] = float(final.get("time_total_s", sum(h.get("epoch_time_s", 0.0) for h in history)))
    return row


def results_table(rows: Iterable[Mapping[str, Any]], objectives: Mapping[str, str],
                  constraints: Sequence[Constraint] = ()) -> pd.DataFrame:
    """Rows with `feasible` (final metrics within ``constraints``), `pareto_rank` (0 = front among the
    feasible trials that trained their whole budget; -1 = unfinished, pruned, failed or infeasible) and
    `pareto`, best first. Every objective has its column and its ``test_`` column (NaN where a trial has
    no value)."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return frame.assign(feasible=pd.Series(dtype=bool), pareto_rank=pd.Series(dtype=int),
                            pareto=pd.Series(dtype=bool))
    frame["feasible"] = [is_feasible(row, constraints) for row in frame.to_dict("records")]
    for metric in objectives:
        for column in (metric, TEST_PREFIX + metric):
            if column not in frame:
                frame[column] = math.nan
    return rank_trials(frame, dict(objectives))  # type: ignore[arg-type]


def parquet_ready(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy that Parquet can store: a column mixing types (None/str/int config values across trials) becomes
    strings (None stays None); numbers, lists and single-type columns are kept."""
    frame = frame.copy()
    for column in frame.columns:
        kinds = {type(v) for v in frame[column] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1 and not kinds <= {int, float}:
            frame[column] = frame[column].map(lambda v: None if v is None else str(v))
    return frame


def write_parquet(table: pd.DataFrame, folder: str) -> str:
    """Write ``folder/results.parquet`` (local path or pyarrow filesystem URI); returns its location."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from latune.storage import filesystem

    fs, root = filesystem(folder)
    pq.write_table(pa.Table.from_pandas(parquet_ready(table), preserve_index=False), f"{root}/results.parquet",
                   filesystem=fs)
    return folder.rstrip("/") + "/results.parquet"


def read_parquet(folder: str) -> pd.DataFrame:
    """``folder/results.parquet`` (local path or pyarrow filesystem URI) as written by ``write_parquet``."""
    import pyarrow.parquet as pq

    from latune.storage import filesystem

    fs, root = filesystem(folder)
    return pq.read_table(f"{root}/results.parquet", filesystem=fs).to_pandas()


def latest_experiment(storage: str, prefix: str) -> str | None:
    """Name of the newest experiment folder ``<prefix>-*`` under a local ``storage``; None when there is none."""
    matches = sorted(glob.glob(os.path.join(storage, f"{prefix}-*")), key=os.path.getmtime)
    return os.path.basename(matches[-1]) if matches else None


def objective_columns(objectives: Iterable[str], table: pd.DataFrame) -> list[str]:
    """Each objective's column followed by its held-out ``test_`` column where the table has one."""
    return [c for m in objectives for c in (m, TEST_PREFIX + m) if c == m or c in table]


def format_front(table: pd.DataFrame, objectives: Mapping[str, str], searched: Sequence[str], limit: int = 20) -> str:
    """The Pareto front (rank 0) as a text table: trial, each objective on the validation split (the front is
    chosen on these) beside its held-out test value (``test_<metric>``, when measured), searched hyperparameters."""
    front = table[table["pareto_rank"] == 0].head(limit)
    if front.empty:
        return "no finished trial yet: no Pareto front"
    shown_metrics = [c for c in objective_columns(objectives, front) if c in objectives or front[c].notna().any()]
    columns = ["trial_id", *shown_metrics, *[k for k in searched if k in front]]
    shown = front[columns].copy()
    for column in shown:
        shown[column] = shown[column].map(lambda v: f"{v:.4g}" if isinstance(v, float) else str(v))
    widths = {c: max(len(c), *(len(v) for v in shown[c])) for c in columns}
    header = "  ".join(f"{c:<{widths[c]}}" for c in columns)
    lines = [header, "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(f"{row[c]:<{widths[c]}}" for c in columns) for _, row in shown.iterrows()]
    arrows = ", ".join(f"{m} ({'higher' if d == 'max' else 'lower'} is better)" for m, d in objectives.items())
    title = f"Pareto front ({len(front)} of {len(table)} trials, chosen on the validation split; {arrows}):"
    if len(shown_metrics) > len(objectives):
        title += "\ntest_*: the same metric on the held-out test split (never used to choose the front)"
    return title + "\n" + "\n".join(lines)


def trial_folders(experiment: str | os.PathLike, trial_id: str) -> list[str]:
    """The Tune trial folders of ``trial_id`` under a local experiment folder. Tune names them
    {trainable}_{trial_id}_{index}_{tag}_{date}, so the trial id is matched as a whole token."""
    root = os.fspath(experiment)
    names = sorted(os.listdir(root)) if os.path.isdir(root) else []
    return [os.path.join(root, n) for n in names if os.path.isdir(os.path.join(root, n)) and f"_{trial_id}_" in f"{n}_"]
