"""Constraints on a sweep's reported metrics (sweep file ``constraints:``), and feasibility of a result.

    constraints:
      robust_acc: {min: 0.2}          # any reported metric; min and/or max, in the metric's own units
      clean_acc: {min: 0.5, max: 1.0}

A result is feasible when every bound holds. Its *violation* is the sum over bounds of how far it misses
each (0 when feasible), the measure NSGA-II's constrained domination (Deb et al. 2002) ranks infeasible
trials by; a metric that is missing or NaN misses its bounds by infinity. Plain Python, no numpy: sweep
files are validated with it before anything heavy is imported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from latune.errors import ConfigError

__all__ = ["Constraint", "parse_constraints", "violation", "is_feasible", "bound_gaps", "describe",
           "to_mapping", "from_mapping"]


@dataclass(frozen=True)
class Constraint:
    """Bounds on one reported metric; a trial must satisfy ``min <= value <= max`` to be feasible."""

    metric: str  # a metric every trial reports every epoch (validation split)
    min: float | None = None  # lowest feasible value, in the metric's own units; None = no lower bound
    max: float | None = None  # highest feasible value; None = no upper bound


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_constraints(raw: Any, allowed: Sequence[str], where: str = "constraints") -> tuple[Constraint, ...]:
    """Validate the sweep file's ``constraints`` mapping (None: no constraints); one-line ConfigError."""
    if raw is None:
        return ()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping metric: {{min: X, max: Y}}, got {raw!r}")
    parsed = []
    for metric, bounds in raw.items():
        if metric not in allowed:
            raise ConfigError(f"{where}: unknown metric {metric!r}; allowed: {', '.join(allowed)}")
        if not isinstance(bounds, dict) or not bounds or set(bounds) - {"min", "max"}:
            raise ConfigError(f"{where}.{metric}: expected {{min: X}}, {{max: Y}} or both, got {bounds!r}")
        for key, value in bounds.items():
            if not _number(value):
                raise ConfigError(f"{where}.{metric}.{key}: expected a finite number, got {value!r}")
        low, high = bounds.get("min"), bounds.get("max")
        if low is not None and high is not None and low > high:
            raise ConfigError(f"{where}.{metric}: min must be <= max, got min {low} and max {high}")
        parsed.append(Constraint(str(metric), None if low is None else float(low),
                                 None if high is None else float(high)))
    return tuple(parsed)


def bound_gaps(metrics: Mapping[str, Any], constraints: Iterable[Constraint]) -> dict[str, float]:
    """``{"robust_acc>=0.2": gap, ...}``, one entry per bound: how far the value misses it (<= 0: it holds;
    Optuna's sign convention for constraint values). A missing or NaN metric misses by infinity."""
    gaps: dict[str, float] = {}
    for constraint in constraints:
        value = metrics.get(constraint.metric)
        known = _number(value)
        if constraint.min is not None:
            gaps[f"{constraint.metric}>={constraint.min:g}"] = constraint.min - value if known else math.inf
        if constraint.max is not None:
            gaps[f"{constraint.metric}<={constraint.max:g}"] = value - constraint.max if known else math.inf
    return gaps


def violation(metrics: Mapping[str, Any], constraints: Iterable[Constraint]) -> float:
    """Total amount by which ``metrics`` miss the bounds: 0.0 when feasible, inf when a metric is unknown."""
    return float(sum(max(0.0, gap) for gap in bound_gaps(metrics, constraints).values()))


def is_feasible(metrics: Mapping[str, Any], constraints: Iterable[Constraint]) -> bool:
    return violation(metrics, constraints) == 0.0


def describe(constraints: Iterable[Constraint]) -> str:
    """``robust_acc >= 0.2, clean_acc <= 1``: for printed tables; empty without constraints."""
    return ", ".join(key.replace(">=", " >= ").replace("<=", " <= ")
                     for key in bound_gaps({}, constraints))


def to_mapping(constraints: Iterable[Constraint]) -> dict[str, dict[str, float]]:
    """The sweep file's form (JSON-safe), e.g. for latune_sweep.json: ``{"robust_acc": {"min": 0.2}}``."""
    return {c.metric: {k: v for k, v in (("min", c.min), ("max", c.max)) if v is not None} for c in constraints}


def from_mapping(raw: Mapping[str, Mapping[str, float]] | None) -> tuple[Constraint, ...]:
    """Inverse of ``to_mapping`` (no validation: the mapping was validated when the sweep started)."""
    return tuple(Constraint(metric, bounds.get("min"), bounds.get("max")) for metric, bounds in (raw or {}).items())
