"""Figures and tables of the book's chapters (seaborn/matplotlib, pandas Styler): token grids over
photos, informativeness distributions (Fig. 2a), scores against pruning ratio (Table 1) and FLOPs
reduction (Fig. 4), differences from a reference as dot and slope plots (Tables 2, 3), captioned
tables. Every function shows what it is given; nothing here computes a result.

Every figure is drawn for the book's page: PAGE_WIDTH wide at DPI, so that it is shown at its own
size and its smallest text is at least MIN_TEXT_PX high (`smallest_text_px`), with no two labels
overlapping (`overlapping_text`)."""

from __future__ import annotations

import functools
import html
import itertools
import json
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes
from matplotlib.container import ErrorbarContainer
from matplotlib.collections import PathCollection
from matplotlib.colors import to_hex, to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.text import Text
from matplotlib.ticker import PercentFormatter

from mrpruner import palette

DPI = 96  # pixels per inch of the book's PNG figures: one figure pixel is one CSS pixel of the page
PAGE_PX = 672  # the book's text column is this wide (CSS px) or wider in a 1280-px browser window (tests/test_book.py)
PAD = 0.1  # inches of margin a tight bounding box adds on each side when a figure is saved (savefig.pad_inches)
PAGE_WIDTH = PAGE_PX / DPI - 2 * PAD  # inches: a figure this wide is saved PAGE_PX wide, shown at its own size
MIN_TEXT_PX = 10  # the smallest text a figure may show on the page, in CSS px
TITLE_CHARS = 90  # a figure's title (the source of its numbers) is wrapped to lines this long

LEGENDS_ENV = "MRPRUNER_LEGENDS"  # a file each figure's legend entries are appended to (set by mrpruner.book)


def method_palette(labels) -> dict[str, str]:
    """The colour of each series label (`mrpruner.palette.styles`: one colour per meaning)."""
    return {label: style.color for label, style in palette.styles(labels).items()}


def method_markers(labels) -> dict[str, str]:
    """The marker of each series label (`mrpruner.palette.styles`)."""
    return {label: style.marker for label, style in palette.styles(labels).items()}


def setup() -> None:
    """The book's figure style: seaborn whitegrid with the paper context's type sizes (tick labels
    8.8 pt: 11.7 px at DPI), figures at DPI."""
    sns.set_theme(style="whitegrid", context="paper", rc={"axes.titlesize": 10.5, "figure.titlesize": 10.5})
    plt.rcParams.update({"figure.dpi": DPI, "savefig.dpi": DPI, "savefig.pad_inches": PAD, "figure.autolayout": False})


# --- checks of a drawn figure -------------------------------------------------------------------

def _drawn_texts(fig: Figure) -> list[Text]:
    """The figure's visible, non-empty texts as drawn (tick labels outside an axis' view are not
    drawn, so they are left out)."""
    fig.canvas.draw()
    hidden = set()
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            low, high = sorted(axis.get_view_interval())
            span = 1e-9 * max(abs(low), abs(high), 1.0)
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                if not low - span <= tick.get_loc() <= high + span:
                    hidden.update((tick.label1, tick.label2))
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and t not in hidden]


def overlapping_text(fig: Figure, tolerance: float = 1.0) -> list[tuple[str, str]]:
    """Pairs of texts of the drawn figure (tick and axis labels, titles, legends, annotations)
    whose boxes overlap by more than `tolerance` pixels both ways; [] for a clean figure."""
    renderer = fig.canvas.get_renderer()
    texts = _drawn_texts(fig)
    boxes = [t.get_window_extent(renderer) for t in texts]
    return [(texts[i].get_text(), texts[j].get_text()) for i, j in itertools.combinations(range(len(texts)), 2)
            if min(boxes[i].x1, boxes[j].x1) - max(boxes[i].x0, boxes[j].x0) > tolerance
            and min(boxes[i].y1, boxes[j].y1) - max(boxes[i].y0, boxes[j].y0) > tolerance]


def coinciding_markers(fig: Figure, tolerance: float = 3.0) -> list[tuple[str, str]]:
    """Pairs of series (lines with markers, by label) of one panel that draw a marker within
    `tolerance` pixels of each other's: points a reader cannot tell apart; [] for a clean figure."""
    fig.canvas.draw()
    pairs = set()
    for ax in fig.axes:
        lines = [(line.get_label(), line) for line in ax.get_lines() if not line.get_label().startswith("_")]
        lines += [(c.get_label(), c.lines[0]) for c in ax.containers if isinstance(c, ErrorbarContainer)]
        series = [(label, ax.transData.transform(np.column_stack(line.get_data()).astype(float)))
                  for label, line in lines if line.get_marker() not in (None, "", "None", " ") and len(line.get_xdata())]
        for (a, pa), (b, pb) in itertools.combinations(series, 2):
            if a != b and (np.linalg.norm(pa[:, None, :] - pb[None, :, :], axis=-1) < tolerance).any():
                pairs.add((a, b))
    return sorted(pairs)


def smallest_text_px(fig: Figure, page_px: float = PAGE_PX) -> float:
    """The height (font size, CSS px) of the figure's smallest text as a page `page_px` wide shows
    it: saved at the figure's dpi with a tight bounding box, and scaled down if wider than the page."""
    texts = _drawn_texts(fig)
    width_px = (fig.get_tightbbox(fig.canvas.get_renderer()).width + 2 * PAD) * fig.dpi
    scale = min(1.0, page_px / width_px)
    return min(t.get_fontsize() for t in texts) * fig.dpi / 72 * scale


