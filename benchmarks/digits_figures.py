"""The digits figures of docs/figures.md: the shipped sweeps run on the embedded digits data, their results kept
under benchmarks/results/digits_figures/ and the page's tables written from those files alone.

Each sweep runs through ``python -m latune.sweep NAME --data digits`` (local Ray, MLflow off), one after another.
What the tables need is kept under RESULTS: each sweep's results table (``NAME.parquet``), for paper_table every
trial's per-image test outcomes (``paper_table-outcomes.npz``, for the report's intervals), and ``figures.json``
(sizes, times, versions, the commands). ``tables.md`` is then written from those files: per sweep, every trial with
the keys its space varies, its validation and test objectives and whether it is on the front; for paper_table the
report of latune.analysis.report with its intervals.

    python benchmarks/digits_figures.py --out figs/                  # every sweep (about an hour on 2 CPU cores)
    python benchmarks/digits_figures.py --out figs/                  # again: resumes where it stopped
    python benchmarks/digits_figures.py --tables-only                # tables.md from the committed results
    python benchmarks/digits_figures.py --out /tmp/f --small         # a tiny run, for the tests

It resumes: a sweep whose results.parquet exists is not run again, an interrupted one continues
(``latune sweep --resume``), and figures.json is rewritten after each sweep. The last line printed is one JSON
object: the sweeps run and the files written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = ROOT / "benchmarks" / "results" / "digits_figures"
SWEEPS = ("delta_eps_grid", "adv_vs_la", "transform_sets", "pareto", "paper_table")
WITH_OUTCOMES = ("paper_table",)  # sweeps whose report has intervals: their per-image outcomes are kept
# --small: what the test runs (a few dozen images, 1 epoch, short attacks, two sweeps)
SMALL_SWEEPS = ("adv_vs_la", "paper_table")
SMALL_SETS = ("optim.epochs=1", "data.limit_train=96", "eval.max_images=48", "eval.steps=3", "attack.steps=2",
              "eval.corruptions=gaussian_noise")
OBJECTIVE_COLUMNS = (("clean", "clean_acc"), ("PGD", "robust_acc"), ("robust SD", "robust_class_error_sd"))


def _git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    return done.stdout.strip() or "unknown"


def run_sweep(name: str, out: Path, sets: list[str]) -> float | None:
    """``latune sweep NAME --data digits`` into OUT/runs/NAME-digits; None when its results.parquet exists (run
    before), else its wall seconds. Exits 1 when the sweep fails."""
    experiment = out / "runs" / f"{name}-digits"
    if (experiment / "results.parquet").is_file():
        return None
    resume = ["--resume"] if experiment.is_dir() else []
    command = [sys.executable, "-m", "latune.sweep", name, "--data", "digits", "--storage", str(out / "runs"),
               "--name", experiment.name, *resume, "--no-mlflow", "--verbose", "0",
               *[a for s in sets for a in ("--set", s)]]
    log = out / f"{experiment.name}{'.resumed' if resume else ''}.log"
    started = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
        raise SystemExit(f"error: latune sweep {name} failed (exit {done.returncode}); {log}:\n{tail}")
    return round(time.perf_counter() - started, 1)


def keep_results(name: str, out: Path, results: Path) -> list[str]:
    """The sweep's results.parquet (and for WITH_OUTCOMES its trials' per-image outcomes) copied under results."""
    import pandas as pd

    from latune.analysis.interval_report import find_outcomes, save_trial_outcomes

    experiment = out / "runs" / f"{name}-digits"
    results.mkdir(parents=True, exist_ok=True)
    table = pd.read_parquet(experiment / "results.parquet")
    table.drop(columns=[c for c in ("hostname", "node_ip", "node_id") if c in table]).to_parquet(
        results / f"{name}.parquet")
    kept = [f"{name}.parquet"]
    if name in WITH_OUTCOMES:
        found = find_outcomes(experiment, table["trial_id"])
        save_trial_outcomes(results / f"{name}-outcomes.npz", found)
        kept.append(f"{name}-outcomes.npz")
    return kept


def _number(value) -> str:
    return "–" if value is None or (isinstance(value, float) and not np.isfinite(value)) else f"{value:.3f}"


def trial_table(table) -> list[str]:
    """Markdown lines: every trial (grid order) with the config keys that vary across the sweep, its validation
    and test objectives, and • on the validation front (pareto_rank 0)."""
    from latune.analysis.report import roles
    from latune.config import Config, to_flat

    known = set(to_flat(Config()))
    varying = [c for c in table.columns if c in known and c not in ("data.data_dir",)
               and table[c].astype(str).nunique() > 1]
    finished = table[table["status"] == "TERMINATED"].sort_values("trial_id", kind="stable").copy()
    finished["role"] = roles(finished)
    heads = ["arm", *varying, *(f"val {h}" for h, _ in OBJECTIVE_COLUMNS), *(f"test {h}" for h, _ in OBJECTIVE_COLUMNS),
             "front"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for _, row in finished.iterrows():
        cells = [row["role"], *(f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in varying)]
        cells += [_number(row.get(c)) for _, c in OBJECTIVE_COLUMNS]
        cells += [_number(row.get(f"test_{c}")) for _, c in OBJECTIVE_COLUMNS]
        cells.append("•" if row.get("pareto_rank") == 0 else "")
        lines.append("| " + " | ".join(cells) + " |")
    left = len(table) - len(finished)
    return lines + ([f"", f"{left} of {len(table)} trials did not finish and are left out."] if left else [])


def write_tables(results: Path, bootstrap: int | None = None) -> list[str]:
    """tables.md from RESULTS/figures.json and the files it names alone. Returns the files written."""
    import pandas as pd

    from latune.analysis.interval_report import load_trial_outcomes
    from latune.analysis.report import pgd_label, render

    figures = json.loads((results / "figures.json").read_text())
    bootstrap = figures.get("bootstrap", 1000) if bootstrap is None else bootstrap
    parts = [f"<!-- generated by `python benchmarks/digits_figures.py --tables-only` from {results.name}/ -->", ""]
    for sweep in figures["sweeps"]:
        table = pd.read_parquet(results / sweep["results"])
        finished = int((table["status"] == "TERMINATED").sum())
        wall = f"{sweep['wall_s'] / 60:.1f} min" if sweep.get("wall_s") else "time not recorded"
        parts += [f"## {sweep['name']}", "", f"`{sweep['command']}`: {finished} of {len(table)} trials finished, "
                  f"{wall}. Validation (val) and test splits; objectives as fractions; PGD: {pgd_label(table)} at "
                  "the run's evaluation radius; robust SD: the SD of the per-class robust errors.", ""]
        parts += trial_table(table) + [""]
        if sweep.get("outcomes"):
            report = render(table, title=sweep["name"], pgd_label=pgd_label(table),
                            outcomes=load_trial_outcomes(results / sweep["outcomes"]), replicates=bootstrap)
            body = report.split("\n", 1)[1].strip()
            parts += ["### The report (`latune report`)", "",
                      "\n".join(("##" + line) if line.startswith("#") else line for line in body.splitlines()), ""]
    (results / "tables.md").write_text("\n".join(parts).rstrip("\n") + "\n")
    return ["tables.md"]


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="folder for the sweeps and their logs (needed unless --tables-only)")
    parser.add_argument("--results", help="folder for the results files, figures.json and tables.md (default "
                        f"{DEFAULT_RESULTS.relative_to(ROOT)}; with --small OUT/results)")
    parser.add_argument("--tables-only", action="store_true", help="write tables.md from RESULTS alone; run nothing")
    parser.add_argument("--sweeps", help=f"comma list, run in this order (default {','.join(SWEEPS)})")
    parser.add_argument("--bootstrap", type=int, help="bootstrap replicates of paper_table's intervals (default "
                        "figures.json's with --tables-only, else 1000)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides for every trial of every sweep (repeatable)")
    parser.add_argument("--small", action="store_true", help="a test-sized run: sweeps " + ",".join(SMALL_SWEEPS)
                        + " with " + " ".join(f"--set {s}" for s in SMALL_SETS) + ", 200 bootstrap replicates")
    args = parser.parse_args(argv)
    if args.small:
        args.sweeps = args.sweeps or ",".join(SMALL_SWEEPS)
        args.sets = [*SMALL_SETS, *args.sets]
        args.bootstrap = 200 if args.bootstrap is None else args.bootstrap
    if not args.tables_only and not args.out:
        parser.error("--out: required unless --tables-only")
    args.sweeps = [s.strip() for s in (args.sweeps or ",".join(SWEEPS)).split(",") if s.strip()]
    unknown = [s for s in args.sweeps if s not in SWEEPS]
    if unknown:
        parser.error(f"--sweeps: unknown sweep {unknown[0]!r}; allowed: {', '.join(SWEEPS)}")
    if (args.bootstrap or 0) < 0:
        parser.error("--bootstrap: >= 0")
    args.results = Path(args.results or (Path(args.out) / "results" if args.small else DEFAULT_RESULTS)).resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.tables_only:
        if not (args.results / "figures.json").is_file():
            raise SystemExit(f"error: --results: {args.results} has no figures.json (run the sweeps first)")
        print(json.dumps({"results": str(args.results), "written": write_tables(args.results, args.bootstrap)}))
        return 0
    import torch

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / "figures.json"
    figures = {"data": "digits", "sets": args.sets, "bootstrap": 1000 if args.bootstrap is None else args.bootstrap,
               "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                           "torch": torch.__version__, "python": platform.python_version()}, "sweeps": []}
    saved = json.loads(path.read_text()) if path.is_file() else {}
    if saved.get("sets") == args.sets:  # sweeps run before with the same overrides: kept, in order
        figures["sweeps"] = saved.get("sweeps", [])
    for name in args.sweeps:
        wall = run_sweep(name, out, args.sets)
        earlier = next((s for s in figures["sweeps"] if s["name"] == name), {})
        files = keep_results(name, out, args.results)
        command = " ".join(["latune sweep", name, "--data digits", *(f"--set {s}" for s in args.sets)])
        entry = {"name": name, "command": command, "results": files[0],
                 "outcomes": files[1] if len(files) > 1 else None,
                 "wall_s": wall if wall is not None else earlier.get("wall_s"),
                 "commit": earlier.get("commit") if wall is None else _git_commit()}
        figures["sweeps"] = [s for s in figures["sweeps"] if s["name"] != name] + [entry]
        path.write_text(json.dumps(figures, indent=2))  # each sweep committable as soon as it is done
        print(f"{name}: {entry['wall_s']} s", flush=True)
    order = {name: i for i, name in enumerate(SWEEPS)}
    figures["sweeps"].sort(key=lambda s: order[s["name"]])
    path.write_text(json.dumps(figures, indent=2))
    written = write_tables(args.results)
    print(json.dumps({"results": str(args.results), "sweeps": [s["name"] for s in figures["sweeps"]],
                      "written": ["figures.json", *written]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
