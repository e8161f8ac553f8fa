"""latune.results on hand-made trial rows with known answers."""

import math

import pandas as pd
import pytest

from latune.analysis.pareto import non_dominated_ranks
from latune.analysis.results import format_front, latest_experiment, read_parquet, results_table, trial_row, write_parquet

OBJ = {"clean_acc": "max", "robust_class_error_sd": "min"}


def _epoch(epoch, clean, sd, **extra):
    return {"epoch": epoch, "clean_acc": clean, "robust_class_error_sd": sd, "epoch_time_s": 1.5, **extra}


def _row(trial_id, clean, sd, status="TERMINATED", **config):
    return {"trial_id": trial_id, "status": status, "error": "E: x" if status == "ERROR" else None,
            "clean_acc": clean, "robust_class_error_sd": sd, **config}


# ---------------------------------------------------------------- trial_row

def test_trial_row_takes_the_final_metrics_and_the_best_of_each_objective():
    history = [
        _epoch(1, 0.50, 0.30, clean_class_error=[0.5, 0.5], training_iteration=1, trial_id="t", time_total_s=2.0),
        _epoch(2, 0.80, 0.10, clean_class_error=[0.1, 0.3], training_iteration=2, trial_id="t", time_total_s=4.0),
        _epoch(3, 0.70, 0.20, clean_class_error=[0.2, 0.4], training_iteration=3, trial_id="t", time_total_s=6.0,
               **{"config/la.delta": 0.1, "done": True, "node_ip": "10.0.0.1", "flag": True}),
    ]
    row = trial_row("t", {"la.delta": 0.1, "la.m": None}, history, OBJ, None, epochs=3)
    assert row["trial_id"] == "t" and row["status"] == "TERMINATED" and row["error"] is None
    assert row["epochs_done"] == 3
    assert row["la.delta"] == 0.1 and row["la.m"] is None  # the config, as given
    assert row["clean_acc"] == 0.70 and row["robust_class_error_sd"] == 0.20  # final epoch
    assert row["best_clean_acc"] == 0.80  # max over epochs
    assert row["best_robust_class_error_sd"] == 0.10  # min over epochs
    assert row["clean_class_error"] == [0.2, 0.4]  # lists kept
    assert row["node_ip"] == "10.0.0.1" and row["time_total_s"] == 6.0
    for dropped in ("epoch", "training_iteration", "done", "config/la.delta", "flag"):
        assert dropped not in row, dropped
    assert row["trial_id"] == "t"  # not overwritten by Ray's trial_id in the report


def test_trial_row_status_error_and_unfinished():
    history = [_epoch(1, 0.5, 0.3), _epoch(2, float("nan"), float("nan"))]
    failed = trial_row("f", {}, history, OBJ, "FloatingPointError: training loss is nan", epochs=5)
    assert failed["status"] == "ERROR" and failed["error"].startswith("FloatingPointError")
    assert failed["best_clean_acc"] == 0.5 and failed["best_robust_class_error_sd"] == 0.3  # NaN epochs ignored
    assert failed["time_total_s"] == 3.0  # no Ray total: the sum of epoch times
    unfinished = trial_row("u", {}, history[:1], OBJ, None, epochs=5)
    assert unfinished["status"] == "UNFINISHED" and unfinished["epochs_done"] == 1
    assert trial_row("d", {}, history[:1], OBJ, None, epochs=1)["status"] == "TERMINATED"
    never = trial_row("n", {"la.delta": 0.2}, [], OBJ, "RuntimeError: boom", epochs=5)
    assert never["status"] == "ERROR" and never["epochs_done"] == 0 and never["time_total_s"] == 0.0
    assert math.isnan(never["best_clean_acc"]) and math.isnan(never["best_robust_class_error_sd"])
    assert "clean_acc" not in never
    assert trial_row("p", {}, [], OBJ, None, epochs=5)["status"] == "UNFINISHED"


def test_a_whole_budget_without_an_objective_is_an_error_a_nan_at_a_rung_is_pruned():
    """latune.analysis.outcome's one rule, as Optuna and MLflow apply it (tests/test_optuna_search.py, test_tracking)."""
    nan_last = [_epoch(1, 0.5, 0.3), _epoch(2, float("nan"), 0.2)]
    row = trial_row("n", {}, nan_last, OBJ, None, epochs=2)
    assert row["status"] == "ERROR"
    assert row["error"] == "ValueError: objective clean_acc not measured (missing or NaN) at the last epoch"
    stopped = [_epoch(1, float("nan"), 0.3) | {"done": True}]
    assert trial_row("s", {}, stopped, OBJ, None, epochs=2)["status"] == "PRUNED"


