"""Study: the shipped ``paper_table`` sweep on real 28x28 MNIST digits, with the report's 95% intervals.

Does label augmentation narrow class gaps on MNIST? The script

1. splits the 10,000-image MNIST test set (t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz, by default in
   ../shared/data/mnist-test: developers' and CI machines only, latune never depends on it) into 8,000 training
   and 2,000 test images, class-stratified and seeded, and writes both in MNIST's own file layout
   (``WORK/mnist/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz``), so latune's own MNIST loader
   reads them (``--data mnist --data-dir WORK/mnist``: val is 15% of the 8,000, test the 2,000);
2. runs ``python -m latune.sweep paper_table --data mnist`` at each radius (the MNIST preset 0.3 first),
   with ``optim.precision=bf16`` and ``model.channels_last=true``; a radius other than the preset pins
   ``attack.eps`` and ``eval.eps`` with ``--set``, which drops the sweep's Standard (ε = 0) arm there: Standard
   training does not depend on ε, its models are the preset run's;
3. writes ``python -m latune.report`` of each sweep to ``OUT/report-eps<r>.md``.

    python benchmarks/study_mnist_paper_table.py --out study/          # the full study (2 h on a 2-core CPU)
    python benchmarks/study_mnist_paper_table.py --out study/ --radii 0.3 --epochs 3 --set eval.every=100
    python benchmarks/study_mnist_paper_table.py --out /tmp/s --small  # a few hundred images, for the tests

Fewer seeds than the sweep's three (``--seeds 0``) run a copy of paper_table.yaml with only its seed list
changed, written beside the reports. The last line printed is one JSON object: sizes, times, report paths.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = ROOT.parent / "shared" / "data" / "mnist-test"
PRESET_EPS = 0.3  # latune.config.PRESETS["mnist"]["attack.eps"]
SWEEP_SEEDS = (0, 1, 2)  # sweeps/paper_table.yaml's seed list
# --small: what the test runs (a few hundred images, 1 epoch, 1 seed, 2 corruptions, short attacks)
SMALL = {"train_images": 400, "test_images": 200, "epochs": 1, "seeds": "0", "radii": "0.3",
         "corruptions": "gaussian_noise,fog", "sets": ["eval.steps=5", "attack.steps=2"]}


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


def split_mnist(source: Path, target: Path, train_images: int, test_images: int, seed: int) -> dict[str, int]:
    """Class-stratified seeded split of ``source``'s t10k files into ``target/MNIST/raw`` train and t10k files."""
    from sklearn.model_selection import train_test_split

    images = read_idx(source / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(source / "t10k-labels-idx1-ubyte.gz")
    if train_images + test_images > len(labels):
        raise SystemExit(f"error: --train-images + --test-images: at most {len(labels)}, "
                         f"got {train_images + test_images}")
    index = np.arange(len(labels))
    used, _ = (index, None) if train_images + test_images == len(labels) else train_test_split(
        index, train_size=train_images + test_images, random_state=seed, stratify=labels)
    train, test = train_test_split(np.sort(used), test_size=test_images, random_state=seed, stratify=labels[used])
    raw = target / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, part in (("train", np.sort(train)), ("t10k", np.sort(test))):
        write_idx(raw / f"{prefix}-images-idx3-ubyte.gz", images[part])
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels[part])
    return {"train": len(train), "test": len(test)}


def _sweep_file(seeds: list[int], folder: Path) -> str:
    """The shipped paper_table sweep, or a copy of it with only its seed list changed."""
    shipped = ROOT / "sweeps" / "paper_table.yaml"
    if tuple(seeds) == SWEEP_SEEDS:
        return "paper_table"
    raw = yaml.safe_load(shipped.read_text())
    raw["space"]["seed"] = seeds
    raw["description"] = f"{raw['description']} (seeds {seeds}: copy written by study_mnist_paper_table.py)"
    path = folder / "paper_table.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
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


