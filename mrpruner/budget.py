"""Token budgets: how many tokens a pruning ratio keeps, and how MR-Pruner splits them between
resolutions (Eq. 4, its count-based ablation, and the released code's allocation)."""

from __future__ import annotations

import math
from fractions import Fraction
from numbers import Real

from mrpruner.checks import check_count, check_variant


def keep_count(n: int, ratio: float) -> int:
    """Tokens kept out of n at a pruning ratio: n - floor(ratio * n).

    The ratio is read as the decimal it prints as (0.29 -> 29/100), so 0.29 of 100 prunes 29
    tokens, not 28 as binary floating point would give.
    """
    n = check_count("n", n, 0, 2**62)
    if isinstance(ratio, bool) or not isinstance(ratio, (Real, Fraction)) or not math.isfinite(ratio):
        raise TypeError(f"ratio must be a real number in [0, 1), got {ratio!r}")
    if not 0 <= ratio < 1:
        raise ValueError(f"ratio must be in [0, 1) (the fraction of visual tokens pruned), got {ratio}")
    return n - math.floor(Fraction(str(ratio)) * n)


def split_budget(
    keep: int,
    n_low: int,
    n_high: int,
    *,
    mean_low: float,
    mean_high: float,
    adaptive: bool = True,
    variant: str = "paper",
) -> tuple[int, int]:
    """(K^L, K^H): how many low- and high-resolution tokens to keep out of `keep`.

    paper, adaptive (Eq. 4): K^H = floor(K * mean(I^H) / (mean(I^H) + mean(I^L))), K^L = K - K^H;
    if one side gets more than it has, the excess moves to the other. adaptive=False (Table 3,
    no IA) weighs by token counts instead of mean informativeness. If both means are 0 (all-zero
    features) Eq. 4 is 0/0 and the split falls back to token counts.
    released: K^L = min(int(K * w_low / (w_low + w_high)), N_l), K^H = min(K - K^L, N_h), with w
    the means (or counts when adaptive=False); the floor is on the low side and the sum can fall
    short of K, as in the authors' code.
    """
    check_variant(variant)
    n_low = check_count("n_low", n_low, 1, 2**62)
    n_high = check_count("n_high", n_high, 1, 2**62)
    keep = check_count("keep", keep, 0, n_low + n_high)
    w_low, w_high = (mean_low, mean_high) if adaptive else (n_low, n_high)
    if w_low + w_high <= 0:
        w_low, w_high = n_low, n_high
    if variant == "released":
        k_low = min(int(keep * w_low / (w_low + w_high)), n_low)
        return k_low, min(keep - k_low, n_high)
    k_high = math.floor(keep * w_high / (w_high + w_low))
    k_high = max(min(k_high, n_high), keep - n_low)  # move any excess to the other side
    return keep - k_high, k_high
