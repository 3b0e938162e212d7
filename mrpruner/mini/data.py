"""The miniatures' two tasks: seeded visual questions on real photos (scikit-image's) with a big
pasted shape and a small patterned mark that only the high-resolution grid resolves. Every sample
knows where its answer lies (`region`).

- "marks" (the default, the book's first task): overview questions (which photo, the big shape's
  colour) that the low-resolution base image answers, and the small mark's pattern (detail).
- "tiles": each resolution answers what the other cannot. The big shape is drawn across the
  borders of the grid's four tiles, and each tile is encoded on its own, as in every anyres model:
  only the base image's encoder sees the shape whole, so the overview question asks its form; the
  detail question is the small mark's pattern, as in "marks".

Why the base image cannot answer a detail question: detail questions come on 224x224 images, whose
grid (the 224x224 pinpoint) keeps every pixel while the base image halves both sides. The mark's
four patterns (rows, columns, checks of a 2-pixel period, or plain) have the same mean, and a 2x
antialiased resize maps a 2-pixel period to that mean: the base image shows the same grey square for
all four answers (up to a few grey levels where the pattern starts, softened by a taper), the grid
shows the pattern.

Sample i of a stream is drawn from `numpy.random.default_rng([seed, i])` alone, so any seed gives a
fresh set, a sample never depends on how many were drawn before it, and the train, validation and
test streams (`SPLITS`) share no draws.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

# The answer's word for each scikit-image photo.
PHOTOS = {"astronaut": "astronaut", "coffee": "coffee", "cat": "chelsea", "rocket": "rocket",
          "galaxy": "hubble_deep_field", "cells": "immunohistochemistry"}
COLOURS = {"red": (225, 25, 25), "green": (30, 170, 45), "blue": (35, 75, 235), "yellow": (245, 225, 35),
           "purple": (150, 45, 205), "orange": (250, 135, 15)}
SHAPES = ("square", "circle", "triangle")
PLACES = ("top", "bottom", "left", "right")  # the edges the big shape sits by
PATTERNS = ("rows", "columns", "checks", "plain")  # the small mark's interior (`draw_mark`)
LOW, HIGH = 28, 228  # the patterns' two grey levels; "plain" is their mean, (LOW + HIGH) / 2
TAPER = 2  # the pattern's contrast ramps up over its outer TAPER pixels
# topic: (kind, question). Overview: the 8x8 base image answers it; detail: only the grid does.
TOPICS = {
    "photo": ("overview", "which photo is this ?"),
    "big_colour": ("overview", "what colour is the big shape ?"),
    "small_pattern": ("detail", "what pattern is the small mark ?"),
    "big_form": ("overview", "what form is the big shape ?"),
}
ANSWERS = {"photo": tuple(PHOTOS), "big_colour": tuple(COLOURS), "small_pattern": PATTERNS, "big_form": SHAPES}
KINDS = ("overview", "detail")
# Each task's topics; the first task is the default everywhere.
TASKS = {"marks": ("photo", "big_colour", "small_pattern"), "tiles": ("big_form", "small_pattern")}
# Disjoint streams: the seed each split's samples are drawn from.
SPLITS = {"train": 1, "validation": 2, "test": 3}

# The miniature's image geometry (mrpruner.mini.model): 112-pixel tiles of 14-pixel patches and
# LLaVA-NeXT-8B's pinpoints scaled by 1/3.
TILE, PATCH = 112, 14
PINPOINTS = [[112, 224], [224, 112], [224, 224], [336, 112], [112, 336]]
DETAIL_SIZE = 224  # detail questions' images are square at the largest pinpoint's size (see above)


class Shape(NamedTuple):
    """A pasted shape: its kind, colour name and box (x0, y0, x1, y1) in image pixels."""

    shape: str
    colour: str
    box: tuple[int, int, int, int]


class Mark(NamedTuple):
    """The small mark: its pattern (a PATTERNS name) and box (x0, y0, x1, y1) in image pixels,
    a 2-pixel white rim included."""

    pattern: str
    box: tuple[int, int, int, int]


class Sample(NamedTuple):
    """One question: a PIL `image`, the `question`, its one-word `answer`, `kind` ("overview" or
    "detail"), `region` (the answer's box x0, y0, x1, y1 in image pixels), `topic` (a TOPICS key)
    and the scene's `photo`, `big` shape and `small` mark."""

    image: object
    question: str
    answer: str
    kind: str
    region: tuple[int, int, int, int]
    topic: str
    photo: str
    big: Shape
    small: Mark


def samples(n: int, seed: int, *, detail_share: float = 0.5, task: str = "marks") -> list[Sample]:
    """`n` samples of the stream `seed` of `task` (a TASKS name): a detail question with probability
    `detail_share`, else an overview one; within a kind the task's topics are equally likely."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not 0.0 <= detail_share <= 1.0:
        raise ValueError(f"detail_share must be in [0, 1], got {detail_share!r}")
    check_task(task)
    return [sample(seed, i, detail_share=detail_share, task=task) for i in range(n)]


def check_task(task: str) -> str:
    """`task` if it names one of TASKS, else a ValueError naming them."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {tuple(TASKS)}, got {task!r}")
    return task


def topics(task: str, kind: str) -> list[str]:
    """The topics of `task` whose questions are of `kind`."""
    return [t for t in TASKS[check_task(task)] if TOPICS[t][0] == kind]


def sample(seed: int, index: int, *, detail_share: float = 0.5, task: str = "marks") -> Sample:
    """Sample `index` of the stream `seed` of `task` (see `samples`); the tasks draw from
    separate generators, so a "tiles" sample shares no draws with the "marks" one of the same index."""
    from PIL import Image

    rng = np.random.default_rng([seed, index] if check_task(task) == "marks" else [seed, index, 1])
    kind = "detail" if rng.random() < detail_share else "overview"
    topic = str(rng.choice(topics(task, kind)))
    if task == "marks":
        height, width = (DETAIL_SIZE, DETAIL_SIZE) if kind == "detail" else _image_size(rng)
    else:  # "tiles": a 2x2 grid of whole tiles, the big shape across their borders
        height = width = DETAIL_SIZE
    photo = str(rng.choice(list(PHOTOS)))
    canvas = Image.fromarray(_background(rng, photo, height, width))
    big = _big_shape(rng, height, width) if task == "marks" else _crossing_shape(rng, height, width)
    small = _small_mark(rng, height, width, big.box)
    draw_shape(canvas, big)
    draw_mark(canvas, small)
    answer, region = {
        "photo": (photo, (0, 0, width, height)),
        "big_colour": (big.colour, big.box),
        "big_form": (big.shape, big.box),
        "small_pattern": (small.pattern, small.box),
    }[topic]
    return Sample(canvas, TOPICS[topic][1], answer, kind, region, topic, photo, big, small)


