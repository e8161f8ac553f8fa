"""``python -m latune.cluster init|check|policy|doctor``: entry point only; the command is latune.cli.cluster."""

from latune.cli.cluster import main

if __name__ == "__main__":
    raise SystemExit(main())
