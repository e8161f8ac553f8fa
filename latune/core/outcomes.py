"""Per-image test outcomes of a finished run: the file the report's bootstrap intervals resample.

After the last epoch the evaluation fills a dict with one entry per test image (the first ``eval.max_images``
when that is set), in the test split's order; the trainable writes it into the trial's folder and
``python -m latune.train`` into its --out folder, as ``test_outcomes.npz``:

- ``labels``: int64 [N], class of each image, in [0, num_classes)
- ``clean_correct``: bool [N], classified correctly
- ``robust_correct``: bool [N], correct clean and after every PGD restart (equals clean_correct without attack)
- ``corruption_correct``: float32 [N], share of the (corruption, severity) pairs classified correctly; only
  with eval.corruptions
- ``num_classes``: int64 scalar, K
- ``test_set``: str scalar, ``identify_test_set`` of the evaluated images and labels: runs with the same id were
  tested on the same images, so the report resamples them jointly (latune.analysis.intervals). Files written
  before it existed read back with ``labels-<N>-<digest of the labels>`` in its place.

numpy only (tensors are converted here), so the analysis layer reads it without torch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OUTCOMES_FILE", "KINDS", "write_outcomes", "read_outcomes", "identify_test_set", "labels_id"]

OUTCOMES_FILE = "test_outcomes.npz"
# per-image arrays by kind of input, in the report's order; "labels" and "num_classes" describe them
KINDS = ("clean_correct", "robust_correct", "corruption_correct")


def _array(value: Any) -> np.ndarray:
    # torch tensors (any device) without importing torch here
    return np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)


def identify_test_set(images: Any, labels: Any) -> str:
    """``images-<N>-<16 hex digits>``: a SHA-256 digest of the images (uint8 [N, C, H, W]), their shape and labels.
    The same test images in the same order give the same id on every machine and device."""
    pixels, classes = _array(images), np.ascontiguousarray(_array(labels), dtype=np.int64)
    digest = hashlib.sha256(repr(pixels.shape).encode())
    digest.update(np.ascontiguousarray(pixels).tobytes())
    digest.update(classes.tobytes())
    return f"images-{len(classes)}-{digest.hexdigest()[:16]}"


def labels_id(labels: Any) -> str:
    """``labels-<N>-<16 hex digits>``: the test set of a file without ``test_set``, told apart by its labels only
    (two subsets of one data set almost never share their label sequence)."""
    classes = np.ascontiguousarray(_array(labels), dtype=np.int64)
    return f"labels-{len(classes)}-{hashlib.sha256(classes.tobytes()).hexdigest()[:16]}"


def write_outcomes(folder: str | os.PathLike, outcomes: Mapping[str, Any]) -> Path:
    """Write ``folder/test_outcomes.npz`` atomically (a reader never sees half a file); returns its path.

    Raises ValueError when labels or num_classes is missing or an array's length differs from the labels'.
    """
    arrays = {key: _array(value) for key, value in outcomes.items()}
    if "labels" not in arrays or "num_classes" not in arrays:
        raise ValueError("outcomes need labels and num_classes")
    n = len(arrays["labels"])
    for key in KINDS:
        if key in arrays and arrays[key].shape != (n,):
            raise ValueError(f"outcomes: {key} has shape {arrays[key].shape}, expected ({n},)")
    target = Path(folder) / OUTCOMES_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial.npz")  # np.savez appends .npz to other names
    kept = (*KINDS, "labels", "num_classes", "test_set")
    np.savez_compressed(partial, **{k: v for k, v in arrays.items() if k in kept})
    os.replace(partial, target)
    return target


def read_outcomes(path: str | os.PathLike) -> dict[str, Any]:
    """The arrays of a ``test_outcomes.npz`` (``num_classes`` an int, ``test_set`` a str, from the labels for an
    older file). Raises ValueError for a bad file."""
    try:
        with np.load(path) as data:
            out: dict[str, Any] = {key: data[key] for key in data.files}
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable {OUTCOMES_FILE}: {err}") from None
    if "labels" not in out or "num_classes" not in out or "clean_correct" not in out:
        raise ValueError(f"{path}: missing labels, num_classes or clean_correct")
    out["num_classes"] = int(out["num_classes"])
    out["test_set"] = str(out["test_set"]) if "test_set" in out else labels_id(out["labels"])
    return out
