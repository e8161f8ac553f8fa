"""A sweep in MLflow: one parent run per sweep, one nested child run per trial, written by one process.

Layout (docs/mlflow.md):

- experiment: the sweep's name (configurable). Parent run: named after Tune's experiment folder, tags
  ``latune.role=sweep`` and ``latune.experiment_path``; params ``objective.<metric>``, ``search.*``,
  ``base.*`` and ``searched``; metric ``hypervolume`` with step = finished trials; artifacts sweep.yaml,
  pareto_front.csv/.parquet (the front: each objective on validation, where it is chosen, and its held-out
  ``test_<metric>``), pareto_pairs.png, pareto_3d.html (latune.tracking.front).
- child runs: tags ``mlflow.parentRunId``, ``latune.trial_id``, ``latune.experiment_path``,
  ``latune.sweep``, ``latune.data``, ``latune.git_commit``, ``latune.version``; params = the trial's
  resolved config as flat dotted keys; every scalar metric of every epoch with step = epoch (none of
  Ray's bookkeeping); ``pareto_rank`` (0 = front, -1 = not finished) with step = finished trials and
  tag ``pareto`` = true/false; status RUNNING, FINISHED, FAILED (error in tag ``latune.error`` and the
  run's description) or KILLED, told apart by tag ``latune.status`` (running, finished, failed, pruned:
  stopped at a rung, killed: interrupted); with constraints, tag ``feasible`` = true/false; artifacts
  config.yaml, class_errors.csv/.png, error.txt and, when asked for, the final checkpoint under checkpoint/.

``SweepTracker`` is idempotent: it finds runs by tags (never a second run for a trial), logs only the
epochs MLflow lacks, and changes a status, rank or tag only when it differs. The same code serves the
live sweep (fed by latune.tracking.callback) and the backfill (latune.tracking.sync, fed from Tune's
files); both hand it ``TrialRecord`` s (latune.tracking.records). What it does when MLflow fails is
latune.tracking.guard's.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latune.tracking.guard import MlflowGuard
from latune.tracking.records import (SweepInfo, TrialRecord, by_epoch, epoch_metrics, error_summary, outcome_tags,
                                     resolved_config)

__all__ = ["SweepTracker"]

logger = logging.getLogger(__name__)

_FRONT_REFRESH_S = 300.0  # the parent run's front artifacts are redrawn at most this often while the sweep runs
_TAG_LIMIT = 5000  # characters of error text kept in a tag (MLflow allows 8000)


@dataclass
class _Run:
    """What this process knows an MLflow run holds."""

    run_id: str
    status: str
    tags: dict[str, str]
    params: set[str]
    rank: float | None = None  # latest pareto_rank
    epochs: set[int] | None = None  # steps of the "epoch" metric (epochs logged in full); None: not read yet
    start: int = 0  # start time, ms


class SweepTracker:
    """Brings MLflow up to date with a sweep's trials; layout in the module docstring.

    ``update(records)`` after each event, ``close()`` at the end. ``strict=False`` (the live sweep): no
    MLflow outage ever escapes (a bug does: latune.tracking.guard); requests time out after a few seconds
    without retries; the first failure prints one warning, MLflow is left alone for a minute, then everything
    not yet logged is caught up.
    ``strict=True`` (latune.sync): errors raise, MLflow's own timeouts and retries apply.
    """

    def __init__(self, sweep: SweepInfo, tracking_uri: str, *, experiment: str | None = None,
                 log_checkpoints: bool = False, strict: bool = False) -> None:
        self.sweep = sweep
        self.tracking_uri = tracking_uri
        self.experiment = experiment or sweep.mlflow_experiment or sweep.name
        self.log_checkpoints = log_checkpoints
        self.strict = strict
        self.stats = {"runs_created": 0, "epochs_logged": 0}  # what this tracker added to MLflow
        self.experiment_id: str | None = None
        self._records: dict[str, TrialRecord] = {}
        self._dirty: set[str] = set()  # trials MLflow may lag behind on
        self._client: Any = None
        self._parent: _Run | None = None
        self._children: dict[str, _Run] = {}
        self._hv_steps: set[int] | None = None  # hypervolume steps already in MLflow
        self._ranked: tuple | None = None  # the trials' (id, status, epochs) at the last Pareto update
        self._front_drawn: tuple[int, float] = (0, -math.inf)  # (finished trials, monotonic time) when drawn
        self._guard = MlflowGuard(tracking_uri, strict=strict)  # the retry policy (latune.tracking.guard)

    @property
    def parent_run_id(self) -> str | None:
        return self._parent.run_id if self._parent else None

    def pareto_url(self, server: str | None = None) -> str | None:
        """The MLflow UI's runs page of this sweep grouped by tag ``pareto`` (group "true" = the front), on
        ``server`` (default: the tracking URI when it is an HTTP server); None before the parent run exists."""
        server = server or (self.tracking_uri if self.tracking_uri.startswith(("http://", "https://")) else None)
        if self._parent is None or server is None:
            return None
        from latune.tracking.front import PARETO_VIEW_PREFIX

        return (f"{server.rstrip('/')}/#/experiments/{self.experiment_id}/runs"
                f"?viewStateShareKey={PARETO_VIEW_PREFIX}{self._parent.run_id}")

    # -- the two entry points ------------------------------------------------------------------------
    def update(self, records: Iterable[TrialRecord] = ()) -> bool:
        """Take these trials' latest state and bring MLflow up to date; False if MLflow was not reached."""
        for record in records:
            self._records[record.trial_id] = record
            self._dirty.add(record.trial_id)
        return self._guard.run(self._flush, force=False, on_failure=self._forget)

    def close(self) -> bool:
        """Final update: every trial, the front artifacts, and the parent's status: FINISHED when all the
        sweep's trials finished or failed, else KILLED (interrupted; a resume continues it)."""
        self._dirty.update(self._records)

        def finish() -> None:
            self._flush()
            self._log_front()
            ended = sum(r.status in ("FINISHED", "FAILED") or r.pruned for r in self._records.values())
            done = ended == len(self._records) and ended >= (self.sweep.trials or 0)
            stamps = [_received_at(h) for r in self._records.values() for h in r.history]
            self._set_status(self._parent, "FINISHED" if done else "KILLED", int(max(stamps) * 1000) if stamps else None)

        ok = self._guard.run(finish, force=True, on_failure=self._forget)
        if not ok:
            logger.warning(f"warning: MLflow at {self.tracking_uri} was not reachable at the end of the sweep; "
                           f"Tune's files hold every result. Backfill with: python -m latune.sync "
                           f"{self.sweep.experiment_path} --tracking-uri {self.tracking_uri}")
        return ok

    def _forget(self) -> None:
        """After a failed request: what MLflow holds is unknown (the server may have applied it); read it again."""
        self._parent, self._children, self._hv_steps, self._ranked = None, {}, None, None

    # -- MLflow -------------------------------------------------------------------------------------
    def _flush(self) -> None:
        self._open()
        for trial_id in sorted(self._dirty):
            self._sync_trial(self._records[trial_id])
            self._dirty.discard(trial_id)
        self._sync_pareto()
        finished = sum(r.status == "FINISHED" for r in self._records.values())
        drawn, when = self._front_drawn
        if finished > drawn and time.monotonic() - when >= _FRONT_REFRESH_S:
            self._log_front()

    def _open(self) -> None:
        """Experiment, parent run and the index of child runs: found by tags, created when missing."""
        from mlflow import MlflowClient

        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        if self._parent is not None:
            return
        client = self._client
        experiment = client.get_experiment_by_name(self.experiment)
        if experiment is not None and experiment.lifecycle_stage != "active":
            raise RuntimeError(f"MLflow experiment {self.experiment!r} is deleted; restore it "
                               "(mlflow experiments restore) or pick another with --experiment")
        # experimentKind: MLflow 3 opens the experiment on its training-runs page, not the GenAI overview
        self.experiment_id = experiment.experiment_id if experiment else client.create_experiment(
            self.experiment, tags={"latune.sweep": self.sweep.name, "mlflow.experimentKind": "custom_model_development"})
        parent = self._find_parent() or self._create_parent()
        self._parent = _Run(parent.info.run_id, parent.info.status, dict(parent.data.tags), set(parent.data.params))
        self._children = {}
        for run in self._search(f"tags.mlflow.parentRunId = '{self._parent.run_id}'"):
            trial_id = run.data.tags.get("latune.trial_id")
            known = self._children.get(trial_id)
            if trial_id and (known is None or run.info.start_time < known.start):
                self._children[trial_id] = _Run(run.info.run_id, run.info.status, dict(run.data.tags),
                                                set(run.data.params), run.data.metrics.get("pareto_rank"),
                                                start=run.info.start_time)
        self._dirty.update(self._records)
        if self._parent.status != "RUNNING" and not self.strict:  # a resumed sweep continues its run
            self._set_status(self._parent, "RUNNING")

    def _search(self, filter_string: str) -> list[Any]:
        """Every run of the experiment matching the filter (all pages)."""
        runs, token = [], None
        while True:
            page = self._client.search_runs([self.experiment_id], filter_string, max_results=1000, page_token=token)
            runs += list(page)
            token = page.token
            if not token:
                return runs

    def _find_parent(self) -> Any:
        """This sweep's parent run: same Tune folder; else (the folder moved) the only one of that name."""
        parents = self._search("tags.`latune.role` = 'sweep'")
        same = [r for r in parents if r.data.tags.get("latune.experiment_path") == self.sweep.experiment_path]
        if not same:
            same = [r for r in parents if r.info.run_name == self._run_name()]
            same = same if len(same) == 1 else []
        return min(same, key=lambda r: r.info.start_time) if same else None

    def _create_parent(self) -> Any:
        from mlflow.entities import Param

        from latune.tracking.front import PARETO_VIEW_PREFIX, pareto_view

        client = self._client
        stamps = [_received_at(h) for r in self._records.values() for h in r.history[:1]]
        parent = client.create_run(self.experiment_id, tags={**self._identity_tags(), "latune.role": "sweep"},
                                   run_name=self._run_name(), start_time=_start_ms(stamps))
        self.stats["runs_created"] += 1
        params = {f"objective.{m}": d for m, d in self.sweep.objectives.items()}
        params.update({f"search.{k}": v for k, v in self.sweep.search.items()})
        params.update({f"base.{k}": v for k, v in self.sweep.base.items()})
        params["searched"] = ",".join(self.sweep.searched)
        client.log_batch(parent.info.run_id, params=[Param(k, _param(v)) for k, v in params.items()])
        if self.sweep.sweep_text:
            client.log_text(parent.info.run_id, self.sweep.sweep_text, "sweep.yaml")
        view = pareto_view(parent.info.run_id, list(self.sweep.objectives), self.sweep.searched)
        client.set_experiment_tag(self.experiment_id, f"mlflow.sharedViewState.{PARETO_VIEW_PREFIX}{parent.info.run_id}",
                                  json.dumps(view))
        return parent

    def _run_name(self) -> str:
        return self.sweep.experiment_path.rstrip("/").rsplit("/", 1)[-1]

    def _identity_tags(self) -> dict[str, str]:
        import latune
        from latune.provenance import git_commit

        commit = git_commit() or "unknown"
        return {"latune.sweep": self.sweep.name, "latune.experiment_path": self.sweep.experiment_path,
                "latune.data": self.sweep.data, "latune.version": latune.__version__, "latune.git_commit": commit,
                "mlflow.source.git.commit": commit.removesuffix("-dirty"), "mlflow.source.name": "latune.sweep",
                "mlflow.source.type": "JOB"}

    def _sync_trial(self, record: TrialRecord) -> None:
        from mlflow.entities import Metric, Param, RunTag

        client = self._client
        run = self._children.get(record.trial_id)
        if run is None:
            tags = {**self._identity_tags(), "mlflow.parentRunId": self._parent.run_id,
                    "latune.trial_id": record.trial_id, "pareto": "false",
                    "latune.data": str(record.config.get("data.name", self.sweep.data))}
            created = client.create_run(self.experiment_id, tags=tags, run_name=record.trial_id,
                                        start_time=_start_ms([_received_at(h) for h in record.history[:1]]))
            self.stats["runs_created"] += 1
            run = self._children[record.trial_id] = _Run(created.info.run_id, "RUNNING", tags, set())
        if run.epochs is None:
            run.epochs = {int(m.step) for m in client.get_metric_history(run.run_id, "epoch")}
        params = {k: _param(v) for k, v in resolved_config(record.config).items() if k not in run.params}
        if params:
            client.log_batch(run.run_id, params=[Param(k, v) for k, v in params.items()])
            run.params.update(params)
        metrics, new = [], []
        for epoch, result in by_epoch(record.history).items():
            if epoch not in run.epochs:
                stamp = int(_received_at(result) * 1000)
                metrics += [Metric(k, v, stamp, epoch) for k, v in epoch_metrics(result).items() if k != "epoch"]
                # last (the client splits big batches in order): once "epoch" is in MLflow, the whole epoch is
                metrics.append(Metric("epoch", float(epoch), stamp, epoch))
                new.append(epoch)
        node = next((str(r["node_ip"]) for r in reversed(record.history) if r.get("node_ip")), None)
        tags = [RunTag("latune.node_ip", node)] if node and run.tags.get("latune.node_ip") != node else []
        if metrics or tags:
            client.log_batch(run.run_id, metrics=metrics, tags=tags)
            run.epochs.update(new)
            run.tags.update({t.key: t.value for t in tags})
            self.stats["epochs_logged"] += len(new)
        if (record.status in ("FINISHED", "FAILED") or record.pruned) and run.tags.get("latune.artifacts") != "true":
            self._log_trial_artifacts(run, record)
        if record.status == "FAILED" and record.error and "latune.error" not in run.tags:
            tags = {"latune.error": error_summary(record.error)[:_TAG_LIMIT],
                    "mlflow.note.content": f"FAILED: {record.error.strip()[:_TAG_LIMIT]}"}
            client.log_batch(run.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            run.tags.update(tags)
        changed = {k: v for k, v in outcome_tags(record, self.sweep.constraints).items() if run.tags.get(k) != v}
        if changed:  # latune.status (pruned vs interrupted, both KILLED) and feasible
            client.log_batch(run.run_id, tags=[RunTag(k, v) for k, v in changed.items()])
            run.tags.update(changed)
        end = int(max(map(_received_at, record.history)) * 1000) if record.history else None
        self._set_status(run, record.status, end)

    def _set_status(self, run: _Run, status: str, end_ms: int | None = None) -> None:
        if run.status == status:
            return
        if status == "RUNNING":
            self._client.update_run(run.run_id, status="RUNNING")
        else:
            self._client.set_terminated(run.run_id, status=status, end_time=end_ms)
        run.status = status

    def _log_trial_artifacts(self, run: _Run, record: TrialRecord) -> None:
        """config.yaml, class_errors.csv/.png (the last epoch's per-class errors), error.txt, checkpoint/."""
        import yaml
        from mlflow.entities import RunTag

        from latune.analysis import plots

        with tempfile.TemporaryDirectory(prefix="latune-mlflow-") as folder:
            out = Path(folder)
            (out / "config.yaml").write_text(yaml.safe_dump(resolved_config(record.config), sort_keys=True))
            epochs = by_epoch(record.history)
            errors = plots.class_errors(epochs[max(epochs)]) if epochs else None
            if errors is not None:
                errors.to_csv(out / "class_errors.csv", index=False)
                plots.save(plots.class_error_figure(errors, f"trial {record.trial_id}"), out / "class_errors.png")
            if record.error:
                (out / "error.txt").write_text(record.error)
            self._client.log_artifacts(run.run_id, folder)
        if self.log_checkpoints and record.checkpoint is not None:
            import pyarrow.fs

            filesystem, path = record.checkpoint
            with tempfile.TemporaryDirectory(prefix="latune-checkpoint-") as folder:
                pyarrow.fs.copy_files(path, folder, source_filesystem=filesystem,
                                      destination_filesystem=pyarrow.fs.LocalFileSystem())
                self._client.log_artifacts(run.run_id, folder, "checkpoint")
        self._client.log_batch(run.run_id, tags=[RunTag("latune.artifacts", "true")])
        run.tags["latune.artifacts"] = "true"

    def table(self) -> Any:
        """The sweep as results.parquet has it (latune.results), one row per trial, plus ``run_id``."""
        from latune.analysis.constraints import from_mapping
        from latune.tracking.front import sweep_table

        return sweep_table(({
            "trial_id": r.trial_id, "run_id": self._children[r.trial_id].run_id if r.trial_id in self._children else None,
            "config": r.config, "history": list(by_epoch(r.history).values()),
            "epochs": int(resolved_config(r.config).get("optim.epochs") or 0),
            "error": error_summary(r.error or "error") if r.status == "FAILED" else None,
        } for r in self._records.values()), self.sweep.objectives, from_mapping(self.sweep.constraints))

    def _sync_pareto(self) -> None:
        """pareto_rank and tag pareto of every child whose rank changed; the parent's hypervolume curve."""
        from mlflow.entities import Metric, RunTag

        from latune.tracking.front import hypervolume_curve

        # ranks depend on the statuses and on the finished trials' final results only
        ranked = tuple(sorted((r.trial_id, r.status, 0 if r.status == "RUNNING" else len(r.history))
                              for r in self._records.values()))
        if ranked == self._ranked:
            return  # nothing that decides a rank changed
        table = self.table()
        finished = int((table["status"] == "TERMINATED").sum()) if len(table) else 0
        now = int(time.time() * 1000)
        for trial_id, rank in zip(table["trial_id"], table["pareto_rank"]) if len(table) else ():
            run = self._children.get(trial_id)
            if run is not None and run.rank != rank:
                flag = "true" if rank == 0 else "false"
                self._client.log_batch(run.run_id, metrics=[Metric("pareto_rank", float(rank), now, finished)],
                                       tags=[RunTag("pareto", flag)])
                run.rank, run.tags["pareto"] = float(rank), flag
        if self._hv_steps is None:
            self._hv_steps = {int(m.step) for m in self._client.get_metric_history(self._parent.run_id, "hypervolume")}
        finished_at = {r.trial_id: max(map(_received_at, r.history)) for r in self._records.values() if r.history}
        curve = [Metric("hypervolume", value, int(stamp * 1000), k)
                 for k, value, stamp in hypervolume_curve(table, finished_at, self.sweep.objectives)
                 if k not in self._hv_steps]
        if curve:
            self._client.log_batch(self._parent.run_id, metrics=curve)
            self._hv_steps.update(m.step for m in curve)
        self._ranked = ranked

    def _log_front(self) -> None:
        """The parent run's front table (CSV, Parquet), pairwise scatter plots (PNG) and 3-D plot (HTML)."""
        from latune.tracking.front import write_front

        table = self.table()
        with tempfile.TemporaryDirectory(prefix="latune-front-") as folder:
            if write_front(table, self.sweep.objectives, self.sweep.searched, Path(folder)):
                self._client.log_artifacts(self._parent.run_id, folder)
        self._front_drawn = (int((table["status"] == "TERMINATED").sum()) if len(table) else 0, time.monotonic())


def _received_at(result: Mapping[str, Any]) -> float:
    """When Tune received a result, seconds since the epoch (now if it does not say)."""
    stamp = result.get("timestamp")
    return float(stamp) if isinstance(stamp, (int, float)) else time.time()


def _start_ms(first_results: list[float]) -> int | None:
    """A run's start time: just before its first result when there is one already (a backfill), else now."""
    return int((min(first_results) - 1) * 1000) if first_results else None


def _param(value: Any) -> str:
    return str(value)[:6000]  # MLflow's limit on a param value
