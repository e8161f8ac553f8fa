"""Sweep efficiency: the same N trials run in-process one after another, and as a Ray Tune sweep.

efficiency = (Σ in-process trial seconds / concurrency) ÷ sweep wall seconds

1.0 means Ray adds nothing over running the trials by hand on the same cores; the gap is Ray's
start-up, actor creation, per-epoch reporting and checkpointing. Each trial uses one thread in all
settings (the sweep gives a trial one CPU and latune sets torch's threads to match), so the work per
trial is the same. Goal on the 2-core machine: >= 0.9 for trials of >= 20 s.

The same trials also run as plain processes, ``concurrency`` at a time (multiprocessing, no Ray): the
hardware's own ceiling, since trials side by side share caches and memory bandwidth (and, on a VM, maybe
one physical core). ``efficiency_plain`` is that run's efficiency by the same formula, and
``ray_vs_plain`` = plain wall / sweep wall is what Ray itself costs.

    python benchmarks/bench_sweep.py                 # 4 trials of ~20-30 s, concurrency 2
    python benchmarks/bench_sweep.py --quick         # tiny, for the tests
The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch


def _trial_configs(args: argparse.Namespace) -> list[dict]:
    base = {"data.name": "digits", "optim.epochs": args.epochs, "data.limit_train": args.limit_train,
            "eval.max_images": args.eval_images, "la.delta": 0.1, "device": "cpu"}
    return [{**base, "seed": seed} for seed in range(args.trials)]


def _in_process(configs: list[dict]) -> list[float]:
    from latune.config import from_flat
    from latune.core.train import train

    torch.set_num_threads(1)  # what each sweep trial gets (resources cpu: 1)
    seconds = []
    for flat in configs:
        started = time.perf_counter()
        for _ in train(from_flat(flat)):
            pass
        seconds.append(time.perf_counter() - started)
    return seconds


def _train_one(flat: dict) -> float:
    return _in_process([flat])[0]  # one thread, as _in_process sets


def _plain_parallel(configs: list[dict], concurrency: int) -> tuple[float, list[float]]:
    """(wall seconds, per-trial seconds) of the trials as plain processes, ``concurrency`` at a time."""
    import multiprocessing

    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(concurrency) as pool:  # fresh interpreters, like Ray workers
        seconds = pool.map(_train_one, configs, chunksize=1)
    return time.perf_counter() - started, seconds


def _as_sweep(configs: list[dict], concurrency: int, storage: str) -> tuple[float, float]:
    """(wall seconds including Ray start-up, wall seconds of tuner.fit alone)."""
    import ray

    from latune.sweep.run import run_sweep
    from latune.sweep.spec import parse_sweep

    base = {k: v for k, v in configs[0].items() if k != "seed"}
    spec = parse_sweep({"name": "bench", "base": base, "space": {"seed": [c["seed"] for c in configs]},
                        "resources": {"cpu": 1, "gpu": 0}, "search": {"max_concurrent": concurrency}})
    started = time.perf_counter()
    ray.init(num_cpus=concurrency, include_dashboard=False, log_to_driver=False)
    ready = time.perf_counter()
    outcome = run_sweep(spec, storage=storage, verbose=0)
    finished = time.perf_counter()
    ray.shutdown()
    assert (outcome.table["status"] == "TERMINATED").all(), outcome.table[["trial_id", "status", "error"]]
    return finished - started, finished - ready


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--limit-train", type=int, default=0, help="training images per trial (0 = all 1257)")
    parser.add_argument("--eval-images", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2 tiny trials (a smoke test, not a measurement)")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs, args.limit_train, args.eval_images = 2, 1, 128, 64

    configs = _trial_configs(args)
    trial_seconds = _in_process(configs)
    plain_wall, plain_trial_seconds = _plain_parallel(configs, args.concurrency)
    with tempfile.TemporaryDirectory() as storage:
        sweep_wall, fit_wall = _as_sweep(configs, args.concurrency, storage)
    ideal = sum(trial_seconds) / args.concurrency
    figures = {
        "trials": args.trials, "concurrency": args.concurrency, "epochs": args.epochs,
        "trial_s_median": statistics.median(trial_seconds), "trial_s": trial_seconds,
        "ideal_s": ideal, "sweep_wall_s": sweep_wall, "fit_wall_s": fit_wall,
        "efficiency": ideal / sweep_wall, "efficiency_excluding_ray_start": ideal / fit_wall,
        "plain_wall_s": plain_wall, "plain_trial_s_median": statistics.median(plain_trial_seconds),
        "efficiency_plain": ideal / plain_wall, "ray_vs_plain": plain_wall / sweep_wall,
        "load_avg_1min": os.getloadavg()[0],
        "goal": 0.9, "cores": os.cpu_count(), "torch": torch.__version__,
    }
    figures["goal_met"] = figures["efficiency"] >= 0.9 and figures["trial_s_median"] >= 20
    print(f"{'in-process trial (median)':<32} {figures['trial_s_median']:8.1f} s  x{args.trials}")
    print(f"{'ideal at concurrency ' + str(args.concurrency):<32} {ideal:8.1f} s")
    print(f"{'plain processes, ' + str(args.concurrency) + ' at a time':<32} {plain_wall:8.1f} s   efficiency "
          f"{figures['efficiency_plain']:.3f} (trial median {figures['plain_trial_s_median']:.1f} s side by side)")
    print(f"{'sweep wall (incl. ray.init)':<32} {sweep_wall:8.1f} s   efficiency {figures['efficiency']:.3f}")
    print(f"{'sweep wall (tuner.fit only)':<32} {fit_wall:8.1f} s   efficiency "
          f"{figures['efficiency_excluding_ray_start']:.3f}")
    print(f"{'Ray sweep vs plain processes':<32} {figures['ray_vs_plain']:8.3f}   (1.0 = Ray costs nothing)")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
