"""latune.report: settings, arms and relative changes on a hand-made table with known answers, the intervals'
verdicts, and the CLI on a tiny real sweep (Standard, Adv and Adv+ with corruption evaluation) including the MLflow
artifact."""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml

from latune.analysis.report import relative_changes, render, roles, setting_table


def _trial(trial_id, eps, delta, seed, robust_mean, robust_sd, clean_mean=0.1, status="TERMINATED", mode="la"):
    return {"trial_id": trial_id, "status": status, "attack.eps": eps, "la.delta": delta, "seed": seed, "la.mode": mode,
            "la.transform_set": "augmix_ops", "test_clean_acc": 1 - clean_mean,
            "test_clean_class_error_mean": clean_mean, "test_clean_class_error_sd": 0.02,
            "test_robust_acc": 1 - robust_mean, "test_robust_class_error_mean": robust_mean,
            "test_robust_class_error_sd": robust_sd, "robust_acc": 0.0}


@pytest.fixture
def table():
    return pd.DataFrame([
        _trial("s0", 0.0, 0.0, 0, 0.9, 0.05), _trial("s1", 0.0, 0.0, 1, 0.9, 0.05),
        _trial("a0", 0.1, 0.0, 0, 0.40, 0.20), _trial("a1", 0.1, 0.0, 1, 0.50, 0.10),
        _trial("p0", 0.1, 0.2, 0, 0.36, 0.12), _trial("p1", 0.1, 0.2, 1, 0.36, 0.06),
        _trial("x", 0.1, 0.2, 2, 0.0, 0.0, status="ERROR"),  # failed trials stay out of every figure
    ])


def test_arms_are_named_by_their_settings(table):
    assert list(roles(table)) == ["Standard", "Standard", "Adv", "Adv", *["Adv+ δ=0.2"] * 3]
    # LA with no transformation set is the Adv baseline, whatever delta says
    no_set = table.assign(**{"la.transform_set": "none"})
    assert list(roles(no_set))[4] == "Adv"
    arms = pd.DataFrame([_trial("g", 0.1, 0.0, 0, 0.4, 0.2, mode="augment_only"), _trial("e", 0.1, 0.1, 0, 0.4, 0.2),
                         _trial("q", 0.0, 0.03, 0, 0.9, 0.05), _trial("d", 0.1, 0.03, 0, 0.4, 0.2)])
    # δ equal to the training radius is the paper's coupling rule: named δ=ε
    assert list(roles(arms)) == ["Adv+aug-only", "Adv+ δ=ε", "Standard+LA δ=0.03", "Adv+ δ=0.03"]


def test_settings_pool_seeds_with_mean_and_sample_sd(table):
    settings, prefix = setting_table(table)
    assert prefix == "test_"
    assert list(settings["role"]) == ["Standard", "Adv", "Adv+ δ=0.2"] and list(settings["n"]) == [2, 2, 2]
    adv = settings.iloc[1]
    assert adv["robust_class_error_mean"] == pytest.approx(0.45)
    assert adv["robust_class_error_mean_sd"] == pytest.approx(math.sqrt(2 * 0.05**2))  # ddof=1 of 0.40, 0.50
    assert adv["robust_class_error_sd"] == pytest.approx(0.15)
    assert math.isnan(adv["mce"])  # no corruption columns in this table


def test_relative_changes_known_answer(table):
    settings, _ = setting_table(table)
    changes = relative_changes(settings)
    assert len(changes) == 1 and int(changes.iloc[0]["setting"]) == 2 and int(changes.iloc[0]["against"]) == 1
    # PGD class-wise error mean 0.45 -> 0.36: -20%; SD 0.15 -> 0.09: -40%; clean unchanged: 0%
    assert changes.iloc[0]["robust_class_error_mean"] == pytest.approx(-0.2)
    assert changes.iloc[0]["robust_class_error_sd"] == pytest.approx(-0.4)
    assert changes.iloc[0]["clean_class_error_mean"] == pytest.approx(0.0)


def test_adv_plus_is_only_compared_with_the_adv_of_the_same_eps(table):
    other_eps = table.assign(**{"attack.eps": [0.0, 0.0, 0.2, 0.2, 0.1, 0.1, 0.1]})
    assert relative_changes(setting_table(other_eps)[0]).empty
    assert "No Adv arm with transformations has an Adv setting" in render(other_eps, title="t")


