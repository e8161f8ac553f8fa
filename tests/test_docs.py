"""The docs: the site builds with ``mkdocs build --strict`` (links and anchors checked), its configuration page
lists every config key, its figures are copied in; every flag of every ``latune`` command is documented, and
every flag a documented ``latune`` command line uses exists; README.md stays a short front door."""

from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from latune.cli.main import COMMANDS
from latune.config import describe_keys

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 160
_MAIN_FLAGS = {"--help", "--version"}  # latune's own (latune.cli.main reads them without argparse)
# a latune command line: `python -m latune[.X] ...` or `latune COMMAND ...`; not latune.X in prose, not a path
# (~/latune), not a name given to another tool (aws ... --repository-name latune --force)
_INVOCATION = re.compile(r"python -m latune(?:\.[a-z_]+)*(?=\s)|(?<![\w./=-])latune(?=\s+(?:"
                         + "|".join([*COMMANDS, *_MAIN_FLAGS]) + r")(?![\w-]))")
# where a command's own words end: a shell comment, the end of a code span or table cell, the next shell command
_COMMAND_END = re.compile(r"\s#|`|\||'|\"|;|&&|\)")
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


class _Captured(Exception):
    """Raised instead of parsing: the parser a command's main() built."""


def _command_parser(module_name: str) -> argparse.ArgumentParser:
    """The ArgumentParser of a latune.cli module: its ``_parser()``, else the one its ``main`` builds, caught at
    ``parse_args`` before the command runs."""
    module = importlib.import_module(module_name)
    if hasattr(module, "_parser"):
        return module._parser()
    built: list[argparse.ArgumentParser] = []

    def capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> None:
        built.append(self)
        raise _Captured

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", capture)
        with pytest.raises(_Captured):
            module.main([])
    return built[0]


def _option_strings(parser: argparse.ArgumentParser) -> Iterator[str]:
    for action in parser._actions:
        yield from action.option_strings
        if isinstance(action, argparse._SubParsersAction):  # latune cluster check|doctor
            for subparser in action.choices.values():
                yield from _option_strings(subparser)


@pytest.fixture(scope="module")
def cli_flags() -> dict[str, set[str]]:
    """command -> its long flags (subcommands' included), --help left out."""
    return {name: {flag for flag in _option_strings(_command_parser(module)) if flag.startswith("--")} - {"--help"}
            for name, (module, _) in COMMANDS.items()}


def _command_lines(text: str) -> Iterator[str]:
    """The lines of code blocks and tables, and the code spans of prose: where command lines are written."""
    in_block = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
        elif in_block or line.lstrip().startswith("|"):
            yield line
        else:
            yield from re.findall(r"`[^`]+`", line)


def documented_flags(text: str) -> list[tuple[str, str]]:
    """(flag, line) for each --flag written after a latune invocation, up to where that command's words end."""
    found = []
    for line in _command_lines(text):
        for match in _INVOCATION.finditer(line):
            tail = line[match.end():]
            end = _COMMAND_END.search(tail)
            found += [(flag, line.strip()) for flag in _FLAG.findall(tail[:end.start() if end else None])]
    return found


def flag_table_flags(text: str) -> list[tuple[str, str]]:
    """(flag, row) for each --flag in the first cell of a table whose header starts ``| flag |``."""
    found, in_table = [], False
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else []
        in_table = bool(cells) and (cells[0] == "flag" or in_table)
        if in_table and cells[0] != "flag":
            found += [(flag, line.strip()) for flag in _FLAG.findall(cells[0])]
    return found


def test_documented_flags_reads_only_latune_command_lines():
    lines = [
        "```sh",
        "python -m latune.sweep pareto --data cifar10 --resume   # continue with --nothing",
        "ray job submit --address http://127.0.0.1:8265 --no-wait -- python -m latune.sweep pareto --gpu 0.25",
        "mlflow ui --backend-store-uri sqlite:///mlflow.db",
        "ray exec cluster.yaml 'python -m latune.cluster doctor --gpu worker' --port-forward 5000",
        "latune pareto x | python -m latune.pareto y --experiment z",
        "aws ecr delete-repository --repository-name latune --force; cd ~/latune --x",
        "```",
        "| `latune sweep NAME` | `--max-concurrent N` | prose --not-a-command |",
        "Prose with `latune train --quiet` and `pip install --upgrade pip` and --loose flags.",
        "`latune.train` reads --out.",
    ]
    assert [flag for flag, _ in documented_flags("\n".join(lines))] == [
        "--data", "--resume", "--gpu", "--gpu", "--experiment", "--quiet"]


