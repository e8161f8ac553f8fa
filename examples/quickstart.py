"""Quickstart: a sweep from Python, as a notebook would run it. Load a shipped sweep, shrink it to two tiny
trials, run it on a local Ray without MLflow, and read its Pareto front from the outcome's table.

    python examples/quickstart.py                    # about a minute on a laptop's CPU; writes runs/
    python examples/quickstart.py --storage /tmp/runs

The same sweep at full size is ``latune sweep delta_eps_grid``; docs/cli.md describes the API.
"""

from __future__ import annotations

import argparse
import dataclasses

import latune

# two digits trials of seconds each: 1 epoch on 128 training images, PGD-1 while training, PGD-2 on 64
# evaluation images. Accuracies this small mean nothing; the run shows the whole path.
TINY = {"optim.epochs": 1, "data.limit_train": 128, "eval.max_images": 64, "eval.steps": 2, "attack.steps": 1,
        "attack.eps": 0.1}  # pinning attack.eps leaves la.delta the only searched key


def run(storage: str = "runs") -> latune.SweepOutcome:
    """Run the tiny sweep under ``storage``; print and return its outcome."""
    spec = latune.load_sweep("delta_eps_grid", data="digits", overrides=TINY)
    # of the grid's δ values (all validated by load_sweep), keep two: plain adversarial training and LA at 0.3
    spec = dataclasses.replace(spec, space=tuple(dataclasses.replace(d, values=(0.0, 0.3)) for d in spec.space))
    outcome = latune.run_sweep(spec, storage=storage, mlflow=False, verbose=0)

    table = outcome.table  # results.parquet's rows: one per trial, pareto_rank 0 = the front
    front = table[table["pareto_rank"] == 0]
    print(front[["trial_id", "la.delta", *spec.objectives]].to_string(index=False))
    print(f"{len(front)} of {len(table)} trials on the front; results: {outcome.results_path}")
    print("front files:", *outcome.front_files)
    return outcome


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default="runs", help="where the experiment folder goes (default ./runs)")
    run(parser.parse_args().storage)