# ---------------------------------------------------------------- results_table

def _known_rows():
    return [
        _row("d", 0.60, 0.35, **{"la.m": 1}),  # dominated by c: rank 2
        _row("c", 0.70, 0.30, **{"la.m": None}),  # dominated by a and b: rank 1
        _row("b", 0.80, 0.10, **{"la.m": 2}),  # front
        _row("a", 0.90, 0.20, **{"la.m": None}),  # front
        _row("e", 0.99, 0.00, status="ERROR", **{"la.m": 3}),  # would dominate everything, but failed
        _row("u", 0.95, 0.05, status="UNFINISHED", **{"la.m": 1}),
        _row("g", 0.50, 0.20),  # dominated by b only: rank 1 (no la.m key at all)
    ]


def test_results_table_ranks_the_finished_trials_only():
    table = results_table(_known_rows(), OBJ)
    ranks = dict(zip(table["trial_id"], table["pareto_rank"]))
    assert ranks == {"a": 0, "b": 0, "c": 1, "g": 1, "d": 2, "e": -1, "u": -1}
    assert table["pareto"].tolist() == (table["pareto_rank"] == 0).tolist()
    assert table["trial_id"].tolist() == ["a", "b", "c", "g", "d", "e", "u"]  # by rank, then trial id; -1 last
    assert table.index.tolist() == list(range(7))
    assert table["pareto_rank"].dtype.kind == "i" and table["pareto"].dtype == bool
    finished = table[table["status"] == "TERMINATED"]
    recomputed = non_dominated_ranks(finished[list(OBJ)].to_numpy(float), list(OBJ.values()))
    assert recomputed.tolist() == finished["pareto_rank"].tolist()


def test_results_table_directions_matter():
    table = results_table(_known_rows(), {"clean_acc": "min", "robust_class_error_sd": "max"})
    ranks = dict(zip(table["trial_id"], table["pareto_rank"]))
    assert ranks["d"] == 0 and ranks["a"] > 0 and ranks["e"] == -1


def test_results_table_edge_cases():
    empty = results_table([], OBJ)
    assert empty.empty and {"pareto_rank", "pareto"} <= set(empty.columns)
    failed = results_table([{"trial_id": "x", "status": "ERROR", "error": "E: x"},
                            {"trial_id": "y", "status": "ERROR", "error": "E: y"}], OBJ)
    assert failed["pareto_rank"].tolist() == [-1, -1] and not failed["pareto"].any()
    assert failed["clean_acc"].isna().all()  # objectives present as columns even when nothing reported them
    nan = results_table([_row("x", 0.5, float("nan")), _row("y", 0.4, 0.1)], OBJ)
    assert dict(zip(nan["trial_id"], nan["pareto_rank"])) == {"y": 0, "x": -1}  # a NaN objective is unranked


# ---------------------------------------------------------------- write_parquet

def test_parquet_round_trip_with_mixed_columns(tmp_path):
    rows = _known_rows()
    for i, row in enumerate(rows):
        row["clean_class_error"] = [0.1 * i, 0.2] if row["status"] != "ERROR" else None
        row["optim.lr"] = "1e12" if row["trial_id"] == "e" else 0.02  # a YAML 1e12 is a string
        row["la.transform_set"] = None if row["trial_id"] == "a" else "geometric"
        row["seed"] = i
    rows[-1].pop("clean_class_error")  # missing in one row: NaN in the frame
    table = results_table(rows, OBJ)
    path = write_parquet(table, str(tmp_path))
    assert path == f"{tmp_path}/results.parquet" and (tmp_path / "results.parquet").is_file()
    back = read_parquet(str(tmp_path))
    assert back.equals(pd.read_parquet(path))
    assert back.columns.tolist() == table.columns.tolist()
    assert back["trial_id"].tolist() == table["trial_id"].tolist()
    assert back["pareto_rank"].tolist() == table["pareto_rank"].tolist()
    assert back["pareto"].tolist() == table["pareto"].tolist()
    by_id = back.set_index("trial_id")
    assert by_id.loc["b", "la.m"] == 2 and pd.isna(by_id.loc["a", "la.m"]) and pd.isna(by_id.loc["g", "la.m"])
    assert by_id.loc["e", "optim.lr"] == "1e12" and by_id.loc["a", "optim.lr"] == "0.02"  # mixed: strings
    assert pd.isna(by_id.loc["a", "la.transform_set"])
    assert by_id.loc["b", "la.transform_set"] == "geometric"
    assert list(by_id.loc["c", "clean_class_error"]) == pytest.approx([0.1, 0.2])
    assert by_id.loc["e", "clean_class_error"] is None
    assert by_id.loc["g", "clean_class_error"] is None
    assert by_id["seed"].dtype.kind == "i" and by_id.loc["d", "seed"] == 0
    assert by_id.loc["a", "clean_acc"] == 0.90 and by_id.loc["u", "robust_class_error_sd"] == 0.05
    assert by_id.loc["e", "error"] == "E: x" and pd.isna(by_id.loc["a", "error"])
    assert table["optim.lr"].tolist().count(0.02) == 6  # the table itself is not converted


