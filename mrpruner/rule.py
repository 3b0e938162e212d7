"""The book's one decision rule: every comparative statement, measured here or reported in the
paper, is decided by the same function (`direction`) in both directions.

A statement compares two quantities A and B (two methods' scores, a drop and a printed number).
Their difference D = A - B comes with a 95% interval [low, high], and the rule reads it:

- **above**: the whole interval lies above +tolerance;
- **below**: the whole interval lies below -tolerance;
- **tie**: anything else: the two cannot be told apart under the rule. Identical scores are a tie.

The tolerance is 0, except for a claim that a quantity *equals* a printed number: half a unit of
the printed number's last digit (plus the rounding of the inputs it is computed from); such a
claim holds exactly when the verdict is a tie.

Where the interval comes from depends on the numbers, never the rule:

- measured here, over one or more models trained alike: a two-level bootstrap of the mean
  (`interval`): models drawn with replacement, then each drawn model's questions with replacement,
  so the interval speaks of other training runs as well as of other questions. A difference of two
  methods is paired: both were asked the same questions;
- reported in the paper: the margin +- 1.96 standard errors of the benchmarks' test sets
  (`mrpruner.claims`); a printed number has no sampling error (a point).

"First" is said only of a method above every other under the rule; several methods that tie with
the best share the first place. A quantifier reads both ways: "on most models" means more than
half above (or more than half below); neither is "mixed".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

ABOVE, BELOW, TIE = "above", "below", "tie"
DIRECTIONS = (ABOVE, BELOW, TIE)
LEVEL = 0.95  # every interval of the book
DRAWS = 2000  # bootstrap draws of every interval of the book
NOTATION = "0.94 [0.86, 1.00]"  # a mean and its 95% interval: the book's one notation


def direction(low: float, high: float, tolerance: float = 0.0) -> str:
    """The rule: ABOVE when the interval [low, high] of A - B lies wholly above +tolerance, BELOW
    when wholly below -tolerance, else TIE. A NaN bound (no spread known) is a TIE."""
    for name, value in (("low", low), ("high", high), ("tolerance", tolerance)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise TypeError(f"{name} must be a real number, got {value!r}")
    if tolerance < 0 or math.isnan(tolerance):
        raise ValueError(f"tolerance must be a real number >= 0, got {tolerance!r}")
    if math.isnan(low) or math.isnan(high):
        return TIE
    if low > high:
        raise ValueError(f"low must not exceed high, got low={low!r}, high={high!r}")
    if low > tolerance:
        return ABOVE
    return BELOW if high < -tolerance else TIE


def interval(samples: Sequence[Sequence[float]], *, draws: int = DRAWS, seed: int = 0) -> tuple[float, float]:
    """The 95% interval of the mean over models of each model's mean score (`samples`: one
    sequence of per-question scores per model). Two-level percentile bootstrap: each draw picks
    len(samples) models with replacement, then resamples each picked model's questions. With one
    model it is the ordinary bootstrap over its questions. Seeded: the same numbers give the same
    interval on every machine."""
    arrays = [np.asarray(s, dtype=float) for s in samples]
    if not arrays or any(a.ndim != 1 or a.size == 0 for a in arrays):
        raise ValueError("samples must hold one non-empty sequence of scores per model, "
                         f"got sizes {[a.size for a in arrays]}")
    if not all(np.isfinite(a).all() for a in arrays):
        raise ValueError("samples hold non-finite scores (nan or inf)")
    rng = np.random.default_rng(seed)
    inner = np.stack([a[rng.integers(0, a.size, size=(draws, a.size))].mean(axis=1) for a in arrays])
    if len(arrays) == 1:
        means = inner[0]
    else:  # each slot of a draw: a model picked at random, with one of its own resampled means
        picked = rng.integers(0, len(arrays), size=(draws, len(arrays)))
        column = rng.integers(0, draws, size=(draws, len(arrays)))
        means = inner[picked, column].mean(axis=1)
    tail = (1 - LEVEL) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


class Comparison(NamedTuple):
    """A - B under the rule: the mean difference over the models, its 95% interval, the verdict
    (`DIRECTIONS`) and, per model, (name, A's score, B's score, that model's own verdict)."""

    difference: float
    low: float
    high: float
    direction: str
    per_model: tuple[tuple[str, float, float, str], ...]

    def count(self, which: str) -> int:
        """On how many models the model's own verdict is `which`."""
        return sum(d == which for *_, d in self.per_model)


def compare(a: Mapping[str, Mapping], b: Mapping[str, Mapping], *, tolerance: float = 0.0) -> Comparison:
    """A against B, paired: `a` and `b` map each model's name to its per-question scores
    ({question id: score}); each model's questions must be the same for both. The difference is the
    mean over the models of each model's mean difference, its interval `interval` of the
    per-question differences, and each model is judged on its own questions as well."""
    if set(a) != set(b) or not a:
        raise ValueError(f"a and b must score the same models, got {sorted(a)} and {sorted(b)}")
    per_model, differences = [], []
    for name in a:
        if set(a[name]) != set(b[name]) or not a[name]:
            raise ValueError(f"a and b must score the same questions on model {name!r}: "
                             f"{len(set(a[name]) ^ set(b[name]))} differ")
        ids = sorted(a[name])
        x, y = np.array([a[name][i] for i in ids], float), np.array([b[name][i] for i in ids], float)
        differences.append(x - y)
        own = direction(*interval([x - y]), tolerance)
        per_model.append((name, float(x.mean()), float(y.mean()), own))
    low, high = interval(differences)
    mean = float(np.mean([d.mean() for d in differences]))
    return Comparison(mean, low, high, direction(low, high, tolerance), tuple(per_model))


def quantified(directions: Sequence[str]) -> str:
    """A quantifier over parts (models, benchmarks) read the same way in both directions: ABOVE on
    more than half, BELOW on more than half, else "mixed"."""
    unknown = set(directions) - set(DIRECTIONS)
    if unknown or not directions:
        raise ValueError(f"directions must be a non-empty sequence of {DIRECTIONS}, got {list(directions)}")
    for which in (ABOVE, BELOW):
        if sum(d == which for d in directions) * 2 > len(directions):
            return which
    return "mixed"


def shown(mean: float, low: float, high: float, digits: int = 2) -> str:
    """A mean and its 95% interval in the book's one notation (`NOTATION`), on one line."""
    mean, low, high = (round(v, digits) + 0.0 for v in (mean, low, high))  # no "-0.00"
    if math.isnan(low):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f}\u00a0[{low:.{digits}f},\u00a0{high:.{digits}f}]"


def first(scores: Mapping[str, float], beats: Mapping[tuple[str, str], str]) -> tuple[str, ...]:
    """The labels that share the first place: the best mean, and every label that ties with it
    under the rule (`beats[(best, other)]` is the verdict of best - other). One label only when it
    is above every other."""
    if not scores:
        raise ValueError("scores must name at least one label")
    best = max(scores, key=lambda label: scores[label])
    return tuple(label for label in sorted(scores, key=lambda label: -scores[label])
                 if label == best or beats[(best, label)] != ABOVE)


def text(mean: float, low: float, high: float, which: str, a: str, b: str, digits: int = 2) -> str:
    """A comparison in words, e.g. "G-Prune above Random by 0.31 [0.22, 0.40]" or "G-Prune and
    Random tie (difference 0.00 [-0.01, 0.01])"."""
    if which not in DIRECTIONS:
        raise ValueError(f"which must be one of {DIRECTIONS}, got {which!r}")
    if which == TIE:
        return f"{a} and {b} tie (difference {shown(mean, low, high, digits)})"
    return f"{a} {which} {b} by {shown(abs(mean), *sorted((abs(low), abs(high))), digits)}"
