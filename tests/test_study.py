"""benchmarks/study_mnist_paper_table.py: the stratified split, the settings it reads from latune's config and the
sweep file, the per-radius sweep copy, and ``--tables-only`` (the reports and README tables from the results files
alone) on small hand-made files; and, where the MNIST test files are (developers' and CI machines only; latune
never depends on them), ``--small`` end to end: split, paper_table sweep, results files and reports."""

import gzip
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from latune.config import PRESETS
from latune.sweep.spec import grid_points, load_sweep

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "benchmarks" / "study_mnist_paper_table.py"
SOURCE = ROOT.parent / "shared" / "data" / "mnist-test"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("study_mnist_paper_table", STUDY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_split_is_stratified_at_every_size(study):
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(10), [80, 90, 100, 110, 120] * 2))
    for train_images, test_images in ((40, 20), (400, 200), (800, 200)):
        train, test = study.split_indices(labels, train_images, test_images, seed=0)
        assert len(train) == train_images and len(test) == test_images and not set(train) & set(test)
        assert list(train) == sorted(train) and list(test) == sorted(test)
        share = np.bincount(labels, minlength=10) / len(labels)
        for part, size in ((train, train_images), (test, test_images)):
            counts = np.bincount(labels[part], minlength=10)
            assert np.all(np.abs(counts - share * size) <= 1), (size, counts)  # each class to within one image


def test_settings_come_from_the_config_and_the_sweep_file(study):
    raw = yaml.safe_load((ROOT / "sweeps" / "paper_table.yaml").read_text())
    assert study.PRESET_EPS == PRESETS["mnist"]["attack.eps"]
    assert study.PRESET_EPOCHS == PRESETS["mnist"]["optim.epochs"]
    assert study.sweep_seeds(raw) == [0, 1, 2]
    args = study._arguments(["--out", "x"])
    assert args.seeds == [0, 1, 2] and args.radii == [study.PRESET_EPS, 0.1]
    assert args.audit_seeds is None and args.audit_images == 1000  # every trial, latune audit's 1,000 images
    assert study._arguments(["--out", "x", "--audit-seeds", "0,2"]).audit_seeds == [0, 2]


def test_the_sweep_copy_of_another_radius_has_its_delta_eps_arm_there(study, tmp_path):
    assert study.sweep_file([0, 1, 2], study.PRESET_EPS, tmp_path) == "paper_table"
    path = study.sweep_file([0], 0.1, tmp_path)
    spec = load_sweep(path, data="mnist", overrides={"attack.eps": "0.1", "eval.eps": "0.1"})
    points = {(p["la.mode"], p["la.delta"]) for p in grid_points(spec)}
    assert points == {("la", 0.0), ("la", 0.03), ("augment_only", 0.0), ("la", 0.1)}  # δ = ε = 0.1
    assert {p["seed"] for p in grid_points(spec)} == {0}


def _trial(trial_id, eps, delta, mode, seed):
    return {"trial_id": trial_id, "status": "TERMINATED", "seed": seed, "attack.eps": eps, "la.delta": delta,
            "la.mode": mode, "la.transform_set": "augmix_ops", "test_clean_acc": 0.9, "test_robust_acc": 0.5,
            "test_clean_class_error_mean": 0.1, "test_robust_class_error_mean": 0.5,
            "test_robust_class_error_sd": 0.1}


