"""latune.sweep.rungs: rung epochs, the sweep file's early_stopping, and who of a rung goes on (known answers)."""

import math

import pytest

from latune.config import ConfigError
from latune.sweep.rungs import continues, default_grace, milestones, parse_early_stopping, rung_order, rung_entry
from latune.analysis.constraints import Constraint

MAX3 = ["max", "max", "min"]  # clean_acc, robust_acc, robust_class_error_sd


@pytest.mark.parametrize(("grace", "eta", "budget", "rungs"), [
    (1, 3, 10, (1, 3, 9)), (2, 3, 10, (2, 6)), (10, 3, 100, (10, 30, 90)), (1, 2, 4, (1, 2)), (5, 3, 50, (5, 15, 45)),
    (3, 3, 9, (3,)), (1, 2, 2, (1,)),
])
def test_rungs_lie_at_grace_times_eta_powers_below_the_budget(grace, eta, budget, rungs):
    assert milestones(grace, eta, budget) == rungs


@pytest.mark.parametrize(("budget", "grace"), [(10, 1), (50, 5), (90, 9), (100, 10), (2, 1), (5, 1)])
def test_auto_grace_is_a_tenth_of_every_presets_budget(budget, grace):
    assert default_grace(budget) == grace
    settings = parse_early_stopping({}, budget=budget, searched=[])
    assert settings.grace_epochs == grace and settings.reduction_factor == 3 and settings.rungs[0] == grace


@pytest.mark.parametrize(("raw", "message"), [
    ({"grace_epochs": 10}, r"^early_stopping\.grace_epochs: must be auto or an integer from 1 to 9 \(below the budget"),
    ({"grace_epochs": 0}, r"^early_stopping\.grace_epochs: must be"),
    ({"grace_epochs": 1.5}, r"^early_stopping\.grace_epochs: must be"),
    ({"reduction_factor": 1}, r"^early_stopping\.reduction_factor: must be an integer >= 2, got 1$"),
    ({"reduction_factor": True}, r"^early_stopping\.reduction_factor: must be an integer >= 2"),
    ({"grace": 2}, r"^early_stopping: unknown field 'grace'; allowed: grace_epochs, reduction_factor, front_order, "
                   r"min_results$"),
    ({"front_order": "crowding"}, r"^early_stopping\.front_order: unknown value 'crowding'; allowed: hypervolume, "
                                  r"epsilon_net$"),
    ({"min_results": 1}, r"^early_stopping\.min_results: must be an integer >= 2"),
    ([2, 3], r"^early_stopping: expected a mapping"),
])
def test_bad_early_stopping_settings_are_one_line_errors(raw, message):
    with pytest.raises(ConfigError, match=message) as caught:
        parse_early_stopping(raw, budget=10, searched=[])
    assert "\n" not in str(caught.value)


def test_early_stopping_needs_one_budget_of_at_least_two_epochs():
    assert parse_early_stopping(None, budget=10, searched=[]) is None  # absent: off
    with pytest.raises(ConfigError, match=r"optim\.epochs is searched"):
        parse_early_stopping({}, budget=10, searched=["optim.epochs"])
    with pytest.raises(ConfigError, match=r"needs optim\.epochs >= 2"):
        parse_early_stopping({}, budget=1, searched=[])


# --- who goes on: hand-made rungs, each with a known answer --------------------------------------------
FRONT_A = (0.95, 0.40, 0.20)  # clean, robust, SD
FRONT_B = (0.80, 0.70, 0.25)  # trades clean for robust: A and B do not dominate each other
DOMINATED = (0.70, 0.30, 0.30)  # worse than A and B in everything


def test_a_dominated_trial_is_stopped_and_a_front_trial_continues():
    # eta 2, four results: the best two (the front A, B) go on, the dominated ones stop
    rung = [FRONT_A, DOMINATED, FRONT_B, (0.60, 0.20, 0.40)]
    assert continues(rung, MAX3, index=2, eta=2)  # B arrives third and is on the front
    assert not continues(rung, MAX3, index=1, eta=2)
    assert not continues(rung, MAX3, index=3, eta=2)
    assert continues([DOMINATED, FRONT_A], MAX3, index=1, eta=2)  # a front trial arriving after a dominated one
    assert not continues([FRONT_A, DOMINATED], MAX3, index=1, eta=2)


