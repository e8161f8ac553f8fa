"""benchmarks/study_mnist_paper_table.py --small: real MNIST images split into latune's MNIST layout, the
paper_table sweep on them, and a report with 95% intervals. Skipped where the MNIST test files are absent
(only developers' and CI machines have them; latune never depends on them)."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "benchmarks" / "study_mnist_paper_table.py"
SOURCE = ROOT.parent / "shared" / "data" / "mnist-test"

pytestmark = pytest.mark.skipif(not (SOURCE / "t10k-images-idx3-ubyte.gz").is_file(),
                                reason=f"no MNIST test files in {SOURCE}")


def _idx(path: Path) -> np.ndarray:
    data = gzip.decompress(path.read_bytes())
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(data[3])]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * data[3]).reshape(dims)


@pytest.mark.slow
def test_small_study_splits_mnist_runs_paper_table_and_reports_intervals(tmp_path):
    # about 2 minutes on an idle 2-core machine; the timeout leaves room for a busy one
    done = subprocess.run([sys.executable, str(STUDY), "--out", str(tmp_path), "--small"], capture_output=True,
                          text=True, timeout=900, cwd=tmp_path, env={**os.environ, "RAY_ADDRESS": "local"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["images"] == {"train": 400, "test": 200} and summary["seeds"] == [0]

    # the split: disjoint-by-construction files in MNIST's layout, both parts with every class
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    train, test = _idx(raw / "train-labels-idx1-ubyte.gz"), _idx(raw / "t10k-labels-idx1-ubyte.gz")
    assert len(train) == 400 and len(test) == 200 and _idx(raw / "t10k-images-idx3-ubyte.gz").shape == (200, 28, 28)
    assert set(train.tolist()) == set(test.tolist()) == set(range(10))

    text = Path(summary["radii"][0]["report"]).read_text()
    assert "4 of 4 trials finished" in text and "test split" in text  # Standard and Adv, each with and without LA
    intervals = text.split("## 95% intervals")[1]
    # --small evaluates with PGD-5
    assert "| 2 | Adv | 1 |" in intervals and "PGD-5 worst-class acc" in intervals and "corr. err SD" in intervals
    assert "Adv+ #3 against Adv #2:" in intervals and "distinguishable from zero" in intervals
    assert "[" in intervals.split("### Adv+ against Adv")[1]  # the changes have intervals
