"""A miniature LLaVA-NeXT trained here on two CPU cores, with the real model's token layout, and
the generated task it was trained on, where every answer's region is known: what pruning does to
a model that has learned something, measured in minutes without a GPU.

    model, processor = mrpruner.models.load("mini")
    test = mrpruner.mini.samples(200, mrpruner.mini.SPLITS["test"])   # task="tiles": the second task
    mrpruner.mini.measure.evaluate(model, processor, test, "mrpruner", 0.9)   # accuracy, CIs, kept tokens, recall

This package's root knows the miniatures by name (their recipes and checkpoints) and imports only
`data`; training (`train`), the lmms-eval tasks (`task`) and measuring (`measure`) sit above it.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mrpruner.mini import data
from mrpruner.mini.data import KINDS, SPLITS, TASKS, TOPICS, Sample, samples

__all__ = ["HELD_OUT", "KINDS", "MODELS", "RECIPES", "SPLITS", "TASKS", "TOPICS", "Recipe", "Sample", "checkpoint",
           "models", "recipe", "samples", "train_command"]


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the trained weights (`mrpruner.mini.train.train`)."""

    task: str = "marks"
    decoy_grids: bool = False  # "tiles": a form question's grid tiles come from another scene (`train.decoy_grids`)
    steps: int = 3500
    batch: int = 16
    lr: float = 1e-3
    min_lr_share: float = 0.1
    warmup: int = 200
    weight_decay: float = 0.01
    dense_weight: float = 1.0
    detail_share: float = 0.5
    seed: int = 0
    train_seed: int = SPLITS["train"]
    validation_seed: int = SPLITS["validation"]
    validation_size: int = 300
    validate_every: int = 500
    save_every: int = 250
    threads: int = 1


def recipe(task: str, seed: int, train_seed: int) -> Recipe:
    """The committed recipe of `task` with the training seeds `seed` (initialisation) and
    `train_seed` (sample order): "tiles" trains with decoy grids."""
    return Recipe(task=data.check_task(task), decoy_grids=task == "tiles", seed=seed, train_seed=train_seed)


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
    task, seed, train_seed = RECIPES[name]
    flags = recipe(task, seed, train_seed)
    return (f"python -m mrpruner.mini train --out {checkpoint(name)} --seed {seed} --train-seed {train_seed}"
            + ("" if task == "marks" else f" --task {task}") + (" --decoy-grids" if flags.decoy_grids else ""))
