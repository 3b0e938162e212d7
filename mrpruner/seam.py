"""The host-independent seam of `mrpruner.patch`: what a patched model holds (`PatchState`), the
pruned prefill and the decode steps after it, and the statistics of a call. A host
(`mrpruner.hosts`) wraps its model's forward: it encodes the images, finds their placeholder
tokens, states each image's `Layout` and hands them to `prefill`; a forward without images goes
to `step`.

The prefill (no change to the processor or to the user's code) scatters the features into the
prompt as transformers does, selects each image's tokens, gathers the kept positions of the
embeddings AND of the position ids (kept tokens keep their original RoPE positions and order),
left-pads the rows again and runs the language model on the shorter sequence. Its outputs are
scattered back to the input's length, so logits stay aligned with `input_ids` (labels,
lmms-eval's slicing); positions of pruned tokens hold zeros. The pruned 2-D mask is remembered per
KV cache, so decode steps attend to exactly the kept tokens. FastV (in-LLM, fastv.py) plugs into
the same prefill through `PatchState.in_llm`.

Transformers 5.24 renamed the KV cache argument and output (`past_key_values` -> `cache`) and
replaced the outputs' `image_hidden_states` by `image_outputs`: `cache_key` and `attach_images`
are the only places that know (checked on 5.23 and 5.24).
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from mrpruner.flops import DecoderShape, fastv_flops, prefill_flops


class Layout(NamedTuple):
    """One image's packed visual sequence (LLaVA-NeXT, LLaVA-OneVision): `base` low-resolution
    tokens, then the unpadded high-resolution grid of `rows` x `cols` tokens, each row followed by
    one newline token. Other hosts' layouts give the same members (`base`, `rows`, `cols`,
    `newlines`, `total`, `base_shape`, `parts`): the methods and budgets read nothing else."""

    base: int
    rows: int
    cols: int

    @property
    def total(self) -> int:
        """Tokens in the packed sequence: base, grid and newlines."""
        return self.base + self.rows * (self.cols + 1)

    @property
    def newlines(self) -> int:
        """Separator tokens: one newline per grid row."""
        return self.rows

    @property
    def base_shape(self) -> tuple[int, int]:
        """(side, side): the square grid of the base tokens over the whole image."""
        side = math.isqrt(self.base)
        return side, side

    def parts(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Indices into the packed sequence of the base tokens, of the grid tokens (row-major,
        newlines left out) and of the newline tokens."""
        low = torch.arange(self.base, device=device)
        grid = torch.arange(self.rows * (self.cols + 1), device=device).view(self.rows, self.cols + 1) + self.base
        return low, grid[:, :-1].reshape(-1), grid[:, -1]


def recall(kept: torch.Tensor, region: torch.Tensor) -> float:
    """The share of `region`'s token indices that `kept` holds (1.0 for an empty region)."""
    if len(region) == 0:
        return 1.0
    return float(torch.isin(region, kept.to(region.device)).float().mean())


class ImageSelection(NamedTuple):
    """A pre-LLM method's result for one image: sorted indices into its packed sequence, features
    to put at those positions (ToMe's merged tokens) or None to keep the originals, and how many
    tokens each kept one stands for when the language model should weigh them so (ToMe's
    proportional attention), else None."""

    kept: torch.Tensor
    features: torch.Tensor | None
    sizes: torch.Tensor | None = None


@dataclass(frozen=True)
class ImageStats:
    """One image of a pruned prefill: its batch row, layout, visual tokens before and after, the
    kept indices into its packed sequence (CPU, sorted) and the seconds its own selection took."""

    row: int
    layout: Layout
    tokens_before: int
    tokens_after: int
    kept: torch.Tensor
    selection_seconds: float

    @property
    def resolutions(self) -> int:
        """How many resolutions the image has tokens of: 2 (base and grid), or 1 where its host packs
        it at one (OneVision's images of a multi-image prompt, InternVL's single tile without a
        thumbnail, an image too elongated for a grid): MR-Pruner and G-Prune then score that one."""
        return int(self.layout.base > 0) + int(self.layout.rows * self.layout.cols > 0)


