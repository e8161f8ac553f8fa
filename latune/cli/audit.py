"""The audit CLI, ``latune audit TARGET [--attack pgd40,apgd-ce,autoattack]``: finds what to audit
(a model.pt, a Tune trial checkpoint, or a sweep's Pareto-front trials; latune.analysis.checkpoints), rebuilds
the models with their runs' data split, runs latune.core.audit on them, prints a table and the warnings, and
logs the figures to the sweep's MLflow runs (latune.tracking.audit_log).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from latune.cli.common import add_config_arguments, config_overrides, examples, guarded, write_json_atomic
from latune.config import parse_number
from latune.registry import AUDIT_ATTACKS as ATTACKS
from latune.registry import DEFAULT_AUDIT_ATTACKS as DEFAULT_ATTACKS
from latune.registry import MASKING_GAP
from latune.errors import UserError

if TYPE_CHECKING:
    from latune.analysis.checkpoints import Target

__all__ = ["main", "EXIT_WARNINGS"]

EXIT_WARNINGS = 3  # CLI exit status when any check fired


_EPILOG = f"""exit status: 0 = audited, no check fired; {EXIT_WARNINGS} = audited, some check fired (the
warnings are printed and in the JSON); 2 = bad command line, missing target or data.

checks: possible gradient masking (apgd-ce/autoattack more than --masking-gap below pgd40), zero input
gradients, accuracy on attacked images above clean accuracy, probability outputs, attack outside the
eps-ball. pgd40 steps by eps/4 (latune's eval.alpha default); --steps overrides every attack's iterations.

""" + examples(
    "latune audit runs/one/model.pt                      # a latune train model: pgd40, apgd-ce",
    "latune audit runs/pareto-cifar10-20260101-120000 --attack autoattack --out audit.json   # the front",
    "latune audit runs/one/model.pt --attack pgd40 --steps 5 --max-images 100   # a smoke test")
_INSTALL = "pip install 'latune[test]' (or pip install torchattacks)"


def _number(flag: str, raw: str | None, low: float, high: float) -> float | None:
    if raw is None:
        return None
    try:
        value = parse_number(raw)
    except ValueError:
        value = math.nan
    if not low <= value <= high:
        raise UserError(f"{flag}: expected a number in [{low:g}, {high:g}] (e.g. 0.1 or 8/255), got {raw!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="latune audit", epilog=_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     description="Audit models with stronger attacks (torchattacks) and check "
                                                 "for gradient masking.")
    parser.add_argument("target", metavar="TARGET", help="model.pt (latune train), a Tune checkpoint "
                        "or trial folder (state.pt), or a sweep folder (audits its Pareto front)")
    parser.add_argument("--attack", action="append", default=[], metavar="NAME[,NAME]",
                        help=f"{', '.join(ATTACKS)}; repeatable (default {','.join(DEFAULT_ATTACKS)})")
    parser.add_argument("--eps", help="l_inf radius in [0,1] pixel units, e.g. 8/255 (default: the run's eval.eps, "
                                      "else attack.eps)")
    parser.add_argument("--steps", type=int, help="iterations of every attack (default pgd40 40, apgd-ce and "
                                                  "autoattack 100); small values only for smoke tests")
    add_config_arguments(parser, only=("data", "data_dir"), data="data set, when the checkpoint records none",
                         data_dir="root of downloaded data sets (default $LATUNE_DATA, else the run's)")
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
    return parser


@dataclass(frozen=True)
class _Plan:
    """The checked command line: what every target is audited with."""

    attacks: list[str]  # names from ATTACKS, in the order given
    eps: float | None  # --eps; None: each run's eval.eps, else attack.eps
    masking_gap: float
    overrides: dict[str, Any]  # flat config keys over each run's recorded config


def _plan(args: argparse.Namespace) -> _Plan:
    """Check the command line before any model is loaded; raises UserError."""
    import importlib.util

    if importlib.util.find_spec("torchattacks") is None:  # the attacks' implementation, an optional dependency
        raise UserError(f"the audit's attacks need torchattacks, which is not installed: {_INSTALL}")
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
    overrides = config_overrides(args)
    if args.device:
        overrides["device"] = args.device
    return _Plan(names, _number("--eps", args.eps, 0, 1), _number("--masking-gap", args.masking_gap, 0, 1), overrides)


def _audit_target(target: Target, args: argparse.Namespace, plan: _Plan, cache: dict[tuple, Any]) -> dict[str, Any]:
    """The report of one target: latune.core.audit.audit's results, or only the note why it was not audited."""
    report: dict[str, Any] = {"target": str(target.path) if target.path else None, "trial_id": target.trial_id}
    if target.path is None:
        return {**report, "warnings": [target.note]}
    from latune.analysis.checkpoints import load_target
    from latune.core.audit import AuditWarning, audit  # torch: only once there is something to audit

    model, config, data = load_target(target.path, plan.overrides, cache)
    if "autoattack" in plan.attacks and data.num_classes < 3:
        raise UserError(f"--attack: autoattack needs at least 3 classes, {config.data.name} has {data.num_classes}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AuditWarning)  # printed by the caller, once, with the table
        report.update(audit(model, getattr(data, args.split), num_classes=data.num_classes,
                            eps=plan.eps if plan.eps is not None else config.eval.eps, attack_names=plan.attacks,
                            steps=args.steps, max_images=args.max_images,
                            batch_size=args.batch_size or config.eval.batch_size, seed=args.seed,
                            masking_gap=plan.masking_gap))
    return {**report, "split": args.split}


def main(argv: Sequence[str] | None = None) -> int:
    """``latune audit TARGET [flags]``: audit and print the table; exit status 0, 3 (a check fired) or 2 (bad
    input, torchattacks missing)."""
    args = _parser().parse_args(argv)

    def run() -> int:
        from latune.analysis.checkpoints import find_targets  # the model side (torch) only once --help is past

        plan = _plan(args)
        targets, experiment = find_targets(args.target)
        if experiment is not None and not targets:
            raise UserError(f"TARGET: {experiment}/results.parquet has no trial on the Pareto front (pareto_rank 0)")
        reports, cache = [], {}
        for target in targets:
            reports.append(_audit_target(target, args, plan, cache))
            print(_row(reports[-1]), flush=True)
        uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
        if experiment is not None and uri:
            from latune.tracking.audit_log import log_to_mlflow

            for note in log_to_mlflow(experiment, reports, uri):
                print(note, file=sys.stderr)
        if args.out:
            write_json_atomic(args.out, {"attacks": plan.attacks, "steps": args.steps, "reports": reports})
        fired = sum(len(r["warnings"]) for r in reports)
        print(json.dumps({"targets": [_brief(r) for r in reports], "warnings": fired}))
        return EXIT_WARNINGS if fired else 0

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
