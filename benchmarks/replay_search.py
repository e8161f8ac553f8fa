"""Replay sweeps on the recorded benchmark of the LA space: samplers and early stopping, nothing trained.

Each repeat is one asynchronous sweep on the record (benchmarks/la_record.py): ``--workers`` workers each ask
Optuna's sampler (built by latune.sweep.samplers, as a live sweep builds it) for a point of the record's grid
(pareto's keys, as categorical choices), "train" it by reading the point's recorded curve (a seed drawn at
random where the record holds several), one epoch per recorded training-plus-validation time, and, with early
stopping, hand every epoch's validation result to latune's own scheduler (latune.sweep.scheduler, called as a
library) at its rungs. A finished trial is told COMPLETE with its constraint values (``Trial.set_constraint``),
a stopped one PRUNED, as latune.sweep.optuna_search tells Optuna in a live sweep.

After every finished trial the front is chosen on validation (feasible finished trials, latune.analysis.pareto)
and scored on test: the hypervolume of those trials' test values. Hypervolumes are relative to the record's
oracle, the hypervolume of the whole record's test front (every configuration, feasible on test), with the
reference point at the bound of each constraint and otherwise the worst value among those feasible test
results, so 1.0 means "as good as knowing the whole grid's test results".

Printed and written (``--out`` folder): hypervolume against epochs spent (mean and 95% bootstrap interval
over repeats) as a PNG and a table; per arm ``epochs_to_target`` (median epochs until 90% of the oracle),
the share of the record's front configurations a sweep started but never finished (early stopping pruned
every run of it), each sampler's overhead per
suggestion; the per-rung Kendall tau between a configuration's values at each epoch and its final ones. The
last line is one JSON object with all of it, and ``default_vs_random`` (the shipped default's median
epochs_to_target over random search's, with a 95% bootstrap interval).

    python benchmarks/replay_search.py                          # the committed digits record, 30 repeats per arm
    python benchmarks/replay_search.py --small                  # a quick look (5 repeats, 3 arms)
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import la_record  # noqa: E402  (benchmarks/ is not a package)

OBJECTIVES = {"clean_acc": "max", "robust_acc": "max", "robust_class_error_sd": "min"}  # pareto's
CONSTRAINTS = {"robust_acc": {"min": 0.2}}  # pareto's
TARGET = 0.9  # epochs_to_target: epochs until the test hypervolume reaches this share of the oracle's
DEFAULT_RECORD = la_record.DEFAULT_OUT / "la_bench_digits.parquet"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "replay_la_bench_digits"


# ------------------------------------------------------------------------------------------------ arms

@dataclass(frozen=True)
class Arm:
    """One way to search: an Optuna sampler, with or without latune's early stopping (and how)."""

    sampler: str  # latune.sweep.samplers name
    stopping: str = "none"  # a key of STOPPING

    @property
    def name(self) -> str:
        return self.sampler if self.stopping == "none" else f"{self.sampler}+{self.stopping}"


# early-stopping variants, each one change on the one before (sweep-file early_stopping keys; None = off);
# "tau" takes the grace period from the record's rank correlations (grace_from_tau)
STOPPING: dict[str, dict[str, Any] | None] = {
    "none": None,
    "es_epsnet": {"grace_epochs": 1, "reduction_factor": 3, "front_order": "epsilon_net"},
    "es_hv": {"grace_epochs": 1, "reduction_factor": 3, "front_order": "hypervolume"},
    "es_hv2": {"grace_epochs": 1, "reduction_factor": 3, "front_order": "hypervolume", "min_results": 2},
    "es_tau": {"grace_epochs": "tau", "reduction_factor": 3, "front_order": "hypervolume", "min_results": 2},
}


# ------------------------------------------------------------------------------------------------ scoring

@dataclass(frozen=True)
class Scorer:
    """Hypervolume of a front chosen on validation, scored on test, relative to the record's oracle."""

    reference: tuple[float, ...]
    oracle: float

    def relative(self, test_points: np.ndarray) -> float:
        from latune.analysis.pareto import hypervolume

        if len(test_points) == 0:
            return 0.0
        return hypervolume(test_points, list(OBJECTIVES.values()), self.reference) / self.oracle

    def chosen_on_validation(self, finished: Sequence[tuple[Sequence[float], Sequence[float]]]) -> float:
        """``relative`` of the test values of the validation front of ``finished`` (validation, test) pairs of
        feasible finished trials: what a replayed and a live sweep are both scored by."""
        from latune.analysis.pareto import pareto_front_mask

        chosen = pareto_front_mask(np.array([v for v, _ in finished]), list(OBJECTIVES.values()))
        return self.relative(np.array([t for (_, t), on in zip(finished, chosen) if on]))


