"""``latune COMMAND [ARGS...]`` (the console script; also ``python -m latune``): runs one command's ``main``
with the rest of the command line, so ``latune sweep NAME`` is ``python -m latune.sweep NAME``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "available_commands", "main"]

# command -> (its module, whose main(argv) runs it; one line for latune --help). A module that is not there
# (a command still being written) is left out of the list.
COMMANDS: dict[str, tuple[str, str]] = {
    "sweep": ("latune.cli.sweep", "run a named sweep on Ray Tune with Optuna, tracked in MLflow"),
    "train": ("latune.cli.train", "train one model (PGD adversarial training + label augmentation)"),
    "audit": ("latune.cli.audit", "audit a model or a sweep's Pareto front with stronger attacks"),
    "report": ("latune.cli.report", "write the paper-style report of a finished sweep"),
    "sync": ("latune.cli.sync", "backfill MLflow from a sweep's Tune files"),
    "pareto": ("latune.cli.pareto", "print a sweep's Pareto front (MLflow or its folder); --plot draws it"),
    "cluster": ("latune.cli.cluster", "the Ray cluster that runs sweeps (cluster.yaml)"),
}


def available_commands() -> dict[str, tuple[str, str]]:
    """COMMANDS whose module exists (found without importing it)."""
    return {name: entry for name, entry in COMMANDS.items() if importlib.util.find_spec(entry[0]) is not None}


def _help(prog: str, commands: dict[str, tuple[str, str]]) -> str:
    width = max(map(len, commands))
    rows = [f"  {name:<{width}}  {text}" for name, (_, text) in commands.items()]
    return "\n".join([f"usage: {prog} COMMAND [ARGS...]", "",
                      "Sweeps of adversarial training with label augmentation (arXiv 2503.16179).", "",
                      "commands:", *rows, "",
                      "examples:",
                      f"  {prog} sweep delta_eps_grid --set optim.epochs=2 --dry-run   # check a small sweep",
                      f"  {prog} sweep delta_eps_grid --set optim.epochs=2              # run it: front.* beside "
                      "results.parquet",
                      f"  {prog} pareto delta_eps_grid                                  # its front, from MLflow", "",
                      f"{prog} COMMAND --help shows a command's options and examples; {prog} --version its version.",
                      "Bad input: one error line and exit status 2, nothing written."])


def main(argv: Sequence[str] | None = None, prog: str = "latune") -> int:
    """Run ``argv[0]``'s command with ``argv[1:]`` and return its exit status; ``--help`` lists the commands.
    No command: the list on stderr, status 2; an unknown one: one ``error:`` line, status 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    commands = available_commands()
    if args and args[0] in ("-h", "--help"):
        print(_help(prog, commands))
        return 0
    if args and args[0] == "--version":
        import latune

        print(f"latune {latune.__version__}")
        return 0
    if not args:
        print(_help(prog, commands), file=sys.stderr)
        return 2
    if args[0] not in commands:
        print(f"error: unknown command {args[0]!r}; allowed: {', '.join(commands)}", file=sys.stderr)
        return 2
    return importlib.import_module(commands[args[0]][0]).main(args[1:])
