"""A sweep's trials as latune records them for MLflow, whoever reads them: the Tune callback (live) or
latune.sync (from Tune's files). Plain data and pure helpers; no MLflow calls, no Ray.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from latune.analysis.results import RAY_KEYS
from latune.storage import filesystem

__all__ = ["SweepInfo", "TrialRecord", "TrialStatus", "SWEEP_INFO_FILE", "resolve_tracking_uri", "by_epoch",
           "epoch_metrics", "error_summary", "strip_ansi", "resolved_config", "reported_every_epoch", "was_pruned",
           "outcome_tags", "unmeasured_at_end"]

TrialStatus = Literal["RUNNING", "FINISHED", "FAILED", "KILLED"]  # the MLflow statuses a trial's run can have
SWEEP_INFO_FILE = "latune_sweep.json"  # in Tune's experiment folder: what latune.sync needs to backfill
_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")  # colour codes Ray puts in error texts


def resolve_tracking_uri(uri: str | None = None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else MLflow's default store (``sqlite:///mlflow.db``), with a
    local path made absolute against the current directory, so the store does not move later."""
    import mlflow

    uri = uri or mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        path, sep, query = uri[len("sqlite:///"):].partition("?")
        if path and not path.startswith("/") and path != ":memory:":
            return f"sqlite:///{os.path.abspath(path)}{sep}{query}"
        return uri
    if uri.startswith("file:"):
        return Path(os.path.abspath(uri[len("file://"):] if uri.startswith("file://") else uri[5:])).as_uri()
    if "://" not in uri and not uri.startswith("databricks"):
        return Path(os.path.abspath(uri)).as_uri()
    return uri


@dataclass(frozen=True)
class SweepInfo:
    """What identifies a sweep in MLflow; saved as ``SWEEP_INFO_FILE`` in Tune's experiment folder."""

    name: str  # sweep name (the file's stem by default)
    experiment_path: str  # Tune's experiment folder (absolute path or URI): identity of the parent run
    objectives: dict[str, str]  # metric -> "max" | "min", in priority order
    data: str  # data set name
    searched: tuple[str, ...] = ()  # searched config keys
    base: dict[str, Any] = field(default_factory=dict)  # config keys fixed for every trial
    search: dict[str, Any] = field(default_factory=dict)  # algorithm, sampler, seed, num_samples
    trials: int | None = None  # how many trials the sweep runs in all (None: unknown)
    sweep_file: str | None = None  # the sweep YAML's path
    sweep_text: str | None = None  # its contents (logged on the parent run)
    tracking_uri: str | None = None  # where the sweep logs to
    mlflow_experiment: str | None = None  # MLflow experiment name; None = the sweep's name
    constraints: dict[str, dict[str, float]] = field(default_factory=dict)  # sweep file's constraints (feasibility)
    # the code each start and resume of the sweep ran (latune.provenance and the time), oldest first
    provenance: list[dict[str, Any]] = field(default_factory=list)

    def save(self) -> None:
        """Write ``experiment_path/SWEEP_INFO_FILE`` (local folder or pyarrow filesystem URI)."""
        fs, root = filesystem(self.experiment_path)
        fs.create_dir(root, recursive=True)
        with fs.open_output_stream(f"{root}/{SWEEP_INFO_FILE}") as out:
            out.write(json.dumps(asdict(self), indent=1, default=str).encode())

    @classmethod
    def load(cls, experiment_path: str) -> SweepInfo | None:
        """The saved info of the sweep in that folder, or None when it has none."""
        fs, root = filesystem(experiment_path)
        try:
            with fs.open_input_stream(f"{root}/{SWEEP_INFO_FILE}") as handle:
                raw = json.loads(handle.read().decode())
        except (FileNotFoundError, OSError):
            return None
        raw["searched"] = tuple(raw.get("searched") or ())
        return cls(**{k: v for k, v in raw.items() if k in cls.__dataclass_fields__})


@dataclass
class TrialRecord:
    """One trial as far as the driver (or Tune's files) knows it."""

    trial_id: str  # Tune's trial id, e.g. "26556_00001"
    config: dict[str, Any]  # the trial's flat config as Tune passed it (dotted keys)
    history: list[dict[str, Any]] = field(default_factory=list)  # Tune's results, one per epoch, in order
    status: TrialStatus = "RUNNING"
    error: str | None = None  # the error's text when FAILED
    checkpoint: tuple[Any, str] | None = None  # (pyarrow FileSystem, folder) of the final checkpoint
    pruned: bool = False  # stopped at a rung by the early-stopping scheduler (its run ends KILLED)


