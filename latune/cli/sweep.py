"""``python -m latune.sweep NAME``: run a named sweep on Ray Tune (see latune.sweep.run)."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from latune.cli.common import UserError, add_config_arguments, config_overrides, guarded
from latune.cli.early_stopping import (add_early_stopping_flags, early_stopping_lines, feasibility_note,
                                       with_early_stopping_flags)
from latune.config import ConfigError
from latune.sweep.run import DEFAULT_STORAGE, SweepOutcome, experiment_name, resolved_epochs, run_sweep
from latune.sweep.spec import SweepSpec, grid_points, load_sweep, shipped_sweeps_dir

__all__ = ["main"]


def _dry_run(spec: SweepSpec, storage: str) -> str:
    lines = [f"sweep {spec.name}: {spec.description}", f"file: {spec.path}",
             f"search: {spec.algorithm}" + (f" (sampler {spec.sampler}, seed {spec.seed})" if spec.algorithm == "optuna"
                                            else ""),
             "objectives: " + ", ".join(f"{m} {d}" for m, d in spec.objectives.items()),
             f"resources per trial: cpu {spec.cpu:g}, gpu {spec.gpu}; max_concurrent {spec.max_concurrent or 'auto'}; "
             f"max_retries {spec.max_retries}; epochs {resolved_epochs(spec)}",
             "base: " + ", ".join(f"{k}={v}" for k, v in spec.base.items())]
    lines += early_stopping_lines(spec)
    sampled = [d for d in spec.space if d.kind != "grid"]
    if spec.algorithm == "grid":
        points = grid_points(spec)
        lines.append(f"trials: {len(points) * spec.num_samples} ({len(points)} grid points x {spec.num_samples})")
        lines += [f"  {i:>3}  " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                           for k, v in p.items()) for i, p in enumerate(points)]
    else:
        lines.append(f"trials: {spec.num_samples} sampled by Optuna")
    lines += [f"  {d.key}: {d.kind} {list(d.values)}" for d in sampled]
    where = storage.rstrip("/") if "://" in storage else os.path.abspath(storage)
    lines.append(f"results would go under {where}/{experiment_name(spec)}-<time>")
    return "\n".join(lines)


def _list_sweeps() -> str:
    folders = [Path.cwd() / "sweeps", shipped_sweeps_dir()]
    seen: dict[str, str] = {}
    for folder in folders:
        for path in sorted(folder.glob("*.yaml")):
            if path.stem not in seen:
                try:
                    seen[path.stem] = load_sweep(str(path)).description
                except ConfigError as err:
                    seen[path.stem] = f"(invalid: {err})"
    width = max(map(len, seen), default=0)
    return "\n".join(f"{name:<{width}}  {text}" for name, text in seen.items())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m latune.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", nargs="?", help="sweep NAME (./sweeps/NAME.yaml, else shipped) or PATH to a YAML")
    add_config_arguments(
        parser, data="data set and its preset: digits (default), mnist, cifar10, cifar100, svhn, imagefolder",
        data_dir="root of downloaded data sets (default $LATUNE_DATA)",
        overrides="fix a config key for every trial (pins it if the sweep searches it); repeatable",
        corruptions="pin eval.corruptions for every trial: all, a family (noise, blur, weather, digital) or names",
        corruptions_dir="released CIFAR-10-C/-100-C .npy folder for the test split (eval.corruptions_dir; "
                        "cifar10/cifar100)")
    parser.add_argument("--num-samples", type=int, help="Optuna: number of trials; grid: repeats of the grid")
    parser.add_argument("--max-concurrent", type=int, help="trials at once (default: as many as fit)")
    parser.add_argument("--cpu", type=float, help="CPUs per trial (overrides the sweep file)")
    parser.add_argument("--gpu", help="GPUs per trial: a fraction (0.25 = four trials per GPU), a count, or auto")
    parser.add_argument("--address", help="Ray cluster address: auto or HOST:PORT (default $RAY_ADDRESS, else "
                                           "start a local Ray)")
    parser.add_argument("--storage", default=os.environ.get("LATUNE_STORAGE") or DEFAULT_STORAGE,
                        help="results folder or URI such as s3://bucket/path (default $LATUNE_STORAGE, else ./runs)")
    parser.add_argument("--optuna-storage", default=os.environ.get("LATUNE_OPTUNA_STORAGE") or None,
                        help="Optuna RDB URL (default $LATUNE_OPTUNA_STORAGE, else sqlite in the experiment folder)")
    parser.add_argument("--name", help="experiment name (default SWEEP-DATA-TIME; --resume: the latest)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    parser.add_argument("--dry-run", action="store_true", help="validate, print trials and resources, run nothing")
    parser.add_argument("--list", action="store_true", help="list the sweeps with their descriptions")
    parser.add_argument("--verbose", type=int, default=1, help="Tune's verbosity 0-3")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. http://host:5000 (default "
                                               "$MLFLOW_TRACKING_URI, else sqlite ./mlflow.db)")
    parser.add_argument("--experiment", help="MLflow experiment (default: the sweep's name)")
    parser.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")
    parser.add_argument("--mlflow-checkpoints", action="store_true", help="log each trial's final checkpoint "
                                                                         "to MLflow")
    add_early_stopping_flags(parser)
    return parser


def _resource_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The SweepSpec fields that --num-samples, --max-concurrent, --cpu and --gpu replace; raises UserError."""
    changes: dict[str, Any] = {}
    for flag in ("num_samples", "max_concurrent"):
        value = getattr(args, flag)
        if value is not None:
            if value < 1:
                raise UserError(f"--{flag.replace('_', '-')}: must be >= 1, got {value}")
            changes[flag] = value
    if args.cpu is not None:
        if args.cpu <= 0:
            raise UserError(f"--cpu: must be > 0, got {args.cpu}")
        changes["cpu"] = args.cpu
    if args.gpu is not None:
        try:
            changes["gpu"] = "auto" if args.gpu == "auto" else float(args.gpu)
        except ValueError:
            raise UserError(f"--gpu: must be auto or a number, got {args.gpu!r}") from None
        if changes["gpu"] != "auto" and changes["gpu"] < 0:
            raise UserError(f"--gpu: must be >= 0, got {args.gpu}")
    return changes


