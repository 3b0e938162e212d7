"""The table of pruning methods. Each entry is one `Method`: its name, its options (defaults and
checks), where it acts (before the language model, or inside it as FastV does) and its selection
function. `mrpruner.patch`, the lmms-eval model, the sweep runner, `flops_reduction` and the book
read this table; `register_method` adds your own:

    def keep_largest(features, keep, layout, power=2.0):
        return features.norm(p=power, dim=1).topk(keep).indices.sort().values

    mrpruner.register_method("largest", keep_largest)
    mrpruner.patch(model, "largest", 0.9, power=1.0)

A registered method sees an image's packed visual tokens (`features`, (n, d), after the projector;
`layout` says which are base, grid and newline: `layout.parts()`) and returns the sorted indices of
the `keep` tokens to keep. It gets the same exact budget, checks, statistics, KV cache and batches as
the built-in methods. Where a method is named by text (lmms-eval's `--model_args method=...`, a sweep
grid) an import path "package.module:function" registers that function under that path.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch

from mrpruner.baselines import gprune, random_select, tome_merge
from mrpruner.budget import Plan, plan, split_budget
from mrpruner.checks import check_count, check_flag, check_real
from mrpruner.core import MROptions, mr_prune
from mrpruner.flops import (LLAVA_NEXT_8B, LLAVA_NEXT_8B_ENCODER, MAX_COUNT, SCOPES, DecoderShape, EncoderShape,
                            check_shape, encoder_flops, fastv_flops, gprune_flops, mr_prune_flops, prefill_flops,
                            tome_flops)
from mrpruner.seam import ImageSelection, Layout, PatchState


def _no_check(options: dict) -> None:
    """Options of a method that validates nothing beyond their names."""


def _no_flops(layout: Layout, dim: int, kept: int, options: Mapping[str, Any]) -> int:
    """A selection whose FLOPs are not counted (random choice, or a method that states none)."""
    return 0


@dataclass(frozen=True)
class Method:
    """One pruning method.

    select: (features, budget, layout, **options) -> ImageSelection for one image, before the
    language model (budget: `mrpruner.budget.plan`); None for a method that acts inside it.
    defaults: its options and their default values. check(options) raises on bad values (the
    options arrive merged over the defaults). flops(layout, d, kept scored tokens, options): the
    FLOPs of one image's selection (`mrpruner.flops`), added to the prefill's in `mrpruner.stats`.
    setup(language_model, state): installs what the method needs inside the language model
    (FastV's pruning at layer K, ToMe's proportional attention); None for nothing. renamed:
    options the method no longer takes, each with the error that says what replaced it."""

    name: str
    select: Callable[..., ImageSelection] | None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    check: Callable[[dict], None] = _no_check
    flops: Callable[[Layout, int, int, Mapping[str, Any]], int] = _no_flops
    setup: Callable[[torch.nn.Module, PatchState], None] | None = None
    renamed: Mapping[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """"before the language model" or "inside the language model"."""
        return "before the language model" if self.select is not None else "inside the language model"


def _random(features: torch.Tensor, budget: Plan, layout: Layout, *, seed: int) -> ImageSelection:
    return ImageSelection(random_select(layout.total, budget.scored, seed=seed, device=features.device), None)


def _tome(features: torch.Tensor, budget: Plan, layout: Layout, *, proportional: bool) -> ImageSelection:
    merge = tome_merge(features, budget.scored)
    return ImageSelection(merge.anchor, merge.tokens, merge.sizes if proportional else None)


def _tome_setup(language_model: torch.nn.Module, state: PatchState) -> None:
    if state.options["proportional"]:
        from mrpruner.attention import Proportional

        state.proportional = Proportional(language_model, state)


def _fastv_setup(language_model: torch.nn.Module, state: PatchState) -> None:
    from mrpruner.fastv import FastV

    state.in_llm = FastV(language_model, state.options["layer"], state.ratio, state.protocol, state)


def _by_resolution(features: torch.Tensor, budget: Plan, layout: Layout,
                   pick: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]) -> ImageSelection:
    """Score the base tokens and the grid (newlines left out) with `pick(low, high)` -> kept indices
    of each; the budget's newlines are kept as they are."""
    low_at, high_at, newline_at = layout.parts(features.device)
    kept_low, kept_high = pick(features[low_at], features[high_at])
    parts = [low_at[kept_low], high_at[kept_high]] + ([newline_at] if budget.newlines else [])
    return ImageSelection(torch.cat(parts).sort().values, None)


