"""A miniature LLaVA-NeXT trained here on two CPU cores, with the real model's token layout, and
the generated task it was trained on, where every answer's region is known: what pruning does to
a model that has learned something, measured in minutes without a GPU.

    model, processor = mrpruner.mini.load()
    test = mrpruner.mini.samples(200, mrpruner.mini.SPLITS["test"])   # task="tiles": the second task
    mrpruner.mini.evaluate(model, processor, test, "mrpruner", 0.9)   # accuracy, CIs, kept tokens, recall
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from mrpruner.mini import data
from mrpruner.mini.data import KINDS, SPLITS, TASKS, TOPICS, Sample, samples
from mrpruner.mini.measure import CONTROLS, blank, evaluate, predict, premise, question_only

__all__ = ["CONTROLS", "HELD_OUT", "KINDS", "MODELS", "RECIPES", "SPLITS", "TASKS", "TOPICS", "Sample", "blank", "checkpoint",
           "evaluate", "load", "models", "predict", "premise", "question_only", "samples", "train_command"]


# The committed miniatures: name -> (task, initialisation seed `--seed`, sample-order seed
# `--train-seed`). A task's models share the committed recipe and differ only in those seeds.
RECIPES = {"mini": ("marks", 0, 1), "mini-seed1": ("marks", 1, 101), "mini-seed2": ("marks", 2, 102),
           "mini-tiles": ("tiles", 0, 1), "mini-tiles-seed2": ("tiles", 2, 102), "mini-heldout": ("marks", 3, 103)}
# Trained after the book's findings were worded and measured on the others, and run by no chapter:
# a test checks those findings on it, a model nothing was tuned on (issue 19, item 5).
HELD_OUT = ("mini-heldout",)


def models(task: str = "marks") -> tuple[str, ...]:
    """The names of the committed miniatures of `task` (a `data.TASKS` name) that the book runs
    (not HELD_OUT), the first its default."""
    data.check_task(task)
    return tuple(name for name, recipe in RECIPES.items() if recipe[0] == task and name not in HELD_OUT)


MODELS = models("marks")  # the first task's miniatures; the first is the book's default model


def checkpoint(name: str = MODELS[0]) -> Path:
    """The committed checkpoint folder of miniature `name` (safetensors, config, processor,
    training log, metrics): mrpruner/data/mini for the first, mrpruner/data/mini/<name without
    "mini-"> for the others."""
    if name not in RECIPES:
        raise ValueError(f"name must be one of the committed miniatures {tuple(RECIPES)}, got {name!r}")
    root = Path(str(resources.files("mrpruner").joinpath("data/mini")))
    return root if name == MODELS[0] else root / name.removeprefix("mini-")


def train_command(name: str) -> str:
    """The command that trains miniature `name` into its committed folder."""
    from mrpruner.mini.train import recipe

    task, seed, train_seed = RECIPES[name]
    flags = recipe(task, seed, train_seed)
    return (f"python -m mrpruner.mini train --out {checkpoint(name)} --seed {seed} --train-seed {train_seed}"
            + ("" if task == "marks" else f" --task {task}") + (" --decoy-grids" if flags.decoy_grids else ""))


def load(name: str | Path | None = None):
    """(model, processor): a trained miniature (float32, eval mode, CPU): one of RECIPES by name
    (None: the first), or a checkpoint folder."""
    from transformers import LlavaNextForConditionalGeneration, LlavaNextProcessor

    if name is None or (isinstance(name, str) and name in RECIPES):
        name = MODELS[0] if name is None else name
        folder, command = checkpoint(name), train_command(name)
    elif Path(name).is_dir():
        folder, command = Path(name), "python -m mrpruner.mini train --out DIR"
    else:
        raise ValueError(f"name must be one of the committed miniatures {tuple(RECIPES)} or a checkpoint folder, "
                         f"got {name!r}")
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(f"no miniature checkpoint: {folder / 'model.safetensors'} is missing; "
                                f"train it with: {command}")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no "Loading weights" bar in notebooks
    try:
        model = LlavaNextForConditionalGeneration.from_pretrained(folder).eval()
    finally:
        hf_logging.enable_progress_bar()
    model.generation_config.pad_token_id = model.config.text_config.pad_token_id
    return model, LlavaNextProcessor.from_pretrained(folder)
