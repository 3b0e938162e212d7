"""Attention hooks in a transformers Llama-style language model that keep its sdpa or eager kernel:
a layer's attention module gets its own copy of the config naming a registered attention function,
which does its part and then calls the usual kernel. FastV (fastv.py) ranks tokens this way at
layer K-1; ToMe's proportional attention (`Proportional`) biases the keys of every layer.

Proportional attention (Bolya et al., ICLR 2023, Sec. 3): a key that stands for s merged tokens
gets log(s) added to its attention logits, so the softmax weighs it as s copies of one token (ToMe
adds it in the attention of every block, to the keys). Here the merged visual tokens enter the
language model once, so every layer's logits get the bias of their sizes, in the prefill and, from
the KV cache, in every decode step.
"""

from __future__ import annotations

import contextlib
import copy
import sys
from collections.abc import Callable, Iterator

import torch

from mrpruner.seam import PatchState, set_attribute

HOOK = "_mrpruner_attention"  # attribute of a hooked attention module: (owner, the usual kernel)
PROPORTIONAL = "mrpruner_proportional"


def usual_kernel(language_model, attention, method: str) -> Callable:
    """The sdpa or eager attention function `attention` (a layer's attention module) runs now."""
    from transformers import AttentionInterface

    implementation = language_model.config._attn_implementation
    if implementation not in ("sdpa", "eager"):
        raise ValueError(f"{method} needs the language model's attention to be 'sdpa' or 'eager', got "
                         f"{implementation!r} (load the model with attn_implementation='sdpa')")
    if implementation == "sdpa":
        return AttentionInterface._global_mapping["sdpa"]
    kernel = getattr(sys.modules[type(attention).__module__], "eager_attention_forward", None)
    if kernel is None:
        raise TypeError(f"{method} cannot find the eager attention of {type(attention).__name__}")
    return kernel


def hook(state: PatchState, attention, name: str, function: Callable, owner: object, kernel: Callable) -> None:
    """Route `attention` (a layer's attention module) through `function`, registered as `name`;
    `function` finds (owner, kernel) in the module's HOOK attribute. Undone by `unpatch`."""
    from transformers import AttentionInterface

    AttentionInterface.register(name, function)
    config = copy.copy(attention.config)
    config._attn_implementation = name
    set_attribute(state, attention, HOOK, (owner, kernel))
    set_attribute(state, attention, "config", config)


def key_bias_mask(mask: torch.Tensor | None, bias: torch.Tensor, query: torch.Tensor,
                  key: torch.Tensor) -> torch.Tensor:
    """The additive float mask (B, 1 or H, q, kv) that adds bias[b, j] (B, kv) to every allowed
    logit of key j, from a mask as the kernels get it: None (causal), bool (True = attend) or
    additive float."""
    q, kv = query.shape[2], key.shape[2]
    if bias.shape[1] != kv:
        raise RuntimeError(f"proportional attention has key sizes for {bias.shape[1]} keys, the layer has {kv}")
    bias = bias[:, None, None, :].to(query.device, query.dtype)
    if mask is None:
        mask = torch.ones(q, kv, dtype=torch.bool, device=query.device).tril(kv - q)[None, None]
    if mask.dtype == torch.bool:
        return torch.where(mask[..., :kv], bias, torch.finfo(query.dtype).min)
    return mask[..., :kv] + bias


def _proportional_attention(module, query, key, value, attention_mask, **kwargs):
    """Every layer's attention function while ToMe is patched: the usual kernel, with the key
    sizes' log added to the logits when the running call has merged tokens."""
    proportional, kernel = getattr(module, HOOK)
    if proportional.bias is not None:
        attention_mask = key_bias_mask(attention_mask, proportional.bias, query, key)
    return kernel(module, query, key, value, attention_mask, **kwargs)


class Proportional:
    """ToMe's proportional attention in every layer of `language_model` (module docstring)."""

    def __init__(self, language_model, state: PatchState):
        self.bias: torch.Tensor | None = None  # (B, kv): log size of each key of the running call
        for layer in language_model.layers:
            attention = layer.self_attn
            hook(state, attention, PROPORTIONAL, _proportional_attention, self,
                 usual_kernel(language_model, attention, "tome"))

    @contextlib.contextmanager
    def keys(self, bias: torch.Tensor | None) -> Iterator[None]:
        """Add `bias` (B, kv: log sizes of the keys, 0 for unmerged ones) in the calls inside."""
        self.bias = bias
        try:
            yield
        finally:
            self.bias = None