@dataclass(frozen=True)
class CallStats:
    """The last prefill (a forward that carried images) of a patched model.

    protocol: the budgets' protocol (mrpruner.patch). lengths_before/after: tokens (padding
    excluded) each row gives the language model, before and
    after pruning (FastV: after = from layer `prune_layer` on). selection_seconds: all selection
    work of the call, timed with device synchronisation (FastV: its attention row and top-k).
    prefill_flops / dense_prefill_flops: per row, `mrpruner.flops.prefill_flops` of the language
    model with and without pruning (selection FLOPs and the last position's LM head included).
    """

    method: str
    ratio: float
    options: dict
    images: tuple[ImageStats, ...]
    lengths_before: tuple[int, ...]
    lengths_after: tuple[int, ...]
    prune_layer: int
    selection_seconds: float
    prefill_flops: tuple[int, ...]
    dense_prefill_flops: tuple[int, ...]
    protocol: str = "exact"

    @property
    def tokens_before(self) -> int:
        return sum(image.tokens_before for image in self.images)

    @property
    def tokens_after(self) -> int:
        return sum(image.tokens_after for image in self.images)


class Prefix(NamedTuple):
    """What decode steps need of a pruned prefill: the pruned 2-D mask (B, L'), its length, how far
    the original positions run ahead of the pruned cache (L - L'), the first cache layer that
    holds the pruned sequence (0 before the LLM, K for FastV) and the log sizes of its keys (B, L')
    for proportional attention (None without)."""

    mask: torch.Tensor
    length: int
    offset: int
    layer: int
    key_bias: torch.Tensor | None = None


@dataclass
class ImageTokens:
    """The images of one prefill, in the order of their features: batch row, placeholder
    positions in that row, layout and packed feature tensor of each."""

    rows: list[int]
    positions: list[torch.Tensor]
    layouts: list[Layout]
    features: list[torch.Tensor]


@dataclass
class PatchState:
    """Everything a patched model holds: the method, its per-image selector (pre-LLM methods) or
    in-LLM pruner (FastV), the FLOPs of one image's selection (layout, d, kept tokens), ToMe's
    proportional attention (mrpruner.attention.Proportional), the pruned prefixes of live KV
    caches and the last call's statistics."""

    method: str
    ratio: float
    options: dict
    select: Callable[[torch.Tensor, Layout], ImageSelection] | None
    protocol: str = "exact"
    selection_flops: Callable[[Layout, int, int], int] = lambda layout, dim, kept: 0
    in_llm: Any = None
    proportional: Any = None
    prefixes: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)
    last: CallStats | None = None
    restore: list = field(default_factory=list)


def now(device: torch.device) -> float:
    """A wall-clock reading after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def compact(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a (B, L) bool mask of tokens to keep: (B, L') gather indices that move each row's kept
    tokens, in order, to the right end of L' = max row count (left padding), and the (B, L') mask
    of real tokens. Padding slots point at distinct dropped positions."""
    length = int(keep.sum(1).max())
    index = torch.sort(keep.to(torch.int8), dim=1, stable=True).indices[:, keep.shape[1] - length:]
    return index, keep.gather(1, index)


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x[b, index[b]] for x of shape (B or 1, L, ...) and index (B, L')."""
    x = x.expand(index.shape[0], *x.shape[1:])
    return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand(*index.shape, *x.shape[2:]))


