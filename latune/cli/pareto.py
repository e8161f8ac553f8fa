"""``latune pareto SWEEP``: the Pareto front of a sweep, from MLflow or from its experiment folder, and with
``--plot`` its front files (latune.analysis.front_files) drawn again."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from latune.cli.common import examples, guarded, missing_local_store
from latune.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["main"]

_EXAMPLES = examples(
    "latune pareto delta_eps_grid                 # the latest delta_eps_grid sweep in ./mlflow.db",
    "latune pareto runs/delta_eps_grid-digits-20260101-120000 --plot   # no MLflow; redraw front.*",
    "latune pareto pareto --tracking-uri http://mlflow.example:5000 --parquet front.parquet",
    "latune pareto <parent run id>")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latune pareto", epilog=_EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Print the Pareto front of a sweep, from MLflow (finished, running "
                                                 "or resumed) or from its experiment folder.")
    parser.add_argument("sweep", metavar="SWEEP", help="a sweep's experiment folder (results.parquet; no MLflow), an "
                        "MLflow experiment name (its latest sweep), a parent run id, or a sweep's run name (Tune's "
                        "folder name)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--experiment", help="look for SWEEP in this MLflow experiment")
    parser.add_argument("--parquet", metavar="OUT", help="also write the front (rank 0 rows) to this Parquet file")
    parser.add_argument("--plot", action="store_true", help="draw front.csv, front.png and front.html again in the "
                                                            "sweep's experiment folder")
    return parser


@dataclass(frozen=True)
class _Sweep:
    """A sweep as read from MLflow or from its folder."""

    title: str  # what the first printed line calls it
    table: pd.DataFrame  # a row per trial, with status and pareto_rank (0 = front)
    objectives: dict[str, Any]  # metric -> max | min
    searched: list[str]  # the searched config keys
    folder: str | None  # its experiment folder (local or URI); None when MLflow does not say


def _is_folder(sweep: str) -> bool:
    return os.path.isdir(sweep) or "://" in sweep


def _from_folder(folder: str) -> _Sweep:
    """results.parquet and latune_sweep.json of an experiment folder (local or a URI)."""
    from latune.analysis.results import read_parquet
    from latune.tracking.records import SWEEP_INFO_FILE, SweepInfo

    folder = folder.rstrip("/")
    info = SweepInfo.load(folder)
    if info is None:
        raise UserError(f"SWEEP: {folder} has no {SWEEP_INFO_FILE}: not a sweep's experiment folder")
    try:
        table = read_parquet(folder)
    except (FileNotFoundError, OSError):
        raise UserError(f"SWEEP: no results.parquet in {folder} yet (a sweep writes it when it ends; while it runs, "
                        "name its MLflow experiment instead)") from None
    return _Sweep(f"sweep {info.name} ({folder})", table, dict(info.objectives), list(info.searched), folder)


def _from_mlflow(args: argparse.Namespace) -> _Sweep:
    """The sweep's parent run and its child runs in MLflow; refuses a local store that is not there (reading it
    would create it)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from latune.tracking.query import mlflow_front, sweep_parent_run
    from latune.tracking.records import resolve_tracking_uri

    uri = resolve_tracking_uri(args.tracking_uri)
    missing = missing_local_store(uri)
    if missing:
        raise UserError(f"--tracking-uri: no MLflow store at {missing} (run where the sweep ran, pass --tracking-uri, "
                        "or give the sweep's experiment folder)")
    try:
        client = MlflowClient(uri)
        parent = sweep_parent_run(client, args.sweep, args.experiment)
        table, objectives, searched = mlflow_front(client, parent)
    except MlflowException as err:  # its messages span lines
        raise UserError(f"MLflow: {' '.join(str(err).split())[:500]}") from None
    title = f"sweep {parent.info.run_name} (run {parent.info.run_id}, {parent.info.status})"
    return _Sweep(title, table, dict(objectives), searched, parent.data.tags.get("latune.experiment_path"))


def _plot(sweep: _Sweep) -> str:
    from latune.analysis.front_files import write_front_files

    folder = sweep.folder
    if not folder or ("://" not in folder and not os.path.isdir(folder)):
        raise UserError(f"--plot: the sweep's experiment folder {folder} is not on this machine; give the folder "
                        "instead: latune pareto FOLDER --plot")
    written = write_front_files(sweep.table, sweep.objectives, sweep.searched, folder)
    return f"front files: {', '.join(written)}" if written else "no finished trial yet: no front files"


def main(argv: Sequence[str] | None = None) -> int:
    """``latune pareto SWEEP [flags]``: print the front; exit status 0, or 2 for a bad SWEEP, store or folder."""
    args = _parser().parse_args(argv)

    def run() -> int:
        from latune.analysis.results import format_front

        sweep = _from_folder(args.sweep) if _is_folder(args.sweep) else _from_mlflow(args)
        table = sweep.table
        counts = table["status"].value_counts().to_dict() if len(table) else {}
        print(f"{sweep.title}: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()))
        print(format_front(table, sweep.objectives, sweep.searched) if sweep.objectives
              else "the sweep's run names no objectives")
        if args.parquet:
            table[table["pareto_rank"] == 0].to_parquet(args.parquet, index=False)
            print(f"front written to {args.parquet}")
        if args.plot:
            print(_plot(sweep))
        return 0

    return guarded(run)
