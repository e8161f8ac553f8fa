"""The report's 95% intervals: each trial's ``test_outcomes.npz`` found in its Tune trial folder, bootstrapped
per setting (latune.analysis.intervals), rendered as Markdown tables and one sentence per Adv+/Adv pair saying
which changes are distinguishable from zero (their interval excludes 0)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from latune.analysis.intervals import DEFAULT_REPLICATES, Interval, change_intervals, runs_from_outcomes, \
    setting_intervals
from latune.analysis.results import trial_folders
from latune.core.outcomes import OUTCOMES_FILE, read_outcomes

__all__ = ["find_outcomes", "interval_lines", "FIGURES"]

# (label, per-image outcome kind, figure of latune.analysis.intervals): the report's headline figures
FIGURES = (
    ("clean err mean", "clean_correct", "class_error_mean"), ("clean err SD", "clean_correct", "class_error_sd"),
    ("clean worst-class acc", "clean_correct", "worst_class_acc"),
    ("{pgd} err mean", "robust_correct", "class_error_mean"), ("{pgd} err SD", "robust_correct", "class_error_sd"),
    ("{pgd} worst-class acc", "robust_correct", "worst_class_acc"),
    ("corr. err mean", "corruption_correct", "class_error_mean"),
    ("corr. err SD", "corruption_correct", "class_error_sd"),
    ("corr. worst-class acc", "corruption_correct", "worst_class_acc"),
)


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


def _by_seed(trials: Iterable[tuple[str, int]], outcomes: Mapping[str, Mapping[str, Any]]) -> dict[int, Any]:
    return {seed: outcomes[trial] for trial, seed in trials if trial in outcomes}


def _pct(value: float, signed: bool = False) -> str:
    return "–" if not math.isfinite(value) else f"{value * 100:+.1f}" if signed else f"{value * 100:.1f}"


def _cell(i: Interval, signed: bool = False) -> str:
    if not math.isfinite(i.estimate):
        return "–"
    unit = "%" if signed else ""
    return f"{_pct(i.estimate, signed)}{unit} [{_pct(i.low, signed)}, {_pct(i.high, signed)}]"


def _intervals(seeds: Mapping[int, Any], kinds: list[tuple[str, str, str]], replicates: int,
               reference: Mapping[int, Any] | None = None) -> dict[str, Interval]:
    """label -> interval of each figure (of the change against ``reference`` when given)."""
    if not seeds:
        return {}
    classes = next(iter(seeds.values()))["num_classes"]
    out: dict[str, Interval] = {}
    for kind in {k for _, k, _ in kinds}:
        runs = runs_from_outcomes(seeds, kind)
        base = runs_from_outcomes(reference, kind) if reference is not None else None
        if not runs or base == []:
            continue
        found = (change_intervals(runs, base, classes, replicates=replicates) if base is not None
                 else setting_intervals(runs, classes, replicates=replicates))
        out.update({label: found[figure] for label, k, figure in kinds if k == kind})
    return out


def interval_lines(settings: pd.DataFrame, changes: pd.DataFrame, outcomes: Mapping[str, Mapping[str, Any]], *,
                   pgd_label: str, replicates: int = DEFAULT_REPLICATES,
                   standard_changes: pd.DataFrame | None = None) -> list[str]:
    """Markdown lines of the intervals sections. ``settings`` as latune.analysis.report.setting_table gives it
    (its ``trials`` column: (trial id, seed) pairs), ``changes`` (Adv+ against Adv) and ``standard_changes``
    (Standard with LA against Standard) as relative_changes gives them."""
    seeds = {index: _by_seed(row["trials"], outcomes) for index, row in settings.iterrows()}
    kinds = [(label.format(pgd=pgd_label), kind, figure) for label, kind, figure in FIGURES]
    found = {index: _intervals(s, kinds, replicates) for index, s in seeds.items()}
    shown = [k for k in kinds if any(k[0] in f for f in found.values())]
    lines = ["", "## 95% intervals", ""]
    if not shown:
        return lines + [f"No trial of this sweep left a {OUTCOMES_FILE} (per-image test outcomes, written by "
                        "latune since intervals were added): no intervals.", ""]
    lines += [f"Point estimate [95% interval] in %, test split: bias-corrected (BC) percentile bootstrap over test "
              f"images ({replicates} replicates; each seed's images resampled independently, the seeds' figures "
              "averaged). The intervals cover test-image sampling for these trained models, not training randomness "
              "(the ± SD over seeds above shows that). SD and worst-class figures are biased by sampling noise in "
              "each class's error, and each resample once more; BC corrects the interval for that, so it can lie "
              "off-centre, even beside the estimate. "
              "n: seeds with per-image outcomes.", ""]
    heads = ["#", "method", "n"] + [label for label, _, _ in shown]
    lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for index, row in settings.iterrows():
        cells = [str(index), row["role"], str(len(seeds[index]))]
        lines.append("| " + " | ".join(cells + [_cell(found[index][label]) if label in found[index] else "–"
                                                for label, _, _ in shown]) + " |")
    lines += _change_lines(changes, seeds, shown, replicates, _ADV_PAIR)
    if standard_changes is not None:
        lines += _change_lines(standard_changes, seeds, shown, replicates, _STANDARD_PAIR)
    return lines


# (section title, its sentence, table heads, verdict names) of each kind of LA/no-LA pair
_ADV_PAIR = ("Adv+ against Adv", "Relative change (Adv+ − Adv) / Adv [95% interval], computed in each bootstrap "
             "replicate (a seed's Adv and Adv+ trials are resampled with the same test images).",
             ("Adv+ #", "Adv #"), ("Adv+", "Adv"))
_STANDARD_PAIR = ("Standard training: LA against none", "Relative change (LA − none) / none [95% interval] for "
                  "Standard training, computed in each bootstrap replicate (paired as above).",
                  ("LA #", "Standard #"), ("Standard with LA", "Standard"))


def _change_lines(changes: pd.DataFrame, seeds: Mapping[Any, Mapping[int, Any]], shown: list[tuple[str, str, str]],
                  replicates: int, pair: tuple[str, str, tuple[str, str], tuple[str, str]]) -> list[str]:
    pairs = [(int(r["setting"]), int(r["against"])) for _, r in changes.iterrows()] if not changes.empty else []
    pairs = [(p, a) for p, a in pairs if seeds.get(p) and seeds.get(a)]
    if not pairs:
        return [""]
    title, sentence, heads, names = pair
    lines = ["", f"### {title}, 95% intervals", "", sentence, ""]
    lines += ["| " + " | ".join([*heads, *(label for label, _, _ in shown)]) + " |",
              "|" + "---|" * (len(shown) + 2)]
    words = []
    for plus, against in pairs:
        found = _intervals(seeds[plus], shown, replicates, reference=seeds[against])
        cells = [_cell(found[label], signed=True) if label in found else "–" for label, _, _ in shown]
        lines.append("| " + " | ".join([str(plus), str(against), *cells]) + " |")
        words.append(_verdict(plus, against, {label: found[label] for label, _, _ in shown if label in found},
                              names))
    return lines + [""] + words + [""]


def _verdict(plus: int, against: int, found: Mapping[str, Interval], names: tuple[str, str]) -> str:
    """One sentence: which relative changes are distinguishable from zero (their interval excludes 0)."""
    measured = {label: i for label, i in found.items() if math.isfinite(i.estimate) and math.isfinite(i.low)}
    clear = [f"{label} ({_pct(i.estimate, True)}%)" for label, i in measured.items() if i.excludes_zero]
    unclear = [label for label, i in measured.items() if not i.excludes_zero]
    missing = [label for label in found if label not in measured]
    parts = [f"distinguishable from zero (interval excludes 0): {', '.join(clear)}." if clear else
             "no change is distinguishable from zero."]
    if unclear:
        parts.append(f"Not distinguishable from zero: {', '.join(unclear)}.")
    if missing:
        parts.append(f"No relative change (the {names[1]} figure is 0): {', '.join(missing)}.")
    return f"{names[0]} #{plus} against {names[1]} #{against}: " + " ".join(parts)
