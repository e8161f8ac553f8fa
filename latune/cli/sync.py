"""``python -m latune.sync SWEEP_DIR``: backfill MLflow from Tune's files (latune.tracking.sync)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from latune.cli.common import guarded
from latune.tracking.sync import sync

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latune.sync",
                                     description="Backfill MLflow from Tune's files of a sweep.")
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR", help="Tune's experiment folder of the sweep "
                                                               "(runs/NAME-DATA-TIME), or its URI")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one the sweep used)")
    parser.add_argument("--experiment", help="MLflow experiment name (default: the one the sweep used)")
    parser.add_argument("--checkpoints", action="store_true", help="also log each trial's final checkpoint")
    args = parser.parse_args(argv)

    def run() -> int:
        import mlflow.exceptions

        try:
            tracker = sync(args.sweep_dir, tracking_uri=args.tracking_uri, experiment=args.experiment,
                           log_checkpoints=args.checkpoints)
        except mlflow.exceptions.MlflowException as err:
            print(f"error: MLflow: {' '.join(str(err).split())[:500]}", file=sys.stderr)
            return 1
        stats = tracker.stats
        print(f"synced {len(tracker.table())} trials to MLflow experiment {tracker.experiment!r} at "
              f"{tracker.tracking_uri} (parent run {tracker.parent_run_id}): {stats['runs_created']} runs created, "
              f"{stats['epochs_logged']} epochs added")
        return 0

    return guarded(run)
