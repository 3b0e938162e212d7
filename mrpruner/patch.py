"""One call to prune a Hugging Face multi-resolution MLLM: `patch(model, method, ratio, protocol=...,
**options)`, `unpatch(model)`, the context manager `pruned(...)` and `stats(model)` for the last
prefill. The model is a LLaVA-NeXT (first of all), a LLaVA-OneVision or an InternVL (2.5/3) of
transformers; `mrpruner.hosts` picks the family by the model's class. The text below speaks of
LLaVA-NeXT's layout; the other families differ only where the last paragraph says.

Each image of a batch or of a multi-image prompt is pruned on its own budget; kept tokens keep
their original order and RoPE positions. An image's packed visual sequence (576 base tokens, the
unpadded high-resolution grid and its newline tokens, as the model packs them) has n tokens; how
many reach the language model (FastV: from its layer K on) is `mrpruner.budget.plan`, by protocol:
- protocol="exact" (default): one meaning of `ratio` for every method, keep_count(n, ratio) =
  n - floor(ratio * n) tokens. mrpruner and gprune keep the newline tokens, which mark the grid's
  rows, inside the budget and score the base tokens (low resolution) and the grid without newlines
  (high) on the rest (newlines dropped too if the budget is below the row count); random, tome and
  fastv treat newlines as ordinary visual tokens.
- protocol="paper": each method on the budget its authors' code used, as the paper ran them:
  mrpruner int((1 - ratio) n) scored tokens plus every newline (the released code, either
  variant); gprune int((1 - ratio) 576) base and int((1 - ratio) rows cols) grid tokens plus every
  newline; fastv int((1 - ratio) n); random and tome (no authors' code) as under "exact".
With variant="released" the authors' allocation (Eq. 4 floored on the low side, each side capped)
can keep fewer scored tokens than the budget when one resolution saturates; stats() shows counts.
An image too elongated for a grid row or column (beyond about 48:1) has base tokens only (and
newlines if it has rows): mrpruner and gprune then score the base tokens alone.

ToMe merges each image's tokens before the language model; with proportional=True (default) every
layer adds log(size) of each merged key to its attention logits (ToMe's proportional attention,
mrpruner.attention), in the prefill and in every decode step.

Works with forward and generate() (KV cache or use_cache=False, greedy, sampling, beams), batches
of images of different aspect ratios with left padding, several images per prompt, fp32/fp16/bf16,
sdpa and eager attention, CPU and CUDA, models dispatched by accelerate (device_map with offloaded
layers or split across devices, the split tested on the CPU only; cpu_offload for forward, as its
generate fails unpatched too). Outputs keep the input's
length (logits stay aligned with input_ids and labels); at pruned positions they hold zeros. Not
supported: chunked prefill, images in a call whose KV cache is not empty, hidden states of all
layers at the input's length (output_hidden_states gives the pruned sequence), concurrent forwards
of one patched model.

LLaVA-OneVision: the same layout (its unpadded grid shrunk under anyres_max_9); an image of a
multi-image prompt (batch_num_images) is its base tokens only, as the model packs it; videos are
refused. InternVL: 256 tokens per 448-px tile after pixel shuffle, no newlines, the thumbnail as the
low resolution (an image of one tile has no thumbnail: its tile is scored alone); its processor
returns no image sizes, so build the inputs with `mrpruner.hosts.internvl.with_image_sizes(processor)`
(then `model.generate(**processor(images=..., text=...))` works unchanged) or pass `image_sizes=`
((height, width) per image, `mrpruner.hosts.internvl.image_sizes(images)`) to forward and generate;
only the default tiling (1 to 12 tiles plus a thumbnail) is supported, and videos are refused.
`stats(model).images[i].resolutions` says how many resolutions an image had.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch

from mrpruner import seam
from mrpruner.budget import plan
from mrpruner.checks import PROTOCOLS as PROTOCOLS  # re-exported: the budgets `patch` takes
from mrpruner.checks import check_protocol, check_ratio
from mrpruner.hosts import host_of
from mrpruner.methods import METHODS as METHODS  # re-exported: the paper's methods
from mrpruner.methods import Method, check_options, get_method
from mrpruner.seam import CallStats, ImageSelection, Layout

_STATE = "_mrpruner_state"


def patch(model: torch.nn.Module, method: str | Method = "mrpruner", ratio: float = 0.9, *,
          protocol: str = "exact", **options) -> torch.nn.Module:
    """Prune the visual tokens of every later forward/generate of `model` (a
    `LlavaNextForConditionalGeneration`, `LlavaOnevisionForConditionalGeneration`,
    `InternVLForConditionalGeneration` or their inner `...Model`) in place; returns the model.

    method: "mrpruner" (options variant="paper"|"released", s_a, s_c, alpha (None: the variant's
    default), intra, cross, adaptive: `mrpruner.core.MROptions`), "gprune" (threshold, iterations:
    one graph per resolution), "tome" (proportional: ToMe's proportional attention, default True),
    "random" (seed: the same seed for every image), "fastv" (layer K, default 2: the last token's
    attention at layer K-1 ranks each image's tokens, which are dropped from layer K on), a method
    you registered (`mrpruner.register_method`), an import path "package.module:function" of a
    select function, or a `mrpruner.methods.Method`. ratio in [0, 1): the fraction of each
    image's visual tokens pruned; protocol "exact" (one budget for all methods) or "paper" (each
    method's own, as its authors ran it): module docstring. Undo with `unpatch`.
    """
    host = host_of(model)
    inner = host.inner_model(model)
    if getattr(inner, _STATE, None) is not None:
        raise ValueError("model is already patched by mrpruner; call mrpruner.unpatch(model) first")
    entry = get_method(method)
    check_ratio(ratio)
    options = check_options(entry, options)
    protocol = check_protocol(protocol)
    select = None if entry.select is None else functools.partial(_select, entry, ratio, protocol, options)
    state = seam.PatchState(entry.name, ratio, options, select, protocol=protocol,
                            selection_flops=lambda layout, dim, kept: entry.flops(layout, dim, kept, options))
    try:
        if entry.setup is not None:
            entry.setup(inner.language_model, state)
        host.install(inner, state)
    except BaseException:
        seam.uninstall(state)
        raise
    object.__setattr__(inner, _STATE, state)
    return model


def unpatch(model: torch.nn.Module) -> torch.nn.Module:
    """Restore a patched model exactly (its methods, attention settings); returns the model."""
    inner = host_of(model).inner_model(model)
    state = getattr(inner, _STATE, None)
    if state is None:
        raise ValueError("model is not patched by mrpruner (nothing to unpatch)")
    seam.uninstall(state)
    object.__delattr__(inner, _STATE)
    return model


@contextlib.contextmanager
def pruned(model: torch.nn.Module, method: str | Method = "mrpruner", ratio: float = 0.9, *,
           protocol: str = "exact", **options) -> Iterator[torch.nn.Module]:
    """`with mrpruner.pruned(model, "mrpruner", 0.9): model.generate(...)`: patch, then unpatch on exit."""
    patch(model, method, ratio, protocol=protocol, **options)
    try:
        yield model
    finally:
        unpatch(model)


def stats(model: torch.nn.Module) -> CallStats | None:
    """Statistics of the patched model's last prefill (None before the first one): per image the
    visual tokens before/after, kept indices and selection seconds; per row the prefill FLOPs."""
    state = getattr(host_of(model).inner_model(model), _STATE, None)
    if state is None:
        raise ValueError("model is not patched by mrpruner (no statistics)")
    return state.last


def _select(method: Method, ratio: float, protocol: str, options: dict, features: torch.Tensor,
            layout: Layout) -> ImageSelection:
    """One image's kept tokens under `method`, on the budget `mrpruner.budget.plan` gives it."""
    budget = plan(method.name, protocol, ratio, base=layout.base, rows=layout.rows, cols=layout.cols,
                  newlines=layout.newlines)
    return method.select(features, budget, layout, **options)
