"""Sweep files: every shipped sweep parses and dry-runs; bad files fail before anything runs, in one line."""

import sys
from pathlib import Path

import pytest
import yaml

from latune.cli import sweep as sweep_cli_module
from latune.config import PRESETS, ConfigError, from_flat
from latune.sweep.spec import (expected_trials, grid_points, load_sweep, parse_sweep, resolve_sweep_path, shipped_sweeps_dir,
                              trial_overrides)

REPO = Path(__file__).resolve().parent.parent
SWEEP_FILES = sorted((REPO / "sweeps").glob("*.yaml"))
CIFAR_EPS = 8 / 255


def test_the_shipped_sweeps_are_the_repository_sweeps():
    assert SWEEP_FILES, "no sweeps/*.yaml found"
    assert sorted(p.name for p in shipped_sweeps_dir().glob("*.yaml")) == [p.name for p in SWEEP_FILES]


# ---------------------------------------------------------------- every shipped sweep, parsed (dry run)

def _every_trial_config(spec):
    """Flat configs of the grid points (sampled dimensions at each of their candidate endpoints/values)."""
    points = grid_points(spec) if spec.algorithm == "grid" else [{}]
    for point in points:
        yield trial_overrides(spec, point)
        for dim in spec.space:
            if dim.kind != "grid":
                for value in dim.values:
                    yield trial_overrides(spec, {**point, dim.key: value})


@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("data", [None, "cifar10"])
def test_every_sweep_file_parses_and_each_trial_is_a_valid_config(path, data):
    spec = load_sweep(str(path), data=data)
    assert spec.name == path.stem and spec.description and spec.path == str(path)
    assert spec.base["data.name"] == (data or "digits")
    assert spec.space, "a sweep searches at least one key"
    assert set(spec.objectives.values()) <= {"max", "min"}
    for flat in _every_trial_config(spec):
        config = from_flat(flat)
        assert config.data.name == (data or "digits")
    if "eval.eps" in spec.base:  # the shipped sweeps attack every trial at the data set's standard radius
        assert spec.base["eval.eps"] == pytest.approx(PRESETS[data or "digits"]["attack.eps"])
    assert not any(d.scale for d in spec.space), "scale: preset is applied at parse time"
    if spec.algorithm == "grid":
        assert len(grid_points(spec)) >= 2


def test_cifar10_scales_the_delta_eps_grid_to_multiples_of_8_over_255():
    spec = load_sweep(str(REPO / "sweeps" / "delta_eps_grid.yaml"), data="cifar10")
    dims = {d.key: d for d in spec.space}
    assert dims["attack.eps"].values == pytest.approx([0.0, 0.5 * CIFAR_EPS, CIFAR_EPS, 2 * CIFAR_EPS])
    assert dims["la.delta"].values == (0.0, 0.1, 0.3)  # not scaled
    assert spec.base["eval.eps"] == pytest.approx(CIFAR_EPS)
    assert len(grid_points(spec)) == 12
    digits = {d.key: d for d in load_sweep(str(REPO / "sweeps" / "delta_eps_grid.yaml")).space}
    assert digits["attack.eps"].values == pytest.approx([0.0, 0.05, 0.1, 0.2])


def test_cifar10_scales_a_sampled_range_and_the_base_preset():
    spec = load_sweep("pareto", data="cifar10")
    dims = {d.key: d for d in spec.space}
    assert (dims["attack.eps"].kind, dims["attack.eps"].values) == ("uniform", pytest.approx((0.0, 2 * CIFAR_EPS)))
    assert spec.base["eval.eps"] == pytest.approx(CIFAR_EPS)
    times = parse_sweep({"base": {"eval.eps": {"preset": "attack.eps", "times": 0.5}}, "space": {"la.delta": [0.1]}},
                        data="cifar10")
    assert times.base["eval.eps"] == pytest.approx(CIFAR_EPS / 2)


