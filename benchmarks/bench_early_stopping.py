"""Early stopping against full budgets: hypervolume of the Pareto front per trained epoch, on digits.

For each seed, the shipped ``pareto`` sweep (its Optuna sampler, NSGA-II when docs/early-stopping.md was
measured; its constraint robust_acc >= 0.2) runs twice with the same sampler seed and training seed: (a) N trials
that all train the whole budget, and (b) M trials under early stopping (latune.sweep.scheduler: Pareto-rank
ASHA, grace and η below), of which only
what fits in (a)'s total epochs counts. Every epoch any trial trains is one unit of compute; the front's
hypervolume (full-budget feasible trials only, validation and test split, one common reference point
``latune.analysis.pareto.default_reference``: 0 for accuracies, 1 for the SD) is followed against the
cumulative epochs, ordered by Tune's timestamps (seconds; a trial finishing in the same second as other
epochs counts them all first). Printed per seed and over seeds: the fraction of (a)'s epochs at which
(b) first reaches (a)'s final hypervolume (goal <= 0.5; "not reached" when it does not within (a)'s
epochs), and (b)'s hypervolume at (a)'s budget.

    python benchmarks/bench_early_stopping.py                # N=8 vs M=24 trials of 6 epochs, 3 seeds (~15 min per
                                                             # seed on 2 busy cores; docs/early-stopping.md's figures)
    python benchmarks/bench_early_stopping.py --small        # tiny, for the tests
The last line printed is one JSON object with the figures; --out names the PNG of both curves.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

OBJECTIVES = {"clean_acc": "max", "robust_acc": "max", "robust_class_error_sd": "min"}
SPLITS = {"validation": "", "test": "test_"}  # split -> metric prefix in the trials' final results


def _specs(args: argparse.Namespace, seed: int) -> tuple[Any, Any]:
    """(a) and (b): the shipped pareto sweep at this size, seed and budget; (b) with early stopping."""
    from latune.sweep.rungs import parse_early_stopping
    from latune.sweep.spec import load_sweep

    overrides = {"optim.epochs": args.epochs, "data.limit_train": args.limit_train, "eval.max_images": args.eval_images,
                 "eval.steps": args.eval_steps, "attack.steps": args.attack_steps, "seed": seed}
    spec = load_sweep("pareto", data="digits", overrides=overrides)
    full = replace(spec, name="bench_full", seed=seed, num_samples=args.trials, max_concurrent=args.concurrency,
                   cpu=1.0, gpu=0.0, max_retries=0, early_stopping=None)
    stopping = parse_early_stopping({"grace_epochs": args.grace, "reduction_factor": args.eta}, budget=args.epochs,
                                    searched=[d.key for d in spec.space])
    return full, replace(full, name="bench_es", num_samples=args.es_trials, early_stopping=stopping)


def curve(reports: list[tuple[float, str]], finished: dict[str, tuple[float, dict[str, list[float]]]]
          ) -> list[tuple[int, dict[str, float]]]:
    """[(cumulative epochs, {split: hypervolume})] at the start and after each full-budget feasible trial.

    ``reports``: (timestamp, trial id) of every epoch trained; ``finished``: trial id -> (timestamp of its
    last epoch, {split: objective values}) for the trials on which the front is built.
    """
    from latune.analysis.pareto import default_reference, hypervolume

    directions = list(OBJECTIVES.values())
    reference = default_reference(directions)
    stamps = sorted(stamp for stamp, _ in reports)
    points: dict[str, list[list[float]]] = {split: [] for split in SPLITS}
    found = [(0, {split: 0.0 for split in SPLITS})]
    for trial_id, (stamp, values) in sorted(finished.items(), key=lambda item: (item[1][0], item[0])):
        epochs = sum(1 for s in stamps if s <= stamp)  # every epoch trained by then, ties included
        for split in SPLITS:
            points[split].append(values[split])
        found.append((epochs, {split: hypervolume(points[split], directions, reference) for split in SPLITS}))
    return found


def _run(spec: Any, storage: str, name: str) -> dict[str, Any]:
    """Run one sweep; its curve, total epochs and trial counts."""
    from latune.sweep.run import run_sweep
    from latune.tracking.sync import read_trials

    outcome = run_sweep(spec, storage=storage, name=name, verbose=0, mlflow=False)
    table = outcome.table.set_index("trial_id")
    reports, finished = [], {}
    for record in read_trials(outcome.experiment_path):
        stamps = [float(r["timestamp"]) for r in record.history]
        reports += [(stamp, record.trial_id) for stamp in stamps]
        row = table.loc[record.trial_id] if record.trial_id in table.index else None
        if row is not None and row["status"] == "TERMINATED" and bool(row["feasible"]):
            finished[record.trial_id] = (max(stamps), {split: [float(row[f"{prefix}{m}"]) for m in OBJECTIVES]
                                                       for split, prefix in SPLITS.items()})
    statuses = table["status"].value_counts().to_dict()
    return {"curve": curve(reports, finished), "epochs": len(reports), "statuses": statuses}


def _hv_at(points: list[tuple[int, dict[str, float]]], epochs: float, split: str) -> float:
    """Hypervolume of a curve once ``epochs`` epochs were trained (the last point at or before them)."""
    return max(hv[split] for e, hv in points if e <= epochs)


def _compare(full: dict[str, Any], stopping: dict[str, Any]) -> dict[str, Any]:
    """Per split: (a)'s final HV, (b)'s HV within (a)'s epochs, and the fraction of them (b) needed."""
    budget = full["epochs"]
    figures: dict[str, Any] = {"full_epochs": budget, "es_epochs": stopping["epochs"]}
    for split in SPLITS:
        target = full["curve"][-1][1][split]
        within = [hv[split] for epochs, hv in stopping["curve"] if epochs <= budget]
        reached = [epochs for epochs, hv in stopping["curve"] if epochs <= budget and hv[split] >= target - 1e-12]
        figures[split] = {"full_hv": target, "es_hv_at_full_budget": max(within), "es_hv_final":
                          stopping["curve"][-1][1][split],
                          "fraction_to_reach": reached[0] / budget if reached and target > 0 else None,
                          "full_hv_at_half": _hv_at(full["curve"], budget / 2, split),
                          "es_hv_at_half": _hv_at(stopping["curve"], budget / 2, split)}
    return figures


