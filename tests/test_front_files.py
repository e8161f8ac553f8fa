"""latune.analysis.front_files: the front files beside results.parquet, from a hand-made results table."""

import json
import math

import pandas as pd

from latune.analysis.front_files import FRONT_FILES, front_columns, write_front_files
from latune.analysis.results import results_table

OBJECTIVES = {"clean_acc": "max", "robust_acc": "max", "robust_class_error_sd": "min"}


def _row(trial_id, clean, robust, sd, status="TERMINATED", delta=0.1):
    return {"trial_id": trial_id, "status": status, "error": None, "la.delta": delta, "clean_acc": clean,
            "robust_acc": robust, "robust_class_error_sd": sd, "test_clean_acc": clean - 0.01,
            "test_robust_acc": robust - 0.01, "test_robust_class_error_sd": sd + 0.01,
            **{f"best_{m}": v for m, v in (("clean_acc", clean), ("robust_acc", robust),
                                            ("robust_class_error_sd", sd))}}


def _table():
    # a and b on the front (each best somewhere), c dominated by a, d unfinished (never on the front)
    rows = [_row("a", 0.9, 0.5, 0.1, delta=0.0), _row("b", 0.8, 0.6, 0.2), _row("c", 0.7, 0.4, 0.3),
            _row("d", 0.95, 0.7, 0.05, status="UNFINISHED")]
    return results_table(rows, OBJECTIVES)


def _trace_types(html):
    """The plotly trace types of a page (its template names every type: read the traces only)."""
    call = html.split("Plotly.newPlot(", 1)[1]
    traces, _ = json.JSONDecoder().raw_decode(call[call.index("["):])
    return {trace["type"] for trace in traces}


def test_the_front_files_are_written_beside_the_results(tmp_path):
    written = write_front_files(_table(), OBJECTIVES, ["la.delta"], str(tmp_path))
    assert written == [f"{tmp_path}/{name}" for name in FRONT_FILES]
    front = pd.read_csv(tmp_path / "front.csv")
    assert sorted(front["trial_id"]) == ["a", "b"] and (front["pareto_rank"] == 0).all()
    assert list(front.columns) == ["trial_id", "clean_acc", "test_clean_acc", "robust_acc", "test_robust_acc",
                                   "robust_class_error_sd", "test_robust_class_error_sd", "best_clean_acc",
                                   "best_robust_acc", "best_robust_class_error_sd", "la.delta", "pareto_rank"]
    assert (tmp_path / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (tmp_path / "front.html").read_text()
    assert _trace_types(html) == {"scatter3d"} and "cdn.plot.ly" in html  # 3-D, plotly.js from the CDN: a light page
    assert len(html) < 200_000 and "test_robust_acc" in html  # the held-out values in the hover text


def test_two_objectives_draw_a_2d_page_and_an_unfinished_sweep_writes_nothing(tmp_path):
    two = {"clean_acc": "max", "robust_acc": "max"}
    table = results_table([_row("a", 0.9, 0.5, 0.1), _row("b", 0.8, 0.6, 0.2)], two)
    assert len(write_front_files(table, two, [], str(tmp_path / "two"))) == 3
    assert _trace_types((tmp_path / "two" / "front.html").read_text()) == {"scatter"}
    unfinished = results_table([_row("u", 0.9, 0.5, 0.1, status="UNFINISHED")], OBJECTIVES)
    assert write_front_files(unfinished, OBJECTIVES, [], str(tmp_path / "none")) == []
    assert not (tmp_path / "none").exists()
    assert write_front_files(results_table([], OBJECTIVES), OBJECTIVES, [], str(tmp_path / "empty")) == []


def test_front_columns_keep_only_what_the_table_has():
    table = pd.DataFrame({"trial_id": ["a"], "run_id": ["r"], "clean_acc": [0.5], "pareto_rank": [0],
                          "la.delta": [0.1], "test_clean_acc": [math.nan]})
    assert front_columns(table, {"clean_acc": "max"}, ["la.delta", "la.m"]) == [
        "trial_id", "run_id", "clean_acc", "test_clean_acc", "la.delta", "pareto_rank"]
