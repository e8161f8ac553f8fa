"""``python -m latune.train``: entry point only; the command is latune.cli.train."""

if __name__ == "__main__":
    from latune.cli.train import main

    raise SystemExit(main())