def _colour(handle) -> str | None:
    """The colour a reader matches a legend handle by: a marker's fill (its edge when hollow), a
    line's colour, a patch's face (its edge when unfilled)."""
    if isinstance(handle, Line2D):
        face = handle.get_markerfacecolor() if handle.get_marker() not in (None, "", "None", " ") else "none"
        if isinstance(face, str) and face.lower() == "none" or to_rgba(face) == to_rgba("white"):
            return to_hex(handle.get_markeredgecolor() if handle.get_marker() not in (None, "", "None", " ")
                          else handle.get_color())
        return to_hex(face)
    if isinstance(handle, Patch):
        face = handle.get_facecolor()
        return to_hex(handle.get_edgecolor() if face[3] == 0 else face)
    if isinstance(handle, PathCollection) and len(handle.get_facecolor()):
        return to_hex(handle.get_facecolor()[0])
    return None


def legend_entries(fig: Figure) -> list[tuple[str, str]]:
    """(label, colour) of every legend entry of `fig`, and of every text drawn in a colour of its own
    (method names on an axis or a title): what a reader matches colours against."""
    entries = []
    for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]:
        for handle, text in zip(legend.legend_handles, legend.get_texts()):
            colour = _colour(handle)
            if colour is not None:
                entries.append((text.get_text(), colour))
    for text in fig.findobj(Text):
        colour = to_hex(text.get_color())
        if text.get_text().strip() and not palette.neutral(colour) and text.axes is not None:
            entries.append((text.get_text().replace("\n", " "), colour))
    return entries


def _recorded(draw: Callable[..., Figure]) -> Callable[..., Figure]:
    """`draw`, with the legend entries of the figure it returns appended to the file $MRPRUNER_LEGENDS
    names (one JSON line a figure), when set: the book's build walks every figure it draws so."""
    @functools.wraps(draw)
    def recorded(*args, **kwargs) -> Figure:
        fig = draw(*args, **kwargs)
        if os.environ.get(LEGENDS_ENV):
            with open(os.environ[LEGENDS_ENV], "a") as out:
                out.write(json.dumps({"figure": draw.__name__, "entries": legend_entries(fig)}) + "\n")
        return fig
    return recorded


# --- token grids --------------------------------------------------------------------------------

def on_image(ax: Axes, image, grid: np.ndarray, *, title: str = "", cmap: str = "magma",
             colorbar: bool = False, lines: bool = True, limits: tuple[float, float] | None = None) -> Axes:
    """Draw `grid` ((rows, cols): one value per token, NaN for none) stretched over the photo.

    A boolean grid shows the photo where tokens are kept and flat grey where they are pruned
    (what the model still sees), with a thin line between tokens unless `lines` is False. A float
    grid is an opaque heatmap in place of the photo (so that its colours are not mixed with the
    picture's), on `limits` (low, high) if given."""
    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    extent = (0, width, height, 0)
    grid = np.asarray(grid)
    if grid.dtype == bool:
        ax.imshow(pixels, extent=extent)
        pruned = np.zeros((*grid.shape, 4))
        pruned[~grid] = to_rgba(palette.PRUNED)
        ax.imshow(pruned, extent=extent, interpolation="nearest")
        rows, cols = grid.shape
        for r in range(rows + 1 if lines else 0):
            ax.axhline(r * height / rows, color="white", lw=0.3, alpha=0.5)
        for c in range(cols + 1 if lines else 0):
            ax.axvline(c * width / cols, color="white", lw=0.3, alpha=0.5)
    else:
        low, high = limits if limits is not None else (None, None)
        shown = ax.imshow(grid, extent=extent, cmap=cmap, vmin=low, vmax=high, interpolation="nearest")
        ax.set(xlim=(0, width), ylim=(height, 0))
        if colorbar:
            ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
    ax.set(title=title, xticks=[], yticks=[])
    ax.grid(False)
    return ax


def _kept_and_pruned() -> list[Patch]:
    """The legend entries of a boolean grid drawn by `on_image`: kept tokens show the photo, pruned ones grey."""
    return [Patch(facecolor="white", edgecolor=palette.NEUTRAL, label="kept token (the photo shows)"),
            Patch(facecolor=palette.PRUNED, edgecolor=palette.NEUTRAL, label="pruned token (grey)")]


