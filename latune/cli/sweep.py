"""``latune sweep NAME``: run a named sweep on Ray Tune (see latune.sweep.run)."""

from __future__ import annotations

import argparse
import difflib
import os
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from latune.cli.common import (UserError, add_config_arguments, blame_command_line, config_overrides, examples,
                               flag_sources, guarded)
from latune.cli.data_check import check_data
from latune.cli.early_stopping import (add_early_stopping_flags, early_stopping_lines, feasibility_note,
                                       with_early_stopping_flags)
from latune.config import ConfigError
from latune.sweep.run import DEFAULT_STORAGE, SweepOutcome, experiment_name, resolved_epochs, run_sweep
from latune.sweep.spec import SweepSpec, grid_points, load_sweep, resolve_sweep_path, shipped_sweeps_dir

__all__ = ["main"]

_DESCRIPTION = """Run a named sweep on Ray Tune (a grid, or a search by Optuna), tracked in MLflow.
It ends with the Pareto front of its trials and writes results.parquet, front.csv,
front.png and front.html into its experiment folder (runs/SWEEP-DATA-TIME)."""
_EXAMPLES = examples(
    "latune sweep --list                  # the sweeps with their descriptions",
    "latune sweep delta_eps_grid --set optim.epochs=2 --dry-run   # check, run nothing",
    "latune sweep pareto --data cifar10 --data-dir ~/data --gpu 0.25",
    "latune sweep delta_eps_grid --resume # continue the latest interrupted run")


def _data_line(spec: SweepSpec, address: str | None) -> str:
    """The dry run's line on the data: where each data set a trial can use was found (DataError when missing);
    not checked when trials run on a Ray cluster, whose nodes hold the data."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        return f"data: not checked here (trials run on the Ray cluster at {address}, where the data are)"
    names = [v for d in spec.space if d.key == "data.name" for v in d.values] or [spec.base["data.name"]]
    return "data: " + "; ".join(check_data(str(name), spec.base.get("data.data_dir")) for name in dict.fromkeys(names))


def _dry_run(spec: SweepSpec, storage: str, address: str | None = None) -> str:
    lines = [f"sweep {spec.name}: {spec.description}", f"file: {spec.path}",
             f"search: {spec.algorithm}" + (f" (sampler {spec.sampler}, seed {spec.seed})" if spec.algorithm == "optuna"
                                            else ""),
             "objectives: " + ", ".join(f"{m} {d}" for m, d in spec.objectives.items()),
             f"resources per trial: cpu {spec.cpu:g}, gpu {spec.gpu}; max_concurrent {spec.max_concurrent or 'auto'}; "
             f"max_retries {spec.max_retries}; epochs {resolved_epochs(spec)}",
             "base: " + ", ".join(f"{k}={v}" for k, v in spec.base.items())]
    lines.append(_data_line(spec, address))
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
    parser = argparse.ArgumentParser(prog="latune sweep", description=_DESCRIPTION, epilog=_EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
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
    parser.add_argument("--verbose", type=int, default=1, choices=range(4), metavar="{0,1,2,3}",
                        help="0 silent; 1 latune's progress table (default); 2 also Tune's status; 3 also Tune's "
                             "per-result lines")
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
        changes["gpu"] = _gpu(args.gpu)
    return changes


def _gpu(raw: str) -> float | str:
    """--gpu: auto, a fraction in [0, 1] (trials share a GPU) or a whole number of GPUs, as resources.gpu."""
    try:
        gpu = "auto" if raw == "auto" else float(raw)
    except ValueError:
        gpu = -1.0
    if gpu != "auto" and not (gpu >= 0 and (gpu <= 1 or float(gpu).is_integer())):
        raise UserError(f"--gpu: must be auto, a fraction in [0, 1] or a whole number of GPUs, got {raw!r}")
    return gpu


def _print_outcome(spec: SweepSpec, outcome: SweepOutcome, sweep: str) -> int:
    """Print the front, the trial counts and failures, where the results are and how to look at them; 130 if
    interrupted, else 0."""
    from latune.analysis.results import format_front

    table = outcome.table
    counts = table["status"].value_counts().to_dict() if len(table) else {}
    print(format_front(table, spec.objectives, [d.key for d in spec.space]))
    print("trials: " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items()) + feasibility_note(spec, table))
    for _, row in (table[table["status"] == "ERROR"] if len(table) else table).iterrows():
        print(f"  {row['trial_id']} failed: {row['error']}")
    print(f"results: {outcome.results_path}\nTune: {outcome.experiment_path}")
    print(_where_to_look(outcome))
    if outcome.interrupted:
        print(f"interrupted: continue with latune sweep {sweep} --resume "
              f"--name {Path(outcome.experiment_path).name}")
        return 130
    return 0


def _where_to_look(outcome: SweepOutcome) -> str:
    """The front files, and the commands that open this run's MLflow store and Optuna study."""
    lines = [f"front: {', '.join(outcome.front_files)}" if outcome.front_files else
             "front: no finished trial, no front files (latune pareto FOLDER --plot draws them later)"]
    uri = outcome.tracking_uri
    if uri and uri.startswith(("http://", "https://", "databricks")):  # a server: its own UI
        lines.append(f"MLflow: {uri}")
    elif uri:
        lines.append(f"MLflow UI: mlflow ui --backend-store-uri {uri}")
    if outcome.study_url:
        shown = re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", outcome.study_url)  # a database password stays unshown
        lines.append(f"Optuna dashboard: optuna-dashboard {shown}   (pip install 'latune[ui]')")
    return "\n".join(lines)


