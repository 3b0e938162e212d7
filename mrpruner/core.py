"""MR-Pruner (Section 3, Algorithm 1): score low- and high-resolution visual tokens on graphs and
keep K of them, as the paper writes it (variant="paper") or as the authors' released code
computes it (variant="released"; see released-code-notes.md).

All work runs batched over images of different token counts (zero padding plus masks), so one
call handles a LLaVA-NeXT batch; `mr_prune` is the one-image case of the same code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch.nn.utils.rnn import pad_sequence

from mrpruner.budget import split_budget
from mrpruner.checks import check_count, check_flag, check_real, check_tokens, check_variant
from mrpruner.graph import informativeness, propagate_released, released_affinity, thresholded, unit_rows

DEFAULT_ALPHA = {"paper": 0.3, "released": 0.5}  # Sec. 4.2 says 0.3; the released code uses 0.5


@dataclass(frozen=True)
class MROptions:
    """MR-Pruner's options, validated on creation (each error names the option and its allowed
    values); `mr_prune`, `mr_prune_batched` and `mrpruner.patch` all take them through this class.

    variant: "paper" or "released". s_a, s_c: intra/cross graph thresholds in [-1, 1] (Eq. 1, 8).
    alpha: cross weight (Eq. 10), None for the variant's default (paper 0.3, released 0.5).
    intra=False scores a token by its own L2 norm (no IR), cross=False drops S^C (no CR),
    adaptive=False splits K by token counts (no IA): the ablations of Table 3."""

    variant: str = "paper"
    s_a: float = 0.5
    s_c: float = 0.5
    alpha: float | None = None
    intra: bool = True
    cross: bool = True
    adaptive: bool = True

    def __post_init__(self) -> None:
        check_variant(self.variant)
        check_real("s_a", self.s_a, -1.0, 1.0)
        check_real("s_c", self.s_c, -1.0, 1.0)
        if self.alpha is not None:
            check_real("alpha", self.alpha)
        for name in ("intra", "cross", "adaptive"):
            check_flag(name, getattr(self, name))

    @property
    def weight(self) -> float:
        """The cross weight alpha that Eq. 10 uses (the variant's default when alpha is None)."""
        return DEFAULT_ALPHA[self.variant] if self.alpha is None else float(self.alpha)


class Selection(NamedTuple):
    """Sorted int64 indices of the kept low- and high-resolution tokens."""

    low: torch.Tensor
    high: torch.Tensor


class Trace(NamedTuple):
    """Every intermediate quantity of Algorithm 1 for one image (float32 scores)."""

    info_low: torch.Tensor  # Eq. 2, I^L
    info_high: torch.Tensor  # Eq. 2, I^H
    intra_low: torch.Tensor  # Eq. 3, S^L
    intra_high: torch.Tensor  # Eq. 3, S^H
    k_low: int  # Eq. 4, K^L
    k_high: int  # Eq. 4, K^H
    cross_low: torch.Tensor  # Eq. 9, S^C (zeros when cross=False)
    final_low: torch.Tensor  # Eq. 10, S^L + alpha S^C
    selection: Selection  # Eq. 5, (R^L, R^H)


def mr_prune(low: torch.Tensor, high: torch.Tensor, keep: int, options: MROptions | None = None,
             **kwargs) -> Selection:
    """Keep `keep` of the N_l low-resolution (`low`, (N_l, d)) and N_h high-resolution (`high`,
    (N_h, d)) tokens of one image; returns the sorted indices kept on each side.

    Options: an `MROptions`, or its fields as keywords (variant, s_a, s_c, alpha, intra, cross,
    adaptive). Ties go to the lower index. Similarities are float32 (graph.py). An empty `high`
    (an image too elongated for a grid row or column) leaves intra-resolution scoring of the low
    side: all K go there and S^C = 0.
    """
    return explain(low, high, keep, options, **kwargs).selection


def explain(low: torch.Tensor, high: torch.Tensor, keep: int, options: MROptions | None = None,
            **kwargs) -> Trace:
    """`mr_prune` with every intermediate quantity of Algorithm 1 (for teaching and plots)."""
    return _run([low], [high], [keep], _options(options, kwargs))[0]


def mr_prune_batched(lows: Sequence[torch.Tensor], highs: Sequence[torch.Tensor], keeps: Sequence[int],
                     options: MROptions | None = None, **kwargs) -> list[Selection]:
    """`mr_prune` for B images at once (token counts may differ per image); same selections as
    B single calls, except where scores tie exactly in real arithmetic (e.g. 1-D features) and the
    last bit of a differently blocked matrix product breaks the tie. Options as in `mr_prune`."""
    return [trace.selection for trace in _run(lows, highs, keeps, _options(options, kwargs))]


def _options(options: MROptions | None, kwargs: dict) -> MROptions:
    """An `MROptions` from either the object or its fields as keywords (not both)."""
    if options is None:
        return MROptions(**kwargs)
    if not isinstance(options, MROptions):
        raise TypeError(f"options must be an MROptions (or pass its fields as keywords), got {type(options).__name__}")
    if kwargs:
        raise TypeError(f"pass options as an MROptions or as keywords, not both (got keywords {sorted(kwargs)})")
    return options


def _run(lows: Sequence[torch.Tensor], highs: Sequence[torch.Tensor], keeps: Sequence[int],
         options: MROptions) -> list[Trace]:
    s_a, s_c, alpha, variant = options.s_a, options.s_c, options.weight, options.variant
    intra, cross, adaptive = options.intra, options.cross, options.adaptive
    lows, highs, keeps = _check_batch(lows, highs, keeps)

    low, low_valid = _pad(lows)
    high, high_valid = _pad(highs)
    info_low, info_high = informativeness(low), informativeness(high)  # Eq. 2 (padding: 0)
    unit_low, unit_high = unit_rows(low), unit_rows(high)
    intra_low = intra_scores(unit_low, info_low, low_valid, s_a, variant) if intra else info_low
    intra_high = intra_scores(unit_high, info_high, high_valid, s_a, variant) if intra else info_high

    budgets = _split(info_low, info_high, low_valid, high_valid, keeps, adaptive, variant)  # Eq. 4
    kept_high = top_mask(intra_high, high_valid, [k_high for _, k_high in budgets])  # Eq. 5, R^H first
    if cross:
        pruned_high = high_valid & ~kept_high  # Eq. 6-7, P^H
        cross_low = cross_scores(unit_low, unit_high, info_high, pruned_high, s_c, variant)
    else:
        cross_low = torch.zeros_like(intra_low)
    final_low = intra_low + alpha * cross_low  # Eq. 10
    kept_low = top_mask(final_low, low_valid, [k_low for k_low, _ in budgets])  # Eq. 5, R^L

    traces = []
    for b, ((k_low, k_high), n_low, n_high) in enumerate(zip(budgets, map(len, lows), map(len, highs))):
        selection = Selection(kept_low[b, :n_low].nonzero().flatten(), kept_high[b, :n_high].nonzero().flatten())
        traces.append(Trace(info_low[b, :n_low], info_high[b, :n_high], intra_low[b, :n_low],
                            intra_high[b, :n_high], k_low, k_high, cross_low[b, :n_low],
                            final_low[b, :n_low], selection))
    return traces


def _check_batch(
    lows: Sequence[torch.Tensor], highs: Sequence[torch.Tensor], keeps: Sequence[int]
) -> tuple[list[torch.Tensor], list[torch.Tensor], list[int]]:
    """The batch's features and budgets, checked: one length, matching d, one device, keeps in range."""
    if not (len(lows) == len(highs) == len(keeps)) or len(lows) == 0:
        raise ValueError(f"lows, highs and keeps must be non-empty and of one length, got "
                         f"{len(lows)}, {len(highs)}, {len(keeps)}")
    many = len(lows) > 1
    lows = [check_tokens(f"lows[{b}]" if many else "low", x) for b, x in enumerate(lows)]
    highs = [check_tokens(f"highs[{b}]" if many else "high", x, min_tokens=0) for b, x in enumerate(highs)]
    dim, device = lows[0].shape[1], lows[0].device
    for name, x in [("low", t) for t in lows] + [("high", t) for t in highs]:
        if x.shape[1] != dim:
            raise ValueError(f"{name} features have dimension {x.shape[1]}, expected d = {dim} (low and high must match)")
        if x.device != device:
            raise ValueError(f"{name} is on {x.device}, expected {device}: all features must be on one device")
    keeps = [check_count(f"keeps[{b}]" if many else "keep", k, 0, len(lo) + len(hi))
             for b, (k, lo, hi) in enumerate(zip(keeps, lows, highs))]
    return lows, highs, keeps


def _pad(xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N_max, d) float32 zero-padded features and the (B, N_max) mask of real tokens."""
    if len(xs) == 1:
        x = xs[0].float().unsqueeze(0)
        return x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    lengths = torch.tensor([len(x) for x in xs], device=xs[0].device)
    padded = pad_sequence([x.float() for x in xs], batch_first=True)
    return padded, torch.arange(padded.shape[1], device=padded.device) < lengths[:, None]


def intra_scores(unit, info, valid, s_a, variant) -> torch.Tensor:
    """Eq. 1 + 3 (paper): S = A I with A_ij = cos_ij [cos_ij >= s_a]; released: one degree-normalised
    propagation step through the temperature-softmax graph. Padded tokens have I = 0."""
    if variant == "released":
        return propagate_released(unit, info, s_a, iterations=1, valid=valid)
    adjacency = thresholded(unit @ unit.transpose(1, 2), s_a)
    return (adjacency @ info.unsqueeze(-1)).squeeze(-1)


def cross_scores(unit_low, unit_high, info_high, pruned_high, s_c,
                 variant) -> torch.Tensor:
    """Eq. 8 + 9: S^C = A^C I^{H,pruned}, the graph linking each low-resolution token
    to the pruned high-resolution ones (kept/padded high tokens masked out rather
    than gathered, so it batches)."""
    sim = unit_low @ unit_high.transpose(1, 2)
    if variant == "released":
        probs, degree = released_affinity(sim, s_c, pruned_high)
        total = (probs @ info_high.unsqueeze(-1)).squeeze(-1)
        # A low token with no pruned high token to link to (K^H = N_h) gets
        # S^C = 0, not 0/0.
        return torch.where(degree > 0, total / degree.clamp_min(1),
                           torch.zeros_like(total))
    adjacency = thresholded(sim, s_c).masked_fill_(~pruned_high.unsqueeze(1), 0.0)
    return (adjacency @ info_high.unsqueeze(-1)).squeeze(-1)


def _split(info_low, info_high, low_valid, high_valid, keeps, adaptive, variant) -> list[tuple[int, int]]:
    """Eq. 4 per image, from float64 means of the real tokens (one host sync for the batch)."""
    n_low, n_high = low_valid.sum(1), high_valid.sum(1)
    means = torch.stack([info_low.double().sum(1) / n_low, info_high.double().sum(1) / n_high], 1).tolist()
    return [split_budget(k, nl, nh, mean_low=ml, mean_high=mh, adaptive=adaptive, variant=variant)
            for k, nl, nh, (ml, mh) in zip(keeps, n_low.tolist(), n_high.tolist(), means)]


def top_indices(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Sorted int64 indices of the `keep` highest of the 1-D `scores` (ties: lower index first)."""
    mask = top_mask(scores.unsqueeze(0), torch.ones_like(scores, dtype=torch.bool).unsqueeze(0), [keep])
    return mask[0].nonzero().flatten()


def top_mask(scores: torch.Tensor, valid: torch.Tensor, ks: Sequence[int]) -> torch.Tensor:
    """Bool mask of the ks[b] highest-scoring real tokens of each row (ties: lower index first)."""
    order = torch.sort(scores.masked_fill(~valid, -math.inf), dim=1, descending=True, stable=True).indices
    rank_kept = torch.arange(scores.shape[1], device=scores.device) < torch.tensor(ks, device=scores.device)[:, None]
    return torch.zeros_like(valid).scatter_(1, order, rank_kept)

