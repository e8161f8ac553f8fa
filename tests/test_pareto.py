import itertools
import math

import numpy as np
import pandas as pd
import pytest

from latune.analysis.pareto import (
    default_reference,
    dominates,
    front_table,
    hypervolume,
    non_dominated_ranks,
    pareto_front_mask,
    rank_trials,
    to_minimization,
)

LATUNE = ["max", "max", "min"]  # clean acc, robust acc, robust class-wise error SD


# ---------------------------------------------------------------- brute-force references


def _brute_dominates(a, b, directions):
    better_or_equal, strictly = True, False
    for x, y, d in zip(a, b, directions):
        x, y = (-x, -y) if d == "max" else (x, y)
        if x > y:
            better_or_equal = False
        if x < y:
            strictly = True
    return better_or_equal and strictly


def _brute_ranks(points, directions):
    """Peel fronts: a front is every remaining point that no remaining point dominates."""
    points = [tuple(p) for p in points]
    ranks = [-1] * len(points)
    remaining = [i for i, p in enumerate(points) if not any(math.isnan(v) for v in p)]
    rank = 0
    while remaining:
        front = [i for i in remaining
                 if not any(_brute_dominates(points[j], points[i], directions) for j in remaining)]
        for i in front:
            ranks[i] = rank
        remaining = [i for i in remaining if i not in front]
        rank += 1
    return np.array(ranks)


def _inclusion_exclusion(points, directions, reference):
    """Volume of the union of boxes [point, reference] (minimisation form), over all subsets."""
    q = to_minimization(points, directions)
    r = to_minimization(np.asarray(reference, dtype=float), directions)
    total = 0.0
    for size in range(1, len(q) + 1):
        for subset in itertools.combinations(range(len(q)), size):
            corner = q[list(subset)].max(axis=0)
            total += (-1) ** (size + 1) * np.prod(np.clip(r - corner, 0, None))
    return total


def _grid_volume(int_points, directions, int_reference):
    """Count of unit cells dominated, for points and reference on an integer grid (exact)."""
    signs = np.array([-1 if d == "max" else 1 for d in directions])
    q = np.asarray(int_points) * signs
    r = np.asarray(int_reference) * signs
    low = np.minimum(q.min(axis=0), r)
    axes = [np.arange(lo, hi) for lo, hi in zip(low, r)]  # lower corners of the cells inside the reference box
    cells = np.array(list(itertools.product(*axes))).reshape(-1, len(r))
    if len(cells) == 0:
        return 0
    covered = np.any(np.all(q[None, :, :] <= cells[:, None, :], axis=2), axis=1)
    return int(covered.sum())


# ---------------------------------------------------------------- known small cases


def test_to_minimization_and_dominates():
    assert to_minimization([[0.9, 0.5, 0.1]], LATUNE).tolist() == [[-0.9, -0.5, 0.1]]
    assert to_minimization([], LATUNE).shape == (0, 3)
    assert dominates([0.9, 0.5, 0.1], [0.8, 0.5, 0.1], LATUNE)
    assert dominates([0.9, 0.5, 0.1], [0.9, 0.5, 0.2], LATUNE)  # lower SD is better
    assert not dominates([0.9, 0.5, 0.1], [0.9, 0.5, 0.1], LATUNE)  # identical: neither
    assert not dominates([0.9, 0.4, 0.1], [0.8, 0.5, 0.1], LATUNE)  # trade-off
    assert not dominates([0.9, 0.5, math.nan], [0.1, 0.1, 0.9], LATUNE)
    with pytest.raises(ValueError):
        to_minimization([[1, 2]], LATUNE)
    with pytest.raises(ValueError):
        to_minimization([[1, 2]], ["max", "up"])
    with pytest.raises(ValueError):
        to_minimization([[1, 2, 3]], "max")


