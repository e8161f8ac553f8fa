"""``python -m latune.pareto``: entry point only; the command is latune.cli.pareto."""

if __name__ == "__main__":
    from latune.cli.pareto import main

    raise SystemExit(main())
