"""The three kinds of user error. Every entry point prints one as a single ``error: ...`` line and exits 2.

No imports: validating a config or a sweep file, or printing ``--help``, loads no torch.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DataError", "UserError"]


class ConfigError(ValueError):
    """A bad configuration value; ``str(err)`` is one line naming the field and what is allowed."""


class DataError(RuntimeError):
    """A data set is missing or unusable; the message says what to put where."""


class UserError(Exception):
    """A bad command line (a flag, a path, a name); printed as one line, exit 2."""
