"""Run a named sweep on Ray Tune: ``latune sweep delta_eps_grid [--data cifar10] ...``.

Grid sweeps use Tune's grid search; ``algorithm: optuna`` sweeps use OptunaSearch with one objective
per metric (multi-objective; NSGA-II by default) persisted in Optuna RDB storage (sqlite beside the
results by default) so they survive restarts and ``optuna-dashboard`` opens them. The sweep ends by
writing ``results.parquet`` and, beside it, the front files (latune.analysis.front_files).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latune.errors import ConfigError, UserError
from latune.sweep.spec import SweepSpec, expected_trials, grid_points

__all__ = ["SweepOutcome", "run_sweep", "plan_resources", "experiment_name", "resolved_epochs", "error_line"]

DEFAULT_STORAGE = "runs"
AUTO_GPU_SHARE = 0.25  # resources.gpu: auto packs four trials per GPU when the cluster has GPUs


@dataclass
class SweepOutcome:
    """What run_sweep returns: where the sweep's files are, its results table (results.parquet's rows: read the
    front as ``table[table["pareto_rank"] == 0]``), whether it was interrupted, and where to look at it."""

    experiment_path: str  # Tune's experiment folder (results.parquet is written there)
    results_path: str
    table: Any  # pandas.DataFrame, one row per trial
    interrupted: bool
    front_files: tuple[str, ...] = ()  # front.csv, front.png, front.html beside results.parquet; () = no front yet
    tracking_uri: str | None = None  # the MLflow store it logged to; None without MLflow
    study_url: str | None = None  # Optuna's RDB storage of an optuna sweep; None for a grid


def plan_resources(spec: SweepSpec, cluster: dict[str, float]) -> tuple[float, float, int]:
    """(cpu, gpu per trial, max concurrent trials) that fit ``cluster`` (Ray's cluster_resources()).

    A GPU request on a cluster without GPUs is an error (Ray would wait forever for it); ``auto``
    falls back to CPU with a note. Concurrency is capped to what fits, so Optuna asks for no more
    trials than can run.
    """
    cpus, gpus = float(cluster.get("CPU", 0)), float(cluster.get("GPU", 0))
    gpu = spec.gpu
    if gpu == "auto":
        gpu = AUTO_GPU_SHARE if gpus > 0 else 0.0
    if gpu > 0 and gpus == 0:
        raise ConfigError(f"resources.gpu: {gpu} GPU per trial requested but the Ray cluster has no GPU; "
                          "set resources.gpu to 0 (--gpu 0) or auto")
    if gpu > gpus:
        raise ConfigError(f"resources.gpu: {gpu} GPU per trial is more than the cluster's {gpus:g} GPUs")
    if spec.cpu > cpus:
        raise ConfigError(f"resources.cpu: {spec.cpu:g} CPUs per trial is more than the cluster's {cpus:g} CPUs")
    fits = math.floor(cpus / spec.cpu + 1e-9)
    if gpu > 0:
        fits = min(fits, math.floor(gpus / gpu + 1e-9))
    concurrent = min(fits, spec.max_concurrent) if spec.max_concurrent else fits
    return spec.cpu, gpu, max(1, concurrent)


def _tune_space(spec: SweepSpec) -> dict[str, Any]:
    from ray import tune

    space: dict[str, Any] = dict(spec.base)
    for dim in spec.space:
        if dim.kind == "grid" and spec.blocks:  # a list of grids: its points come from _grid_points_search
            space[dim.key] = tune.choice(list(dim.values))
        elif dim.kind == "grid":
            space[dim.key] = tune.grid_search(list(dim.values))
        elif dim.kind == "choice":
            space[dim.key] = tune.choice(list(dim.values))
        elif dim.kind == "uniform":
            space[dim.key] = tune.uniform(*dim.values)
        elif dim.kind == "loguniform":
            space[dim.key] = tune.loguniform(*dim.values)
        else:
            space[dim.key] = tune.randint(int(dim.values[0]), int(dim.values[1]) + 1)  # Tune's upper bound is exclusive
    return space


def experiment_name(spec: SweepSpec) -> str:
    return f"{spec.name}-{spec.base['data.name']}"


def _saved_tune_state(experiment_path: str) -> bool:
    """Whether Tune saved experiment state there. ``Tuner.can_restore`` only looks for tuner.pkl, which Tune
    writes before any state; restoring from it alone restarts without the param_space (one default trial)."""
    import pyarrow.fs
    from ray import tune

    from latune.storage import filesystem

    if not tune.Tuner.can_restore(experiment_path):
        return False
    fs, root = filesystem(experiment_path)
    found = fs.get_file_info(pyarrow.fs.FileSelector(root, allow_not_found=True))
    return any(Path(info.path).name.startswith("experiment_state-") for info in found)


@dataclass(frozen=True)
class _Plan:
    """Where a sweep runs and with what: Tune's storage and folder name, per-trial resources, Optuna storage."""

    storage: str  # absolute local folder or URI
    name: str  # Tune's experiment folder under storage
    cpu: float  # per trial
    gpu: float  # per trial
    concurrent: int  # trials at once
    study_url: str | None  # Optuna RDB storage (optuna sweeps)

    @property
    def experiment_path(self) -> str:
        return f"{self.storage.rstrip('/')}/{self.name}"


def run_sweep(spec: SweepSpec, *, storage: str = DEFAULT_STORAGE, name: str | None = None, resume: bool = False,
              address: str | None = None, optuna_storage: str | None = None, verbose: int = 1, mlflow: bool = True,
              tracking_uri: str | None = None, mlflow_experiment: str | None = None,
              mlflow_checkpoints: bool = False) -> SweepOutcome:
    """Run (or resume) a sweep; returns its results table. Starts a local Ray unless ``address``.

    Unless ``mlflow`` is False, the driver logs the sweep to MLflow (latune.tracking): ``tracking_uri``
    (default $MLFLOW_TRACKING_URI, else ./mlflow.db), experiment ``mlflow_experiment`` (default the sweep's name).
    """
    from latune.analysis.results import results_table, write_parquet
    from latune.sweep.progress import progress_callbacks
    from latune.tracking.callback import tracking_callbacks

    # a checkpoint every epoch from several trials makes Tune warn about state snapshots; expected here
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    plan = _plan(spec, storage, name, resume, optuna_storage, address, verbose)
    callbacks = tracking_callbacks(spec, plan.experiment_path, enabled=mlflow, tracking_uri=tracking_uri,
                                   experiment=mlflow_experiment, log_checkpoints=mlflow_checkpoints)
    callbacks += progress_callbacks(spec, resolved_epochs(spec), verbose)
    grid = _tuner(spec, plan, callbacks, resume=resume, verbose=verbose).fit()
    table = results_table(_rows(spec, grid), spec.objectives, spec.constraints)
    results_path = write_parquet(table, plan.experiment_path)
    # trials Tune had not created yet when interrupted (Ctrl+C) are missing from the table altogether
    interrupted = len(table) < expected_trials(spec) or bool((table["status"] == "UNFINISHED").any())
    return SweepOutcome(experiment_path=plan.experiment_path, results_path=results_path, table=table,
                        interrupted=interrupted, front_files=_front_files(spec, table, plan.experiment_path),
                        tracking_uri=_tracking_uri(tracking_uri) if mlflow else None,
                        study_url=plan.study_url if spec.algorithm == "optuna" else None)


def _front_files(spec: SweepSpec, table: Any, experiment_path: str) -> tuple[str, ...]:
    """Write the front files beside results.parquet; () when no trial finished or drawing failed (warned)."""
    import warnings

    from latune.analysis.front_files import write_front_files

    try:
        return tuple(write_front_files(table, spec.objectives, [d.key for d in spec.space], experiment_path))
    except Exception as err:  # noqa: BLE001 - results.parquet is written: a figure must not fail the sweep
        warnings.warn(f"front files not written ({type(err).__name__}: {err}); redraw them with "
                      f"latune pareto {experiment_path} --plot", RuntimeWarning, stacklevel=2)
        return ()


def _tracking_uri(tracking_uri: str | None) -> str:
    """The store the sweep logged to, resolved as latune.tracking.callback resolves it."""
    from latune.tracking.records import resolve_tracking_uri

    return resolve_tracking_uri(tracking_uri)


def _cluster_resources(address: str | None, verbose: int) -> dict[str, float]:
    """Start (or join) Ray; the resources trials may use, counting the workers a `ray up` cluster may add."""
    import ray

    # ray.init(address=None) joins the latest cluster started on this machine (`ray start`, another
    # process's ray.cluster_utils) and then rejects num_cpus; "local" starts our own, as documented.
    # $RAY_ADDRESS (set by `ray job submit`, and on the head of a `ray up` cluster) names the cluster to join.
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not ray.is_initialized():
        ray.init(address=address or "local", include_dashboard=False, log_to_driver=verbose > 1,
                 **({} if address else {"num_cpus": os.cpu_count()}))
    resources = ray.cluster_resources()
    if address not in (None, "local"):  # joined a cluster: on a `ray up` head, count the workers it may add
        from latune.cluster.autoscaler import with_autoscaler_capacity

        resources = with_autoscaler_capacity(resources)
    return resources


def _plan(spec: SweepSpec, storage: str, name: str | None, resume: bool, optuna_storage: str | None,
          address: str | None, verbose: int) -> _Plan:
    """The experiment folder (--resume without --name: the latest of this sweep), then Ray (started or joined)
    and the resources that fit it, and the Optuna storage; creates a local experiment folder."""
    remote = "://" in storage
    storage = storage if remote else os.path.abspath(storage)  # Tune changes directories: keep paths absolute
    prefix = experiment_name(spec)
    if resume and name is None:
        from latune.analysis.results import latest_experiment

        name = None if remote else latest_experiment(storage, prefix)
        if name is None:
            raise UserError(f"--resume: no earlier run of {prefix} under {storage}; pass --name")
    elif resume and not remote and not os.path.isdir(os.path.join(storage, name)):
        # a misspelt name must not start a new sweep under it (the command line says "did you mean" first)
        raise UserError(f"--resume: no experiment folder {name!r} under {storage}")
    name = name or f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}"
    cpu, gpu, concurrent = plan_resources(spec, _cluster_resources(address, verbose))
    experiment_path = f"{storage.rstrip('/')}/{name}"
    if not remote:
        os.makedirs(experiment_path, exist_ok=True)
    study_url = optuna_storage or (f"sqlite:///{experiment_path}/optuna.db" if not remote else None)
    if spec.algorithm == "optuna" and study_url is None:
        raise UserError("--optuna-storage URL is required when --storage is remote")
    return _Plan(storage, name, cpu, gpu, concurrent, study_url)