def test_ranks_2d_known():
    # maximise both: (3,1),(2,2),(1,3) front; (2,1),(1,2) second; (1,1) third
    points = [[3, 1], [2, 2], [1, 3], [2, 1], [1, 2], [1, 1]]
    assert non_dominated_ranks(points, ["max", "max"]).tolist() == [0, 0, 0, 1, 1, 2]
    # minimising both: (1,1) beats everything, and the layers come in reverse
    assert non_dominated_ranks(points, ["min", "min"]).tolist() == [2, 2, 2, 1, 1, 0]


def test_ranks_mixed_directions_and_duplicates():
    # max x, min y: (5,1) beats everything; the duplicates (3,2) tie and both sit on rank 1
    points = [[5, 1], [3, 2], [3, 2], [4, 3], [1, 1], [2, 5]]
    ranks = non_dominated_ranks(points, ["max", "min"])
    assert ranks.tolist() == [0, 1, 1, 1, 1, 2]
    duplicates = [[1.0, 1.0], [1.0, 1.0], [0.0, 2.0], [0.0, 0.0]]
    assert pareto_front_mask(duplicates, ["max", "max"]).tolist() == [True, True, True, False]


def test_ranks_3d_known():
    points = [
        [0.90, 0.50, 0.10],  # front
        [0.80, 0.55, 0.10],  # front (more robust)
        [0.85, 0.45, 0.05],  # front (fairer)
        [0.80, 0.50, 0.10],  # dominated by rows 0 and 1 only
        [0.80, 0.45, 0.12],  # dominated by row 3 as well -> rank 2
    ]
    assert non_dominated_ranks(points, LATUNE).tolist() == [0, 0, 0, 1, 2]


def test_nan_rows_are_unranked():
    points = [[0.9, 0.5, 0.1], [math.nan, 0.9, 0.0], [0.1, 0.1, 0.9], [0.99, 0.99, math.nan]]
    assert non_dominated_ranks(points, LATUNE).tolist() == [0, -1, 1, -1]
    assert pareto_front_mask(points, LATUNE).tolist() == [True, False, False, False]
    assert non_dominated_ranks([[math.nan, 1.0]], ["max", "min"]).tolist() == [-1]
    assert non_dominated_ranks(np.empty((0, 3)), LATUNE).tolist() == []


