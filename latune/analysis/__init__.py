"""Pareto ranks and hypervolume (pure numpy), results.parquet, the paper-style report, plots."""