def _plot(runs: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(SPLITS), figsize=(11, 4.2), sharey=True)
    for ax, split in zip(axes, SPLITS):
        for index, run in enumerate(runs):
            for key, colour, label in (("full", "tab:blue", "full budget"), ("es", "tab:orange", "early stopping")):
                points = run[key]["curve"] + [(run[key]["epochs"], run[key]["curve"][-1][1])]  # to the run's end
                xs, ys = [e for e, _ in points], [hv[split] for _, hv in points]
                ax.step(xs, ys, where="post", color=colour, alpha=0.85, linestyle=("-", "--", ":")[index % 3],
                        label=f"{label}, seed {run['seed']}")
            ax.axvline(run["full"]["epochs"] / 2, color="grey", linewidth=0.6)
            ax.axvline(run["full"]["epochs"], color="grey", linewidth=0.6, linestyle="--")
        ax.set_title(f"{split} split")
        ax.set_xlabel("epochs trained by all trials (grey: half and all of the full-budget sweep's)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("hypervolume of the front (ref. 0, 0, 1)")
    axes[-1].legend(fontsize=7, loc="lower right")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _summary(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and SD over seeds (fractions over the seeds that reached the target; how many did)."""
    def spread(values: list[float]) -> dict[str, float] | None:
        if not values:
            return None
        return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}

    out: dict[str, Any] = {}
    for split in SPLITS:
        fractions = [s[split]["fraction_to_reach"] for s in per_seed]
        out[split] = {"fraction_to_reach": spread([f for f in fractions if f is not None]),
                      "seeds_reached": sum(f is not None for f in fractions), "seeds": len(fractions),
                      "goal_met": all(f is not None and f <= 0.5 for f in fractions),
                      **{k: spread([s[split][k] for s in per_seed])
                         for k in ("full_hv", "es_hv_at_full_budget", "full_hv_at_half", "es_hv_at_half")}}
    return out


def _print(seed: int, figures: dict[str, Any]) -> None:
    for split in SPLITS:
        f = figures[split]
        reach = "not reached" if f["fraction_to_reach"] is None else f"{f['fraction_to_reach']:.3f}"
        print(f"seed {seed} {split:<10} full HV {f['full_hv']:.4f} ({figures['full_epochs']} epochs) | early "
              f"stopping HV {f['es_hv_at_full_budget']:.4f} within them ({figures['es_epochs']} epochs in all) | "
              f"fraction of epochs to reach full HV: {reach} | at half the epochs: full {f['full_hv_at_half']:.4f}, "
              f"early stopping {f['es_hv_at_half']:.4f}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8, help="N: full-budget trials")
    parser.add_argument("--es-trials", type=int, default=0, help="M: early-stopping trials (default 3 N)")
    parser.add_argument("--epochs", type=int, default=6, help="budget of every trial")
    parser.add_argument("--grace", type=int, default=1)
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--limit-train", type=int, default=512, help="training images per trial")
    parser.add_argument("--eval-images", type=int, default=120, help="validation and test images")
    parser.add_argument("--eval-steps", type=int, default=5, help="PGD steps of the evaluation")
    parser.add_argument("--attack-steps", type=int, default=2, help="PGD steps of training")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--out", default="bench_early_stopping.png", help="PNG of the curves")
    parser.add_argument("--small", action="store_true", help="tiny: 2 vs 4 trials of 2 epochs, one seed")
    args = parser.parse_args()
    if args.small:
        args.trials, args.es_trials, args.epochs, args.seeds = 2, 4, 2, "0"
        args.limit_train, args.eval_images, args.eval_steps, args.attack_steps = 128, 50, 2, 1
    args.es_trials = args.es_trials or 3 * args.trials
    seeds = [int(s) for s in args.seeds.split(",")]

    import ray

    started = time.perf_counter()
    ray.init(num_cpus=args.concurrency, include_dashboard=False, log_to_driver=False)
    runs, per_seed = [], []
    with tempfile.TemporaryDirectory(prefix="latune-bench-es-") as storage:
        for seed in seeds:
            full_spec, es_spec = _specs(args, seed)
            run = {"seed": seed, "full": _run(full_spec, storage, f"full-{seed}"),
                   "es": _run(es_spec, storage, f"es-{seed}")}
            runs.append(run)
            per_seed.append({"seed": seed, **_compare(run["full"], run["es"]),
                             "full_statuses": run["full"]["statuses"], "es_statuses": run["es"]["statuses"]})
            _print(seed, per_seed[-1])
    ray.shutdown()
    title = (f"pareto on digits: {args.trials} full trials vs {args.es_trials} with early stopping "
             f"(grace {args.grace}, η {args.eta}), {args.epochs} epochs each\n"
             f"{args.limit_train} train images, PGD-{args.attack_steps} training, "
             f"PGD-{args.eval_steps} on {args.eval_images} eval images")
    plotted = True
    try:
        _plot(runs, Path(args.out), title)
    except ImportError:  # matplotlib is optional (pip install -e '.[bench]')
        plotted = False
        print("matplotlib is not installed: no PNG (pip install -e '.[bench]')", file=sys.stderr)
    summary = _summary(per_seed)
    print(json.dumps({"settings": vars(args), "per_seed": per_seed, "summary": summary,
                      "curves": [{"seed": r["seed"], "full": r["full"]["curve"], "es": r["es"]["curve"]} for r in runs],
                      "png": str(Path(args.out).resolve()) if plotted else None,
                      "wall_s": time.perf_counter() - started}, default=lambda v: None if v != v else v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
