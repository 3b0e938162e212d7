"""A miniature LLaVA-NeXT trained here on two CPU cores, with the real model's token layout, and
the generated task it was trained on, where every answer's region is known: what pruning does to
a model that has learned something, measured in minutes without a GPU.

    model, processor = mrpruner.mini.load()
    test = mrpruner.mini.samples(200, mrpruner.mini.SPLITS["test"])
    mrpruner.mini.evaluate(model, processor, test, "mrpruner", 0.9)   # accuracy, CIs, kept tokens, recall
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mrpruner.mini.data import KINDS, SPLITS, TOPICS, Sample, samples
from mrpruner.mini.measure import CONTROLS, blank, evaluate, predict, premise, question_only

__all__ = ["CONTROLS", "KINDS", "SPLITS", "TOPICS", "Sample", "blank", "checkpoint", "evaluate", "load",
           "predict", "premise", "question_only", "samples"]


def checkpoint() -> Path:
    """The committed checkpoint folder (safetensors, config, processor, training log, card)."""
    return Path(str(resources.files("mrpruner").joinpath("data/mini")))


def load(path: str | Path | None = None):
    """(model, processor): the trained miniature (float32, eval mode, CPU) from `path` or the
    committed checkpoint."""
    from transformers import LlavaNextForConditionalGeneration, LlavaNextProcessor

    folder = Path(path) if path is not None else checkpoint()
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"no miniature checkpoint in {folder} (model.safetensors missing); "
                                "train one with: python -m mrpruner.mini train --out DIR")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar in notebooks
    try:
        model = LlavaNextForConditionalGeneration.from_pretrained(folder).eval()
    finally:
        hf_logging.enable_progress_bar()
    model.generation_config.pad_token_id = model.config.text_config.pad_token_id
    return model, LlavaNextProcessor.from_pretrained(folder)
