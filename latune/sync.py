"""``python -m latune.sync``: entry point only; the command is latune.cli.sync."""

if __name__ == "__main__":
    from latune.cli.sync import main

    raise SystemExit(main())