def test_directions_are_respected():
    better, worse = (0.9, 0.1), (0.5, 0.3)
    assert not continues([better, worse], ["max", "min"], index=1, eta=2)
    assert continues([better, worse], ["min", "max"], index=1, eta=2)  # the same numbers, the other way round
    assert rung_order([better, worse], ["min", "max"]) == [1, 0]


def test_nan_is_worst():
    nan = (math.nan, 0.9, 0.0)  # would dominate everything but for the NaN
    assert not continues([FRONT_A, nan], MAX3, index=1, eta=2)
    assert continues([nan, DOMINATED], MAX3, index=1, eta=2)  # even a dominated result beats NaN
    assert rung_order([nan, DOMINATED, FRONT_A], MAX3) == [2, 1, 0]


def test_a_rung_with_fewer_than_eta_results_lets_every_trial_through():
    assert continues([FRONT_A, DOMINATED], MAX3, index=1, eta=3)
    assert continues([(math.nan,) * 3], MAX3, index=0, eta=2)  # the first result at a rung: nothing to compare
    assert not continues([FRONT_A, FRONT_B, DOMINATED], MAX3, index=2, eta=3)  # the third: only the best goes on


def test_infeasible_ranks_below_feasible_and_by_objectives_plus_violation():
    # DOMINATED is feasible; FRONT_A misses a constraint: the feasible one goes first
    assert rung_order([FRONT_A, DOMINATED], MAX3, violations=[0.1, 0.0]) == [1, 0]
    assert not continues([DOMINATED, FRONT_A], MAX3, index=1, eta=2, violations=[0.0, 0.1])
    # among infeasible ones the violation is one more objective: better objectives and a smaller miss win
    assert rung_order([DOMINATED, FRONT_A], MAX3, violations=[0.3, 0.05]) == [1, 0]
    # a larger miss with better objectives is a trade-off, not a defeat: both on one front, ε-net order
    assert rung_order([DOMINATED, FRONT_A], MAX3, violations=[0.05, 0.3]) == [1, 0]
    assert rung_order([FRONT_A, DOMINATED, FRONT_B], MAX3, violations=[0.2, 0.2, 0.0]) == [2, 0, 1]
    # a metric that was not reported misses by infinity: after every finite miss
    assert rung_order([FRONT_A, DOMINATED], MAX3, violations=[math.inf, 0.5]) == [1, 0]


def test_a_rung_where_every_result_misses_the_bound_still_ranks_by_every_objective():
    # early epochs: robust_acc >= 0.9 holds for nobody; ranking by the miss alone would keep the most robust
    rung = [(0.90, 0.40, 0.10), (0.30, 0.45, 0.40), (0.85, 0.30, 0.05), (0.20, 0.10, 0.50)]
    misses = [0.9 - r[1] for r in rung]
    assert rung_order(rung, MAX3, violations=misses) == rung_order(rung, MAX3)
    # (0.20, 0.10, 0.50) is dominated by (0.90, 0.40, 0.10): last either way; the miss is one more objective
    assert rung_order(rung, MAX3, violations=misses)[-1] == 3


def test_ties_within_a_front_follow_the_epsilon_net_from_the_compromise():
    # a 2-objective front: first the member nearest the ideal (1, 1) scaled, then the farthest from it, ...
    front = [(1.0, 0.0), (0.9, 0.5), (0.0, 1.0)]
    assert rung_order(front, ["max", "max"], front_order="epsilon_net") == [1, 2, 0]
    assert not continues(front, ["max", "max"], index=0, eta=2, front_order="epsilon_net")  # one goes on: index 1
    dominated = front + [(0.5, 0.4)]  # dominated by (0.9, 0.5): after the whole front
    assert rung_order(dominated, ["max", "max"], front_order="epsilon_net") == [1, 2, 0, 3]


def test_ties_within_a_front_follow_greedy_hypervolume_contributions():
    # minimised and scaled to [0, 1]: A (0, 1), B (0.1, 0.5), C (1, 0); reference 1.1 in each.
    # Alone: A 1.1 x 0.1 = 0.11, B 1.0 x 0.6 = 0.60, C 0.1 x 1.1 = 0.11 -> B first.
    # Beside B: A adds [0, 0.1] x [1, 1.1] = 0.01, C adds [1, 1.1] x [0, 0.5] = 0.05 -> C, then A.
    front = [(1.0, 0.0), (0.9, 0.5), (0.0, 1.0)]
    assert rung_order(front, ["max", "max"]) == [1, 2, 0]
    assert rung_order(front, ["max", "max"], front_order="hypervolume") == [1, 2, 0]
    assert continues(front, ["max", "max"], index=1, eta=2) and not continues(front, ["max", "max"], index=2, eta=2)


