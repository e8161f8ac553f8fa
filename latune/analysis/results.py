"""A sweep's results as one table: a row per trial with config, final and best metrics, Pareto rank.

Written as ``results.parquet`` beside Tune's results (local folder or any pyarrow filesystem URI,
e.g. s3://), readable with ``pandas.read_parquet``.
"""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from latune.analysis.constraints import Constraint, is_feasible
from latune.analysis.outcome import PRUNED, stopped_early
from latune.analysis.pareto import front_table

__all__ = ["trial_row", "results_table", "write_parquet", "read_parquet", "latest_experiment", "format_front"]

# what Ray adds to every report that is bookkeeping, not a result
_RAY_KEYS = {"timestamp", "checkpoint_dir_name", "done", "training_iteration", "trial_id", "date", "time_this_iter_s",
             "time_total_s", "pid", "config", "time_since_restore", "iterations_since_restore", "should_checkpoint"}


def trial_row(trial_id: str, config: Mapping[str, Any], history: Sequence[Mapping[str, Any]],
              objectives: Mapping[str, str], error: str | None, epochs: int) -> dict[str, Any]:
    """One trial: its flat config, last reported metrics, best value of each objective over epochs."""
    final = dict(history[-1]) if history else {}
    done = int(final.get("epoch", 0) or 0)
    status = "ERROR" if error else ("TERMINATED" if done >= epochs else
                                    PRUNED if stopped_early(history, epochs) else "UNFINISHED")
    row: dict[str, Any] = {"trial_id": trial_id, "status": status, "error": error, "epochs_done": done}
    row.update({key: value for key, value in config.items()})
    for key, value in final.items():
        if key == "epoch" or key in row or key in _RAY_KEYS or key.startswith("config/"):
            continue
        if isinstance(value, (int, float, list, str)) and not isinstance(value, bool):
            row[key] = value  # metrics, and Ray's node_ip / hostname (where the trial ran)
    for metric, mode in objectives.items():
        values = [h[metric] for h in history if isinstance(h.get(metric), (int, float)) and not math.isnan(h[metric])]
        row[f"best_{metric}"] = (max(values) if mode == "max" else min(values)) if values else math.nan
    row["time_total_s"] = float(final.get("time_total_s", sum(h.get("epoch_time_s", 0.0) for h in history)))
    return row


def results_table(rows: Iterable[Mapping[str, Any]], objectives: Mapping[str, str],
                  constraints: Sequence[Constraint] = ()) -> pd.DataFrame:
    """Rows with `feasible` (final metrics within ``constraints``), `pareto_rank` (0 = front among the
    feasible trials that trained their whole budget; -1 = unfinished, pruned, failed or infeasible) and
    `pareto`, best first."""
    frame = pd.DataFrame(list(rows))
    if frame.empty:
        return frame.assign(feasible=pd.Series(dtype=bool), pareto_rank=pd.Series(dtype=int),
                            pareto=pd.Series(dtype=bool))
    frame["feasible"] = [is_feasible(row, constraints) for row in frame.to_dict("records")]
    finished = (frame["status"] == "TERMINATED") & frame["feasible"]
    for metric in objectives:
        if metric not in frame:
            frame[metric] = math.nan
    ranked = front_table(frame[finished], dict(objectives))
    frame["pareto_rank"] = -1
    frame.loc[ranked.index, "pareto_rank"] = ranked["pareto_rank"]
    frame["pareto"] = frame["pareto_rank"] == 0
    order = frame["pareto_rank"].where(frame["pareto_rank"] >= 0, 10**9)
    return frame.assign(_order=order).sort_values(["_order", "trial_id"]).drop(columns="_order").reset_index(drop=True)


def write_parquet(table: pd.DataFrame, folder: str) -> str:
    """Write ``folder/results.parquet`` (local path or pyarrow filesystem URI); returns its location."""
    import pyarrow as pa
    import pyarrow.fs
    import pyarrow.parquet as pq

    filesystem, root = pyarrow.fs.FileSystem.from_uri(folder if "://" in folder else f"file://{folder}")
    target = f"{root.rstrip('/')}/results.parquet"
    frame = table.copy()
    for column in frame.columns:  # mixed None/str/int config columns: store as strings, keep lists and numbers
        kinds = {type(v) for v in frame[column] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1 and not kinds <= {int, float}:
            frame[column] = frame[column].map(lambda v: None if v is None else str(v))
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), target, filesystem=filesystem)
    return folder.rstrip("/") + "/results.parquet"


def read_parquet(folder: str) -> pd.DataFrame:
    """``folder/results.parquet`` (local path or pyarrow filesystem URI) as written by ``write_parquet``."""
    import pyarrow.fs
    import pyarrow.parquet as pq

    filesystem, root = pyarrow.fs.FileSystem.from_uri(folder if "://" in folder else f"file://{os.path.abspath(folder)}")
    return pq.read_table(f"{root.rstrip('/')}/results.parquet", filesystem=filesystem).to_pandas()


def latest_experiment(storage: str, prefix: str) -> str | None:
    """Name of the newest experiment folder ``<prefix>-*`` under a local ``storage``; None when there is none."""
    matches = sorted(glob.glob(os.path.join(storage, f"{prefix}-*")), key=os.path.getmtime)
    return os.path.basename(matches[-1]) if matches else None


def format_front(table: pd.DataFrame, objectives: Mapping[str, str], searched: Sequence[str], limit: int = 20) -> str:
    """The Pareto front (rank 0) as a text table: rank, objectives, searched hyperparameters."""
    front = table[table["pareto_rank"] == 0].head(limit)
    if front.empty:
        return "no finished trial yet: no Pareto front"
    columns = ["trial_id", *objectives, *[k for k in searched if k in front]]
    shown = front[columns].copy()
    for column in shown:
        shown[column] = shown[column].map(lambda v: f"{v:.4g}" if isinstance(v, float) else str(v))
    widths = {c: max(len(c), *(len(v) for v in shown[c])) for c in columns}
    header = "  ".join(f"{c:<{widths[c]}}" for c in columns)
    lines = [header, "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(f"{row[c]:<{widths[c]}}" for c in columns) for _, row in shown.iterrows()]
    arrows = ", ".join(f"{m} ({'higher' if d == 'max' else 'lower'} is better)" for m, d in objectives.items())
    return f"Pareto front ({len(front)} of {len(table)} trials; {arrows}):\n" + "\n".join(lines)