def test_set_overrides_pin_searched_keys_and_are_typed():
    raw = {"space": {"la.delta": [0.0, 0.2], "attack.eps": [0.0, 0.1]}}
    spec = parse_sweep(raw, overrides={"la.delta": "0.3", "optim.epochs": "2", "optim.nesterov": "false",
                                       "optim.momentum": "0"})
    assert [d.key for d in spec.space] == ["attack.eps"]
    assert spec.base["la.delta"] == 0.3 and spec.base["optim.epochs"] == 2 and spec.base["optim.nesterov"] is False
    assert type(spec.base["optim.epochs"]) is int  # a string here would end up as a string column in results
    assert raw == {"space": {"la.delta": [0.0, 0.2], "attack.eps": [0.0, 0.1]}}  # the caller's mapping is untouched
    assert load_sweep("adv_vs_la", overrides={"optim.epochs": "3"}).epochs is None
    assert parse_sweep({"space": {"la.delta": [0.1]}, "epochs": 4}).base["optim.epochs"] == 4


# ---------------------------------------------------------------- the CLI: --dry-run, --list, names

@pytest.mark.parametrize("path", SWEEP_FILES, ids=lambda p: p.stem)
def test_cli_dry_run_of_every_sweep_file(path, tmp_path, sweep_cli):
    result = sweep_cli(path, "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    spec = load_sweep(str(path), data="digits")
    out = result.stdout
    assert f"sweep {spec.name}: {spec.description}" in out
    if spec.algorithm == "grid":
        n = len(grid_points(spec))
        assert f"trials: {n * spec.num_samples} ({n} grid points x {spec.num_samples})" in out
        assert all(f"  {i:>3}  " in out for i in range(n))
    else:
        assert f"trials: {spec.num_samples} sampled by Optuna" in out
        assert all(f"  {d.key}: {d.kind} " in out for d in spec.space)
    assert f"results would go under {tmp_path / 'runs'}" in out
    assert not (tmp_path / "runs").exists()
    assert result.stderr.strip() == ""


def test_cli_list_shows_every_sweep_with_its_description_and_local_ones(tmp_path, sweep_cli):
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "sweeps" / "mine.yaml").write_text("description: my local sweep\nspace: {la.delta: [0.0, 0.1]}\n")
    (tmp_path / "sweeps" / "broken.yaml").write_text("space: {attack.epz: [0.1]}\n")
    result = sweep_cli("--list", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for path in SWEEP_FILES:
        description = load_sweep(str(path)).description
        assert any(line.split()[0] == path.stem and line.endswith(description) for line in lines), path.stem
    assert any(line.startswith("mine ") and line.endswith("my local sweep") for line in lines)
    assert any(line.startswith("broken ") and "(invalid:" in line and "attack.epz" in line for line in lines)
    assert len(lines) == len(SWEEP_FILES) + 2
    assert not (tmp_path / "runs").exists()


def test_a_sweep_in_the_working_directory_wins_over_the_shipped_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_sweep_path("pareto") == shipped_sweeps_dir() / "pareto.yaml"
    (tmp_path / "sweeps").mkdir()
    local = tmp_path / "sweeps" / "pareto.yaml"
    local.write_text("description: local override\nspace: {la.delta: [0.0, 0.1]}\n")
    assert resolve_sweep_path("pareto").resolve() == local.resolve()
    spec = load_sweep("pareto")
    assert spec.description == "local override" and spec.algorithm == "grid" and spec.name == "pareto"
    assert resolve_sweep_path("delta_eps_grid") == shipped_sweeps_dir() / "delta_eps_grid.yaml"  # others still shipped
    assert load_sweep(str(local)).description == "local override"  # and a path is taken as given


def test_an_unknown_sweep_name_lists_the_allowed_ones(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        load_sweep("nope")
    message = str(err.value)
    assert message.startswith("unknown sweep 'nope'; allowed: ") and "\n" not in message
    for path in SWEEP_FILES:
        assert path.stem in message
    with pytest.raises(ConfigError, match="sweep file 'missing.yaml' not found"):
        load_sweep("missing.yaml")


# ---------------------------------------------------------------- bad sweep files

GOOD = {"space": {"la.delta": [0.0, 0.1]}}

BAD = {
    "unknown_top_level_field": ("space: {la.delta: [0.0, 0.1]}\ncolour: blue\n", "unknown field 'colour'"),
    "unknown_algorithm": ("space: {la.delta: {choice: [0.0, 0.1]}}\nsearch: {algorithm: bayes}\n",
                          "search.algorithm: unknown value 'bayes'; allowed: grid, optuna"),
    "unknown_sampler": ("space: {la.delta: {choice: [0.0, 0.1]}}\nsearch: {algorithm: optuna, sampler: cmaes}\n",
                        "search.sampler: unknown value 'cmaes'; allowed: nsga2, tpe, gp, random"),
    "unknown_search_field": ("space: {la.delta: [0.0, 0.1]}\nsearch: {algoritm: grid}\n",
                             "search: unknown field 'algoritm'"),
    "space_key_not_a_config_key": ("space: {attack.epz: [0.0, 0.1]}\n",
                                   "space.attack.epz: unknown config key 'attack.epz' (did you mean 'attack.eps'?)"),
    "base_key_not_a_config_key": ("base: {la.detla: 0.1}\nspace: {attack.eps: [0.0, 0.1]}\n",
                                  "base: unknown config key 'la.detla'"),
    "out_of_range_grid_value": ("space: {la.delta: [0.1, 1.5]}\n",
                                "space.la.delta: la.delta: must be in [0, 1), got 1.5"),
    "out_of_range_range_bound": ("space: {la.p: {uniform: [0.5, 1.5]}}\n", "space.la.p: la.p: must be in [0, 1]"),
    "invalid_combination": ("space:\n  la.transform_set: [augmix_ops, geometric]\n  la.m: [1, 9]\n",
                            "space: the combination la.transform_set=geometric, la.m=9 is invalid: "
                            "la.m: must be in 1..5"),
    "grid_dimension_with_optuna": ("space: {la.delta: [0.0, 0.1]}\nsearch: {algorithm: optuna}\n",
                                   "space: grid dimensions need search.algorithm: grid"),
    "unknown_objective_metric": ("space: {la.delta: [0.0, 0.1]}\nobjectives: {accuracy: max}\n",
                                 "objectives: unknown metric 'accuracy'; allowed: clean_acc"),
    "corruption_objective_without_corruptions": ("space: {la.delta: [0.0, 0.1]}\nobjectives: {mce: min}\n",
                                                 "objectives: mce needs corruption evaluation in every trial"),
    "corruption_objective_with_a_trial_without": (
        "space: {eval.corruptions: [all, none]}\nobjectives: {corruption_class_error_sd: min}\n",
        "objectives: corruption_class_error_sd needs corruption evaluation"),
    "robust_objective_without_an_evaluation_attack": (
        "base: {eval.eps: 0}\nspace: {la.delta: [0.0, 0.1]}\n",
        "objectives: robust_acc needs an attack at evaluation in every trial, but eval.eps can be 0"),
    "robust_objective_with_a_trial_without": (
        "space: {eval.steps: [0, 10]}\nobjectives: {robust_class_error_sd: min}\n",
        "objectives: robust_class_error_sd needs an attack at evaluation in every trial, but eval.steps can be 0"),
    "unknown_objective_mode": ("space: {la.delta: [0.0, 0.1]}\nobjectives: {clean_acc: maximize}\n",
                               "objectives.clean_acc: unknown value 'maximize'; allowed: max, min"),
    "negative_gpu": ("space: {la.delta: [0.0, 0.1]}\nresources: {gpu: -1}\n", "resources.gpu: must be auto"),
    "fractional_gpu_above_one": ("space: {la.delta: [0.0, 0.1]}\nresources: {gpu: 1.5}\n", "resources.gpu: must be"),
    "zero_cpu": ("space: {la.delta: [0.0, 0.1]}\nresources: {cpu: 0}\n", "resources.cpu: must be a number > 0, got 0"),
    "unknown_resource": ("space: {la.delta: [0.0, 0.1]}\nresources: {tpu: 1}\n", "resources: expected a mapping"),
    "scale_preset_without_a_preset": ("space: {la.delta: {grid: [0.0, 0.1], scale: preset}}\n",
                                      "space.la.delta.scale: no preset value of la.delta; keys with presets:"),
    "unknown_scale": ("space: {attack.eps: {grid: [0.0, 1.0], scale: double}}\n",
                      "space.attack.eps.scale: unknown value 'double'; allowed: preset"),
    "two_kinds_in_a_dimension": ("space: {la.delta: {grid: [0.0], uniform: [0.0, 0.1]}}\n",
                                 "space.la.delta: expected exactly one of grid, choice"),
    "empty_grid": ("space: {la.delta: []}\n", "space.la.delta.grid: expected a non-empty list"),
    "reversed_range": ("space: {la.delta: {uniform: [0.3, 0.1]}}\n", "space.la.delta.uniform: expected low < high"),
    "loguniform_from_zero": ("space: {optim.lr: {loguniform: [0.0, 0.1]}}\n",
                             "space.optim.lr.loguniform: expected low < high and low > 0"),
    "unknown_base_preset": ("base: {eval.eps: {preset: la.delta}}\nspace: {attack.eps: [0.0, 0.1]}\n",
                            "base.eval.eps: expected {preset: KEY, times: F}"),
    "num_samples_zero": ("space: {la.delta: [0.0, 0.1]}\nsearch: {num_samples: 0}\n",
                         "search.num_samples: must be an integer >= 1, got 0"),
    "negative_max_retries": ("space: {la.delta: [0.0, 0.1]}\nmax_retries: -1\n",
                             "max_retries: must be an integer >= 0"),
    "bad_epochs": ("space: {la.delta: [0.0, 0.1]}\nepochs: 0\n", "optim.epochs: must be >= 1, got 0"),
    "base_is_a_list": ("base: [la.delta, 0.1]\nspace: {attack.eps: [0.0, 0.1]}\n",
                       "base and space must be mappings of dotted config keys"),
    "not_a_mapping": ("- la.delta\n- attack.eps\n", "expected a mapping with keys name, description"),
    "malformed_yaml": ("space: {la.delta: [0.0, 0.1]\nsearch: grid\n", "not valid YAML ("),
    "unknown_data_set": ("base: {data.name: imagenet}\nspace: {la.delta: [0.0, 0.1]}\n",
                         "data: unknown data set 'imagenet'; allowed: digits"),
}


def test_the_good_file_used_below_is_valid():
    assert parse_sweep(GOOD).space[0].values == (0.0, 0.1)


def test_a_corruption_metric_is_an_objective_when_trials_evaluate_corruptions():
    spec = parse_sweep({"base": {"eval.corruptions": "noise"}, "space": {"la.delta": [0.0, 0.1]},
                        "objectives": {"robust_acc": "max", "mce": "min", "corruption_class_error_sd": "min"}})
    assert spec.objectives == {"robust_acc": "max", "mce": "min", "corruption_class_error_sd": "min"}


@pytest.mark.parametrize("name", BAD)
def test_a_bad_sweep_file_is_rejected_with_one_line_naming_the_field(name, tmp_path):
    text, fragment = BAD[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_sweep(str(path), data=None if name == "unknown_data_set" else "digits")
    message = str(err.value)
    assert fragment in message, message
    assert "\n" not in message


def test_parse_rejects_what_yaml_would_not_even_reach():
    with pytest.raises(ConfigError, match=r"space\.la\.delta: expected a list \(grid\) or a mapping"):
        parse_sweep({"space": {"la.delta": 0.1}})
    with pytest.raises(ConfigError, match=r"space\.la\.m\.int: expected integer bounds"):
        parse_sweep({"space": {"la.m": {"int": [1, 2.5]}}})
    with pytest.raises(ConfigError, match=r"search\.seed: must be an integer >= 0"):
        parse_sweep({**GOOD, "search": {"seed": True}})
    with pytest.raises(ConfigError, match=r"objectives: expected a mapping metric: max\|min"):
        parse_sweep({**GOOD, "objectives": ["clean_acc"]})


@pytest.mark.parametrize("name", ["unknown_top_level_field", "space_key_not_a_config_key", "out_of_range_grid_value",
                                  "invalid_combination", "grid_dimension_with_optuna", "unknown_objective_metric",
                                  "negative_gpu", "zero_cpu", "scale_preset_without_a_preset", "malformed_yaml",
                                  "base_is_a_list", "unknown_sampler"])
def test_cli_main_exits_2_with_one_error_line_and_writes_nothing(name, tmp_path, monkeypatch, capsys):
    """In-process ``main`` (the same path as the command line, without paying for a process per case)."""
    text, fragment = BAD[name]
    (tmp_path / "bad.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)
    assert sweep_cli_module.main(["bad.yaml"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and fragment in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]
    if "ray" in sys.modules:
        assert not sys.modules["ray"].is_initialized()


@pytest.mark.parametrize("args, fragment", [
    (["--cpu", "0"], "--cpu: must be > 0"),
    (["--gpu", "-1"], "--gpu: must be auto, a fraction in [0, 1] or a whole number of GPUs, got '-1'"),
    (["--gpu", "lots"], "--gpu: must be auto, a fraction in [0, 1] or a whole number of GPUs, got 'lots'"),
    (["--num-samples", "0"], "--num-samples: must be >= 1"),
    (["--set", "la.delta=2"], "error: --set la.delta=2: la.delta: must be in [0, 1), got 2.0"),
    (["--set", "nokey"], "--set: expected key=value"),
    (["--data", "imagenet"], "data: unknown data set 'imagenet'"),
])
def test_cli_main_checks_the_command_line_too(args, fragment, tmp_path, monkeypatch, capsys):
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(GOOD))
    monkeypatch.chdir(tmp_path)
    assert sweep_cli_module.main(["good.yaml", *args]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1 and err.startswith("error: ") and fragment in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.yaml"]


@pytest.mark.parametrize("args, fragment", [
    (["bad.yaml"], "unknown field 'colour'"),
    (["malformed.yaml"], "not valid YAML"),
    (["no_such_sweep", "--dry-run"], "unknown sweep 'no_such_sweep'; allowed: "),
])
def test_cli_bad_input_in_a_subprocess_is_fast_one_line_exit_2_and_writes_nothing(args, fragment, tmp_path,
                                                                                   sweep_cli):
    (tmp_path / "bad.yaml").write_text(BAD["unknown_top_level_field"][0])
    (tmp_path / "malformed.yaml").write_text(BAD["malformed_yaml"][0])
    before = sorted(p.name for p in tmp_path.iterdir())
    result = sweep_cli(*args, cwd=tmp_path)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no runs/, nothing else
    assert result.seconds < 10, f"rejecting a bad sweep took {result.seconds:.1f}s (was Ray started?)"


# ---------------------------------------------------------------- a list of grids; early stopping's rungs

UNION = {"space": [{"la.delta": [0.0], "la.p": [0.5], "attack.eps": [0.0, 0.1]},
                   {"la.delta": [0.1, 0.2], "la.p": [0.5, 1.0], "attack.eps": [0.1]},
                   {"la.delta": [0.0], "la.p": [0.5], "attack.eps": [0.1]}]}  # a point of block 1 again


def test_a_list_of_grids_is_their_union_with_shared_points_once():
    spec = parse_sweep(UNION)
    points = grid_points(spec)
    assert points == [{"la.delta": 0.0, "la.p": 0.5, "attack.eps": 0.0}, {"la.delta": 0.0, "la.p": 0.5, "attack.eps": 0.1},
                      {"la.delta": 0.1, "la.p": 0.5, "attack.eps": 0.1}, {"la.delta": 0.1, "la.p": 1.0, "attack.eps": 0.1},
                      {"la.delta": 0.2, "la.p": 0.5, "attack.eps": 0.1}, {"la.delta": 0.2, "la.p": 1.0, "attack.eps": 0.1}]
    assert expected_trials(spec) == 6 and len(spec.blocks) == 3
    assert [(d.key, d.values) for d in spec.space] == [("la.delta", (0.0, 0.1, 0.2)), ("la.p", (0.5, 1.0)),
                                                       ("attack.eps", (0.0, 0.1))]
    pinned = parse_sweep(UNION, overrides={"attack.eps": "0.1"})  # --set pins a key in every block
    assert len(grid_points(pinned)) == 5 and all("attack.eps" not in p for p in grid_points(pinned))


@pytest.mark.parametrize(("space", "search", "message"), [
    ([{"la.delta": [0.0]}, {"la.p": [0.5]}], {}, r"^space\[1\]: every grid of the list must name the same keys"),
    ([{"la.delta": {"choice": [0.0, 0.1]}}], {}, r"^space\[0\]\.la\.delta: a list of grids takes lists \(grid\) only"),
    ([{"la.delta": [0.0]}], {"algorithm": "optuna"}, r"^space: "),
    ([{"la.delta": [0.0]}, {}], {}, r"^space: a list of grids must hold non-empty mappings"),
    ([{"la.delta": [0.0, 1.5]}], {}, r"la\.delta: must be in \[0, 1\)"),
    ([{"la.transform_set": ["geometric"], "la.m": [9]}], {}, r"^space: the combination la\.transform_set=geometric"),
])
def test_a_bad_list_of_grids_is_one_line_naming_the_block(space, search, message):
    with pytest.raises(ConfigError, match=message) as caught:
        parse_sweep({"space": space, "search": search})
    assert "\n" not in str(caught.value)


def test_the_la_bench_record_trains_each_delta_zero_setting_once():
    spec = load_sweep("la_bench")
    points = grid_points(spec)
    assert len(points) == 220 and len({tuple(sorted(p.items())) for p in points}) == 220
    zero = [p for p in points if p["la.delta"] == 0.0]
    assert len(zero) == 4  # 2 eps x 2 lr, not 2 x 2 x 3 sets x 2 m x 2 p
    seed_one = [p for p in points if p["seed"] == 1]
    assert len(seed_one) == 24 and all({**p, "seed": 0} in points for p in seed_one)  # repeats of recorded points
    assert {p["la.delta"] for p in points} == {0.0, 0.01, 0.03, 0.1, 0.3} and {p["attack.eps"] for p in points} == {0.0, 0.1}
    assert spec.base["eval.test_every"] == 1


def test_the_gp_sampler_is_a_sweep_file_choice():
    spec = parse_sweep({"space": {"la.delta": {"uniform": [0.0, 0.3]}}, "search": {"algorithm": "optuna", "sampler": "gp"}})
    assert spec.sampler == "gp"


@pytest.mark.parametrize(("extra", "message"), [
    ({"base": {"eval.corruptions": "noise"}, "objectives": {"robust_acc": "max", "corruption_class_error_sd": "min"}},
     r"^early_stopping: corruption_class_error_sd is not measured at rung epoch 1 \(rungs 1, 3, 9\) with "
     r"eval\.corruption_every=0"),
    ({"base": {"eval.corruptions": "noise", "eval.corruption_every": 3},
      "objectives": {"robust_acc": "max", "corruption_class_error_sd": "min"}},
     r"^early_stopping: corruption_class_error_sd is not measured at rung epoch 1 .* eval\.corruption_every=3"),
    ({"base": {"eval.every": 2}}, r"^early_stopping: clean_acc is not measured at rung epoch 3 .* eval\.every=2"),
    # train_loss is measured every epoch; the constraint's metric is judged too
    ({"base": {"eval.every": 4}, "objectives": {"train_loss": "min"}, "constraints": {"robust_acc": {"min": 0.1}}},
     r"^early_stopping: robust_acc is not measured at rung epoch 3 .* eval\.every=4"),
])
def test_early_stopping_is_refused_unless_every_judged_metric_is_measured_at_every_rung(extra, message):
    raw = {"space": {"la.delta": [0.0, 0.1]}, "early_stopping": {}, **extra}
    with pytest.raises(ConfigError, match=message) as caught:
        parse_sweep(raw)
    assert "\n" not in str(caught.value)
    measured = {**raw, "base": {**raw.get("base", {}), "eval.every": 1, "eval.corruption_every": 1}}
    assert parse_sweep(measured).early_stopping.rungs == (1, 3, 9)  # measured every epoch: accepted


def test_the_early_stopping_flag_is_refused_the_same_way(tmp_path, monkeypatch, capsys):
    (tmp_path / "corr.yaml").write_text(yaml.safe_dump({
        "base": {"eval.corruptions": "noise"}, "space": {"la.delta": [0.0, 0.1]},
        "objectives": {"robust_acc": "max", "corruption_class_error_sd": "min"}}))
    monkeypatch.chdir(tmp_path)
    assert sweep_cli_module.main(["corr.yaml", "--early-stopping"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith("error: --early-stopping: corruption_class_error_sd is not measured at rung epoch 1"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corr.yaml"]


def test_a_linked_key_takes_each_trials_value_of_its_source():
    """``{same_as: KEY}``: the paper's coupling delta = eps, in a grid of several radii and under --set."""
    spec = parse_sweep({"space": {"attack.eps": {"grid": [0.5, 1.0], "scale": "preset"}, "la.delta": {"same_as": "attack.eps"},
                                  "seed": [0, 1]}}, data="mnist")
    assert [(p["attack.eps"], p["la.delta"]) for p in grid_points(spec)] == [(0.15, 0.15)] * 2 + [(0.3, 0.3)] * 2
    assert [d.key for d in spec.space] == ["attack.eps", "la.delta", "seed"]  # the file's key order
    pinned = parse_sweep({"space": {"attack.eps": [0.1, 0.2], "la.delta": {"same_as": "attack.eps"}}},
                         overrides={"attack.eps": "0.05"})
    assert grid_points(pinned) == [{"la.delta": 0.05}]
    paper = load_sweep("paper_table", data="mnist")
    assert {p["la.delta"] for p in grid_points(paper) if p["attack.eps"] == 0.3} == {0.0, 0.03, 0.3}


@pytest.mark.parametrize(("space", "message"), [
    ({"la.delta": {"same_as": "attack.epz"}}, r"^space\[0\]\.la\.delta\.same_as: 'attack\.epz' is neither searched"),
    ({"la.delta": {"same_as": 3}}, r"^space\[0\]\.la\.delta: expected \{same_as: KEY\}"),
    ({"attack.eps": [0.5], "la.delta": {"same_as": "attack.eps", "times": 2}}, r"^space\[0\]\.la\.delta: expected"),
    # the linked value must be a valid value of its own key too
    ({"attack.eps": [0.1], "la.severity": {"same_as": "attack.eps"}},
     r"^space: the combination attack\.eps=0\.1, la\.severity=0\.1 is invalid: la\.severity: expected an integer"),
])
def test_a_bad_link_is_one_line(space, message):
    with pytest.raises(ConfigError, match=message) as caught:
        parse_sweep({"space": space})
    assert "\n" not in str(caught.value)
