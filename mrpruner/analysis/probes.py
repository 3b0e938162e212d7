"""What the book's chapters ask of a model directly: a photo's low- and high-resolution tokens as
LLaVA-NeXT packs them, their informativeness (Fig. 2a), token grids for pictures (Figs. 5, 6), how
far the paper's and the released code's selections differ, answers under pruning, what the plug-in
does with several images or a video, and the visual tokens each method hands the language model
(per budget protocol, computed)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from mrpruner import models
from mrpruner.budget import keep_count, plan
from mrpruner.checks import check_count, check_ratio
from mrpruner.core import mr_prune
from mrpruner.graph import informativeness
from mrpruner.hosts.llava_next import inner_model, packed_layout
from mrpruner.seam import Layout


class PhotoTokens(NamedTuple):
    """One photo's visual tokens after the projector: `low` (base, d) on a side x side grid over
    the whole photo, `high` (rows * cols, d) on the unpadded rows x cols grid (newlines left out)."""

    low: torch.Tensor
    high: torch.Tensor
    layout: Layout

    @property
    def low_shape(self) -> tuple[int, int]:
        """(side, side) of the base-token grid."""
        return self.layout.base_shape

    @property
    def high_shape(self) -> tuple[int, int]:
        """(rows, cols) of the high-resolution grid, newlines left out."""
        return self.layout.rows, self.layout.cols


def measured_label(net, model: str, device: str, limit: int | None) -> str:
    """The provenance line of numbers a chapter measures itself with `net` (loaded as `model`)."""
    from mrpruner import results

    return results.label(results.provenance(model=model, dtype=str(net.dtype).removeprefix("torch."),
                                            device=results.device_name(device), seed=0, limit=limit))


def packed_features(model, processor, image) -> tuple[torch.Tensor, Layout]:
    """One PIL photo's packed visual tokens under a LLaVA-NeXT model (its vision tower, anyres
    tiling and projector, as `get_image_features` packs them, newlines included), in float32,
    with their layout: what a pre-LLM method is given."""
    return packed_batch(model, processor, [image])[0]


def packed_batch(model, processor, images: Sequence) -> list[tuple[torch.Tensor, Layout]]:
    """`packed_features` of several PIL photos, encoded in one batch."""
    inputs = processor.image_processor(list(images), return_tensors="pt")
    with torch.no_grad():
        packed = inner_model(model).get_image_features(inputs["pixel_values"].to(model.device, model.dtype),
                                                       inputs["image_sizes"]).pooler_output
    out = []
    for features, size in zip(packed, inputs["image_sizes"]):
        layout = packed_layout(size, model.config)
        if features.shape[0] != layout.total:
            raise ValueError(f"the photo packs into {features.shape[0]} tokens, its layout {layout} gives "
                             f"{layout.total}")
        out.append((features.float(), layout))
    return out


def photo_tokens(model, processor, image) -> PhotoTokens:
    """The low- and high-resolution tokens of one PIL photo (`packed_features`, newlines left out)."""
    features, layout = packed_features(model, processor, image)
    low_at, high_at, _ = layout.parts(features.device)
    return PhotoTokens(features[low_at], features[high_at], layout)


def kept_sets(model, processor, images: Sequence, ratio: float, methods: Mapping[str, tuple[str, Mapping]],
              protocol: str = "exact", batch: int = 32) -> pd.DataFrame:
    """Which packed tokens each pre-LLM method of `methods` (label -> (method, options)) keeps of
    each image at `ratio` under `protocol`: one row per image, one column per label, each cell a
    frozenset of indices. Each selection is the one `mrpruner.patch` makes (the same budget and
    select function), on the image's packed tokens, computed once per image for every method."""
    from mrpruner.methods import check_options, get_method
    from mrpruner.patch import _select

    check_ratio(ratio)
    chosen = {}
    for label, (method, options) in methods.items():
        entry = get_method(method)
        if entry.select is None:
            raise ValueError(f"methods must select before the language model; {label!r} ({entry.name!r}) acts "
                             "inside it")
        chosen[label] = (entry, check_options(method, options))
    rows, images = [], list(images)
    for at in range(0, len(images), batch):
        for features, layout in packed_batch(model, processor, images[at:at + batch]):
            rows.append({label: frozenset(int(i) for i in
                                          _select(entry, ratio, protocol, options, features, layout).kept)
                         for label, (entry, options) in chosen.items()})
    return pd.DataFrame(rows, columns=list(methods))