def _feasible(values: Mapping[str, float], constraints: Sequence[Any]) -> bool:
    from latune.analysis.constraints import is_feasible

    return is_feasible(values, constraints)


def oracle_scorer(record: la_record.Record, constraints: Sequence[Any]) -> Scorer:
    """The reference point and oracle hypervolume of the record (module docstring): seed-0 final test results."""
    from latune.analysis.pareto import hypervolume

    final = record.final(seed=0)
    test = [{m: float(row[f"test_{m}"]) for m in _metric_names(constraints)} for _, row in final.iterrows()]
    feasible = [t for t in test if _feasible(t, constraints)]
    if not feasible:
        raise SystemExit("error: no configuration of the record is feasible on test; nothing to score")
    points = np.array([[t[m] for m in OBJECTIVES] for t in feasible])
    bounds = {c.metric: c for c in constraints}
    reference = []
    for i, (metric, direction) in enumerate(OBJECTIVES.items()):
        worst = points[:, i].min() if direction == "max" else points[:, i].max()
        bound = bounds.get(metric)
        limit = None if bound is None else (bound.min if direction == "max" else bound.max)
        reference.append(float(limit) if limit is not None else float(worst))
    oracle = hypervolume(points, list(OBJECTIVES.values()), reference)
    return Scorer(tuple(reference), oracle)


def _metric_names(constraints: Sequence[Any]) -> list[str]:
    return list(dict.fromkeys([*OBJECTIVES, *(c.metric for c in constraints)]))


# ------------------------------------------------------------------------------------------------ one repeat

@dataclass
class _Running:
    trial: Any  # optuna.trial.Trial
    trial_id: str
    curve: la_record.Curve
    point: tuple
    epoch: int = 0


@dataclass
class Trace:
    """What one repeat saw: hypervolume after each finished trial, and the early-stopping bookkeeping."""

    epochs: list[int] = field(default_factory=lambda: [0])  # epochs spent when the hypervolume changed
    hv: list[float] = field(default_factory=lambda: [0.0])  # relative test hypervolume from then on
    started: dict[tuple, int] = field(default_factory=dict)  # point -> trials started
    pruned: dict[tuple, int] = field(default_factory=dict)  # point -> trials stopped early
    completed: dict[tuple, int] = field(default_factory=dict)  # point -> trials that trained the whole budget
    ask_seconds: list[float] = field(default_factory=list)
    trials: int = 0

    def hv_at(self, epochs: int) -> float:
        index = int(np.searchsorted(self.epochs, epochs, side="right")) - 1
        return self.hv[max(index, 0)]

    def lost(self, points: set[tuple]) -> tuple[int, int]:
        """(points of ``points`` this sweep started but never finished, points of ``points`` it started): a
        configuration sampled twice whose second run was stopped as a tie of its finished twin is not lost."""
        started = [p for p in points if self.started.get(p)]
        return sum(not self.completed.get(p) for p in started), len(started)

    def epochs_to(self, share: float) -> float:
        reached = [e for e, h in zip(self.epochs, self.hv) if h >= share]
        return float(reached[0]) if reached else math.inf


