"""Study: the shipped ``paper_table`` sweep on real 28x28 MNIST digits, with the report's 95% intervals.

Does label augmentation narrow class gaps on MNIST, and is it the labels or the transformations? The script

1. splits the 10,000-image MNIST test set (t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, by default in
   ../shared/data/mnist-test: developers' and CI machines only, latune never depends on it) into 8,000 training
   and 2,000 test images, class-stratified and seeded, and writes both in MNIST's own file layout
   (``WORK/mnist/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``), so latune's own MNIST loader
   reads them (``--data mnist --data-dir WORK/mnist``: val is 15% of the 8,000, test the 2,000);
2. runs ``python -m latune.sweep`` of paper_table (Standard, Standard+LA, Adv, Adv+aug-only, Adv+ δ=0.03,
   Adv+ δ=ε) at each radius (the MNIST preset first), with ``optim.precision=bf16`` and
   ``model.channels_last=true``. A radius other than the preset pins ``attack.eps`` and ``eval.eps`` with
   ``--set``, which drops the sweep's Standard arms there (Standard training does not depend on ε: its models are
   the preset run's), and the sweep copy it runs has its δ = ε arm at that radius;
3. keeps what the README's tables need under RESULTS (default benchmarks/results/mnist_paper_table): per radius
   the sweep's results table (``results-eps<r>.parquet``) and every trial's per-image test outcomes in one
   compressed file (``outcomes-eps<r>.npz``), and ``study.json``; then writes from those files alone the report
   of each radius (``report-eps<r>.md``, latune.analysis.report with intervals) and ``tables.md``;
4. audits every trial with ``latune audit`` (torchattacks' PGD-40 and APGD-CE on the first ``--audit-images``
   test images): the K+M head and attacks on the LA target could mask gradients, which PGD-40 alone would not
   show. Each trial's report lands in ``audit-eps<r>.json`` as soon as it is done, and tables.md gets an audit
   table per radius.

It resumes: run the same command again and a radius whose sweep finished is not trained again, an interrupted
sweep continues (``latune sweep --resume``), audited trials are skipped, and study.json is rewritten after each
radius, so the radii done so far can be committed while the next one runs.

    python benchmarks/study_mnist_paper_table.py --out study/          # the full study (hours on a 2-core CPU)
    python benchmarks/study_mnist_paper_table.py --out study/          # again: resumes where it stopped
    python benchmarks/study_mnist_paper_table.py --out study/ --radii 0.3 --epochs 3 --set eval.every=100
    python benchmarks/study_mnist_paper_table.py --out /tmp/s --small  # a few hundred images, for the tests
    python benchmarks/study_mnist_paper_table.py --tables-only         # the reports and tables.md from RESULTS

The last line printed is one JSON object: sizes, times and the files written.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from a checkout: latune without installing it
from latune.config import PRESETS  # noqa: E402
from latune.files import write_json_atomic  # noqa: E402

DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "mnist-test"
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "mnist_paper_table"
SWEEP = ROOT / "sweeps" / "paper_table.yaml"
PRESET_EPS = PRESETS["mnist"]["attack.eps"]
PRESET_EPOCHS = PRESETS["mnist"]["optim.epochs"]
# --small: what the test runs (a few hundred images, 1 epoch, 1 seed, 2 corruptions, short attacks)
SMALL = {"train_images": 400, "test_images": 200, "epochs": 1, "seeds": "0", "radii": str(PRESET_EPS),
         "corruptions": "gaussian_noise,fog", "sets": ["eval.steps=5", "attack.steps=2"], "bootstrap": 200,
         "audit_images": 40, "audit_steps": 3}
AUDIT_ATTACKS = ("pgd40", "apgd-ce")
# The paper's effects (arXiv 2503.16179, CIFAR-10, Adv+ against Adv): relative change of the class-wise error SD
PAPER_EFFECTS = {"clean_correct": ("clean", -0.057), "robust_correct": ("PGD", -0.028)}


def sweep_seeds(raw: dict) -> list[int]:
    """The seeds a sweep mapping trains: its ``space``'s seed lists (every grid of a union), in order."""
    blocks = raw["space"] if isinstance(raw["space"], list) else [raw["space"]]
    return list(dict.fromkeys(seed for block in blocks for seed in block.get("seed", [0])))


