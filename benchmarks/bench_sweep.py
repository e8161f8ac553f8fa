#!/usr/bin/env python
"""What a sweep costs on top of its trials: Ray's cost with MLflow off, and MLflow's own cost, measured apart.

The same N trials (digits, LA on, one torch thread each) run three ways, ``concurrency`` at a time:

* ``plain`` -- plain processes (a multiprocessing spawn pool, no Ray, no MLflow): the hardware's own ceiling
  for these trials side by side;
* ``ray`` -- latune's Ray Tune sweep (``run_sweep``) with MLflow off (``--no-mlflow``): per-epoch reports,
  checkpoints, results.parquet;
* ``ray_mlflow`` -- the same sweep with MLflow on (a fresh sqlite store per run).

Each run is a fresh interpreter (imports, Ray start-up and MLflow import all count), timed from outside as a
whole. The three alternate run by run (plain, ray, ray_mlflow, plain, ...) for ``--repeats`` rounds so machine
noise hits all alike, and the medians are compared:

* Ray's cost = ``ray`` vs ``plain`` (MLflow off on both sides);
* MLflow's cost = ``ray_mlflow`` vs ``ray`` (the same Ray sweep on both sides).

Goal (2-core machine, trials of >= 20 s): the Ray sweep with MLflow off within 10% of the plain processes
(``ray / plain <= 1/0.9``); reported, not asserted, and not judged for shorter trials.

    python benchmarks/bench_sweep.py                 # 4 trials of 2 epochs on all of digits, concurrency 2, 3 rounds
    python benchmarks/bench_sweep.py --quick         # tiny, for the tests (a smoke test, not a measurement)
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODES = {"plain": "plain processes", "ray": "Ray sweep, MLflow off", "ray_mlflow": "Ray sweep, MLflow on"}
GOAL_RAY_VS_PLAIN, GOAL_MIN_TRIAL_S = 0.9, 20.0  # plain wall / Ray wall (MLflow off), judged for trials >= 20 s


def _trial_configs(args: argparse.Namespace) -> list[dict]:
    base = {"data.name": "digits", "optim.epochs": args.epochs, "data.limit_train": args.limit_train,
            "eval.max_images": args.eval_images, "la.delta": 0.1, "device": "cpu"}
    if args.quick:  # seconds per trial: PGD-2 in training and evaluation
        base.update({"attack.steps": 2, "eval.steps": 2})
    return [{**base, "seed": seed} for seed in range(args.trials)]


def _train_one(flat: dict) -> float:
    """Seconds of one trial in this process, on one torch thread (what a sweep trial with cpu: 1 gets)."""
    import torch

    from latune.config import from_flat
    from latune.core.train import train

    torch.set_num_threads(1)
    started = time.perf_counter()
    for _ in train(from_flat(flat)):
        pass
    return time.perf_counter() - started


def _run_plain(configs: list[dict], concurrency: int) -> dict[str, Any]:
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(concurrency) as pool:  # fresh interpreters, like Ray workers
        return {"trial_s": pool.map(_train_one, configs, chunksize=1)}


def _run_ray(configs: list[dict], concurrency: int, mlflow: bool) -> dict[str, Any]:
    import ray

    from latune.sweep.run import run_sweep
    from latune.sweep.spec import parse_sweep

    base = {k: v for k, v in configs[0].items() if k != "seed"}
    spec = parse_sweep({"name": "bench", "base": base, "space": {"seed": [c["seed"] for c in configs]},
                        "resources": {"cpu": 1, "gpu": 0}, "search": {"max_concurrent": concurrency}})
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as folder:
        started = time.perf_counter()
        ray.init(address="local", num_cpus=concurrency, include_dashboard=False, log_to_driver=False)
        ready = time.perf_counter()
        outcome = run_sweep(spec, storage=os.path.join(folder, "runs"), verbose=0, mlflow=mlflow,
                            tracking_uri=f"sqlite:///{folder}/mlflow.db")
        finished = time.perf_counter()
        ray.shutdown()
    statuses = list(outcome.table["status"])
    if statuses.count("TERMINATED") != len(configs):
        raise RuntimeError(f"bench_sweep: not every trial finished: {statuses}")
    return {"ray_init_s": ready - started, "fit_s": finished - ready}


def _one(mode: str, args: argparse.Namespace) -> None:
    """Child process: run the trials one way and print what it measured inside as JSON."""
    sys.path.insert(0, str(ROOT))  # run from a checkout without installing
    configs = _trial_configs(args)
    figures = (_run_plain(configs, args.concurrency) if mode == "plain"
               else _run_ray(configs, args.concurrency, mlflow=mode == "ray_mlflow"))
    print(json.dumps(figures))


def _timed_child(mode: str, argv: list[str]) -> dict[str, Any]:
    """Wall seconds of one fresh-interpreter run of ``mode`` (start-up included) and what it measured inside."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    # in a scratch folder: MLflow puts a sqlite store's artifacts under ./mlruns of the working directory
    with tempfile.TemporaryDirectory(prefix="bench-sweep-cwd-") as cwd:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", mode, *argv],
                              capture_output=True, text=True, env=env, cwd=cwd)
        wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"bench_sweep: the {mode} run failed:\n{proc.stderr[-3000:]}")
    return {"wall_s": wall, **json.loads(proc.stdout.strip().splitlines()[-1])}


