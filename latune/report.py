"""``python -m latune.report``: entry point only; the command is latune.cli.report."""

if __name__ == "__main__":
    from latune.cli.report import main

    raise SystemExit(main())