def scatter_tokens(x: torch.Tensor, index: torch.Tensor, valid: torch.Tensor, length: int) -> torch.Tensor:
    """Inverse of `gather_tokens` for the real tokens: a (B, length, ...) zero tensor holding x's
    valid rows at their original positions."""
    shape = (*index.shape, *([1] * (x.dim() - 2)))
    src = torch.where(valid.view(shape), x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x.new_zeros(x.shape[0], length, *x.shape[2:]).scatter_(1, index.view(shape).expand_as(x), src)


def decode_mask(prefix: Prefix, attention_mask: torch.Tensor | None, past: int, q_len: int) -> torch.Tensor:
    """The 2-D mask of a step after a pruned prefill: the pruned prefix, then the mask of the tokens
    added since (the tail of the caller's mask, or ones)."""
    tail = past - prefix.length + q_len
    if attention_mask is None:
        tail_mask = prefix.mask.new_ones(prefix.mask.shape[0], tail)
    else:
        tail_mask = attention_mask[:, attention_mask.shape[1] - tail:].to(prefix.mask.device, prefix.mask.dtype)
    if tail_mask.shape != (prefix.mask.shape[0], tail):
        raise ValueError(f"attention_mask of shape {tuple(attention_mask.shape)} does not cover the {tail} tokens "
                         f"added after the pruned prefill for batch {prefix.mask.shape[0]}")
    return torch.cat([prefix.mask, tail_mask], dim=1)


@functools.cache
def cache_key() -> str:
    """The name of the KV cache in forward arguments, decoder-layer kwargs and model outputs:
    "cache" since transformers 5.24 (which still accepts "past_key_values", deprecated), else
    "past_key_values"."""
    from transformers.modeling_outputs import BaseModelOutputWithPast

    return "cache" if "cache" in BaseModelOutputWithPast.__dataclass_fields__ else "past_key_values"


def uninstall(state: PatchState) -> None:
    """Undo a host's `install` (everything recorded in `state.restore`), last change first."""
    for obj, name, had, old in reversed(state.restore):
        if had:
            setattr(obj, name, old)
        else:
            delattr(obj, name)
    state.restore.clear()


def set_attribute(state: PatchState, obj: object, name: str, value: object) -> None:
    """Set an instance attribute and record its previous state for `uninstall`."""
    had = name in vars(obj)
    state.restore.append((obj, name, had, vars(obj).get(name)))
    setattr(obj, name, value)


def image_tokens(image_mask: torch.Tensor, features: list[torch.Tensor], layouts: list[Layout]) -> ImageTokens:
    """Assign the placeholder positions to the images as `masked_scatter` fills them (row-major)."""
    counts = [len(f) for f in features]
    flat = image_mask.flatten().nonzero().squeeze(1)
    rows, positions = [], []
    for i, chunk in enumerate(flat.split(counts)):
        row, last_row = int(chunk[0]) // image_mask.shape[1], int(chunk[-1]) // image_mask.shape[1]
        if row != last_row:
            raise ValueError(f"the placeholder tokens of image {i} span batch rows {row} to {last_row}")
        rows.append(row)
        positions.append(chunk - row * image_mask.shape[1])
    return ImageTokens(rows, positions, layouts, features)




LAYOUT_ATTR = "_mrpruner_layout"  # set on each image's packed feature tensor by a host's patched encoder


def unwrap(model: torch.nn.Module, outer: type, inner: type, family: str) -> torch.nn.Module:
    """The `inner` model (e.g. `LlavaNextModel`) of an `outer` one (`...ForConditionalGeneration`)
    or `model` itself; a TypeError naming both classes for anything else."""
    if not isinstance(model, (outer, inner)):
        raise TypeError(f"model must be a {outer.__name__} or {inner.__name__} (transformers {family}), "
                        f"got {type(model).__name__}")
    return model.model if isinstance(model, outer) else model


def install_forward(state: PatchState, model: torch.nn.Module, forward: Callable) -> None:
    """Replace `model`'s forward by `forward(original, *args, **kwargs)`. Under accelerate's hooks
    (device_map, offloading) it goes inside the model's hook, which moves the inputs to the
    execution device and loads the weights the image packing uses (image_newline)."""
    name = "_old_forward" if hasattr(model, "_hf_hook") else "forward"
    original = getattr(model, name)
    set_attribute(state, model, name, functools.wraps(original)(functools.partial(forward, original)))


def tag(features, layouts) -> None:
    """Tag each image's packed feature tensor with its layout (a host's encoder does: generate()
    encodes the images apart from the forward and does not pass their sizes on)."""
    for feature, layout in zip(features, layouts, strict=True):
        setattr(feature, LAYOUT_ATTR, layout)


def tagged_layouts(features: list[torch.Tensor], fallback: Callable[[int], Any] | None, packing: str) -> list:
    """Each image's layout: its tag, else `fallback(i)` (from the sizes the forward got), checked
    against its feature count; `packing` names what the host lays out, for the error."""
    layouts = []
    for i, feature in enumerate(features):
        layout = getattr(feature, LAYOUT_ATTR, None)
        if layout is None:
            if fallback is None:
                raise ValueError(f"the features of image {i} carry no layout: they were computed without the "
                                 "patched get_image_features, or split by chunked prefill (prefill_chunk_size, "
                                 "which pruning does not support); pass image_sizes with them")
            layout = fallback(i)
        if feature.shape[0] != layout.total:
            raise ValueError(f"image {i} has {feature.shape[0]} feature tokens, but its layout {layout} (from its "
                             f"size and the config) gives {layout.total}; only {packing} is supported")
        layouts.append(layout)
    return layouts


def images_forward(inner, original: Callable, state: PatchState, encoded, layouts: list, find: Callable,
                   input_ids, inputs_embeds, attention_mask, position_ids, kwargs: dict):
    """A host's forward for a prompt with images, whose packed features are `encoded.pooler_output`:
    scatter them into the prompt at the placeholders `find` (the model's `get_placeholder_mask`,
    giving the image mask) marks and run the pruned `prefill`; the outputs carry the images as the
    unpatched forward's do."""
    features = list(encoded.pooler_output)
    # Masks, positions and the selection live on the embeddings' device (a model split across
    # devices by device_map may put the vision tower and the embedding table apart).
    embeds = inputs_embeds if inputs_embeds is not None else inner.get_input_embeddings()(input_ids)
    image_features = torch.cat(features).to(embeds.device, embeds.dtype)
    counts = [len(f) for f in features]
    try:
        image_mask = find(None if input_ids is None else input_ids.to(embeds.device), inputs_embeds=embeds,
                          image_features=image_features)[..., 0]
    except (ValueError, RuntimeError) as error:
        raise ValueError(f"the prompts' image placeholder tokens do not match the images' features ({sum(counts)} "
                         f"tokens, {counts} per image); build inputs with the model's processor ({error})") from None
    images = image_tokens(image_mask, features, layouts)
    embeds = embeds.masked_scatter(image_mask.unsqueeze(-1), image_features)
    outputs = prefill(original, state, inner.config, images, embeds, image_mask, attention_mask, position_ids, kwargs)
    attach_images(outputs, encoded, image_features)
    return outputs


def prefill(original: Callable, state: PatchState, config, images: ImageTokens, embeds: torch.Tensor,
            image_mask: torch.Tensor, attention_mask, position_ids, kwargs: dict):
    """The pruned prefill (module docstring) of a prompt whose images' features are already in
    `embeds` at `image_mask` (B, L): `original` is the host model's forward, called with
    inputs_embeds; `kwargs` (the KV cache, use_cache, ...) go to it unchanged. Returns its outputs,
    scattered back to length L; `state.last` holds the call's statistics."""
    cache = kwargs.get(cache_key(), kwargs.get("past_key_values"))  # 5.24 still takes the deprecated name
    if cache is not None and cache.get_seq_length() > 0:
        raise ValueError("images can only be pruned in a prefill that starts from an empty KV cache "
                         "(chunked prefill and continued conversations are not supported)")
    device = embeds.device
    batch, length = image_mask.shape
    mask = (attention_mask.to(device).bool() if attention_mask is not None
            else torch.ones(batch, length, dtype=torch.bool, device=device))
    positions = (position_ids.to(device) if position_ids is not None
                 else torch.arange(length, device=device).unsqueeze(0)).expand(batch, length)

    if state.in_llm is not None:
        outputs, selected, seconds, index, valid = state.in_llm.prefill(
            lambda: original(None, attention_mask=attention_mask, position_ids=position_ids,
                             inputs_embeds=embeds, **kwargs), images, image_mask, mask)
        prune_layer = state.in_llm.layer
    else:
        selected, seconds, keep, sizes = _select(state, images, embeds, image_mask, mask)
        key_bias = None
        if bool((keep == mask).all()):  # nothing pruned: the unpatched computation
            index, valid = None, mask
            outputs = original(None, attention_mask=attention_mask, position_ids=position_ids,
                               inputs_embeds=embeds, **kwargs)
        else:
            index, valid = compact(keep)
            key_bias = None if sizes is None else gather_tokens(sizes.log(), index)
            with _keys(state, key_bias):
                outputs = original(None, attention_mask=valid.long(), position_ids=gather_tokens(positions, index),
                                   inputs_embeds=gather_tokens(embeds, index), **kwargs)
        prune_layer = 0
    cache = getattr(outputs, cache_key())
    if cache is not None:
        state.prefixes.pop(cache, None)  # a reused cache object must not keep an older prefix
    if index is not None:
        hidden = outputs.last_hidden_state
        outputs.last_hidden_state = scatter_tokens(hidden, index.to(hidden.device), valid.to(hidden.device), length)
        if cache is not None:
            state.prefixes[cache] = Prefix(valid.long(), valid.shape[1], length - valid.shape[1], prune_layer,
                                           None if prune_layer else key_bias)
    state.last = _stats(state, config, images, selected, seconds, mask, valid, prune_layer)
    return outputs


def attach_images(outputs, encoded, image_features: torch.Tensor) -> None:
    """Put the images into the outputs as the unpatched forward does: the encoder's output as
    `image_outputs` (transformers >= 5.24), else the concatenated features as `image_hidden_states`."""
    if "image_outputs" in outputs.__dataclass_fields__:
        outputs.image_outputs = encoded
    else:
        outputs.image_hidden_states = image_features


def _keys(state: PatchState, key_bias: torch.Tensor | None):
    """The context in which the language model adds `key_bias` to its keys' logits (a no-op without)."""
    return contextlib.nullcontext() if key_bias is None else state.proportional.keys(key_bias)


def _select(state: PatchState, images: ImageTokens, embeds, image_mask, mask):
    """Run the method on every image: ([(kept, seconds)] per image, total seconds, the (B, L)
    mask of tokens the language model keeps, the (B, L) float32 sizes of the tokens, or None when
    no selection gives sizes). ToMe's merged features are written into `embeds`."""
    batch, length = image_mask.shape
    keep = mask & ~image_mask
    flat_embeds = embeds.view(batch * length, -1)
    selected, seconds, sizes = [], 0.0, None
    for row, where, layout, feature in zip(images.rows, images.positions, images.layouts, images.features):
        start = now(embeds.device)
        choice = state.select(feature, layout)
        took = now(embeds.device) - start
        seconds += took
        flat = row * length + where[choice.kept.to(where.device)]
        keep.view(-1)[flat] = True
        if choice.features is not None:
            flat_embeds[flat] = choice.features.to(embeds.device, embeds.dtype)
        if choice.sizes is not None:
            sizes = torch.ones(batch, length, device=embeds.device) if sizes is None else sizes
            sizes.view(-1)[flat] = choice.sizes.to(embeds.device, torch.float32)
        selected.append((choice.kept, took))
    return selected, seconds, keep, sizes


def step(original: Callable, state: PatchState, input_ids, inputs_embeds, attention_mask, position_ids, cache,
          kwargs: dict):
    """A forward without images (`cache`: its KV cache, also in `kwargs`). After a pruned prefill
    (known by its KV cache) it attends to the pruned prefix: pre-LLM methods get the pruned mask
    and the original positions here, FastV gives the mask to its layers >= K."""
    prefix = state.prefixes.get(cache) if cache is not None else None
    if prefix is not None and cache.get_seq_length(prefix.layer) < prefix.length:
        del state.prefixes[cache]  # the cache was reset since: the prefix no longer applies
        prefix = None
    if prefix is None:
        return original(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                        inputs_embeds=inputs_embeds, **kwargs)
    past = cache.get_seq_length(prefix.layer)
    q_len = (input_ids if input_ids is not None else inputs_embeds).shape[1]
    mask = decode_mask(prefix, attention_mask, past, q_len)
    if state.in_llm is not None:
        return state.in_llm.step(lambda: original(input_ids, attention_mask=attention_mask,
                                                  position_ids=position_ids, inputs_embeds=inputs_embeds,
                                                  **kwargs), mask)
    if position_ids is None:
        position_ids = (torch.arange(q_len, device=mask.device) + past + prefix.offset).unsqueeze(0)
    key_bias = None if prefix.key_bias is None else F.pad(prefix.key_bias, (0, mask.shape[1] - prefix.length))
    with _keys(state, key_bias):
        return original(input_ids, attention_mask=mask, position_ids=position_ids, inputs_embeds=inputs_embeds,
                        **kwargs)


def _stats(state: PatchState, config, images: ImageTokens, selected, seconds, mask, valid, prune_layer) -> CallStats:
    shape = DecoderShape.from_config(config)
    before = [int(v) for v in mask.sum(1).tolist()]
    after = [int(v) for v in valid.sum(1).tolist()]
    image_stats, selection_flops = [], [0] * len(before)
    for row, layout, feature, (kept, took) in zip(images.rows, images.layouts, images.features, selected):
        image_stats.append(ImageStats(row, layout, layout.total, len(kept), kept.detach().cpu(), took))
        if not prune_layer:  # a pre-LLM method's selection cost, from what it kept (mrpruner.flops)
            selection_flops[row] += state.selection_flops(layout, feature.shape[1], len(kept))
    pruned, dense = [], []
    for row, (n, n_after) in enumerate(zip(before, after)):
        dense.append(prefill_flops(n, shape, lm_head=True))
        if prune_layer:
            pruned.append(prefill_flops(n, shape, prune_layer=prune_layer, pruned_len=n_after, lm_head=True,
                                        selection_flops=fastv_flops(n, shape) if row in images.rows else 0))
        else:
            pruned.append(prefill_flops(n_after, shape, selection_flops=selection_flops[row], lm_head=True))
    return CallStats(state.method, state.ratio, dict(state.options), tuple(image_stats), tuple(before),
                     tuple(after), prune_layer, seconds, tuple(pruned), tuple(dense), state.protocol)
