"""One colour and one marker per meaning, on every page of the book: the unpruned model, each
method, each MR-Pruner variant and Table 3 ablation, each control, each resolution, each source
of a number and each verdict. `mrpruner.plotting` takes every categorical mapping from here, so a
colour never means two things on two pages (tests/test_palette.py checks it).

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
RESOLUTIONS = {"low": "#1b9e77", "high": "#d95f02"}  # the base image's tokens, the grid's
CONTROLS = {  # one resolution only (its colour), or no image
    "base only": Style(RESOLUTIONS["low"], "<"),
    "grid only": Style(RESOLUTIONS["high"], ">"),
    "blank images": Style("#17becf", "x"),
}
EXERCISE = {  # the exercise's example method and the student's own
    "DivPrune": Style("#808000", "*"),
    "my rule": Style("#000000", "h"),
}
ABLATION_MARKERS = {"[-IR -CR -IA]": "X", "[-IR]": "$I$", "[-CR]": "$C$", "[-IA]": "$A$"}  # Table 3's rows
ABLATED_SHADE = 0.45  # an ablated variant's colour: its method's, mixed this much with white
OTHERS = ("#8c564b", "#bcbd22", "#9467bd", "#c49c94", "#7f7f7f", "#aec7e8")  # labels the book does not know
OTHER_MARKERS = ("H", "d", "8", "1", "2", "3")

SOURCE_MARKERS = {"reported in the paper": "o", "measured here": "D"}  # reported drawn solid, measured hollow
VERDICTS = {"supported": "#1a9850", "within sampling error": "#707070", "contradicted": "#d73027", "mixed": "#8a6d00"}
VERDICT_TINTS = {"supported": "#dcefdc", "within sampling error": "#ececec", "contradicted": "#f6d5d1",
                 "mixed": "#f3ecd2"}
CHANCE = "#999999"  # the chance level's dotted line
NEUTRAL = "#555555"  # legend keys and rules that stand for no series (kept/pruned edges, the zero line)
SAMPLING_BAND = "#eeeeee"  # the claims chapter's band of differences within sampling error
DIVERGING = "RdBu_r"  # colour map of differences: blue below 0, white at 0, red above
ANSWER_BOX = "#00e5ff"  # the outline of the region that holds a question's answer

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
