"""The ``latune`` console script (latune.cli.main, ``python -m latune``), the config flags every command shares
(latune.cli.common), the public API (latune/__init__.py), and what every command has alike: ``latune X`` in its
usage, examples in its --help, exit status 2 for bad input."""

from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import subprocess
import sys
import types
from pathlib import Path

import pytest

import latune
from latune.cli import common
from latune.cli import main as cli_main

REPO = Path(__file__).resolve().parent.parent


def _fake_command(monkeypatch, name):
    """A command ``name`` whose main records the argv it gets."""
    module = types.ModuleType(f"latune.cli._fake_{name}")
    module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
    module.seen = []
    module.main = lambda argv: module.seen.append(list(argv)) or 7
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setitem(cli_main.COMMANDS, name, (module.__name__, f"the {name} command"))
    return module


def test_help_lists_every_command_with_one_line(capsys):
    assert cli_main.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (module, text) in cli_main.available_commands().items():
        assert any(line.split() == [name, *text.split()] for line in out.splitlines()), name
        assert callable(importlib.import_module(module).main)
    assert {"sweep", "train", "audit", "report", "sync", "pareto"} <= set(cli_main.available_commands())


def test_a_command_gets_the_rest_of_the_command_line_and_its_exit_status_is_returned(monkeypatch):
    fake = _fake_command(monkeypatch, "fake")
    assert cli_main.main(["fake", "x", "--flag", "-h"]) == 7
    assert fake.seen == [["x", "--flag", "-h"]]


def test_a_command_whose_module_is_missing_is_not_listed(monkeypatch, capsys):
    monkeypatch.setitem(cli_main.COMMANDS, "ghost", ("latune.cli._no_such_command", "not written yet"))
    assert "ghost" not in cli_main.available_commands()
    cli_main.main(["--help"])
    assert "ghost" not in capsys.readouterr().out
    assert cli_main.main(["ghost"]) == 2


@pytest.mark.parametrize("argv, status", [(["nope"], 2), ([], 2), (["--nope"], 2)])
def test_no_or_an_unknown_command_is_exit_2(argv, status, capsys):
    assert cli_main.main(argv) == status
    err = capsys.readouterr().err.strip()
    if argv:
        assert err == f"error: unknown command {argv[0]!r}; allowed: {', '.join(cli_main.available_commands())}"
    else:
        assert err.startswith("usage: latune COMMAND")


def test_version(capsys):
    assert cli_main.main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"latune {latune.__version__}"


