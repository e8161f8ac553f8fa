"""``latune sweep``'s early-stopping flags and the lines it prints about rungs and constraints.

``--early-stopping`` turns the scheduler on with the sweep file's settings, or without them the defaults
(``grace_epochs: auto`` = a tenth of the budget, ``reduction_factor: 3``; latune.sweep.rungs); with a value
``GRACE[,ETA]`` (``2,3``, ``auto,2``) it sets both. ``--no-early-stopping`` turns it off.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import Any

from latune.analysis.constraints import describe
from latune.errors import UserError
from latune.sweep.rungs import parse_early_stopping
from latune.sweep.spec import SweepSpec, check_measured_at_rungs, trial_budget

__all__ = ["add_early_stopping_flags", "with_early_stopping_flags", "early_stopping_lines", "feasibility_note"]


def add_early_stopping_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--early-stopping", nargs="?", const="", metavar="GRACE[,ETA]",
                       help="stop trials early at rungs GRACE*ETA^k epochs by their Pareto rank (default: the sweep "
                            "file's settings, else grace auto = a tenth of the budget, ETA 3)")
    group.add_argument("--no-early-stopping", action="store_true", help="train every trial its whole budget")


def _flag_value(text: str) -> dict[str, Any]:
    """``GRACE[,ETA]`` -> the sweep file's mapping (validated by parse_early_stopping)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 2 or not all(parts):
        raise UserError(f"--early-stopping: expected GRACE or GRACE,ETA (e.g. 2,3 or auto,3), got {text!r}")
    try:
        raw: dict[str, Any] = {"grace_epochs": parts[0] if parts[0] == "auto" else int(parts[0])}
        if len(parts) == 2:
            raw["reduction_factor"] = int(parts[1])
    except ValueError:
        raise UserError(f"--early-stopping: expected integers (or auto for GRACE), got {text!r}") from None
    return raw


def with_early_stopping_flags(spec: SweepSpec, args: argparse.Namespace) -> SweepSpec:
    """The spec with the flags applied (validated like the sweep file: one-line ConfigError)."""
    if args.no_early_stopping:
        return replace(spec, early_stopping=None)
    if args.early_stopping is None or (args.early_stopping == "" and spec.early_stopping is not None):
        return spec
    raw = _flag_value(args.early_stopping) if args.early_stopping else {}
    settings = parse_early_stopping(raw, budget=trial_budget(spec), searched=[d.key for d in spec.space],
                                    where="--early-stopping")
    spec = replace(spec, early_stopping=settings)
    check_measured_at_rungs(spec, "--early-stopping")
    return spec


def early_stopping_lines(spec: SweepSpec) -> list[str]:
    """--dry-run's lines on early stopping and constraints."""
    lines = [f"early stopping: {spec.early_stopping.describe() if spec.early_stopping else 'off'}"]
    if spec.constraints:
        lines.append(f"constraints: {describe(spec.constraints)} (infeasible trials are never on the front)")
    return lines


def feasibility_note(spec: SweepSpec, table: Any) -> str:
    """``; 2 of 5 finished infeasible (robust_acc >= 0.2)`` after the trial counts; empty without constraints."""
    if not spec.constraints or not len(table):
        return ""
    finished = table[table["status"] == "TERMINATED"]
    return (f"; {int((~finished['feasible'].astype(bool)).sum())} of {len(finished)} finished infeasible "
            f"({describe(spec.constraints)})")