def _results(folder: Path) -> None:
    """A study.json, results table and outcomes file as the study keeps them: Adv, Adv+aug-only, Adv+ δ=ε, two
    seeds, 300 test images shared by all."""
    rng = np.random.default_rng(1)
    labels = np.arange(300) % 10
    rows, arrays = [], {}
    for name, delta, mode, accuracy in (("a", 0.0, "la", 0.5), ("g", 0.0, "augment_only", 0.55),
                                        ("e", 0.3, "la", 0.7)):
        for seed in (0, 1):
            trial = f"{name}{seed}"
            rows.append(_trial(trial, 0.3, delta, mode, seed))
            arrays.update({f"{trial}.labels": labels, f"{trial}.num_classes": np.array(10),
                           f"{trial}.test_set": np.array("images-300-x"),
                           f"{trial}.clean_correct": rng.random(300) < 0.7 + 0.03 * labels,  # class gaps: SD > 0
                           f"{trial}.robust_correct": rng.random(300) < accuracy})
    folder.mkdir()
    pd.DataFrame(rows).to_parquet(folder / "results-eps0.3.parquet")
    np.savez_compressed(folder / "outcomes-eps0.3.npz", **arrays)
    reports = {trial: {"clean_acc": 0.9, "warnings": [],
                       "attacks": {"pgd40": {"robust_acc": 0.5}, "apgd-ce": {"robust_acc": 0.48}}}
               for trial in ("a0", "a1", "g0", "g1", "e0")}  # e1 not audited (an interrupted audit)
    reports["e0"] = {"clean_acc": 0.9, "warnings": ["possible gradient masking: apgd-ce 0.600 below pgd40"],
                     "attacks": {"pgd40": {"robust_acc": 0.7}, "apgd-ce": {"robust_acc": 0.1}}}
    (folder / "audit-eps0.3.json").write_text(json.dumps({"attacks": ["pgd40", "apgd-ce"], "images": 1000,
                                                          "steps": None, "split": "test", "reports": reports}))
    (folder / "study.json").write_text(json.dumps({"bootstrap": 100, "radii": [
        {"eps": 0.3, "results": "results-eps0.3.parquet", "outcomes": "outcomes-eps0.3.npz",
         "audit": "audit-eps0.3.json"}]}))