# ---------------------------------------------------------------- ranks vs brute force


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("n", [1, 7, 50, 200])
def test_ranks_match_brute_force(n, d):
    rng = np.random.default_rng(1000 * d + n)
    directions = ["max", "min", "max"][:d]
    points = np.round(rng.random((n, d)), 1)  # one decimal: many ties and duplicates
    if n > 5:
        points[rng.choice(n, size=n // 10, replace=False), rng.integers(0, d)] = math.nan
    np.testing.assert_array_equal(non_dominated_ranks(points, directions), _brute_ranks(points, directions))


# ---------------------------------------------------------------- hypervolume


def test_hypervolume_closed_forms():
    # one point: product of distances to the reference
    assert hypervolume([[0.9, 0.5, 0.1]], LATUNE, (0, 0, 1)) == pytest.approx(0.9 * 0.5 * 0.9)
    # two points in 2-D: union of two boxes = sum - overlap
    two = [[0.8, 0.3], [0.4, 0.6]]
    assert hypervolume(two, ["max", "max"], (0, 0)) == pytest.approx(0.8 * 0.3 + 0.4 * 0.6 - 0.4 * 0.3)
    # two points in 3-D
    a, b = (0.9, 0.4, 0.2), (0.5, 0.7, 0.1)
    overlap = 0.5 * 0.4 * 0.8
    expected = 0.9 * 0.4 * 0.8 + 0.5 * 0.7 * 0.9 - overlap
    assert hypervolume([a, b], LATUNE, (0, 0, 1)) == pytest.approx(expected)
    # d = 1: distance of the best point to the reference
    assert hypervolume([[0.3], [0.7]], ["max"], (0.1,)) == pytest.approx(0.6)
    assert hypervolume([[0.3], [0.7]], ["min"], (0.5,)) == pytest.approx(0.2)


def test_hypervolume_edge_cases():
    # reference not dominated by any point -> 0; touching it in one objective is not strict
    assert hypervolume([[0.5, 0.5, 0.5]], LATUNE, (0.6, 0, 1)) == 0.0
    assert hypervolume([[0.5, 0.5, 1.0]], LATUNE, (0, 0, 1)) == 0.0
    assert hypervolume(np.empty((0, 3)), LATUNE, (0, 0, 1)) == 0.0
    # NaN rows and points outside the reference box are ignored
    base = hypervolume([[0.9, 0.5, 0.1]], LATUNE, (0, 0, 1))
    with_junk = [[0.9, 0.5, 0.1], [math.nan, 1.0, 0.0], [1.0, 1.0, 1.5], [-0.1, 1.0, 0.0]]
    assert hypervolume(with_junk, LATUNE, (0, 0, 1)) == pytest.approx(base)
    with pytest.raises(ValueError):
        hypervolume([[1, 2, 3, 4]], ["max"] * 4, (0, 0, 0, 0))
    with pytest.raises(ValueError):
        hypervolume([[1, 2, 3]], LATUNE, (0, 0))
    with pytest.raises(ValueError):
        hypervolume([[1, 2, 3]], LATUNE, (0, math.nan, 1))


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("seed", range(6))
def test_hypervolume_matches_inclusion_exclusion(d, seed):
    rng = np.random.default_rng(seed)
    directions = ["max", "min", "max"][:d]
    reference = default_reference(directions)
    points = rng.random((int(rng.integers(1, 11)), d))  # continuous coordinates, up to 2^10 subsets
    assert hypervolume(points, directions, reference) == pytest.approx(
        _inclusion_exclusion(points, directions, reference), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("d", [2, 3])
@pytest.mark.parametrize("n", [1, 5, 40, 200])
def test_hypervolume_matches_grid_count(n, d):
    rng = np.random.default_rng(7 * n + d)
    directions = LATUNE[:d] if d == 3 else ["max", "min"]
    grid = rng.integers(0, 11, size=(n, d))  # values in {0..10}/10: many ties and duplicates
    # reference near the worst corner but not on it, so some points fall outside its box
    int_reference = np.array([rng.integers(0, 4) if x == "max" else 10 - rng.integers(0, 4) for x in directions])
    cells = _grid_volume(grid, directions, int_reference)
    points = np.vstack([grid / 10, [math.nan] * d])  # plus a failed trial, which must not count
    got = hypervolume(points, directions, tuple(int_reference / 10))
    assert got == pytest.approx(cells * 0.1 ** d, rel=1e-9, abs=1e-12)


def test_hypervolume_depends_only_on_front():
    rng = np.random.default_rng(3)
    points = rng.random((300, 3))
    front = points[pareto_front_mask(points, LATUNE)]
    assert hypervolume(points, LATUNE, (0, 0, 1)) == pytest.approx(hypervolume(front, LATUNE, (0, 0, 1)))


def test_default_reference():
    assert default_reference(LATUNE) == (0.0, 0.0, 1.0)
    assert default_reference(["min", "max"], bounds=[(0, 5), (-1, 2)]) == (5.0, -1.0)
    with pytest.raises(ValueError):
        default_reference(LATUNE, bounds=[(0, 1)])


# ---------------------------------------------------------------- front_table

OBJECTIVES = {"clean_acc": "max", "robust_acc": "max", "robust_class_error_sd": "min"}


def _rows():
    return [
        {"trial": "a", "clean_acc": 0.80, "robust_acc": 0.50, "robust_class_error_sd": 0.10},
        {"trial": "b", "clean_acc": 0.90, "robust_acc": 0.40, "robust_class_error_sd": 0.10},
        {"trial": "c", "clean_acc": 0.70, "robust_acc": 0.40, "robust_class_error_sd": 0.20},  # rank 1
        {"trial": "d", "clean_acc": 0.95, "robust_acc": None, "robust_class_error_sd": 0.05},  # failed
        {"trial": "e", "clean_acc": 0.85, "robust_acc": 0.45, "robust_class_error_sd": 0.05},
        {"trial": "f", "clean_acc": 0.60},  # unfinished: objectives missing
    ]


def test_front_table_from_rows():
    rows = _rows()
    snapshot = [dict(r) for r in rows]
    table = front_table(rows, OBJECTIVES)
    assert rows == snapshot
    assert list(table.columns) == ["trial", *OBJECTIVES, "pareto_rank", "pareto"]
    # rank 0 by clean acc best first, then rank 1, then unranked rows in input order
    assert table["trial"].tolist() == ["b", "e", "a", "c", "d", "f"]
    assert table["pareto_rank"].tolist() == [0, 0, 0, 1, -1, -1]
    assert table["pareto"].tolist() == [True, True, True, False, False, False]
    assert table["pareto_rank"].dtype.kind == "i" and table["pareto"].dtype == bool


def test_front_table_from_dataframe_keeps_input_and_index():
    frame = pd.DataFrame(_rows(), index=[10, 11, 12, 13, 14, 15])
    before = frame.copy()
    table = front_table(frame, {"robust_class_error_sd": "min", "clean_acc": "max"})
    pd.testing.assert_frame_equal(frame, before)
    assert "pareto" not in frame.columns
    # with (SD min, clean max) only, d (0.05, 0.95) dominates all; in rank 1, e (SD 0.05) before b
    assert table.index.tolist() == [13, 14, 11, 10, 12, 15]
    assert table["pareto_rank"].tolist() == [0, 1, 1, 2, 3, -1]


def test_front_table_ties_keep_input_order():
    rows = [{"id": i, "acc": 0.5, "sd": 0.1} for i in range(4)] + [{"id": 4, "acc": 0.6, "sd": 0.1}]
    table = front_table(rows, {"acc": "max", "sd": "min"})
    assert table["id"].tolist() == [4, 0, 1, 2, 3]
    assert table["pareto_rank"].tolist() == [0, 1, 1, 1, 1]  # duplicates share a rank


def test_front_table_empty_and_missing_column():
    table = front_table([], OBJECTIVES)
    assert len(table) == 0 and {"pareto_rank", "pareto", *OBJECTIVES} <= set(table.columns)
    with pytest.raises(KeyError):
        front_table(_rows(), {"clean_acc": "max", "robust_acc_typo": "max"})


def test_rank_trials_ranks_finished_trials_only_and_sorts_front_first():
    statuses = {"a": "TERMINATED", "b": "TERMINATED", "c": "TERMINATED", "d": "ERROR", "e": "UNFINISHED",
                "f": "TERMINATED"}
    frame = pd.DataFrame([{**row, "trial_id": row["trial"], "status": statuses[row["trial"]]} for row in _rows()],
                         index=[5, 4, 3, 2, 1, 0]).drop(columns="trial")
    before = frame.copy()
    table = rank_trials(frame, OBJECTIVES)
    pd.testing.assert_frame_equal(frame, before)  # input untouched
    # e (0.85, 0.45, 0.05) would be on the front, but it did not finish; f finished without objectives
    assert dict(zip(table["trial_id"], table["pareto_rank"])) == {"a": 0, "b": 0, "c": 1, "d": -1, "e": -1, "f": -1}
    assert table["trial_id"].tolist() == ["a", "b", "c", "d", "e", "f"]  # by rank, ties by trial_id, -1 last
    assert table["pareto"].tolist() == [True, True, False, False, False, False]
    assert table.index.tolist() == list(range(6))
    empty = rank_trials(pd.DataFrame(columns=["trial_id", "status", *OBJECTIVES]), OBJECTIVES)
    assert empty.empty and {"pareto_rank", "pareto"} <= set(empty.columns)
