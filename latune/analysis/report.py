"""The paper-style report of a finished sweep: ``python -m latune.report SWEEP``.

For each setting of the sweep (its trials grouped by config, seeds pooled) and its arm, named by its settings --
Standard (ε = 0) or Adv (ε > 0) without transformations, ``+aug-only`` (la.mode augment_only: the LA
transformations with plain labels), ``Adv+ δ=0.03`` / ``Standard+LA δ=0.03`` (label augmentation; ``δ=ε`` where δ
equals the training radius, the paper's coupling rule) -- a Markdown table of clean, PGD and (when the trials
evaluated corruptions) corruption class-wise error mean and SD, mean ± SD over seeds, then the relative changes
of each arm against the arm without transformations that differs from it only in the la.* keys: every Adv arm
against Adv, every Standard arm against Standard (the paper's headline figures are the relative drops of mean
PGD-40 class-wise error and of class-wise SD). Figures come from the held-out test split (``test_*`` columns of
results.parquet), else from validation (the split the sweep chose on); the report says which.
With the trials' per-image test outcomes (``outcomes``), 95% bootstrap intervals of each figure and of each
relative change follow, with a seed-level test of each change (latune.analysis.interval_report).
Writes ``report.md`` beside results.parquet and, unless --no-mlflow, logs it to the sweep's MLflow parent run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

__all__ = ["roles", "setting_table", "relative_changes", "render", "pgd_label"]

# (label, metric without split prefix, scale): accuracies and class-wise errors in percent
_COLUMNS = (
    ("clean acc", "clean_acc", 100), ("clean err mean", "clean_class_error_mean", 100),
    ("clean err SD", "clean_class_error_sd", 100), ("{pgd} acc", "robust_acc", 100),
    ("{pgd} err mean", "robust_class_error_mean", 100), ("{pgd} err SD", "robust_class_error_sd", 100),
    ("{pgd} worst-class acc", "robust_worst_class_acc", 100),  # beside the SD: what FRL and CFOL compare
    ("corr. err mean", "corruption_class_error_mean", 100), ("corr. err SD", "corruption_class_error_sd", 100),
    ("mCE", "mce", 100),
)
# what the relative-change table compares (the paper's headline figures first)
_CHANGES = (
    ("{pgd} err mean", "robust_class_error_mean"), ("{pgd} err SD", "robust_class_error_sd"),
    ("clean err mean", "clean_class_error_mean"), ("clean err SD", "clean_class_error_sd"),
    ("corr. err mean", "corruption_class_error_mean"), ("corr. err SD", "corruption_class_error_sd"),
)
_IGNORED_KEYS = {"seed", "data.data_dir", "eval.corruptions_dir", "eval.corruption_baseline", "device"}


def _config_keys(table: pd.DataFrame) -> list[str]:
    from latune.config import Config, to_flat

    known = set(to_flat(Config()))
    return [c for c in table.columns if c in known and c not in _IGNORED_KEYS]


def _resolved(table: pd.DataFrame) -> list[Any]:
    """Each trial's resolved config (presets filled), in table order."""
    from latune.config import from_flat, resolve

    keys = _config_keys(table) + (["seed"] if "seed" in table else [])
    return [resolve(from_flat({k: _plain(row[k]) for k in keys if _present(row[k])})) for _, row in table.iterrows()]


def _arm(config: Any) -> str:
    """The arm's name from its settings: Standard or Adv, then +aug-only, or + (Adv) / +LA (Standard) with δ."""
    family = "Standard" if config.attack.eps == 0 else "Adv"
    if config.augment_only:
        return f"{family}+aug-only"
    if not config.la_active:
        return family
    eps, delta = config.attack.eps, config.la.delta
    value = "ε" if eps > 0 and math.isclose(delta, eps, rel_tol=1e-6) else f"{delta:g}"
    return f"Adv+ δ={value}" if family == "Adv" else f"Standard+LA δ={value}"


def roles(table: pd.DataFrame) -> pd.Series:
    """The arm of each trial (Standard, Adv, Adv+aug-only, Adv+ δ=0.03, Adv+ δ=ε, Standard+LA δ=0.03, ...),
    from its resolved config (presets filled)."""
    return pd.Series([_arm(c) for c in _resolved(table)], index=table.index, name="role")


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays (list-valued keys) from parquet
        return value.tolist()
    return value


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value)) and not (
        isinstance(value, str) and value in ("None", "nan"))


