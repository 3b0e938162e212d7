"""What the book's chapters compute: a photo's low- and high-resolution tokens as LLaVA-NeXT
packs them, their informativeness (Fig. 2a), token grids for pictures (Figs. 5, 6), how far the
paper's and the released code's selections differ, the chapters' experiment sweeps, and the
visual tokens each method hands the language model (per budget protocol, computed and measured)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd
import torch

from mrpruner import models
from mrpruner.budget import keep_count, plan
from mrpruner.core import mr_prune
from mrpruner.graph import informativeness
from mrpruner.llava_next import Layout, inner_model, packed_layout
from mrpruner.methods import resolution_only
from mrpruner.models import MINI, TINY



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
    miniature trained here), "tiny" (random, seed 0, float32), a folder or a hub id of a transformers
    LLaVA-NeXT (float16 on CUDA, float32 on the CPU)."""
    models.check_model(model)
    if model == TINY:
        from mrpruner.testing import tiny_llava_next

        net, processor = tiny_llava_next()
        return net.to(device), processor
    if model == MINI:
        from mrpruner.mini import load

        net, processor = load()
        return net.to(device), processor
    from transformers import LlavaNextForConditionalGeneration, LlavaNextProcessor

    dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    net = LlavaNextForConditionalGeneration.from_pretrained(model, dtype=dtype).to(device).eval()
    return net, LlavaNextProcessor.from_pretrained(model)


def photo_tokens(model, processor, image) -> PhotoTokens:
    """The low- and high-resolution tokens of one PIL photo under a LLaVA-NeXT model (its vision
    tower, anyres tiling and projector, as `get_image_features` packs them), in float32."""
    inputs = processor.image_processor(image, return_tensors="pt")
    with torch.no_grad():
        features = inner_model(model).get_image_features(inputs["pixel_values"].to(model.device, model.dtype),
                                            inputs["image_sizes"]).pooler_output[0].float()
    layout = packed_layout(inputs["image_sizes"][0], model.config)
    if features.shape[0] != layout.total:
        raise ValueError(f"the photo packs into {features.shape[0]} tokens, its layout {layout} gives {layout.total}")
    low_at, high_at, _ = layout.parts(features.device)
    return PhotoTokens(features[low_at], features[high_at], layout)


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
    """Ask `question` about one PIL photo through the processor's chat template; greedy decoding."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
    inputs = processor(images=image, text=prompt, return_tensors="pt").to(model.device)
    inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
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


def tiny_assets(folder: str | Path) -> tuple[Path, Path]:
    """The tiny model (with its processor) saved as a checkpoint folder, and the tiny offline
    lmms-eval task, under `folder` (written once, whole: temporary folder, then os.replace).
    Returns (model folder, task folder) for a sweep's model and include_path."""
    from transformers.utils import logging as hf_logging

    from mrpruner.benchmarks import write_tiny_task
    from mrpruner.testing import tiny_llava_next

    folder = Path(folder).resolve()
    model_dir, task_dir = folder / "tiny-llava-next-seed0", folder / "tasks"
    if not model_dir.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=folder, prefix=".model-"))
        hf_logging.disable_progress_bar()  # no "Writing model shards" bar in the book
        try:
            net, processor = tiny_llava_next()
            net.save_pretrained(partial)
            processor.save_pretrained(partial)
            os.replace(partial, model_dir)
        finally:
            hf_logging.enable_progress_bar()
            shutil.rmtree(partial, ignore_errors=True)
    write_tiny_task(task_dir)
    return model_dir, task_dir


def sweep_results(out: str | Path, *, name: str, model: str, device: str, methods: Sequence[Mapping[str, Any]],
                  tasks: Sequence[str], limit: int | None, recompute: bool,
                  protocol: str = "exact") -> pd.DataFrame | None:
    """A chapter's measurements: with recompute, run the missing cells of the grid (models x
    `methods` (sweep entries: label, method, options, ratios) x `tasks`, `limit` samples each,
    under the budget `protocol` of mrpruner.patch)
    into the results folder `out` with `mrpruner.experiments.run_sweep`; then load `out` with
    `mrpruner.results.load_results`. None when nothing was run and `out` holds no results.

    model "tiny" is the random tiny LLaVA-NeXT (saved next to `out`); the task "tiny" is the
    offline task on scikit-image photos. float32 on the CPU, float16 on CUDA. A failed cell is
    an error (its lmms-eval log is named)."""
    from mrpruner import experiments, results

    out = Path(out)
    if recompute:
        config: dict[str, Any] = {"name": name, "model": model, "methods": [dict(m) for m in methods],
                                  "tasks": list(tasks), "limit": limit, "device": device, "protocol": protocol,
                                  "dtype": "float32" if device == "cpu" else "float16"}
        if model == TINY or "tiny" in tasks:
            model_dir, task_dir = tiny_assets(out.parent / "tiny-assets")
            config["include_path"] = str(task_dir)
            if model == TINY:  # relative to the working directory: the grid does not depend on where the clone is
                config["model"] = os.path.relpath(model_dir)
        report = experiments.run_sweep(experiments.grid_from_config(config), out, progress=False)
        if report.failed:
            raise RuntimeError(f"{len(report.failed)} sweep cell(s) failed; their lmms-eval logs are in "
                               f"{out / 'logs'}: {report.failed}")
    if not (out / results.GRID_FILE).is_file():
        return None
    return results.load_results(out)


