"""The front files a sweep leaves beside results.parquet, MLflow or not:

- ``front.csv``: the Pareto-front trials (rank 0), each objective on the validation split beside its held-out
  ``test_`` value, the best value over epochs, the searched hyperparameters;
- ``front.png``: every pair of objectives over the finished trials, the front in red (latune.analysis.plots);
- ``front.html``: the same trials, interactive, in 3-D for three objectives; it loads plotly.js from plotly's
  CDN when opened (a few kB instead of 3.5 MB per sweep), so it needs a network to show; MLflow's copy
  (``pareto_3d.html``, latune.tracking.front) embeds it and opens offline.

The sweep writes them when it ends (latune.sweep.run); ``latune pareto SWEEP --plot`` redraws them.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import pandas as pd

__all__ = ["FRONT_FILES", "front_columns", "write_front_files"]

FRONT_FILES = ("front.csv", "front.png", "front.html")


def front_columns(table: pd.DataFrame, objectives: Mapping[str, str], searched: Sequence[str]) -> list[str]:
    """The columns of a front table, those ``table`` has: trial_id, run_id (MLflow), each objective and its
    ``test_`` value, ``best_<objective>``, the searched keys, pareto_rank."""
    from latune.analysis.results import objective_columns

    wanted = ["trial_id", "run_id", *objective_columns(objectives, table), *[f"best_{m}" for m in objectives],
              *searched, "pareto_rank"]
    return [c for c in dict.fromkeys(wanted) if c in table]


def write_front_files(table: pd.DataFrame, objectives: Mapping[str, str], searched: Sequence[str],
                      folder: str) -> list[str]:
    """Write FRONT_FILES into ``folder`` (a local folder or a pyarrow filesystem URI such as s3://) from a sweep
    table (results.parquet's rows, or latune.tracking.query.mlflow_front's); their locations, or [] (nothing
    written) while no trial has finished its budget."""
    from latune.analysis import plots
    from latune.analysis.results import objective_columns
    from latune.storage import filesystem

    finished = table[table["status"] == "TERMINATED"] if len(table) else table
    if not len(finished):
        return []
    front = finished[finished["pareto_rank"] == 0]
    png = io.BytesIO()
    plots.save(plots.pairwise_figure(finished, objectives), png)
    held_out = [c for c in objective_columns(objectives, finished) if c not in objectives]
    hover = ["trial_id", *held_out, *[k for k in searched if k in finished]]
    contents = {"front.csv": front[front_columns(front, objectives, searched)].to_csv(index=False).encode(),
                "front.png": png.getvalue(),
                "front.html": plots.front_html(finished, objectives, hover, plotlyjs="cdn").encode()}
    fs, root = filesystem(folder)
    fs.create_dir(root, recursive=True)
    for name, data in contents.items():
        with fs.open_output_stream(f"{root}/{name}") as out:
            out.write(data)
    return [f"{folder.rstrip('/')}/{name}" for name in FRONT_FILES]