def replay(record: la_record.Record, arm: Arm, *, seed: int, workers: int, budget_epochs: int,
           scorer: Scorer, constraints: Sequence[Any], grace_tau: int) -> Trace:
    """One asynchronous sweep on the record (module docstring) until ``budget_epochs`` epochs are spent."""
    import optuna

    from latune.analysis.constraints import bound_gaps
    from latune.sweep.samplers import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(seed)
    scheduler = _scheduler(arm, record.budget, constraints, grace_tau)
    trials_for_sizing = budget_epochs // record.budget * (3 if scheduler else 1)  # pareto 16 trials, pareto_es 48
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # GPSampler and multivariate TPE are experimental in Optuna
        sampler = make_sampler(arm.sampler, seed=seed, num_samples=max(trials_for_sizing, 1))
        study = optuna.create_study(directions=[_optuna_direction(d) for d in OBJECTIVES.values()], sampler=sampler)
    distributions = {k: optuna.distributions.CategoricalDistribution(record.choices[k]) for k in record.keys}
    trace = Trace()
    finished: list[tuple[np.ndarray, np.ndarray]] = []  # (validation objectives, test objectives) of feasible ones
    events: list[tuple[float, int, int]] = []
    running: dict[int, _Running] = {}
    spent = 0

    def start(worker: int, now: float) -> None:
        asked = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trial = study.ask(distributions)
        trace.ask_seconds.append(time.perf_counter() - asked)
        curves = record.curves(trial.params)
        point = record.canonical(trial.params)
        run = _Running(trial, f"t{trial.number}", curves[int(rng.integers(len(curves)))], point)
        trace.started[point] = trace.started.get(point, 0) + 1
        trace.trials += 1
        running[worker] = run
        heapq.heappush(events, (now + float(run.curve.seconds[0]), trial.number, worker))

    for worker in range(workers):
        start(worker, 0.0)
    while events and spent < budget_epochs:
        now, _, worker = heapq.heappop(events)
        run = running[worker]
        run.epoch += 1
        spent += 1
        result = {m: float(run.curve.values[m][run.epoch - 1]) for m in _metric_names(constraints)}
        result.update(epoch=run.epoch, timestamp=now)
        if run.epoch == record.budget:
            for key, gap in bound_gaps(result, constraints).items():
                run.trial.set_constraint(key, gap)
            study.tell(run.trial, [result[m] for m in OBJECTIVES])
            trace.completed[run.point] = trace.completed.get(run.point, 0) + 1
            if _feasible(result, constraints):
                test = np.array([run.curve.values[f"test_{m}"][-1] for m in OBJECTIVES])
                finished.append((np.array([result[m] for m in OBJECTIVES]), test))
                trace.epochs.append(spent)
                trace.hv.append(scorer.chosen_on_validation(finished))
        elif scheduler is not None and scheduler.judge(run.trial_id, result) == "STOP":
            study.tell(run.trial, state=optuna.trial.TrialState.PRUNED)
            trace.pruned[run.point] = trace.pruned.get(run.point, 0) + 1
        else:
            heapq.heappush(events, (now + float(run.curve.seconds[run.epoch]), run.trial.number, worker))
            continue
        start(worker, now)
    return trace


def _optuna_direction(direction: str) -> str:
    return "maximize" if direction == "max" else "minimize"


def _scheduler(arm: Arm, budget: int, constraints: Sequence[Any], grace_tau: int) -> Any:
    from latune.sweep.rungs import parse_early_stopping
    from latune.sweep.scheduler import ParetoHalvingScheduler

    raw = STOPPING[arm.stopping]
    if raw is None:
        return None
    raw = {**raw, "grace_epochs": grace_tau} if raw["grace_epochs"] == "tau" else raw
    settings = parse_early_stopping(raw, budget=budget, searched=[])
    return ParetoHalvingScheduler(OBJECTIVES, settings, constraints)


# ------------------------------------------------------------------------------------------------ the record

def rank_correlations(record: la_record.Record) -> dict[str, list[float]]:
    """Kendall tau, over the record's configurations (seed 0), between each metric's validation value at each
    epoch and its value at the last epoch: metric -> [tau at epoch 1, 2, ..., budget - 1]."""
    from scipy.stats import kendalltau

    runs = [curves[0] for curves in record.runs.values()]
    taus: dict[str, list[float]] = {}
    for metric in OBJECTIVES:
        final = np.array([c.values[metric][-1] for c in runs])
        taus[metric] = [float(kendalltau([c.values[metric][e] for c in runs], final).statistic)
                        for e in range(record.budget - 1)]
    return taus


def grace_from_tau(taus: Mapping[str, Sequence[float]], threshold: float) -> int:
    """The first epoch at which every objective's rank correlation with its final value reaches ``threshold``
    (the first rung of es_tau), at least 1; the budget's last epoch but one if none does."""
    epochs = len(next(iter(taus.values())))
    for epoch in range(epochs):
        if all(t[epoch] >= threshold for t in taus.values()):
            return epoch + 1
    return max(1, epochs)


def front_points(record: la_record.Record, constraints: Sequence[Any]) -> set[tuple]:
    """The configurations on the record's full-budget validation front (seed 0, feasible on validation)."""
    from latune.analysis.pareto import pareto_front_mask

    points, values = [], []
    for point, curves in record.runs.items():
        result = {m: c[-1] for m, c in curves[0].values.items()}
        if _feasible(result, constraints):
            points.append(point)
            values.append([result[m] for m in OBJECTIVES])
    mask = pareto_front_mask(np.array(values), list(OBJECTIVES.values()))
    return {p for p, on in zip(points, mask) if on}


