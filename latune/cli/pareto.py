"""``python -m latune.pareto SWEEP``: the Pareto front of a sweep logged to MLflow."""

from __future__ import annotations

from collections.abc import Sequence

from latune.tracking.query import mlflow_front, sweep_parent_run

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m latune.pareto SWEEP [--tracking-uri URI] [--experiment NAME] [--parquet OUT]``: print the
    Pareto front of a sweep from MLflow (finished, running or resumed) and optionally write it to Parquet."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m latune.pareto",
                                     description="Print the Pareto front of a sweep logged to MLflow.")
    parser.add_argument("sweep", metavar="SWEEP", help="MLflow experiment name (its latest sweep), parent run id, "
                                                        "or the sweep's run name (Tune's folder name)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--experiment", help="look for SWEEP in this MLflow experiment")
    parser.add_argument("--parquet", metavar="OUT", help="also write the front (rank 0 rows) to this Parquet file")
    args = parser.parse_args(argv)

    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    from latune.errors import UserError
    from latune.analysis.results import format_front
    from latune.tracking.records import resolve_tracking_uri

    # not latune.cli.common.guarded: MLflow's errors are the likely ones here, and their messages span lines
    try:
        client = MlflowClient(resolve_tracking_uri(args.tracking_uri))
        parent = sweep_parent_run(client, args.sweep, args.experiment)
        table, objectives, searched = mlflow_front(client, parent)
    except (UserError, MlflowException) as err:
        print(f"error: {' '.join(str(err).split())[:500]}", file=sys.stderr)
        return 2
    counts = table["status"].value_counts().to_dict()
    print(f"sweep {parent.info.run_name} (run {parent.info.run_id}, {parent.info.status}): "
          + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()))
    print(format_front(table, objectives, searched) if objectives else "the sweep's run names no objectives")
    if args.parquet:
        table[table["pareto_rank"] == 0].to_parquet(args.parquet, index=False)
        print(f"front written to {args.parquet}")
    return 0