@pytest.mark.parametrize("front_order", ["hypervolume", "epsilon_net"])
def test_no_objective_wins_ties_by_coming_first(front_order):
    # the rung: the best clean accuracy (the weakest defence) used to go first, by column order alone
    rung = [(0.99, 0.25, 0.30), (0.80, 0.60, 0.10), (0.85, 0.55, 0.12)]
    assert rung_order(rung, MAX3, front_order=front_order)[0] != 0
    # each accuracy's best and a compromise: the compromise goes first, whichever accuracy is the first column
    rung = [(0.95, 0.40, 0.2), (0.40, 0.95, 0.2), (0.80, 0.80, 0.2)]
    swapped = [(robust, clean, sd) for clean, robust, sd in rung]
    assert rung_order(rung, MAX3, front_order=front_order)[0] == 2
    assert rung_order(swapped, MAX3, front_order=front_order)[0] == 2


def test_min_results_judges_from_the_second_result_on():
    # eta 3 judges from the third result; min_results 2 from the second, keeping max(1, n // 3)
    assert continues([FRONT_A, DOMINATED], MAX3, index=1, eta=3)
    assert not continues([FRONT_A, DOMINATED], MAX3, index=1, eta=3, min_results=2)
    assert continues([DOMINATED, FRONT_A], MAX3, index=1, eta=3, min_results=2)
    assert continues([FRONT_A], MAX3, index=0, eta=3, min_results=2)  # the first result: nothing to compare
    settings = parse_early_stopping({"min_results": 2}, budget=10, searched=[])
    assert settings.judged_from == 2 and "judged from the 2nd result" in settings.describe()
    assert parse_early_stopping({}, budget=10, searched=[]).judged_from == 3


def test_a_rung_entry_holds_the_objectives_then_the_violation():
    result = {"clean_acc": 0.9, "robust_acc": 0.1, "robust_class_error_sd": 0.2, "epoch": 3}
    entry = rung_entry(result, ["clean_acc", "robust_acc", "robust_class_error_sd"], [Constraint("robust_acc", 0.3)])
    assert entry == pytest.approx([0.9, 0.1, 0.2, 0.2])
    assert math.isnan(rung_entry({}, ["clean_acc"], [])[0])


def _greedy_hypervolume_order(points):
    """The plain greedy order (every gain computed again at every step), to check the lazy one against."""
    import numpy as np

    from latune.analysis.pareto import hypervolume

    order, covered = [], 0.0
    while len(order) < len(points):
        rest = [i for i in range(len(points)) if i not in order]
        gains = [hypervolume(points[order + [i]], ["min"] * 3, [1.1] * 3) - covered for i in rest]
        order.append(rest[int(np.argmax(gains))])
        covered += max(gains)
    return order


@pytest.mark.parametrize("seed", range(5))
def test_lazy_hypervolume_order_is_the_plain_greedy_order(seed):
    import numpy as np

    from latune.sweep.rungs import _hypervolume_order

    rng = np.random.default_rng(seed)
    # a 3-objective front (points on the simplex do not dominate each other), with a duplicate for the tie rule
    points = rng.dirichlet([1.0, 1.0, 1.0], size=12)
    points = np.vstack([points, points[3]])
    assert _hypervolume_order(points) == _greedy_hypervolume_order(points)
    assert _hypervolume_order(points, limit=4) == _greedy_hypervolume_order(points)[:4]


@pytest.mark.parametrize("front_order", ["hypervolume", "epsilon_net"])
def test_a_limited_rung_order_is_the_full_orders_prefix(front_order):
    import numpy as np

    rng = np.random.default_rng(0)
    rung = np.column_stack([rng.uniform(0.5, 1.0, 30), rng.uniform(0.0, 0.8, 30), rng.uniform(0.0, 0.3, 30)])
    rung[[4, 9]] = math.nan
    misses = np.where(rung[:, 1] < 0.2, 0.2 - rung[:, 1], 0.0)
    misses[7] = math.inf
    full = rung_order(rung, MAX3, misses, front_order)
    for limit in (0, 1, 5, 10, 29, 30, 40):
        assert rung_order(rung, MAX3, misses, front_order, limit=limit) == full[:limit]
    for index in range(30):
        assert continues(rung, MAX3, index, 3, misses, front_order=front_order) == (index in full[:10])