def noise_floor(record: la_record.Record) -> dict[str, float]:
    """Median absolute difference between two seeds of one configuration, per objective (test, last epoch)."""
    gaps: dict[str, list[float]] = {m: [] for m in OBJECTIVES}
    for curves in record.runs.values():
        if len(curves) > 1:
            for m in OBJECTIVES:
                gaps[m].append(abs(curves[0].values[f"test_{m}"][-1] - curves[1].values[f"test_{m}"][-1]))
    return {m: float(np.median(g)) if g else math.nan for m, g in gaps.items()}


def spread(record: la_record.Record) -> dict[str, list[float]]:
    """5th, 50th and 95th percentile over configurations of each objective (test, last epoch, seed 0)."""
    final = record.final(seed=0)
    return {m: [float(np.percentile(final[f"test_{m}"], q)) for q in (5, 50, 95)] for m in OBJECTIVES}


# ------------------------------------------------------------------------------------------------ summary

def _bootstrap_interval(samples: np.ndarray, statistic: Any, rng: np.random.Generator, n: int = 2000
                        ) -> tuple[float, float]:
    stats = [statistic(samples[rng.integers(len(samples), size=len(samples))]) for _ in range(n)]
    # "nearest": a target never reached is infinite, and interpolating between infinities gives NaN
    return tuple(float(np.percentile(stats, q, method="nearest")) for q in (2.5, 97.5))  # type: ignore[return-value]


def summarise(traces: Mapping[str, list[Trace]], grid: np.ndarray, front: set[tuple], default: str,
              seed: int = 0) -> dict[str, Any]:
    """Per arm: mean and 95% interval of the hypervolume on ``grid`` (epochs), epochs_to_target (median and
    interval), share of front configurations pruned, seconds per suggestion; and default_vs_random."""
    rng = np.random.default_rng(seed)
    arms: dict[str, Any] = {}
    to_target: dict[str, np.ndarray] = {}
    for name, runs in traces.items():
        curves = np.array([[t.hv_at(int(e)) for e in grid] for t in runs])
        low, high = zip(*(_bootstrap_interval(curves[:, j], np.mean, rng, 500) for j in range(len(grid))))
        epochs = np.array([t.epochs_to(TARGET) for t in runs])
        to_target[name] = epochs
        lost, started = (sum(counts) for counts in zip(*(t.lost(front) for t in runs))) if runs else (0, 0)
        arms[name] = {
            "repeats": len(runs), "hv_mean": curves.mean(axis=0).round(4).tolist(),
            "hv_low": np.round(low, 4).tolist(), "hv_high": np.round(high, 4).tolist(),
            # where single sweeps lie (2.5th to 97.5th percentile over repeats): the live check's band
            "hv_p025": np.percentile(curves, 2.5, axis=0).round(4).tolist(),
            "hv_p975": np.percentile(curves, 97.5, axis=0).round(4).tolist(),
            "epochs_to_target": _finite(float(np.median(epochs))),
            "epochs_to_target_interval": [_finite(v) for v in _bootstrap_interval(epochs, np.median, rng)],
            "reached_target": float(np.isfinite(epochs).mean()),
            "front_pruned_share": round(lost / started, 4) if started else None,
            "trials_mean": float(np.mean([t.trials for t in runs])),
            "ms_per_suggestion": round(1000 * float(np.median(asks)), 2) if (asks := [s for t in runs
                                                                                   for s in t.ask_seconds]) else None,
        }
    summary: dict[str, Any] = {"grid_epochs": grid.tolist(), "arms": arms, "default": default}
    if default in to_target and "random" in to_target:
        summary["default_vs_random"], summary["default_vs_random_interval"] = _ratio(
            to_target[default], to_target["random"], rng)
    return summary


