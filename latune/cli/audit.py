"""The audit CLI, ``python -m latune.audit TARGET [--attack pgd40,apgd-ce,autoattack]``: finds what to audit
(a model.pt, a Tune trial checkpoint, or a sweep's Pareto-front trials), rebuilds the models with their runs'
data split, runs latune.audit on them, prints a table and the warnings, and logs the figures to the sweep's
MLflow runs. The attacks and checks themselves are in latune.audit.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from latune.core.audit import ATTACKS, DEFAULT_ATTACKS, MASKING_GAP, AuditWarning, audit

__all__ = ["Target", "find_targets", "log_to_mlflow", "main", "EXIT_WARNINGS"]

EXIT_WARNINGS = 3  # CLI exit status when any check fired
_STATE_FILE = "state.pt"  # latune.trainable.STATE_FILE (not imported: that imports Ray)

@dataclass(frozen=True)
class Target:
    """One model to audit: a checkpoint file, and the sweep trial it belongs to (sweep mode)."""

    path: Path | None  # model.pt (latune.models.save_checkpoint) or a Tune trial's state.pt; None: not found
    trial_id: str | None = None
    note: str | None = None  # why a front trial has no checkpoint


def find_targets(location: str | os.PathLike) -> tuple[list[Target], Path | None]:
    """(models to audit, the sweep's experiment folder or None) for a checkpoint file, a training output
    folder (model.pt), a Tune checkpoint or trial folder, or a sweep's experiment folder (its trials with
    pareto_rank 0 in results.parquet, each at its latest checkpoint). Raises UserError."""
    from latune.errors import UserError

    path = Path(location)
    if path.is_file():
        return [Target(path)], None
    if not path.is_dir():
        raise UserError(f"TARGET: {path} does not exist")
    for name in (_STATE_FILE, "model.pt"):
        if (path / name).is_file():
            return [Target(path / name)], None
    if (path / "results.parquet").is_file():
        import pandas as pd

        table = pd.read_parquet(path / "results.parquet", columns=["trial_id", "pareto_rank"])
        front = [str(t) for t in table.loc[table["pareto_rank"] == 0, "trial_id"]]
        return [_trial_target(path, trial_id) for trial_id in front], path
    if _latest_checkpoint(path) is not None:  # a trial folder
        return [Target(_latest_checkpoint(path) / _STATE_FILE)], None
    if any(path.glob("experiment_state-*.json")) or (path / "latune_sweep.json").is_file():
        raise UserError(f"TARGET: {path} is a sweep folder without results.parquet (the sweep did not finish; "
                        "python -m latune.sweep NAME --resume --name FOLDER finishes it)")
    raise UserError(f"TARGET: {path} holds no model.pt, state.pt, checkpoint_* or results.parquet")


def _latest_checkpoint(trial: Path) -> Path | None:
    """Tune's checkpoint_NNNNNN folder with the highest number that holds a state.pt."""
    found = [p for p in trial.glob("checkpoint_*") if (p / _STATE_FILE).is_file() and p.name[11:].isdigit()]
    return max(found, key=lambda p: int(p.name[11:]), default=None)


def _trial_target(experiment: Path, trial_id: str) -> Target:
    # Tune names trial folders {trainable}_{trial_id}_{index}_{tag}_{date}: the trial id is a whole token
    folders = [p for p in experiment.iterdir() if p.is_dir() and f"_{trial_id}_" in f"{p.name}_"]
    checkpoints = [c for c in map(_latest_checkpoint, folders) if c is not None]
    if not checkpoints:
        return Target(None, trial_id, f"trial {trial_id}: no checkpoint_*/{_STATE_FILE} under {experiment}; "
                                      "not audited")
    return Target(max(checkpoints, key=lambda p: (int(p.name[11:]), p.stat().st_mtime)) / _STATE_FILE, trial_id)


def _load(path: Path, overrides: dict[str, Any], data_cache: dict[tuple, Any]) -> tuple[nn.Module, Any, Any]:
    """(model in eval mode on the run's device, resolved Config, DataBundle) for a checkpoint file."""
    from latune.errors import UserError
    from latune.config import from_flat, resolve
    from latune.core.data import load_data
    from latune.core.models import load_checkpoint
    from latune.core.train import pick_device, setup

    state = _tune_state(path) if path.name == _STATE_FILE else None
    if state is None:
        try:
            model = load_checkpoint(path)
        except ValueError as err:  # not a latune checkpoint; perhaps a Tune state under another name
            state = _tune_state(path)
            if state is None:
                raise UserError(f"TARGET: {err}") from None
        else:
            flat = dict(model.latune_config)
            flat.setdefault("data.image_size", model.latune_spec["image_size"])
    if state is not None:
        flat = dict(state["config"])
    if "data.name" in overrides and flat.get("data.name", overrides["data.name"]) != overrides["data.name"]:
        raise UserError(f"--data: {path} was trained on {flat['data.name']}, not {overrides['data.name']}")
    if "data.name" not in flat and "data.name" not in overrides:
        raise UserError(f"--data: {path} records no data set; name it (e.g. --data digits)")
    config = resolve(from_flat({**flat, **overrides}))
    try:
        device = pick_device(config.device)
    except RuntimeError as err:
        raise UserError(f"--device: {err}") from None
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


