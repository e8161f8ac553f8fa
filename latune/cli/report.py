"""``latune report SWEEP``: the paper-style report of a finished sweep (latune.analysis.report)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import pandas as pd

from latune.analysis.interval_report import find_outcomes
from latune.analysis.report import pgd_label, render
from latune.cli.common import examples, guarded, missing_local_store
from latune.errors import UserError
from latune.tracking.query import attach_to_sweep_run

__all__ = ["main"]

_EXAMPLES = examples(
    "latune report runs/paper_table-cifar10-20260101-120000   # writes report.md into the folder",
    "latune report paper_table --storage /data/runs --out report.md   # its latest run there",
    "latune report paper_table --bootstrap 0 --no-mlflow      # no intervals, not attached to MLflow")


def _find_experiment(target: str, storage: str) -> str:
    from latune.errors import UserError
    from latune.analysis.results import latest_experiment

    if os.path.isdir(target) or "://" in target:
        return target.rstrip("/")
    name = latest_experiment(storage, target)
    if name is None:
        raise UserError(f"SWEEP: {target!r} is neither an experiment folder nor a sweep with runs under {storage}")
    return os.path.join(storage, name)


def _read_results(folder: str) -> pd.DataFrame:
    from latune.errors import UserError
    from latune.analysis.results import read_parquet

    try:
        return read_parquet(folder)
    except (FileNotFoundError, OSError) as err:
        raise UserError(f"SWEEP: no results.parquet in {folder} (a sweep writes it when it ends): {err}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """``latune report SWEEP [flags]``: write and print report.md; exit status 0, or 2 for bad input."""
    parser = argparse.ArgumentParser(prog="latune report", epilog=_EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="The paper-style report of a finished sweep.")
    parser.add_argument("sweep", metavar="SWEEP", help="experiment folder (with results.parquet), or a sweep name "
                                                        "(its latest run under --storage)")
    parser.add_argument("--storage", default=os.environ.get("LATUNE_STORAGE") or "runs",
                        help="where sweeps write their folders (default $LATUNE_STORAGE, else ./runs)")
    parser.add_argument("--out", help="Markdown file to write (default SWEEP/report.md)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not attach the report to the sweep's MLflow run")
    parser.add_argument("--bootstrap", type=int, default=1000, metavar="B", help="bootstrap replicates of the 95%% "
                        "intervals (from the trials' test_outcomes.npz); 0 = no intervals (default 1000)")
    args = parser.parse_args(argv)

    def run() -> int:
        folder = _find_experiment(args.sweep, args.storage)
        table = _read_results(folder)
        if args.bootstrap < 0:
            raise UserError(f"--bootstrap: must be >= 0, got {args.bootstrap}")
        # per-image outcomes live in the trial folders; a remote (s3://) experiment is reported without them
        outcomes = find_outcomes(folder, table["trial_id"]) if args.bootstrap and "://" not in folder else {}
        text = render(table, title=f"{os.path.basename(folder.rstrip('/'))}", pgd_label=pgd_label(table),
                      outcomes=outcomes, replicates=args.bootstrap)
        out = args.out or (os.path.join(folder, "report.md") if "://" not in folder else "report.md")
        with open(out, "w") as handle:
            handle.write(text)
        print(text)
        print(f"wrote {out}")
        if not args.no_mlflow:
            _attach(folder, out, args.tracking_uri)
        return 0

    return guarded(run)


def _attach(folder: str, report: str, tracking_uri: str | None) -> None:
    """Attach the report to the sweep's MLflow parent run; a local store that is not there is left uncreated."""
    from latune.tracking.records import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    missing = missing_local_store(uri)
    if missing:
        print(f"no MLflow store at {missing}: not logged (--tracking-uri names another; --no-mlflow skips this)")
        return
    run_id = attach_to_sweep_run(folder, report, uri)
    print(f"logged to MLflow run {run_id}" if run_id else "no MLflow parent run of this sweep found: "
                                                           "not logged (--no-mlflow to skip the lookup)")
