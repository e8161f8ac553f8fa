"""latune.analysis.constraints and .outcome: feasibility, pruned trials, and what they do to the front."""

import math

import pytest

from latune.analysis.constraints import (Constraint, bound_gaps, describe, from_mapping, is_feasible, parse_constraints,
                                         to_mapping, violation)
from latune.analysis.outcome import stopped_early
from latune.analysis.results import results_table, trial_row
from latune.config import ConfigError
from latune.sweep.spec import _REPORTED_METRICS, parse_sweep

OBJ = {"clean_acc": "max", "robust_acc": "max"}


def test_violation_is_how_far_the_bounds_are_missed():
    bounds = (Constraint("robust_acc", min=0.3), Constraint("clean_acc", min=0.5, max=0.9))
    assert violation({"robust_acc": 0.4, "clean_acc": 0.7}, bounds) == 0.0
    assert violation({"robust_acc": 0.1, "clean_acc": 0.95}, bounds) == pytest.approx(0.2 + 0.05)
    assert violation({"clean_acc": 0.7}, bounds) == math.inf  # a metric not reported: infeasible
    assert violation({"robust_acc": math.nan, "clean_acc": 0.7}, bounds) == math.inf
    assert is_feasible({}, ()) and not is_feasible({"robust_acc": 0.2}, bounds[:1])
    assert bound_gaps({"robust_acc": 0.4}, bounds[:1]) == {"robust_acc>=0.3": pytest.approx(-0.1)}
    assert describe(bounds) == "robust_acc >= 0.3, clean_acc >= 0.5, clean_acc <= 0.9"
    assert from_mapping(to_mapping(bounds)) == bounds


@pytest.mark.parametrize(("raw", "message"), [
    ({"robustness": {"min": 0.3}}, r"^constraints: unknown metric 'robustness'; allowed: clean_acc, "),
    ({"robust_acc": 0.3}, r"^constraints\.robust_acc: expected \{min: X\}, \{max: Y\} or both, got 0\.3$"),
    ({"robust_acc": {"least": 0.3}}, r"^constraints\.robust_acc: expected"),
    ({"robust_acc": {}}, r"^constraints\.robust_acc: expected"),
    ({"robust_acc": {"min": "high"}}, r"^constraints\.robust_acc\.min: expected a finite number, got 'high'$"),
    ({"robust_acc": {"min": True}}, r"^constraints\.robust_acc\.min: expected a finite number"),
    ({"robust_acc": {"min": 0.6, "max": 0.4}}, r"^constraints\.robust_acc: min must be <= max"),
    ([["robust_acc", 0.3]], r"^constraints: expected a mapping"),
])
def test_bad_constraints_are_one_line_errors_naming_the_field(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_constraints(raw, _REPORTED_METRICS)
    with pytest.raises(ConfigError, match=message):  # the same through the sweep file
        parse_sweep({"space": {"la.delta": [0.0]}, "constraints": raw})


def test_stopped_early_reads_the_flag_tune_sets_on_the_stopping_result():
    history = [{"epoch": 1, "done": False}, {"epoch": 2, "done": True}]
    assert stopped_early(history, budget=4)
    assert not stopped_early(history, budget=2)  # the whole budget: finished, whatever the flag
    assert not stopped_early([{"epoch": 1, "done": False}], budget=4)  # interrupted: no flag
    assert not stopped_early([], budget=4) and not stopped_early([{"done": True}], budget=4)


def _history(epochs, clean, robust, stopped=False):
    return [{"epoch": e, "clean_acc": clean, "robust_acc": robust, "done": stopped and e == epochs}
            for e in range(1, epochs + 1)]


def test_pruned_and_infeasible_trials_are_never_on_the_front():
    rows = [trial_row("full", {}, _history(4, 0.90, 0.50), OBJ, None, 4),
            trial_row("pruned", {}, _history(2, 0.99, 0.90, stopped=True), OBJ, None, 4),
            trial_row("cut", {}, _history(1, 0.99, 0.90), OBJ, None, 4),
            trial_row("infeasible", {}, _history(4, 0.99, 0.10), OBJ, None, 4)]
    table = results_table(rows, OBJ, [Constraint("robust_acc", min=0.2)]).set_index("trial_id")
    assert table["status"].to_dict() == {"full": "TERMINATED", "pruned": "PRUNED", "cut": "UNFINISHED",
                                         "infeasible": "TERMINATED"}
    assert table.loc["pruned", "epochs_done"] == 2 and table.loc["pruned", "robust_acc"] == 0.90  # its last metrics
    assert table["feasible"].to_dict() == {"full": True, "pruned": True, "cut": True, "infeasible": False}
    assert table["pareto_rank"].to_dict() == {"full": 0, "pruned": -1, "cut": -1, "infeasible": -1}
    unconstrained = results_table(rows, OBJ).set_index("trial_id")
    assert unconstrained["feasible"].all() and unconstrained.loc["infeasible", "pareto_rank"] == 0
