"""Command-line plumbing shared by latune's entry points, and the single-run CLI.

User errors (bad config values, missing data) print as one line on stderr and exit with status 2,
without a traceback, before anything is written.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from latune.config import describe_keys
from latune.errors import ConfigError, DataError, UserError

__all__ = ["UserError", "parse_overrides", "keys_help", "guarded", "write_json_atomic"]


def parse_overrides(pairs: Sequence[str]) -> dict[str, str]:
    """['attack.eps=0.03', ...] -> {'attack.eps': '0.03', ...}; values stay strings for config coercion."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set: expected key=value, got {pair!r}")
        overrides[key.strip()] = value.strip()
    return overrides


def keys_help() -> str:
    """Every config key with its default and unit, for --help."""
    rows = describe_keys()
    width = max(len(k) for k, _, _ in rows)
    lines = ["config keys (--set KEY=VALUE; None = data-set preset or derived):"]
    lines += [f"  {key:<{width}}  {default:<14} {comment}" for key, default, comment in rows]
    return "\n".join(lines)


def guarded(main: Callable[[], int]) -> int:
    """Run ``main``; user errors become one stderr line and exit status 2."""
    try:
        return main()
    except (ConfigError, DataError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def write_json_atomic(path: Path, payload: Any) -> None:
    """Write JSON to ``path`` via a temp file and rename, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=1, allow_nan=True)
    os.replace(tmp, path)