def single_resolution_answers(model, processor, questions: pd.DataFrame, score: Callable[[int, str], float], *,
                              max_new_tokens: int = 8) -> pd.DataFrame:
    """Fig. 2b's data: each question (columns image: a PIL photo, question; answer, if present, is
    passed on) answered with both resolutions, with the low-resolution tokens only and with the
    high-resolution ones only; `score_*` is `score(i, text)` of question i's answer (the task's
    own score: `mrpruner.benchmarks.TaskQuestions.score`)."""
    rows = []
    for i, row in enumerate(questions.itertuples()):
        out = {"question": row.question, "answer": getattr(row, "answer", None)}
        for condition in ("both", "low", "high"):
            with contextlib.nullcontext() if condition == "both" else one_resolution(model, condition):
                text = answer(model, processor, row.image, row.question, max_new_tokens=max_new_tokens).text
            out |= {condition: text, f"score_{condition}": score(i, text)}
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


def lost_area(low: np.ndarray, high: np.ndarray, samples: int = 480) -> float:
    """Fraction of the photo that no kept token covers at either resolution (both grids are
    stretched over the whole photo; `samples` x `samples` points are tested)."""
    points = (np.arange(samples) + 0.5) / samples

    def covered(grid: np.ndarray) -> np.ndarray:
        rows, cols = (np.floor(points * n).astype(int) for n in grid.shape)
        return grid[np.ix_(rows, cols)]

    return float(1 - (covered(low) | covered(high)).mean())


class Measurements(NamedTuple):
    """A chapter's sweep (`sweep`, None when nothing ran or was found) and all measured numbers of
    the paper's benchmarks, from that sweep and the saved folders, in `paper_measurements` form."""

    sweep: pd.DataFrame | None
    paper: pd.DataFrame
    frames: list[pd.DataFrame]  # every loaded results folder (the sweep's first), as load_results gives them


def measurements(results_dir: str | Path, saved_results: Iterable[str | Path] = (), **sweep) -> Measurements:
    """`sweep_results(results_dir, **sweep)` plus every folder of `saved_results` that holds
    results (others are skipped: nobody has measured them yet), for `mrpruner.paper.compare`."""
    from mrpruner.results import GRID_FILE, load_results

    own = sweep_results(results_dir, **sweep)
    saved = [load_results(folder) for folder in saved_results if Path(folder, GRID_FILE).is_file()]
    return Measurements(own, paper_measurements([own, *saved]), [f for f in (own, *saved) if f is not None])


def paper_measurements(frames: Iterable[pd.DataFrame | None]) -> pd.DataFrame:
    """Measured numbers to put beside the paper's (`mrpruner.paper.compare`): the cells of the
    paper's eight benchmarks from `mrpruner.results.load_results` frames, in the long form of
    `mrpruner.results.paper_frame` (throughput pooled over those benchmarks only). Cells of other
    tasks (the offline tiny task) are left out: they have no counterpart in the paper."""
    from mrpruner.benchmarks import BENCHMARKS
    from mrpruner.results import paper_frame

    tasks = {b.task for b in BENCHMARKS.values()}
    parts = [paper_frame(frame[frame["task"].isin(tasks)]) for frame in frames if frame is not None]
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
    beside each benchmark's score."""
    weights = frame["samples"] * frame["image_kept_tokens"]
    keys = ["label", "protocol", "ratio"]
    received = (weights.groupby([frame[k] for k in keys]).sum() / frame.groupby(keys)["samples"].sum())
    scores = frame.pivot_table(index=keys, columns="benchmark", values="score", aggfunc="first")
    return pd.concat([received.rename("visual tokens per image"), scores], axis=1)