def _split_prefix(table: pd.DataFrame) -> str:
    return "test_" if "test_robust_acc" in table and table["test_robust_acc"].notna().any() else ""


def setting_table(table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """One row per setting of the finished trials: role (its arm's name), baseline (no transformations: the
    reference of its family), config, n (seeds), trials ((trial id, seed) pairs) and mean/SD of each metric;
    Standard before Adv, by radius, each baseline first.

    Returns (table, split prefix used: "test_" or "").
    """
    finished = table[table["status"] == "TERMINATED"].copy()
    prefix = _split_prefix(finished)
    keys = _config_keys(finished)
    configs = _resolved(finished)
    finished["role"] = [_arm(c) for c in configs]
    finished["_family"] = [int(c.attack.eps > 0) for c in configs]  # Standard first
    finished["_eps"] = [c.attack.eps for c in configs]
    finished["_kind"] = [2 if c.la_active else 1 if c.augment_only else 0 for c in configs]  # baseline first
    finished["_setting"] = finished[keys].astype(str).agg("|".join, axis=1) if keys else ""
    rows = []
    for _, group in finished.groupby("_setting", sort=False):
        first = group.iloc[0]
        row: dict[str, Any] = {"role": first["role"], "baseline": bool(first["_kind"] == 0),
                               **{k: first[k] for k in keys}, "n": len(group),
                               "seeds": ",".join(str(s) for s in sorted(group["seed"])) if "seed" in group else "",
                               "trials": [(str(t), int(group["seed"][i]) if "seed" in group else 0)
                                          for i, t in group["trial_id"].items()],
                               "_order": (first["_family"], first["_eps"], first["_kind"])}
        for _, metric, _scale in _COLUMNS:
            column = prefix + metric
            values = group[column].dropna() if column in group else pd.Series(dtype=float)
            row[metric] = values.mean() if len(values) else math.nan
            row[f"{metric}_sd"] = values.std(ddof=1) if len(values) > 1 else math.nan
        rows.append(row)
    out = pd.DataFrame(rows)
    if not out.empty:
        out = out.sort_values(by="_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    return out, prefix


def relative_changes(settings: pd.DataFrame, *, standard: bool = False) -> pd.DataFrame:
    """Each Adv arm (``standard``: each Standard arm) with transformations against the baseline of its family (no
    transformations) equal to it except for the la.* keys: relative change (arm - baseline) / baseline of each
    class-wise figure (negative = a drop, what LA aims for). Columns setting, against, role and the metrics."""
    la_keys = {c for c in settings.columns if c.startswith("la.")}
    shared = [c for c in settings.columns if "." in c and c not in la_keys and not c.endswith("_sd")]
    family = settings["role"].str.startswith("Standard") if standard else settings["role"].str.startswith("Adv")
    reference = settings[family & settings["baseline"]]
    rows = []
    for index, treated in settings[family & ~settings["baseline"]].iterrows():
        match = reference[[all(str(a[c]) == str(treated[c]) for c in shared) for _, a in reference.iterrows()]]
        if match.empty:
            continue
        base = match.iloc[0]
        row: dict[str, Any] = {"setting": index, "against": int(match.index[0]), "role": treated["role"]}
        for _, metric in _CHANGES:
            ref, value = base[metric], treated[metric]
            row[metric] = (value - ref) / ref if _present(ref) and _present(value) and ref != 0 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(mean: Any, sd: Any, scale: float) -> str:
    if not _present(mean):
        return "–"
    text = f"{mean * scale:.1f}"
    return text + (f" ± {sd * scale:.1f}" if _present(sd) else "")


_NAMED = (("attack.eps", "ε"), ("la.mode", "mode"), ("la.delta", "δ"), ("la.transform_set", "set"), ("la.m", "M"),
          ("la.p", "p"))


def _describe(row: pd.Series, varying: Sequence[str]) -> str:
    """ε, δ, set, M, p where the trials set them, then any other key that differs between settings."""
    named = dict(_NAMED)
    parts = []
    for key in [*named, *(k for k in varying if k not in named)]:
        if key in row and _present(row[key]):
            value = row[key]
            parts.append(f"{named.get(key, key)}={value:.4g}" if isinstance(value, float) else
                         f"{named.get(key, key)}={value}")
    return ", ".join(parts)


def render(table: pd.DataFrame, *, title: str, pgd_label: str = "PGD-40",
           outcomes: Mapping[str, Mapping[str, Any]] | None = None, replicates: int = 1000) -> str:
    """The Markdown report of a results table (latune.results layout); with ``outcomes`` (trial id -> per-image
    test outcomes, latune.analysis.interval_report.find_outcomes) and ``replicates`` > 0 also its intervals."""
    settings, prefix = setting_table(table)
    split = ("held-out test split (test_* columns; the sweep's objectives and Pareto front use the validation "
             "split)" if prefix == "test_" else "validation split (no trial has test-split figures)")
    lines = [f"# {title}", "",
             f"{int((table['status'] == 'TERMINATED').sum())} of {len(table)} trials finished; figures on the "
             f"{split}, in %, mean ± SD over seeds (n = seeds). Class-wise error: mean and SD of the K "
             "per-class error rates. corr.: under common corruptions (pooled over corruptions and severities); "
             "mCE: mean corruption error.", ""]
    if settings.empty:
        return "\n".join(lines + ["No finished trial: nothing to report.", ""])
    varying = [c for c in settings.columns if "." in c and not c.endswith("_sd")
               and settings[c].astype(str).nunique() > 1]
    measured = [c for c in _COLUMNS if settings[c[1]].notna().any()]  # e.g. no corruption columns without them
    headers = ["#", "method", "setting", "n"] + [label.format(pgd=pgd_label) for label, _, _ in measured]
    lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for index, row in settings.iterrows():
        cells = [str(index), row["role"], _describe(row, varying) or "–", str(row["n"])]
        cells += [_cell(row[metric], row[f"{metric}_sd"], scale) for _, metric, scale in measured]
        lines.append("| " + " | ".join(cells) + " |")
    changes = relative_changes(settings)
    lines += ["", "## Adv arms against Adv", ""]
    if changes.empty:
        lines.append("No Adv arm with transformations has an Adv setting that differs from it only in the la.* keys.")
    else:
        lines.append("Relative change (arm − Adv) / Adv of the mean over seeds; negative = a drop.")
        lines += _change_table(changes, ("#", "arm", "Adv #"), pgd_label)
    standard = relative_changes(settings, standard=True)
    if not standard.empty:  # transformations without adversarial training: shown only when the sweep ran both
        lines += ["", "## Standard arms against Standard", "",
                  "Relative change (arm − Standard) / Standard of the mean over seeds, all trained without attacks."]
        lines += _change_table(standard, ("#", "arm", "Standard #"), pgd_label)
    if outcomes is not None and replicates > 0:
        from latune.analysis.interval_report import interval_lines

        lines += interval_lines(settings, [*_pairs(changes), *_pairs(standard)], outcomes, pgd_label=pgd_label,
                                replicates=replicates)
    return "\n".join(lines).rstrip("\n") + "\n"


def _pairs(changes: pd.DataFrame) -> list[tuple[int, int]]:
    return [(int(r["setting"]), int(r["against"])) for _, r in changes.iterrows()] if not changes.empty else []


def _change_table(changes: pd.DataFrame, heads: tuple[str, str], pgd_label: str) -> list[str]:
    """Markdown lines of a relative-change table (relative_changes' rows), percent with sign."""
    compared = [c for c in _CHANGES if changes[c[1]].notna().any()]
    lines = ["", "| " + " | ".join([*heads, *(label.format(pgd=pgd_label) for label, _ in compared)]) + " |",
             "|" + "---|" * (len(compared) + 3)]
    for _, row in changes.iterrows():
        cells = [str(int(row["setting"])), row["role"], str(int(row["against"]))]
        cells += ["–" if not _present(row[m]) else f"{row[m] * 100:+.1f}%" for _, m in compared]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def pgd_label(table: pd.DataFrame) -> str:
    steps = {int(s) for s in table.get("eval.steps", pd.Series(dtype=float)).dropna()} or {40}
    return f"PGD-{steps.pop()}" if len(steps) == 1 else "PGD"
