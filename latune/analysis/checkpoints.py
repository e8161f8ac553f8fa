"""The models a run or a sweep left behind, found and rebuilt for the audit (``python -m latune.audit``).

A target is a model.pt (``python -m latune.train``, latune.core.models.save_checkpoint), a Tune trial's
state.pt (latune.sweep.trainable), or a sweep's experiment folder, whose Pareto-front trials (pareto_rank 0 in
results.parquet) are audited at their latest checkpoints. Finding targets reads only the file system (and
results.parquet, with pandas); loading one rebuilds the run's model and data split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latune.analysis.results import trial_folders
from latune.core.train import STATE_FILE
from latune.errors import UserError

__all__ = ["Target", "find_targets", "load_target"]


@dataclass(frozen=True)
class Target:
    """One model to audit: a checkpoint file, and the sweep trial it belongs to (sweep mode)."""

    path: Path | None  # model.pt (latune.core.models.save_checkpoint) or a Tune trial's state.pt; None: not found
    trial_id: str | None = None
    note: str | None = None  # why a front trial has no checkpoint


def find_targets(location: str | os.PathLike) -> tuple[list[Target], Path | None]:
    """(models to audit, the sweep's experiment folder or None) for a checkpoint file, a training output
    folder (model.pt), a Tune checkpoint or trial folder, or a sweep's experiment folder (its trials with
    pareto_rank 0 in results.parquet, each at its latest checkpoint). Raises UserError."""
    path = Path(location)
    if path.is_file():
        return [Target(path)], None
    if not path.is_dir():
        raise UserError(f"TARGET: {path} does not exist")
    for name in (STATE_FILE, "model.pt"):
        if (path / name).is_file():
            return [Target(path / name)], None
    if (path / "results.parquet").is_file():
        import pandas as pd

        table = pd.read_parquet(path / "results.parquet", columns=["trial_id", "pareto_rank"])
        front = [str(t) for t in table.loc[table["pareto_rank"] == 0, "trial_id"]]
        return [_trial_target(path, trial_id) for trial_id in front], path
    if _latest_checkpoint(path) is not None:  # a trial folder
        return [Target(_latest_checkpoint(path) / STATE_FILE)], None
    if any(path.glob("experiment_state-*.json")) or (path / "latune_sweep.json").is_file():
        raise UserError(f"TARGET: {path} is a sweep folder without results.parquet (the sweep did not finish; "
                        "python -m latune.sweep NAME --resume --name FOLDER finishes it)")
    raise UserError(f"TARGET: {path} holds no model.pt, state.pt, checkpoint_* or results.parquet")


def _latest_checkpoint(trial: Path) -> Path | None:
    """Tune's checkpoint_NNNNNN folder with the highest number that holds a state.pt."""
    found = [p for p in trial.glob("checkpoint_*") if (p / STATE_FILE).is_file() and p.name[11:].isdigit()]
    return max(found, key=lambda p: int(p.name[11:]), default=None)


def _trial_target(experiment: Path, trial_id: str) -> Target:
    folders = [Path(p) for p in trial_folders(experiment, trial_id)]
    checkpoints = [c for c in map(_latest_checkpoint, folders) if c is not None]
    if not checkpoints:
        return Target(None, trial_id, f"trial {trial_id}: no checkpoint_*/{STATE_FILE} under {experiment}; "
                                      "not audited")
    return Target(max(checkpoints, key=lambda p: (int(p.name[11:]), p.stat().st_mtime)) / STATE_FILE, trial_id)


def load_target(path: Path, overrides: dict[str, Any], data_cache: dict[tuple, Any]) -> tuple[Any, Any, Any]:
    """(model in eval mode on the run's device, resolved Config, DataBundle) for a checkpoint file, with the
    run's recorded config under ``overrides`` (flat keys; data.name may only repeat the run's). The data set is
    loaded once per split and device across calls sharing ``data_cache``. Raises UserError."""
    from latune.config import from_flat, resolve
    from latune.core.data import load_data
    from latune.core.train import pick_device, setup

    model, state, flat = _read_checkpoint(path)
    if "data.name" in overrides and flat.get("data.name", overrides["data.name"]) != overrides["data.name"]:
        raise UserError(f"--data: {path} was trained on {flat['data.name']}, not {overrides['data.name']}")
    if "data.name" not in flat and "data.name" not in overrides:
        raise UserError(f"--data: {path} records no data set; name it (e.g. --data digits)")
    config = resolve(from_flat({**flat, **overrides}))
    device = pick_device(config.device)  # ConfigError naming `device` when CUDA is missing
    d = config.data
    key = (d.name, d.image_size, d.data_dir, d.val_fraction, d.test_fraction, config.seed, d.limit_train, str(device))
    if key not in data_cache:
        data_cache[key] = load_data(d.name, image_size=d.image_size, data_dir=d.data_dir, val_fraction=d.val_fraction,
                                    test_fraction=d.test_fraction, seed=config.seed, device=device,
                                    limit_train=d.limit_train)
    data = data_cache[key]
    if state is not None:
        model = setup(config, data=data).model
        model.load_state_dict(state["model"])
    return model.to(device).eval(), config, data


def _read_checkpoint(path: Path) -> tuple[Any, dict[str, Any] | None, dict[str, Any]]:
    """(model or None, Tune state or None, the run's flat config) of a model.pt or a Tune state.pt."""
    from latune.core.models import load_checkpoint

    state = _tune_state(path) if path.name == STATE_FILE else None
    if state is not None:
        return None, state, dict(state["config"])
    try:
        model = load_checkpoint(path)
    except ValueError as err:  # not a latune checkpoint; perhaps a Tune state under another name
        state = _tune_state(path)
        if state is None:
            raise UserError(f"TARGET: {err}") from None
        return None, state, dict(state["config"])
    flat = dict(model.latune_config)
    flat.setdefault("data.image_size", model.latune_spec["image_size"])
    return model, None, flat


def _tune_state(path: Path) -> dict[str, Any] | None:
    """latune.core.train's Epoch.state_dict() as the trainable saves it, or None for another kind of file."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception:  # torch.load fails in many ways on other files; the caller says what was expected
        return None
    return state if isinstance(state, dict) and {"model", "config"} <= state.keys() else None
