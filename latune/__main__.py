"""``python -m latune COMMAND``: entry point only; the command line is latune.cli.main."""

if __name__ == "__main__":
    from latune.cli.main import main

    raise SystemExit(main(prog="python -m latune"))
