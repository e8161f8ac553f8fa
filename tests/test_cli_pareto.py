"""``latune pareto`` (latune.cli.pareto) without MLflow: a sweep's experiment folder read and its front files
redrawn; refusals that write nothing. The MLflow side runs in tests/test_tracking.py on a real sweep."""

import pandas as pd
import pytest

from latune.analysis.results import results_table, write_parquet
from latune.cli.pareto import main
from latune.tracking.records import SweepInfo

OBJECTIVES = {"clean_acc": "max", "robust_acc": "max"}


def _experiment(tmp_path):
    """A finished sweep's folder as latune sweep --no-mlflow leaves it: results.parquet and latune_sweep.json."""
    folder = tmp_path / "runs" / "tiny-digits-20260101-120000"
    rows = [{"trial_id": t, "status": "TERMINATED", "error": None, "la.delta": d, "clean_acc": c, "robust_acc": r}
            for t, d, c, r in (("t0", 0.0, 0.9, 0.4), ("t1", 0.1, 0.8, 0.5), ("t2", 0.3, 0.7, 0.3))]
    SweepInfo(name="tiny", experiment_path=str(folder), objectives=OBJECTIVES, data="digits",
              searched=("la.delta",)).save()
    write_parquet(results_table(rows, OBJECTIVES), str(folder))
    return folder


def test_a_folder_is_read_without_mlflow_and_plot_redraws_the_front_files(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    folder = _experiment(tmp_path)
    assert main([str(folder)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"sweep tiny ({folder}): 3 terminated") and "t0" in out and "t1" in out
    assert not (tmp_path / "mlflow.db").exists() and not (folder / "front.png").exists()

    assert main([str(folder), "--plot", "--parquet", str(tmp_path / "front.parquet")]) == 0
    out = capsys.readouterr().out
    assert f"front files: {folder}/front.csv, {folder}/front.png, {folder}/front.html" in out
    assert sorted(pd.read_csv(folder / "front.csv")["trial_id"]) == ["t0", "t1"]
    assert sorted(pd.read_parquet(tmp_path / "front.parquet")["trial_id"]) == ["t0", "t1"]
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("argv", [["delta_eps_grid"], ["delta_eps_grid", "--plot"]])
def test_a_sweep_name_in_a_folder_without_a_store_is_refused_and_creates_no_mlflow_db(argv, tmp_path, monkeypatch,
                                                                                       capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"error: --tracking-uri: no MLflow store at {tmp_path / 'mlflow.db'}")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_not_a_finished_sweep_is_one_line_exit_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: SWEEP: {tmp_path} has no latune_sweep.json: not a sweep's " \
                                      "experiment folder\n"
    folder = _experiment(tmp_path)
    (folder / "results.parquet").unlink()  # still running
    assert main([str(folder), "--plot"]) == 2
    assert "no results.parquet in" in capsys.readouterr().err and not (folder / "front.csv").exists()
