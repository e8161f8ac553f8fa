"""The changes of the report's interval sections: each arm against its baseline, with the bootstrap interval of
every figure's relative change (test-image sampling) and a seed-level paired test of the tested figures (training
seeds), Holm-adjusted over every test of the report; rendered as tables and one verdict sentence per change."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from latune.analysis.intervals import Interval, change_intervals, runs_from_outcomes
from latune.analysis.seed_tests import SeedTest, holm, seed_test

__all__ = ["TESTED", "Change", "measure_change", "change_lines"]

# the figures with a seed-level test: the family Holm's correction runs over, with every kind of outcome
TESTED = ("class_error_mean", "class_error_sd_debiased", "class_error_cv", "worst_class_acc")
_INTERVALS = TESTED  # figures whose change gets an interval in the tables and the verdict (plug-in SD: point only)
_ALPHA = 0.05  # familywise error rate of the seed-level tests (Holm)


@dataclass(frozen=True)
class Change:
    """One arm against its baseline: intervals of every figure's relative change, seed tests of the tested ones."""

    setting: int  # the arm's row in the settings table
    against: int  # its baseline's row
    arm: str  # names, e.g. "Adv+ δ=0.03" and "Adv"
    reference: str
    seeds: int  # seeds both ran with per-image outcomes
    intervals: dict[tuple[str, str], Interval]  # (kind, figure) -> relative change with its interval
    tests: dict[tuple[str, str], SeedTest]  # (kind, figure) -> paired test over seeds, figures in TESTED


def measure_change(setting: int, against: int, arm: str, reference: str, treated: Mapping[int, Any],
                   base: Mapping[int, Any], kinds: Sequence[tuple[str, str]], replicates: int) -> Change:
    """The Change of ``treated`` against ``base`` (seed -> outcome arrays) for each kind both have."""
    classes = next(iter(treated.values()))["num_classes"]
    intervals: dict[tuple[str, str], Interval] = {}
    tests: dict[tuple[str, str], SeedTest] = {}
    for kind, _ in kinds:
        runs, reference_runs = runs_from_outcomes(treated, kind), runs_from_outcomes(base, kind)
        if not runs or not reference_runs:
            continue
        found = change_intervals(runs, reference_runs, classes, replicates=replicates)
        intervals.update({(kind, figure): i for figure, i in found.items()})
        tests.update({(kind, f): seed_test(runs, reference_runs, classes, f) for f in TESTED})
    return Change(setting, against, arm, reference, len(set(treated) & set(base)), intervals, tests)


def _pct(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{value * 100:+.1f}"


def _cell(i: Interval | None, p: float | None, with_interval: bool) -> str:
    if i is None or not math.isfinite(i.estimate):
        return "–"
    text = f"{_pct(i.estimate)}%" + (f" [{_pct(i.low)}, {_pct(i.high)}]" if with_interval else "")
    return text + (f" p={p:.2g}" if p is not None and math.isfinite(p) else "")


def change_lines(changes: Sequence[Change], kinds: Sequence[tuple[str, str]], figures: Sequence[str],
                 names: Mapping[str, str], *, settings_intervals: int) -> list[str]:
    """Markdown lines: what the intervals and tests cover, one table per kind of outcome, one verdict per change.
    ``figures``: the table columns, ``names`` their labels; ``settings_intervals``: how many intervals of single
    settings the report shows (for the count)."""
    if not changes:
        return [""]
    keys = [(c.setting, key) for c in changes for key in c.tests]
    adjusted = dict(zip(keys, holm([c.tests[key].p for c in changes for key in c.tests])))
    counted = sum(1 for c in changes for (_, f), i in c.intervals.items() if f in _INTERVALS and math.isfinite(i.low))
    family = sum(1 for p in adjusted.values() if math.isfinite(p))
    lines = ["## Changes against the baseline, 95% intervals and seed-level tests", "",
             "Relative change (arm − baseline) / baseline [95% interval] of each figure, computed in each bootstrap "
             "replicate with both arms' runs resampled jointly; negative = a drop (for worst-class accuracy a drop is "
             "worse). p: seed-level paired t-test over the seeds both arms ran (each seed's difference of the "
             f"figure on the same test images), Holm-adjusted over the {family} tests of this report.", "",
             f"What they cover. Each interval covers test-image sampling only, for these trained models, at 95% on "
             f"its own: this report computed {settings_intervals} intervals of settings and {counted} of changes, "
             f"and if no change were real about {counted / 20:.0f} of the {counted} change intervals would still "
             "exclude 0. Whether a change holds across training seeds is the seed-level test's question; Holm's "
             f"correction keeps the chance of any false claim among its {family} tests at {_ALPHA:.0%} or less.", ""]
    for kind, label in kinds:
        heads = ["#", "arm", "against #", *(f"{label} {names[f]}" for f in figures)]
        lines += [f"### Changes: {label}", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        for c in changes:
            cells = [_cell(c.intervals.get((kind, f)), adjusted.get((c.setting, (kind, f))), f in _INTERVALS)
                     for f in figures]
            lines.append("| " + " | ".join([str(c.setting), c.arm, str(c.against), *cells]) + " |")
        lines.append("")
    labels = {kind: label for kind, label in kinds}
    return lines + [_verdict(c, labels, names, adjusted, family) for c in changes] + [""]


def _verdict(change: Change, kinds: Mapping[str, str], names: Mapping[str, str],
             adjusted: Mapping[tuple[int, tuple[str, str]], float], family: int) -> str:
    """One paragraph: which intervals exclude 0 (test images), which changes hold across seeds (Holm)."""
    def label(key: tuple[str, str]) -> str:
        return f"{kinds[key[0]]} {names[key[1]]}"

    shown = {k: i for k, i in change.intervals.items() if k[1] in _INTERVALS and k[0] in kinds}
    measured = {k: i for k, i in shown.items() if math.isfinite(i.estimate) and math.isfinite(i.low)}
    out = [k for k, i in measured.items() if i.excludes_zero]
    within = [label(k) for k, i in measured.items() if not i.excludes_zero]
    missing = [label(k) for k in shown if k not in measured]
    text = [f"{change.arm} #{change.setting} against {change.reference} #{change.against}: test-image intervals "
            + (f"exclude 0 for {', '.join(f'{label(k)} ({_pct(measured[k].estimate)}%)' for k in out)}" if out
               else "exclude 0 for no figure")
            + (f"; they include 0 for {', '.join(within)}." if within else ".")]
    if missing:
        text.append(f"No interval (the {change.reference} figure is 0 in the data or in a replicate): "
                    f"{', '.join(missing)}.")
    p = {k: adjusted.get((change.setting, k), math.nan) for k in change.tests}
    holds = [k for k, value in p.items() if value < _ALPHA]
    where = f"Across {change.seeds} seeds (paired t-test, Holm over {family} tests)"
    if holds:
        text.append(f"{where}: the change holds for {', '.join(f'{label(k)} (p={p[k]:.2g})' for k in holds)}; "
                    "for no other figure.")
    else:
        finite = [value for value in p.values() if math.isfinite(value)]
        text.append(f"{where}: no change holds" + (f" (smallest p={min(finite):.2g})." if finite else
                                                   " (fewer than two seeds: no test)."))
    return " ".join(text) + "\n"
