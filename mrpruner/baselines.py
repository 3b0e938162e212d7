"""The paper's single-resolution baselines as selection functions under the same budget:
Random, L2-norm top-K, G-Prune (as its code computes it) and ToMe (bipartite soft matching).
FastV prunes inside the language model and lives in the model plug-in (fastv.py)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from mrpruner.checks import check_count, check_real, check_tokens
from mrpruner.core import top_indices
from mrpruner.graph import RELEASED_TEMPERATURE, informativeness, propagate_released, unit_rows


def random_select(n: int, keep: int, *, seed: int = 0, device: torch.device | str | None = None) -> torch.Tensor:
    """`keep` of n indices uniformly at random, reproducible by seed on every device (drawn on CPU)."""
    n = check_count("n", n, 0, 2**62)
    keep = check_count("keep", keep, 0, n)
    generator = torch.Generator().manual_seed(check_count("seed", seed, 0, 2**63 - 1))
    return torch.randperm(n, generator=generator)[:keep].sort().values.to(device)


def l2_select(tokens: torch.Tensor, keep: int) -> torch.Tensor:
    """The `keep` tokens of largest L2 norm (Eq. 2 alone; ties to the lower index), sorted."""
    tokens = check_tokens("tokens", tokens)
    keep = check_count("keep", keep, 0, len(tokens))
    return top_indices(informativeness(tokens), keep)


def gprune(
    tokens: torch.Tensor, keep: int, *, threshold: float = 0.5, temperature: float = RELEASED_TEMPERATURE,
    iterations: int = 5,
) -> torch.Tensor:
    """G-Prune (Jiang et al., AAAI 2025) on one token set, as its code computes it: cosine graph
    thresholded at `threshold`, divided by `temperature` (0.03 in its code), |x| < 1e-6 -> -5000, row softmax P;
    score_j = (sum_i ||x_i|| (P^n)_ij) / deg_j with n = `iterations`; keeps the top `keep`, sorted.
    Runs in float32 (the original ran in the features' dtype, fp16)."""
    tokens = check_tokens("tokens", tokens)
    keep = check_count("keep", keep, 0, len(tokens))
    threshold = check_real("threshold", threshold, -1.0, 1.0)
    temperature = check_real("temperature", temperature, 1e-6, 1e6)
    iterations = check_count("iterations", iterations, 1, 1000)
    scores = propagate_released(unit_rows(tokens), informativeness(tokens), threshold, iterations, None, temperature)
    return top_indices(scores, keep)


class Merge(NamedTuple):
    """ToMe's result: merged features (K, d) in the input dtype, how many source tokens each holds
    (K,), the merged row of every source token (N,), and the original index whose position each
    merged token takes (K,), ascending."""

    tokens: torch.Tensor
    sizes: torch.Tensor
    groups: torch.Tensor
    anchor: torch.Tensor


def tome_merge(tokens: torch.Tensor, keep: int) -> Merge:
    """ToMe (Bolya et al., ICLR 2023) bipartite soft matching down to `keep` tokens.

    Each round alternates the current tokens into sets A (even places) and B (odd places), links
    every A token to its most cosine-similar B token, and merges the r most similar A tokens into
    their B partners by size-weighted averaging; rounds repeat until `keep` tokens remain. A merged
    token keeps the place of the B token that absorbed the others, so order is preserved.
    """
    tokens = check_tokens("tokens", tokens)
    n = len(tokens)
    keep = check_count("keep", keep, 0, n)
    device = tokens.device
    if keep == 0:
        empty = torch.empty(0, dtype=torch.long, device=device)
        return Merge(tokens[:0], empty.float(), torch.full((n,), -1, dtype=torch.long, device=device), empty)
    x = tokens.float()
    sizes = torch.ones(n, device=device)
    anchor = torch.arange(n, device=device)
    groups = torch.arange(n, device=device)
    while len(x) > keep:
        a, b, size_a, size_b = x[0::2], x[1::2], sizes[0::2], sizes[1::2]
        best_sim, best_b = (unit_rows(a) @ unit_rows(b).T).max(dim=1)
        src = torch.sort(best_sim, descending=True, stable=True).indices[: min(len(x) - keep, len(a))]
        dst, weight = best_b[src], size_a[src]
        merged_size = size_b.index_add(0, dst, weight)
        x, sizes = x.clone(), sizes.clone()
        x[1::2] = (b * size_b[:, None]).index_add_(0, dst, a[src] * weight[:, None]) / merged_size[:, None]
        sizes[1::2] = merged_size
        survivors = torch.ones(len(x), dtype=torch.bool, device=device)
        survivors[2 * src] = False
        new_row = torch.cumsum(survivors, 0) - 1
        new_row[2 * src] = new_row[2 * dst + 1]  # a merged A token now lives in its B partner's row
        groups = new_row[groups]
        x, sizes, anchor = x[survivors], sizes[survivors], anchor[survivors]
    return Merge(x.to(tokens.dtype), sizes, groups, anchor)