def _ratio(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[float | None, list[float | None]]:
    """median(a) / median(b) and its 95% bootstrap interval (repeats resampled within each arm)."""
    def ratio(x: np.ndarray, y: np.ndarray) -> float:
        mx, my = np.median(x), np.median(y)
        return float(mx / my) if math.isfinite(mx) and math.isfinite(my) and my > 0 else math.inf

    stats = [ratio(a[rng.integers(len(a), size=len(a))], b[rng.integers(len(b), size=len(b))]) for _ in range(2000)]
    return _finite(ratio(a, b)), [_finite(float(np.percentile(stats, q, method="nearest"))) for q in (2.5, 97.5)]


def _finite(value: float) -> float | None:
    """JSON has no infinity: a target never reached (or a ratio of one) is null."""
    return round(value, 4) if math.isfinite(value) else None


def inside_band(live: Mapping[str, Any], arm: Mapping[str, Any], grid: np.ndarray) -> float:
    """Share of the grid's epochs (up to what the live sweep spent) at which a live sweep's hypervolume lies
    within the arm's band of single replayed sweeps (hv_p025 to hv_p975)."""
    trace = Trace(list(live["epochs"]), list(live["hv"]))
    points = [j for j, e in enumerate(grid) if 0 < e <= live["epochs_spent"]]
    inside = [arm["hv_p025"][j] - 1e-9 <= trace.hv_at(int(grid[j])) <= arm["hv_p975"][j] + 1e-9 for j in points]
    return round(float(np.mean(inside)), 3) if inside else math.nan


def table_lines(summary: Mapping[str, Any], budgets: Sequence[int]) -> list[str]:
    grid = summary["grid_epochs"]
    columns = [grid.index(b) for b in budgets if b in grid]
    head = "| arm | " + " | ".join(f"HV at {grid[c]} epochs" for c in columns) + \
        " | epochs to 90% (median [95%]) | reached | front pruned | trials | ms/suggestion |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, arm in summary["arms"].items():
        hv = " | ".join(f"{arm['hv_mean'][c]:.3f} [{arm['hv_low'][c]:.3f}, {arm['hv_high'][c]:.3f}]" for c in columns)
        low, high = arm["epochs_to_target_interval"]
        lines.append(f"| {name} | {hv} | {_show(arm['epochs_to_target'])} [{_show(low)}, {_show(high)}] | "
                     f"{arm['reached_target']:.0%} | {_show_share(arm['front_pruned_share'])} | "
                     f"{arm['trials_mean']:.0f} | {_show_ms(arm['ms_per_suggestion'])} |")
    return lines


def record_lines(summary: Mapping[str, Any]) -> list[str]:
    """The record's spread over configurations against its noise floor, and the rank correlations by epoch."""
    lines = ["| objective (test, last epoch) | 5th / 50th / 95th percentile over configurations | "
             "two seeds of one configuration: median gap |", "|---|---|---|"]
    for metric, (low, mid, high) in summary["spread"].items():
        lines.append(f"| {metric} | {low:.3f} / {mid:.3f} / {high:.3f} | {summary['noise_floor'][metric]:.3f} |")
    taus = summary["kendall_tau"]
    epochs = len(next(iter(taus.values())))
    lines += ["", "| Kendall tau with the final value (validation) | " + " | ".join(
        f"epoch {e}" for e in range(1, epochs + 1)) + " |", "|---|" + "---|" * epochs]
    lines += [f"| {metric} | " + " | ".join(f"{t:.2f}" for t in values) + " |" for metric, values in taus.items()]
    return lines


def _show(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f}"


def _show_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _show_share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def plot(summary: Mapping[str, Any], taus: Mapping[str, Sequence[float]], path: Path,
         live: Mapping[str, Any] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [2, 1]})
    grid = summary["grid_epochs"]
    for name, arm in summary["arms"].items():
        line, = left.plot(grid, arm["hv_mean"], label=name, lw=2 if name == summary["default"] else 1)
        left.fill_between(grid, arm["hv_low"], arm["hv_high"], color=line.get_color(), alpha=0.12)
    default = summary["arms"].get(summary["default"])
    if live and default:
        left.fill_between(grid, default["hv_p025"], default["hv_p975"], color="grey", alpha=0.15,
                          label=f"{summary['default']}: single sweeps (2.5-97.5%)")
    for index, curve in enumerate((live or {}).get("curves", [])):
        left.step(curve["epochs"], curve["hv"], where="post", color="black", ls="--", lw=1.2,
                  label=f"live {live['sweep']} (seeds {', '.join(str(c['seed']) for c in live['curves'])})"
                  if index == 0 else None)
    left.axhline(TARGET, color="grey", lw=0.8, ls=":")
    left.set(xlabel="epochs spent", ylabel="test hypervolume / oracle (front chosen on validation)",
             title="Replay on the record: mean and 95% interval over repeats")
    left.legend(fontsize=7, ncol=2)
    for metric, values in taus.items():
        right.plot(range(1, len(values) + 1), values, marker="o", label=metric)
    right.set(xlabel="epoch", ylabel="Kendall tau with the final value", title="Rank correlation (validation)",
              ylim=(-0.1, 1.0))
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ------------------------------------------------------------------------------------------------ main

