"""How a trial ended, read from its results alone: one rule for results.parquet, MLflow and the backfill.

A trial the early-stopping scheduler stops (latune.sweep.scheduler) is *pruned*: it trained fewer epochs
than its budget and will not train more. Tune marks the result a scheduler stopped a trial on with
``done: True`` (in result.json and in the result the callbacks see); a trial that ends by itself has
``done: False`` in every result it wrote, and so does one stopped because the sweep was interrupted, so
the flag tells the two kinds of short trial apart in every copy of the results, also after a resume.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["PRUNED", "stopped_early"]

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