@_recorded
def grids(image, panels: Sequence[tuple], *, ncols: int = 2, title_colors: Sequence[str] | None = None,
          width: float = PAGE_WIDTH, box: Sequence[float] | None = None, photo: bool = True,
          **options) -> Figure:
    """One `on_image` panel per (title, grid) or (title, grid, options for that panel), `ncols` to
    a row, the figure `width` inches wide with panels of the photo's aspect; each title in its
    colour of `title_colors` (e.g. `method_palette`'s) if given; `box` (x0, y0, x1, y1 in
    image pixels: the region that holds a question's answer) outlined on every panel. Heatmaps
    (float grids) hide the photo, so the photo comes first as a panel of its own (unless `photo`
    is False), and all heatmaps share one colour scale, so that a colour means one value on every
    panel. A legend below says what kept and pruned tokens look like (when a grid is boolean) and
    what the box is."""
    heatmaps = [np.asarray(p[1], dtype=float) for p in panels if np.asarray(p[1]).dtype != bool]
    if heatmaps and photo:
        panels = [("the photo", None), *panels]
    limits = (min(float(np.nanmin(h)) for h in heatmaps), max(float(np.nanmax(h)) for h in heatmaps)) if heatmaps else None
    nrows = -(-len(panels) // ncols)
    height, wide = np.asarray(image).shape[:2]
    colorbars = options.get("colorbar", False) or any(len(p) > 2 and p[2].get("colorbar") for p in panels)
    panel_height = (width / ncols - (0.75 if colorbars else 0.1)) * height / wide + 0.35
    legend = box is not None or any(p[1] is not None and np.asarray(p[1]).dtype == bool for p in panels)
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, panel_height * nrows + 0.4 * legend), squeeze=False,
                             layout="constrained")
    meanings = []
    for i, (ax, panel) in enumerate(zip(axes.flat, panels)):
        title, grid, *own = panel
        own = dict(own[0]) if own else {}
        if grid is None:  # the photo itself
            ax.imshow(np.asarray(image), extent=(0, wide, height, 0))
            ax.set(title=title, xticks=[], yticks=[])
            ax.grid(False)
            if colorbars:  # the width a colour bar takes beside the other panels, left empty
                fig.colorbar(plt.cm.ScalarMappable(cmap="Greys"), ax=ax, fraction=0.046, pad=0.02).remove()
        else:
            on_image(ax, image, grid, title=title, limits=limits, **{**options, **own})
        if title_colors is not None and grid is not None:
            ax.title.set_color(title_colors[i - (len(panels) - len(title_colors))])
        if grid is not None and np.asarray(grid).dtype == bool:
            meanings += _kept_and_pruned()
        if box is not None:
            x0, y0, x1, y1 = box
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=palette.ANSWER_BOX, lw=2))
            meanings.append(Patch(facecolor="none", edgecolor=palette.ANSWER_BOX, lw=2, label="where the answer lies"))
    for ax in axes.flat[len(panels):]:
        ax.remove()
    if legend:
        unique = list({patch.get_label(): patch for patch in meanings}.values())
        fig.legend(handles=unique, loc="outside lower center", ncols=2, frameon=False)
    return fig


@_recorded
def token_maps(image, maps: Mapping[str, Sequence[np.ndarray]], columns: Sequence[str], *,
               width: float = PAGE_WIDTH, title: str = "") -> Figure:
    """A table of kept-token grids over one photo: a row per method (`maps`: label -> one boolean
    grid per column, named on the row's left in the method's colour), a column per entry of
    `columns` (named on top). Grids too fine to draw a line between tokens at this size are drawn
    without one, an empty grid (no tokens at that resolution) as a dimmed photo that says so; a
    legend below says what clear and dimmed mean."""
    labels, ncols = list(maps), len(columns)
    if any(len(grids) != ncols for grids in maps.values()):
        raise ValueError(f"maps must give one grid per column ({ncols}: {list(columns)}) for every method")
    height, wide = np.asarray(image).shape[:2]
    label_width = 1.3  # inches on the left for the methods' names
    panel = (width - label_width) / ncols
    fig, axes = plt.subplots(len(labels), ncols, figsize=(width, panel * height / wide * len(labels) + 0.9 + 0.3 * bool(title)),
                             squeeze=False, layout="constrained")
    colors = method_palette(labels)
    for r, label in enumerate(labels):
        for c, grid in enumerate(maps[label]):
            ax = axes[r, c]
            grid = np.asarray(grid)
            if grid.size:
                on_image(ax, image, grid, title=columns[c] if r == 0 else "", lines=panel * DPI / grid.shape[1] >= 4)
            else:  # the image has no tokens at this resolution (InternVL's single tile has no thumbnail)
                on_image(ax, image, np.zeros((1, 1), bool), title=columns[c] if r == 0 else "", lines=False)
                ax.text(0.5, 0.5, "no tokens", transform=ax.transAxes, ha="center", va="center", color="white")
            if c == 0:
                ax.set_ylabel("\n".join(textwrap.wrap(label, 12)), color=colors[label], rotation=0, ha="right",
                              va="center", fontsize="medium")
    fig.legend(handles=_kept_and_pruned(), loc="outside lower center", ncols=2, frameon=False)
    if title:
        fig.suptitle("\n".join(textwrap.wrap(title, TITLE_CHARS)), fontsize="medium")
    return fig


@_recorded
def norm_distributions(frame: pd.DataFrame, *, x: str = "norm", hue: str = "resolution", title: str = "",
                       bins: int = 20) -> Figure:
    """Fig. 2a: the L2 norm (informativeness, Eq. 2) of low- vs high-resolution tokens as
    density-normalised step histograms on shared bins, all tokens of the frame pooled; the
    resolutions in neutral greys and line styles (palette.RESOLUTIONS), the legend and `title`
    (the numbers' source) above the panel."""
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 3.0), layout="constrained")
    edges = np.histogram_bin_edges(frame[x], bins=bins)
    handles = []
    for (resolution, part), dashes in zip(frame.groupby(hue, sort=False), ("-", "--")):
        density, _ = np.histogram(part[x], bins=edges, density=True)
        color = palette.RESOLUTIONS[resolution]
        ax.stairs(density, edges, color=color, ls=dashes, lw=1.8)
        handles.append(Line2D([], [], color=color, ls=dashes, lw=1.8, label=palette.RESOLUTION_NAMES[resolution]))
    ax.set(xlabel="L2 norm of the token (Eq. 2)", ylabel="density")
    _legend(fig, handles, title)
    return fig


# --- lines and dots -----------------------------------------------------------------------------

def _panels(n: int, col_wrap: int, height: float, sharey: bool = False, sharex: bool = False):
    """A page-wide figure of n panels, col_wrap to a row, each `height` inches high (legend and
    labels come on top); sharey (sharex): one y (x) axis for all, so that panels compare by height
    (by length)."""
    ncols = min(col_wrap, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(PAGE_WIDTH, height * nrows + 0.9), squeeze=False,
                             layout="constrained", sharey=sharey, sharex=sharex)
    for ax in axes.flat[n:]:
        ax.remove()
    return fig, axes.flat[:n]


