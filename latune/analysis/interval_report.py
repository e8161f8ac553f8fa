"""The report's 95% intervals: each trial's ``test_outcomes.npz`` found in its Tune trial folder, bootstrapped per
setting and per change (latune.analysis.intervals), with a seed-level test of each change
(latune.analysis.seed_tests, Holm-adjusted over the report), rendered as Markdown tables and one verdict per
change that says what its intervals and its tests cover."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from latune.analysis.intervals import (DEFAULT_REPLICATES, Interval, resampling_group, runs_from_outcomes,
                                       setting_intervals)
from latune.analysis.results import trial_folders
from latune.analysis.verdicts import change_lines, measure_change
from latune.core.outcomes import OUTCOMES_FILE, read_outcomes

__all__ = ["find_outcomes", "save_trial_outcomes", "load_trial_outcomes", "interval_lines", "KINDS", "FIGURE_LABELS"]

# (per-image outcome kind, its label in the tables)
KINDS = (("clean_correct", "clean"), ("robust_correct", "{pgd}"), ("corruption_correct", "corr."))
# (figure of latune.analysis.class_figures, column label, shown with an interval)
FIGURE_LABELS = (("class_error_mean", "err mean", True), ("class_error_sd", "err SD plug-in", False),
                 ("class_error_sd_debiased", "err SD debiased", True), ("class_error_cv", "SD/mean", True),
                 ("worst_class_acc", "worst-class acc", True))


def find_outcomes(experiment: str | Path, trial_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Trial id -> its outcome arrays (latune.core.outcomes), for the trials whose Tune folder under
    ``experiment`` holds a readable test_outcomes.npz; others are left out."""
    found: dict[str, dict[str, Any]] = {}
    for trial_id in map(str, trial_ids):
        for folder in map(Path, trial_folders(experiment, trial_id)):
            if (folder / OUTCOMES_FILE).is_file():
                try:
                    found[trial_id] = read_outcomes(folder / OUTCOMES_FILE)
                except ValueError:
                    continue
                break
    return found


def save_trial_outcomes(path: str | Path, found: Mapping[str, Mapping[str, Any]]) -> None:
    """find_outcomes' trial id -> outcome arrays as one compressed npz (``TRIAL.ARRAY`` keys), e.g. to commit a
    study's per-image outcomes beside its results table; load_trial_outcomes reads it back."""
    import numpy as np

    np.savez_compressed(path, **{f"{trial}.{key}": np.asarray(value)
                                 for trial, arrays in found.items() for key, value in arrays.items()})


def load_trial_outcomes(path: str | Path) -> dict[str, dict[str, Any]]:
    """Trial id -> its outcome arrays (latune.core.outcomes layout), from save_trial_outcomes' file."""
    import numpy as np

    found: dict[str, dict[str, Any]] = {}
    with np.load(path) as data:
        for name in data.files:
            trial, _, key = name.rpartition(".")
            found.setdefault(trial, {})[key] = data[name]
    for arrays in found.values():
        arrays["num_classes"], arrays["test_set"] = int(arrays["num_classes"]), str(arrays["test_set"])
    return found


def _by_seed(trials: Iterable[tuple[str, int]], outcomes: Mapping[str, Mapping[str, Any]]) -> dict[int, Any]:
    return {seed: outcomes[trial] for trial, seed in trials if trial in outcomes}


def _value(value: float, figure: str) -> str:
    if not math.isfinite(value):
        return "–"
    return f"{value:.2f}" if figure == "class_error_cv" else f"{value * 100:.1f}"


def _cell(i: Interval | None, figure: str, with_interval: bool) -> str:
    if i is None or not math.isfinite(i.estimate):
        return "–"
    if not with_interval:
        return _value(i.estimate, figure)
    return f"{_value(i.estimate, figure)} [{_value(i.low, figure)}, {_value(i.high, figure)}]"


