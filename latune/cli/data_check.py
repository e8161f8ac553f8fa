"""``latune sweep --dry-run``'s check that the data sets exist: file names only, nothing read, no torch.

A run loads its data in latune.core.data, which downloads what is missing when it can; the dry run downloads
nothing and refuses with the DataError a run gives when the files are missing and no download helps. The file
layout below is torchvision's (latune.core.data reads the same places); tests/test_cli_sweep.py checks it against
latune.core.data, so the two cannot drift apart.
"""

from __future__ import annotations

import os
from pathlib import Path

from latune.errors import DataError

__all__ = ["DATA_FILES", "data_root", "check_data"]

# data set -> (folder under the data root, the files a run reads there, an archive in the root a run extracts
# instead, or None). MNIST's idx files may also be gzipped (name + ".gz").
DATA_FILES: dict[str, tuple[str, tuple[str, ...], str | None]] = {
    "mnist": ("MNIST/raw", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                            "t10k-labels-idx1-ubyte"), None),
    "cifar10": ("cifar-10-batches-py", ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                        "data_batch_5", "test_batch", "batches.meta"), "cifar-10-python.tar.gz"),
    "cifar100": ("cifar-100-python", ("train", "test", "meta"), "cifar-100-python.tar.gz"),
    "svhn": (".", ("train_32x32.mat", "test_32x32.mat"), None),
}


def data_root(data_dir: str | None) -> Path:
    """The folder a run looks in: data.data_dir, else $LATUNE_DATA, else ~/.cache/latune/data (as
    latune.core.data.default_data_dir)."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("LATUNE_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "latune" / "data"


def _present(path: Path, gzipped: bool) -> bool:
    return path.is_file() or (gzipped and path.with_name(path.name + ".gz").is_file())


def check_data(name: str, data_dir: str | None) -> str:
    """Where data set ``name`` was found (one line for the dry run); raises DataError naming the folder and the
    files to put there when they are missing. digits is embedded in scikit-learn: always there."""
    if name == "digits":
        return "digits (embedded in scikit-learn)"
    root = data_root(data_dir)
    if name == "imagefolder":
        for split in ("train", "val"):
            if not (root / split).is_dir():
                raise DataError(f"imagefolder: {root / split} does not exist; expected {root / split}/<class>/"
                                "<image files>")
        return f"imagefolder found in {root.resolve()}"
    if name not in DATA_FILES:
        raise DataError(f"data.name: unknown data set {name!r}; allowed: digits, imagefolder, {', '.join(DATA_FILES)}")
    folder, files, archive = DATA_FILES[name]
    where = (root / folder).resolve()
    if all(_present(where / f, gzipped=name == "mnist") for f in files):
        return f"{name} found in {where}"
    if archive and (root / archive).is_file():
        return f"{name}: {archive} found in {root.resolve()} (a run extracts it)"
    alt = f" (or {archive} into {root.resolve()})" if archive else ""
    raise DataError(f"{name} not found in {where} (--dry-run downloads nothing; a run downloads it where it can); "
                    f"put {', '.join(files)} there{alt}, or point --data-dir / LATUNE_DATA at a folder that has them")