def _row_major(handles: list, ncols: int) -> list:
    """`handles` ordered so that a legend of `ncols` columns (which matplotlib fills column by column,
    the first columns one longer) reads in their order row by row."""
    rows, extra = divmod(len(handles), ncols)
    return [handles[r * ncols + c] for c in range(ncols) for r in range(rows + (c < extra))]


def _legend(fig: Figure, handles: Sequence, title: str = "") -> None:
    """The figure's legend above its panels, under its title (the source of its numbers), in as many
    columns (up to 6) as fit the figure's width: constrained layout keeps it clear of the panels."""
    renderer = fig.canvas.get_renderer()
    for ncols in range(min(len(handles), 6), 0, -1):
        legend = fig.legend(handles=_row_major(list(handles), ncols), loc="outside upper center", ncols=ncols,
                            frameon=False,
                            title="\n".join(textwrap.wrap(title, TITLE_CHARS)) or None)
        if ncols == 1 or legend.get_window_extent(renderer).width <= fig.bbox.width:
            return
        legend.remove()


@_recorded
def by_ratio(frame: pd.DataFrame, *, x: str = "ratio", y: str = "value", hue: str = "method",
             col: str | None = "benchmark", col_wrap: int = 4, xlabel: str = "pruning ratio", ylabel: str = "score",
             title: str = "", reference: float | Mapping[str, float] | None = None, reference_label: str = "",
             dodge: float = 0.0, aspect: float = 1.25, low: str | None = None, high: str | None = None,
             sharey: bool = False, categorical: bool = False) -> Figure:
    """Scores (or speed-ups) against pruning ratio (or FLOPs reduction, Fig. 4), one panel per `col`
    value (one panel in all if col is None), one line per `hue` value: in its method's colour and
    marker when `hue` is "method" or "label", else (tasks, benchmarks) in a neutral grey, marker
    and dash (palette.categories). Each line's x is shifted by `dodge` times its offset from the
    middle one so that equal values stay apart. Pruning ratios on the x axis are ticked where they
    were measured, as percentages. `categorical`: the x values are a few settings, not a scale:
    drawn evenly spaced, dodged within each, and not joined by lines. `low`, `high`: columns of
    each value's spread, drawn as error bars. `reference` (one number, or one per panel) is drawn
    dashed, named `reference_label` in the legend. sharey: one y-axis for every panel (for values
    on one scale, e.g. % of the unpruned score). One value per panel, line and x."""
    keys = [k for k in (col, hue, x) if k]
    if frame.duplicated(keys).any():
        raise ValueError(f"frame holds more than one value per {keys}: one line per {hue!r} and panel")
    names = list(dict.fromkeys(frame[col])) if col else [None]
    fig, axes = _panels(len(names), col_wrap, PAGE_WIDTH / min(col_wrap, len(names)) / aspect, sharey)
    labels = list(dict.fromkeys(frame[hue]))
    if hue in ("method", "label"):
        styles = {k: (c, m, "-") for k, (c, m) in palette.styles(labels).items()}
    else:
        styles = palette.categories(labels)
    settings = sorted(frame[x].unique())
    position = {v: i for i, v in enumerate(settings)} if categorical else None
    for ax, name in zip(axes, names):
        part = frame if name is None else frame[frame[col] == name]
        for i, label in enumerate(labels):
            color, marker, dashes = styles[label]
            line = part[part[hue] == label].sort_values(x)
            at = (line[x].map(position) if categorical else line[x]) + dodge * (i - (len(labels) - 1) / 2)
            ax.plot(at, line[y], label=label, color=color, ls="none" if categorical else dashes,
                    marker=marker, markeredgecolor="white", markeredgewidth=0.5, lw=1.4, ms=7)
            if low and high:
                ax.errorbar(at, line[y], yerr=[line[y] - line[low], line[high] - line[y]], fmt="none",
                            ecolor=color, elinewidth=1, capsize=3)
        if reference is not None:
            ax.axhline(reference[name] if isinstance(reference, Mapping) else reference,
                       color=palette.UNPRUNED.color, ls="--", lw=1)
        if categorical:
            ax.set_xticks(range(len(settings)), [f"{v:.0%}" if x == "ratio" else f"{v:g}" for v in settings])
            ax.set_xlim(-0.5, len(settings) - 0.5)
        elif x == "ratio":
            ax.set_xticks(settings, [f"{v:.0%}" for v in settings])
        if name is not None:
            ax.set_title(name)
    handles = [Line2D([], [], color=styles[k][0], marker=styles[k][1], ls="none" if categorical else styles[k][2],
                      label=k) for k in labels]
    if reference is not None:
        handles.append(Line2D([], [], color=palette.UNPRUNED.color, ls="--", label=reference_label))
    _legend(fig, handles, title)
    fig.supxlabel(xlabel, fontsize="medium")
    fig.supylabel(ylabel, fontsize="medium")
    return fig


