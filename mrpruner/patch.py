"""One call to prune a Hugging Face LLaVA-NeXT: `patch(model, method, ratio, **options)`,
`unpatch(model)`, the context manager `pruned(...)` and `stats(model)` for the last prefill.

One meaning of `ratio` for every method: an image whose packed visual sequence (576 base tokens,
the unpadded high-resolution grid and its newline tokens, as the model packs them) has n tokens
reaches the language model with exactly `mrpruner.budget.keep_count(n, ratio)` = n - floor(ratio*n)
of them (FastV: from its layer K on). Each image of a batch or of a multi-image prompt is pruned on
its own budget; kept tokens keep their original order and RoPE positions.

Newline tokens, per method:
- mrpruner, gprune: the newline tokens mark the grid's rows (the released MR-Pruner code and
  G-Prune keep them), so they are kept and counted inside the budget; the remaining budget goes to
  the scored tokens, the base tokens (low resolution) and the grid without newlines (high). If an
  image's budget is smaller than its number of rows, the newlines are dropped too and the whole
  budget goes to scored tokens. mrpruner with variant="released", budget="released" reproduces the
  released code instead: int((1 - ratio) * n) scored tokens plus all newlines on top (capped at the
  scored tokens available), so the count exceeds keep_count by the rows.
- random, tome, fastv: newline tokens are ordinary visual tokens.
With variant="released" the authors' allocation (Eq. 4 floored on the low side, each side capped)
can keep fewer scored tokens than the budget when one resolution saturates; stats() shows counts.

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
import math
from collections.abc import Iterator
from fractions import Fraction

import torch

from mrpruner import llava_next
from mrpruner.baselines import gprune, random_select, tome_merge
from mrpruner.budget import keep_count, split_budget
from mrpruner.checks import METHODS as METHODS  # re-exported: the methods `patch` takes
from mrpruner.checks import check_count, check_method, check_real
from mrpruner.core import check_mr_options, mr_prune
from mrpruner.flops import gprune_flops, mr_prune_flops, tome_flops
from mrpruner.llava_next import CallStats, ImageSelection, Layout

DEFAULTS = {
    "random": {"seed": 0},
    "tome": {},
    "fastv": {"layer": 2},
    "gprune": {"threshold": 0.5, "iterations": 5},
    "mrpruner": {"variant": "paper", "s_a": 0.5, "s_c": 0.5, "alpha": None, "intra": True, "cross": True,
                 "adaptive": True, "budget": "exact"},
}
BUDGETS = ("exact", "released")
_STATE = "_mrpruner_state"


def supported_classes() -> tuple[type, ...]:
    """The model classes `patch` accepts (transformers is imported only when needed)."""
    from transformers import LlavaNextForConditionalGeneration, LlavaNextModel

    return LlavaNextForConditionalGeneration, LlavaNextModel


def patch(model: torch.nn.Module, method: str = "mrpruner", ratio: float = 0.9, **options) -> torch.nn.Module:
    """Prune the visual tokens of every later forward/generate of `model` (a
    `LlavaNextForConditionalGeneration` or `LlavaNextModel`) in place; returns the model.

    method: "mrpruner" (options variant="paper"|"released", s_a, s_c, alpha (None: the variant's
    default), intra, cross, adaptive, budget="exact"|"released"), "gprune" (threshold, iterations:
    one graph per resolution, the budget split by token counts), "tome", "random" (seed: the same
    seed for every image) or "fastv" (layer K, default 2: the last token's attention at layer K-1
    ranks each image's tokens, which are dropped from layer K on). ratio in [0, 1): the fraction of
    each image's visual tokens pruned (module docstring). Undo with `unpatch`.
    """
    inner = _inner(model)
    if getattr(inner, _STATE, None) is not None:
        raise ValueError("model is already patched by mrpruner; call mrpruner.unpatch(model) first")
    options = check_options(method, ratio, options)
    state = llava_next.PatchState(method, ratio, options,
                                  None if method == "fastv" else functools.partial(_select, method, ratio, options))
    try:
        if method == "fastv":
            from mrpruner.fastv import FastV

            state.in_llm = FastV(inner.language_model, options["layer"], ratio, state)
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
def pruned(model: torch.nn.Module, method: str = "mrpruner", ratio: float = 0.9,
           **options) -> Iterator[torch.nn.Module]:
    """`with mrpruner.pruned(model, "mrpruner", 0.9): model.generate(...)`: patch, then unpatch on exit."""
    patch(model, method, ratio, **options)
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
    elif method == "mrpruner":
        check_mr_options(**_core_options(merged))
        if merged["budget"] not in BUDGETS:
            raise ValueError(f"budget must be one of {BUDGETS}, got {merged['budget']!r}")
        if merged["budget"] == "released" and merged["variant"] != "released":
            raise ValueError("budget='released' needs variant='released' (the released code's budget)")
    return merged


def _core_options(options: dict) -> dict:
    """The "mrpruner" method's options that `mr_prune` takes (all but the plug-in's `budget`)."""
    return {k: v for k, v in options.items() if k != "budget"}


def released_keep(n: int, ratio: float) -> int:
    """The released MR-Pruner code's scored-token budget, int(keep_ratio * n) with keep_ratio =
    1 - ratio read as the decimal typed (0.9 -> 1/10)."""
    keep_count(n, ratio)  # validates n and ratio
    return math.floor((1 - Fraction(str(ratio))) * n)


def _select(method: str, ratio: float, options: dict, features: torch.Tensor, layout: Layout) -> ImageSelection:
    """One image's kept tokens under `method` (module docstring: budgets and newline tokens)."""
    n, dim = layout.total, features.shape[1]
    keep = keep_count(n, ratio)
    if method == "random":
        return ImageSelection(random_select(n, keep, seed=options["seed"], device=features.device), None, 0)
    if method == "tome":
        merge = tome_merge(features, keep)
        return ImageSelection(merge.anchor, merge.tokens, tome_flops(n, dim, keep))
    if layout.rows * layout.cols == 0:
        raise ValueError(f"{method} needs high-resolution tokens, but an image's layout {layout} has none "
                         "(aspect ratio beyond about 48:1); use random, tome or fastv for such images")
    low_at, high_at, newline_at = layout.parts(features.device)
    low, high = features[low_at], features[high_at]
    n_high = len(high_at)
    if options.get("budget") == "released":
        scored, newlines = min(released_keep(n, ratio), layout.base + n_high), True
    else:
        newlines = keep >= layout.rows
        scored = keep - layout.rows if newlines else keep
    if method == "gprune":
        k_low, k_high = split_budget(scored, layout.base, n_high, mean_low=0.0, mean_high=0.0, adaptive=False)
        kept_low = gprune(low, k_low, threshold=options["threshold"], iterations=options["iterations"])
        kept_high = gprune(high, k_high, threshold=options["threshold"], iterations=options["iterations"])
        flops = (gprune_flops(layout.base, dim, iterations=options["iterations"])
                 + gprune_flops(n_high, dim, iterations=options["iterations"]))
    else:
        kept_low, kept_high = mr_prune(low, high, scored, **_core_options(options))
        flops = mr_prune_flops(layout.base, n_high, dim)
    parts = [low_at[kept_low], high_at[kept_high]] + ([newline_at] if newlines else [])
    return ImageSelection(torch.cat(parts).sort().values, None, flops)