def read_idx(path: Path) -> np.ndarray:
    """A uint8 idx file (``.gz`` or not) as an array of its dimensions."""
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if data[:3] != b"\x00\x00\x08":
        raise SystemExit(f"error: {path}: not a uint8 idx file")
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(data[3])]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * data[3]).reshape(dims)


def write_idx(path: Path, array: np.ndarray) -> None:
    """``array`` (uint8) as a gzipped idx file: magic 0,0,8,ndim, big-endian int32 sizes, then the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(gzip.compress(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes(), mtime=0))


def split_indices(labels: np.ndarray, train_images: int, test_images: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices into ``labels``, sorted and disjoint, both class-stratified and seeded."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    used = index if train_images + test_images == len(labels) else train_test_split(
        index, train_size=train_images + test_images, random_state=seed, stratify=labels)[0]
    used = np.sort(used)  # the labels it is stratified on must be in the same order as the indices
    train, test = train_test_split(used, test_size=test_images, random_state=seed, stratify=labels[used])
    return np.sort(train), np.sort(test)


def split_mnist(source: Path, target: Path, train_images: int, test_images: int, seed: int) -> dict[str, int]:
    """Class-stratified seeded split of ``source``'s t10k files into ``target/MNIST/raw`` train and t10k files."""
    images = read_idx(source / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(source / "t10k-labels-idx1-ubyte.gz")
    if train_images + test_images > len(labels):
        raise SystemExit(f"error: --train-images + --test-images: at most {len(labels)}, "
                         f"got {train_images + test_images}")
    train, test = split_indices(labels, train_images, test_images, seed)
    raw = target / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, part in (("train", train), ("t10k", test)):
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images[part])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels[part])
    return {"train": len(train), "test": len(test)}


def sweep_file(seeds: list[int], eps: float, folder: Path) -> str:
    """paper_table itself at the preset radius with its own seeds, else a copy with ``seeds`` in every grid (its
    δ = ε arm is ``la.delta: {same_as: attack.eps}``, so it follows the radius the study pins with --set)."""
    raw = yaml.safe_load(SWEEP.read_text())
    if seeds == sweep_seeds(raw) and abs(eps - PRESET_EPS) < 1e-12:
        return "paper_table"
    for block in raw["space"]:
        block["seed"] = list(seeds)
    raw["description"] += f" (seeds {seeds}, delta = eps = {eps:g}: copy written by study_mnist_paper_table.py)"
    path = folder / f"paper_table-eps{eps:g}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False, allow_unicode=True))
    return str(path)


def _run(command: list[str], log: Path) -> float:
    """Run a latune command, its output into ``log``; returns its wall seconds. Exits 1 when it fails."""
    started = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise SystemExit(f"error: {' '.join(command[2:4])} failed (exit {done.returncode}); {log}:\n{tail}")
    return time.perf_counter() - started


def run_radius(eps: float, args: argparse.Namespace, data_dir: Path, out: Path) -> dict:
    """One paper_table sweep at radius ``eps``, its results and outcomes kept under args.results."""
    name = f"paper_table-mnist-eps{eps:g}"
    sets = ["optim.precision=bf16", "model.channels_last=true", f"eval.corruptions={args.corruptions}", *args.sets]
    if args.epochs:
        sets.append(f"optim.epochs={args.epochs}")
    if args.max_images:
        sets.append(f"eval.max_images={args.max_images}")
    if abs(eps - PRESET_EPS) > 1e-12:  # pins attack.eps: the sweep's ε = 0 (Standard) arms are dropped
        sets += [f"attack.eps={eps}", f"eval.eps={eps}"]
    sweep = sweep_file(args.seeds, eps, out)
    experiment = out / "runs" / name
    if (experiment / "results.parquet").is_file():  # written when the sweep ends: this radius is trained
        sweep_s = None
    else:
        resume = ["--resume"] if experiment.is_dir() else []  # an interrupted sweep goes on where it stopped
        command = [sys.executable, "-m", "latune.sweep", sweep, "--data", "mnist", "--data-dir", str(data_dir),
                   "--storage", str(out / "runs"), "--name", name, *resume, "--no-mlflow", "--verbose", "0",
                   *[a for s in sets for a in ("--set", s)]]
        sweep_s = round(_run(command, out / f"{name}{'.resumed' if resume else ''}.sweep.log"), 1)
    files = keep_results(experiment, args.results, eps)
    return {"eps": eps, "sweep": Path(sweep).name, "sets": sets, "sweep_s": sweep_s, **files}


