"""How a trial ended, read from its results alone: one rule for results.parquet, MLflow and the backfill.

A trial the early-stopping scheduler stops (latune.sweep.scheduler) is *pruned*: it trained fewer epochs
than its budget and will not train more. Tune marks the result a scheduler stopped a trial on with
``done: True`` (in result.json and in the result the callbacks see); a trial that ends by itself has
``done: False`` in every result it wrote, and so does one stopped because the sweep was interrupted, so
the flag tells the two kinds of short trial apart in every copy of the results, also after a resume.

One rule for how a trial ended, the same in results.parquet, MLflow and Optuna:

- it raised: failed (ERROR, FAILED, FAIL);
- the scheduler stopped it before its budget: pruned (PRUNED; KILLED with latune.status=pruned; PRUNED),
  whatever its values at the rung, NaN included;
- it trained its whole budget with every objective measured: finished (TERMINATED, FINISHED, COMPLETE);
- it trained its whole budget but an objective is missing or NaN at the last epoch: failed, with
  ``unmeasured_error`` as its error (Optuna cannot be told a NaN value, and such a trial has no place on a front);
- otherwise it was interrupted (UNFINISHED, KILLED, left RUNNING for a resume).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["PRUNED", "stopped_early", "unmeasured_error"]

PRUNED = "PRUNED"  # results.parquet status (and Optuna state) of a trial stopped at a rung


def stopped_early(history: Sequence[Mapping[str, Any]], budget: int) -> bool:
    """True when the last of the trial's results (in the order Tune received them) is the one a
    scheduler stopped it on, before epoch ``budget``."""
    if not history:
        return False
    last = history[-1]
    epoch = last.get("epoch", last.get("training_iteration"))
    if not isinstance(epoch, (int, float)) or epoch != epoch:  # missing or NaN
        return False
    return bool(last.get("done") == True) and int(epoch) < budget  # noqa: E712 - numpy.bool_ and NaN too


def unmeasured_error(result: Mapping[str, Any], objectives: Iterable[str]) -> str | None:
    """The error of a trial that trained its whole budget but whose last result lacks an objective (missing or
    NaN); None when every objective was measured."""
    missing = [m for m in objectives if not _measured(result.get(m))]
    if not missing:
        return None
    return f"ValueError: objective {', '.join(missing)} not measured (missing or NaN) at the last epoch"


def _measured(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