def test_site_builds_strict_with_every_config_key_and_the_figures(tmp_path):
    site = tmp_path / "site"
    quiet = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # Material's end-of-life banner, not a build warning
    build = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)], cwd=ROOT,
                           capture_output=True, text=True, check=False, timeout=600, env=quiet)
    assert build.returncode == 0, build.stdout + build.stderr
    configuration = (site / "configuration" / "index.html").read_text()
    assert "config-keys" not in configuration  # the hook replaced its marker
    missing = [key for key, _, _ in describe_keys() if f"<code>{key}</code>" not in configuration]
    assert not missing, f"configuration page lacks config keys {missing}"
    figures = (site / "figures" / "index.html").read_text()
    images = re.findall(r'<img[^>]* src="\.\./(benchmarks/[^"]+\.png)"', figures)
    assert images, "the figures page shows no benchmark PNG"
    for image in images:
        assert (site / image).read_bytes() == (ROOT / image).read_bytes(), image
    assert not list(site.glob("**/hooks.py")) and not list(site.glob("**/__pycache__"))


def test_every_flag_of_every_command_is_documented(cli_flags):
    docs = "\n".join(page.read_text() for page in PAGES)
    written = set(_FLAG.findall(docs))
    missing = {name: sorted(flags - written) for name, flags in cli_flags.items() if flags - written}
    assert not missing, f"flags not documented in README.md or docs/*.md: {missing}"


def test_every_documented_flag_of_a_latune_command_exists(cli_flags):
    known = set().union(*cli_flags.values()) | _MAIN_FLAGS
    stale = [(page.name, flag, line) for page in PAGES
             for flag, line in [*documented_flags(page.read_text()), *flag_table_flags(page.read_text())]
             if flag not in known]
    assert not stale, f"documented flags that no latune command has: {stale}"


def test_documented_command_lines_are_found():
    """The check above reads real command lines: README's smoke sweep and the MLflow page's examples."""
    readme = {flag for flag, _ in documented_flags((ROOT / "README.md").read_text())}
    assert {"--set", "--dry-run"} <= readme
    mlflow = {flag for flag, _ in documented_flags((ROOT / "docs" / "mlflow.md").read_text())}
    assert {"--tracking-uri", "--no-mlflow", "--parquet"} <= mlflow


@pytest.mark.parametrize(("page", "command"), [("sweeps.md", "sweep"), ("cli.md", "train"), ("metrics.md", "audit")])
def test_a_commands_flag_table_lists_all_its_flags(page, command, cli_flags):
    table = {flag for flag, _ in flag_table_flags((ROOT / "docs" / page).read_text())}
    assert cli_flags[command] <= table, f"docs/{page}'s flag table lacks {sorted(cli_flags[command] - table)}"


def test_readme_is_a_short_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
    for page in re.findall(r"\]\((docs/[^)#]+\.md)", "\n".join(lines)):
        assert (ROOT / page).is_file(), page


def test_an_include_line_becomes_the_committed_file_and_a_missing_one_fails(tmp_path):
    sys.path.insert(0, str(ROOT / "docs"))
    try:
        hooks = importlib.import_module("hooks")
    finally:
        sys.path.remove(str(ROOT / "docs"))
    (tmp_path / "table.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    page = "Before.\n\n<!-- include: table.md -->\n\nAfter, `<!-- include: table.md -->` inline stays.\n"
    assert hooks.include_files(page, tmp_path) == (
        "Before.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\nAfter, `<!-- include: table.md -->` inline stays.\n")
    with pytest.raises(FileNotFoundError, match="docs include: gone.md does not exist"):
        hooks.include_files("<!-- include: gone.md -->\n", tmp_path)