def _tune_state(path: Path) -> dict[str, Any] | None:
    """latune.train's Epoch.state_dict() as the trainable saves it, or None for another kind of file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except Exception:  # torch.load fails in many ways on other files; the caller says what was expected
        return None
    return state if isinstance(state, dict) and {"model", "config"} <= state.keys() else None


# ----------------------------------------------------------------------------- MLflow
def log_to_mlflow(experiment: Path, reports: Sequence[dict[str, Any]], tracking_uri: str) -> list[str]:
    """Log each audited trial's figures (``audit_clean_acc``, ``audit_robust_acc``,
    ``audit_<attack>_robust_acc`` with '-' as '_', tag ``latune.audit_warnings``) to its child run, found
    by the tags latune.tracking writes; returns notes for what could not be logged."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    from latune.tracking.records import SweepInfo, resolve_tracking_uri

    info = SweepInfo.load(str(experiment))
    client = MlflowClient(resolve_tracking_uri(tracking_uri))
    found = client.get_experiment_by_name(info.mlflow_experiment or info.name) if info else None
    if found is None:
        return [f"MLflow: no experiment of this sweep at {tracking_uri}; audit not logged"]
    notes, now = [], int(time.time() * 1000)
    for report in reports:
        if report.get("trial_id") is None or "attacks" not in report:
            continue
        runs = client.search_runs([found.experiment_id], max_results=1, filter_string=(
            f"tags.`latune.trial_id` = '{report['trial_id']}' "
            f"and tags.`latune.experiment_path` = '{info.experiment_path}'"))
        if not runs:
            notes.append(f"MLflow: no run of trial {report['trial_id']}; audit not logged")
            continue
        values = {"audit_clean_acc": report["clean_acc"], "audit_robust_acc": report["robust_acc"]}
        values.update({f"audit_{name.replace('-', '_')}_robust_acc": run["robust_acc"]
                       for name, run in report["attacks"].items()})
        client.log_batch(runs[0].info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()],
                         tags=[RunTag("latune.audit_warnings", " | ".join(report["warnings"])[:5000] or "none")])
    return notes


# ----------------------------------------------------------------------------- CLI
_EPILOG = f"""exit status: 0 = audited, no check fired; {EXIT_WARNINGS} = audited, some check fired (the
warnings are printed and in the JSON); 2 = bad command line, missing target or data.

checks: possible gradient masking (apgd-ce/autoattack more than --masking-gap below pgd40), zero input
gradients, accuracy on attacked images above clean accuracy, probability outputs, attack outside the
eps-ball. pgd40 steps by eps/4 (latune's eval.alpha default); --steps overrides every attack's iterations."""