def _gprune(features: torch.Tensor, budget: Plan, layout: Layout, *, threshold: float,
            iterations: int) -> ImageSelection:
    def pick(low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k_low, k_high = budget.split or split_budget(budget.scored, len(low), len(high), mean_low=0.0,
                                                     mean_high=0.0, adaptive=False)
        graph = {"threshold": threshold, "iterations": iterations}
        kept_low, kept_high = (gprune(side, k, **graph) if len(side) else side.new_zeros(0, dtype=torch.long)
                               for side, k in ((low, k_low), (high, k_high)))
        return kept_low, kept_high  # an image with one resolution has it scored alone

    return _by_resolution(features, budget, layout, pick)


def _gprune_flops(layout: Layout, dim: int, kept: int, options: Mapping[str, Any]) -> int:
    return sum(gprune_flops(count, dim, iterations=options["iterations"])
               for count in (layout.base, layout.rows * layout.cols) if count)


def _gprune_check(options: dict) -> None:
    check_real("threshold", options["threshold"], -1.0, 1.0)
    check_count("iterations", options["iterations"], 1, 1000)


def _mrpruner(features: torch.Tensor, budget: Plan, layout: Layout, **options) -> ImageSelection:
    def pick(low: torch.Tensor, high: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(low):
            return mr_prune(low, high, budget.scored, MROptions(**options))
        kept_high, kept_low = mr_prune(high, low, budget.scored, MROptions(**options))  # the grid alone
        return kept_low, kept_high

    return _by_resolution(features, budget, layout, pick)


RESOLUTIONS = ("low", "high")  # what `resolution_only` keeps: the base image's tokens, or the grid's


def resolution_only(resolution: str) -> Method:
    """The control that keeps one resolution of every image whole and drops the other (Fig. 2b's
    single-resolution runs), as a Method for `patch` (at ratio 0; not registered): "low" keeps
    the base tokens, "high" the grid with its newline tokens."""
    if resolution not in RESOLUTIONS:
        raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution!r}")

    def select(features: torch.Tensor, budget: Plan, layout: Layout) -> ImageSelection:
        low_at, high_at, newline_at = layout.parts()
        kept = low_at if resolution == "low" else torch.cat([high_at, newline_at]).sort().values
        return ImageSelection(kept.to(features.device), None)

    return Method(f"{resolution} only", select)

BUILTIN = (
    Method("random", _random, {"seed": 0}, lambda o: check_count("seed", o["seed"], 0, 2**63 - 1)),
    Method("tome", _tome, {"proportional": True}, lambda o: check_flag("proportional", o["proportional"]),
           lambda layout, dim, kept, o: tome_flops(layout.total, dim, kept), _tome_setup),
    Method("fastv", None, {"layer": 2}, lambda o: check_count("layer", o["layer"], 1, 2**31), setup=_fastv_setup),
    Method("gprune", _gprune, {"threshold": 0.5, "iterations": 5}, _gprune_check, _gprune_flops),
    Method("mrpruner", _mrpruner, {k: getattr(MROptions(), k) for k in MROptions.__dataclass_fields__},
           lambda o: MROptions(**o), lambda layout, dim, kept, o: mr_prune_flops(layout.base, layout.rows * layout.cols,
                                                                                dim),
           renamed={"budget": "the option budget was replaced by patch's protocol: protocol='paper' keeps the "
                              "released code's budget (was budget='released', now in either variant), "
                              "protocol='exact' the equal budget (was budget='exact')"}),
)
METHODS = tuple(m.name for m in BUILTIN)  # the paper's methods, in its tables' order
_TABLE: dict[str, Method] = {m.name: m for m in BUILTIN}


def table() -> Mapping[str, Method]:
    """Every method `patch` takes, by name: the built-in ones, then those registered."""
    return MappingProxyType(_TABLE)


def register_method(name: str, select: Callable[..., torch.Tensor], defaults: Mapping[str, Any] | None = None, *,
                    check: Callable[[dict], None] | None = None,
                    flops: Callable[[Layout, int, int, Mapping[str, Any]], int] | None = None) -> Method:
    """Add your own method under `name`; `patch(model, name, ratio, **options)` then runs it.

    select(features, keep, layout, **options) returns the sorted indices (1-D integer tensor) of
    the `keep` tokens to keep among the image's n packed visual tokens (`features`: (n, d)).
    defaults: its options and their defaults; None reads them from `select`'s keyword parameters
    with defaults. check(options) may raise on bad values; flops(layout, d, keep, options) may
    state the selection's FLOPs (else 0). Registering a name again replaces a registered method;
    a built-in one cannot be replaced. Returns the table's entry."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if name in METHODS:
        raise ValueError(f"name {name!r} is a built-in method ({', '.join(METHODS)}); choose another")
    if not callable(select):
        raise TypeError(f"select must be callable as select(features, keep, layout, **options), got {select!r}")
    if defaults is None:
        defaults = _keyword_defaults(select)
    if not isinstance(defaults, Mapping) or not all(isinstance(k, str) for k in defaults):
        raise TypeError(f"defaults must map option names to default values, got {defaults!r}")

    def run(features: torch.Tensor, budget: Plan, layout: Layout, **options) -> ImageSelection:
        kept = select(features, budget.scored, layout, **options)
        return ImageSelection(_check_indices(name, kept, budget.scored, layout.total, features.device), None)

    method = Method(name, run, dict(defaults), check or _no_check, flops or _no_flops)
    _TABLE[name] = method
    return method


def _keyword_defaults(select: Callable) -> dict[str, Any]:
    """The options of a select function: its parameters after (features, keep, layout) with defaults."""
    params = list(inspect.signature(select).parameters.values())[3:]
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _check_indices(name: str, kept: object, keep: int, n: int, device: torch.device) -> torch.Tensor:
    """A registered method's answer, checked: `keep` sorted, distinct indices into n tokens."""
    if not isinstance(kept, torch.Tensor) or kept.dim() != 1 or kept.is_floating_point() or kept.is_complex():
        raise TypeError(f"method {name!r} must return a 1-D integer tensor of token indices, got "
                        f"{kept.dtype if isinstance(kept, torch.Tensor) else type(kept).__name__}")
    if len(kept) != keep:
        raise ValueError(f"method {name!r} returned {len(kept)} indices, the budget is {keep}")
    kept = kept.to(device, torch.long)
    if keep and (int(kept[0]) < 0 or int(kept[-1]) >= n or not bool((kept[1:] > kept[:-1]).all())):
        raise ValueError(f"method {name!r} must return sorted, distinct indices in [0, {n}), got {kept.tolist()}")
    return kept


def get_method(method: object) -> Method:
    """The table's entry for a name, or for an import path "package.module:function" (the
    function is registered under that path on first use); a `Method` is its own entry."""
    if isinstance(method, Method):
        return method
    if isinstance(method, str) and method in _TABLE:
        return _TABLE[method]
    if isinstance(method, str) and method.count(":") == 1:
        module_name, _, attribute = method.partition(":")
        try:
            select = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError, ValueError) as error:
            raise ValueError(f"method {method!r} names no importable function ({error})") from None
        return register_method(method, select)
    raise ValueError(f"method must be one of {tuple(_TABLE)} or an import path 'package.module:function' of "
                     f"your own select function, got {method!r}")


