"""Sweeps on Ray Tune: sweep files (spec), the Tune run with Optuna (run), the trainable.
``python -m latune.sweep NAME`` runs latune.cli.sweep."""
