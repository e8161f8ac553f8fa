"""How latune's MLflow writer copes with a tracking server that fails: the retry policy of SweepTracker.

A live sweep must never stall or stop on MLflow: its requests get short timeouts and no retries, the first
failure prints one warning, MLflow is then left alone for a minute, and the next attempt catches up on
everything (the tracker is idempotent). A backfill (latune.sync) is strict: errors raise, and MLflow's own
timeouts and retries apply.

Only outages are forgiven (outage_errors: MLflow's, the network's, the OS's and the database's errors). Anything
else is a bug in latune's bookkeeping and propagates: read as "MLflow down", it would hide behind a warning.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator

__all__ = ["MlflowGuard", "outage_errors", "is_outage"]

logger = logging.getLogger(__name__)

_REQUEST_TIMEOUT_S = 5  # per HTTP request of a live sweep: a dead server costs at most this per attempt
_RETRY_AFTER_S = 60.0  # after a failure, a live sweep leaves MLflow alone this long before catching up


@functools.cache
def outage_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean MLflow cannot be reached or cannot write now, not that latune is wrong: MLflow's own
    (MlflowException: its REST client raises it for refused connections after its retries and for HTTP errors),
    requests' (RequestException), the OS's (OSError: ConnectionError, TimeoutError, socket and disk errors of a
    local store) and SQLAlchemy's OperationalError (a sqlite store locked or gone). Imported when first asked for:
    importing latune loads no MLflow."""
    from mlflow.exceptions import MlflowException

    found: list[type[BaseException]] = [MlflowException, OSError]
    try:
        from requests.exceptions import RequestException

        found.append(RequestException)
    except ImportError:  # MLflow's REST client needs requests; a file store does not
        pass
    try:
        from sqlalchemy.exc import OperationalError

        found.append(OperationalError)
    except ImportError:  # only MLflow's database stores need SQLAlchemy
        pass
    return tuple(found)


def is_outage(err: BaseException) -> bool:
    """Whether ``err`` is one of outage_errors()."""
    return isinstance(err, outage_errors())


class MlflowGuard:
    """Runs MLflow work under the policy above; ``strict`` (latune.sync) lets every error through, a live sweep
    only what is not an outage."""

    def __init__(self, tracking_uri: str, *, strict: bool) -> None:
        self.tracking_uri = tracking_uri
        self.strict = strict
        self._down_since: float | None = None  # monotonic time of the first failure of the current outage
        self._retry_at = 0.0

    @contextlib.contextmanager
    def client_env(self) -> Iterator[None]:
        """MLflow reads these per request: short timeouts and no retries only around this tracker's calls
        (a live sweep must not stall on a dead server); no run links printed to stdout."""
        settings = {"MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}
        if not self.strict:
            settings.update(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT=str(_REQUEST_TIMEOUT_S))
        saved = {key: os.environ.get(key) for key in settings}
        os.environ.update(settings)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    def run(self, work: Callable[[], None], *, force: bool, on_failure: Callable[[], None]) -> bool:
        """Do ``work``; False when MLflow failed (then ``on_failure()``: forget what MLflow was thought to hold,
        since a request may have failed after the server applied it) or is being left alone after a failure
        (unless ``force``). An exception that is not an outage (is_outage) propagates."""
        if self.strict:
            with self.client_env():
                work()
            return True
        if self._down_since is not None and not force and time.monotonic() < self._retry_at:
            return False
        try:
            with self.client_env():
                work()
        except outage_errors() as err:  # an outage: training goes on; anything else is a bug, and propagates
            on_failure()
            if self._down_since is None:
                text = " ".join(str(err).split())[:300]
                logger.warning(f"warning: MLflow tracking at {self.tracking_uri} failed ({type(err).__name__}: "
                               f"{text}); training goes on and results stay in Tune's folder; latune retries "
                               f"every {_RETRY_AFTER_S:.0f} s")
                self._down_since = time.monotonic()
            self._retry_at = time.monotonic() + _RETRY_AFTER_S
            return False
        if self._down_since is not None:
            logger.warning(f"MLflow at {self.tracking_uri} is reachable again; caught up")
            self._down_since = None
        return True
