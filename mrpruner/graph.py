"""Token graphs over visual features: cosine similarity, the paper's thresholded adjacency
(Eq. 1 and 8) and the released code's temperature-softmax affinity (shared with G-Prune).

Similarities are always computed in float32, whatever the features' dtype: a threshold such as
cos >= 0.5 must not flip with the input precision, so CPU/CUDA and fp32/fp16/bf16 inputs build
the same graph (the authors' code ran in fp16; near-threshold entries may differ from it).
"""

from __future__ import annotations

import torch

RELEASED_TEMPERATURE = 0.03  # released MR-Pruner and G-Prune: similarities divided by 0.03
_RELEASED_ZERO = 1e-6  # |entry| below this counts as "no edge" in the released code ...
_RELEASED_FILL = -5000.0  # ... and is set to this before the row softmax


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    """Rows of x scaled to unit L2 norm in float32; a zero row stays zero (cosine 0 with all)."""
    x = x.float()
    norms = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    return x / torch.where(norms > 0, norms, torch.ones_like(norms))


def informativeness(x: torch.Tensor) -> torch.Tensor:
    """Eq. 2: I_i = ||X_i||_2, in float32."""
    return torch.linalg.vector_norm(x.float(), dim=-1)


def thresholded(sim: torch.Tensor, threshold: float) -> torch.Tensor:
    """Eq. 1 / Eq. 8 (in place): keep cos where cos >= threshold, else 0."""
    return sim.masked_fill_(sim < threshold, 0.0)


def released_affinity(
    sim: torch.Tensor, threshold: float, valid: torch.Tensor | None = None,
    temperature: float = RELEASED_TEMPERATURE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The released code's affinity (in place on sim): threshold, divide by the temperature (0.03),
    |x| < 1e-6 -> -5000, row softmax. Returns (P, degree) with degree = non-zero entries per row of P.

    valid (..., M) marks real columns (padding gets probability 0); a row with no real column is all 0.
    """
    logits = thresholded(sim, threshold).div_(temperature)
    logits.masked_fill_(logits.abs() < _RELEASED_ZERO, _RELEASED_FILL)
    if valid is not None:
        logits.masked_fill_(~valid.unsqueeze(-2), float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if valid is not None:
        probs = torch.nan_to_num_(probs, nan=0.0)  # rows with no real column at all
    return probs, (probs > 0).sum(dim=-1)


def propagate_released(
    unit: torch.Tensor, info: torch.Tensor, threshold: float, iterations: int, valid: torch.Tensor | None = None,
    temperature: float = RELEASED_TEMPERATURE,
) -> torch.Tensor:
    """score_j = (sum_i w_i (P^n)_ij) / deg_j over one token set (G-Prune; MR-Pruner released, n = 1).

    w P^n is computed as n vector-matrix products, not by forming P^n (same value up to rounding).
    """
    probs, degree = released_affinity(unit @ unit.transpose(-1, -2), threshold, valid, temperature)
    weights = info.unsqueeze(-2)
    for _ in range(iterations):
        weights = weights @ probs
    return weights.squeeze(-2) / degree  # degree >= 1: every row has its own token or is uniform