def check_method(method: object) -> str:
    """A method's name in the table (an import path is registered first); else a ValueError."""
    return get_method(method).name


def check_renamed(method: Method, options: Mapping[str, Any]) -> None:
    """An option the method no longer takes is an error that says what replaced it."""
    for option in sorted(set(options) & set(method.renamed)):
        raise ValueError(method.renamed[option])


def check_options(method: object, options: Mapping[str, Any]) -> dict:
    """A method's options merged over its defaults and checked (unknown names and bad values are
    errors that name them)."""
    entry = get_method(method)
    check_renamed(entry, options)
    unknown = sorted(set(options) - set(entry.defaults))
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for method {entry.name!r}; allowed: "
                         f"{sorted(entry.defaults) or 'none'}")
    merged = {**entry.defaults, **options}
    entry.check(merged)
    return merged


def flops_reduction(
    method: str,
    ratio: float,
    *,
    n_text: int,
    n_low: int = 576,
    rows: int = 36,
    cols: int = 48,
    layout: Any = None,
    tiles: int = 5,
    shape: DecoderShape = LLAVA_NEXT_8B,
    encoder: EncoderShape = LLAVA_NEXT_8B_ENCODER,
    scope: str = "llm",
    protocol: str = "exact",
    fastv_layer: int = 2,
    gprune_iterations: int = 5,
) -> float:
    """Figure 4's x-axis: 1 - (pruned prefill + selection FLOPs) / (dense prefill FLOPs), of the
    language model (scope="llm") or with the vision tower and projector on `tiles` tiles added to
    both (scope="model").

    One image packed as LLaVA-NeXT packs it: n_low base tokens, then a rows x cols high-resolution
    grid with one newline token per row (defaults: a 480x640 image, 576 + 36 x (48 + 1) = 2340,
    from 5 tiles), plus n_text text tokens. Budgets and costs follow `mrpruner.patch`: each method
    keeps `mrpruner.budget.plan(method, protocol, ...)` of the visual tokens; mrpruner and gprune
    score the base tokens and the grid without its newlines (gprune as two graphs), tome merges all
    n; FastV keeps every token in layers < fastv_layer and drops them after, the others drop them
    before layer 0. Any method of `mrpruner.methods.table()` works (its `flops` gives the selection's
    cost; fastv_layer and gprune_iterations go to the methods that take them). `layout`, any host's
    layout of the image (`mrpruner.hosts`: base, grid and separators, e.g. InternVL's thumbnail and
    tiles with no newline), takes the place of n_low, rows and cols.
    """
    entry = get_method(method)
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    n_text = check_count("n_text", n_text, 0, MAX_COUNT)
    if layout is None:
        n_low = check_count("n_low", n_low, 1, MAX_COUNT)
        rows, cols = check_count("rows", rows, 1, MAX_COUNT), check_count("cols", cols, 1, MAX_COUNT)
        layout = Layout(n_low, rows, cols)
    shape = check_shape(shape)
    n_visual = layout.total
    budget = plan(entry.name, protocol, ratio, base=layout.base, rows=layout.rows, cols=layout.cols,
                  newlines=layout.newlines)
    encoder_cost = encoder_flops(tiles, encoder) if scope == "model" else 0
    dense = prefill_flops(n_text + n_visual, shape) + encoder_cost
    if entry.select is None:  # inside the language model: FastV
        fastv_layer = check_count("fastv_layer", fastv_layer, 0, shape.layers)
        pruned = prefill_flops(n_text + n_visual, shape, prune_layer=fastv_layer, pruned_len=n_text + budget.total,
                               selection_flops=fastv_flops(n_text + n_visual, shape))
        return 1 - (pruned + encoder_cost) / dense
    given = {"layer": fastv_layer, "iterations": gprune_iterations}
    options = check_options(entry, {k: v for k, v in given.items() if k in entry.defaults})
    selection = entry.flops(layout, shape.hidden, budget.scored, options)
    return 1 - (prefill_flops(n_text + budget.total, shape, selection_flops=selection) + encoder_cost) / dense