def _audit_trial(folder: str, args: argparse.Namespace, scratch: Path) -> dict:
    """``latune audit`` of one trial folder (its latest checkpoint): the attacks' figures and the checks fired."""
    report_file = scratch / f"{Path(folder).name}.json"
    steps = ["--steps", str(args.audit_steps)] if args.audit_steps else []
    command = [sys.executable, "-m", "latune", "audit", folder, "--attack", ",".join(AUDIT_ATTACKS),
               "--max-images", str(args.audit_images), "--device", "cpu", *steps, "--out", str(report_file)]
    # one core per audit, two audits at a time: the same share as the sweep's trials (resources: cpu 1)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
    if done.returncode not in (0, 3):  # 3: a check fired, which is a finding, not a failure
        raise SystemExit(f"error: latune audit {folder} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    report = json.loads(report_file.read_text())["reports"][0]
    keep = ("eps", "images", "clean_acc", "robust_acc", "zero_gradient_images", "probability_outputs",
            "left_the_ball", "warnings")
    return {**{k: report.get(k) for k in keep},
            "attacks": {name: {k: attack.get(k) for k in ("steps", "seconds", "adv_acc", "robust_acc")}
                        for name, attack in report["attacks"].items()}}


def audit_radius(eps: float, args: argparse.Namespace, out: Path) -> dict:
    """Every finished trial of the radius's sweep audited, each report written to RESULTS/audit-eps<r>.json as
    soon as it is done; trials already there (same attacks and images) are not audited again."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    import pandas as pd

    from latune.analysis.results import trial_folders

    experiment = out / "runs" / f"paper_table-mnist-eps{eps:g}"
    path = args.results / f"audit-eps{eps:g}.json"
    settings = {"attacks": list(AUDIT_ATTACKS), "images": args.audit_images, "steps": args.audit_steps or None,
                "split": "test"}  # what makes two audits comparable; the seeds audited may grow run by run
    saved = json.loads(path.read_text()) if path.is_file() else {}
    audit = saved if {k: saved.get(k) for k in settings} == settings else {**settings, "reports": {}}
    table = pd.read_parquet(args.results / f"results-eps{eps:g}.parquet")
    todo = {}
    finished = table[table["status"] == "TERMINATED"]
    if args.audit_seeds is not None:
        finished = finished[finished["seed"].isin(args.audit_seeds)]
    for trial_id in finished["trial_id"].astype(str):
        folders = trial_folders(experiment, trial_id)
        if trial_id not in audit["reports"] and folders:
            todo[trial_id] = folders[-1]
    started = time.perf_counter()
    scratch = out / "audit-scratch"
    scratch.mkdir(exist_ok=True)
    with ThreadPoolExecutor(max_workers=2) as pool:
        running = {pool.submit(_audit_trial, folder, args, scratch): trial for trial, folder in todo.items()}
        for future in as_completed(running):
            audit["reports"][running[future]] = future.result()
            write_json_atomic(path, audit)
    if not path.is_file():
        write_json_atomic(path, audit)
    return {"audit": path.name, "audit_s": round(time.perf_counter() - started, 1)}


def keep_results(experiment: Path, results: Path, eps: float) -> dict[str, str]:
    """The sweep's results.parquet and its trials' per-image outcomes (one compressed npz, ``TRIAL.ARRAY`` keys)
    copied under ``results``; returns their names there."""
    import pandas as pd

    from latune.analysis.interval_report import find_outcomes, save_trial_outcomes

    results.mkdir(parents=True, exist_ok=True)
    table, outcomes = f"results-eps{eps:g}.parquet", f"outcomes-eps{eps:g}.npz"
    shutil.copyfile(experiment / "results.parquet", results / table)
    found = find_outcomes(experiment, pd.read_parquet(results / table)["trial_id"])
    save_trial_outcomes(results / outcomes, found)
    return {"results": table, "outcomes": outcomes}


def write_tables(results: Path, bootstrap: int | None = None) -> list[str]:
    """From RESULTS/study.json and the files it names alone: each radius's report and tables.md (the README's
    tables: every report's body under a heading per radius), with ``bootstrap`` replicates (default study.json's).
    Returns the files written."""
    import pandas as pd

    from latune.analysis.interval_report import load_trial_outcomes
    from latune.analysis.report import pgd_label, render

    study = json.loads((results / "study.json").read_text())
    bootstrap = study.get("bootstrap", 1000) if bootstrap is None else bootstrap
    parts = [f"<!-- generated by `python benchmarks/study_mnist_paper_table.py --tables-only` from {results.name}/ "
             "-->", ""]
    written = []
    for radius in study["radii"]:
        table = pd.read_parquet(results / radius["results"])
        outcomes = load_trial_outcomes(results / radius["outcomes"])
        text = render(table, title=f"paper_table on MNIST, ε = {radius['eps']:g}", pgd_label=pgd_label(table),
                      outcomes=outcomes, replicates=bootstrap)
        report = results / f"report-eps{radius['eps']:g}.md"
        report.write_text(text)
        written.append(report.name)
        body = re.sub(r"^(#+) ", r"#\1 ", text.split("\n", 1)[1].strip(), flags=re.MULTILINE)  # one level down
        parts += [f"## ε = {radius['eps']:g}", "", body, ""]
        parts += detectability_table(table, outcomes, bootstrap, pgd_label(table)) + [""]
        if radius.get("audit") and (results / radius["audit"]).is_file():
            parts += audit_table(table, json.loads((results / radius["audit"]).read_text())) + [""]
    (results / "tables.md").write_text("\n".join(parts))
    return [*written, "tables.md"]


def detectability_table(table, outcomes: dict, replicates: int, pgd: str) -> list[str]:
    """tables.md's section on what the study could detect: for each arm against its baseline, the relative change
    of the debiased class-wise error SD (clean and PGD), the smallest change its test images and its seeds would
    tell from zero (latune.analysis.detectability), and whether an effect the paper's size would stand out."""
    from latune.analysis.detectability import detectable_change
    from latune.analysis.report import relative_changes, setting_table

    settings, _ = setting_table(table)
    pairs = [(int(r["setting"]), int(r["against"])) for standard in (False, True)
             for _, r in relative_changes(settings, standard=standard).iterrows()]
    lines = ["### What this study can detect", "",
             f"Relative change of the debiased class-wise error SD, arm against its baseline, with its 95% interval "
             f"over test images ({replicates} bootstrap replicates); *images*: half that interval's width; *seeds*: "
             "the smallest mean change a paired t-test over the seeds would call significant at 5% (before Holm), "
             "from the spread of the per-seed changes. The paper's effect (arXiv 2503.16179, CIFAR-10, Adv+ against "
             "Adv) is " + " and ".join(f"{v * 100:+.1f}% ({k})" for k, v in PAPER_EFFECTS.values()) + "; "
             "*paper-size effect detectable* is yes only when both sizes are below it.", "",
             "| arm | against | figure | change [95% interval] | images | seeds | paper-size effect detectable |",
             "|---|---|---|---|---|---|---|"]
    for arm, base in pairs:
        treated = {seed: outcomes[t] for t, seed in settings.loc[arm, "trials"] if t in outcomes}
        reference = {seed: outcomes[t] for t, seed in settings.loc[base, "trials"] if t in outcomes}
        for kind, (label, effect) in PAPER_EFFECTS.items():
            found = detectable_change(treated, reference, kind, replicates=replicates) if treated and reference \
                else None
            if found is None or not found.baseline > 0:  # e.g. PGD error SD 0: every class 100% wrong undefended
                continue
            label = pgd if label == "PGD" else label
            seeds = f"±{found.seeds_smallest * 100:.1f}%" if math.isfinite(found.seeds_smallest) else "–"
            lines.append(f"| {settings.loc[arm, 'role']} | {settings.loc[base, 'role']} | {label} SD | "
                         f"{found.change * 100:+.1f}% [{found.low * 100:+.1f}, {found.high * 100:+.1f}] | "
                         f"±{found.images_half_width * 100:.1f}% | {seeds} ({found.seeds} seeds) | "
                         f"{'yes' if found.detects(effect) else 'no'} |")
    return lines


