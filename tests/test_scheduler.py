"""latune.sweep.scheduler: the Ray Tune scheduler's decisions, once per rung, kept across a resume (no Ray started)."""

import json

import pytest
from ray.tune.schedulers import TrialScheduler

from latune.analysis.constraints import Constraint
from latune.sweep.rungs import EarlyStopping
from latune.sweep.scheduler import RUNGS_FILE, ParetoHalvingScheduler

OBJECTIVES = {"clean_acc": "max", "robust_acc": "max", "robust_class_error_sd": "min"}
GOOD = {"clean_acc": 0.9, "robust_acc": 0.6, "robust_class_error_sd": 0.1}
BAD = {"clean_acc": 0.5, "robust_acc": 0.2, "robust_class_error_sd": 0.4}
CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def _scheduler(state_path=None, grace=1, eta=2, budget=4, constraints=()):
    return ParetoHalvingScheduler(OBJECTIVES, EarlyStopping(grace, eta, budget), constraints, state_path=state_path)


def _at(epoch, metrics):
    return {**metrics, "epoch": epoch}


def test_decisions_are_made_at_rungs_only_and_once_per_rung():
    scheduler = _scheduler()  # rungs at epochs 1 and 2 of 4, eta 2
    assert scheduler.settings.rungs == (1, 2)
    assert scheduler.judge("a", _at(1, GOOD)) == CONTINUE  # first at rung 1: nothing to compare with
    assert scheduler.judge("b", _at(1, BAD)) == STOP  # dominated by a: the best half (1 of 2) goes on
    assert scheduler.stopped == {"b": 1}
    assert scheduler.judge("b", _at(2, GOOD)) == STOP  # once stopped, always stopped
    assert scheduler.judge("a", _at(2, BAD)) == CONTINUE  # first at rung 2
    assert scheduler.judge("a", _at(3, BAD)) == CONTINUE  # no rung at 3
    assert scheduler.judge("a", _at(2, BAD)) == CONTINUE  # a retried trial reporting epoch 2 again: not judged again
    assert list(scheduler.rungs[1]) == ["a", "b"] and list(scheduler.rungs[2]) == ["a"]
    assert scheduler.judge("c", _at(1, {**BAD, "clean_acc": 0.95})) == CONTINUE  # on the front with a: 2 of 3
    assert "pruned 1" in scheduler.debug_string() and "3/1" in scheduler.debug_string()


def test_a_result_past_several_rungs_is_recorded_at_each():
    scheduler = _scheduler(grace=1, eta=2, budget=8)  # rungs 1, 2, 4
    assert scheduler.judge("a", _at(5, GOOD)) == CONTINUE
    assert [list(scheduler.rungs[m]) for m in (1, 2, 4)] == [["a"], ["a"], ["a"]]
    assert scheduler.judge("b", _at(4, BAD)) == STOP  # judged at rung 1 first, and stopped there
    assert scheduler.stopped == {"b": 1} and "b" not in scheduler.rungs[2]


def test_infeasible_trials_rank_below_feasible_ones():
    scheduler = _scheduler(constraints=[Constraint("robust_acc", min=0.5)])
    assert scheduler.judge("weak", _at(1, {**BAD, "robust_acc": 0.55})) == CONTINUE
    assert scheduler.judge("strong_but_infeasible", _at(1, {**GOOD, "robust_acc": 0.45, "clean_acc": 0.99})) == STOP


def test_rung_records_survive_a_resume(tmp_path):
    first = _scheduler(state_path=str(tmp_path))
    first.judge("a", _at(1, GOOD))
    first.judge("b", _at(1, BAD))
    saved = json.loads((tmp_path / RUNGS_FILE).read_text())
    assert saved["stopped"] == {"b": 1} and list(saved["rungs"]["1"]) == ["a", "b"]

    resumed = _scheduler(state_path=str(tmp_path))  # what Tuner.restore unpickles: the scheduler as it started
    assert resumed.rungs[1] == {}
    assert resumed.set_search_properties(None, None) is True  # Tune's call at the start of every fit
    assert resumed.rungs == first.rungs and resumed.stopped == first.stopped
    assert resumed.judge("a", _at(1, BAD)) == CONTINUE  # a resumed trial redoing epoch 1: not judged again
    assert resumed.judge("b", _at(2, GOOD)) == STOP
    assert resumed.judge("c", _at(1, BAD)) == STOP  # judged against the rung as the first session left it
    assert list(resumed.rungs[1]) == ["a", "b", "c"]


def test_a_missing_state_file_restores_nothing(tmp_path):
    scheduler = _scheduler(state_path=str(tmp_path / "new"))
    scheduler.set_search_properties(None, None)
    assert scheduler.rungs == {1: {}, 2: {}} and not (tmp_path / "new").exists()


@pytest.mark.parametrize("result", [{}, {"epoch": None}, {"training_iteration": 3}])
def test_results_without_an_epoch_continue(result):
    assert _scheduler().judge("a", result) == CONTINUE
