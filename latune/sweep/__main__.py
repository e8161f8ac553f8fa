"""``python -m latune.sweep NAME``: entry point only; the command is latune.cli.sweep."""

if __name__ == "__main__":
    from latune.cli.sweep import main

    raise SystemExit(main())
