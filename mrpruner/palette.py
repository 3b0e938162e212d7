"""One colour and one marker per meaning, on every page of the book. Hues are for methods only:
each method, each MR-Pruner variant and Table 3 ablation, the exercise's rules and a student's own
methods. Everything else (the unpruned model, the one-resolution controls, resolutions, tasks and
benchmarks, sources of a number, verdicts) is drawn in neutral greys and told apart by marker,
line style or a direct label. `mrpruner.plotting` takes every mapping from here, and the book's
build records every legend entry it draws (tests/test_palette.py, tests/test_book.py check both).

A series label is a method's name, optionally followed by a Table 3 ablation in brackets
("MR-Pruner (released) [-IR]"): the colour says which method or variant (lighter when ablated),
the marker which ablation.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from matplotlib.colors import to_hex, to_rgb


class Style(NamedTuple):
    """How a series is drawn: its colour and its marker."""

    color: str
    marker: str


UNPRUNED = Style("#4d4d4d", "s")
UNPRUNED_NAMES = ("LLaVA-NeXT-8B", "unpruned", "all tokens")  # the paper's row, latency runs', the miniature's

METHODS = {  # the paper's methods, MR-Pruner as the paper writes it and as its authors' code computes it
    "Random": Style("#a6761d", "v"),
    "ToMe": Style("#7570b3", "P"),
    "FastV": Style("#1f78b4", "^"),
    "G-Prune": Style("#33a02c", "D"),
    "MR-Pruner": Style("#e31a1c", "o"),
    "MR-Pruner (released)": Style("#e7298a", "p"),
}
RESOLUTIONS = {"low": "#252525", "high": "#969696"}  # the base image's tokens dark, the grid's light: neutral
RESOLUTION_NAMES = {"low": "base image (low resolution)", "high": "grid (high resolution)"}
CONTROLS = {  # one resolution only (its grey), or no image: controls, not methods, so neutral
    "base only": Style(RESOLUTIONS["low"], "<"),
    "grid only": Style(RESOLUTIONS["high"], ">"),
    "blank images": Style("#bdbdbd", "x"),
}
EXERCISE = {  # the exercise's example method and the student's own
    "DivPrune": Style("#808000", "*"),
    "my rule": Style("#008b8b", "h"),
}
ABLATION_MARKERS = {"[-IR -CR -IA]": "X", "[-IR]": "$I$", "[-CR]": "$C$", "[-IA]": "$A$"}  # Table 3's rows
ABLATED_SHADE = 0.3  # an ablated variant's colour: its method's, mixed this much with white
OTHERS = ("#ff7f00", "#6a3d9a", "#b15928", "#fb9a99", "#cab2d6", "#fdbf6f")  # methods the book does not know
OTHER_MARKERS = ("H", "d", "8", "1", "2", "3")

SOURCE_MARKERS = {"reported in the paper": "o", "measured here": "D"}  # reported drawn solid, measured hollow
# A claim's verdict: neutral, told apart by marker and fill in a figure and by shade in a table.
VERDICTS = {"supported": Style("#1a1a1a", "o"), "within sampling error": Style("#9e9e9e", "o"),
            "contradicted": Style("#1a1a1a", "X"), "mixed": Style("#5e5e5e", "D")}
HOLLOW_VERDICTS = ("within sampling error",)  # drawn as open markers
VERDICT_TINTS = {"supported": ("#e6e6e6", "#1a1a1a"), "within sampling error": ("#ffffff", "#5e5e5e"),
                 "contradicted": ("#4d4d4d", "#ffffff"), "mixed": ("#bdbdbd", "#1a1a1a")}  # (background, text)
CATEGORY_GREYS = ("#1a1a1a", "#8c8c8c", "#525252", "#b8b8b8", "#303030", "#707070")  # tasks, benchmarks
CATEGORY_MARKERS = ("o", "s", "^", "D", "v", "P")
CATEGORY_DASHES = ("-", "--", "-.", ":", (0, (5, 1)), (0, (1, 1)))
NEUTRAL_SPREAD = 0.06  # a colour whose RGB channels differ by less than this reads as grey: it stands for no method
CHANCE = "#999999"  # the chance level's dotted line
PRUNED = "#d0d0d0"  # a pruned token: flat grey where the photo was
NEUTRAL = "#555555"  # legend keys and rules that stand for no series (kept/pruned edges, the zero line)
SAMPLING_BAND = "#eeeeee"  # the claims chapter's band of differences within sampling error
ANSWER_BOX = "#00e5ff"  # the outline of the region that holds a question's answer
MARKS = {ANSWER_BOX: "where the answer lies"}  # hues that mark something on a photo, not a method

_ABLATED = re.compile(r"^(?P<method>.+?) (?P<ablation>\[[^\]]+\])$")


def known(label: str) -> Style | None:
    """The style of a label the book knows (a method, variant, ablation, control, the unpruned
    model, the exercise's rules), else None."""
    if label in UNPRUNED_NAMES:
        return UNPRUNED
    for table in (METHODS, CONTROLS, EXERCISE):
        if label in table:
            return table[label]
    match = _ABLATED.match(label)
    if match and match["method"] in METHODS and match["ablation"] in ABLATION_MARKERS:
        color = to_rgb(METHODS[match["method"]].color)
        lighter = tuple(c + (1 - c) * ABLATED_SHADE for c in color)
        return Style(to_hex(lighter), ABLATION_MARKERS[match["ablation"]])
    return None


def neutral(color) -> bool:
    """Whether `color` is a grey (its channels within NEUTRAL_SPREAD): the colour of anything but a method."""
    rgb = to_rgb(color)
    return max(rgb) - min(rgb) < NEUTRAL_SPREAD


def categories(labels) -> dict[str, tuple[str, str, object]]:
    """A neutral (colour, marker, line style) for each label of something that is not a method
    (a task, a benchmark), in turn: greys told apart by marker and dash, never by hue."""
    labels = list(dict.fromkeys(labels))
    return {label: (CATEGORY_GREYS[i % len(CATEGORY_GREYS)], CATEGORY_MARKERS[i % len(CATEGORY_MARKERS)],
                    CATEGORY_DASHES[i % len(CATEGORY_DASHES)]) for i, label in enumerate(labels)}


def styles(labels) -> dict[str, Style]:
    """The style of each label, in order: `known`, then OTHERS and OTHER_MARKERS in turn for
    labels the book does not know (a student's own methods)."""
    out, unknown = {}, 0
    for label in dict.fromkeys(labels):
        style = known(label)
        if style is None:
            style = Style(OTHERS[unknown % len(OTHERS)], OTHER_MARKERS[unknown % len(OTHER_MARKERS)])
            unknown += 1
        out[label] = style
    return out
