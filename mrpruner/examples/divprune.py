"""DivPrune (Alvar, Singh, Akbari and Zhang, "DivPrune: Diversity-based Visual Token Pruning for
Large Multimodal Models", CVPR 2025, arXiv:2503.02175), written from the paper's description with
mrpruner's public API only: keep the tokens that solve the Max-Min Diversity Problem greedily.

The distance between two tokens is 1 - their cosine similarity. The first kept token is the one
farthest from its nearest neighbour; each next one is the token whose distance to the nearest
token kept so far is largest. Features only: no attention, no text.

    mrpruner.patch(model, "mrpruner.examples.divprune:divprune", 0.9)

or `method=mrpruner.examples.divprune:divprune` in lmms-eval's --model_args and in a sweep grid.
"""

from __future__ import annotations

import torch


def divprune(features: torch.Tensor, keep: int, layout) -> torch.Tensor:
    """The sorted indices of `keep` of the image's tokens (`features`, (n, d)), chosen greedily
    for the largest minimum pairwise distance; `layout` is not needed (all tokens compete)."""
    unit = torch.nn.functional.normalize(features.float(), dim=1)
    distance = 1 - unit @ unit.T
    n = len(features)
    if keep == 0:
        return torch.zeros(0, dtype=torch.long, device=features.device)
    nearest = distance.masked_fill(torch.eye(n, dtype=torch.bool, device=features.device), torch.inf).amin(1)
    pick = int(nearest.argmax()) if n > 1 else 0
    chosen, to_chosen = [pick], distance[pick].clone()  # each token's distance to the nearest chosen one
    for _ in range(keep - 1):
        to_chosen[pick] = -torch.inf  # chosen: never again (the minimum below keeps it -inf)
        pick = int(to_chosen.argmax())
        chosen.append(pick)
        to_chosen = torch.minimum(to_chosen, distance[pick])
    return torch.tensor(sorted(chosen), dtype=torch.long, device=features.device)
