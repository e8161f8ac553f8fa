"""The progress table a running sweep prints: what is being optimised, not Tune's loss/lr columns.

One line per trial: its state (PENDING, RUNNING, FINISHED, PRUNED@<rung epoch>, ERROR), epochs trained of
its budget, the last rung it reached, the latest value of each objective and, with constraints, whether
that value is feasible; above them the trial counts and the size of the running Pareto front (feasible
trials that trained their whole budget). Printed by a Tune callback in the driver whenever a trial ends,
otherwise at most every ``every_s`` seconds while results come in.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from ray import tune

from latune.analysis.constraints import Constraint, describe, is_feasible

__all__ = ["ProgressTable", "trial_state", "front_size", "progress_callbacks", "tune_verbosity"]

_ORDER = {"RUNNING": 0, "PAUSED": 1, "PENDING": 2}  # shown first; ended trials after them, by trial id


def trial_state(status: str, epoch: int, budget: int, rungs: Sequence[int]) -> str:
    """The state column: Tune's status, with TERMINATED split into FINISHED (whole budget) and PRUNED@rung."""
    if status != "TERMINATED":
        return status
    if epoch >= budget:
        return "FINISHED"
    reached = [m for m in rungs if m <= epoch]
    return f"PRUNED@{reached[-1]}" if reached else "STOPPED"


def front_size(points: Sequence[Sequence[float]], directions: Sequence[str]) -> int:
    """Members of the Pareto front of ``points`` (one row of objective values per finished trial)."""
    from latune.analysis.pareto import pareto_front_mask

    return int(pareto_front_mask(points, list(directions)).sum()) if len(points) else 0


class ProgressTable(tune.Callback):
    """Prints the table (module docstring). ``objectives``: metric -> "max" | "min"; ``budget``: the sweep's
    optim.epochs (a trial whose config sets optim.epochs is measured against its own); ``rungs``: the
    early-stopping rung epochs (empty: off)."""

    def __init__(self, objectives: Mapping[str, str], budget: int, rungs: Sequence[int] = (),
                 constraints: Sequence[Constraint] = (), every_s: float = 30.0, limit: int = 40) -> None:
        self.objectives = dict(objectives)
        self.budget = budget
        self.rungs = tuple(rungs)
        self.constraints = tuple(constraints)
        self.every_s = every_s
        self.limit = limit
        self._latest: dict[str, Mapping[str, Any]] = {}  # trial id -> its latest result
        self._printed_at = -float("inf")

    def __getstate__(self) -> dict[str, Any]:  # pickled with the Tuner: settings only
        state = dict(self.__dict__)
        state.update(_latest={}, _printed_at=-float("inf"))
        return state

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self._latest[trial.trial_id] = result
        if time.monotonic() - self._printed_at >= self.every_s:
            self.show(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.show(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.show(trials)

    def show(self, trials: Sequence[Any]) -> None:
        print(self.render(trials), flush=True)
        self._printed_at = time.monotonic()

    # -- the table ----------------------------------------------------------------------------------
    def render(self, trials: Sequence[Any]) -> str:
        rows, finished = [], []
        for trial in trials:
            result = self._latest.get(trial.trial_id) or trial.last_result or {}
            budget = int(trial.config.get("optim.epochs") or self.budget)
            epoch = int(result.get("epoch") or 0)
            state = trial_state(trial.status, epoch, budget, self.rungs)
            feasible = is_feasible(result, self.constraints)
            if state == "FINISHED" and feasible:
                finished.append([result.get(m, float("nan")) for m in self.objectives])
            rows.append((trial.trial_id, state, epoch, budget, result, feasible))
        counts: dict[str, int] = {}
        for row in rows:
            key = "PRUNED" if row[1].startswith("PRUNED") else row[1]
            counts[key] = counts.get(key, 0) + 1
        header = (f"[latune {time.strftime('%H:%M:%S')}] " + ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
                  + f" | front {front_size(finished, list(self.objectives.values()))} of {len(finished)} finished"
                  + (f" (feasible: {describe(self.constraints)})" if self.constraints else "")
                  + (f" | rungs at epochs {', '.join(map(str, self.rungs))}" if self.rungs else ""))
        rows.sort(key=lambda r: (_ORDER.get(r[1], 3), r[0]))
        return "\n".join([header, *self._lines(rows)])

    def _lines(self, rows: list[tuple]) -> list[str]:
        columns = ["trial", "state", "epoch", "rung", *self.objectives] + (["feasible"] if self.constraints else [])
        cells = []
        for trial_id, state, epoch, budget, result, feasible in rows[:self.limit]:
            reached = [m for m in self.rungs if m <= epoch]
            values = [_number(result.get(m)) for m in self.objectives]
            cells.append([trial_id, state, f"{epoch}/{budget}", str(reached[-1]) if reached else "-", *values]
                         + (["yes" if feasible else "no"] if self.constraints else []))
        widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
        if len(rows) > self.limit:
            lines.append(f"... {len(rows) - self.limit} more trials")
        return lines


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else "-"


def tune_verbosity(verbose: int) -> int:
    """Tune's own verbosity for latune's ``--verbose``: 0 and 1 silence Tune (1 prints latune's table instead),
    2 adds Tune's status output, 3 also its per-result lines."""
    return max(0, verbose - 1)


def progress_callbacks(spec: Any, budget: int, verbose: int) -> list[ProgressTable]:
    """[the progress table] for ``verbose`` >= 1 (``spec``: the SweepSpec), else none."""
    if verbose < 1:
        return []
    rungs = spec.early_stopping.rungs if spec.early_stopping else ()
    return [ProgressTable(spec.objectives, budget, rungs, spec.constraints)]
