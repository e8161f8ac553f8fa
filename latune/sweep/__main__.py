"""``python -m latune.sweep NAME``: entry point only; the command is latune.cli.sweep."""

from latune.cli.sweep import main

if __name__ == "__main__":
    raise SystemExit(main())
