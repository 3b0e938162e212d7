"""One call to prune a Hugging Face LLaVA-NeXT: `patch(model, method, ratio, protocol=..., **options)`,
`unpatch(model)`, the context manager `pruned(...)` and `stats(model)` for the last prefill.

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
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch

from mrpruner import llava_next
from mrpruner.baselines import gprune, random_select, tome_merge
from mrpruner.budget import keep_count, plan, split_budget
from mrpruner.checks import METHODS as METHODS  # re-exported: the methods `patch` takes
from mrpruner.checks import PROTOCOLS as PROTOCOLS  # re-exported: the budgets `patch` takes
from mrpruner.checks import check_count, check_flag, check_method, check_protocol, check_real
from mrpruner.core import check_mr_options, mr_prune
from mrpruner.flops import gprune_flops, mr_prune_flops, tome_flops
from mrpruner.llava_next import CallStats, ImageSelection, Layout

DEFAULTS = {
    "random": {"seed": 0},
    "tome": {"proportional": True},
    "fastv": {"layer": 2},
    "gprune": {"threshold": 0.5, "iterations": 5},
    "mrpruner": {"variant": "paper", "s_a": 0.5, "s_c": 0.5, "alpha": None, "intra": True, "cross": True,
                 "adaptive": True},
}
_STATE = "_mrpruner_state"


def supported_classes() -> tuple[type, ...]:
    """The model classes `patch` accepts (transformers is imported only when needed)."""
    from transformers import LlavaNextForConditionalGeneration, LlavaNextModel

    return LlavaNextForConditionalGeneration, LlavaNextModel


def patch(model: torch.nn.Module, method: str = "mrpruner", ratio: float = 0.9, *, protocol: str = "exact",
          **options) -> torch.nn.Module:
    """Prune the visual tokens of every later forward/generate of `model` (a
    `LlavaNextForConditionalGeneration` or `LlavaNextModel`) in place; returns the model.

    method: "mrpruner" (options variant="paper"|"released", s_a, s_c, alpha (None: the variant's
    default), intra, cross, adaptive), "gprune" (threshold, iterations: one graph per resolution),
    "tome" (proportional: ToMe's proportional attention, default True), "random" (seed: the same
    seed for every image) or "fastv" (layer K, default 2: the last token's attention at layer K-1
    ranks each image's tokens, which are dropped from layer K on). ratio in [0, 1): the fraction of
    each image's visual tokens pruned; protocol "exact" (one budget for all methods) or "paper"
    (each method's own, as its authors ran it): module docstring. Undo with `unpatch`.
    """
    inner = _inner(model)
    if getattr(inner, _STATE, None) is not None:
        raise ValueError("model is already patched by mrpruner; call mrpruner.unpatch(model) first")
    options = check_options(method, ratio, options)
    protocol = check_protocol(protocol)
    state = llava_next.PatchState(method, ratio, options, None if method == "fastv" else
                                  functools.partial(_select, method, ratio, protocol, options), protocol=protocol)
    try:
        if method == "fastv":
            from mrpruner.fastv import FastV

            state.in_llm = FastV(inner.language_model, options["layer"], ratio, protocol, state)
        if method == "tome" and options["proportional"]:
            from mrpruner.attention import Proportional

            state.proportional = Proportional(inner.language_model, state)
        llava_next.install(inner, state)
    except BaseException:
        llava_next.uninstall(state)
        raise
    object.__setattr__(inner, _STATE, state)
    return model


def unpatch(model: torch.nn.Module) -> torch.nn.Module:
    """Restore a patched model exactly (its methods, attention settings); returns the model."""
    inner = _inner(model)
    state = getattr(inner, _STATE, None)
    if state is None:
        raise ValueError("model is not patched by mrpruner (nothing to unpatch)")
    llava_next.uninstall(state)
    object.__delattr__(inner, _STATE)
    return model


@contextlib.contextmanager
def pruned(model: torch.nn.Module, method: str = "mrpruner", ratio: float = 0.9, *, protocol: str = "exact",
           **options) -> Iterator[torch.nn.Module]:
    """`with mrpruner.pruned(model, "mrpruner", 0.9): model.generate(...)`: patch, then unpatch on exit."""
    patch(model, method, ratio, protocol=protocol, **options)
    try:
        yield model
    finally:
        unpatch(model)


def stats(model: torch.nn.Module) -> CallStats | None:
    """Statistics of the patched model's last prefill (None before the first one): per image the
    visual tokens before/after, kept indices and selection seconds; per row the prefill FLOPs."""
    state = getattr(_inner(model), _STATE, None)
    if state is None:
        raise ValueError("model is not patched by mrpruner (no statistics)")
    return state.last


def check_renamed(method: str, options: dict) -> None:
    """A clear error for options that were replaced: mrpruner's budget by patch's protocol."""
    if method == "mrpruner" and "budget" in options:
        raise ValueError("the option budget was replaced by patch's protocol: protocol='paper' keeps the released "
                         "code's budget (was budget='released', now in either variant), protocol='exact' the "
                         "equal budget (was budget='exact')")


def _inner(model: torch.nn.Module) -> torch.nn.Module:
    """The `LlavaNextModel` that patching changes, after checking the class."""
    classes = supported_classes()
    if not isinstance(model, classes):
        raise TypeError(f"model must be one of {[c.__name__ for c in classes]} (transformers LLaVA-NeXT), "
                        f"got {type(model).__name__}")
    return model.model if isinstance(model, classes[0]) else model


def check_options(method: object, ratio: object, options: dict) -> dict:
    """Validate a method, ratio and its options (before any model is loaded); returns the options
    merged over the method's defaults."""
    method = check_method(method)
    keep_count(0, ratio)  # validates ratio: a real number in [0, 1)
    allowed = DEFAULTS[method]
    unknown = sorted(set(options) - set(allowed))
    check_renamed(method, options)
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {method!r}; allowed: {sorted(allowed) or 'none'}")
    merged = {**allowed, **options}
    if method == "random":
        check_count("seed", merged["seed"], 0, 2**63 - 1)
    elif method == "fastv":
        check_count("layer", merged["layer"], 1, 2**31)
    elif method == "gprune":
        check_real("threshold", merged["threshold"], -1.0, 1.0)
        check_count("iterations", merged["iterations"], 1, 1000)
    elif method == "tome":
        check_flag("proportional", merged["proportional"])
    elif method == "mrpruner":
        check_mr_options(**merged)
    return merged


def _select(method: str, ratio: float, protocol: str, options: dict, features: torch.Tensor,
            layout: Layout) -> ImageSelection:
    """One image's kept tokens under `method` (module docstring: budgets and newline tokens)."""
    budget = plan(method, protocol, ratio, base=layout.base, rows=layout.rows, cols=layout.cols)
    n, dim = layout.total, features.shape[1]
    if method == "random":
        return ImageSelection(random_select(n, budget.scored, seed=options["seed"], device=features.device), None, 0)
    if method == "tome":
        merge = tome_merge(features, budget.scored)
        return ImageSelection(merge.anchor, merge.tokens, tome_flops(n, dim, budget.scored),
                              merge.sizes if options["proportional"] else None)
    low_at, high_at, newline_at = layout.parts(features.device)
    low, high = features[low_at], features[high_at]
    n_high = len(high_at)
    if method == "gprune":
        k_low, k_high = budget.split or split_budget(budget.scored, layout.base, n_high, mean_low=0.0,
                                                     mean_high=0.0, adaptive=False)
        graph = {"threshold": options["threshold"], "iterations": options["iterations"]}
        kept_low = gprune(low, k_low, **graph)
        kept_high = gprune(high, k_high, **graph) if n_high else high_at[:0]  # no grid: base tokens only
        flops = sum(gprune_flops(count, dim, iterations=options["iterations"]) for count in (layout.base, n_high)
                    if count)
    else:
        kept_low, kept_high = mr_prune(low, high, budget.scored, **options)
        flops = mr_prune_flops(layout.base, n_high, dim)
    parts = [low_at[kept_low], high_at[kept_high]] + ([newline_at] if budget.newlines else [])
    return ImageSelection(torch.cat(parts).sort().values, None, flops)
