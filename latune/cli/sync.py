"""``latune sync SWEEP_DIR``: backfill MLflow from Tune's files (latune.tracking.sync)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from latune.cli.common import EXIT_BAD_INPUT, examples, guarded
from latune.tracking.sync import sync

__all__ = ["main"]

_EXAMPLES = examples(
    "latune sync runs/delta_eps_grid-digits-20260101-120000   # to the store the sweep used",
    "latune sync runs/pareto-cifar10-20260101-120000 --tracking-uri http://mlflow.example:5000",
    "latune sync s3://bucket/runs/pareto-cifar10-20260101-120000 --mlflow-checkpoints")


def main(argv: Sequence[str] | None = None) -> int:
    """``latune sync SWEEP_DIR [flags]``: log a sweep's trials to MLflow, adding only what is missing; exit status
    0, or 2 for a bad folder or an MLflow error."""
    parser = argparse.ArgumentParser(prog="latune sync", epilog=_EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Backfill MLflow from Tune's files of a sweep.")
    parser.add_argument("sweep_dir", metavar="SWEEP_DIR", help="Tune's experiment folder of the sweep "
                                                               "(runs/NAME-DATA-TIME), or its URI")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: the one the sweep used)")
    parser.add_argument("--experiment", help="MLflow experiment name (default: the one the sweep used)")
    parser.add_argument("--mlflow-checkpoints", action="store_true",
                        help="also log each trial's final checkpoint (as latune sweep --mlflow-checkpoints)")
    # the old name, kept working: hidden from --help, warned about when used
    parser.add_argument("--checkpoints", dest="old_checkpoints", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.old_checkpoints:
        print("warning: --checkpoints is deprecated; use --mlflow-checkpoints", file=sys.stderr)

    def run() -> int:
        import mlflow.exceptions

        try:
            tracker = sync(args.sweep_dir, tracking_uri=args.tracking_uri, experiment=args.experiment,
                           log_checkpoints=args.mlflow_checkpoints or args.old_checkpoints)
        except mlflow.exceptions.MlflowException as err:
            print(f"error: MLflow: {' '.join(str(err).split())[:500]}", file=sys.stderr)
            return EXIT_BAD_INPUT
        stats = tracker.stats
        print(f"synced {len(tracker.table())} trials to MLflow experiment {tracker.experiment!r} at "
              f"{tracker.tracking_uri} (parent run {tracker.parent_run_id}): {stats['runs_created']} runs created, "
              f"{stats['epochs_logged']} epochs added")
        return 0

    return guarded(run)
