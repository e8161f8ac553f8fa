"""latune.tracking.guard and the MLflow callback's hooks (latune.tracking.callback): only outages are forgiven.

An MLflow, network, OS or database error is an outage: the live sweep warns once and goes on. Anything else is a
bug and propagates from the guard; the callback's hooks, which must not end a sweep over bookkeeping, still raise
it when LATUNE_STRICT_TRACKING=1 (tests/conftest.py sets it), so that a bug fails the tests. No MLflow server."""

from __future__ import annotations

import logging
import queue
import threading
import warnings
from types import SimpleNamespace

import pytest
import requests
import sqlalchemy.exc
from mlflow.exceptions import MlflowException

from _mlflow_helpers import OBJECTIVES
from latune.tracking.callback import STRICT_ENV, MlflowCallback
from latune.tracking.guard import MlflowGuard, is_outage
from latune.tracking.records import SweepInfo

OUTAGES = [MlflowException("RESOURCE_DOES_NOT_EXIST"), requests.exceptions.ConnectionError("refused"),
           ConnectionRefusedError(111, "refused"), TimeoutError("timed out"), OSError(28, "No space left on device"),
           sqlalchemy.exc.OperationalError("INSERT", {}, Exception("database is locked"))]
BUGS = [ValueError("bad value"), KeyError("epoch"), TypeError("None is not a float"), IndexError("list index")]


def _raise(error: BaseException):
    def work(*args, **kwargs):
        raise error
    return work


def test_strict_tracking_is_on_in_the_tests():
    import os

    assert os.environ.get(STRICT_ENV) == "1"


@pytest.mark.parametrize("error", OUTAGES, ids=lambda e: type(e).__name__)
def test_guard_forgives_an_outage_and_warns_once(error, caplog):
    guard, forgotten = MlflowGuard("http://127.0.0.1:1", strict=False), []
    with caplog.at_level(logging.WARNING, logger="latune.tracking"):
        assert guard.run(_raise(error), force=False, on_failure=lambda: forgotten.append(1)) is False
        assert guard.run(_raise(error), force=True, on_failure=lambda: forgotten.append(1)) is False
    assert is_outage(error) and forgotten == [1, 1]
    assert sum("failed" in record.getMessage() for record in caplog.records) == 1


@pytest.mark.parametrize("error", BUGS, ids=lambda e: type(e).__name__)
def test_guard_lets_a_bug_through(error):
    guard, forgotten = MlflowGuard("http://127.0.0.1:1", strict=False), []
    with pytest.raises(type(error)):
        guard.run(_raise(error), force=False, on_failure=lambda: forgotten.append(1))
    assert not is_outage(error) and forgotten == []  # not mistaken for "MLflow down"


def test_strict_guard_lets_an_outage_through_too():
    with pytest.raises(MlflowException):
        MlflowGuard("http://127.0.0.1:1", strict=True).run(_raise(OUTAGES[0]), force=False, on_failure=lambda: None)


@pytest.fixture
def callback(tmp_path) -> MlflowCallback:
    sweep = SweepInfo(name="guarded", experiment_path=str(tmp_path), objectives=dict(OBJECTIVES), data="digits")
    return MlflowCallback(sweep, "http://127.0.0.1:1")


TRIAL = SimpleNamespace(trial_id="abcde_00000", config={}, last_result={}, status="RUNNING")


def test_a_bug_in_a_hook_raises_under_strict_tracking(callback, monkeypatch):
    monkeypatch.setattr(callback, "_record", _raise(KeyError("trial_id")))
    with pytest.raises(KeyError):
        callback.on_trial_start(0, [TRIAL], TRIAL)


def test_an_outage_in_a_hook_is_forgiven_under_strict_tracking(callback, monkeypatch):
    monkeypatch.setattr(callback, "_record", _raise(MlflowException("server down")))
    with pytest.warns(RuntimeWarning, match="on_trial_start failed .MlflowException: server down.; training goes on"):
        callback.on_trial_start(0, [TRIAL], TRIAL)


def test_a_bug_in_a_hook_only_warns_in_a_live_sweep(callback, monkeypatch):
    monkeypatch.delenv(STRICT_ENV)
    monkeypatch.setattr(callback, "_record", _raise(KeyError("trial_id")))
    with pytest.warns(RuntimeWarning, match="on_trial_start failed"):
        callback.on_trial_start(0, [TRIAL], TRIAL)


def _stopped_writer(callback: MlflowCallback, error: BaseException) -> None:
    """The callback as its writer thread leaves it after ``error`` stopped it."""
    tracker = SimpleNamespace(update=_raise(error), sweep=callback.sweep)
    callback._queue = queue.Queue()
    with pytest.warns(RuntimeWarning, match="MLflow writer stopped"):
        MlflowCallback._write(tracker, callback._queue, callback._writer_errors)
    callback._writer = threading.Thread(target=lambda: None)
    callback._writer.start()


def test_a_bug_that_stopped_the_writer_fails_the_sweep_at_its_end_under_strict_tracking(callback):
    _stopped_writer(callback, TypeError("None is not a float"))
    with pytest.raises(TypeError, match="None is not a float"):
        callback.on_experiment_end([])


def test_a_bug_that_stopped_the_writer_only_warns_in_a_live_sweep(callback, monkeypatch):
    monkeypatch.delenv(STRICT_ENV)
    _stopped_writer(callback, TypeError("None is not a float"))  # the writer's own warning, once
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        callback.on_experiment_end([])  # the sweep ends normally


def test_a_real_unreachable_server_is_an_outage(tmp_path, caplog):
    """What MLflow's own client raises for a closed port (after its retries, here none) is forgiven."""
    import time

    from _mlflow_helpers import free_port
    from latune.tracking.records import TrialRecord
    from latune.tracking.tracker import SweepTracker

    sweep = SweepInfo(name="nowhere", experiment_path=str(tmp_path), objectives=dict(OBJECTIVES), data="digits")
    tracker = SweepTracker(sweep, f"http://127.0.0.1:{free_port()}")
    record = TrialRecord("abcde_00000", {"la.delta": 0.1}, [{"epoch": 1, "clean_acc": 0.5, "timestamp": time.time()}])
    with caplog.at_level(logging.WARNING, logger="latune.tracking"):
        assert tracker.update([record]) is False
    assert sum("failed" in r.getMessage() for r in caplog.records) == 1