def _compare(slow: list[float], fast: list[float]) -> dict[str, Any]:
    """``slow`` vs ``fast`` walls: ratio and difference of the medians, and each round's ratio."""
    return {"ratio": statistics.median(slow) / statistics.median(fast),
            "extra_s": statistics.median(slow) - statistics.median(fast),
            "per_round": [s / f for s, f in zip(slow, fast)]}


def summarize(runs: dict[str, list[dict[str, Any]]], args: argparse.Namespace) -> dict[str, Any]:
    """Medians per mode, Ray's cost (ray vs plain) and MLflow's cost (ray_mlflow vs ray), and the goal."""
    walls = {mode: [r["wall_s"] for r in rs] for mode, rs in runs.items()}
    trial_s = [s for r in runs["plain"] for s in r["trial_s"]]
    ray_cost, mlflow_cost = _compare(walls["ray"], walls["plain"]), _compare(walls["ray_mlflow"], walls["ray"])
    judged = statistics.median(trial_s) >= GOAL_MIN_TRIAL_S and not args.quick
    return {
        "trials": args.trials, "concurrency": args.concurrency, "epochs": args.epochs,
        "limit_train": args.limit_train, "repeats": args.repeats, "quick": args.quick,
        "wall_s": walls, "wall_s_median": {m: statistics.median(w) for m, w in walls.items()},
        "plain_trial_s_median": statistics.median(trial_s),
        "ray_init_s_median": {m: statistics.median(r["ray_init_s"] for r in runs[m]) for m in ("ray", "ray_mlflow")},
        "ray_cost_mlflow_off": ray_cost, "mlflow_cost_same_ray_sweep": mlflow_cost,
        "goal_plain_vs_ray": GOAL_RAY_VS_PLAIN, "goal_min_trial_s": GOAL_MIN_TRIAL_S,
        "goal_met": (1 / ray_cost["ratio"] >= GOAL_RAY_VS_PLAIN) if judged else None,
        "cores": os.cpu_count(),
    }


def print_summary(f: dict[str, Any]) -> None:
    load = f["loadavg_1min"]
    print(f"{f['trials']} digits trials of {f['epochs']} epochs (LA on, 1 thread each), {f['concurrency']} at a time, "
          f"{f['repeats']} interleaved rounds, {f['cores']} cores; 1-min load average {load['start']:.1f} -> "
          f"{load['end']:.1f}; each run a fresh interpreter, wall from outside")
    print(f"{'run':28s} {'wall s (median)':>16s}  each round")
    for mode, label in MODES.items():
        walls = ", ".join(f"{w:.1f}" for w in f["wall_s"][mode])
        print(f"{label:28s} {f['wall_s_median'][mode]:16.1f}  [{walls}]")
    for key, what in (("ray_cost_mlflow_off", "Ray's cost, MLflow off on both sides (Ray sweep / plain processes)"),
                      ("mlflow_cost_same_ray_sweep", "MLflow's cost, same Ray sweep (MLflow on / off)")):
        c = f[key]
        rounds = ", ".join(f"{r:.2f}" for r in c["per_round"])
        print(f"{what}: {c['ratio']:.2f}x, {c['extra_s']:+.1f} s per sweep [per round {rounds}]")
    met = f["goal_met"]
    verdict = ("not judged (--quick, or trials shorter than that)" if met is None else "met" if met else "NOT met")
    print(f"goal: plain / Ray sweep (MLflow off) >= {f['goal_plain_vs_ray']} for trials >= {f['goal_min_trial_s']:g} s "
          f"(trial median {f['plain_trial_s_median']:.1f} s side by side): {verdict}")


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--limit-train", type=int, default=0, help="training images per trial (0 = all 1257)")
    parser.add_argument("--eval-images", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of the three runs (default 3)")
    parser.add_argument("--quick", action="store_true", help="2 tiny trials, 1 round (a smoke test)")
    parser.add_argument("--child", choices=tuple(MODES), help=argparse.SUPPRESS)  # internal: one run
    args = parser.parse_args(argv)
    if args.quick:
        args.trials, args.epochs, args.limit_train, args.eval_images, args.repeats = 2, 1, 128, 64, 1
    if min(args.trials, args.concurrency, args.epochs, args.repeats) < 1:
        parser.error("--trials, --concurrency, --epochs, --repeats: integers >= 1")
    child_argv = ["--quick"] if args.quick else [
        f"--trials={args.trials}", f"--concurrency={args.concurrency}", f"--epochs={args.epochs}",
        f"--limit-train={args.limit_train}", f"--eval-images={args.eval_images}"]
    return args, child_argv


def main(argv: list[str] | None = None) -> int:
    args, child_argv = parse_args(argv)
    if args.child:
        _one(args.child, args)
        return 0
    load_start = os.getloadavg()[0]
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for round_ in range(args.repeats):
        for mode in MODES:
            runs[mode].append(_timed_child(mode, child_argv))
            print(f"  round {round_} {mode:10s} {runs[mode][-1]['wall_s']:7.1f} s", file=sys.stderr, flush=True)
    figures = summarize(runs, args)
    figures["runs"] = runs
    figures["loadavg_1min"] = {"start": load_start, "end": os.getloadavg()[0]}
    print_summary(figures)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
