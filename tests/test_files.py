"""latune.files: atomic writes leave the old file or the new one, never a part, and no temporary file."""

import json
import math
import os

import pytest

from latune import files
from latune.files import write_atomic, write_json_atomic


def test_json_round_trips_with_nan_and_overwrites_in_place(tmp_path):
    path = tmp_path / "sub" / "metrics.json"  # the folder is created
    write_json_atomic(path, {"a": 1, "b": [0.5, float("nan")]})
    write_json_atomic(path, {"a": 2, "b": [0.25, float("nan")]})
    loaded = json.loads(path.read_text())
    assert loaded["a"] == 2 and loaded["b"][0] == 0.25 and math.isnan(loaded["b"][1])
    assert os.listdir(path.parent) == ["metrics.json"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_a_failing_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "model.pt"
    write_atomic(path, lambda handle: handle.write(b"old"))

    def crash(handle):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_atomic(path, crash)
    with pytest.raises(TypeError):  # not JSON: refused before anything is written
        write_json_atomic(path, {"x": object()})
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["model.pt"]


def test_the_data_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(files.os, "fsync", lambda fd: calls.append("fsync"))
    real_replace = files.os.replace
    monkeypatch.setattr(files.os, "replace", lambda a, b: (calls.append("replace"), real_replace(a, b)))
    write_json_atomic(tmp_path / "x.json", [1])
    assert calls == ["fsync", "replace"]


def test_the_cli_writer_is_this_one():
    from latune.cli import common

    assert common.write_json_atomic is write_json_atomic
