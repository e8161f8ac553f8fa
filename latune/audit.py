"""``python -m latune.audit``: entry point only; the command is latune.cli.audit."""

if __name__ == "__main__":
    from latune.cli.audit import main

    raise SystemExit(main())
