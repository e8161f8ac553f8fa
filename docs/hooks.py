"""MkDocs hooks of latune's docs site (mkdocs.yml: ``hooks: [docs/hooks.py]``).

- ``on_files``: every ``benchmarks/**/*.png`` of the repository becomes a file of the site at the same path, so a
  page in ``docs/`` links ``benchmarks/NAME.png`` (as README.md does from the repository root) and ``--strict``
  finds the target; the PNGs stay where the benchmarks write them.
- ``on_page_markdown``: the line ``<!-- config-keys -->`` becomes the table of every config key, built from
  ``latune.config.describe_keys()``, so the documented keys, defaults and comments cannot drift from the code;
  and a line ``<!-- include: PATH -->`` (PATH from the repository root, e.g. a benchmark's committed table)
  becomes that file's text, so a page shows the table a benchmark wrote, never a copy condensed by hand.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

CONFIG_KEYS_MARKER = "<!-- config-keys -->"
INCLUDE = re.compile(r"^<!-- include: (\S+) -->$", re.MULTILINE)


def _repo_root(config: Any) -> Path:
    return Path(config.config_file_path).resolve().parent


def on_files(files: Files, config: Any) -> Files:
    root = _repo_root(config)
    for png in sorted((root / "benchmarks").glob("**/*.png")):
        uri = png.relative_to(root).as_posix()
        if files.get_file_from_path(uri) is None:  # a file of the same path in docs/ wins
            files.append(File(uri, src_dir=str(root), dest_dir=config.site_dir,
                              use_directory_urls=config.use_directory_urls))
    return files


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def config_keys_table() -> str:
    """Markdown: one table per config section (data, model, ...; then the top-level keys), a row per key."""
    from latune.config import describe_keys  # here, not at import: mkdocs loads this file before any page

    sections: dict[str, list[str]] = {}
    for key, default, comment in describe_keys():
        section = key.split(".", 1)[0] if "." in key else "top level"
        sections.setdefault(section, []).append(f"| `{key}` | `{_cell(default)}` | {_cell(comment)} |")
    parts = []
    for section, rows in sections.items():
        parts += [f"### {section}", "", "| key | default | meaning |", "|---|---|---|", *rows, ""]
    return "\n".join(parts)


def include_files(markdown: str, root: Path) -> str:
    """Each ``<!-- include: PATH -->`` line replaced by the text of ``root``/PATH (a missing file fails the build)."""
    def text(match: re.Match) -> str:
        path = root / match.group(1)
        if not path.is_file():
            raise FileNotFoundError(f"docs include: {match.group(1)} does not exist")
        return path.read_text().rstrip("\n")

    return INCLUDE.sub(text, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    markdown = include_files(markdown, _repo_root(config))
    if CONFIG_KEYS_MARKER not in markdown:
        return markdown
    return markdown.replace(CONFIG_KEYS_MARKER, config_keys_table())
