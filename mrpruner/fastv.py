"""FastV (Chen et al., ECCV 2024) inside a transformers Llama-style language model, under sdpa or
eager attention: the last prompt token's attention at layer K-1, averaged over heads, ranks each
image's tokens; layers K.. run on the kept ones.

How, without switching the model to eager attention: layer K-1's attention module gets its own
copy of the config naming a registered attention function that computes the one query row
softmax(q_last k^T * scaling + mask_last) in float32 (O(L*d) per head) and then calls the usual
kernel. Layer K gathers the kept hidden states, RoPE (cos, sin) and position ids, left-pads the
rows again and builds the shorter causal mask against its own (empty) cache layer; layers > K reuse
it. The KV cache then holds full-length layers < K and pruned layers >= K, so decode steps need two
masks when rows are padded: the caller's for layers < K, the pruned prefix plus the new tokens for
layers >= K (`masking_utils.create_causal_mask(..., layer_idx=K)`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from mrpruner.attention import HOOK, hook, usual_kernel
from mrpruner.budget import plan
from mrpruner.core import top_indices
from mrpruner.seam import ImageTokens, PatchState, cache_key, compact, gather_tokens, now, set_attribute

ATTENTION_NAME = "mrpruner_fastv"


def last_query_attention(query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None, last: torch.Tensor,
                         scaling: float) -> torch.Tensor:
    """Head-averaged float32 attention of each row's query at position last[b] over all keys:
    (B, kv). query (B, H, q, d), key (B, G, kv, d) with H a multiple of G (grouped KV heads); mask
    as the kernels get it: None (causal), bool (True = attend) or additive float, (B, 1 or H, q, kv)."""
    batch, heads, _, dim = query.shape
    groups, kv = key.shape[1], key.shape[2]
    rows = torch.arange(batch, device=query.device)
    q_last = query[rows, :, last].float().view(batch, groups, heads // groups, dim)
    scores = torch.einsum("bgjd,bgkd->bgjk", q_last, key.float()) * scaling
    if mask is not None:
        row = mask[rows, :, last][..., :kv]  # (B, 1 or H, kv)
        row = row.view(batch, groups, heads // groups, kv) if row.shape[1] == heads else row.unsqueeze(2)
        scores = scores.masked_fill(~row, float("-inf")) if row.dtype == torch.bool else scores + row.float()
    return scores.softmax(-1).mean(dim=(1, 2))


def _ranking_attention(module, query, key, value, attention_mask, **kwargs):
    """The attention function of layer K-1: rank once per prefill, then the usual kernel."""
    fastv, kernel = getattr(module, HOOK)
    call = fastv.call
    if isinstance(call, _Prefill) and call.scores is None and query.shape[2] > 1:
        start = now(query.device)
        call.scores = last_query_attention(query, key, attention_mask, call.last.to(query.device), kwargs["scaling"])
        call.seconds += now(query.device) - start
    return kernel(module, query, key, value, attention_mask, **kwargs)


@dataclass
class _Prefill:
    images: ImageTokens
    image_mask: torch.Tensor
    mask: torch.Tensor
    last: torch.Tensor
    scores: torch.Tensor | None = None
    seconds: float = 0.0
    selected: list = field(default_factory=list)
    index: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    layer_inputs: dict = field(default_factory=dict)


@dataclass
class _Step:
    mask: torch.Tensor
    layer_mask: torch.Tensor | None = None
    built: bool = False


class FastV:
    """The in-LLM pruner `mrpruner.patch(model, "fastv", ratio, layer=K)` installs (module docstring)."""

    def __init__(self, language_model, layer: int, ratio: float, protocol: str, state: PatchState):
        layers = language_model.layers
        if not 1 <= layer < len(layers):
            raise ValueError(f"layer must be in [1, {len(layers) - 1}] for a language model of {len(layers)} "
                             f"layers (FastV ranks at layer K-1 and prunes from layer K), got {layer}")
        attention = layers[layer - 1].self_attn
        kernel = usual_kernel(language_model, attention, "fastv")
        self.layer, self.ratio, self.protocol, self.config, self.call = layer, ratio, protocol, language_model.config, None
        hook(state, attention, ATTENTION_NAME, _ranking_attention, self, kernel)
        for index in range(layer, len(layers)):
            decoder = layers[index]
            set_attribute(state, decoder, "forward",
                          functools.wraps(decoder.forward)(functools.partial(self._layer, index, decoder.forward)))

    def prefill(self, run: Callable, images: ImageTokens, image_mask: torch.Tensor, mask: torch.Tensor):
        """Run the language model on a prefill with images; returns (outputs, [(kept, seconds, 0)]
        per image, selection seconds, gather index (B, L') or None if nothing was pruned, valid)."""
        last = mask.shape[1] - 1 - mask.flip(1).int().argmax(1)
        self.call = call = _Prefill(images, image_mask, mask, last)
        try:
            outputs = run()
        finally:
            self.call = None
        if call.scores is None:
            raise RuntimeError("fastv saw no attention at layer K-1 during the prefill")
        valid = call.valid if call.index is not None else mask
        return outputs, call.selected, call.seconds, call.index, valid

    def step(self, run: Callable, mask: torch.Tensor):
        """Run a step after a pruned prefill; `mask` (B, L' + new tokens) is the 2-D mask of layers >= K."""
        self.call = _Step(mask)
        try:
            return run()
        finally:
            self.call = None

    def _layer(self, index: int, original, hidden_states, *args, **kwargs):
        call = self.call
        if isinstance(call, _Prefill):
            if index == self.layer:
                hidden_states = self._prune(call, hidden_states, kwargs)
            kwargs.update(call.layer_inputs)
        elif isinstance(call, _Step):
            if not call.built:
                call.layer_mask = self._causal_mask(hidden_states, call.mask, kwargs, kwargs.get("position_ids"))
                call.built = True
            kwargs["attention_mask"] = call.layer_mask
        return original(hidden_states, *args, **kwargs)

    def _prune(self, call: _Prefill, hidden_states: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """Keep each image's budget (`mrpruner.budget.plan`) of tokens by call.scores; gather and
        re-pad. All of it on the device of the hidden states (layers K-1 and K may sit on different
        devices)."""
        if call.scores is None:
            raise RuntimeError("fastv saw no attention at layer K-1 before layer K")
        device = hidden_states.device
        mask, scores = call.mask.to(device), call.scores.to(device)
        keep = mask & ~call.image_mask.to(device)
        for row, where, layout in zip(call.images.rows, call.images.positions, call.images.layouts):
            start = now(device)
            where = where.to(device)
            budget = plan("fastv", self.protocol, self.ratio, base=layout.base, rows=layout.rows, cols=layout.cols,
                          newlines=layout.newlines)
            kept = top_indices(scores[row, where], budget.total)
            keep[row, where[kept]] = True
            took = now(device) - start
            call.seconds += took
            call.selected.append((kept, took))
        if bool((keep == mask).all()):
            return hidden_states
        call.index, call.valid = compact(keep)
        hidden_states = gather_tokens(hidden_states, call.index)
        cos, sin = (t.to(device) for t in kwargs["position_embeddings"])
        positions = gather_tokens(kwargs["position_ids"].to(device), call.index)
        call.layer_inputs = {
            "position_embeddings": (gather_tokens(cos, call.index), gather_tokens(sin, call.index)),
            "position_ids": positions,
            "attention_mask": self._causal_mask(hidden_states, call.valid, kwargs, positions),
        }
        return hidden_states

    def _causal_mask(self, hidden_states: torch.Tensor, mask: torch.Tensor, kwargs: dict, position_ids):
        """The causal mask of layers >= K for the 2-D `mask`, sized by layer K's cache (in a decoder
        layer's `kwargs`)."""
        from transformers.masking_utils import create_causal_mask

        return create_causal_mask(self.config, hidden_states, mask, kwargs.get(cache_key()), position_ids,
                                  layer_idx=self.layer)  # the cache is positional: its name differs by version
