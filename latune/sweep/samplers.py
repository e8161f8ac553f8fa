"""The Optuna samplers of ``algorithm: optuna`` sweeps, sized to the sweep's number of trials (optuna only).

Optuna's defaults suit hundreds of trials; latune's sweeps run tens. ``NSGAIISampler``'s default population of
50 never completes a first generation in 16 or 48 trials, so it is random search, and its constraints, read
only when parents are chosen, never steer anything. Here every model-based sampler starts modelling after a
quarter of the trials (at least 4, at most Optuna's 10), and NSGA-II's population is a quarter of the trials,
so a sweep sees four generations. ``benchmarks/replay_search.py`` compares them on the recorded benchmark, with
this very function, and docs/search.md says which won at which budget.

Constraints reach the samplers through ``Trial.set_constraint`` (Optuna >= 5), or, on Optuna 4, through
``constraints_func`` (latune.sweep.optuna_search passes one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optuna

from latune.registry import SAMPLERS

__all__ = ["make_sampler", "startup_trials", "population_size", "SAMPLERS"]


def startup_trials(num_samples: int) -> int:
    """Random trials before a model-based sampler models: a quarter of the trials, from 4 to Optuna's 10."""
    return max(4, min(10, num_samples // 4))


def population_size(num_samples: int) -> int:
    """NSGA-II's population: a quarter of the trials (at least 4), so a sweep runs about four generations."""
    return max(4, num_samples // 4)


def make_sampler(name: str, *, seed: int, num_samples: int,
                 constraints_func: Callable[[optuna.trial.FrozenTrial], Sequence[float]] | None = None
                 ) -> optuna.samplers.BaseSampler:
    """The sampler ``name`` (one of SAMPLERS) for a study of ``num_samples`` trials."""
    options: dict[str, Any] = {"seed": seed}
    if constraints_func is not None and name != "random":
        options["constraints_func"] = constraints_func
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population_size(num_samples), **options)
    if name == "tpe":
        return optuna.samplers.TPESampler(n_startup_trials=startup_trials(num_samples), multivariate=True,
                                          **options)
    if name == "gp":
        return optuna.samplers.GPSampler(n_startup_trials=startup_trials(num_samples), **options)
    if name == "random":
        return optuna.samplers.RandomSampler(**options)
    raise ValueError(f"unknown sampler {name!r}; allowed: {', '.join(SAMPLERS)}")