def run_arms(record: la_record.Record, arms: Sequence[Arm], args: argparse.Namespace, scorer: Scorer,
             constraints: Sequence[Any], grace_tau: int) -> dict[str, list[Trace]]:
    """Every arm's repeats; each arm's traces are saved in ``--out``/traces/ as soon as it is done, and an arm
    saved there by an earlier run with the same record and settings is read back, not replayed (the GP arms
    take hours: an interrupted replay continues where it stopped)."""
    traces: dict[str, list[Trace]] = {}
    folder = Path(args.out) / "traces"
    folder.mkdir(parents=True, exist_ok=True)
    for arm in arms:
        repeats = args.repeats_for.get(arm.sampler, args.repeats)
        key = {"arm": arm.name, "record": record.meta.get("digest") or str(args.record), "repeats": repeats,
               "workers": args.workers, "budget_epochs": args.budget_epochs, "grace_tau": grace_tau,
               "stopping": STOPPING[arm.stopping]}
        path = folder / f"{arm.name}.json"
        saved = json.loads(path.read_text()) if path.is_file() else None
        if saved is not None and saved["key"] == key:
            traces[arm.name] = [_trace_from_json(t) for t in saved["traces"]]
            print(f"  {arm.name}: read back from {path}", flush=True)
            continue
        started = time.perf_counter()
        traces[arm.name] = [replay(record, arm, seed=r, workers=args.workers, budget_epochs=args.budget_epochs,
                                   scorer=scorer, constraints=constraints, grace_tau=grace_tau)
                            for r in range(repeats)]
        path.write_text(json.dumps({"key": key, "traces": [_trace_to_json(t) for t in traces[arm.name]]}))
        print(f"  {arm.name}: {repeats} repeats in {time.perf_counter() - started:.0f} s", flush=True)
    return traces


def _trace_to_json(trace: Trace) -> dict[str, Any]:
    counts = {name: [[list(p), n] for p, n in getattr(trace, name).items()] for name in ("started", "pruned",
                                                                                        "completed")}
    return {"epochs": trace.epochs, "hv": trace.hv, "ask_seconds": trace.ask_seconds, "trials": trace.trials, **counts}


def _trace_from_json(raw: Mapping[str, Any]) -> Trace:
    counts = {name: {tuple(p): n for p, n in raw[name]} for name in ("started", "pruned", "completed")}
    return Trace(epochs=raw["epochs"], hv=raw["hv"], ask_seconds=raw["ask_seconds"], trials=raw["trials"], **counts)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python benchmarks/replay_search.py", description=__doc__.splitlines()[0])
    parser.add_argument("--record", default=str(DEFAULT_RECORD), help="record parquet (benchmarks/la_record.py)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder for replay.png, replay.md, replay.json")
    parser.add_argument("--repeats", type=int, default=30, help="sweeps per arm (sampler seeds 0..N-1)")
    parser.add_argument("--repeats-for", default="", metavar="SAMPLER=N,...",
                        help="other repeat counts for some samplers (e.g. gp=10: a GP suggestion takes seconds)")
    parser.add_argument("--workers", type=int, default=2, help="trials at once (the record's machine ran 2)")
    parser.add_argument("--budget-epochs", type=int, default=400, help="epochs each replayed sweep may spend")
    parser.add_argument("--samplers", default="random,nsga2,tpe,gp", help="comma list (latune.sweep.samplers)")
    parser.add_argument("--stopping", default=",".join(STOPPING), help=f"comma list of {', '.join(STOPPING)}")
    parser.add_argument("--gp-stopping", default="none",
                        help="the --stopping variants gp runs with (default none: a GP suggestion takes about a "
                             "second here, and an early-stopping sweep asks ~180 times, so 30 repeats take hours)")
    parser.add_argument("--default", default="gp", help="the arm latune ships as its default search")
    parser.add_argument("--tau-threshold", type=float, default=0.6, help="es_tau's first rung: tau reaches this")
    parser.add_argument("--live", help="live_check.json of benchmarks/live_check.py, drawn into the PNG")
    parser.add_argument("--small", action="store_true", help="5 repeats, random/tpe, none/es_hv2: a quick look")
    parser.add_argument("--from-json", metavar="REPLAY_JSON",
                        help="replay nothing: rewrite the table and PNG beside this replay.json (--live redraws)")
    args = parser.parse_args(argv)
    if args.small:
        args.repeats, args.samplers, args.stopping = 5, "random,tpe", "none,es_hv2"
    try:
        args.repeats_for = {name: int(n) for name, _, n in (item.partition("=") for item in args.repeats_for.split(",")
                                                             if item)}
    except ValueError:
        parser.error(f"--repeats-for: expected SAMPLER=N,..., got {args.repeats_for!r}")
    unknown = [s for s in args.stopping.split(",") if s not in STOPPING]
    if unknown:
        parser.error(f"--stopping: unknown variant {unknown[0]!r}; allowed: {', '.join(STOPPING)}")
    return args


