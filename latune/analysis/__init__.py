"""Pareto ranks and hypervolume (pure numpy), results.parquet, the paper-style report, plots, and the checkpoints a
run or sweep left behind (found and rebuilt for the audit)."""