def by_epoch(history: Iterable[Mapping[str, Any]]) -> dict[int, Mapping[str, Any]]:
    """Results keyed by epoch, in epoch order; an epoch reported twice (a retry from an older checkpoint)
    keeps its latest report, the one the trial's final state descends from."""
    epochs: dict[int, Mapping[str, Any]] = {}
    for result in history:
        epoch = result.get("epoch", result.get("training_iteration"))
        if isinstance(epoch, (int, float)) and not isinstance(epoch, bool):
            epochs[int(epoch)] = result
    return dict(sorted(epochs.items()))


def reported_every_epoch(record: TrialRecord) -> bool:
    """Whether the trial reported its last epoch (optim.epochs of its resolved config): what FINISHED
    means, here as in results.parquet. Tune also "completes" trials it stops when a sweep is interrupted."""
    epochs = int(resolved_config(record.config).get("optim.epochs") or 0)
    return epochs > 0 and max(by_epoch(record.history), default=0) >= epochs


def was_pruned(record: TrialRecord) -> bool:
    """Whether the early-stopping scheduler stopped the trial before its last epoch (latune.analysis.outcome)."""
    from latune.analysis.outcome import stopped_early

    return stopped_early(record.history, int(resolved_config(record.config).get("optim.epochs") or 0))


def unmeasured_at_end(record: TrialRecord, objectives: Iterable[str]) -> str | None:
    """The error of a trial that reported its last epoch without every objective (latune.analysis.outcome)."""
    from latune.analysis.outcome import unmeasured_error

    epochs = list(by_epoch(record.history).values())
    return unmeasured_error(epochs[-1], objectives) if epochs else None


def outcome_tags(record: TrialRecord, constraints: Mapping[str, Mapping[str, float]]) -> dict[str, str]:
    """Tags of a trial's run besides its status: ``latune.status`` (running, finished, pruned, failed or
    killed = interrupted) and, with constraints, ``feasible`` (true/false, from its latest epoch)."""
    tags = {"latune.status": "pruned" if record.pruned else record.status.lower()}
    epochs = list(by_epoch(record.history).values())
    if constraints and epochs:  # a trial that has started but reported no epoch yet has no feasibility
        from latune.analysis.constraints import from_mapping, is_feasible

        tags["feasible"] = "true" if is_feasible(epochs[-1], from_mapping(constraints)) else "false"
    return tags


def epoch_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """The scalar metrics of one Tune result: the numbers the trainable reported, none of Ray's
    bookkeeping. Vectors (per-class errors) go to the class_errors artifact instead. NaN is left out: it
    marks a metric not measured yet (corruption figures before their first evaluation)."""
    return {key: float(value) for key, value in result.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
            and key not in RAY_KEYS and not key.startswith("config/")}


def error_summary(text: str) -> str:
    """One line from a trial's error text (Ray's traceback, ANSI colours and all): the last
    ``Name: message`` line with the exception's module dropped (``DataError: mnist not found ...``)."""
    text = strip_ansi(text)
    found = re.findall(r"^(?:[A-Za-z_]\w*\.)*([A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit)\b.*)$", text, re.M)
    if found:
        return found[-1].strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "error"


def strip_ansi(text: str) -> str:
    """``text`` without ANSI colour codes (Ray colours the process titles in its error texts)."""
    return _ANSI_ESCAPE.sub("", text)


def resolved_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's config with presets filled (what it actually trained with), as flat dotted keys."""
    return dict(_resolved(tuple(sorted((k, json.dumps(v)) for k, v in config.items()))))


@functools.lru_cache(maxsize=1024)
def _resolved(items: tuple[tuple[str, str], ...]) -> tuple[tuple[str, Any], ...]:
    """resolved_config, cached: every update of a trial needs it, and validation is not free."""
    from latune.config import ConfigError, from_flat, resolve, to_flat

    config = {key: json.loads(value) for key, value in items}
    try:
        return tuple(to_flat(resolve(from_flat(config))).items())
    except ConfigError:  # a config this latune cannot read (another version): log it as Tune had it
        return tuple(config.items())