def _tuner(spec: SweepSpec, plan: _Plan, callbacks: list, *, resume: bool, verbose: int) -> Any:
    """Tune's Tuner: restored from the experiment folder on --resume when Tune saved state there, else fresh
    (with the sweep's Optuna search and, when early_stopping is on, the Pareto-rank scheduler)."""
    from ray import tune

    from latune.sweep.optuna_search import optuna_search
    from latune.sweep.progress import tune_verbosity
    from latune.sweep.scheduler import pareto_scheduler
    from latune.sweep.trainable import train_trial
    from latune.tracking.callback import use_callbacks_on_restore

    trainable = tune.with_resources(tune.with_parameters(train_trial), {"cpu": plan.cpu, "gpu": plan.gpu})
    if resume and _saved_tune_state(plan.experiment_path):
        tuner = tune.Tuner.restore(plan.experiment_path, trainable, resume_unfinished=True, resume_errored=False)
        use_callbacks_on_restore(tuner, callbacks)
        return tuner
    # fresh, or interrupted before Tune saved any state (Tuner.restore cannot handle that)
    search_alg = (optuna_search(spec, plan.study_url, plan.name, plan.concurrent, resolved_epochs(spec))
                  if spec.algorithm == "optuna" else None)
    num_samples = spec.num_samples
    if spec.blocks:
        search_alg, num_samples = _grid_points_search(spec, plan.concurrent)
    return tune.Tuner(
        trainable, param_space=_tune_space(spec),
        tune_config=tune.TuneConfig(search_alg=search_alg, num_samples=num_samples,
                                    max_concurrent_trials=None if search_alg else plan.concurrent,
                                    reuse_actors=False,
                                    scheduler=pareto_scheduler(spec)),
        run_config=tune.RunConfig(
            name=plan.name, storage_path=plan.storage, verbose=tune_verbosity(verbose), callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=spec.max_retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2)))


