"""Where sweeps keep their files: a local folder or any pyarrow filesystem URI (``s3://``, ``gs://``, ``file://``).

One helper turns either into a pyarrow filesystem and a path on it, so every reader and writer of Tune's
experiment folder (results.parquet, latune_sweep.json, trial folders) accepts the same locations.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["filesystem"]


def filesystem(location: str) -> tuple[Any, str]:
    """(pyarrow FileSystem, path on it) of ``location``: a URI as pyarrow reads it, or a plain path made absolute
    against the current directory. The path has no trailing slash (except the root ``/``). pyarrow is imported
    here, on first use."""
    import pyarrow.fs

    uri = location if "://" in location else f"file://{os.path.abspath(location)}"
    fs, path = pyarrow.fs.FileSystem.from_uri(uri)
    return fs, path.rstrip("/") or "/"
