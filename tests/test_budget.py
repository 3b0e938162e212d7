"""keep_count: one meaning of `ratio` for every method."""

from fractions import Fraction

import numpy as np
import pytest

from mrpruner.budget import keep_count


@pytest.mark.parametrize(
    "n, ratio, kept",
    [(100, 0.29, 71), (2340, 0.9, 234), (2340, 0.95, 117), (2340, 0.5, 1170), (2340, 0.0, 2340),
     (7, 0.5, 4), (3, 0.999, 1), (0, 0.5, 0), (100, Fraction(1, 3), 67), (100, np.float32(0.7), 30)],
)
def test_keep_count(n, ratio, kept):
    assert keep_count(n, ratio) == kept


@pytest.mark.parametrize("ratio, error", [(1.0, ValueError), (-0.1, ValueError), (float("nan"), TypeError),
                                          ("0.5", TypeError), (True, TypeError)])
def test_keep_count_rejects_bad_ratio(ratio, error):
    with pytest.raises(error, match="ratio must be"):
        keep_count(10, ratio)


def test_keep_count_rejects_bad_n():
    with pytest.raises(ValueError, match="n must be in"):
        keep_count(-1, 0.5)
