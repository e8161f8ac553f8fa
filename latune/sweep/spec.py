"""Sweep files (``sweeps/*.yaml``): parsing and complete validation before anything runs.

A sweep file names a search over latune's config keys; its format (documented in docs/sweeps.md, "Sweep file format"):

    name: delta_eps_grid
    description: one line shown by --list
    base:                                 # dotted config keys fixed for every trial
      la.transform_set: augmix_ops
      eval.eps: {preset: attack.eps}      # the data set's preset value of a key (times: F to scale it)
    space:                                # dotted config keys searched
      la.delta: [0.0, 0.1, 0.3]           # a plain list is a grid
      attack.eps: {grid: [0, 0.5, 1], scale: preset}   # values times the data set's preset
      optim.lr: {loguniform: [0.005, 0.05]}
      la.transform_set: {choice: [augmix_ops, geometric]}
      la.m: {int: [1, 3]}                 # inclusive integer range
    # grid sweeps only: a list of such mappings is a union of grids (each block every combination of its own
    # lists, every block naming the same keys; a point two blocks share runs once), e.g. one block with
    # la.delta: [0] and one value of each LA key, so settings LA ignores are not trained again and again
    search: {algorithm: grid | optuna, sampler: tpe | nsga2 | gp | random, seed: 0, num_samples: 1, max_concurrent: 0}
    objectives: {clean_acc: max, robust_acc: max, robust_class_error_sd: min}
    resources: {cpu: 1, gpu: 0}           # per trial; gpu may be a fraction (0.25 packs 4 trials per GPU) or "auto"
    max_retries: 0                        # retries of a trial that raised
    epochs: null                          # optim.epochs for every trial; null = the data set's preset
    early_stopping: {grace_epochs: auto, reduction_factor: 3}   # absent = off (latune.sweep.rungs)
    constraints: {robust_acc: {min: 0.2}}                       # feasible trials only on the front

Every value a trial could get is checked with the config's own validation (``latune.config``), and
so is every combination of the discrete dimensions, so a sweep never fails half-way on bad input.
"""

from __future__ import annotations

import difflib
import itertools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from latune.analysis.constraints import Constraint, parse_constraints
from latune.config import PRESETS, ConfigError, from_flat, resolve, to_flat
from latune.registry import CORRUPTION_SUMMARY_KEYS, REPORTED_METRICS, SAMPLERS
from latune.sweep.rungs import EarlyStopping, check_measured, parse_early_stopping
from latune.sweep.space import Dimension, candidate_values as _candidate_values, parse_dimension as _dimension
from latune.sweep.space import scaled as _scaled

__all__ = ["Dimension", "SweepSpec", "DEFAULT_OBJECTIVES", "load_sweep", "parse_sweep", "resolve_sweep_path",
           "shipped_sweeps_dir", "trial_overrides", "grid_points", "expected_trials", "trial_budget",
           "check_measured_at_rungs"]

_TOP_KEYS = ("name", "description", "base", "space", "search", "objectives", "resources", "max_retries", "epochs",
             "early_stopping", "constraints")
