"""The recorded benchmark of the LA space: write it from a finished ``la_bench`` sweep, and read it back.

A record (LCBench, YAHPO and NAS-Bench do the same) holds every configuration's learning curves once, so that
``benchmarks/replay_search.py`` can replay samplers and schedulers on it hundreds of times, nothing trained.

Record it (about 2.5 hours on 2 CPU cores for digits; ``--resume`` continues an interrupted one), then export:

    latune sweep la_bench --no-mlflow --name la_bench-digits-record   # add --resume to continue
    python benchmarks/la_record.py export runs/la_bench-digits-record   # -> benchmarks/data/la_bench_digits.parquet

Tune's folder stays on the machine that ran it (runs/ is not committed), so a record begun in another session
is continued from the committed parquet file instead: ``continue`` runs, through ``latune sweep``, a sweep of the
la_bench points the file lacks (written as runs/la_bench_rest.yaml; ``--resume`` continues that one too) and adds
them to the file:

    python benchmarks/la_record.py continue                      # the missing points, then merged into the file

On a GPU machine ``latune sweep la_bench --data cifar10 --no-mlflow --name la_bench-cifar10-record`` records
CIFAR-10 the same way (``--data cifar10`` for ``continue``; the file is benchmarks/data/la_bench_cifar10.parquet).

The parquet file has one row per configuration, seed and epoch: the searched keys, ``seed``, ``epoch``, every
objective and constraint metric on the validation split and (``test_``) on the test split, and the epoch's
seconds (``epoch_time_s`` training, ``eval_time_s`` validation, ``test_eval_time_s`` test). Its key-value
metadata ``latune.record`` (JSON) holds the provenance: commit, library versions, machine, split sizes,
the sweep file and the command.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# the keys the shipped pareto sweep searches (latune/sweeps/pareto.yaml), as the record's grid holds them
SEARCH_KEYS = ("la.delta", "attack.eps", "la.transform_set", "la.m", "la.p", "optim.lr")
# with la.delta = 0 LA is off (latune.config.Config.la_active): these keys change nothing, so such
# configurations are recorded once and every point with delta 0 reads that one
LA_ONLY_KEYS = ("la.transform_set", "la.m", "la.p")
METRICS = ("clean_acc", "robust_acc", "robust_class_error_sd", "clean_class_error_sd", "robust_worst_class_acc")
TIMES = ("epoch_time_s", "eval_time_s", "test_eval_time_s")
METADATA_KEY = b"latune.record"
DEFAULT_OUT = Path(__file__).resolve().parent / "data"


# ------------------------------------------------------------------------------------------------ writing

def _trial_rows(folder: Path) -> list[dict[str, Any]]:
    """One row per epoch of one Tune trial folder (params.json, result.json)."""
    params = json.loads((folder / "params.json").read_text())
    rows = []
    for line in (folder / "result.json").read_text().splitlines():
        try:
            result = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by an interrupted driver
            continue
        if not isinstance(result.get("epoch"), int):
            continue
        row = {key: params.get(key) for key in SEARCH_KEYS}
        row["seed"] = int(params.get("seed", 0))
        row["epoch"] = result["epoch"]
        for metric in METRICS:
            row[metric] = result.get(metric, math.nan)
            row[f"test_{metric}"] = result.get(f"test_{metric}", math.nan)
        for key in TIMES:
            row[key] = result.get(key, math.nan)
        rows.append(row)
    return rows


def export(experiment: str | Path, out: str | Path, command: str, trained_with: str = "unknown",
           extend: bool = False) -> pd.DataFrame:
    """Write the record of the la_bench sweep in ``experiment`` (Tune's folder) to ``out``; the record.

    Only trials that trained their whole budget count (an interrupted sweep is exported as far as it got);
    a configuration and seed recorded twice (a retried trial) keeps its last complete run. ``extend``: keep the
    runs ``out`` holds already and add these (``continue``); the metadata lists each part's experiment and code.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from latune.provenance import provenance

    experiment = Path(experiment)
    info = experiment / "latune_sweep.json"  # what latune.sweep saved of the sweep: its file, base keys, ...
    sweep = json.loads(info.read_text()) if info.is_file() else {}
    frames = []
    for folder in sorted(p for p in experiment.iterdir() if p.is_dir() and (p / "result.json").is_file()):
        rows = _trial_rows(folder)
        if rows and max(r["epoch"] for r in rows) >= _budget(folder):
            frames.append(pd.DataFrame(rows).drop_duplicates("epoch", keep="last"))
    earlier = _read(out) if extend and Path(out).is_file() else None
    if earlier is not None:
        frames.insert(0, earlier[0])
    if not frames:
        raise SystemExit(f"error: no finished trial under {experiment}")
    table = pd.concat(frames, ignore_index=True)
    table = table.drop_duplicates([*SEARCH_KEYS, "seed", "epoch"], keep="last")
    table = table.sort_values([*SEARCH_KEYS, "seed", "epoch"]).reset_index(drop=True)
    configs = table[table["seed"] == 0].drop_duplicates(list(SEARCH_KEYS))
    meta = {**provenance(), "command": command, "experiment": experiment.name, "sweep": sweep,
            # the code the trials ran, per start and resume of the sweep (latune_sweep.json); the fields above
            # are the exporter's
            "trained_with": _trained_with(sweep.get("provenance") or [], trained_with),
            "machine": f"{platform.machine()}, {_cpus()} CPUs, {platform.system()}",
            "configurations": int(len(configs)), "runs": int(len(table.drop_duplicates([*SEARCH_KEYS, "seed"]))),
            "epochs": int(table["epoch"].max())}
    meta.update(_split_sizes(sweep))
    part = {"experiment": experiment.name, "trained_with": meta["trained_with"], "command": command}
    meta["parts"] = [*(earlier[1].get("parts", [_first_part(earlier[1])]) if earlier else []), part]
    arrow = pa.Table.from_pandas(table, preserve_index=False)
    arrow = arrow.replace_schema_metadata({**(arrow.schema.metadata or {}), METADATA_KEY: json.dumps(meta).encode()})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(arrow, out, compression="zstd")
    return table


def _trained_with(starts: list[dict[str, Any]], note: str) -> Any:
    """The starts and resumes latune_sweep.json lists, the --trained-with note (for the starts that predate that
    list), or both."""
    if starts and note != "unknown":
        return {"note": note, "starts": starts}
    return starts or note


def _read(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(table, metadata) of a record file."""
    import pyarrow.parquet as pq

    arrow = pq.read_table(path)
    return arrow.to_pandas(), json.loads((arrow.schema.metadata or {}).get(METADATA_KEY, b"{}"))


def _first_part(meta: Mapping[str, Any]) -> dict[str, Any]:
    return {k: meta.get(k) for k in ("experiment", "trained_with", "command")}


def missing_points(data: str, out: str | Path) -> list[dict[str, Any]]:
    """The la_bench points (configuration and seed) the record file ``out`` lacks, in the sweep's order."""
    from latune.sweep.spec import grid_points, load_sweep

    done: set[tuple] = set()
    if Path(out).is_file():
        table = _read(out)[0]
        done = {tuple(_plain(v) for v in row) for row in table[[*SEARCH_KEYS, "seed"]].itertuples(index=False)}
    points = grid_points(load_sweep("la_bench", data=data))
    return [p for p in points if tuple(_plain(p[k]) for k in (*SEARCH_KEYS, "seed")) not in done]


def continue_record(data: str, out: Path, storage: Path) -> int:
    """Run the la_bench points ``out`` lacks as one sweep (resumable), then add them to ``out``."""
    import subprocess

    import yaml

    from latune.sweep.spec import resolve_sweep_path

    points = missing_points(data, out)
    if not points:
        print(f"{out}: every la_bench point is recorded")
        return 0
    raw = yaml.safe_load(resolve_sweep_path("la_bench").read_text())
    raw["name"] = "la_bench_rest"
    raw["description"] = f"the {len(points)} la_bench points {out.name} lacks (benchmarks/la_record.py continue)"
    raw["space"] = [{k: [v] for k, v in p.items()} for p in points]  # a list of one-point grids
    storage.mkdir(parents=True, exist_ok=True)
    path = storage / "la_bench_rest.yaml"
    name = f"la_bench-{data}-rest"
    if not (storage / name).is_dir():  # a new rest sweep: the points missing now (a resumed one keeps its own)
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
    command = [sys.executable, "-m", "latune.sweep", str(path), "--data", data, "--no-mlflow", "--storage",
               str(storage), "--name", name, *(["--resume"] if (storage / name).is_dir() else [])]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True)
    export(storage / name, out, " ".join(["python benchmarks/la_record.py continue", f"--data {data}"]), extend=True)
    return 0


def _budget(folder: Path) -> int:
    """optim.epochs of a trial folder's run (its params, presets filled)."""
    from latune.config import from_flat, resolve

    params = json.loads((folder / "params.json").read_text())
    return resolve(from_flat(params)).optim.epochs


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def _split_sizes(sweep: Mapping[str, Any]) -> dict[str, Any]:
    """Train/validation/test images of the sweep's data (digits: computed here, it ships with scikit-learn)."""
    base = sweep.get("base", {})
    if base.get("data.name", "digits") != "digits":
        return {"data": base.get("data.name")}
    from latune.config import from_flat
    from latune.core.data import load_data

    c = from_flat({k: v for k, v in base.items() if k.startswith("data.")})
    data = load_data("digits", image_size=16, val_fraction=c.data.val_fraction, test_fraction=c.data.test_fraction,
                     seed=0, limit_train=c.data.limit_train)
    return {"data": "digits", "train_images": len(data.train), "val_images": len(data.val),
            "test_images": len(data.test)}


# ------------------------------------------------------------------------------------------------ reading

@dataclass
class Curve:
    """One recorded run (a configuration at one seed): per-epoch arrays, epoch 1 first."""

    values: dict[str, np.ndarray]  # metric (validation) and test_<metric> -> float[epochs]
    seconds: np.ndarray  # float[epochs]: training plus validation seconds of each epoch (what a live sweep spends)


@dataclass
class Record:
    """A record read back: its table, the searched keys' choices and a lookup from a point to its runs."""

    table: pd.DataFrame
    meta: dict[str, Any]
    keys: tuple[str, ...]
    choices: dict[str, list[Any]]
    budget: int  # epochs of every run
    runs: dict[tuple, list[Curve]] = field(default_factory=dict)  # canonical point -> its seeds' curves

    def canonical(self, point: Mapping[str, Any]) -> tuple:
        """The record's key of a point: with la.delta 0 the LA-only keys take the recorded delta-0 values."""
        values = {k: point[k] for k in self.keys}
        if float(values.get("la.delta", 1.0)) == 0.0:
            values.update(self._delta0_defaults)
        return tuple(_plain(values[k]) for k in self.keys)

    def curves(self, point: Mapping[str, Any]) -> list[Curve]:
        try:
            return self.runs[self.canonical(point)]
        except KeyError:
            raise KeyError(f"{dict(point)} is not in the record") from None

    @property
    def _delta0_defaults(self) -> dict[str, Any]:
        zero = self.table[self.table["la.delta"] == 0.0]
        return {k: _plain(zero[k].iloc[0]) for k in LA_ONLY_KEYS if k in self.keys} if len(zero) else {}

    def final(self, seed: int = 0) -> pd.DataFrame:
        """One row per configuration at this seed: its last epoch."""
        rows = self.table[(self.table["seed"] == seed) & (self.table["epoch"] == self.budget)]
        return rows.reset_index(drop=True)


def _plain(value: Any) -> Any:
    """numpy scalars as Python ones, floats rounded so that 0.1 from YAML and from parquet meet."""
    value = value.item() if hasattr(value, "item") else value
    return round(value, 12) if isinstance(value, float) else value


def from_table(table: pd.DataFrame, meta: Mapping[str, Any] | None = None,
               keys: Sequence[str] = SEARCH_KEYS) -> Record:
    """A Record from a table of the parquet file's columns (tests build small ones by hand)."""
    budget = int(table["epoch"].max())
    keys = tuple(k for k in keys if k in table.columns)
    choices = {k: sorted({_plain(v) for v in table[k]}, key=lambda v: (isinstance(v, str), v)) for k in keys}
    record = Record(table=table, meta=dict(meta or {}), keys=keys, choices=choices, budget=budget)
    for point, group in table.groupby(list(keys) + ["seed"], sort=True):
        group = group.sort_values("epoch")
        if len(group) != budget:
            continue  # an unfinished run: not part of the record
        metrics = [c for c in group.columns if c.removeprefix("test_") in METRICS]
        values = {m: group[m].to_numpy(dtype=float) for m in metrics}
        seconds = (group["epoch_time_s"].to_numpy(dtype=float)
                   + np.nan_to_num(group["eval_time_s"].to_numpy(dtype=float)))
        record.runs.setdefault(tuple(_plain(v) for v in point[:-1]), []).append(Curve(values, seconds))
    return record


def load(path: str | Path) -> Record:
    """Read a record written by ``export``."""
    import pyarrow.parquet as pq

    import hashlib

    arrow = pq.read_table(path)
    meta = json.loads((arrow.schema.metadata or {}).get(METADATA_KEY, b"{}"))
    meta["digest"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]  # which record a replay used
    return from_table(arrow.to_pandas(), meta)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/la_record.py", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    exporting = commands.add_parser("export", help="write the record file from a la_bench sweep's Tune folder")
    exporting.add_argument("experiment", help="the la_bench sweep's Tune folder (runs/la_bench-<data>-record)")
    exporting.add_argument("--out", help="parquet file (default benchmarks/data/la_bench_<data>.parquet)")
    exporting.add_argument("--trained-with", default="unknown",
                           help="the code the trials ran, for sweeps whose latune_sweep.json predates its provenance "
                                "list (e.g. commits 932d426..b641ec5)")
    exporting.add_argument("--extend", action="store_true", help="add these runs to the ones the file holds")
    going_on = commands.add_parser("continue", help="record the la_bench points the file lacks and add them")
    going_on.add_argument("--data", default="digits", help="the data set (default digits)")
    going_on.add_argument("--out", help="parquet file (default benchmarks/data/la_bench_<data>.parquet)")
    going_on.add_argument("--storage", default="runs", help="where the sweep of the missing points runs")
    args = parser.parse_args(argv)
    if args.command == "continue":
        return continue_record(args.data, Path(args.out or DEFAULT_OUT / f"la_bench_{args.data}.parquet"),
                               Path(args.storage).resolve())
    experiment = Path(args.experiment)
    if not experiment.is_dir():
        parser.error(f"experiment: {experiment} is not a folder")
    data = experiment.name.split("-")[1] if experiment.name.startswith("la_bench-") else "digits"
    out = Path(args.out) if args.out else DEFAULT_OUT / f"la_bench_{data}.parquet"
    command = "latune sweep la_bench" + ("" if data == "digits" else f" --data {data}") + \
        f" --no-mlflow --name {experiment.name}; python benchmarks/la_record.py export {args.experiment}"
    table = export(experiment, out, command, args.trained_with, extend=args.extend)
    runs = table.drop_duplicates([*SEARCH_KEYS, "seed"])
    print(f"{out}: {len(runs)} runs ({int((runs['seed'] == 0).sum())} configurations at seed 0), "
          f"{len(table)} rows, {out.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
