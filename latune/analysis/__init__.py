"""Pareto ranks and hypervolume (pure numpy), results.parquet, the paper-style report (with bootstrap intervals of
class-wise figures and seed-level tests of its changes), plots, and the checkpoints a
run or sweep left behind (found and rebuilt for the audit)."""