def test_the_console_script_is_declared_and_runs_the_same_command_as_python_m(tmp_path):
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"latune": "latune.cli.main:main"}
    script = Path(sys.executable).parent / "latune"
    if not script.exists():
        pytest.skip(f"{script} not installed (pip install -e .)")
    args = ["sweep", "delta_eps_grid", "--dry-run"]
    commands = ([str(script), *args], [sys.executable, "-m", "latune", *args],
                [sys.executable, "-m", "latune.sweep", *args[1:]])
    runs = [subprocess.run(c, capture_output=True, text=True, timeout=120, cwd=tmp_path) for c in commands]
    assert [r.returncode for r in runs] == [0, 0, 0], [r.stderr for r in runs]
    assert runs[0].stdout == runs[1].stdout == runs[2].stdout and "sweep delta_eps_grid:" in runs[0].stdout
    shown = subprocess.run([sys.executable, "-m", "latune", "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and shown.stdout.startswith("usage: python -m latune COMMAND")


# --------------------------------------------------------------------------- the shared config flags

def _overrides(argv, **kwargs):
    parser = argparse.ArgumentParser()
    common.add_config_arguments(parser, **kwargs)
    return common.config_overrides(parser.parse_args(argv))


def test_config_flags_become_config_keys_with_absolute_paths(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LATUNE_DATA", raising=False)
    assert _overrides([]) == {}
    got = _overrides(["--data", "mnist", "--data-dir", "d", "--set", "la.delta=0.1", "--corruptions", "noise",
                      "--corruptions-dir", "c"])
    assert got == {"data.name": "mnist", "data.data_dir": str(tmp_path / "d"), "la.delta": "0.1",
                   "eval.corruptions": "noise", "eval.corruptions_dir": str(tmp_path / "c")}
    monkeypatch.setenv("LATUNE_DATA", "from_env")
    assert _overrides([]) == {"data.data_dir": str(tmp_path / "from_env")}  # $LATUNE_DATA made absolute too
    assert _overrides(["--data-dir", "flag"])["data.data_dir"] == str(tmp_path / "flag")
    assert _overrides(["--set", "data.data_dir=/x"])["data.data_dir"] == "/x"  # named on the command line: wins
    with pytest.raises(common.UserError, match="--set: expected key=value"):
        _overrides(["--set", "nokey"])


def test_a_command_takes_only_the_config_flags_it_names(monkeypatch):
    monkeypatch.delenv("LATUNE_DATA", raising=False)
    parser = argparse.ArgumentParser()
    common.add_config_arguments(parser, only=("data", "data_dir"), data="the data set")
    assert "the data set" in parser.format_help() and "--set" not in parser.format_help()
    assert common.config_overrides(parser.parse_args(["--data", "svhn"])) == {"data.name": "svhn"}
    assert common.config_overrides(parser.parse_args(["--data", "svhn"]), data=False) == {}
    with pytest.raises(ValueError, match="unknown flag dest 'colour'"):
        common.add_config_arguments(argparse.ArgumentParser(), colour="red")


def test_a_config_error_is_blamed_on_the_flag_that_set_the_first_key_it_names():
    args = argparse.Namespace(data="mnist", overrides=["optim.momentum=0", "la.m=9"], corruptions=None,
                              corruptions_dir=None, data_dir=None)
    sources = common.flag_sources(args)
    assert sources == {"data.name": "--data mnist", "optim.momentum": "--set optim.momentum=0", "la.m": "--set la.m=9"}
    blame = common.blame_command_line
    assert str(blame("la.m: must be in 1..5, got 9", sources)) == "--set la.m=9: la.m: must be in 1..5, got 9"
    assert str(blame("optim.nesterov: false when optim.momentum is 0", sources)).startswith("--set optim.momentum=0:")
    assert str(blame("la.mm: no", sources)) == "--data mnist --set optim.momentum=0 --set la.m=9: la.mm: no"
    assert str(blame("x: y", {})) == "x: y"


def test_a_local_mlflow_store_that_is_not_there_is_named(tmp_path):
    (tmp_path / "mlflow.db").write_bytes(b"")
    assert common.missing_local_store(f"sqlite:///{tmp_path}/mlflow.db") is None
    assert common.missing_local_store(f"sqlite:///{tmp_path}/none.db?mode=ro") == f"{tmp_path}/none.db"
    assert common.missing_local_store(f"file://{tmp_path}/mlruns") == f"{tmp_path}/mlruns"
    assert common.missing_local_store("http://mlflow:5000") is None
    assert common.missing_local_store("sqlite:///:memory:") is None


@pytest.mark.parametrize("command, argv", [("train", []), ("sweep", ["delta_eps_grid"]), ("audit", ["model.pt"])])
def test_every_command_with_config_flags_builds_its_overrides_with_config_overrides(command, argv, monkeypatch,
                                                                                    capsys):
    module = importlib.import_module(f"latune.cli.{command}")
    seen = []

    def spy(args, **kwargs):
        seen.append(args)
        raise common.UserError("stop here")

    monkeypatch.setattr(module, "config_overrides", spy)
    assert module.main(argv) == 2 and len(seen) == 1
    assert capsys.readouterr().err == "error: stop here\n"


# --------------------------------------------------------------------------- the public API

def test_the_public_names_are_the_implementations():
    from latune import config, errors
    from latune.core import data, evaluate, models, train
    from latune.sweep import run, spec

    assert latune.train is train.train and latune.evaluate is evaluate.evaluate
    homes = {"from_flat": config, "to_flat": config, "resolve": config, "Config": config,
             "ConfigError": errors, "load_data": data, "build_model": models, "load_checkpoint": models,
             "run_sweep": run, "load_sweep": spec}
    for name, home in homes.items():
        assert getattr(latune, name) is getattr(home, name), name
    assert set(homes) | {"train", "evaluate", "__version__"} <= set(latune.__all__)
    assert all(getattr(latune, name) is not None for name in latune.__all__)
    assert set(latune.__all__) <= set(dir(latune))
    assert isinstance(latune.__version__, str) and latune.__version__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        latune.nope  # noqa: B018


@pytest.mark.slow
def test_import_latune_loads_no_torch_and_python_m_latune_train_keeps_the_function():
    code = ("import sys, latune\nprint('torch' in sys.modules)\n"
            "import runpy\nsys.argv = ['latune.train', '--help']\n"
            "try:\n    runpy.run_module('latune.train', run_name='__main__', alter_sys=True)\n"
            "except SystemExit:\n    pass\n"
            "import latune.core.train\nprint(latune.train is latune.core.train.train)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[0] == "False", "import latune imported torch"
    assert lines[-1] == "True", "after python -m latune.train, latune.train is not the training function"


@pytest.mark.slow
def test_importing_a_submodule_never_shadows_an_exported_function():
    code = ("import latune.train\nimport latune\nfrom latune.core.train import train\n"
            "import latune.train as shim\nprint(latune.train is train, shim is train, latune.SweepSpec.__name__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["True", "True", "SweepSpec"]
    latune.something_else = 1  # the guard refuses only a submodule taking an exported name
    assert latune.something_else == 1
    del latune.something_else


def test_the_sweep_types_are_exported_and_every_public_name_has_a_docstring():
    import inspect

    from latune.sweep.run import SweepOutcome
    from latune.sweep.spec import SweepSpec

    assert latune.SweepSpec is SweepSpec and latune.SweepOutcome is SweepOutcome
    assert {"SweepSpec", "SweepOutcome"} <= set(latune.__all__)
    undocumented = []
    for name in set(latune.__all__) - {"__version__"}:
        value = getattr(latune, name)
        doc = inspect.getdoc(value) or ""
        if not doc or doc.startswith(f"{name}("):  # a dataclass without one gets its signature as __doc__
            undocumented.append(name)
    # Config's docstring belongs in latune/config.py (being edited elsewhere); it is the one known gap
    assert not undocumented, f"public names without a docstring: {sorted(undocumented)}"


def test_latune_ships_its_type_hints():
    tomllib = pytest.importorskip("tomllib")
    assert (REPO / "latune" / "py.typed").is_file()
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "py.typed" in package_data["latune"]


# --------------------------------------------------------------------------- one CLI: usage, examples, exit 2

class _Built(Exception):
    """Raised instead of parsing: the parser a command's main() built."""


def _parser_of(module_name, monkeypatch):
    module = importlib.import_module(module_name)
    if hasattr(module, "_parser"):
        return module._parser()
    built = []

    def capture(self, *args, **kwargs):
        built.append(self)
        raise _Built

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(_Built):
        module.main([])
    return built[0]


@pytest.mark.parametrize("command", list(cli_main.COMMANDS))
def test_every_command_says_latune_x_in_its_usage_and_shows_examples(command, monkeypatch):
    parser = _parser_of(cli_main.COMMANDS[command][0], monkeypatch)
    shown = parser.format_help()
    assert shown.startswith(f"usage: latune {command} "), shown[:200]
    examples = shown.split("\nexamples:\n", 1)[1].split("\n\n")[0].splitlines()
    assert 2 <= len(examples) <= 4 and all(e.startswith(f"  latune {command} ") for e in examples), examples
    assert "``" not in shown, "reStructuredText in --help"


def test_latune_help_shows_examples_and_the_exit_status_rule(capsys):
    assert cli_main.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "\nexamples:\n  latune sweep " in out and "exit status 2" in out


@pytest.mark.parametrize("command, argv", [
    ("sweep", ["--cpu", "0", "delta_eps_grid"]), ("train", ["--set", "la.delta=2"]),
    ("audit", ["model.pt", "--split", "train"]), ("report", ["no-such-sweep"]),
    ("sync", ["no-such-folder"]), ("pareto", ["no-such-sweep"]),
])
def test_bad_input_is_exit_2_in_every_command(command, argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert importlib.import_module(f"latune.cli.{command}").main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []
