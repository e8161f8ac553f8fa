"""Command-line plumbing shared by latune's commands: the config flags and the overrides they make,
--set parsing, the config keys and examples for --help, errors blamed on the flag that caused them, and one-line
errors.

User errors (bad config values, missing data, a bad flag) print as one line on stderr and exit with status 2,
without a traceback, before anything is written: every latune command uses status 2 for bad input.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from latune.config import describe_keys
from latune.errors import ConfigError, DataError, UserError
from latune.files import write_json_atomic  # re-exported: the commands write their JSON with it

__all__ = ["UserError", "add_config_arguments", "config_overrides", "parse_overrides", "keys_help", "examples",
           "flag_sources", "blame_command_line", "missing_local_store", "guarded", "write_json_atomic",
           "EXIT_BAD_INPUT"]

EXIT_BAD_INPUT = 2  # every command's exit status for a bad command line, config value, path or missing data

# the flags that set config keys, by argparse dest: (flag, add_argument options without help, default help)
_CONFIG_FLAGS: dict[str, tuple[str, dict[str, Any], str]] = {
    "data": ("--data", {}, "data set (shortcut for --set data.name=...): digits, mnist, cifar10, cifar100, svhn, "
                           "imagefolder"),
    "data_dir": ("--data-dir", {}, "root of downloaded data sets (default $LATUNE_DATA or ~/.cache/latune/data)"),
    "overrides": ("--set", {"action": "append", "default": [], "metavar": "KEY=VALUE"},
                  "override a config key (repeatable), e.g. --set attack.eps=8/255"),
    "corruptions": ("--corruptions", {"metavar": "SPEC"}, "evaluate common corruptions after the last epoch "
                    "(eval.corruptions): all, a family (noise, blur, weather, digital) or names"),
    "corruptions_dir": ("--corruptions-dir", {"metavar": "DIR"}, "released CIFAR-10-C/-100-C .npy folder, used "
                        "for the test split instead of generated corruptions (eval.corruptions_dir)"),
}


def add_config_arguments(parser: argparse.ArgumentParser, only: Sequence[str] = tuple(_CONFIG_FLAGS),
                         **helps: str) -> None:
    """Add the flags that set config keys (--data, --data-dir, --set, --corruptions, --corruptions-dir), or only
    those whose dest is in ``only``; ``helps`` rewords a flag's help for one command, keyed by its dest.
    config_overrides turns the parsed flags into config keys."""
    unknown = sorted((set(only) | set(helps)) - set(_CONFIG_FLAGS))
    if unknown:
        raise ValueError(f"add_config_arguments: unknown flag dest {unknown[0]!r}; allowed: {', '.join(_CONFIG_FLAGS)}")
    for dest in only:
        flag, options, text = _CONFIG_FLAGS[dest]
        parser.add_argument(flag, dest=dest, help=helps.get(dest, text), **options)


def config_overrides(args: argparse.Namespace, *, data: bool = True) -> dict[str, Any]:
    """The flat config keys set by the flags of add_config_arguments: the --set pairs (strings, for config
    coercion), data.name from --data (``data=False`` leaves --data to the caller: the sweep passes it to
    load_sweep as the preset), eval.corruptions, and eval.corruptions_dir and data.data_dir as absolute paths
    (Tune's workers run elsewhere). data.data_dir: --data-dir, else $LATUNE_DATA unless --set names it.
    Raises UserError for a malformed --set."""
    given = vars(args)
    overrides: dict[str, Any] = parse_overrides(given.get("overrides") or [])
    if data and given.get("data"):
        overrides["data.name"] = given["data"]
    if given.get("corruptions"):
        overrides["eval.corruptions"] = given["corruptions"]
    if given.get("corruptions_dir"):
        overrides["eval.corruptions_dir"] = _absolute(given["corruptions_dir"])
    if given.get("data_dir"):
        overrides["data.data_dir"] = _absolute(given["data_dir"])
    elif os.environ.get("LATUNE_DATA"):
        overrides.setdefault("data.data_dir", _absolute(os.environ["LATUNE_DATA"]))
    return overrides


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


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


def examples(*lines: str) -> str:
    """An epilog block of example command lines (the parser needs RawDescriptionHelpFormatter to keep it)."""
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def flag_sources(args: argparse.Namespace) -> dict[str, str]:
    """Config key -> the command-line words that set it (``--set la.delta=2``, ``--data mnist``), for the flags
    of add_config_arguments."""
    given = vars(args)
    sources: dict[str, str] = {}
    for dest, key in (("data", "data.name"), ("corruptions", "eval.corruptions"),
                      ("corruptions_dir", "eval.corruptions_dir"), ("data_dir", "data.data_dir")):
        if given.get(dest):
            sources[key] = f"{_CONFIG_FLAGS[dest][0]} {given[dest]}"
    for pair in given.get("overrides") or []:
        sources[pair.partition("=")[0].strip()] = f"--set {pair}"
    return sources


def blame_command_line(message: str, sources: Mapping[str, str]) -> UserError:
    """A config error the command line caused, as one line led by the flag that set the first key the message
    names (``--set la.delta=2: la.delta: must be in [0, 1), got 2.0``), else by every config flag given: the
    user fixes the command line, not the sweep file or the recorded config the values went into."""
    named = [(match.start(), flag) for key, flag in sources.items()
             for match in [re.search(rf"(?<![\w.]){re.escape(key)}(?![\w.])", message)] if match]
    culprit = min(named)[1] if named else " ".join(sources.values())
    return UserError(f"{culprit}: {message}" if culprit else message)


def missing_local_store(tracking_uri: str) -> str | None:
    """The path of a local MLflow store (``sqlite:///PATH``, ``file://PATH``) that does not exist, else None.
    Reading from it would create it: a command that only reads refuses instead, leaving no file behind."""
    if tracking_uri.startswith("sqlite:///"):
        path = tracking_uri[len("sqlite:///"):].partition("?")[0]
        return None if path in ("", ":memory:") or os.path.exists(path) else path
    if tracking_uri.startswith("file:"):
        path = tracking_uri[len("file://"):] if tracking_uri.startswith("file://") else tracking_uri[5:]
        return None if os.path.exists(path) else path
    return None


def guarded(main: Callable[[], int]) -> int:
    """Run ``main``; user errors become one stderr line and exit status 2."""
    try:
        return main()
    except (ConfigError, DataError, UserError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
