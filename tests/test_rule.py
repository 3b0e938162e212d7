"""The book's one decision rule (`mrpruner.rule`) on constructed cases: ties, reversals, one model
disagreeing, equality within rounding, and the two-level interval over models and questions."""

import math

import numpy as np
import pytest

from mrpruner import rule


def right(n_right, n=100):
    """Per-question scores: the first n_right of n questions answered."""
    return [1.0] * n_right + [0.0] * (n - n_right)


def by_id(values):
    return dict(enumerate(values))


@pytest.mark.parametrize("low, high, tolerance, expected", [
    (0.01, 0.20, 0.0, rule.ABOVE), (-0.20, -0.01, 0.0, rule.BELOW), (-0.01, 0.20, 0.0, rule.TIE),
    (0.0, 0.0, 0.0, rule.TIE),  # identical scores: a tie, never "above"
    (0.0, 0.3, 0.0, rule.TIE),  # an interval that touches zero is not above it
    (0.004, 0.004, 0.005, rule.TIE),  # a printed 0.26 against 0.264: equal within half a unit of the last digit
    (0.14, 0.14, 0.005, rule.ABOVE), (-0.14, -0.14, 0.005, rule.BELOW),  # 0.40 computed against a printed 0.26
    (math.nan, math.nan, 0.0, rule.TIE),  # no spread known: nothing is beyond it
])
def test_the_rule_reads_an_interval_in_both_directions(low, high, tolerance, expected):
    assert rule.direction(low, high, tolerance) == expected
    if not math.isnan(low):  # the rule is symmetric: A - B above is B - A below
        mirrored = {rule.ABOVE: rule.BELOW, rule.BELOW: rule.ABOVE, rule.TIE: rule.TIE}[expected]
        assert rule.direction(-high, -low, tolerance) == mirrored


@pytest.mark.parametrize("args, error, match", [
    ((0.3, 0.1), ValueError, "low must not exceed high"), ((0.0, 0.1, -0.1), ValueError, "tolerance must be"),
    (("0", 0.1), TypeError, "low must be a real number"), ((0.0, True), TypeError, "high must be a real number"),
])
def test_the_rule_refuses_a_bad_interval(args, error, match):
    with pytest.raises(error, match=match):
        rule.direction(*args)


def test_one_models_interval_is_the_ordinary_bootstrap_and_several_models_widen_it():
    scores = np.asarray(right(70), dtype=float)
    means = scores[np.random.default_rng(0).integers(0, scores.size, size=(rule.DRAWS, scores.size))].mean(axis=1)
    assert rule.interval([right(70)]) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    low, high = rule.interval([right(90), right(80), right(85)])
    pooled = rule.interval([right(90) + right(80) + right(85)])
    assert low < pooled[0] and high > pooled[1]  # other training runs are part of the uncertainty
    assert rule.interval([right(90), right(80), right(85)]) == (low, high)  # seeded
    spread = rule.interval([right(99), right(50), right(98)])  # one model far off: a wide interval
    assert spread[0] < 0.75 and spread[1] > 0.9


@pytest.mark.parametrize("samples", [[], [[]], [[1.0, math.nan]], [np.ones((2, 2))]])
def test_an_interval_needs_finite_scores_for_every_model(samples):
    with pytest.raises(ValueError, match="samples"):
        rule.interval(samples)


def test_compare_is_paired_and_reverses_exactly():
    a = {m: by_id(right(90)) for m in "abc"}
    b = {m: by_id(right(40)) for m in "abc"}
    forward, backward = rule.compare(a, b), rule.compare(b, a)
    assert forward.direction == rule.ABOVE and backward.direction == rule.BELOW
    assert forward.difference == pytest.approx(0.5) == -backward.difference
    assert forward.count(rule.ABOVE) == 3 == backward.count(rule.BELOW)
    assert [p[1:3] for p in forward.per_model] == [(0.9, 0.4)] * 3


def test_one_model_disagreeing_makes_a_tie_over_the_models_but_not_on_the_others():
    a = {"a": by_id(right(90)), "b": by_id(right(92)), "c": by_id(right(30))}
    b = {m: by_id(right(60)) for m in "abc"}
    found = rule.compare(a, b)
    assert found.direction == rule.TIE
    assert (found.count(rule.ABOVE), found.count(rule.BELOW)) == (2, 1)
    assert rule.quantified([d for *_, d in found.per_model]) == rule.ABOVE  # above on most models


def test_identical_selections_are_a_tie_with_a_zero_interval():
    same = {m: by_id(right(97)) for m in "abc"}
    found = rule.compare(same, same)
    assert (found.direction, found.difference, found.low, found.high) == (rule.TIE, 0.0, 0.0, 0.0)
    assert rule.text(found.difference, found.low, found.high, found.direction, "G-Prune", "MR-Pruner") == (
        "G-Prune and MR-Pruner tie (difference 0.00\u00a0[0.00,\u00a00.00])")


def test_compare_pairs_questions_by_id_and_refuses_mismatches():
    a = {"m": {0: 1.0, 1: 0.0}}
    assert rule.compare(a, {"m": {1: 0.0, 0: 1.0}}).difference == 0.0  # the order of ids does not matter
    with pytest.raises(ValueError, match="same questions on model 'm'"):
        rule.compare(a, {"m": {0: 1.0, 2: 0.0}})
    with pytest.raises(ValueError, match="same models"):
        rule.compare(a, {"n": {0: 1.0, 1: 0.0}})


@pytest.mark.parametrize("directions, expected", [
    ([rule.ABOVE] * 2 + [rule.BELOW], rule.ABOVE), ([rule.BELOW] * 2 + [rule.ABOVE], rule.BELOW),
    ([rule.ABOVE, rule.BELOW], "mixed"), ([rule.ABOVE, rule.TIE], "mixed"),  # half is not most, either way
    ([rule.TIE] * 3, "mixed"),
])
def test_most_reads_the_same_way_in_both_directions(directions, expected):
    assert rule.quantified(directions) == expected


def test_first_is_one_method_only_when_it_is_above_every_other():
    scores = {"G-Prune": 0.99, "MR-Pruner (released)": 0.99, "Random": 0.40}
    tied = {("G-Prune", "MR-Pruner (released)"): rule.TIE, ("G-Prune", "Random"): rule.ABOVE}
    assert rule.first(scores, tied) == ("G-Prune", "MR-Pruner (released)")
    alone = {("G-Prune", "MR-Pruner (released)"): rule.ABOVE, ("G-Prune", "Random"): rule.ABOVE}
    assert rule.first({**scores, "G-Prune": 1.0}, alone) == ("G-Prune",)


def test_the_notation_is_one_line_and_the_same_everywhere():
    assert rule.shown(0.94, 0.86, 1.0) == "0.94\u00a0[0.86,\u00a01.00]"
    assert rule.shown(0.94, 0.86, 1.0).replace("\u00a0", " ") == rule.NOTATION
    assert rule.shown(0.94, math.nan, math.nan) == "0.94"
    assert rule.shown(-0.001, -0.004, 0.003) == "0.00\u00a0[0.00,\u00a00.00]"  # never "-0.00"
    assert rule.text(-0.3, -0.4, -0.2, rule.BELOW, "A", "B") == "A below B by 0.30\u00a0[0.20,\u00a00.40]"