def test_render_markdown(table):
    text = render(table, title="demo", pgd_label="PGD-40")
    assert text.startswith("# demo") and "6 of 7 trials finished" in text and "test split" in text
    assert "figures on the held-out test split" in text  # says which split (the sweep chose on validation)
    validation_only = table.drop(columns=[c for c in table if c.startswith("test_")])
    assert "figures on the validation split" in render(validation_only, title="v")
    assert "| 1 | Adv | ε=0.1, mode=la, δ=0, set=augmix_ops | 2 | 90.0 ± 0.0 | 10.0 ± 0.0 | 2.0 ± 0.0 | " \
           "55.0 ± 7.1 | 45.0 ± 7.1 | 15.0 ± 7.1 |" in text
    assert "| 2 | Adv+ δ=0.2 | 1 | -20.0% | -40.0% | +0.0% | +0.0% |" in text
    assert "corr. err" not in text and "mCE" not in text.split("\n\n", 2)[2]  # no corruption figures: no columns


def test_standard_with_la_is_compared_with_standard_without(table):
    with_la = pd.concat([table, pd.DataFrame([_trial("q0", 0.0, 0.2, 0, 0.81, 0.04),
                                              _trial("q1", 0.0, 0.2, 1, 0.81, 0.04)])], ignore_index=True)
    settings, _ = setting_table(with_la)
    assert list(settings["role"]) == ["Standard", "Standard+LA δ=0.2", "Adv", "Adv+ δ=0.2"]
    assert list(settings["baseline"]) == [True, False, True, False]
    standard = relative_changes(settings, standard=True)
    # PGD class-wise error mean 0.9 -> 0.81: -10%; SD 0.05 -> 0.04: -20%
    assert len(standard) == 1 and (int(standard.iloc[0]["setting"]), int(standard.iloc[0]["against"])) == (1, 0)
    assert standard.iloc[0]["robust_class_error_mean"] == pytest.approx(-0.1)
    assert standard.iloc[0]["robust_class_error_sd"] == pytest.approx(-0.2)
    assert list(relative_changes(settings)["setting"]) == [3]  # the Adv+ pair is unchanged by the Standard rows
    text = render(with_la, title="t")
    assert "## Standard arms against Standard" in text and "| 1 | Standard+LA δ=0.2 | 0 | -10.0% | -20.0% |" in text
    assert "## Standard arms" not in render(table, title="t")  # no Standard setting with LA: no section
    outcomes = {t: _outcomes(a, s) for t, a, s in (("s0", 0.1, 0), ("s1", 0.1, 1), ("q0", 0.1, 0), ("q1", 0.1, 1))}
    intervals = render(with_la, title="t", outcomes=outcomes, replicates=100).split("## 95% intervals")[1]
    # each seed's Standard and Standard+LA outcomes are identical: every change exactly 0, on every seed
    verdict = next(line for line in intervals.splitlines() if line.startswith("Standard+LA δ=0.2 #1 against"))
    assert verdict.startswith("Standard+LA δ=0.2 #1 against Standard #0: test-image intervals exclude 0 for no "
                              "figure; they include 0 for clean err mean, ")
    assert verdict.endswith("Across 2 seeds (paired t-test, Holm over 8 tests): no change holds (smallest p=1).")


def _outcomes(accuracy, seed, n=1000):
    """Per-image outcomes of a model right on each image with probability ``accuracy`` (same test images for
    every seed, as latune's test splits are)."""
    labels = np.arange(n) % 10
    rng = np.random.default_rng(seed + int(accuracy * 1000))
    correct = rng.random(n) < accuracy
    return {"labels": labels, "num_classes": 10, "clean_correct": correct, "robust_correct": correct}