@pytest.mark.slow
def test_tables_only_writes_the_reports_and_tables_from_the_results_files(tmp_path):
    results = tmp_path / "results"
    _results(results)
    done = subprocess.run([sys.executable, str(STUDY), "--tables-only", "--results", str(results)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["written"] == ["report-eps0.3.md", "tables.md"]
    report = (results / "report-eps0.3.md").read_text()
    assert report.startswith("# paper_table on MNIST, ε = 0.3") and "100 bootstrap replicates" in report
    for arm, index in (("Adv+aug-only", 1), ("Adv+ δ=ε", 2)):
        assert re.search(rf"\n{re.escape(arm)} #{index} against Adv #0: test-image intervals exclude 0 for ", report)
    tables = (results / "tables.md").read_text()
    assert tables.startswith("<!-- generated by `python benchmarks/study_mnist_paper_table.py --tables-only`")
    assert "\n## ε = 0.3\n" in tables and "\n### 95% intervals\n" in tables and "\n#### PGD-40\n" in tables
    assert report.split("\n", 1)[1].strip().splitlines()[0] in tables  # the report's body, one heading level down
    detect = tables.split("### What this study can detect\n")[1].split("###")[0]
    for arm in ("Adv+aug-only", "Adv+ δ=ε"):  # each arm against Adv, clean and PGD-40, with both sizes (2 seeds)
        for figure in ("clean SD", "PGD-40 SD"):
            row = next(line for line in detect.splitlines() if line.startswith(f"| {arm} | Adv | {figure} | "))
            assert re.fullmatch(r"\| .+ \| [+-]\d+\.\d% \[[+-]\d+\.\d, [+-]\d+\.\d\] \| ±\d+\.\d% \| "
                                r"±\d+\.\d% \(2 seeds\) \| (yes|no) \|", row), row
    audit = tables.split("### Audit: pgd40, apgd-ce on the first 1000 test images\n")[1]
    assert "| Adv | 0 | a0 | 90.0 | 50.0 | 48.0 | +2.0 | none |" in audit
    assert "| Adv+ δ=ε | 0 | e0 | 90.0 | 70.0 | 10.0 | +60.0 | possible gradient masking" in audit
    assert "\nNot audited (1 of 6 trials): Adv+ δ=ε seed 1.\n" in audit
    again = subprocess.run([sys.executable, str(STUDY), "--tables-only", "--results", str(results)],
                           capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert again.returncode == 0 and (results / "tables.md").read_text() == tables  # reproducible
    missing = subprocess.run([sys.executable, str(STUDY), "--tables-only", "--results", str(tmp_path)],
                             capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert missing.returncode == 1 and "has no study.json" in missing.stderr


def _idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(data[3])]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * data[3]).reshape(dims)


@pytest.mark.slow
@pytest.mark.skipif(not (SOURCE / "t10k-images-idx3-ubyte.gz").is_file(), reason=f"no MNIST test files in {SOURCE}")
def test_small_study_splits_mnist_runs_paper_table_and_reports_intervals(tmp_path):
    # a few minutes on an idle 2-core machine; the timeout leaves room for a busy one
    done = subprocess.run([sys.executable, str(STUDY), "--out", str(tmp_path), "--small"], capture_output=True,
                          text=True, timeout=1800, cwd=tmp_path, env={**os.environ, "RAY_ADDRESS": "local"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["images"] == {"train": 400, "test": 200} and summary["seeds"] == [0]

    # the split: disjoint-by-construction files in MNIST's layout, both parts with every class
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    train, test = _idx(raw / "train-labels-idx1-ubyte.gz"), _idx(raw / "t10k-labels-idx1-ubyte.gz")
    assert len(train) == 400 and len(test) == 200 and _idx(raw / "t10k-images-idx3-ubyte.gz").shape == (200, 28, 28)
    assert set(train.tolist()) == set(test.tolist()) == set(range(10))

    results = tmp_path / "results"
    assert summary["written"] == ["report-eps0.3.md", "tables.md"]
    assert {"results-eps0.3.parquet", "outcomes-eps0.3.npz", "study.json"} <= {p.name for p in results.iterdir()}
    text = (results / "report-eps0.3.md").read_text()
    # Standard, Standard+LA, Adv, Adv+ δ=0.03, Adv+aug-only, Adv+ δ=ε: one seed each
    assert "6 of 6 trials finished" in text and "test split" in text
    intervals = text.split("## 95% intervals")[1]
    # --small evaluates with PGD-5
    assert "| 2 | Adv | 1 |" in intervals and "PGD-5 worst-class acc" in intervals
    assert "corr. err SD debiased" in intervals
    for arm in ("Adv+aug-only", "Adv+ δ=0.03", "Adv+ δ=ε"):
        assert re.search(rf"\n{re.escape(arm)} #\d against Adv #2: test-image intervals exclude 0 for ", intervals)
    assert "[" in intervals.split("### Changes: PGD-5")[1]  # the changes have intervals

    # the audit: every trial, PGD-40 and APGD-CE (3 steps at --small) on the first 40 test images
    audit = json.loads((results / "audit-eps0.3.json").read_text())
    assert audit["attacks"] == ["pgd40", "apgd-ce"] and audit["images"] == 40 and audit["steps"] == 3
    table = pd.read_parquet(results / "results-eps0.3.parquet")
    assert set(audit["reports"]) == set(table["trial_id"].astype(str))
    for report in audit["reports"].values():
        assert report["images"] == 40 and set(report["attacks"]) == {"pgd40", "apgd-ce"}
        assert report["attacks"]["apgd-ce"]["robust_acc"] <= report["clean_acc"]
    assert (results / "tables.md").read_text().count(" | 0 | ") >= 6  # one audit row per trial

    # the same command again resumes: nothing is trained or audited again, the figures are kept
    again = subprocess.run([sys.executable, str(STUDY), "--out", str(tmp_path), "--small"], capture_output=True,
                           text=True, timeout=600, cwd=tmp_path, env={**os.environ, "RAY_ADDRESS": "local"})
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads(again.stdout.strip().splitlines()[-1])
    assert resumed["radii"][0]["sweep_s"] == summary["radii"][0]["sweep_s"]
    assert json.loads((results / "audit-eps0.3.json").read_text()) == audit
    assert not list(tmp_path.glob("*.resumed.sweep.log"))  # no sweep was started again