def draw_shape(image, shape: Shape, *, outline: int = 1, fill: tuple[int, int, int] | None = None) -> None:
    """Paint `shape` on a PIL image in place: filled with its colour (or `fill`), a white outline."""
    from PIL import ImageDraw

    colour = fill if fill is not None else COLOURS[shape.colour]
    x0, y0, x1, y1 = shape.box
    draw = ImageDraw.Draw(image)
    edge = (255, 255, 255) if fill is None else fill
    box = (x0, y0, x1 - 1, y1 - 1)
    if shape.shape == "square":
        draw.rectangle(box, fill=colour, outline=edge, width=outline)
    elif shape.shape == "circle":
        draw.ellipse(box, fill=colour, outline=edge, width=outline)
    else:
        draw.polygon([((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=colour, outline=edge, width=outline)


def draw_mark(image, mark: Mark, *, fill: tuple[int, int, int] | None = None) -> None:
    """Paint `mark` on a PIL image in place: a 2-pixel white rim around its pattern (or all `fill`).
    The pattern's phase starts at the box's corner, which `_small_mark` puts on even pixels."""
    from PIL import Image

    x0, y0, x1, y1 = mark.box
    if fill is not None:
        image.paste(fill, (x0, y0, x1, y1))
        return
    y, x = np.mgrid[0:y1 - y0 - 4, 0:x1 - x0 - 4]
    sign = {"rows": y % 2, "columns": x % 2, "checks": (x + y) % 2, "plain": np.full(y.shape, 0.5)}[mark.pattern] * 2 - 1
    edge = np.minimum(np.minimum(x, x[:, ::-1]), np.minimum(y, y[::-1]))  # pixels from the pattern's border
    taper = np.minimum(1.0, (edge + 1) / (TAPER + 1))  # soft at the border, which a resize would otherwise leak
    inner = np.round((LOW + HIGH) / 2 + sign * taper * (HIGH - LOW) / 2).astype(np.uint8)
    image.paste((255, 255, 255), (x0, y0, x1, y1))
    image.paste(Image.fromarray(np.repeat(inner[..., None], 3, axis=2)), (x0 + 2, y0 + 2))


def grid_patch_pixels(height: int, width: int) -> float:
    """How many image pixels one high-resolution grid patch spans: the processor scales the image
    to fit its best pinpoint (transformers' `select_best_resolution`) and cuts 14-pixel patches."""
    from transformers.image_processing_utils import select_best_resolution

    best_h, best_w = select_best_resolution((height, width), PINPOINTS)
    return PATCH / min(best_h / height, best_w / width)


def _image_size(rng: np.random.Generator) -> tuple[int, int]:
    """(height, width): the long side 200-336 pixels, aspect ratio (long/short) 1 to 2.5."""
    long = int(rng.integers(200, 337))
    short = int(round(long / rng.uniform(1.0, 2.5)))
    return (long, short) if rng.random() < 0.5 else (short, long)


@functools.cache
def _photo(name: str) -> np.ndarray:
    from skimage import data

    return getattr(data, PHOTOS[name])()


def _background(rng: np.random.Generator, photo: str, height: int, width: int) -> np.ndarray:
    """A random crop (40-100% of the photo's area, the target's aspect), maybe mirrored, with
    per-channel gain and brightness jitter, resized to (height, width)."""
    from PIL import Image

    array = _photo(photo)
    ph, pw = array.shape[:2]
    aspect = width / height
    area = rng.uniform(0.4, 1.0) * ph * pw
    ch = min(ph, int(round(math.sqrt(area / aspect))))
    cw = min(pw, int(round(ch * aspect)))
    ch = min(ph, int(round(cw / aspect)))
    y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = Image.fromarray(array[y:y + ch, x:x + cw]).resize((width, height), Image.BILINEAR)
    out = np.asarray(crop, dtype=np.float32)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    out = out * rng.uniform(0.85, 1.15, size=3) + rng.uniform(-20, 20)
    return np.clip(out, 0, 255).astype(np.uint8)


def _big_shape(rng: np.random.Generator, height: int, width: int) -> Shape:
    """A big shape (side 30-40% of the short side) by one edge: centred along that edge's
    direction within +-15% and inside the outer quarter across it."""
    side = int(round(rng.uniform(0.30, 0.40) * min(height, width)))
    place = str(rng.choice(PLACES))
    along = rng.uniform(-0.15, 0.15)
    margin = int(rng.integers(2, max(3, int(0.05 * min(height, width)))))
    if place in ("top", "bottom"):
        cx = int(round(width / 2 + along * width))
        x0 = min(max(cx - side // 2, 0), width - side)
        y0 = margin if place == "top" else height - side - margin
    else:
        cy = int(round(height / 2 + along * height))
        y0 = min(max(cy - side // 2, 0), height - side)
        x0 = margin if place == "left" else width - side - margin
    return Shape(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), (x0, y0, x0 + side, y0 + side))


def _crossing_shape(rng: np.random.Generator, height: int, width: int) -> Shape:
    """A big shape (side 55-75% of the short side) centred within 12 pixels of the image's centre,
    where the 224x224 grid's four tiles meet: every tile holds a part of it, none the whole."""
    side = int(round(rng.uniform(0.55, 0.75) * min(height, width)))
    cx, cy = (int(round(size / 2 + rng.uniform(-12, 12))) for size in (width, height))
    x0, y0 = cx - side // 2, cy - side // 2
    return Shape(str(rng.choice(SHAPES)), str(rng.choice(list(COLOURS))), (x0, y0, x0 + side, y0 + side))


def _small_mark(rng: np.random.Generator, height: int, width: int, avoid: tuple[int, int, int, int]) -> Mark:
    """A small square mark, 1.0-1.3 grid patches wide (14-18 pixels at 224x224: a quarter to 40%
    of a base patch's area), its side and corner on even pixels, wholly inside the image and at
    least 4 pixels clear of the big shape."""
    side = 2 * max(4, int(round(rng.uniform(1.0, 1.3) * grid_patch_pixels(height, width) / 2)))
    ax0, ay0, ax1, ay1 = avoid
    for _ in range(1000):
        x0, y0 = 2 * int(rng.integers(1, (width - side) // 2)), 2 * int(rng.integers(1, (height - side) // 2))
        if x0 + side + 4 <= ax0 or x0 >= ax1 + 4 or y0 + side + 4 <= ay0 or y0 >= ay1 + 4:
            break
    else:  # pragma: no cover - the big shape never fills the image
        raise RuntimeError("no room for the small mark")
    return Mark(str(rng.choice(PATTERNS)), (x0, y0, x0 + side, y0 + side))
