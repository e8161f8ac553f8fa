"""latune.sweep.samplers: Optuna's samplers sized to a sweep's trials, and each one running a constrained study."""

import warnings

import optuna
import pytest

from latune.registry import SAMPLERS
from latune.sweep.samplers import make_sampler, population_size, startup_trials


@pytest.mark.parametrize(("trials", "population", "startup"), [(16, 4, 4), (48, 12, 10), (8, 4, 4), (400, 100, 10)])
def test_samplers_are_sized_to_the_sweep(trials, population, startup):
    # Optuna's NSGA-II default (50) never completes a first generation in 16 or 48 trials: random search
    assert population_size(trials) == population and startup_trials(trials) == startup
    assert make_sampler("nsga2", seed=0, num_samples=trials)._population_size == population
    assert make_sampler("tpe", seed=0, num_samples=trials)._n_startup_trials == startup


def test_nsga2_leaves_its_first_generation_within_a_16_trial_sweep():
    """With the sized population, a 16-trial study makes children (a trial whose generation is > 0)."""
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler("nsga2", seed=0, num_samples=16))
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)), n_trials=16)
    generations = {t.system_attrs["NSGAIISampler:generation"] for t in study.trials}
    assert generations == {0, 1, 2, 3}, generations  # Optuna default: {0}


# gp fits a Gaussian process for each trial: seconds
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "gp" else n for n in SAMPLERS])
def test_every_sampler_runs_a_constrained_categorical_study(name):
    """Three objectives, categorical choices (as the replay asks), constraints by Trial.set_constraint."""
    def objective(trial):
        x = trial.suggest_categorical("x", [0.0, 0.25, 0.5, 0.75, 1.0])
        kind = trial.suggest_categorical("kind", ["a", "b"])
        trial.set_constraint("robust>=0.2", 0.2 - x)
        return 1 - x, x + (kind == "a") * 0.1, abs(x - 0.5)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GPSampler and multivariate TPE are experimental
        study = optuna.create_study(directions=["maximize", "maximize", "minimize"],
                                    sampler=make_sampler(name, seed=1, num_samples=16))
        study.optimize(objective, n_trials=10)
    assert len(study.trials) == 10 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def test_an_unknown_sampler_names_the_allowed_ones():
    with pytest.raises(ValueError, match="unknown sampler 'cmaes'; allowed: nsga2, tpe, gp, random"):
        make_sampler("cmaes", seed=0, num_samples=16)
