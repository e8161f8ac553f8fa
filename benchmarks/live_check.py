"""The live check of the replay: run the shipped default search for real, at the record's size, and score it alike.

For each seed, the shipped sweep (``--sweep``, default ``pareto``: continuous ranges, not the record's grid) runs
through ``latune sweep`` with its sampler seeded by that seed and the record's evaluation settings (the base
keys of la_bench the sweep does not search: PGD-5 training, PGD-10 evaluation, test curves every epoch), on
the record's data, with MLflow off. Its trials' results are replayed in the order Tune received them: after
every trial that trains its whole budget, the front is chosen on validation (feasible trials) and scored on
test as benchmarks/replay_search.py scores a replayed sweep (relative to the record's oracle, same reference
point), against the epochs every trial has spent so far. ``python benchmarks/replay_search.py --live
live_check.json`` draws the curves over the replay's band and says how much of each lies inside it.

    python benchmarks/live_check.py                       # pareto, seeds 0 and 1 (about 25 min each on 2 cores)
    python benchmarks/live_check.py --small               # 3 trials of 2 epochs on 256 images: for the tests

A seed whose sweep folder exists is resumed (``--resume``) or, when finished, only read, so an interrupted check
continues where it stopped. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import la_record  # noqa: E402
import replay_search  # noqa: E402

SMALL = {"optim.epochs": 2, "data.limit_train": 256, "eval.max_images": 64}  # --small's base keys


def sweep_file(name: str, seed: int, record_base: dict[str, Any], folder: Path, small: bool) -> Path:
    """The shipped sweep with its sampler seeded and the record's evaluation settings, written into ``folder``."""
    from latune.sweep.spec import resolve_sweep_path

    raw = yaml.safe_load(resolve_sweep_path(name).read_text())
    searched = set(raw.get("space") or {})
    extra = {k: v for k, v in record_base.items() if k not in searched and k != "data.name"}
    raw["base"] = {**(raw.get("base") or {}), **extra, **(SMALL if small else {})}
    raw["search"] = {**raw["search"], "seed": seed, **({"num_samples": 3} if small else {})}
    raw["name"] = f"live_{name}_seed{seed}"
    path = folder / f"{raw['name']}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def run_sweep(path: Path, storage: Path, name: str) -> Path:
    """Run (or resume, or only read) one seed's sweep; its Tune folder."""
    experiment = storage / name
    if not (experiment / "results.parquet").is_file():
        resume = ["--resume"] if experiment.is_dir() else []
        command = [sys.executable, "-m", "latune.sweep", str(path), "--no-mlflow", "--storage", str(storage),
                   "--name", name, "--verbose", "0", *resume]
        print("$", " ".join(command), flush=True)
        subprocess.run(command, check=True)
    return experiment


def curve(experiment: Path, scorer: replay_search.Scorer, constraints: Sequence[Any]) -> dict[str, list]:
    """Test hypervolume (relative) of the validation front after each finished trial, against epochs spent."""
    results = []
    for folder in (p for p in experiment.iterdir() if (p / "result.json").is_file()):
        budget = int(json.loads((folder / "params.json").read_text()).get("optim.epochs") or 0)
        for line in (folder / "result.json").read_text().splitlines():
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(result.get("epoch"), int):
                results.append((result["timestamp"], result, budget or result["epoch"]))
    results.sort(key=lambda item: item[0])
    budget = max((b for _, _, b in results), default=0)
    epochs, hv, finished = [0], [0.0], []
    for spent, (_, result, _) in enumerate(results, start=1):
        if result["epoch"] == budget and replay_search._feasible(result, constraints):
            finished.append(([result[m] for m in replay_search.OBJECTIVES],
                             [result[f"test_{m}"] for m in replay_search.OBJECTIVES]))
            epochs.append(spent)
            hv.append(scorer.chosen_on_validation(finished))
    return {"epochs": epochs, "hv": [round(h, 5) for h in hv], "finished_feasible": len(finished),
            "epochs_spent": len(results)}


def main(argv: Sequence[str] | None = None) -> int:
    from latune.analysis.constraints import parse_constraints

    parser = argparse.ArgumentParser(prog="python benchmarks/live_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", default="pareto", help="the shipped sweep whose defaults are checked")
    parser.add_argument("--seeds", default="0,1", help="sampler seeds, one live sweep each")
    parser.add_argument("--record", default=str(replay_search.DEFAULT_RECORD), help="the record (its size, scorer)")
    parser.add_argument("--storage", default="runs", help="folder of the live sweeps (resumable)")
    parser.add_argument("--out", default=str(replay_search.DEFAULT_OUT / "live_check.json"))
    parser.add_argument("--small", action="store_true", help="3 tiny trials per seed: for the tests")
    args = parser.parse_args(argv)
    record = la_record.load(args.record)
    constraints = parse_constraints(replay_search.CONSTRAINTS, list(la_record.METRICS))
    scorer = replay_search.oracle_scorer(record, constraints)
    storage, out = Path(args.storage).resolve(), Path(args.out)
    curves = []
    for seed in (int(s) for s in args.seeds.split(",")):
        name = f"live-{args.sweep}-seed{seed}" + ("-small" if args.small else "")
        path = sweep_file(args.sweep, seed, dict(record.meta.get("sweep", {}).get("base", {})),
                          out.parent / "live_sweeps", args.small)
        curves.append({"seed": seed, **curve(run_sweep(path, storage, name), scorer, constraints)})
    summary = {"sweep": args.sweep, "record": str(args.record), "small": args.small, "curves": curves}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps({"sweep": args.sweep, "out": str(out),
                      "final_hv": [c["hv"][-1] for c in curves], "epochs": [c["epochs_spent"] for c in curves]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