def write_outputs(summary: dict[str, Any], out: Path, live: Mapping[str, Any] | None) -> list[str]:
    """replay.md (the table), replay.json and replay.png in ``out``; the table's lines."""
    grid = np.array(summary["grid_epochs"])
    if live and summary["default"] in summary["arms"]:
        live = {**live, "inside_band": [inside_band(c, summary["arms"][summary["default"]], grid)
                                        for c in live["curves"]]}
        summary["live"] = live
    out.mkdir(parents=True, exist_ok=True)
    lines = table_lines(summary, [160, int(grid[-1])]) + [""] + record_lines(summary)
    (out / "replay.md").write_text("\n".join(lines) + "\n")
    (out / "replay.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(summary, summary["kendall_tau"], out / "replay.png", summary.get("live"))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    from latune.analysis.constraints import parse_constraints

    args = parse_args(argv)
    if args.from_json:
        summary = json.loads(Path(args.from_json).read_text())
        live = json.loads(Path(args.live).read_text()) if args.live else summary.get("live")
        print("\n".join(write_outputs(summary, Path(args.from_json).parent, live)))
        return 0
    record = la_record.load(args.record)
    constraints = parse_constraints(CONSTRAINTS, list(la_record.METRICS))
    scorer = oracle_scorer(record, constraints)
    taus = rank_correlations(record)
    grace_tau = grace_from_tau(taus, args.tau_threshold)
    front = front_points(record, constraints)
    arms = [Arm(s, st) for s in args.samplers.split(",") for st in args.stopping.split(",")
            if s != "gp" or st in args.gp_stopping.split(",")]
    print(f"record {args.record}: {len(record.runs)} configurations, {record.budget} epochs, "
          f"{record.meta.get('git_commit', '?')}; oracle HV {scorer.oracle:.4f} at reference {scorer.reference}; "
          f"{len(front)} configurations on the validation front; es_tau grace {grace_tau}", flush=True)
    traces = run_arms(record, arms, args, scorer, constraints, grace_tau)
    grid = np.arange(0, args.budget_epochs + 1, 10)
    summary = summarise(traces, grid, front, args.default)
    live = json.loads(Path(args.live).read_text()) if args.live else None
    summary.update(record=str(args.record), record_meta=record.meta, repeats=args.repeats, workers=args.workers,
                   target=TARGET, oracle_hv=round(scorer.oracle, 5), reference=scorer.reference, grace_tau=grace_tau,
                   kendall_tau={m: np.round(v, 3).tolist() for m, v in taus.items()}, noise_floor=noise_floor(record),
                   spread=spread(record), front_size=len(front), budget_epochs=args.budget_epochs,
                   command="python benchmarks/replay_search.py " + " ".join(argv if argv is not None else sys.argv[1:]))
    lines = write_outputs(summary, Path(args.out), live)
    print("\n".join(lines))
    compact = {name: {k: arm[k] for k in ("epochs_to_target", "epochs_to_target_interval", "reached_target",
                                          "front_pruned_share", "ms_per_suggestion")}
               for name, arm in summary["arms"].items()}
    print(json.dumps({"arms": compact, "default": args.default, "default_vs_random": summary.get("default_vs_random"),
                      "default_vs_random_interval": summary.get("default_vs_random_interval"),
                      "oracle_hv": summary["oracle_hv"], "grace_tau": grace_tau, "out": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