def audit_table(table, audit: dict) -> list[str]:
    """tables.md's audit section: per trial (arm order, then seed) clean, PGD-40 and APGD-CE robust accuracy
    on the audited images, APGD-CE's gap below PGD-40 and the checks that fired."""
    from latune.analysis.report import roles

    finished = table[table["status"] == "TERMINATED"].copy()
    finished["role"] = roles(finished)
    finished = finished.sort_values("trial_id", kind="stable")  # the sweep's grid order: Standard arms first
    steps = f", {audit['steps']} steps each (a smoke test)" if audit.get("steps") else ""
    images = f"the first {audit['images']}" if audit.get("images") else "all"
    lines = [f"### Audit: {', '.join(audit['attacks'])} on {images} test images{steps}", "",
             "Robust accuracy in %; gap = PGD-40 minus APGD-CE, in points (latune audit warns of gradient masking "
             "above 5).", "", "| arm | seed | trial | clean acc | PGD-40 acc | APGD-CE acc | gap | checks fired |",
             "|---|---|---|---|---|---|---|---|"]
    left = []
    for _, row in finished.iterrows():
        report = audit["reports"].get(str(row["trial_id"]))
        if report is None:
            left.append(f"{row['role']} seed {row['seed']}")
            continue
        pgd, apgd = (report["attacks"][n]["robust_acc"] for n in ("pgd40", "apgd-ce"))
        fired = "; ".join(report["warnings"]) or "none"
        lines.append(f"| {row['role']} | {row['seed']} | {row['trial_id']} | {100 * report['clean_acc']:.1f} | "
                     f"{100 * pgd:.1f} | {100 * apgd:.1f} | {100 * (pgd - apgd):+.1f} | {fired} |")
    if left:
        lines += ["", f"Not audited ({len(left)} of {len(finished)} trials): {', '.join(left)}."]
    return lines


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="folder for the split data, the sweeps and their logs (needed unless "
                        "--tables-only)")
    parser.add_argument("--results", help=f"folder for the results, outcomes, reports, study.json and tables.md "
                        f"(default {DEFAULT_RESULTS.relative_to(ROOT)}; with --small OUT/results)")
    parser.add_argument("--tables-only", action="store_true", help="write the reports and tables.md from RESULTS "
                        "alone (its study.json, results and outcomes files); train nothing")
    parser.add_argument("--source", default=str(DEFAULT_SOURCE), help="folder with t10k-images-idx3-ubyte.gz and "
                        f"t10k-labels-idx1-ubyte.gz (default {DEFAULT_SOURCE})")
    parser.add_argument("--radii", default=f"{PRESET_EPS:g},0.1", help="comma list of l_inf radii, run in this order")
    parser.add_argument("--seeds", help="comma list of seeds (default: paper_table's)")
    parser.add_argument("--epochs", type=int, default=0, help=f"optim.epochs (default 0: the MNIST preset, "
                        f"{PRESET_EPOCHS})")
    parser.add_argument("--max-images", type=int, default=0, help="eval.max_images per split (0: all)")
    parser.add_argument("--corruptions", default="all", help="eval.corruptions (default all 15)")
    parser.add_argument("--train-images", type=int, default=8000, help="training folder size (val is 15%% of it)")
    parser.add_argument("--test-images", type=int, default=2000, help="test folder size")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split")
    parser.add_argument("--bootstrap", type=int, help="bootstrap replicates of the intervals (default: study.json's "
                        "with --tables-only, else 1000)")
    parser.add_argument("--audit-images", type=int, default=1000, help="test images each trial's audit attacks "
                        "(the first N; 0: all; default 1000, latune audit's)")
    parser.add_argument("--audit-steps", type=int, default=0, help="iterations of each audit attack (default 0: "
                        "PGD-40's 40 and APGD-CE's 100); small values only for smoke tests")
    parser.add_argument("--audit-seeds", help="comma list: audit only these seeds' trials, every arm (default: "
                        "every trial)")
    parser.add_argument("--no-audit", action="store_true", help="train and report without the audit")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="more config overrides for every trial (repeatable), e.g. eval.every=100")
    parser.add_argument("--small", action="store_true", help="a test-sized run: " + ", ".join(
        f"{k}={v}" for k, v in SMALL.items()))
    args = parser.parse_args(argv)
    if args.small:
        for key, value in SMALL.items():
            setattr(args, key, value if key != "sets" else [*value, *args.sets])
    if not args.tables_only and not args.out:
        parser.error("--out: required unless --tables-only")
    results = args.results or (Path(args.out) / "results" if args.small else DEFAULT_RESULTS)
    args.results = Path(results).resolve()
    try:
        args.radii = [float(r) for r in str(args.radii).split(",")]
        seeds = args.seeds or ",".join(map(str, sweep_seeds(yaml.safe_load(SWEEP.read_text()))))
        args.seeds = [int(s) for s in str(seeds).split(",")]
    except ValueError:
        parser.error("--radii and --seeds: comma lists of numbers")
    if not all(0 < r <= 1 for r in args.radii) or any(s < 0 for s in args.seeds) or (args.bootstrap or 0) < 0:
        parser.error("--radii: in (0, 1]; --seeds: >= 0; --bootstrap: >= 0")
    if args.audit_images < 0 or args.audit_steps < 0:
        parser.error("--audit-images and --audit-steps: >= 0")
    try:
        args.audit_seeds = None if args.audit_seeds is None else [int(s) for s in args.audit_seeds.split(",")]
    except ValueError:
        parser.error("--audit-seeds: a comma list of seeds, e.g. 0 or 0,1,2")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.tables_only:
        if not (args.results / "study.json").is_file():
            raise SystemExit(f"error: --results: {args.results} has no study.json (run the study first)")
        print(json.dumps({"results": str(args.results), "written": write_tables(args.results, args.bootstrap)}))
        return 0
    source, out = Path(args.source), Path(args.out).resolve()
    if not (source / "t10k-images-idx3-ubyte.gz").is_file():
        raise SystemExit(f"error: --source: {source} has no t10k-images-idx3-ubyte.gz")
    out.mkdir(parents=True, exist_ok=True)
    sizes = split_mnist(source, out / "mnist", args.train_images, args.test_images, args.split_seed)
    summary = {"images": sizes, "split_seed": args.split_seed, "seeds": args.seeds,
               "epochs": args.epochs or PRESET_EPOCHS, "max_images": args.max_images, "corruptions": args.corruptions,
               "bootstrap": 1000 if args.bootstrap is None else args.bootstrap, "radii": [], "cpus": os.cpu_count()}
    saved = json.loads((args.results / "study.json").read_text()) if (args.results / "study.json").is_file() else {}
    if all(saved.get(k) == summary[k] for k in ("images", "split_seed", "seeds", "epochs", "max_images")):
        summary["radii"] = saved.get("radii", [])  # radii done before, by this same study: kept, in order
    for eps in args.radii:
        radius = run_radius(eps, args, out / "mnist", out)
        earlier = next((r for r in summary["radii"] if r["eps"] == eps), {})
        if radius["sweep_s"] is None:  # trained by an earlier run of the command: keep its time
            radius["sweep_s"] = earlier.get("sweep_s")
        if not args.no_audit:
            radius.update(audit_radius(eps, args, out))
            radius["audit_s"] = round(radius["audit_s"] + (earlier.get("audit_s") or 0), 1)
        summary["radii"] = [r for r in summary["radii"] if r["eps"] != eps] + [radius]
        write_json_atomic(args.results / "study.json", summary)  # each radius committable as soon as it is done
        print(f"eps={eps:g}: sweep {radius['sweep_s']} s, audit {radius.get('audit_s')} s", flush=True)
    summary["written"] = write_tables(args.results)
    summary["results"] = str(args.results)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
