"""One colour and one marker per meaning on every page (mrpruner.palette)."""

import itertools
import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgb
from skimage.color import rgb2lab

from mrpruner import palette, paper, plotting
from mrpruner.analysis.statements import VARIANTS
from mrpruner.analysis.sweeps import UNPRUNED
from mrpruner.mini.measure import CONTROLS

ROOT = Path(__file__).resolve().parents[1]
SERIES = [*palette.UNPRUNED_NAMES, *palette.METHODS, *palette.CONTROLS, *palette.EXERCISE,
          *(f"{variant} {row.removeprefix('MR-Pruner ')}" for variant in VARIANTS for row in paper.ABLATIONS
            if row != "MR-Pruner")]


def distance(a: str, b: str) -> float:
    """CIE76 colour difference: about 2.3 is just noticeable, over 20 clearly different hues."""
    lab = rgb2lab(np.array([[to_rgb(a), to_rgb(b)]]))[0]
    return float(np.linalg.norm(lab[0] - lab[1]))


def test_every_series_the_book_draws_has_its_own_style_and_hues_are_for_methods_only():
    styles = palette.styles(SERIES)
    assert all(palette.known(label) is not None for label in SERIES)
    meanings = {}
    for label, style in styles.items():
        meaning = "unpruned" if label in palette.UNPRUNED_NAMES else label
        meanings.setdefault(meaning, style)
        assert meanings[meaning] == style, f"{label}: one meaning, two styles"
    for (a, sa), (b, sb) in itertools.combinations(meanings.items(), 2):
        assert sa != sb, f"{a} and {b} are drawn alike"
    neutral = ["unpruned", *palette.CONTROLS]
    for label in neutral:  # not a method: a grey, told apart by its marker
        assert palette.neutral(meanings[label].color), f"{label} is drawn in a hue: hues are for methods"
    assert len({meanings[label].marker for label in neutral}) == len(neutral)
    hued = [(k, v.color) for k, v in meanings.items() if k not in neutral and "[" not in k]
    hued += [(f"other {i}", c) for i, c in enumerate(palette.OTHERS)]  # a student's own methods
    for label, colour in hued:
        assert not palette.neutral(colour), f"{label}: a method drawn in grey"
    for (a, ca), (b, cb) in itertools.combinations(hued, 2):  # whole methods: told apart by colour
        assert distance(ca, cb) > 15, f"{a} and {b} have colours too close to tell apart"
    for mark in palette.MARKS:
        assert all(distance(mark, c) > 15 for _, c in hued), f"{palette.MARKS[mark]} looks like a method"


def test_verdicts_resolutions_and_tasks_are_neutral_and_told_apart_by_shape():
    for styles in (palette.VERDICTS.values(), [palette.Style(c, "") for c in palette.RESOLUTIONS.values()]):
        assert all(palette.neutral(s.color) for s in styles)
    verdicts = [(s.marker, s.color, v in palette.HOLLOW_VERDICTS) for v, s in palette.VERDICTS.items()]
    assert len(set(verdicts)) == len(verdicts)
    assert len({tint for tint in palette.VERDICT_TINTS.values()}) == len(palette.VERDICT_TINTS)
    tasks = palette.categories(["GQA", "TextVQA", "POPE", "GQA"])
    assert list(tasks) == ["GQA", "TextVQA", "POPE"]
    assert all(palette.neutral(colour) for colour, _, _ in tasks.values())
    assert len({(marker, dash) for _, marker, dash in tasks.values()}) == 3
    assert not palette.neutral("#e31a1c") and palette.neutral("#4d4d4d")


def test_a_colour_means_one_thing_a_variant_keeps_its_colour_family_when_ablated():
    assert palette.known("MR-Pruner (released)").color != palette.known("MR-Pruner").color
    assert palette.known("base only").color == palette.RESOLUTIONS["low"]  # one resolution: its colour
    assert palette.known("grid only").color == palette.RESOLUTIONS["high"]
    for variant in VARIANTS:
        whole = palette.known(variant)
        ablated = [palette.known(f"{variant} {a}") for a in palette.ABLATION_MARKERS]
        assert len({s.marker for s in ablated}) == len(ablated) and whole.marker not in {s.marker for s in ablated}
        whole_lab = rgb2lab(np.array([[to_rgb(whole.color)]]))[0, 0]
        for style in ablated:  # the same hue, lighter
            lab = rgb2lab(np.array([[to_rgb(style.color)]]))[0, 0]
            assert lab[0] > whole_lab[0] + 10
            cosine = np.dot(lab[1:], whole_lab[1:]) / (np.linalg.norm(lab[1:]) * np.linalg.norm(whole_lab[1:]))
            assert cosine > 0.95
    used = {s.color for s in palette.styles(SERIES).values()}
    assert not used & set(palette.OTHERS)
    assert {UNPRUNED, *CONTROLS} <= set(SERIES)


def test_labels_the_book_does_not_know_take_the_other_colours_in_turn():
    styles = palette.styles(["my method", "MR-Pruner", "another", "my method"])
    assert list(styles) == ["my method", "MR-Pruner", "another"]
    assert styles["my method"] == (palette.OTHERS[0], palette.OTHER_MARKERS[0])
    assert styles["another"] == (palette.OTHERS[1], palette.OTHER_MARKERS[1])
    assert palette.known("MR-Pruner [-XY]") is None


def test_no_colour_is_written_outside_the_palette():
    """plotting and the chapters take every colour from mrpruner.palette."""
    hex_colour = re.compile(r"#[0-9a-fA-F]{6}\b")
    assert plotting.method_palette(["ToMe"]) == {"ToMe": palette.METHODS["ToMe"].color}
    for path in [ROOT / "mrpruner" / "plotting.py", *sorted((ROOT / "notebooks").glob("*.ipynb"))]:
        text = path.read_text()
        if path.suffix == ".ipynb":
            import nbformat

            text = "\n".join(c.source for c in nbformat.reads(text, 4).cells)
        assert not hex_colour.findall(text), f"{path.name} writes a colour of its own"


ABLATION_CHAPTER = ["all tokens", *(f"{v} {row.removeprefix('MR-Pruner')}".strip() for v in VARIANTS
                                      for row in paper.ABLATIONS)]  # Table 3's grid on the miniature: 11 series


@pytest.mark.parametrize("labels", [["Random", "ToMe", "FastV"], ABLATION_CHAPTER])
def test_lines_of_equal_values_are_drawn_apart(labels):
    import pandas as pd

    frame = pd.DataFrame([{"label": label, "ratio": r, "kind": kind, "accuracy": 1.0, "ci_low": 0.98, "ci_high": 1.0}
                          for label in labels for r in (0.5, 0.7, 0.9) for kind in ("overview", "detail")])
    fig = plotting.mini_lines(frame, chance={"detail": 1.0})
    assert plotting.coinciding_markers(fig) == []
    assert plotting.coinciding_markers(plotting.mini_lines(frame, dodge=0.0)) != []  # the test can fail