def _number(flag: str, raw: str | None, low: float, high: float) -> float | None:
    from latune.errors import UserError

    if raw is None:
        return None
    try:
        num, _, den = raw.partition("/")
        value = float(num) / float(den) if den else float(num)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        raise UserError(f"{flag}: expected a number in [{low:g}, {high:g}] (e.g. 0.1 or 8/255), got {raw!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m latune.audit", epilog=_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Audit models with stronger attacks (torchattacks) and check "
                                                 "for gradient masking.")
    parser.add_argument("target", metavar="TARGET", help="model.pt (python -m latune.train), a Tune checkpoint "
                        "or trial folder (state.pt), or a sweep folder (audits its Pareto front)")
    parser.add_argument("--attack", action="append", default=[], metavar="NAME[,NAME]",
                        help=f"{', '.join(ATTACKS)}; repeatable (default {','.join(DEFAULT_ATTACKS)})")
    parser.add_argument("--eps", help="l_inf radius in [0,1] pixel units, e.g. 8/255 (default: the run's eval.eps, "
                                      "else attack.eps)")
    parser.add_argument("--steps", type=int, help="iterations of every attack (default pgd40 40, apgd-ce and "
                                                  "autoattack 100); small values only for smoke tests")
    parser.add_argument("--data", help="data set, when the checkpoint records none")
    parser.add_argument("--data-dir", help="root of downloaded data sets (default $LATUNE_DATA, else the run's)")
    parser.add_argument("--split", default="test", help="val or test (default test), split as in training")
    parser.add_argument("--max-images", type=int, default=1000, help="first N images of the split; 0 = all "
                                                                      "(default 1000)")
    parser.add_argument("--batch-size", type=int, help="images per attack batch (default: the run's eval.batch_size)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the attacks' random starts (default 0)")
    parser.add_argument("--masking-gap", default=str(MASKING_GAP), help=f"robust-accuracy gap below pgd40 that "
                        f"warns of gradient masking, absolute (default {MASKING_GAP})")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: the run's)")
    parser.add_argument("--out", help="write the full results to this JSON file")
    parser.add_argument("--tracking-uri", help="sweeps: log the audit to the trials' MLflow runs at this URI "
                                               "(default $MLFLOW_TRACKING_URI; neither: no logging)")
    args = parser.parse_args(argv)

    def run() -> int:
        from latune.cli.common import write_json_atomic
        from latune.errors import UserError

        names = list(dict.fromkeys(n.strip() for raw in args.attack or [",".join(DEFAULT_ATTACKS)]
                                   for n in raw.split(",") if n.strip()))
        unknown = [n for n in names if n not in ATTACKS] or ([] if names else [""])
        if unknown:
            raise UserError(f"--attack: unknown attack {unknown[0]!r}; allowed: {', '.join(ATTACKS)}")
        if args.split not in ("val", "test"):
            raise UserError(f"--split: unknown split {args.split!r}; allowed: val, test")
        for flag, value, low in (("--steps", args.steps, 1), ("--max-images", args.max_images, 0),
                                 ("--batch-size", args.batch_size, 1)):
            if value is not None and value < low:
                raise UserError(f"{flag}: must be >= {low}, got {value}")
        eps, gap = _number("--eps", args.eps, 0, 1), _number("--masking-gap", args.masking_gap, 0, 1)
        overrides: dict[str, Any] = {k: v for k, v in (("data.name", args.data), ("device", args.device)) if v}
        if args.data_dir or os.environ.get("LATUNE_DATA"):
            overrides["data.data_dir"] = os.path.abspath(args.data_dir or os.environ["LATUNE_DATA"])
        targets, experiment = find_targets(args.target)
        if experiment is not None and not targets:
            raise UserError(f"TARGET: {experiment}/results.parquet has no trial on the Pareto front (pareto_rank 0)")

        reports, cache = [], {}
        for target in targets:
            report: dict[str, Any] = {"target": str(target.path) if target.path else None, "trial_id": target.trial_id}
            if target.path is None:
                report["warnings"] = [target.note]
            else:
                model, config, data = _load(target.path, overrides, cache)
                if "autoattack" in names and data.num_classes < 3:
                    raise UserError(f"--attack: autoattack needs at least 3 classes, {config.data.name} has "
                                    f"{data.num_classes}")
                saved = config.eval.eps if config.eval.eps is not None else config.attack.eps
                radius = eps if eps is not None else saved
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", AuditWarning)  # printed below, once, with the table
                    report.update(audit(model, getattr(data, args.split), num_classes=data.num_classes, eps=radius,
                                        attack_names=names, steps=args.steps, max_images=args.max_images,
                                        batch_size=args.batch_size or config.eval.batch_size, seed=args.seed,
                                        masking_gap=gap))
                report["split"] = args.split
            reports.append(report)
            print(_row(report), flush=True)
        uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if experiment is not None and uri:
            for note in log_to_mlflow(experiment, reports, uri):
                print(note, file=sys.stderr)
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(Path(args.out), {"attacks": names, "steps": args.steps, "reports": reports})
        fired = sum(len(r["warnings"]) for r in reports)
        print(json.dumps({"targets": [_brief(r) for r in reports], "warnings": fired}))
        return EXIT_WARNINGS if fired else 0

    from latune.cli.common import guarded

    return guarded(run)


def _row(report: dict[str, Any]) -> str:
    name = report["trial_id"] or report["target"]
    if "attacks" not in report:
        return f"{name}: not audited\n  warning: " + "\n  warning: ".join(report["warnings"])
    parts = [f"{name} ({report['split']}, {report['images']} images, eps={report['eps']:.4g}):",
             f"clean {report['clean_acc']:.4f}"]
    parts += [f"{n} {r['robust_acc']:.4f} (class-error sd {r['robust_class_error_sd']:.4f})"
              for n, r in report["attacks"].items()]
    return "  ".join(parts) + "".join(f"\n  warning: {w}" for w in report["warnings"])


def _brief(report: dict[str, Any]) -> dict[str, Any]:
    out = {k: report.get(k) for k in ("target", "trial_id", "eps", "clean_acc", "robust_acc")}
    out.update({f"{n}_robust_acc": r["robust_acc"] for n, r in report.get("attacks", {}).items()})
    return {**out, "warnings": report["warnings"]}
