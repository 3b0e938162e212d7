"""Token budgets: how many tokens a pruning ratio keeps, per method under the two protocols of
`mrpruner.patch`, and how MR-Pruner splits them between resolutions (Eq. 4, its count-based
ablation, and the released code's allocation)."""

from __future__ import annotations

import math
from typing import NamedTuple

from mrpruner.checks import check_count, check_protocol, check_ratio, check_variant


def keep_count(n: int, ratio: float) -> int:
    """Tokens kept out of n at a pruning ratio: n - floor(ratio * n).

    The ratio is read as the decimal it prints as (0.29 -> 29/100), so 0.29 of 100 prunes 29
    tokens, not 28 as binary floating point would give.
    """
    n = check_count("n", n, 0, 2**62)
    return n - math.floor(check_ratio(ratio) * n)


def authors_keep(ratio: float, *counts: int) -> int:
    """int(keep_ratio * c_1 * c_2 * ...), multiplied left to right in floating point as the authors'
    code computes its budgets, with keep_ratio = 1 - ratio as the decimal they type (0.9 -> 0.1).
    Floating point matters: int(0.3 * 3 * 30) is 26, not 27."""
    value = float(1 - check_ratio(ratio))
    for count in counts:
        value *= check_count("counts", count, 0, 2**62)
    return int(value)


RESOLUTION_METHODS = ("mrpruner", "gprune")  # score each resolution apart and keep the newlines inside the budget


class Plan(NamedTuple):
    """One image's budget: `scored` tokens the method chooses (gprune under "paper": `split` =
    (low, high) of them per resolution) plus `newlines` newline tokens kept as they are."""

    scored: int
    newlines: int
    split: tuple[int, int] | None = None

    @property
    def total(self) -> int:
        """Visual tokens the language model receives from the image."""
        return self.scored + self.newlines


def plan(method: str, protocol: str, ratio: float, *, base: int, rows: int, cols: int,
         newlines: int | None = None) -> Plan:
    """The budget `mrpruner.patch` gives one image of `base` low-resolution tokens, a `rows` x `cols`
    grid and `newlines` separator tokens (default `rows`: LLaVA-NeXT's one newline per grid row;
    a host's layout says how many), n = base + rows * cols + newlines tokens.

    exact: every method keeps keep_count(n, ratio); mrpruner and gprune keep the newlines inside it
    (dropped when the budget is below the row count), the others treat them as ordinary tokens.
    paper, each as its authors' code ran it (r' = 1 - ratio, `authors_keep`): mrpruner int(r' n)
    scored tokens plus every newline (released code, either variant); gprune int(r' base) low and
    int(r' rows cols) high tokens plus every newline (G-Prune's LLaVA-NeXT code); fastv int(r' n)
    of the image span (FastV's lmms-eval code); random, tome and registered methods
    (`mrpruner.methods`), with no authors' code, keep_count.
    """
    if not isinstance(method, str):
        raise TypeError(f"method must be a method's name (mrpruner.methods), got {method!r}")
    protocol = check_protocol(protocol)
    base = check_count("base", base, 0, 2**62)
    rows, cols = check_count("rows", rows, 0, 2**62), check_count("cols", cols, 0, 2**62)
    newlines = rows if newlines is None else check_count("newlines", newlines, 0, 2**62)
    grid = rows * cols
    n = base + grid + newlines
    if protocol == "paper" and method == "mrpruner":
        return Plan(min(authors_keep(ratio, n), base + grid), newlines)
    if protocol == "paper" and method == "gprune":
        low, high = authors_keep(ratio, base), authors_keep(ratio, rows, cols)
        return Plan(low + high, newlines, (low, high))
    if protocol == "paper" and method == "fastv":
        return Plan(authors_keep(ratio, n), 0)
    keep = keep_count(n, ratio)
    if method not in RESOLUTION_METHODS:
        return Plan(keep, 0)
    kept_newlines = newlines if keep >= newlines else 0
    return Plan(keep - kept_newlines, kept_newlines)


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

    paper, adaptive (Eq. 4): K^H = floor(K * mean(I^H) / (mean(I^H) + mean(I^L))),
    K^L = K - K^H; if one side gets more than it has, the excess moves to the other.
    adaptive=False (Table 3, no IA) weighs by token counts instead of mean
    informativeness. If both means are 0 (all-zero features) Eq. 4 is 0/0 and the
    split falls back to token counts. With no high-resolution tokens (an image too
    elongated for a grid row or column) all K go to the low side; with no
    low-resolution ones (InternVL's single tile without a thumbnail) all go to the
    high side.
    released: K^L = min(int(K * w_low / (w_low + w_high)), N_l),
    K^H = min(K - K^L, N_h), with w the means (or counts when adaptive=False); the
    floor is on the low side and the sum can fall short of K, as in the authors' code.
    """
    check_variant(variant)
    n_low = check_count("n_low", n_low, 0, 2**62)
    n_high = check_count("n_high", n_high, 0 if n_low else 1, 2**62)
    keep = check_count("keep", keep, 0, n_low + n_high)
    if n_high == 0 or n_low == 0:  # one resolution: all of it
        return (keep, 0) if n_high == 0 else (0, keep)
    w_low, w_high = (mean_low, mean_high) if adaptive else (n_low, n_high)
    if w_low + w_high <= 0:
        w_low, w_high = n_low, n_high
    if variant == "released":
        k_low = min(int(keep * w_low / (w_low + w_high)), n_low)
        return k_low, min(keep - k_low, n_high)
    k_high = math.floor(keep * w_high / (w_high + w_low))
    k_high = max(min(k_high, n_high), keep - n_low)  # any excess to the other side
    return keep - k_high, k_high