def test_render_with_outcomes_has_intervals_and_says_which_changes_are_clear(table):
    # Adv robust error ~0.5, Adv+ ~0.25 (a clear drop); clean the same, so its change is not clear
    outcomes = {t: _outcomes(a, s) for t, a, s in (("s0", 0.1, 0), ("s1", 0.1, 1), ("a0", 0.5, 0), ("a1", 0.5, 1),
                                                  ("p0", 0.75, 0), ("p1", 0.75, 1))}
    for trial in ("a0", "a1", "p0", "p1"):
        outcomes[trial]["clean_correct"] = outcomes["a0" if trial in ("a0", "p0") else "a1"]["clean_correct"]
    text = render(table, title="demo", pgd_label="PGD-40", outcomes=outcomes, replicates=200)
    intervals = text.split("## 95% intervals")[1]
    assert "200 bootstrap replicates" in intervals and "| 1 | Adv | 2 |" in intervals
    assert "| PGD-40 err SD plug-in | PGD-40 err SD debiased | PGD-40 SD/mean | PGD-40 worst-class acc |" in intervals
    assert "corr. err" not in intervals  # no corruption outcomes: no such columns
    words = [line for line in intervals.splitlines() if line.startswith("Adv+ δ=0.2 #2 against Adv #1:")]
    assert len(words) == 1
    clear = re.search(r"test-image intervals exclude 0 for (.*?); they include 0 for (.*?)\.", words[0])
    assert clear, words[0]
    drop = float(clear.group(1).split("PGD-40 err mean (")[1].split("%")[0])  # robust error 0.5 -> 0.25: about -50%
    assert drop == pytest.approx(-50, abs=6)
    assert "clean err mean" in clear.group(2) and "clean err mean" not in clear.group(1)
    # each Adv+ / Adv pair of seeds had identical clean outcomes: a zero-width interval at 0
    assert "+0.0% [+0.0, +0.0]" in intervals
    # what the intervals cover, how many there are, and the seed-level tests' family
    assert "Each interval covers test-image sampling only" in intervals
    assert re.search(r"this report computed 24 intervals of settings and \d+ of changes", intervals)
    assert "Holm-adjusted over the 8 tests of this report" in intervals
    assert "Across 2 seeds (paired t-test, Holm over 8 tests): " in words[0]


def test_arms_of_paper_table_are_each_compared_with_adv():
    """Adv, Adv+aug-only, Adv+ δ=0.03, Adv+ δ=ε and the Standard arms: every Adv arm against Adv, the Standard arm
    with LA against Standard, each with its seed-level test; a change of every seed's outcomes holds."""
    rows, outcomes = [], {}
    arms = (("s", 0.0, 0.0, "la", 0.1), ("q", 0.0, 0.03, "la", 0.1), ("a", 0.3, 0.0, "la", 0.5),
            ("g", 0.3, 0.0, "augment_only", 0.5), ("d", 0.3, 0.03, "la", 0.5), ("e", 0.3, 0.3, "la", 0.5))
    for name, eps, delta, mode, accuracy in arms:
        for seed in range(3):
            rows.append(_trial(f"{name}{seed}", eps, delta, seed, 1 - accuracy, 0.1, mode=mode))
            outcomes[f"{name}{seed}"] = _outcomes(accuracy, seed)
    first = np.arange(1000) < 200
    for seed in range(3):  # Adv wrong on the first 200 images, δ = ε right on them: the same drop on every seed
        outcomes[f"a{seed}"]["robust_correct"] = outcomes[f"a{seed}"]["robust_correct"] & ~first
        outcomes[f"e{seed}"]["robust_correct"] = outcomes[f"a{seed}"]["robust_correct"] | first
    table = pd.DataFrame(rows)
    settings, _ = setting_table(table)
    assert list(settings["role"]) == ["Standard", "Standard+LA δ=0.03", "Adv", "Adv+aug-only", "Adv+ δ=0.03",
                                      "Adv+ δ=ε"]
    assert [(int(r["setting"]), int(r["against"])) for _, r in relative_changes(settings).iterrows()] == [
        (3, 2), (4, 2), (5, 2)]
    text = render(table, title="t", outcomes=outcomes, replicates=100)
    for arm, index, reference, against in (("Adv+aug-only", 3, "Adv", 2), ("Adv+ δ=0.03", 4, "Adv", 2),
                                           ("Adv+ δ=ε", 5, "Adv", 2), ("Standard+LA δ=0.03", 1, "Standard", 0)):
        assert f"\n{arm} #{index} against {reference} #{against}: test-image intervals" in text
    verdict = next(line for line in text.splitlines() if line.startswith("Adv+ δ=ε #5 against Adv #2:"))
    assert "Across 3 seeds (paired t-test, Holm over 32 tests): the change holds for PGD-40 err mean (p=" in verdict


def test_render_without_outcome_files_says_so(table):
    text = render(table, title="demo", outcomes={}, replicates=100)
    assert "no intervals" in text.split("## 95% intervals")[1]
    assert "## 95% intervals" not in render(table, title="demo")  # no outcomes given: the report as before