def _load(args: argparse.Namespace) -> SweepSpec:
    """The sweep with the command line applied. An error the command line caused (the file alone is valid) is
    blamed on the flag, not on the sweep file its value was written into."""
    overrides = config_overrides(args, data=False)
    data = args.data or "digits"
    try:
        return load_sweep(args.sweep, data=data, overrides=overrides)
    except ConfigError as err:
        sources = flag_sources(args)
        sources.pop("data.name", None)  # --data is the sweep's preset: load_sweep names it as such
        if not sources:
            raise
        load_sweep(args.sweep, data=data)  # the file's own error, if it has one, as it is
        message = str(err).removeprefix(f"{resolve_sweep_path(args.sweep)}: base: ")
        raise blame_command_line(message, sources) from None


def _check_resume(args: argparse.Namespace) -> None:
    """--resume --name NAME continues the experiment folder NAME: refuse a name with no folder (local storage)
    rather than start a new sweep under it."""
    if not (args.resume and args.name) or "://" in args.storage:
        return
    storage = os.path.abspath(args.storage)
    if os.path.isdir(os.path.join(storage, args.name)):
        return
    found = sorted(e.name for e in os.scandir(storage) if e.is_dir()) if os.path.isdir(storage) else []
    close = difflib.get_close_matches(args.name, found, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise UserError(f"--name: no experiment folder {args.name!r} under {storage} to resume{hint}; drop --resume "
                    "to start a new sweep")


def main(argv: Sequence[str] | None = None) -> int:
    """``latune sweep NAME [flags]``: run (or --dry-run, --list) a sweep; the exit status: 0, 2 bad input,
    130 interrupted."""
    args = _parser().parse_args(argv)

    def run() -> int:
        if args.list:
            print(_list_sweeps())
            return 0
        if not args.sweep:
            raise UserError("name a sweep (latune sweep --list shows them)")
        spec = with_early_stopping_flags(replace(_load(args), **_resource_changes(args)), args)
        _check_resume(args)
        if args.dry_run:
            print(_dry_run(spec, args.storage, args.address))
            return 0
        outcome = run_sweep(spec, storage=args.storage, name=args.name, resume=args.resume, address=args.address,
                            optuna_storage=args.optuna_storage, verbose=args.verbose, mlflow=not args.no_mlflow,
                            tracking_uri=args.tracking_uri, mlflow_experiment=args.experiment,
                            mlflow_checkpoints=args.mlflow_checkpoints)
        return _print_outcome(spec, outcome, args.sweep)

    return guarded(run)
