"""Atomic file writes: a reader sees the old file or the new one, never half of one.

The data goes to a temporary file in the target's folder, is flushed and fsynced, and only then renamed over the
target (``os.replace`` is atomic within one file system), so a crash or a full disk mid-write leaves the previous
file intact and no temporary file behind. Standard library only: the command line and the core both use it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from typing import IO, Any

__all__ = ["write_atomic", "write_json_atomic"]


def write_atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(handle)`` on a binary temporary file beside ``path``, fsync it, then rename it to ``path``.

    Creates ``path``'s folder when missing. The file ends up readable by all (0644), like a plain ``open``'s under
    the usual umask (mkstemp would leave 0600). Whatever ``write`` raises propagates after the temporary file is
    removed; ``path`` is then untouched.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())  # the data is on disk before the rename makes it visible
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, payload: Any) -> None:
    """Write ``payload`` as JSON (indent 1, NaN allowed) to ``path`` atomically (see ``write_atomic``).

    The payload is serialised before anything is written, so an unserialisable one raises TypeError and leaves
    ``path`` as it was.
    """
    data = json.dumps(payload, indent=1, allow_nan=True).encode("utf-8")
    write_atomic(path, lambda handle: handle.write(data))