@_recorded
def differences(frame: pd.DataFrame, reference: str, *, col: str = "benchmark", col_wrap: int = 2,
                title: str = "", sharex: bool = True) -> Figure:
    """Each number's difference from `reference` as a dot (mrpruner.paper.differences rows: method,
    ratio, benchmark, source, difference), one panel per `col` value on one shared x axis (so that
    a difference has one length on every panel; sharex=False for panels in different units, e.g.
    MME's points of 2,000 beside percentages), one row per method in its colour; reported
    numbers solid circles, measured ones hollow diamonds just below. A method with several ratios
    is a slope: its dots joined in ratio order, the highest ratio's dot the largest. The dashed
    line at 0 is the reference."""
    methods = list(dict.fromkeys(frame["method"]))
    names = list(dict.fromkeys(frame[col]))
    ratios = sorted(frame["ratio"].unique())
    sources = [s for s in palette.SOURCE_MARKERS if s in set(frame["source"])]
    colors = method_palette(methods)
    fig, axes = _panels(len(names), col_wrap, 0.42 * len(methods) + 0.6, sharex=sharex)
    for ax, name in zip(axes, names):
        ax.axvline(0, color=palette.UNPRUNED.color, ls="--", lw=1)
        for (method, source), dots in frame[frame[col] == name].groupby(["method", "source"], sort=False):
            dots = dots.sort_values("ratio")
            row = methods.index(method) + 0.18 * sources.index(source)
            ax.plot(dots["difference"], [row] * len(dots), color=colors[method], lw=1.2, alpha=0.7)
            for ratio, value in zip(dots["ratio"], dots["difference"]):
                last = ratio == ratios[-1]
                ax.plot(value, row, ls="", marker=palette.SOURCE_MARKERS[source], ms=7 if last else 5, color=colors[method],
                        markerfacecolor=colors[method] if source == "reported in the paper" else "white",
                        markeredgewidth=1.3)
        ax.set_yticks(range(len(methods)), methods if ax.get_subplotspec().is_first_col() else [])
        for tick, method in zip(ax.get_yticklabels(), methods):
            tick.set_color(colors[method])
        ax.set_ylim(len(methods) - 0.5, -0.5)
        ax.set_title(name)
    handles = [Line2D([], [], ls="", marker=palette.SOURCE_MARKERS[s], color=palette.NEUTRAL,
                      markerfacecolor=palette.NEUTRAL if s == "reported in the paper" else "white", label=s) for s in sources]
    if len(ratios) > 1:
        handles.append(Line2D([], [], color=palette.NEUTRAL, marker="o", ms=4, markevery=[0],
                              label=" → ".join(f"{r:.0%}" for r in ratios) + f" pruning (the {ratios[-1]:.0%} dot largest)"))
    for ax in axes[:1] if sharex else axes:
        low, high = ax.get_xlim()
        pad = 0.08 * (max(high, 0) - min(low, 0))
        ax.set_xlim(min(low, 0) - pad, max(high, 0) + pad)
    _legend(fig, handles, title)
    fig.supxlabel(f"difference from {reference} (the benchmark's score points; dashed: 0)", fontsize="medium")
    return fig




@_recorded
def margins(tests: pd.DataFrame, z: float, *, clip: float = 8.0):
    """Every test of the claims (mrpruner.claims.details rows with a claim column) as a dot at its
    margin / SE, one row per claim, its state told by marker and fill in neutral greys
    (palette.VERDICTS), with the ±z band shaded; values beyond ±clip are drawn at the edge as
    triangles. Returns the figure."""
    tests = tests[tests["z"].notna()]
    order = list(dict.fromkeys(tests["claim"]))
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 0.28 * len(order) + 1.4))
    ax.axvspan(-z, z, color=palette.SAMPLING_BAND, zorder=0)
    ax.axvline(0, color=palette.NEUTRAL, lw=0.8)
    y = tests["claim"].map({claim: i for i, claim in enumerate(order)})
    shown = tests["z"].clip(-clip, clip)
    for state, (color, marker) in palette.VERDICTS.items():
        chosen = tests["state"] == state
        if not chosen.any():
            continue
        inside = chosen & (tests["z"].abs() <= clip)
        face = "none" if state in palette.HOLLOW_VERDICTS else color
        ax.scatter(shown[inside], y[inside], s=26, marker=marker, facecolors=face, edgecolors=color, linewidths=1.1,
                   label=state)
        for sign, edge in ((1, ">"), (-1, "<")):
            beyond = chosen & (sign * tests["z"] > clip)
            ax.scatter(shown[beyond], y[beyond], marker=edge, s=30, facecolors=face, edgecolors=color, linewidths=1.1)
    ax.set_yticks(range(len(order)), order)
    ax.invert_yaxis()
    ax.set_xlim(-clip - 0.5, clip + 0.5)
    ax.set_xlabel(f"margin / SE of each test (shaded: within ±{z:g} SE; triangles: beyond ±{clip:g})")
    ax.legend(loc="lower left", fontsize="small", framealpha=0.9)
    fig.tight_layout()
    return fig


@_recorded
def cost_bars(hours: pd.DataFrame, *, unit: str = "GPU-hours", title: str = ""):
    """Estimated hours of each sweep (rows of `hours`: sweep, task, hours) as one horizontal bar a
    sweep, stacked by benchmark in neutral greys (darkest the largest) and hatches, each bar labelled with
    its total; `title` (the numbers' source) wrapped above. Returns the figure."""
    table = hours.pivot_table(index="sweep", columns="task", values="hours", aggfunc="sum", sort=False).fillna(0)
    table = table[table.sum().sort_values(ascending=False).index]
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 0.42 * len(table) + 1.5))
    left = np.zeros(len(table))
    greys = plt.get_cmap("Greys")(np.linspace(0.85, 0.2, len(table.columns)))
    hatches = itertools.cycle(("", "///", "...", "xxx"))  # neighbouring greys told apart by pattern too
    for task, color, hatch in zip(table.columns, greys, hatches):
        ax.barh(range(len(table)), table[task], left=left, color=color, edgecolor="white", hatch=hatch, label=task,
                height=0.6)
        left += table[task].to_numpy()
    for i, total in enumerate(left):
        ax.text(total, i, f" {total:,.0f}", va="center", fontsize="small")
    ax.set_yticks(range(len(table)), table.index)
    ax.invert_yaxis()
    ax.set_xlim(0, left.max() * 1.15)
    ax.set_xlabel(f"estimated {unit} of evaluation, one device (bars: by benchmark)")
    ax.legend(loc="lower right", fontsize="small", ncols=2, framealpha=0.9)
    ax.set_title("\n".join(textwrap.wrap(title, TITLE_CHARS)), fontsize="medium")
    fig.tight_layout()
    return fig