_SEARCH_KEYS = ("algorithm", "sampler", "seed", "num_samples", "max_concurrent")
_MAX_COMBINATIONS = 100_000  # discrete combinations checked one by one
# a sweep file without objectives: accuracy, robustness and class-wise fairness under attack (validation split)
DEFAULT_OBJECTIVES: dict[str, Literal["max", "min"]] = {
    "clean_acc": "max", "robust_acc": "max", "robust_class_error_sd": "min"}


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep (load_sweep, parse_sweep): the keys every trial shares, the space searched, how it is
    searched, the objectives of its Pareto front and each trial's resources. Change it with
    ``dataclasses.replace`` (the command line's --num-samples, --cpu, --gpu do)."""

    name: str  # sweep name (the file's stem by default)
    description: str  # one line
    base: dict[str, Any]  # dotted keys fixed for every trial
    space: tuple[Dimension, ...]  # searched keys
    algorithm: Literal["grid", "optuna"] = "grid"  # grid: Tune's grid search; optuna: OptunaSearch
    sampler: Literal["nsga2", "tpe", "gp", "random"] = "tpe"  # Optuna sampler (latune.sweep.samplers; docs/search.md)
    seed: int = 0  # sampler seed
    num_samples: int = 1  # grid: repeats of the grid; optuna: trials
    max_concurrent: int = 0  # trials at once; 0 = as many as the resources allow
    objectives: dict[str, Literal["max", "min"]] = field(default_factory=lambda: dict(DEFAULT_OBJECTIVES))
    cpu: float = 1.0  # CPUs per trial (also the trial's torch threads)
    gpu: float | Literal["auto"] = 0.0  # GPUs per trial; a fraction packs trials on a GPU; auto = 0.25 if any
    max_retries: int = 0  # retries of a failing trial
    epochs: int | None = None  # optim.epochs for all trials; None = preset
    path: str | None = None  # the file it came from
    early_stopping: EarlyStopping | None = None  # rungs of the early-stopping scheduler; None = off
    constraints: tuple[Constraint, ...] = ()  # bounds on reported metrics: only feasible trials make the front
    # grid sweeps whose space is a list of grids: each block's dimensions (space then holds every key with the
    # union of its values, in order); () = the one grid of space
    blocks: tuple[tuple[Dimension, ...], ...] = ()


def shipped_sweeps_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "sweeps"


def resolve_sweep_path(name_or_path: str) -> Path:
    """A path as given; a NAME is ./sweeps/NAME.yaml if present, else the sweep shipped with latune."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or "/" in name_or_path:
        if not candidate.is_file():
            raise ConfigError(f"sweep file {name_or_path!r} not found")
        return candidate
    for folder in (Path.cwd() / "sweeps", shipped_sweeps_dir()):
        if (folder / f"{name_or_path}.yaml").is_file():
            return folder / f"{name_or_path}.yaml"
    known = sorted({p.stem for folder in (Path.cwd() / "sweeps", shipped_sweeps_dir()) for p in folder.glob("*.yaml")})
    close = difflib.get_close_matches(name_or_path, known, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"unknown sweep {name_or_path!r}{hint}; allowed: {', '.join(known)} or a path to a .yaml file")


def load_sweep(name_or_path: str, *, data: str | None = None, overrides: dict[str, Any] | None = None) -> SweepSpec:
    """The sweep NAME (./sweeps/NAME.yaml, else the one shipped with latune) or the YAML file at a path, validated
    completely: ``data`` is the data set whose preset fills the trials (--data), ``overrides`` dotted config keys
    pinned for every trial (--set; values may be strings). Raises ConfigError, one line naming the field."""
    path = resolve_sweep_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    return parse_sweep(raw, data=data, overrides=overrides, path=str(path), default_name=path.stem)


def _fail(where: str, message: str) -> ConfigError:
    return ConfigError(f"{where}: {message}")


def _preset_value(key: str, value: Any, data: str) -> Any:
    """``{preset: KEY, times: F}`` -> F x the data set's preset value of KEY; other values unchanged."""
    if not isinstance(value, dict):
        return value
    if set(value) - {"preset", "times"} or value.get("preset") not in PRESETS[data]:
        raise _fail(f"base.{key}", f"expected {{preset: KEY, times: F}} with KEY one of {', '.join(PRESETS[data])}, "
                                   f"got {value!r}")
    times = value.get("times", 1)
    if not isinstance(times, (int, float)) or isinstance(times, bool):
        raise _fail(f"base.{key}.times", f"expected a number, got {times!r}")
    return PRESETS[data][value["preset"]] * times


def parse_sweep(raw: Any, *, data: str | None = None, overrides: dict[str, Any] | None = None,
                path: str | None = None, default_name: str = "sweep") -> SweepSpec:
    """Validate a sweep mapping completely; ``data`` and ``overrides`` (--data, --set) pin base keys."""
    where = path or "sweep"
    if not isinstance(raw, dict):
        raise _fail(where, "expected a mapping with keys " + ", ".join(_TOP_KEYS))
    unknown = [k for k in raw if k not in _TOP_KEYS]
    if unknown:
        raise _fail(where, f"unknown field {unknown[0]!r}; allowed: {', '.join(_TOP_KEYS)}")
    base, space, epochs, blocks = _parse_base_and_space(raw, data, overrides, where)
    search = _parse_search(raw.get("search") or {}, space)
    if blocks and search["algorithm"] != "grid":
        raise _fail("space", "a list of grids needs search.algorithm: grid; use one mapping with optuna")
    objectives = _parse_objectives(raw.get("objectives") or DEFAULT_OBJECTIVES)
    cpu, gpu, max_retries = _parse_resources(raw.get("resources") or {}, raw.get("max_retries", 0))
    spec = SweepSpec(name=str(raw.get("name") or default_name), description=str(raw.get("description") or ""),
                     base=base, space=space, **search, objectives=objectives, cpu=cpu, gpu=gpu,
                     max_retries=max_retries, epochs=epochs, path=path, blocks=blocks)
    _check_values(spec)
    _check_corruption_objectives(spec)
    _check_robust_objectives(spec)
    spec = replace(spec, constraints=parse_constraints(raw.get("constraints"), _REPORTED_METRICS),
                   early_stopping=parse_early_stopping(raw.get("early_stopping"), budget=trial_budget(spec),
                                                       searched=[d.key for d in spec.space]))
    check_measured_at_rungs(spec, "early_stopping")
    return spec


def check_measured_at_rungs(spec: SweepSpec, where: str) -> None:
    """One-line ConfigError unless every objective and constraint metric is measured afresh at every rung
    (latune.sweep.rungs.check_measured), for each value eval.every and eval.corruption_every can take."""
    if spec.early_stopping is not None:
        metrics = list(dict.fromkeys([*spec.objectives, *(c.metric for c in spec.constraints)]))
        cadences = {key: [int(v) for v in _candidate_values(_searched(spec, key))]
                    for key in ("eval.every", "eval.corruption_every")}
        check_measured(where, metrics, spec.early_stopping.rungs, cadences)


def _searched(spec: SweepSpec, key: str) -> Dimension:
    """The dimension of ``key``: searched, or its one value (base, else the config's default)."""
    for dim in spec.space:
        if dim.key == key:
            return dim
    return Dimension(key, "grid", (to_flat(from_flat(spec.base))[key],))


def _parse_base_and_space(raw: dict, data: str | None, overrides: dict[str, Any] | None, where: str
                          ) -> tuple[dict[str, Any], tuple[Dimension, ...], Any, tuple[tuple[Dimension, ...], ...]]:
    """(typed base keys, searched dimensions, epochs, grid blocks): presets filled, --data and --set pinned,
    base validated; blocks is () unless space is a list of grids."""
    base, space_raw = raw.get("base") or {}, raw.get("space") or {}
    if isinstance(space_raw, dict) and any(_linked(v) for v in space_raw.values()):
        raw = {**raw, "space": [space_raw]}  # a linked value makes a grid a (one-block) list of grids
        space_raw = raw["space"]
    if isinstance(space_raw, list):
        return _parse_blocks(raw, data, overrides, where)
    if not isinstance(base, dict) or not isinstance(space_raw, dict):
        raise _fail(where, "base and space must be mappings of dotted config keys")
    base, space_raw = dict(base), dict(space_raw)  # copies: --set pins below must not edit the caller's mapping
    if data is not None:
        base["data.name"] = data
    data_name = str(base.get("data.name", "digits"))
    if data_name not in PRESETS:
        raise _fail("data", f"unknown data set {data_name!r}; allowed: {', '.join(PRESETS)}")
    base = {key: _preset_value(key, value, data_name) for key, value in base.items()}
    for key, value in (overrides or {}).items():
        base[key] = value
        space_raw.pop(key, None)  # --set pins a searched key
    epochs = raw.get("epochs")
    if epochs is not None:
        base.setdefault("optim.epochs", epochs)
    try:
        checked_base = from_flat(base)
    except ConfigError as err:
        raise _fail(f"{where}: base", str(err)) from None
    typed = to_flat(checked_base)  # --set values arrive as strings: trials and results get the typed values
    base = {key: typed[key] for key in base}
    base.setdefault("data.name", checked_base.data.name)  # the experiment is named after it (latune.sweep)
    data_name = checked_base.data.name
    space = tuple(_scaled(_dimension(str(k), v, f"space.{k}"), data_name) for k, v in space_raw.items())
    return base, space, epochs, ()


def _parse_blocks(raw: dict, data: str | None, overrides: dict[str, Any] | None, where: str
                  ) -> tuple[dict[str, Any], tuple[Dimension, ...], Any, tuple[tuple[Dimension, ...], ...]]:
    """``space`` as a list of grids: each block parsed as a one-grid space; space = each key's values in order."""
    blocks_raw = raw["space"]
    if not blocks_raw or not all(isinstance(b, dict) and b for b in blocks_raw):
        raise _fail("space", "a list of grids must hold non-empty mappings of dotted config keys")
    blocks, base, epochs = [], {}, None
    for index, block_raw in enumerate(blocks_raw):
        links = {k: v for k, v in block_raw.items() if _linked(v)}
        plain = {k: v for k, v in block_raw.items() if k not in links}
        base, dims, epochs, _ = _parse_base_and_space({**raw, "space": plain}, data, overrides, where)
        if any(d.kind != "grid" for d in dims):
            key = next(d.key for d in dims if d.kind != "grid")
            raise _fail(f"space[{index}].{key}", "a list of grids takes lists (grid) only")
        for part in _with_links(dims, links, [k for k in block_raw if k not in (overrides or {})], base,
                                f"space[{index}]"):
            if blocks and [d.key for d in part] != [d.key for d in blocks[0]]:
                raise _fail(f"space[{index}]", "every grid of the list must name the same keys in the same order, "
                                               f"got {', '.join(d.key for d in part)} after "
                                               f"{', '.join(d.key for d in blocks[0])}")
            blocks.append(part)
    merged = tuple(Dimension(d.key, "grid", tuple(dict.fromkeys(v for block in blocks for v in block[i].values)))
                   for i, d in enumerate(blocks[0]))
    return base, merged, epochs, tuple(blocks)


def _linked(value: Any) -> bool:
    """``{same_as: KEY}``: a searched key that takes, in each trial, the value of another key (e.g. the paper's
    coupling δ = ε: ``la.delta: {same_as: attack.eps}``)."""
    return isinstance(value, dict) and "same_as" in value


def _with_links(dims: tuple[Dimension, ...], links: dict[str, Any], order: list[str], base: dict[str, Any],
                where: str) -> list[tuple[Dimension, ...]]:
    """A block's dimensions with its ``{same_as: KEY}`` keys filled in, in the block's key order: one block per
    value of each linked key (a grid of one value each), so every point's linked key equals its source's value."""
    parts = [dims]
    for key, link in links.items():
        source = link.get("same_as")
        if set(link) != {"same_as"} or not isinstance(source, str):
            raise _fail(f"{where}.{key}", f"expected {{same_as: KEY}} with KEY a config key, got {link!r}")
        split = []
        for part in parts:
            found = [d for d in part if d.key == source]
            if not found and source not in base:
                raise _fail(f"{where}.{key}.same_as", f"{source!r} is neither searched in this grid nor a base key")
            values = found[0].values if found else (base[source],)
            for value in values:
                fixed = {d.key: (Dimension(d.key, "grid", (value,)) if d.key == source else d) for d in part}
                fixed[key] = Dimension(key, "grid", (value,))
                split.append(tuple(fixed[k] for k in order if k in fixed))
        parts = split
    return parts


def _parse_search(search: Any, space: tuple[Dimension, ...]) -> dict[str, Any]:
    """The ``search`` mapping as SweepSpec fields (algorithm, sampler, seed, num_samples, max_concurrent)."""
    if not isinstance(search, dict) or set(search) - set(_SEARCH_KEYS):
        bad = sorted(set(search) - set(_SEARCH_KEYS)) if isinstance(search, dict) else [search]
        raise _fail("search", f"unknown field {bad[0]!r}; allowed: {', '.join(_SEARCH_KEYS)}")
    algorithm = search.get("algorithm", "grid")
    if algorithm not in ("grid", "optuna"):
        raise _fail("search.algorithm", f"unknown value {algorithm!r}; allowed: grid, optuna")
    sampler = search.get("sampler", "tpe")
    if sampler not in SAMPLERS:
        raise _fail("search.sampler", f"unknown value {sampler!r}; allowed: {', '.join(SAMPLERS)}")
    fields: dict[str, Any] = {"algorithm": algorithm, "sampler": sampler}
    for key in ("seed", "num_samples", "max_concurrent"):
        low = 1 if key == "num_samples" else 0
        value = fields[key] = search.get(key, low)
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise _fail(f"search.{key}", f"must be an integer >= {low}, got {value!r}")
    if algorithm == "optuna" and any(d.kind == "grid" for d in space):
        raise _fail("space", "grid dimensions need search.algorithm: grid; use choice with optuna")
    return fields


def _parse_objectives(objectives: Any) -> dict[str, Literal["max", "min"]]:
    if not isinstance(objectives, dict) or not objectives:
        raise _fail("objectives", "expected a mapping metric: max|min")
    for metric, mode in objectives.items():
        if mode not in ("max", "min"):
            raise _fail(f"objectives.{metric}", f"unknown value {mode!r}; allowed: max, min")
        if metric not in _REPORTED_METRICS:
            raise _fail("objectives", f"unknown metric {metric!r}; allowed: {', '.join(_REPORTED_METRICS)}")
    return dict(objectives)


def _parse_resources(resources: Any, max_retries: Any) -> tuple[float, float | Literal["auto"], int]:
    """(cpu, gpu, max_retries) per trial."""
    if not isinstance(resources, dict) or set(resources) - {"cpu", "gpu"}:
        raise _fail("resources", "expected a mapping with cpu and gpu")
    cpu, gpu = resources.get("cpu", 1), resources.get("gpu", 0)
    if not isinstance(cpu, (int, float)) or isinstance(cpu, bool) or cpu <= 0:
        raise _fail("resources.cpu", f"must be a number > 0, got {cpu!r}")
    if gpu != "auto" and (not isinstance(gpu, (int, float)) or isinstance(gpu, bool) or gpu < 0
                          or (gpu > 1 and not float(gpu).is_integer())):
        raise _fail("resources.gpu", f"must be auto, a fraction in [0, 1] or a whole number of GPUs, got {gpu!r}")
    if not isinstance(max_retries, int) or isinstance(max_retries, bool) or max_retries < 0:
        raise _fail("max_retries", f"must be an integer >= 0, got {max_retries!r}")
    return float(cpu), gpu if gpu == "auto" else float(gpu), max_retries


def trial_budget(spec: SweepSpec) -> int:
    """optim.epochs of the sweep's trials (base keys, presets filled)."""
    return resolve(from_flat(spec.base)).optim.epochs


def _check_corruption_objectives(spec: SweepSpec) -> None:
    """A corruption metric as objective needs every trial to evaluate corruptions."""
    wanted = [m for m in spec.objectives if m in _CORRUPTION_METRICS]
    searched = [d for d in spec.space if d.key == "eval.corruptions"]
    values = searched[0].values if searched else (spec.base.get("eval.corruptions", "none"),)
    if wanted and any(str(v).strip() == "none" for v in values):
        raise _fail("objectives", f"{wanted[0]} needs corruption evaluation in every trial: set eval.corruptions "
                                  "in base (all, a family or names)")


def _check_robust_objectives(spec: SweepSpec) -> None:
    """A robust_* objective needs every trial attacked at evaluation: a run at eval.eps or eval.steps 0 reports
    no robust_* metrics (None resolves to the preset radius, never 0)."""
    wanted = [m for m in spec.objectives if m.startswith("robust_")]
    for key in ("eval.eps", "eval.steps") if wanted else ():
        searched = [d for d in spec.space if d.key == key]
        values = _candidate_values(searched[0]) if searched else (spec.base.get(key),)
        if any(to_flat(from_flat({**spec.base, key: v}))[key] == 0 for v in values if v is not None):
            raise _fail("objectives", f"{wanted[0]} needs an attack at evaluation in every trial, but {key} can be 0 "
                                      "(no robust_* metrics then); keep it above 0 or drop the robust objectives")


# reported only when eval.corruptions names corruptions (NaN until the first corruption evaluation)
_CORRUPTION_METRICS = CORRUPTION_SUMMARY_KEYS
_REPORTED_METRICS = REPORTED_METRICS  # objectives and constraints may name these (latune.registry)


def _check_values(spec: SweepSpec) -> None:
    """Every value of every dimension, and every combination of the discrete ones, must make a valid config
    (with a list of grids: every point of every grid, and only those)."""
    for dim in () if spec.blocks else spec.space:
        for value in _candidate_values(dim):
            try:
                from_flat({**spec.base, dim.key: value})
            except ConfigError as err:
                raise _fail(f"space.{dim.key}", str(err)) from None
    for block in spec.blocks or (spec.space,):
        _check_combinations(spec, [d for d in block if d.kind in ("grid", "choice", "int")], every=bool(spec.blocks))


def _check_combinations(spec: SweepSpec, discrete: list[Dimension], every: bool = False) -> None:
    total = math.prod(len(_candidate_values(d)) for d in discrete) if discrete else 0
    if (1 < len(discrete) or every and discrete) and total <= _MAX_COMBINATIONS:
        for combo in itertools.product(*(_candidate_values(d) for d in discrete)):
            point = dict(zip((d.key for d in discrete), combo))
            try:
                from_flat({**spec.base, **point})
            except ConfigError as err:
                shown = ", ".join(f"{k}={v}" for k, v in point.items())
                raise _fail("space", f"the combination {shown} is invalid: {err}") from None


def grid_points(spec: SweepSpec) -> list[dict[str, Any]]:
    """The grid sweep's trials (grid dimensions only; sampled ones shown as their distribution); with a list of
    grids, each block's points in turn, a point already listed skipped."""
    points: dict[tuple, dict[str, Any]] = {}
    for block in spec.blocks or (spec.space,):
        grid = [d for d in block if d.kind == "grid"]
        for combo in itertools.product(*(d.values for d in grid)):
            points.setdefault(tuple(zip((d.key for d in grid), combo)), dict(zip((d.key for d in grid), combo)))
    return list(points.values())


def trial_overrides(spec: SweepSpec, sampled: dict[str, Any]) -> dict[str, Any]:
    """The flat config of one trial: base keys plus the searched keys' values."""
    return {**spec.base, **sampled}


def expected_trials(spec: SweepSpec) -> int:
    """How many trials the sweep runs in all: num_samples repeats of the grid, or num_samples Optuna trials."""
    return spec.num_samples * (len(grid_points(spec)) if spec.algorithm == "grid" else 1)