def test_parquet_to_a_file_uri(tmp_path):
    table = results_table([_row("a", 0.9, 0.1)], OBJ)
    path = write_parquet(table, f"file://{tmp_path}/")
    assert path == f"file://{tmp_path}/results.parquet"
    assert pd.read_parquet(tmp_path / "results.parquet")["trial_id"].tolist() == ["a"]


# ---------------------------------------------------------------- format_front

def test_format_front_shows_the_front_rows_only():
    table = results_table(_known_rows(), OBJ)
    text = format_front(table, OBJ, ["la.m", "la.delta"])  # la.delta is not a column: skipped
    lines = text.splitlines()
    assert lines[0] == ("Pareto front (2 of 7 trials, chosen on the validation split; clean_acc (higher is better), "
                        "robust_class_error_sd (lower is better)):")
    assert lines[1].split() == ["trial_id", "clean_acc", "robust_class_error_sd", "la.m"]
    assert set(lines[2]) == {"-", " "}
    assert [line.split()[0] for line in lines[3:]] == ["a", "b"]
    assert lines[3].split() == ["a", "0.9", "0.2", "nan"] and lines[4].split() == ["b", "0.8", "0.1", "2"]
    for other in ("c", "d", "e", "g", "u"):
        assert not any(line.split()[0] == other for line in lines[3:])
    assert len(format_front(table, OBJ, [], limit=1).splitlines()) == 4
    nothing = results_table([_row("x", 0.5, 0.1, status="ERROR")], OBJ)
    assert format_front(nothing, OBJ, ["la.m"]) == "no finished trial yet: no Pareto front"


def test_format_front_shows_validation_and_held_out_test_values_side_by_side():
    """The front is chosen on the validation objectives; each one's test_ value is printed beside it."""
    rows = [_row("a", 0.90, 0.20, test_clean_acc=0.85, test_robust_class_error_sd=0.25),  # front
            _row("b", 0.80, 0.10, test_clean_acc=0.95, test_robust_class_error_sd=0.05),  # front
            # better on test than both, but dominated on validation: never on the front
            _row("c", 0.70, 0.30, test_clean_acc=0.99, test_robust_class_error_sd=0.01),
            _row("e", 0.99, 0.00, status="ERROR")]  # failed: no test values
    table = results_table(rows, OBJ)
    assert dict(zip(table["trial_id"], table["pareto_rank"])) == {"a": 0, "b": 0, "c": 1, "e": -1}
    assert math.isnan(table.set_index("trial_id").loc["e", "test_clean_acc"])
    lines = format_front(table, OBJ, ["la.m"]).splitlines()
    assert lines[0].startswith("Pareto front (2 of 4 trials, chosen on the validation split;")
    assert lines[1] == "test_*: the same metric on the held-out test split (never used to choose the front)"
    assert lines[2].split() == ["trial_id", "clean_acc", "test_clean_acc", "robust_class_error_sd",
                                "test_robust_class_error_sd"]
    assert lines[4].split() == ["a", "0.9", "0.85", "0.2", "0.25"]
    assert lines[5].split() == ["b", "0.8", "0.95", "0.1", "0.05"]
    assert len(lines) == 6  # c is better on test but was not chosen


def test_results_table_has_a_test_column_per_objective_even_when_no_trial_reported_one():
    table = results_table([_row("x", 0.5, 0.1, status="ERROR")], OBJ)
    assert {"test_clean_acc", "test_robust_class_error_sd"} <= set(table.columns)
    assert table["test_clean_acc"].isna().all()


def test_latest_experiment_is_the_newest_folder_of_the_sweep(tmp_path):
    import os

    assert latest_experiment(str(tmp_path), "grid-digits") is None
    for i, name in enumerate(["grid-digits-2", "grid-digits-1", "other-digits-3"]):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (1000 + i, 1000 + i))
    assert latest_experiment(str(tmp_path), "grid-digits") == "grid-digits-1"  # by time, not by name