def _print_outcome(spec: SweepSpec, outcome: SweepOutcome, sweep: str) -> int:
    """Print the front, the trial counts and failures, where the results are; 130 if interrupted, else 0."""
    from latune.analysis.results import format_front

    table = outcome.table
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    print(format_front(table, spec.objectives, [d.key for d in spec.space]))
    print("trials: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()) + feasibility_note(spec, table))
    for _, row in (table[table["status"] == "ERROR"] if len(table) else table).iterrows():
        print(f"  {row['trial_id']} failed: {row['error']}")
    print(f"results: {outcome.results_path}\nTune: {outcome.experiment_path}")
    if outcome.interrupted:
        print(f"interrupted: continue with python -m latune.sweep {sweep} --resume "
              f"--name {Path(outcome.experiment_path).name}")
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def run() -> int:
        if args.list:
            print(_list_sweeps())
            return 0
        if not args.sweep:
            raise UserError("name a sweep (python -m latune.sweep --list shows them)")
        spec = load_sweep(args.sweep, data=args.data or "digits", overrides=config_overrides(args, data=False))
        spec = with_early_stopping_flags(replace(spec, **_resource_changes(args)), args)
        if args.dry_run:
            print(_dry_run(spec, args.storage))
            return 0
        outcome = run_sweep(spec, storage=args.storage, name=args.name, resume=args.resume, address=args.address,
                            optuna_storage=args.optuna_storage, verbose=args.verbose, mlflow=not args.no_mlflow,
                            tracking_uri=args.tracking_uri, mlflow_experiment=args.experiment,
                            mlflow_checkpoints=args.mlflow_checkpoints)
        return _print_outcome(spec, outcome, args.sweep)

    return guarded(run)
