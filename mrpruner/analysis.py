"""What the book's chapters compute: a photo's low- and high-resolution tokens as LLaVA-NeXT
packs them, their informativeness (Fig. 2a), token grids for pictures (Figs. 5, 6), how far the
paper's and the released code's selections differ, the chapters' experiment sweeps, and the
visual tokens each method hands the language model (per budget protocol, computed and measured)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from mrpruner import models, rule
from mrpruner.budget import keep_count, plan
from mrpruner.checks import check_count, check_ratio
from mrpruner.core import mr_prune
from mrpruner.graph import informativeness
from mrpruner.hosts.llava_next import inner_model, packed_layout
from mrpruner.seam import Layout
from mrpruner.methods import resolution_only
from mrpruner.mini.task import TASK_NAMES as MINI_TASKS



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


def load_model(model: str, device: str = "cpu"):
    """(model, processor) for a chapter, by any name `mrpruner.models` accepts: "mini" (the
    miniature trained here), "tiny", "tiny-onevision", "tiny-internvl" (random, seed 0, float32), a
    folder or a hub id of a transformers LLaVA-NeXT, LLaVA-OneVision or InternVL (its class read
    from the checkpoint's config; float16 on CUDA, float32 on the CPU)."""
    models.check_model(model)
    if model in models.TINY_MODELS:
        from mrpruner import testing

        net, processor = getattr(testing, models.TINY_MODELS[model])()
        return net.to(device), processor
    if models.miniature(model):
        from mrpruner.mini import load

        net, processor = load(model)
        return net.to(device), processor
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from mrpruner.hosts import host_of

    models.check_cached(model)
    dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    net = AutoModelForImageTextToText.from_pretrained(model, dtype=dtype).to(device).eval()
    host_of(net)  # a family `mrpruner.patch` drives, else a TypeError naming them
    return net, AutoProcessor.from_pretrained(model)


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


@contextlib.contextmanager
def one_resolution(model, resolution: str):
    """Within the block, `model` (a LLaVA-NeXT, not patched) gives the language model only the
    low-resolution (base) tokens, or only the high-resolution grid with its newline tokens, of
    every image: the single-resolution runs of Fig. 2b, through `mrpruner.pruned`."""
    from mrpruner.patch import pruned

    with pruned(model, resolution_only(resolution), 0.0):
        yield model


def tiny_task(folder: str | Path) -> Path:
    """The tiny offline lmms-eval task written into `folder`/tasks (for a chapter's "tiny" task)."""
    from mrpruner.benchmarks import write_tiny_task

    return write_tiny_task(Path(folder).resolve() / "tasks")


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


def load_saved(folder: str | Path) -> pd.DataFrame | None:
    """A saved results folder (`mrpruner.results.load_results`), or None where nobody has
    measured it yet (no grid.json)."""
    from mrpruner.results import GRID_FILE, load_results

    return load_results(folder) if Path(folder, GRID_FILE).is_file() else None


def paper_measurements(frames: Iterable[pd.DataFrame | None]) -> pd.DataFrame:
    """Measured numbers to put beside the paper's (`mrpruner.paper.compare`): the cells of the
    paper's eight benchmarks from `mrpruner.results.load_results` frames, in the long form of
    `mrpruner.results.paper_frame` (throughput pooled over those benchmarks only). Cells of other
    tasks (the offline tiny task, the miniature's) are left out: they have no counterpart in the
    paper. The unpruned row (`UNPRUNED`) is the paper's "LLaVA-NeXT-8B"."""
    from mrpruner.benchmarks import BENCHMARKS
    from mrpruner.results import paper_frame

    tasks = {b.task for b in BENCHMARKS.values()}
    unpruned = {UNPRUNED: "LLaVA-NeXT-8B"}  # the chapters' sweeps' name for the paper's unpruned row
    parts = [paper_frame(frame[frame["task"].isin(tasks)].assign(
        label=lambda f: f["label"].replace(unpruned),
        provenance=lambda f: f["provenance"].where(~f.get("stale", pd.Series(False, index=f.index)).astype(bool),
                                                   f["provenance"] + " (stale: measured by other code)")))
        for frame in frames if frame is not None]
    parts = [part for part in parts if len(part)]
    if not parts:
        return pd.DataFrame(columns=["method", "ratio", "benchmark", "value", "provenance"])
    return pd.concat(parts, ignore_index=True)


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


def tokens_beside_scores(frame: pd.DataFrame) -> pd.DataFrame:
    """Per method (label), protocol and ratio of a `mrpruner.results.load_results` frame: the
    visual tokens per image the language model actually received (mean over the cells' images)
    beside each benchmark's score (with several models, the mean over them)."""
    weights = frame["samples"] * frame["image_kept_tokens"]
    keys = ["label", "protocol", "ratio"]
    received = (weights.groupby([frame[k] for k in keys]).sum() / frame.groupby(keys)["samples"].sum())
    scores = frame.pivot_table(index=keys, columns="benchmark", values="score", aggfunc="mean")
    return pd.concat([received.rename("visual tokens per image"), scores], axis=1)


# --- a chapter's sweep: the same cells for any model and any tasks -------------------------------

UNPRUNED = "all tokens"  # the label of the unpruned model in the chapters' sweeps
CONTROLS = ("base only", "grid only", "blank images")  # the labels of Table 1's controls: one resolution, no image
# The question kind of each of the miniatures' lmms-eval tasks, as the chapters label it: the first
# task's kinds by their names ("overview", "detail"), the others' with their task ("detail (tiles)").
KIND_OF_TASK = {name: kind if task == "marks" else f"{kind} ({task})"
                for task, by_kind in MINI_TASKS.items() for kind, name in by_kind.items()}


def models_label(model: str | Sequence[str]) -> str:
    """The `model` parameter in words for a title: "mini", or "3 models (mini, mini-seed1, mini-seed2)"."""
    names = models.check_models(model)
    return names[0] if len(names) == 1 else f"{len(names)} models ({', '.join(names)})"


def trained_alike(model: str) -> list[str]:
    """`model` and, for a committed miniature, the other committed miniatures of its task (one
    recipe, other seeds: `mrpruner.mini.models`), `model` first; any other model alone."""
    models.check_model(model)
    if not models.miniature(model):
        return [model]
    from mrpruner.mini import RECIPES
    from mrpruner.mini import models as of_task

    return [model, *(name for name in of_task(RECIPES[model][0]) if name != model)]


def results_folder(sweep: str, model: str) -> Path:
    """Where a chapter keeps its sweep `sweep` (a shipped sweep's name, or a YAML file's) run on
    `model`: results/<model>/<table>, e.g. results/mini/table1 (committed) or
    results/llava-hf--llama3-llava-next-8b-hf/table1."""
    name = Path(model).name if Path(model).is_dir() else model.replace("/", "--")
    return Path("results") / name / Path(sweep).stem.removeprefix("mini_")


def chapter_sweep(sweep: str, *, model: str | Sequence[str], tasks: Sequence[str], device: str,
                  limit: int | None = None, results_dir: str | Path | None = None, recompute: bool = True,
                  include_path: str | Path | None = None) -> pd.DataFrame:
    """A chapter's measurements: the grid of the shipped sweep `sweep` (its methods, options,
    ratios and protocol) on `model` and `tasks`, `limit` documents each, run into `results_dir`
    (default `results_folder`) with `mrpruner.sweep.run.run_sweep` (missing and stale cells only;
    on the CPU in this process, float32; on CUDA one lmms-eval process per cell, float16), then
    read back with `mrpruner.results.load_results`. With recompute=False the folder is only read.
    Tasks: mrpruner's own and lmms-eval's are found by name, others in `include_path`; "tiny" is
    the offline tiny task. A failed cell is an error naming its lmms-eval log. `model` may list
    several models (the grid's model axis): each runs into its own `results_folder` and their rows
    come one model after another (the `model` column tells them apart)."""
    from mrpruner import results
    from mrpruner.sweep.grid import grid_from_config, load_config
    from mrpruner.sweep.run import run_sweep
    from mrpruner.benchmarks import TINY, task_name

    names = models.check_models(model)
    if len(names) > 1:
        if results_dir is not None:
            raise ValueError(f"results_dir must be None with several models (each has its own folder "
                             f"results/<model>/<table>); got {results_dir!r} for {names}")
        frames = [chapter_sweep(sweep, model=name, tasks=tasks, device=device, limit=limit, recompute=recompute,
                                include_path=include_path) for name in names]
        frame = pd.concat(frames, ignore_index=True)
        frame.attrs["folder"] = ", ".join(f.attrs["folder"] for f in frames)
        return frame
    model = names[0]
    out = Path(results_dir) if results_dir is not None else results_folder(sweep, model)
    cpu = torch.device(device).type == "cpu"
    config = {**load_config(sweep), "model": model, "tasks": list(tasks), "limit": limit,
              "device": device, "dtype": "float32" if cpu else "float16",
              "runner": "in-process" if cpu else "lmms-eval"}
    if TINY.task in {task_name(t) for t in tasks}:
        if include_path is not None:
            raise ValueError("tasks: the offline task 'tiny' brings its own folder; give include_path=None")
        include_path = tiny_task(out.parent / "tiny-assets")
    if include_path is not None:
        config["include_path"] = str(include_path)
    grid = grid_from_config(config)
    if recompute:
        report = run_sweep(grid, out, progress=False)
        if report.failed:
            raise RuntimeError(f"{len(report.failed)} sweep cell(s) failed; their lmms-eval logs are in "
                               f"{out / 'logs'}: {report.failed}")
    elif not (out / results.GRID_FILE).is_file():
        raise FileNotFoundError(f"results_dir {out} holds no results and recompute is False")
    frame = results.load_results(out)
    if frame["stale"].any():  # only without recompute: a sweep runs stale cells again
        raise ValueError(f"results_dir {out} holds {int(frame['stale'].sum())} stale cell(s) (measured by other code "
                         f"or weights): run with recompute=True to measure them again, e.g. {frame['file'][frame['stale']].iloc[0]}")
    frame.attrs["folder"] = str(out)
    return frame


def task_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """`chapter_sweep`'s rows in the long form the chapters' plots and tables take: model, label,
    method, ratio, `kind` (the question kind for the miniature's tasks, else the benchmark), `accuracy`
    (the task's score: accuracy on the miniature), ci_low, ci_high, recall, kept_tokens (per
    image), flops_reduction, n (documents) and doc_scores (each document's score, for pooling
    over models); attrs["provenance"] names where it was measured."""
    out = pd.DataFrame({
        "model": frame["model"], "label": frame["label"], "method": frame["method"], "options": frame["options"],
        "ratio": frame["ratio"], "kind": [KIND_OF_TASK.get(t, b) for t, b in zip(frame["task"], frame["benchmark"])],
        "accuracy": frame["score"], "ci_low": frame["ci_low"], "ci_high": frame["ci_high"],
        "recall": frame["recall"], "kept_tokens": frame["image_kept_tokens"],
        "tokens": frame["image_visual_tokens"], "flops_reduction": frame["flops_reduction"],
        "n": frame["samples"], "doc_scores": frame["doc_scores"]})
    from mrpruner.plotting import sources

    out = out.reset_index(drop=True)
    out.attrs["provenance"] = sources(frame) if len(frame) else "not measured"
    return out


def across_models(frame: pd.DataFrame) -> pd.DataFrame:
    """A `task_frame` of one or more models as one row per (label, ratio, kind), in its order:
    `accuracy` the mean over the models, ci_low/ci_high its 95% interval over the models and their
    questions (`mrpruner.rule.interval`: a two-level bootstrap, so it speaks of other training runs
    too; one model's own interval when there is one), `model_low`/`model_high` the lowest and
    highest model's score, `models` their number; recall, token counts and FLOPs reduction averaged."""
    keys = ["label", "method", "options", "ratio", "kind"]
    rows = []
    for key, group in frame.groupby(keys, sort=False, dropna=False):
        row = {**dict(zip(keys, key)), "accuracy": group["accuracy"].mean(),
               "model_low": group["accuracy"].min(), "model_high": group["accuracy"].max(), "models": len(group),
               **{c: group[c].mean() for c in ("recall", "kept_tokens", "tokens", "flops_reduction")},
               "n": int(group["n"].sum())}
        scores = [s for s in group.get("doc_scores", [None] * len(group)) if isinstance(s, Mapping) and s]
        if len(group) == 1 or len(scores) < len(group):
            row["ci_low"], row["ci_high"] = ((group["ci_low"].iloc[0], group["ci_high"].iloc[0]) if len(group) == 1
                                             else (np.nan, np.nan))
        else:
            row["ci_low"], row["ci_high"] = rule.interval([list(s.values()) for s in scores])
        rows.append(row)
    columns = [*keys, "accuracy", "ci_low", "ci_high", "model_low", "model_high", "models", "recall", "kept_tokens",
               "tokens", "flops_reduction", "n"]
    out = pd.DataFrame(rows, columns=columns)
    out.attrs = dict(frame.attrs)
    return out


def model_count(frame: pd.DataFrame) -> int:
    """How many models a `task_frame` (or `across_models`' frame) holds."""
    if "models" in frame:
        return int(frame["models"].max())
    return int(frame["model"].nunique()) if "model" in frame else 1


def pooled(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` as one row per (label, ratio, kind): `across_models` when it holds several models,
    else as it is."""
    return across_models(frame) if "models" not in frame and model_count(frame) > 1 else frame


def score_table(frame: pd.DataFrame, *, digits: int = 2) -> pd.DataFrame:
    """One row per (label, ratio) of a `task_frame` (or of `across_models`' frame), in the sweep's
    order; per kind its score in the book's notation, "mean [95% interval]" (`mrpruner.rule`: with
    several models, the interval over the models and their questions), with several models a
    column "models" per kind with each model's score, and, where the task gives answer regions,
    the recall of the answer's tokens."""
    several = model_count(frame) > 1
    per_model = frame.pivot_table(index=["label", "ratio", "kind"], columns="model", values="accuracy", sort=False) \
        if several and "model" in frame else None
    frame = pooled(frame)
    keyed = frame.assign(shown=frame.apply(_with_interval, axis=1, digits=digits))
    kinds = list(dict.fromkeys(keyed["kind"]))
    table = keyed.pivot_table(index=["label", "ratio"], columns="kind", values="shown", aggfunc="first", sort=False)
    parts = [table[kinds].add_prefix("score: ")]
    if per_model is not None:
        each = per_model.apply(lambda row: "\u00a0".join(f"{v:.{digits}f}" for v in row.dropna()), axis=1)
        wide = each.rename("each").reset_index().pivot_table(index=["label", "ratio"], columns="kind", values="each",
                                                            aggfunc="first", sort=False)
        parts.append(wide[[k for k in kinds if k in wide]].add_prefix("each model: "))
    recall = keyed.dropna(subset=["recall"])
    if len(recall):
        wide = recall.pivot_table(index=["label", "ratio"], columns="kind", values="recall", aggfunc="first",
                                  sort=False)
        parts.append(wide[[k for k in kinds if k in wide]].round(digits).add_prefix("recall: "))
    return pd.concat(parts, axis=1).reindex(table.index)


def shown(frame: pd.DataFrame, label: str, ratio: float, kind: str, *, digits: int = 2) -> str:
    """One cell of a `task_frame` (or a `pooled` one) in the book's notation: "0.86 [0.82, 0.90]"
    (score and 95% interval), or "not measured"."""
    rows = frame[(frame["label"] == label) & np.isclose(frame["ratio"], ratio) & (frame["kind"] == kind)]
    if rows.empty:
        return "not measured"
    return _with_interval(rows.iloc[0], digits)


def _with_interval(row, digits: int) -> str:
    """A `task_frame` row's score with its 95% interval where it has one, on one line."""
    return rule.shown(row.accuracy, row.ci_low, row.ci_high, digits)


def compare(frame: pd.DataFrame, label: str, other: str, ratio: float, kind: str) -> rule.Comparison | None:
    """`label` against `other` at `ratio` on `kind` of a `task_frame` of one or more models, paired
    on each model's questions, under the book's rule (`mrpruner.rule.compare`); None when either was
    not measured on every model of the frame, or without per-question scores."""
    rows = frame[np.isclose(frame["ratio"], ratio) & (frame["kind"] == kind) & frame["label"].isin([label, other])]
    names = list(dict.fromkeys(frame["model"])) if "model" in frame else [""]
    a, b = {}, {}
    for name in names:
        mine = rows if name == "" else rows[rows["model"] == name]
        by_label = mine.drop_duplicates("label").set_index("label")
        if label not in by_label.index or other not in by_label.index or "doc_scores" not in by_label:
            return None
        scores = by_label.loc[label, "doc_scores"], by_label.loc[other, "doc_scores"]
        if not all(isinstance(s, Mapping) and s for s in scores):
            return None
        a[str(name)], b[str(name)] = scores
    return rule.compare(a, b)


def verdict(frame: pd.DataFrame, label: str, other: str, ratio: float, kind: str) -> str | None:
    """`label` against `other` under the book's rule: "above", "below" or "tie" (None: not measured)."""
    found = compare(frame, label, other, ratio, kind)
    return None if found is None else found.direction


def agreement(frame: pd.DataFrame, label: str, other: str, ratio: float, kind: str, *, digits: int = 2) -> str | None:
    """`label` against `other` in words, with the difference and its interval and, with several
    models, each model's two scores and on how many models each direction holds (None when not
    measured)."""
    found = compare(frame, label, other, ratio, kind)
    if found is None:
        return None
    words = rule.text(found.difference, found.low, found.high, found.direction, label, other, digits)
    if len(found.per_model) == 1:
        return words
    counts = ", ".join(f"{which} on {found.count(which)}" for which in rule.DIRECTIONS if found.count(which))
    each = ", ".join(f"{name} {a:.{digits}f} against {b:.{digits}f}" for name, a, b, _ in found.per_model)
    return f"{words}; model by model: {counts} of {len(found.per_model)} ({each})"


def leaders(frame: pd.DataFrame, ratio: float, kind: str, labels: Sequence[str] | None = None) -> tuple[str, ...]:
    """The labels that share the first place at `ratio` on `kind` under the book's rule
    (`mrpruner.rule.first`): one label only when it is above every other (empty: not measured)."""
    mean = pooled(frame)
    rows = mean[np.isclose(mean["ratio"], ratio) & (mean["kind"] == kind)]
    if labels is not None:
        rows = rows[rows["label"].isin(labels)]
    if rows.empty:
        return ()
    scores = dict(zip(rows["label"], rows["accuracy"]))
    best = max(scores, key=lambda label: scores[label])
    beats = {(best, other): verdict(frame, best, other, ratio, kind) for other in scores if other != best}
    return rule.first(scores, beats)


def ranking(frame: pd.DataFrame, ratio: float, kind: str, labels: Sequence[str] | None = None) -> str:
    """The labels at `ratio` on `kind`, best mean score first, each with its score and interval,
    and which of them share the first place under the book's rule."""
    mean = pooled(frame)
    rows = mean[np.isclose(mean["ratio"], ratio) & (mean["kind"] == kind)]
    if labels is not None:
        rows = rows[rows["label"].isin(labels)]
    if rows.empty:
        return "not measured"
    rows = rows.sort_values("accuracy", ascending=False, kind="stable")
    order = ", ".join(f"{row.label} {_with_interval(row, 2)}" for row in rows.itertuples())
    top = leaders(frame, ratio, kind, list(rows["label"]))
    if len(top) == 1 and len(rows) > 1:
        return f"{order}; {top[0]} is first, above every other"
    if len(top) > 1:
        return f"{order}; " + (f"all {len(top)} tie" if len(top) == len(rows) else
                               f"{_and(top)} tie for first") + " under the rule"
    return order


def _and(names: Sequence[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def chance(kind: str) -> float:
    """The miniature's accuracy of guessing uniformly among each topic's answers, averaged over a
    question kind's topics: `kind` as the chapters label it (KIND_OF_TASK's values), or "all" (the
    first task's two kinds, which its test split asks equally often)."""
    from mrpruner.mini.data import ANSWERS, KINDS, topics

    if kind == "all":
        return float(np.mean([chance(k) for k in KINDS]))
    labels = {KIND_OF_TASK[name]: (task, k) for task, by_kind in MINI_TASKS.items() for k, name in by_kind.items()}
    if kind not in labels:
        raise ValueError(f"kind must be one of {(*labels, 'all')}, got {kind!r}")
    return float(np.mean([1 / len(ANSWERS[t]) for t in topics(*labels[kind])]))


def chance_levels(kinds: Iterable[str]) -> dict[str, float]:
    """`chance` of each of `kinds` that is a question kind of the miniature's tasks (other tasks
    have no chance level here)."""
    return {kind: chance(kind) for kind in kinds if kind in KIND_OF_TASK.values()}


def difference(frame: pd.DataFrame) -> pd.DataFrame:
    """Each row of a `task_frame` minus the unpruned model's score on the same kind (of the same
    model), in points (x100), with the interval and the per-document scores shifted alike (the
    unpruned model's own sampling error is not added); the unpruned rows are left out."""
    keys = ["model", "kind"] if "model" in frame else ["kind"]
    base = frame[frame["label"] == UNPRUNED].set_index(keys)["accuracy"].rename("unpruned")
    out = frame[frame["label"] != UNPRUNED].copy()
    shift = out.join(base, on=keys)["unpruned"]
    for column in ("accuracy", "ci_low", "ci_high"):
        out[column] = 100 * (out[column] - shift)
    if "doc_scores" in out:
        out["doc_scores"] = [None if scores is None else {d: 100 * (v - s) for d, v in scores.items()}
                             for scores, s in zip(out["doc_scores"], shift)]
    out.attrs = frame.attrs
    return out


def complementarity(frame: pd.DataFrame, low: str = "base only", high: str = "grid only") -> pd.DataFrame:
    """Fig. 2b's question, per document: from the per-document scores of a `chapter_sweep` frame's
    rows `low` (the base image's tokens only) and `high` (the grid's only), per task (its kind for
    the miniature's) and, with more than one task, over all their documents ("all"), the share of
    documents that only the low-resolution run answers ("low resolution only"), only the
    high-resolution run ("high resolution only"), both, neither (answered: any credit, score > 0)
    and their number ("documents"); a frame of several models pools their documents."""
    answered: dict[str, pd.DataFrame] = {}
    part = frame[frame["label"].isin([low, high])]
    model = part["model"] if "model" in part else pd.Series("", index=part.index)
    for (_, task), group in part.groupby([model, part["task"]], sort=False):
        by_label = group.set_index("label")["doc_scores"]
        if low not in by_label or high not in by_label or by_label[low] is None or by_label[high] is None:
            continue
        scores = pd.DataFrame({"low": pd.Series(by_label[low]), "high": pd.Series(by_label[high])}).dropna() > 0
        kind = KIND_OF_TASK.get(task, group["benchmark"].iloc[0])
        answered[kind] = pd.concat([answered[kind], scores], ignore_index=True) if kind in answered else scores
    if len(answered) > 1:
        answered["all"] = pd.concat(answered.values(), ignore_index=True)
    rows = {kind: {"low resolution only": (s["low"] & ~s["high"]).mean(),
                   "high resolution only": (s["high"] & ~s["low"]).mean(), "both": (s["low"] & s["high"]).mean(),
                   "neither": (~s["low"] & ~s["high"]).mean(), "documents": len(s)} for kind, s in answered.items()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("kind")


def complementarity_findings(controls: pd.DataFrame, alone: pd.DataFrame,
                             frame: pd.DataFrame | None = None) -> list[str]:
    """Computed sentences (markdown bullets) on Fig. 2b: each control's score per kind (a
    `task_frame` of the controls; with several models their mean) with the chance level, the
    shares of `complementarity`'s table, and whether over all its questions (of all the models)
    each resolution alone answers some the other cannot; with the sweep's `frame` of several
    models, on how many of them that holds (said of the models only where it holds on every one)."""
    kinds = list(dict.fromkeys(controls["kind"]))
    chance = chance_levels(kinds)
    n_models = model_count(controls)
    controls = pooled(controls)
    of_models = f" (the {n_models} models' pooled)" if n_models > 1 else ""

    def scores(label: str) -> str:
        return ", ".join(f"{shown(controls, label, 0.0, k)} on {k}" for k in kinds)

    lines = [f"- With the base image's tokens only: {scores('base only')}; with the grid's only: {scores('grid only')}; "
             f"with all tokens: {scores(UNPRUNED)}"
             + (" (chance: " + ", ".join(f"{chance[k]:.2f} on {k}" for k in kinds if k in chance) + ")." if chance
                else ".")]
    for kind, row in alone.iterrows():
        lines.append(f"- On {kind}: {row['low resolution only']:.0%} of the {int(row['documents'])} questions are "
                     f"answered with the base tokens only and not with the grid's, {row['high resolution only']:.0%} "
                     "the other way round.")
    holds = ({name: complementary(complementarity(group)) for name, group in frame.groupby("model", sort=False)}
             if frame is not None and frame["model"].nunique() > 1 else {})
    which = [name for name, h in holds.items() if h]
    if len(alone):
        n = int(alone.iloc[-1]["documents"])  # the last row: "all" where there are several tasks
        if complementary(alone) and len(which) < len(holds):  # said of the models only where every one agrees
            lines.append(f"- Over these {n} questions{of_models} each resolution alone answers some that the other "
                         f"cannot, but model by model only on {len(which)} of the {len(holds)}: the models disagree, "
                         "so mutual complementarity (Figure 2b) holds for some training runs and not for others.")
        elif complementary(alone):
            lines.append(f"- Over these {n} questions{of_models} each resolution alone answers some that the other "
                         "cannot, as Figure 2b says: mutual complementarity holds here.")
        else:
            lines.append(f"- Over these {n} questions{of_models} one resolution answers every question the other "
                         "does: no complementarity, so cross-resolution preservation (Eq. 6-10) has nothing to recover "
                         "that one resolution lacks, and Table 3's ablation of it cannot show a benefit here.")
    if holds:
        lines.append(f"- Model by model, each resolution alone answers some questions the other cannot on "
                     f"{len(which)} of the {len(holds)} models"
                     + (f" ({', '.join(which)})." if 0 < len(which) < len(holds) else "."))
    return lines


def complementary(alone: pd.DataFrame) -> bool:
    """Whether over all the questions of `complementarity`'s table (its last row) each resolution
    alone answers at least one that the other cannot."""
    if alone.empty:
        return False
    overall = alone.iloc[-1]
    return min(overall["low resolution only"], overall["high resolution only"]) * int(overall["documents"]) >= 1


VARIANTS = ("MR-Pruner", "MR-Pruner (released)")  # the chapters' labels: the paper's equations, the released code


def findings(frame: pd.DataFrame, ratio: float, labels: Sequence[str] | None = None) -> list[str]:
    """Computed sentences (markdown bullets) on a `task_frame` (of one or more models) at `ratio`:
    per kind, `labels` (default: all at that ratio) ranked by their (mean) score with intervals and
    the chance level, and which share the first place under the book's rule; then MR-Pruner as the
    paper writes it against the released code's scoring, where both were measured."""
    chance = chance_levels(frame["kind"])
    kinds = list(dict.fromkeys(frame["kind"]))
    lines = [f"- {kind.capitalize()} questions at {ratio:.0%} pruning"
             + (f" (chance {chance[kind]:.2f})" if kind in chance else "") + f": {ranking(frame, ratio, kind, labels)}."
             for kind in kinds]
    at = frame[np.isclose(frame["ratio"], ratio)]
    if set(VARIANTS) <= set(at["label"]):
        said = [agreement(frame, VARIANTS[1], VARIANTS[0], ratio, k) for k in kinds]
        lines.append("- The released code's scoring against the paper's Eq. 3: "
                     + "; ".join(f"on {k}, {words}" for k, words in zip(kinds, said) if words) + ".")
    return lines


def ablation_findings(frame: pd.DataFrame, ratio: float) -> list[str]:
    """Computed sentences (markdown bullets) on Table 3's grid (a `task_frame` of one or more
    models): per MR-Pruner variant and kind, its rows ranked with the first place under the book's
    rule, and the full method against the row without IR, CR and IA, in whichever direction."""
    kinds = list(dict.fromkeys(frame["kind"]))
    lines = []
    for variant in VARIANTS:
        rows = [label for label in dict.fromkeys(frame["label"]) if label.startswith(variant)
                and (label == variant or label[len(variant):].startswith(" ["))]
        if not rows:
            continue
        lines += [f"- {variant}, {kind} questions: {ranking(frame, ratio, kind, rows)}." for kind in kinds]
        said = [(kind, agreement(frame, variant, f"{variant} [-IR -CR -IA]", ratio, kind)) for kind in kinds]
        if any(words for _, words in said):
            lines.append(f"- Without all three components ({variant}): "
                         + "; ".join(f"on {kind}, {words}" for kind, words in said if words) + ".")
    return lines


GOALS = {"detail": (rule.ABOVE,), "overview": (rule.ABOVE, rule.TIE)}  # the exercise's goal 1 under the rule


def exercise_goals(frame: pd.DataFrame, label: str, ratio: float, reference: str = "Random") -> pd.DataFrame:
    """The exercise's first goal, judged on a `task_frame` (of one or more models) at `ratio` by
    the book's rule: `label` above `reference` on detail questions, and not below it on overview
    questions (above or a tie). One row per goal ("detail: above", "overview: not below"): the two
    scores, the difference with its verdict, and whether the goal is met."""
    rows = []
    for kind, allowed in GOALS.items():
        found = compare(frame, label, reference, ratio, kind)
        if found is None:
            at = frame[np.isclose(frame["ratio"], ratio) & (frame["kind"] == kind)]
            raise ValueError(f"label and reference must both be measured, with per-question scores, at ratio {ratio} "
                             f"on {kind} questions; measured there: {sorted(set(at['label']))}")
        mean = pooled(frame)
        rows.append({"goal": f"{kind}: " + ("above" if allowed == (rule.ABOVE,) else "not below"),
                     label: shown(mean, label, ratio, kind), reference: shown(mean, reference, ratio, kind),
                     "difference": _difference(found),
                     "met": found.direction in allowed})
    return pd.DataFrame(rows).set_index("goal")


def evaluated(table: pd.DataFrame, label: str, method: str | None, ratio: float, model: str = "mini") -> pd.DataFrame:
    """`mrpruner.mini.evaluate`'s table (per question kind) as `task_frame` rows of `model` under
    `label`, to stand beside a sweep's (its "all" row left out: a sweep scores each task alone);
    its per-question scores keyed by the sample's position, so two methods evaluated on the same
    samples are compared question by question."""
    rows = table.drop(index="all", errors="ignore").reset_index()
    return pd.DataFrame({"model": model, "label": label, "method": method, "options": "{}", "ratio": ratio,
                         "kind": rows["kind"], "accuracy": rows["accuracy"], "ci_low": rows["ci_low"],
                         "ci_high": rows["ci_high"], "recall": rows["recall"], "kept_tokens": rows["kept_tokens"],
                         "tokens": rows["tokens"], "flops_reduction": rows["flops_reduction"], "n": rows["n"],
                         "doc_scores": rows["doc_scores"] if "doc_scores" in rows else None})


def holds_on(frame: pd.DataFrame, ratio: float, kind: str, comparisons: Sequence[tuple[str, str, str]]) -> tuple[int, int]:
    """On how many models of a `task_frame` every comparison (label, other, direction: one of
    `mrpruner.rule.DIRECTIONS`) holds by that model's own verdict, and of how many models."""
    holding = None
    for label, other, which in comparisons:
        found = compare(frame, label, other, ratio, kind)
        if found is None:
            raise ValueError(f"comparisons: {label!r} against {other!r} is not measured at ratio {ratio} on {kind}")
        own = {name for name, *_, d in found.per_model if d == which}
        holding = own if holding is None else holding & own
        models = len(found.per_model)
    if holding is None:
        raise ValueError("comparisons must name at least one (label, other, direction)")
    return len(holding), models


def selection_overlaps(model: str | Sequence[str], methods: Mapping[str, tuple[str, Mapping]], ratio: float, *,
                       kinds: Sequence[str] = ("overview", "detail"), images: int | None = None) -> pd.DataFrame:
    """For each miniature of `model`, how the selections of the pre-LLM methods of `methods` (label
    -> (method, options); the first is the reference) differ from the first's, on the images of its
    test split's questions of `kinds` (the first `images` of them, None: all): one row per (model,
    other label) with the images compared, the share on which the kept sets differ and their mean
    Jaccard overlap (`kept_sets`, `overlap`)."""
    from mrpruner.mini import RECIPES, load
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
        net, processor = load(name)
        test = [s for s in samples(TEST_SIZE, SPLITS["test"], task=RECIPES[name][0]) if s.kind in kinds][:images]
        sets = kept_sets(net, processor, [s.image for s in test], ratio, methods)
        for other in others:
            found = overlap(sets, first, other)
            rows[(name, other)] = {"images": len(found), "kept sets differ": found["differ"].mean(),
                                   "mean Jaccard": found["jaccard"].mean()}
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis(["model", "against " + first])


def protocols_side_by_side(exact: pd.DataFrame, authors: pd.DataFrame, ratio: float) -> pd.DataFrame:
    """Per label of `authors` (a `task_frame` of the grid run with `protocol: paper`) and kind, at
    `ratio`: the score with the visual tokens per image in brackets under one budget for all
    (`exact`, a `task_frame` of the same models) and under the authors' budget, and the authors'
    budget against the exact one by the book's rule (paired on each model's questions); labels
    measured one way only are left out."""
    at = authors[np.isclose(authors["ratio"], ratio)]
    at = at[at["label"].isin(set(exact.loc[np.isclose(exact["ratio"], ratio), "label"]))]  # measured both ways
    renamed = at.assign(label=at["label"] + " (authors' budget)")
    both = pd.concat([exact[np.isclose(exact["ratio"], ratio) & exact["label"].isin(set(at["label"]))], renamed],
                     ignore_index=True)
    mean = pooled(both)
    rows = []
    for label in dict.fromkeys(at["label"]):
        for kind in dict.fromkeys(at["kind"]):
            theirs = f"{label} (authors' budget)"
            kept = mean.set_index(["label", "kind"])["kept_tokens"]
            rows.append({"method": label, "kind": kind,
                         "one budget (tokens)": f"{shown(mean, label, ratio, kind)} ({kept[label, kind]:.1f})",
                         "authors' budget (tokens)": f"{shown(mean, theirs, ratio, kind)} ({kept[theirs, kind]:.1f})",
                         "authors' minus one": _difference(compare(both, theirs, label, ratio, kind))})
    return pd.DataFrame(rows).set_index(["method", "kind"])


def _difference(found: rule.Comparison | None) -> str:
    """A comparison's verdict and difference in a table cell: "above: 0.11 [0.08, 0.14]"."""
    return "not measured" if found is None else f"{found.direction}: {rule.shown(found.difference, found.low, found.high)}"


def span(values: Iterable[float], form: str = "{:.2f}") -> str:
    """The range of `values` in words for the prose: "0.75" when all print alike, else "0.75-0.76"."""
    values = list(values)
    low, high = (form.format(v) for v in (min(values), max(values)))
    return low if low == high else f"{low}-{high}"
