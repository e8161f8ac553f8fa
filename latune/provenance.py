"""What a run records to be reproducible: package version, git commit, library versions."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import latune

__all__ = ["provenance", "git_commit"]


@functools.cache
def git_commit() -> str | None:
    """Commit of the latune source tree (with "-dirty" if it has uncommitted changes), or None."""
    root = Path(latune.__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def provenance() -> dict[str, str | None]:
    import torch

    return {"latune_version": latune.__version__, "git_commit": git_commit(), "torch_version": torch.__version__,
            "python_version": platform.python_version()}
