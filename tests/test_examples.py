"""examples/: each example runs as a user runs it, at its tiny size."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.slow
def test_the_quickstart_runs_a_tiny_sweep_and_reads_its_front(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLES / "quickstart.py"), "--storage", str(tmp_path / "runs")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (experiment,) = (tmp_path / "runs").iterdir()
    table = pd.read_parquet(experiment / "results.parquet")
    assert len(table) == 2 and (table["status"] == "TERMINATED").all() and sorted(table["la.delta"]) == [0.0, 0.3]
    front = table[table["pareto_rank"] == 0]
    assert f"{len(front)} of 2 trials on the front" in done.stdout
    assert all(trial_id in done.stdout for trial_id in front["trial_id"])
    assert all((experiment / name).is_file() for name in ("front.csv", "front.png", "front.html"))
    assert not (tmp_path / "mlflow.db").exists()  # mlflow=False