def _setting_intervals(seeds: Mapping[int, Any], replicates: int) -> dict[str, dict[str, Interval]]:
    """kind -> figure -> interval of one setting, for the kinds its outcome files hold."""
    if not seeds:
        return {}
    classes = next(iter(seeds.values()))["num_classes"]
    return {kind: setting_intervals(runs, classes, replicates=replicates)
            for kind, _ in KINDS if (runs := runs_from_outcomes(seeds, kind))}


def _test_sets(seeds: Mapping[Any, Mapping[int, Any]]) -> int:
    return len({resampling_group(run) for s in seeds.values() for run in runs_from_outcomes(s, "clean_correct")})


def interval_lines(settings: pd.DataFrame, pairs: Sequence[tuple[int, int]],
                   outcomes: Mapping[str, Mapping[str, Any]], *, pgd_label: str,
                   replicates: int = DEFAULT_REPLICATES) -> list[str]:
    """Markdown lines of the intervals sections. ``settings`` as latune.analysis.report.setting_table gives it
    (its ``trials`` column: (trial id, seed) pairs); ``pairs``: (setting, reference setting) of each change."""
    seeds = {index: _by_seed(row["trials"], outcomes) for index, row in settings.iterrows()}
    found = {index: _setting_intervals(s, replicates) for index, s in seeds.items()}
    kinds = [(kind, label.format(pgd=pgd_label)) for kind, label in KINDS if any(kind in f for f in found.values())]
    lines = ["", "## 95% intervals", ""]
    if not kinds:
        return lines + [f"No trial of this sweep left a {OUTCOMES_FILE} (per-image test outcomes, written by "
                        "latune since intervals were added): no intervals.", ""]
    sets = _test_sets(seeds)
    lines += [f"Point estimate [95% interval] in % (SD/mean as a ratio), test split, {replicates} bootstrap "
              "replicates over test images (scipy.stats.bootstrap). Runs tested on the same images -- every seed "
              "and arm of a sweep whose test split does not depend on the seed -- are resampled jointly, one draw of "
              f"images per replicate for all of them ({sets} test set{'s' if sets != 1 else ''} here, resampled "
              "independently of each other). The intervals cover test-image sampling for these trained models, not "
              "training randomness: the ± SD over seeds above and the seed-level tests below do. The plug-in SD (the "
              "figure above) is inflated by sampling noise in each class error and is shown without an interval; the "
              "debiased SD removes that noise (plug-in variance less (K−1)/K² Σ_k s²_k/n_k, s²_k the variance of "
              "class k's n_k per-image outcomes, clipped at 0) and SD/mean is debiased SD / mean. Class-wise error "
              "mean, debiased SD and SD/mean: estimate ± 1.96 bootstrap SE; worst-class accuracy: BCa interval "
              "(basic where BCa has none). n: seeds with per-image outcomes.", ""]
    for kind, label in kinds:
        heads = ["#", "method", "n", *(f"{label} {name}" for _, name, _ in FIGURE_LABELS)]
        lines += [f"### {label}", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        for index, row in settings.iterrows():
            figures = found[index].get(kind, {})
            cells = [_cell(figures.get(f), f, shown) for f, _, shown in FIGURE_LABELS]
            lines.append("| " + " | ".join([str(index), row["role"], str(len(seeds[index])), *cells]) + " |")
        lines.append("")
    changes = [measure_change(p, a, settings.loc[p, "role"], settings.loc[a, "role"], seeds[p], seeds[a], kinds,
                              replicates) for p, a in pairs if seeds.get(p) and seeds.get(a)]
    shown = sum(1 for by_kind in found.values() for _ in by_kind for _, _, interval in FIGURE_LABELS if interval)
    return lines + change_lines(changes, kinds, [f for f, _, _ in FIGURE_LABELS],
                                {f: name for f, name, _ in FIGURE_LABELS}, settings_intervals=shown)