def run_radius(eps: float, args: argparse.Namespace, data_dir: Path, sweep: str, out: Path) -> dict:
    """One paper_table sweep at radius ``eps`` and its report; returns what ran and where the report is."""
    name = f"paper_table-mnist-eps{eps:g}"
    sets = ["optim.precision=bf16", "model.channels_last=true", f"eval.corruptions={args.corruptions}", *args.sets]
    if args.epochs:
        sets.append(f"optim.epochs={args.epochs}")
    if args.max_images:
        sets.append(f"eval.max_images={args.max_images}")
    if abs(eps - PRESET_EPS) > 1e-12:  # pins attack.eps: the sweep's ε = 0 (Standard) arm is dropped
        sets += [f"attack.eps={eps}", f"eval.eps={eps}"]
    command = [sys.executable, "-m", "latune.sweep", sweep, "--data", "mnist", "--data-dir", str(data_dir),
               "--storage", str(out / "runs"), "--name", name, "--no-mlflow", "--verbose", "0",
               *[a for s in sets for a in ("--set", s)]]
    sweep_s = _run(command, out / f"{name}.sweep.log")
    report = out / f"report-eps{eps:g}.md"
    report_s = _run([sys.executable, "-m", "latune.report", str(out / "runs" / name), "--out", str(report),
                     "--no-mlflow"], out / f"{name}.report.log")
    return {"eps": eps, "sets": sets, "sweep_s": round(sweep_s, 1), "report_s": round(report_s, 1),
            "report": str(report), "experiment": str(out / "runs" / name)}


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the split data, the sweeps and the reports")
    parser.add_argument("--source", default=str(DEFAULT_SOURCE), help="folder with t10k-images-idx3-ubyte.gz and "
                        f"t10k-labels-idx1-ubyte.gz (default {DEFAULT_SOURCE})")
    parser.add_argument("--radii", default="0.3,0.1", help="comma list of l_inf radii, run in this order")
    parser.add_argument("--seeds", default="0,1,2", help="comma list of seeds (default: the sweep's 0,1,2)")
    parser.add_argument("--epochs", type=int, default=0, help="optim.epochs (default 0: the MNIST preset, 10)")
    parser.add_argument("--max-images", type=int, default=0, help="eval.max_images per split (0: all)")
    parser.add_argument("--corruptions", default="all", help="eval.corruptions (default all 15)")
    parser.add_argument("--train-images", type=int, default=8000, help="training folder size (val is 15%% of it)")
    parser.add_argument("--test-images", type=int, default=2000, help="test folder size")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the train/test split")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="more config overrides for every trial (repeatable), e.g. eval.every=100")
    parser.add_argument("--small", action="store_true", help="a test-sized run: " + ", ".join(
        f"{k}={v}" for k, v in SMALL.items()))
    args = parser.parse_args(argv)
    if args.small:
        for key, value in SMALL.items():
            setattr(args, key, value if key != "sets" else [*value, *args.sets])
    try:
        args.radii = [float(r) for r in str(args.radii).split(",")]
        args.seeds = [int(s) for s in str(args.seeds).split(",")]
    except ValueError:
        parser.error("--radii and --seeds: comma lists of numbers")
    if not all(0 < r <= 1 for r in args.radii) or any(s < 0 for s in args.seeds):
        parser.error("--radii: in (0, 1]; --seeds: >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    source, out = Path(args.source), Path(args.out).resolve()
    if not (source / "t10k-images-idx3-ubyte.gz").is_file():
        raise SystemExit(f"error: --source: {source} has no t10k-images-idx3-ubyte.gz")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    sizes = split_mnist(source, out / "mnist", args.train_images, args.test_images, args.split_seed)
    sweep = _sweep_file(args.seeds, out)
    radii = []
    for eps in args.radii:
        radii.append(run_radius(eps, args, out / "mnist", sweep, out))
        print(f"eps={eps:g}: sweep {radii[-1]['sweep_s']:.0f} s, report {radii[-1]['report']}", flush=True)
    summary = {"images": sizes, "split_seed": args.split_seed, "seeds": args.seeds, "epochs": args.epochs or 10,
               "max_images": args.max_images, "corruptions": args.corruptions, "sweep": sweep, "radii": radii,
               "wall_s": round(time.perf_counter() - started, 1), "cpus": os.cpu_count()}
    (out / "study.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