def verdict_table(frame: pd.DataFrame, caption: str, states: pd.DataFrame):
    """`table` of `frame` with each cell tinted by the verdict in the same place of `states`."""
    styles = states.map(lambda v: "background-color: {}; color: {}".format(*palette.VERDICT_TINTS[v]))
    return table(frame, caption).apply(lambda part: styles.loc[part.index, part.columns].to_numpy(), axis=None)


def margin_shown(margin: float, se: float, z: float = 1.96) -> str:
    """A claim's margin with its interval margin +- z SE, in the book's one notation."""
    from mrpruner.rule import shown

    return shown(margin, margin - z * se, margin + z * se)


def claims_table(verdicts: pd.DataFrame, caption: str, z: float = 1.96):
    """The claims table (mrpruner.claims.table) as the book shows it: per claim its id and section,
    the sentence and the statement checked, the verdict (tinted) and the verdict as printed, how
    many parts hold, and the weakest test's margin with its interval (+- z SE, in the book's
    notation). Returns a pandas Styler."""
    def margin(row) -> str:
        if pd.isna(row["SE"]):
            return f"{row['quantity']:.2f} (no spread known)"
        if row["SE"] == 0:
            return f"{row['quantity']:.2f} (printed numbers: SE 0)"
        return f"{margin_shown(row['margin'], row['SE'], z)} ({row['margin / SE']:+.1f} SE)"

    small = "<br><small>{}</small>".format
    reading = verdicts["reading"].map(lambda r: small(f"reading: {r}") if r else "")
    shown = pd.DataFrame({
        "claim": "<b>" + verdicts["id"] + "</b>" + verdicts["section"].map(small),
        "the paper says; the statement checked": ("<i>“" + verdicts["quote"] + "”</i><br>" + verdicts["statement"]
                                                  + reading),
        "verdict": verdicts["verdict"] + verdicts["as printed"].map(
            lambda v: f'<br><small style="font-weight: normal">as printed: {v}</small>'),
        "parts holding": [f"{h} of {n}" + small(f"{b} beyond SE, {f} against") for h, n, b, f in
                          verdicts[["hold as printed", "parts", "hold beyond SE", "fail beyond SE"]].values],
        "weakest test": verdicts["weakest test"] + verdicts.apply(margin, axis=1).map(small),
    })
    tint = ["background-color: {}; color: {}; font-weight: bold".format(*palette.VERDICT_TINTS[v])
            for v in verdicts["verdict"]]
    return (shown.style.hide(axis="index").set_caption(caption)
            .apply(lambda column: tint, subset=["verdict"])
            .set_table_styles([{"selector": "th, td", "props": "padding: 0.3em 0.5em; text-align: left; "
                                                               "vertical-align: top; font-size: 0.85em; "
                                                               "overflow-wrap: break-word;"},  # whole words
                               {"selector": "", "props": "width: 100%;"},
                               {"selector": "caption", "props": "caption-side: top; text-align: left;"}]))


TABLE_CHAR_PX = 7.5  # an estimate of one character's width in the book's tables (0.85em, digits and lower case)
TABLE_CELL_PAD_PX = 18  # a table cell's left and right padding together
TABLE_TEXT_CHARS = 30  # a column of sentences is estimated this many characters wide (its text wraps)


def table(frame: pd.DataFrame, caption: str, *, digits: int = 2, width_px: float = PAGE_PX,
          provenance: str | None = None):
    """A DataFrame as the book shows it: numbers to `digits` decimals, a "ratio" level of the index
    or columns as a percentage, and a caption saying what it shows and where the numbers come from
    in a line; `provenance` (the full record: versions, device, commits, dates) folded under the
    caption, one click away. A frame too wide for the text column (`width_px`, estimated from its
    longest entries) is shown as several tables one under the other, each with the index and whole
    groups of the first column level, the caption on the first only. Returns a pandas Styler, or an
    HTML display of the parts (their Stylers in `.parts`)."""
    if provenance:
        caption += (' <details class="provenance"><summary>provenance</summary>'
                    f"{html.escape(provenance)}</details>")
    groups = _column_groups(frame, digits, width_px)
    if len(groups) == 1:
        return _styled(frame, caption, digits)
    parts = [_styled(frame[columns], caption if i == 0 else f"(continued, {i + 1} of {len(groups)})", digits)
             for i, columns in enumerate(groups)]
    return _Parts(parts)


class _Parts:
    """Several Stylers shown one under the other (a table split to fit the text column)."""

    def __init__(self, parts: list):
        self.parts = parts

    def _repr_html_(self) -> str:
        return "".join(part.to_html() for part in self.parts)

    def __getattr__(self, name: str):
        """A Styler method applied to every part (e.g. set_table_styles), giving the parts; private
        and special names (IPython's `_repr_latex_`, ...) are not forwarded."""
        if name.startswith("_"):
            raise AttributeError(name)
        method = [getattr(part, name) for part in self.parts]
        return lambda *args, **kwargs: _Parts([m(*args, **kwargs) for m in method])