@pytest.mark.slow
def test_report_cli_on_a_tiny_real_sweep(tmp_path):
    """Standard and Standard+LA (one seed each), Adv and Adv+ (2 seeds each: the seed-level test) with noise
    corruptions at two severities; the report has every role, the corruption columns filled, and is attached to
    the sweep's MLflow parent run."""
    from mlflow import MlflowClient

    sweep = tmp_path / "mini.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "mini", "description": "report test",
        "base": {"optim.epochs": 1, "data.limit_train": 128, "eval.max_images": 64, "eval.steps": 3,
                 "attack.steps": 2, "eval.corruptions": "noise", "eval.corruption_severities": [1, 5]},
        # a list of grids: 6 trials, not the 8 of one grid with both seeds of the Standard arms too
        "space": [{"attack.eps": [0.0], "la.delta": [0.0, 0.2], "seed": [0]},
                  {"attack.eps": [0.1], "la.delta": [0.0, 0.2], "seed": [0, 1]}],
        "search": {"algorithm": "grid"}, "resources": {"cpu": 1, "gpu": 0},
        "objectives": {"clean_acc": "max", "robust_acc": "max", "mce": "min"}}))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env_args = ["--tracking-uri", uri, "--verbose", "0"]
    done = subprocess.run([sys.executable, "-m", "latune.sweep", str(sweep), *env_args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = subprocess.run([sys.executable, "-m", "latune.report", "mini", "--tracking-uri", uri], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-3000:]
    text = report.stdout
    assert "6 of 6 trials finished" in text and "figures on the held-out test split" in text
    for role in ("Standard", "Adv", "Adv+ δ=0.2", "Standard+LA δ=0.2"):
        assert f"| {role} |" in text
    assert "## Adv arms against Adv" in text and "%" in text.split("## Adv arms against Adv")[1]
    assert "## Standard arms against Standard" in text  # the sweep trained Standard with δ = 0.2 too
    table = pd.read_parquet(next(tmp_path.glob("runs/mini-digits-*/results.parquet")))
    for column in ("test_mce", "test_ce_gaussian_noise_s5", "test_ce_noise", "mce", "corruption_class_error_sd"):
        assert table[column].notna().all(), column
    # one figure checked by hand: the Adv+ seeds' mean test mCE, in %, is in the table's mCE column
    plus = table[(table["attack.eps"] > 0) & (table["la.delta"] > 0)]
    assert f"{plus['test_mce'].mean() * 100:.1f} ±" in text
    assert (next(tmp_path.glob("runs/mini-digits-*")) / "report.md").read_text() in text
    # every trial left its per-image test outcomes in its Tune folder: the report has intervals for every setting
    assert len(list(tmp_path.glob("runs/mini-digits-*/*/test_outcomes.npz"))) == 6
    intervals = text.split("## 95% intervals")[1]
    assert "1000 bootstrap replicates" in intervals and "corr. worst-class acc" in intervals
    assert re.search(r"\nAdv\+ δ=0\.2 #\d+ against Adv #\d+: test-image intervals exclude 0 for ", intervals)
    assert "\nStandard+LA δ=0.2 #1 against Standard #0: test-image intervals exclude 0 for " in intervals
    client = MlflowClient(uri)
    parents = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                 "tags.`latune.role` = 'sweep'")
    assert len(parents) == 1
    assert [a.path for a in client.list_artifacts(parents[0].info.run_id) if a.path == "report.md"]


def test_report_cli_errors(tmp_path):
    done = subprocess.run([sys.executable, "-m", "latune.report", "nothing-here"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "SWEEP" in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_report_finds_a_sweep_under_latune_storage_and_creates_no_mlflow_store(table, tmp_path, monkeypatch, capsys):
    from latune.cli.report import main

    folder = tmp_path / "store" / "mine-digits-20260101-120000"
    folder.mkdir(parents=True)
    table.to_parquet(folder / "results.parquet")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LATUNE_STORAGE", str(tmp_path / "store"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["mine-digits", "--bootstrap", "0"]) == 0
    out = capsys.readouterr().out
    assert f"wrote {folder / 'report.md'}" in out and (folder / "report.md").is_file()
    assert f"no MLflow store at {tmp_path / 'mlflow.db'}: not logged" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # no mlflow.db made by the lookup
    monkeypatch.setenv("LATUNE_STORAGE", str(tmp_path / "elsewhere"))
    assert main(["mine-digits"]) == 2
    assert f"no sweep with runs under {tmp_path / 'elsewhere'}" in capsys.readouterr().err.replace("nor a sweep",
                                                                                                    "no sweep")
