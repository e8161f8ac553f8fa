"""``latune sweep``'s command line (latune.cli.sweep, latune.cli.data_check), in process: errors blamed on the
flag that caused them, --gpu and --verbose ranges, the dry run's data check, --resume --name, "did you mean",
and the lines that say where to look at a finished sweep. Sweep files themselves: tests/test_sweepfile.py."""

import pandas as pd
import pytest
import yaml

from latune.cli import data_check
from latune.cli import sweep as cli
from latune.sweep.run import SweepOutcome


@pytest.fixture
def here(tmp_path, monkeypatch):
    """An empty working directory, no data or storage from the environment, no Ray cluster to join."""
    for name in ("LATUNE_DATA", "LATUNE_STORAGE", "RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _refused(argv, capsys):
    """The one error line of a refused command line (exit 2, nothing on stdout)."""
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith("error: "), (out, err)
    return err.strip().removeprefix("error: ")


@pytest.mark.parametrize("argv, line", [
    (["pareto", "--set", "la.delta=2"], "--set la.delta=2: la.delta: must be in [0, 1), got 2.0"),
    (["pareto", "--set", "la.p=0.5", "--set", "la.detla=0.1"],
     "--set la.detla=0.1: unknown config key 'la.detla' (did you mean 'la.delta'?); run with --help to list the keys"),
    (["delta_eps_grid", "--set", "optim.momentum=0"],  # valid alone, not with the default nesterov=true
     "--set optim.momentum=0: optim.nesterov: must be false when optim.momentum is 0, got True"),
    (["delta_eps_grid", "--corruptions", "rain"], "--corruptions rain: eval.corruptions: unknown 'rain'; allowed:"),
])
def test_a_bad_value_on_the_command_line_is_blamed_on_its_flag_not_on_the_sweep_file(argv, line, here, capsys):
    message = _refused(argv, capsys)
    assert message.startswith(line) and ".yaml" not in message, message
    assert list(here.iterdir()) == []


def test_a_bad_sweep_file_is_still_blamed_on_the_file(here, capsys):
    (here / "bad.yaml").write_text(yaml.safe_dump({"base": {"la.delta": 2}, "space": {"la.p": [0.5, 1.0]}}))
    assert _refused(["bad.yaml", "--set", "la.p=0.5"], capsys) == (
        "bad.yaml: base: la.delta: must be in [0, 1), got 2.0")


def test_a_misspelt_sweep_name_gets_a_did_you_mean(here, capsys):
    message = _refused(["paretto"], capsys)
    assert message.startswith("unknown sweep 'paretto' (did you mean 'pareto'?); allowed: adv_vs_la, ")
    (here / "sweeps").mkdir()
    (here / "sweeps" / "my_grid.yaml").write_text(yaml.safe_dump({"space": {"la.delta": [0.0, 0.1]}}))
    assert "(did you mean 'my_grid'?)" in _refused(["my_gird"], capsys)  # the working directory's sweeps too


@pytest.mark.parametrize("gpu", ["2.5", "1.5", "-1", "-2", "lots", "nan"])
def test_gpu_is_a_fraction_up_to_one_or_a_whole_number(gpu, here, capsys):
    assert _refused(["delta_eps_grid", "--gpu", gpu, "--dry-run"], capsys) == (
        f"--gpu: must be auto, a fraction in [0, 1] or a whole number of GPUs, got {gpu!r}")


@pytest.mark.parametrize("gpu, shown", [("0.25", "gpu 0.25"), ("1", "gpu 1.0"), ("2", "gpu 2.0"), ("auto", "gpu auto")])
def test_valid_gpu_requests_pass_the_dry_run(gpu, shown, here, capsys):
    assert cli.main(["delta_eps_grid", "--gpu", gpu, "--dry-run"]) == 0
    assert shown in capsys.readouterr().out


@pytest.mark.parametrize("verbose", ["7", "-1"])
def test_verbose_is_0_to_3(verbose, here, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["delta_eps_grid", "--verbose", verbose, "--dry-run"])
    assert done.value.code == 2 and "argument --verbose: invalid choice" in capsys.readouterr().err
    assert cli.main(["delta_eps_grid", "--verbose", "3", "--dry-run"]) == 0


def test_the_dry_run_refuses_missing_data_and_names_what_to_put_where(here, capsys):
    missing = here / "data"
    message = _refused(["delta_eps_grid", "--data", "mnist", "--data-dir", str(missing), "--dry-run"], capsys)
    assert message.startswith(f"mnist not found in {missing / 'MNIST' / 'raw'} (--dry-run downloads nothing")
    assert "train-images-idx3-ubyte" in message and "--data-dir / LATUNE_DATA" in message
    assert list(here.iterdir()) == []
    assert _refused(["delta_eps_grid", "--data", "imagefolder", "--data-dir", str(missing), "--dry-run"],
                    capsys).startswith(f"imagefolder: {missing / 'train'} does not exist")


def test_the_dry_run_says_where_the_data_are(here, capsys, monkeypatch):
    raw = here / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in data_check.DATA_FILES["mnist"][1]:
        (raw / f"{name}.gz").write_bytes(b"")
    assert cli.main(["delta_eps_grid", "--data", "mnist", "--data-dir", str(here / "data"), "--dry-run"]) == 0
    assert f"data: mnist found in {raw}" in capsys.readouterr().out.splitlines()
    assert cli.main(["delta_eps_grid", "--dry-run"]) == 0
    assert "data: digits (embedded in scikit-learn)" in capsys.readouterr().out
    monkeypatch.setenv("RAY_ADDRESS", "auto")  # trials run on a cluster's nodes: the data are theirs
    assert cli.main(["delta_eps_grid", "--data", "cifar10", "--data-dir", str(here / "none"), "--dry-run"]) == 0
    assert "data: not checked here (trials run on the Ray cluster at auto" in capsys.readouterr().out


def test_the_data_check_knows_the_files_latune_core_data_reads(tmp_path):
    from latune.core import data

    for name, (folder, files, archive) in data_check.DATA_FILES.items():
        core_folder, core_files, core_archive = data._TV_LAYOUT[name]
        assert (folder, archive) == (core_folder, core_archive), name
        # core_files is the error message's list: "data_batch_1..5, test_batch, ..."
        assert all(f in core_files or f"{f.rstrip('12345')}1..5" in core_files for f in files), name
    assert [p.name for p in data._mnist_files(tmp_path)] == list(data_check.DATA_FILES["mnist"][1])
    assert set(data_check.DATA_FILES) | {"digits", "imagefolder"} == set(data.DATASETS)


def test_resume_with_a_name_that_has_no_folder_is_refused(here, capsys):
    assert _refused(["delta_eps_grid", "--resume", "--name", "typo"], capsys) == (
        f"--name: no experiment folder 'typo' under {here / 'runs'} to resume; drop --resume to start a new sweep")
    assert list(here.iterdir()) == []
    (here / "runs" / "delta_eps_grid-digits-20260101-120000").mkdir(parents=True)
    assert "(did you mean 'delta_eps_grid-digits-20260101-120000'?)" in _refused(
        ["delta_eps_grid", "--resume", "--name", "delta_eps_grid-digits-20260101-12000", "--dry-run"], capsys)


def _outcome(**where):
    return SweepOutcome("/r/x", "/r/x/results.parquet", pd.DataFrame(), False, **where)


def test_the_end_of_a_sweep_says_where_to_look():
    files = ("/r/x/front.csv", "/r/x/front.png", "/r/x/front.html")
    lines = cli._where_to_look(_outcome(front_files=files, tracking_uri="sqlite:////w/mlflow.db",
                                        study_url="sqlite:////r/x/optuna.db")).splitlines()
    assert lines == ["front: /r/x/front.csv, /r/x/front.png, /r/x/front.html",
                     "MLflow UI: mlflow ui --backend-store-uri sqlite:////w/mlflow.db",
                     "Optuna dashboard: optuna-dashboard sqlite:////r/x/optuna.db   (pip install 'latune[ui]')"]
    server = cli._where_to_look(_outcome(tracking_uri="http://mlflow:5000", study_url="postgresql://me:pw@db/s"))
    assert "MLflow: http://mlflow:5000" in server and "postgresql://me:***@db/s" in server and "pw" not in server
    assert cli._where_to_look(_outcome()).splitlines() == [  # --no-mlflow, a grid, nothing finished
        "front: no finished trial, no front files (latune pareto FOLDER --plot draws them later)"]