def _styled(frame: pd.DataFrame, caption: str, digits: int):
    styler = frame.style.format(precision=digits, na_rep="")
    for axis, names in ((0, frame.index.names), (1, frame.columns.names)):
        if "ratio" in names:
            styler = styler.format_index(lambda r: f"{r:.0%}", axis=axis, level="ratio")
    return styler.set_caption(caption).set_table_styles([
        {"selector": "", "props": "font-size: 0.85em;"},
        {"selector": "th, td", "props": "padding: 0.15em 0.6em; text-align: right;"},
        {"selector": "th.col_heading", "props": "white-space: normal; word-break: normal;"},
        {"selector": "caption", "props": "caption-side: top; text-align: left; font-size: 1em;"},
    ])


def _column_groups(frame: pd.DataFrame, digits: int, width_px: float) -> list[list]:
    """The frame's columns in groups that each fit `width_px` beside the index (whole groups of
    the first column level; a group too wide alone stands alone)."""
    def px(texts) -> float:
        return max((len(str(t)) for t in texts), default=0) * TABLE_CHAR_PX + TABLE_CELL_PAD_PX

    def shown(value) -> str:  # text wraps at (breaking) spaces: a long sentence needs about TEXT_CHARS of width
        if isinstance(value, float):
            return f"{value:.{digits}f}"
        text = str(value)
        return text if " " not in text else max([*text.split(" "), text[:TABLE_TEXT_CHARS]], key=len)

    def header(column) -> list[str]:  # a heading wraps at spaces: its longest word counts
        return [word for level in (column if isinstance(column, tuple) else (column,)) for word in str(level).split()]

    index = sum(px([*map(str, frame.index.get_level_values(i)), *str(name or "").split()])
                for i, name in enumerate(frame.index.names))
    widths = {column: px([*map(shown, frame[column].head(200)), *header(column)]) for column in frame.columns}
    top = list(dict.fromkeys(c[0] if isinstance(c, tuple) else c for c in frame.columns))
    groups: list[list] = []
    used = width_px  # start a new group at once
    for key in top:
        columns = [c for c in frame.columns if (c[0] if isinstance(c, tuple) else c) == key]
        width = sum(widths[c] for c in columns)
        if groups and used + width <= width_px:
            groups[-1] += columns
            used += width
        else:
            groups.append(list(columns))
            used = index + width
    return groups or [list(frame.columns)]


def answers_table(answers: pd.DataFrame, caption: str):
    """Answers under several conditions (mrpruner.analysis.probes.answers_under rows) as the book shows
    them: per question its target and each condition's answer with its score; the prompt's ending
    that every question shares (the task's post-prompt) is said once, in the caption. Returns a Styler."""
    questions = answers["question"].tolist()
    shared = os.path.commonprefix([q[::-1] for q in questions])[::-1] if len(questions) > 1 else ""
    shared = shared[shared.find("\n") + 1:] if "\n" in shared else ""  # whole lines only
    shown = pd.DataFrame({"question": [q.removesuffix(shared).strip() for q in questions],
                          "target": answers["answer"].fillna("")})
    for condition in (c.removeprefix("score_") for c in answers.columns if c.startswith("score_")):
        shown[condition] = [f"{text} ({score:.2g})" for text, score in zip(answers[condition],
                                                                          answers[f"score_{condition}"])]
    ending = f" Every question ends with: {' '.join(shared.split())}" if shared else ""
    return (shown.style.hide(axis="index").set_caption(caption + ending)
            .set_table_styles([{"selector": "th, td", "props": "padding: 0.2em 0.5em; text-align: left; "
                                                               "vertical-align: top; font-size: 0.9em;"},
                               {"selector": "caption", "props": "caption-side: top; text-align: left; "
                                                                "font-size: 0.85em;"}]))


KIND_TITLES = {"overview": "overview questions\n(the base image answers)", "detail": "detail questions\n(only the grid answers)",
               "all": "all questions"}


def _guides(ax: Axes, kind: str, reference: Mapping[str, float] | None, chance: Mapping[str, float] | None,
            vertical: bool) -> list:
    """The unpruned model's accuracy (dashed) and chance (dotted) across a panel; their legend handles."""
    line = ax.axvline if vertical else ax.axhline
    handles = []
    for values, label, style in ((reference, "all tokens", {"color": palette.UNPRUNED.color, "ls": "--", "lw": 1}),
                                 (chance, "chance", {"color": palette.CHANCE, "ls": ":", "lw": 1.4})):
        if values and kind in values:
            line(values[kind], zorder=1, **style)  # beneath the series: a series on the line stays visible
            handles.append(Line2D([], [], label=label, **style))
    return handles


def _edge(marker: str, color) -> str:
    """A marker's edge: white around a symbol (so that touching markers stay apart), the fill's
    own colour around a letter (a white edge would hollow it out)."""
    return color if marker.startswith("$") else "white"


def _size(marker: str, size: float) -> float:
    """A marker's size: a letter (Table 3's "$I$", "$C$", "$A$") drawn larger than a symbol to read as large."""
    return 1.6 * size if marker.startswith("$") else size


