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
   of each radius (``report-eps<r>.md``, latune.analysis.report with intervals) and ``tables.md``.

    python benchmarks/study_mnist_paper_table.py --out study/          # the full study (hours on a 2-core CPU)
    python benchmarks/study_mnist_paper_table.py --out study/ --radii 0.3 --epochs 3 --set eval.every=100
    python benchmarks/study_mnist_paper_table.py --out /tmp/s --small  # a few hundred images, for the tests
    python benchmarks/study_mnist_paper_table.py --tables-only         # the reports and tables.md from RESULTS

The last line printed is one JSON object: sizes, times and the files written.
"""

from __future__ import annotations

import argparse
import gzip
import json
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

DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "mnist-test"
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "mnist_paper_table"
SWEEP = ROOT / "sweeps" / "paper_table.yaml"
PRESET_EPS = PRESETS["mnist"]["attack.eps"]
PRESET_EPOCHS = PRESETS["mnist"]["optim.epochs"]
# --small: what the test runs (a few hundred images, 1 epoch, 1 seed, 2 corruptions, short attacks)
SMALL = {"train_images": 400, "test_images": 200, "epochs": 1, "seeds": "0", "radii": str(PRESET_EPS),
         "corruptions": "gaussian_noise,fog", "sets": ["eval.steps=5", "attack.steps=2"], "bootstrap": 200}


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
    command = [sys.executable, "-m", "latune.sweep", sweep, "--data", "mnist", "--data-dir", str(data_dir),
               "--storage", str(out / "runs"), "--name", name, "--no-mlflow", "--verbose", "0",
               *[a for s in sets for a in ("--set", s)]]
    sweep_s = _run(command, out / f"{name}.sweep.log")
    files = keep_results(out / "runs" / name, args.results, eps)
    return {"eps": eps, "sweep": Path(sweep).name, "sets": sets, "sweep_s": round(sweep_s, 1), **files}


def keep_results(experiment: Path, results: Path, eps: float) -> dict[str, str]:
    """The sweep's results.parquet and its trials' per-image outcomes (one compressed npz, ``TRIAL.ARRAY`` keys)
    copied under ``results``; returns their names there."""
    import pandas as pd

    from latune.analysis.interval_report import find_outcomes

    results.mkdir(parents=True, exist_ok=True)
    table, outcomes = f"results-eps{eps:g}.parquet", f"outcomes-eps{eps:g}.npz"
    shutil.copyfile(experiment / "results.parquet", results / table)
    found = find_outcomes(experiment, pd.read_parquet(results / table)["trial_id"])
    np.savez_compressed(results / outcomes, **{f"{trial}.{key}": np.asarray(value)
                                               for trial, arrays in found.items() for key, value in arrays.items()})
    return {"results": table, "outcomes": outcomes}


def read_trial_outcomes(path: Path) -> dict[str, dict]:
    """Trial id -> its outcome arrays, from keep_results' npz (latune.core.outcomes layout)."""
    found: dict[str, dict] = {}
    with np.load(path) as data:
        for name in data.files:
            trial, _, key = name.rpartition(".")
            found.setdefault(trial, {})[key] = data[name]
    for arrays in found.values():
        arrays["num_classes"], arrays["test_set"] = int(arrays["num_classes"]), str(arrays["test_set"])
    return found


def write_tables(results: Path, bootstrap: int | None = None) -> list[str]:
    """From RESULTS/study.json and the files it names alone: each radius's report and tables.md (the README's
    tables: every report's body under a heading per radius), with ``bootstrap`` replicates (default study.json's).
    Returns the files written."""
    import pandas as pd

    from latune.analysis.report import pgd_label, render

    study = json.loads((results / "study.json").read_text())
    bootstrap = study.get("bootstrap", 1000) if bootstrap is None else bootstrap
    parts = [f"<!-- generated by `python benchmarks/study_mnist_paper_table.py --tables-only` from {results.name}/ "
             "-->", ""]
    written = []
    for radius in study["radii"]:
        table = pd.read_parquet(results / radius["results"])
        text = render(table, title=f"paper_table on MNIST, ε = {radius['eps']:g}", pgd_label=pgd_label(table),
                      outcomes=read_trial_outcomes(results / radius["outcomes"]), replicates=bootstrap)
        report = results / f"report-eps{radius['eps']:g}.md"
        report.write_text(text)
        written.append(report.name)
        body = re.sub(r"^(#+) ", r"#\1 ", text.split("\n", 1)[1].strip(), flags=re.MULTILINE)  # one level down
        parts += [f"## ε = {radius['eps']:g}", "", body, ""]
    (results / "tables.md").write_text("\n".join(parts))
    return [*written, "tables.md"]


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
    started = time.perf_counter()
    sizes = split_mnist(source, out / "mnist", args.train_images, args.test_images, args.split_seed)
    radii = []
    for eps in args.radii:
        radii.append(run_radius(eps, args, out / "mnist", out))
        print(f"eps={eps:g}: sweep {radii[-1]['sweep_s']:.0f} s", flush=True)
    summary = {"images": sizes, "split_seed": args.split_seed, "seeds": args.seeds,
               "epochs": args.epochs or PRESET_EPOCHS, "max_images": args.max_images, "corruptions": args.corruptions,
               "bootstrap": 1000 if args.bootstrap is None else args.bootstrap, "radii": radii,
               "wall_s": round(time.perf_counter() - started, 1),
               "cpus": os.cpu_count()}
    (args.results / "study.json").write_text(json.dumps(summary, indent=2))
    summary["written"] = write_tables(args.results)
    summary["results"] = str(args.results)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