def _grid_points_search(spec: SweepSpec, concurrent: int) -> tuple[Any, int]:
    """(searcher, num_samples) of a list of grids: Tune's own variant generator given every point of the union
    (grid_points) as a point to evaluate, each searched key a choice it never samples, since every point sets
    every key. Tune saves this searcher with the experiment, so --resume continues the same points."""
    from ray.tune.search import BasicVariantGenerator

    points = grid_points(spec) * spec.num_samples
    return BasicVariantGenerator(points_to_evaluate=points, max_concurrent=concurrent), len(points)


def _rows(spec: SweepSpec, grid: Any) -> list[dict[str, Any]]:
    """One results.parquet row per trial Tune knows (latune.analysis.results.trial_row)."""
    from latune.analysis.results import trial_row

    epochs = resolved_epochs(spec)
    rows = []
    for result in grid:
        history = result.metrics_dataframe.to_dict("records") if result.metrics_dataframe is not None else []
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
        error = error_line(result.error) if result.error else None
        rows.append(trial_row(trial_id, dict(result.config or {}), history, spec.objectives, error, epochs))
    return rows


def error_line(error: BaseException) -> str:
    """One line naming a trial's own exception: Ray wraps it (RayTaskError(FloatingPointError)), and the
    wrapper's first line is only ``ray::ImplicitFunc.train() (pid=..., ip=...)`` in ANSI colours."""
    from latune.tracking.records import strip_ansi

    cause = getattr(error, "cause", None)
    error = cause if isinstance(cause, BaseException) else error
    text = strip_ansi(f"{type(error).__name__}: {error}").strip()
    return text.splitlines()[0] if text else type(error).__name__


def resolved_epochs(spec: SweepSpec) -> int:
    from latune.config import from_flat, resolve

    return resolve(from_flat(spec.base)).optim.epochs