def _each_model(frame: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    """A chart's frame as its drawn means (`mrpruner.analysis.sweeps.pooled`) and, where it holds several
    models, the legend handle of the small hollow markers that draw each model's own score."""
    from mrpruner.analysis.sweeps import model_count, pooled

    n = model_count(frame)
    handles = [Line2D([], [], ls="none", marker="o", color=palette.NEUTRAL, ms=6.5, label=f"filled: the mean of the {n} models"),
               Line2D([], [], ls="none", marker="o", mfc="none", mec=palette.NEUTRAL, ms=4.5, label=f"hollow: each model")]
    return pooled(frame), (handles if n > 1 else [])


def _model_points(ax: Axes, frame: pd.DataFrame, x: str, y: str, shift: float, step: float, color, marker: str,
                  horizontal: bool = False) -> None:
    """Each model's own values of one series (rows of a `task_frame` with several models), as small
    hollow markers beside its mean's, the models `step` apart from one another around `shift`
    (so that equal values stay visible)."""
    if "model" not in frame or frame["model"].nunique() < 2:
        return
    models = sorted(frame["model"].unique())
    offset = frame["model"].map({m: step * (j - (len(models) - 1) / 2) for j, m in enumerate(models)})
    xs, ys = frame[x] + shift + offset, frame[y]
    ax.plot(*((ys, xs) if horizontal else (xs, ys)), ls="none", marker=marker, mfc="none", mec=color, mew=1.0, ms=4.5,
            zorder=4)


@_recorded
def mini_dots(frame: pd.DataFrame, *, x: str = "accuracy", kinds: Sequence[str] = ("overview", "detail"),
              reference: Mapping[str, float] | None = None, chance: Mapping[str, float] | None = None,
              xlabel: str = "accuracy (bars: 95% interval)", title: str = "") -> Figure:
    """One dot per row `label` with its 95% interval (`ci_low`, `ci_high`), one panel per question
    kind on one shared axis, in each method's colour and marker; `reference` (the unpruned accuracy
    per kind) and `chance` drawn as lines. For the miniature's tables: differences read off a shared axis. A
    frame of several models draws their mean with its interval over models and questions
    (`mrpruner.analysis.sweeps.across_models`) and each model's score as a small hollow marker just below it."""
    labels = list(dict.fromkeys(frame["label"]))
    colors, markers = method_palette(labels), method_markers(labels)
    mean, handles = _each_model(frame)
    fig, axes = plt.subplots(1, len(kinds), figsize=(PAGE_WIDTH, 0.36 * len(labels) + 2.2), squeeze=False,
                             sharey=True, sharex=True, layout="constrained")
    guides = []
    for kind, ax in zip(kinds, axes[0]):
        part = mean[mean["kind"] == kind].set_index("label").reindex(labels)
        for i, label in enumerate(labels):
            row = part.loc[label]
            ax.errorbar(row[x], i, xerr=[[row[x] - row["ci_low"]], [row["ci_high"] - row[x]]], color=colors[label],
                        marker=markers[label], markeredgecolor=_edge(markers[label], colors[label]),
                        markeredgewidth=0.5, capsize=3,
                        ms=_size(markers[label], 7))
            each = frame[(frame["kind"] == kind) & (frame["label"] == label)].assign(position=i)
            _model_points(ax, each, "position", x, 0.3, 0.1, colors[label], markers[label], horizontal=True)
        guides = _guides(ax, kind, reference, chance, vertical=True) or guides
        ax.set(yticks=range(len(labels)), yticklabels=labels, title=KIND_TITLES.get(kind, kind),
               ylim=(len(labels) - 0.5, -0.5))
        ax.margins(x=0.06)  # room for a large (letter) marker at the axis' ends
    if guides or handles or title:
        _legend(fig, guides + handles, title)
    fig.supxlabel(xlabel, fontsize="medium")
    return fig


@_recorded
def mini_lines(frame: pd.DataFrame, *, x: str = "ratio", y: str = "accuracy",
               kinds: Sequence[str] = ("overview", "detail"), reference: Mapping[str, float] | None = None,
               chance: Mapping[str, float] | None = None, xlabel: str = "pruning ratio",
               ylabel: str = "accuracy (bars: 95% interval)", title: str = "", dodge: float = 0.025) -> Figure:
    """`y` (accuracy, with its 95% interval; or e.g. recall) against `x` (pruning ratio, or FLOPs
    reduction), one line per `label` in its method's colour and marker, one panel per question
    kind; `reference` and `chance` as in `mini_dots`. Each line's x is shifted by `dodge` times
    the x range times its offset from the middle line, so that equal values stay apart. A frame of
    several models draws the line through their means (intervals over models and questions) and
    each model's value as a small hollow marker."""
    labels = list(dict.fromkeys(frame["label"]))
    colors, markers = method_palette(labels), method_markers(labels)
    mean, handles = _each_model(frame)
    fig, axes = plt.subplots(1, len(kinds), figsize=(PAGE_WIDTH, 3.6), squeeze=False, sharey=True,
                             layout="constrained")
    span = float(frame[x].max() - frame[x].min()) or 1.0
    guides = []
    for kind, ax in zip(kinds, axes[0]):
        part = mean[mean["kind"] == kind]
        for i, label in enumerate(labels):
            rows = part[part["label"] == label].sort_values(x)
            shift = dodge * span * (i - (len(labels) - 1) / 2)
            error = [rows[y] - rows["ci_low"], rows["ci_high"] - rows[y]] if y == "accuracy" else None
            ax.errorbar(rows[x] + shift, rows[y], yerr=error, label=label,
                        color=colors[label], marker=markers[label],
                        markeredgecolor=_edge(markers[label], colors[label]), markeredgewidth=0.5,
                        capsize=3, ms=_size(markers[label], 6), lw=1.4, zorder=3)
            _model_points(ax, frame[(frame["kind"] == kind) & (frame["label"] == label)], x, y, shift,
                          dodge * span / 3, colors[label], markers[label])
        guides = _guides(ax, kind, reference, chance, vertical=False) or guides
        ax.set_title(KIND_TITLES.get(kind, kind))
        if x == "ratio":  # pruning ratios as percentages, as the paper writes them
            ax.xaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    legend = [Line2D([], [], color=colors[k], marker=markers[k], label=k) for k in labels]
    _legend(fig, legend + guides + handles, title)
    fig.supxlabel(xlabel, fontsize="medium")
    fig.supylabel(ylabel, fontsize="medium")
    return fig