def overlap(sets: pd.DataFrame, first: str, second: str) -> pd.DataFrame:
    """Per image of `kept_sets`' table: whether the two labels' kept sets differ, and their
    overlap (Jaccard: shared tokens over tokens kept by either)."""
    pairs = list(zip(sets[first], sets[second]))
    return pd.DataFrame({"differ": [a != b for a, b in pairs],
                         "jaccard": [len(a & b) / len(a | b) if a | b else 1.0 for a, b in pairs]})


def token_norms(photos: Mapping[str, PhotoTokens]) -> pd.DataFrame:
    """Fig. 2a's data: one row per token (photo, resolution 'low'/'high', L2 norm, Eq. 2)."""
    frames = [pd.DataFrame({"photo": name, "resolution": resolution,
                            "norm": informativeness(x).cpu().numpy()})
              for name, tokens in photos.items() for resolution, x in (("low", tokens.low), ("high", tokens.high))]
    return pd.concat(frames, ignore_index=True)


def as_grid(values: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """Per-token values (row-major) as a (rows, cols) array for a picture."""
    return values.detach().float().cpu().numpy().reshape(shape)


def kept_grid(indices: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """A (rows, cols) boolean array, True where the token at that index is kept."""
    mask = np.zeros(shape[0] * shape[1], dtype=bool)
    mask[indices.cpu().numpy()] = True
    return mask.reshape(shape)


def variant_differences(photos: Mapping[str, PhotoTokens], ratios: Iterable[float], **options) -> pd.DataFrame:
    """How the paper's and the released code's MR-Pruner selections differ on each photo and
    pruning ratio (same budget keep_count(N_l + N_h, ratio) for both, so only scoring and
    allocation differ): per-resolution kept counts, overlap (Jaccard) and tokens kept by one only."""
    rows = []
    for name, tokens in photos.items():
        n = len(tokens.low) + len(tokens.high)
        for ratio in ratios:
            keep = keep_count(n, ratio)
            paper = mr_prune(tokens.low, tokens.high, keep, variant="paper", **options)
            released = mr_prune(tokens.low, tokens.high, keep, variant="released", **options)
            row = {"photo": name, "ratio": ratio, "tokens": n, "keep": keep}
            for side in ("low", "high"):
                a, b = set(getattr(paper, side).tolist()), set(getattr(released, side).tolist())
                row |= {f"{side}_paper": len(a), f"{side}_released": len(b),
                        f"{side}_jaccard": len(a & b) / len(a | b) if a | b else 1.0,
                        f"{side}_only_one": len(a ^ b)}
            row["identical"] = row["low_only_one"] == row["high_only_one"] == 0
            rows.append(row)
    return pd.DataFrame(rows)


class Answer(NamedTuple):
    """A greedy answer and the logits of its first generated token (float32, on the CPU)."""

    text: str
    first_logits: torch.Tensor


def answer(model, processor, image, question: str, *, max_new_tokens: int = 8) -> Answer:
    """Ask `question` about one PIL photo through the processor's chat template; greedy decoding.
    An InternVL also gets the image's size (`mrpruner.hosts.internvl.image_sizes`: a patched one
    needs it to lay out the tiles)."""
    from mrpruner.hosts import host_of, internvl

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt").to(model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
    if host_of(model) is internvl:
        inputs["image_sizes"] = internvl.image_sizes([image])
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, output_scores=True,
                             return_dict_in_generate=True)
    text = processor.batch_decode(out.sequences[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
    return Answer(text.strip(), out.scores[0][0].float().cpu())


def answers_under(model, processor, questions: pd.DataFrame, score: Callable[[int, str], float],
                  conditions: Mapping[str, Callable[[], contextlib.AbstractContextManager]], *,
                  max_new_tokens: int = 8) -> pd.DataFrame:
    """Each question (columns image: a PIL photo, question; answer, if present, is passed on)
    answered greedily under each of `conditions` (name -> a context manager factory, e.g. the
    unpruned model and `mrpruner.pruned` with each variant); columns <name> (the answer) and
    score_<name>, `score(i, text)` of question i's answer (the task's own score:
    `mrpruner.benchmarks.TaskQuestions.score`)."""
    rows = []
    for i, row in enumerate(questions.itertuples()):
        out = {"question": row.question, "answer": getattr(row, "answer", None)}
        for name, condition in conditions.items():
            with condition():
                text = answer(model, processor, row.image, row.question, max_new_tokens=max_new_tokens).text
            out |= {name: text, f"score_{name}": score(i, text)}
        rows.append(out)
    return pd.DataFrame(rows)


def kept_grids(model, processor, image, method: str, ratio: float, *, question: str = "What is shown in this image?",
               **options) -> tuple[np.ndarray, np.ndarray]:
    """Which tokens of one photo `mrpruner.patch(model, method, ratio, **options)` hands to the
    language model, as boolean (low grid, high grid) arrays: read from `mrpruner.patch.stats` after
    a one-token answer to `question`, so this is the plug-in's own selection."""
    from mrpruner.patch import pruned, stats

    with pruned(model, method, ratio, **options):
        answer(model, processor, image, question, max_new_tokens=1)
        image_stats = stats(model).images[0]
    layout = image_stats.layout
    low_at, high_at, _ = layout.parts()
    kept = torch.zeros(layout.total, dtype=torch.bool)
    kept[image_stats.kept] = True
    return kept[low_at].reshape(layout.base_shape).numpy(), kept[high_at].reshape(layout.rows, layout.cols).numpy()


def region_kept(model, processor, image, box: Sequence[float], low: np.ndarray, high: np.ndarray) -> dict[str, float]:
    """Per resolution ("low", "high"), the share of the tokens whose patch `box` (x0, y0, x1, y1 in
    the image's pixels: where the answer lies) covers (`mrpruner.hosts.llava_next.region_tokens`) that
    the boolean kept grids `low` and `high` (`kept_grid`, `kept_grids`) hold: the recall of the
    answer's tokens, one image at a time."""
    from mrpruner.hosts.llava_next import region_tokens
    from mrpruner.seam import recall

    region = region_tokens(model, processor, [image], [box])[0].cpu()
    layout = Layout(low.size, *high.shape)
    low_at, high_at, _ = layout.parts()
    kept = {"low": low_at[torch.from_numpy(low.reshape(-1))], "high": high_at[torch.from_numpy(high.reshape(-1))]}
    return {side: recall(kept[side], region[torch.isin(region, at)]) for side, at in (("low", low_at), ("high", high_at))}


def host_layout(model, image):
    """The layout `model`'s family (`mrpruner.hosts.host_of`) packs one PIL image into, as the
    plug-in lays it out: base (low-resolution) tokens, the rows x cols grid, separators."""
    from mrpruner.hosts import host_of

    return host_of(model).packed_layout((image.height, image.width), model.config)


def prompt_outcomes(model, processor, image, method: str, ratio: float, *, frames: int = 4,
                    question: str = "What is shown in this image?", **options) -> pd.DataFrame:
    """What `mrpruner.patch(model, method, ratio, **options)` does today with one image, two images
    in one prompt (`image` and its left half, passed as one prompt's list) and a video (`frames`
    copies of `image`), each asked
    `question` through the processor's chat template and `generate()` as for an unpruned model
    (InternVL's processor made to give the sizes, `mrpruner.hosts.internvl.with_image_sizes`). One
    row per input: `outcome` (each image's visual tokens before -> after and its resolutions, or
    what stopped it) and `error` (mrpruner's message, else None). A video runs unpatched first, so
    that a refusal is mrpruner's, not the model's; a processor that takes no video says so."""
    from mrpruner.hosts import host_of, internvl
    from mrpruner.patch import pruned, stats

    if host_of(model) is internvl:
        processor = internvl.with_image_sizes(processor)
    image = image.convert("RGB")
    half = image.crop((0, 0, max(1, image.width // 2), image.height))

    def prompt(count: int) -> str:
        content = [{"type": "image"}] * count + [{"type": "text", "text": question}]
        return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)

    def generate(**visuals) -> None:
        inputs = processor(return_tensors="pt", **visuals).to(model.device)
        for key, value in inputs.items():
            if torch.is_tensor(value) and value.is_floating_point():
                inputs[key] = value.to(model.dtype)
        with torch.no_grad():
            model.generate(**inputs, max_new_tokens=1, do_sample=False)

    def pruned_run(**visuals) -> dict:
        try:
            with pruned(model, method, ratio, **options):
                generate(**visuals)
                images = stats(model).images
        except ValueError as error:
            return {"outcome": "refused by mrpruner (the unpatched model runs it)", "error": str(error)}
        return {"outcome": "; ".join(f"{i.tokens_before:,} \u2192 {i.tokens_after:,} ({i.resolutions} "
                                     f"resolution{'s' * (i.resolutions != 1)})" for i in images), "error": None}

    rows = [{"input": "one image", **pruned_run(images=[image], text=prompt(1))},
            {"input": "two images", **pruned_run(images=[[image, half]], text=[prompt(2)])}]  # one prompt's
    clip = f"a {frames}-frame video"
    token = getattr(processor, "video_token", None)
    if token is None or getattr(processor, "video_processor", None) is None:
        rows.append({"input": clip, "outcome": "no video input: the processor takes none", "error": None})
    else:
        video = {"videos": [np.stack([np.asarray(image)] * frames)],
                 "text": prompt(1).replace(processor.image_token, token, 1)}
        generate(**video)  # the model itself runs it (an error here is not mrpruner's)
        rows.append({"input": clip, **pruned_run(**video)})
    return pd.DataFrame(rows)


def resolution_budgets(kept: Mapping[tuple[str, float], tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    """How each method's kept tokens split between the resolutions: from `kept_grids`' (low, high)
    grids by (label, ratio), one row each with the base and grid tokens kept and in all, and the
    base's share of the kept tokens beside its share of the tokens (what a split by counts gives;
    Eq. 4 moves it by the resolutions' mean informativeness)."""
    rows = []
    for (label, ratio), (low, high) in kept.items():
        kept_low, kept_high = int(low.sum()), int(high.sum())
        rows.append({"method": label, "ratio": ratio, "base kept": kept_low, "base tokens": low.size,
                     "grid kept": kept_high, "grid tokens": high.size,
                     "base share of kept": kept_low / max(kept_low + kept_high, 1),
                     "base share of tokens": low.size / (low.size + high.size)})
    return pd.DataFrame(rows)


def lost_area(low: np.ndarray, high: np.ndarray, samples: int = 480) -> float:
    """Fraction of the photo that no kept token covers at either resolution (both grids are
    stretched over the whole photo; `samples` x `samples` points are tested)."""
    points = (np.arange(samples) + 0.5) / samples

    def covered(grid: np.ndarray) -> np.ndarray:
        rows, cols = (np.floor(points * n).astype(int) for n in grid.shape)
        return grid[np.ix_(rows, cols)]

    return float(1 - (covered(low) | covered(high)).mean())


def budgets(ratios: Iterable[float], layout: Layout = Layout(576, 36, 48)) -> pd.DataFrame:
    """Visual tokens the language model receives from one image of `layout` (default: a 480x640
    photo, 2,340 tokens), per method (the paper's row labels) and ratio, under both protocols of
    mrpruner.patch (`mrpruner.budget.plan`): computed, not measured."""
    from mrpruner.checks import PROTOCOLS
    from mrpruner.methods import METHODS
    from mrpruner.paper import LABELS

    rows = [{"method": LABELS[method], "ratio": ratio, "protocol": protocol,
             "tokens": plan(method, protocol, ratio, base=layout.base, rows=layout.rows, cols=layout.cols).total}
            for method in METHODS for ratio in ratios for protocol in PROTOCOLS]
    return pd.DataFrame(rows).pivot(index=["method", "ratio"], columns="protocol", values="tokens")


def selection_overlaps(model: str | Sequence[str], methods: Mapping[str, tuple[str, Mapping]], ratio: float, *,
                       kinds: Sequence[str] = ("overview", "detail"), images: int | None = None) -> pd.DataFrame:
    """For each miniature of `model`, how the selections of the pre-LLM methods of `methods` (label
    -> (method, options); the first is the reference) differ from the first's, on the images of its
    test split's questions of `kinds` (the first `images` of them, None: all): one row per (model,
    other label) with the images compared, the share on which the kept sets differ and their mean
    Jaccard overlap (`kept_sets`, `overlap`)."""
    from mrpruner.mini import RECIPES
    from mrpruner.mini.data import SPLITS, samples
    from mrpruner.mini.task import TEST_SIZE

    if len(methods) < 2:
        raise ValueError(f"methods must name a reference and at least one other label, got {list(methods)}")
    if images is not None:
        images = check_count("images", images, 1, TEST_SIZE)
    first, *others = methods
    rows = {}
    for name in models.check_models(model):
        if name not in RECIPES:
            raise ValueError(f"model must name committed miniatures {tuple(RECIPES)}, got {name!r}")
        net, processor = models.load(name)
        test = [s for s in samples(TEST_SIZE, SPLITS["test"], task=RECIPES[name][0]) if s.kind in kinds][:images]
        sets = kept_sets(net, processor, [s.image for s in test], ratio, methods)
        for other in others:
            found = overlap(sets, first, other)
            rows[(name, other)] = {"images": len(found), "kept sets differ": found["differ"].mean(),
                                   "mean Jaccard": found["jaccard"].mean()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["model", "against " + first])
