"""latune.sweep.progress: the table a running sweep prints (objectives, rung or PRUNED state, front size)."""

from types import SimpleNamespace

from latune.analysis.constraints import Constraint
from latune.sweep.progress import ProgressTable, front_size, trial_state, tune_verbosity

OBJECTIVES = {"clean_acc": "max", "robust_acc": "max"}


def _trial(trial_id, status, epoch, clean=0.9, robust=0.5):
    result = {"epoch": epoch, "clean_acc": clean, "robust_acc": robust} if epoch else {}
    return SimpleNamespace(trial_id=trial_id, status=status, config={}, last_result=result)


def test_state_tells_pruned_from_finished():
    assert trial_state("TERMINATED", 10, 10, (1, 3, 9)) == "FINISHED"
    assert trial_state("TERMINATED", 3, 10, (1, 3, 9)) == "PRUNED@3"
    assert trial_state("RUNNING", 3, 10, (1, 3, 9)) == "RUNNING"
    assert trial_state("ERROR", 2, 10, ()) == "ERROR"
    assert front_size([[0.9, 0.5], [0.8, 0.6], [0.7, 0.4]], ["max", "max"]) == 2 and front_size([], ["max"]) == 0


def test_the_table_shows_objectives_rungs_and_the_running_front():
    table = ProgressTable(OBJECTIVES, budget=4, rungs=(1, 2), constraints=[Constraint("robust_acc", min=0.3)])
    trials = [_trial("t0", "TERMINATED", 4, 0.9, 0.5), _trial("t1", "TERMINATED", 4, 0.8, 0.6),
              _trial("t2", "TERMINATED", 1, 0.5, 0.1), _trial("t3", "RUNNING", 2, 0.7, 0.45),
              _trial("t4", "TERMINATED", 4, 0.99, 0.2), _trial("t5", "PENDING", 0)]
    text = table.render(trials)
    header, columns, *rows = text.splitlines()
    assert "1 running" in header and "1 pending" in header and "3 finished" in header and "1 pruned" in header
    assert "front 2 of 2 finished (feasible: robust_acc >= 0.3)" in header  # t4 is infeasible: not counted
    assert columns.split() == ["trial", "state", "epoch", "rung", "clean_acc", "robust_acc", "feasible"]
    assert rows[0].split() == ["t3", "RUNNING", "2/4", "2", "0.7", "0.45", "yes"]  # running trials first
    assert rows[1].split()[:2] == ["t5", "PENDING"] and rows[1].split()[2:4] == ["0/4", "-"]
    assert ["t2", "PRUNED@1", "1/4", "1", "0.5", "0.1", "no"] in [r.split() for r in rows]
    assert ["t4", "FINISHED", "4/4", "2", "0.99", "0.2", "no"] in [r.split() for r in rows]


def test_the_latest_result_wins_and_settings_alone_are_pickled(capsys):
    table = ProgressTable(OBJECTIVES, budget=4, every_s=3600)
    trial = _trial("t0", "RUNNING", 1)
    table.on_trial_result(0, [trial], trial, {"epoch": 2, "clean_acc": 0.1, "robust_acc": 0.2})
    assert "2/4" in capsys.readouterr().out  # the first result prints at once
    table.on_trial_result(0, [trial], trial, {"epoch": 3, "clean_acc": 0.1, "robust_acc": 0.2})
    assert capsys.readouterr().out == ""  # then at most every every_s seconds
    table.on_trial_complete(0, [trial], trial)
    assert "3/4" in capsys.readouterr().out  # and whenever a trial ends
    assert table.__getstate__()["_latest"] == {}
    assert [tune_verbosity(v) for v in (0, 1, 2, 3)] == [0, 0, 1, 2]
