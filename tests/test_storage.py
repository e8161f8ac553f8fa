"""latune.storage: plain paths and URIs to one pyarrow filesystem and path."""

import pyarrow.fs

from latune.storage import filesystem


def test_plain_paths_are_made_absolute_and_uris_are_read_by_pyarrow(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fs, path = filesystem("runs/sweep-1/")
    assert isinstance(fs, pyarrow.fs.LocalFileSystem) and path == f"{tmp_path}/runs/sweep-1"
    for location in (str(tmp_path), f"file://{tmp_path}", f"file://{tmp_path}/"):
        fs, path = filesystem(location)
        assert isinstance(fs, pyarrow.fs.LocalFileSystem) and path == str(tmp_path), location
    assert filesystem("/")[1] == "/"
    fs, path = filesystem("mock:///bucket/sweep/")  # pyarrow's in-memory filesystem stands for s3:// and gs://
    assert not isinstance(fs, pyarrow.fs.LocalFileSystem) and path == "bucket/sweep"
