"""latune.sweep.scheduler: the Ray Tune scheduler's decisions, once per rung, rebuilt on a resume (no Ray started)."""

import json
from types import SimpleNamespace

import pytest
from ray.tune.schedulers import TrialScheduler

from latune.analysis.constraints import Constraint
from latune.sweep.rungs import EarlyStopping
from latune.sweep.scheduler import ParetoHalvingScheduler

OBJECTIVES = {"clean_acc": "max", "robust_acc": "max", "robust_class_error_sd": "min"}
GOOD = {"clean_acc": 0.9, "robust_acc": 0.6, "robust_class_error_sd": 0.1}
BAD = {"clean_acc": 0.5, "robust_acc": 0.2, "robust_class_error_sd": 0.4}
CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP


def _scheduler(grace=1, eta=2, budget=4, constraints=()):
    return ParetoHalvingScheduler(OBJECTIVES, EarlyStopping(grace, eta, budget), constraints)


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
    # on the front with a, but one of 3 goes on and a adds far more hypervolume; the ε-net of MO-ASHA seeded
    # with the best clean accuracy would have kept c (the weakest defence) by column order alone
    assert scheduler.judge("c", _at(1, {**BAD, "clean_acc": 0.95})) == STOP
    assert "pruned 2" in scheduler.debug_string() and "3/1" in scheduler.debug_string()


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


def test_a_resumed_sweep_rebuilds_the_rungs_from_the_trials_results(tmp_path):
    """Tuner.restore unpickles the scheduler as it started; on_trial_add replays each trial's result.json."""
    import pyarrow.fs

    def report(epoch, metrics, stamp):
        return _at(epoch, metrics) | {"timestamp": stamp, "done": False}

    history = {"a": [report(1, GOOD, 100), report(2, GOOD, 102)], "b": [report(1, BAD, 101)],
               "c": [report(1, GOOD | {"clean_acc": 0.95}, 103), report(2, BAD, 104)]}
    first = _scheduler()
    decisions = {}
    for result in sorted((r | {"id": t} for t, rs in history.items() for r in rs), key=lambda r: r["timestamp"]):
        decisions[(result["id"], result["epoch"])] = first.judge(result["id"], result)
    assert decisions == {("a", 1): CONTINUE, ("b", 1): STOP, ("a", 2): CONTINUE, ("c", 1): CONTINUE, ("c", 2): STOP}
    history["b"][-1]["done"] = history["c"][-1]["done"] = True  # what Tune writes for a STOP

    resumed = _scheduler()
    for trial_id in ("c", "b", "a"):  # restored in any order
        folder = tmp_path / trial_id
        folder.mkdir()
        (folder / "result.json").write_text("".join(json.dumps(r) + "\n" for r in history[trial_id]) + '{"cut')
        storage = SimpleNamespace(storage_filesystem=pyarrow.fs.LocalFileSystem(), trial_fs_path=str(folder))
        resumed.on_trial_add(None, SimpleNamespace(trial_id=trial_id, last_result=history[trial_id][-1], storage=storage))
    assert resumed.rungs == first.rungs and resumed.stopped == first.stopped == {"b": 1, "c": 2}
    assert [list(resumed.rungs[m]) for m in (1, 2)] == [["a", "b", "c"], ["a", "c"]]  # arrival order kept
    assert resumed.judge("a", _at(2, BAD)) == CONTINUE  # a resumed trial redoing epoch 2: not judged again
    assert resumed.judge("b", _at(2, GOOD)) == STOP
    assert resumed.judge("d", _at(1, BAD)) == STOP  # judged against the rung as the first session left it

    resumed.save(str(tmp_path / "state.json"))  # TrialScheduler's checkpoint API
    again = _scheduler()
    again.restore(str(tmp_path / "state.json"))
    assert again.rungs == resumed.rungs and again.stopped == resumed.stopped


def test_a_new_trial_adds_nothing():
    scheduler = _scheduler()
    scheduler.on_trial_add(None, SimpleNamespace(trial_id="new", last_result={"trial_id": "new", "config": {}}))
    assert scheduler.rungs == {1: {}, 2: {}} and scheduler.stopped == {}


@pytest.mark.parametrize("result", [{}, {"epoch": None}, {"training_iteration": 3}])
def test_results_without_an_epoch_continue(result):
    assert _scheduler().judge("a", result) == CONTINUE
