"""Figures and tables of the book's chapters (seaborn/matplotlib, pandas Styler): token grids over
photos, informativeness distributions (Fig. 2a), scores against pruning ratio (Table 1) and FLOPs
reduction (Fig. 4), captioned tables. Every function shows what it is given; nothing here
computes a result."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.axes import Axes

RESOLUTION_COLORS = {"low": "#1b9e77", "high": "#d95f02"}
# One colour per method in every chapter, keyed by the paper's row labels (mrpruner.paper.METHODS);
# "unpruned" is the label of the unpruned model in latency runs, "all tokens" on the miniature.
METHOD_COLORS = {"LLaVA-NeXT-8B": "#4d4d4d", "unpruned": "#4d4d4d", "all tokens": "#4d4d4d", "Random": "#a6761d", "ToMe": "#7570b3",
                 "FastV": "#1f78b4", "G-Prune": "#33a02c", "MR-Pruner": "#e31a1c"}
OTHER_COLORS = ("#ff7f00", "#6a3d9a", "#b15928", "#e7298a", "#66a61e", "#17becf")


def method_palette(labels) -> dict[str, str]:
    """The colour of each label: METHOD_COLORS for the methods, then OTHER_COLORS in order for
    any other label (e.g. Table 3's ablation rows)."""
    others = itertools.cycle(OTHER_COLORS)
    return {label: METHOD_COLORS.get(label) or next(others) for label in dict.fromkeys(labels)}


def setup() -> None:
    """The book's figure style (seaborn whitegrid, notebook context, crisp inline PNGs)."""
    sns.set_theme(style="whitegrid", context="notebook")
    plt.rcParams.update({"figure.dpi": 96, "savefig.dpi": 96, "figure.autolayout": False})


def on_image(ax: Axes, image, grid: np.ndarray, *, title: str = "", cmap: str = "magma",
             alpha: float = 0.6, colorbar: bool = False, vmin: float | None = None,
             vmax: float | None = None, center: float | None = None) -> Axes:
    """Draw `grid` ((rows, cols): one value per token, NaN for none) stretched over the photo.

    A boolean grid shows kept tokens clear and pruned tokens dimmed; a float grid is a heatmap
    (`center` makes a diverging map symmetric around it)."""
    pixels = np.asarray(image)
    height, width = pixels.shape[:2]
    ax.imshow(pixels, extent=(0, width, height, 0))
    grid = np.asarray(grid)
    if grid.dtype == bool:
        shade = np.where(grid, np.nan, 1.0)
        ax.imshow(shade, extent=(0, width, height, 0), cmap="Greys", vmin=0, vmax=1.2, alpha=0.75,
                  interpolation="nearest")
        rows, cols = grid.shape
        for r in range(rows + 1):
            ax.axhline(r * height / rows, color="white", lw=0.3, alpha=0.5)
        for c in range(cols + 1):
            ax.axvline(c * width / cols, color="white", lw=0.3, alpha=0.5)
    else:
        if center is not None:
            span = np.nanmax(np.abs(grid - center))
            vmin, vmax = center - span, center + span
        shown = ax.imshow(grid, extent=(0, width, height, 0), cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax,
                          interpolation="nearest")
        if colorbar:
            ax.figure.colorbar(shown, ax=ax, fraction=0.046, pad=0.02)
    ax.set(title=title, xticks=[], yticks=[])
    ax.grid(False)
    return ax


def grids(image, panels: Sequence[tuple[str, np.ndarray]], *, ncols: int = 2, size: float = 3.6,
          title_colors: Sequence[str] | None = None, **options):
    """One `on_image` panel per (title, grid), each title in its colour of `title_colors` (e.g. a
    method's METHOD_COLORS) if given; returns the figure."""
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for i, (ax, (title, grid)) in enumerate(zip(axes.flat, panels)):
        on_image(ax, image, grid, title=title, **options)
        if title_colors is not None:
            ax.title.set_color(title_colors[i])
    for ax in axes.flat[len(panels):]:
        ax.remove()
    fig.tight_layout()
    return fig


def norm_distributions(frame: pd.DataFrame, *, x: str = "norm", hue: str = "resolution",
                       col: str | None = None, col_wrap: int | None = None):
    """Fig. 2a: the L2 norm (informativeness, Eq. 2) of low- vs high-resolution tokens, as
    density-normalised histograms, one panel per `col` value. Returns the seaborn FacetGrid."""
    grid = sns.displot(frame, x=x, hue=hue, col=col, col_wrap=col_wrap, kind="hist", stat="density",
                       common_norm=False, element="step", palette=RESOLUTION_COLORS, height=3, aspect=1.3,
                       facet_kws={"sharex": False, "sharey": False})
    grid.set_axis_labels("L2 norm of the token (Eq. 2)", "density")
    return grid


def by_ratio(frame: pd.DataFrame, *, x: str = "ratio", y: str = "value", hue: str = "method",
             col: str | None = "benchmark", style: str | None = None, col_wrap: int = 4,
             xlabel: str = "pruning ratio", ylabel: str = "score"):
    """Scores (or times) against pruning ratio (or FLOPs reduction, Fig. 4), one panel per
    benchmark (one panel in all if col is None), one line per method. Returns the seaborn FacetGrid."""
    palette = method_palette(frame[hue]) if hue == "method" else None
    grid = sns.relplot(frame, x=x, y=y, hue=hue, style=style, col=col, col_wrap=col_wrap if col else None,
                       palette=palette, kind="line", marker="o", height=2.8, aspect=1.15, facet_kws={"sharey": False})
    grid.set_axis_labels(xlabel, ylabel)
    grid.set_titles("{col_name}")
    return grid


def by_method(frame: pd.DataFrame, *, x: str = "method", y: str = "value", hue: str | None = "source",
              col: str = "benchmark", col_wrap: int = 4, ylabel: str = "score"):
    """Bars of one score per method (reported and measured side by side via `hue`), one panel
    per benchmark; each method's bars and tick label in its METHOD_COLORS colour (the reported bar
    solid, the others hatched). Returns the seaborn FacetGrid."""
    grid = sns.catplot(frame, x=x, y=y, hue=hue, col=col, col_wrap=col_wrap, kind="bar", height=3, aspect=1.1,
                       sharey=False)
    colors = method_palette(frame[x])
    for ax in grid.axes.flat:
        labels = [t.get_text() for t in ax.get_xticklabels()]
        for i, bars in enumerate(ax.containers):
            for bar in bars:  # a bar is centred on its method's tick (0, 1, ...)
                bar.set_facecolor(colors.get(labels[round(bar.get_x() + bar.get_width() / 2)], "#999999"))
                bar.set_hatch("" if i == 0 else "//")
                bar.set_edgecolor("white")
        for tick in ax.get_xticklabels():
            tick.set_color(colors.get(tick.get_text(), "black"))
    if grid.legend is not None:
        for i, handle in enumerate(grid.legend.legend_handles):
            handle.set_facecolor("#999999")
            handle.set_hatch("" if i == 0 else "//")
    grid.set_axis_labels("", ylabel)
    grid.set_titles("{col_name}")
    for ax in grid.axes.flat:
        ax.tick_params(axis="x", rotation=30)
    return grid


VERDICT_COLORS = {"supported": "#1a9850", "within sampling error": "#707070", "contradicted": "#d73027"}


def margins(tests: pd.DataFrame, z: float, *, clip: float = 8.0):
    """Every test of the claims (mrpruner.claims.details rows with a claim column) as a dot at its
    margin / SE, one row per claim, coloured by its state, with the ±z band shaded; values
    beyond ±clip are drawn at the edge as triangles. Returns the figure."""
    tests = tests[tests["z"].notna()]
    order = list(dict.fromkeys(tests["claim"]))
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(order) + 1.4))
    ax.axvspan(-z, z, color="#eeeeee", zorder=0)
    ax.axvline(0, color="#555555", lw=0.8)
    y = tests["claim"].map({claim: i for i, claim in enumerate(order)})
    shown = tests["z"].clip(-clip, clip)
    for state, color in VERDICT_COLORS.items():
        chosen = tests["state"] == state
        inside = chosen & (tests["z"].abs() <= clip)
        ax.scatter(shown[inside], y[inside], s=22, color=color, alpha=0.7, label=state)
        for sign, marker in ((1, ">"), (-1, "<")):
            beyond = chosen & (sign * tests["z"] > clip)
            ax.scatter(shown[beyond], y[beyond], marker=marker, s=30, color=color, alpha=0.8)
    ax.set_yticks(range(len(order)), order)
    ax.invert_yaxis()
    ax.set_xlim(-clip - 0.5, clip + 0.5)
    ax.set_xlabel(f"margin / SE of each test (shaded: within ±{z:g} SE; triangles: beyond ±{clip:g})")
    ax.legend(loc="lower left", fontsize="small", framealpha=0.9)
    fig.tight_layout()
    return fig


VERDICT_TINTS = {"supported": "#dcefdc", "within sampling error": "#ececec", "contradicted": "#f6d5d1"}


def verdict_table(frame: pd.DataFrame, caption: str, states: pd.DataFrame):
    """`table` of `frame` with each cell tinted by the verdict in the same place of `states`."""
    styles = states.map(lambda v: f"background-color: {VERDICT_TINTS[v]}; color: {VERDICT_COLORS[v]}")
    return table(frame, caption).apply(lambda _: styles.to_numpy(), axis=None)


def claims_table(verdicts: pd.DataFrame, caption: str):
    """The claims table (mrpruner.claims.table) as the book shows it: per claim its id and section,
    the sentence and the statement checked, the verdict (tinted) and the verdict as printed, how
    many parts hold, and the weakest test's margin +- SE. Returns a pandas Styler."""
    def margin(row) -> str:
        if pd.isna(row["SE"]):
            return f"{row['quantity']:.2f} (no SE)"
        return f"{row['margin']:+.2f} ± {row['SE']:.2f} ({row['margin / SE']:+.1f} SE)"

    small = "<br><small>{}</small>".format
    reading = verdicts["reading"].map(lambda r: small(f"reading: {r}") if r else "")
    shown = pd.DataFrame({
        "claim": "<b>" + verdicts["id"] + "</b>" + verdicts["section"].map(small),
        "the paper says; the statement checked": ("<i>“" + verdicts["quote"] + "”</i><br>" + verdicts["statement"]
                                                  + reading),
        "verdict": verdicts["verdict"] + verdicts["as printed"].map(
            lambda v: f'<br><small style="font-weight: normal; color: #333">as printed: {v}</small>'),
        "parts holding": [f"{h} of {n}" + small(f"{b} beyond SE, {f} against") for h, n, b, f in
                          verdicts[["hold as printed", "parts", "hold beyond SE", "fail beyond SE"]].values],
        "weakest test": verdicts["weakest test"] + verdicts.apply(margin, axis=1).map(small),
    })
    tint = [f"background-color: {VERDICT_TINTS[v]}; color: {VERDICT_COLORS[v]}; font-weight: bold"
            for v in verdicts["verdict"]]
    return (shown.style.hide(axis="index").set_caption(caption)
            .apply(lambda column: tint, subset=["verdict"])
            .set_table_styles([{"selector": "th, td", "props": "padding: 0.3em 0.5em; text-align: left; "
                                                               "vertical-align: top; font-size: 0.85em;"},
                               {"selector": "caption", "props": "caption-side: top; text-align: left;"}]))


def table(frame: pd.DataFrame, caption: str, *, digits: int = 2):
    """A DataFrame as the book shows it: numbers to `digits` decimals, a "ratio" level of the index
    or columns as a percentage, and a caption saying where the numbers come from. Returns a pandas
    Styler."""
    styler = frame.style.format(precision=digits, na_rep="")
    for axis, names in ((0, frame.index.names), (1, frame.columns.names)):
        if "ratio" in names:
            styler = styler.format_index(lambda r: f"{r:.0%}", axis=axis, level="ratio")
    return styler.set_caption(caption).set_table_styles([
        {"selector": "th, td", "props": "padding: 0.15em 0.6em; text-align: right;"},
        {"selector": "caption", "props": "caption-side: top; text-align: left; font-size: 0.85em;"},
    ])


# What a chapter shows of each cell of its own sweep (mrpruner.results.load_results columns).
SWEEP_COLUMNS = ["label", "ratio", "protocol", "task", "score", "samples", "throughput", "image_kept_tokens",
                 "image_visual_tokens", "flops_reduction", "prefill_ms"]


def sweep_table(frame: pd.DataFrame | None, folder: str):
    """A chapter's own sweep cells (`mrpruner.analysis.measurements(...).sweep`) captioned with
    their provenance and results folder; a line saying nothing was measured when there is none."""
    from IPython.display import Markdown

    if frame is None or frame.empty:
        return Markdown(f"*Not measured*: no results in `{folder}`.")
    shown = frame[SWEEP_COLUMNS].set_index(["label", "ratio", "protocol", "task"])
    return table(shown, f"{sources(frame)}; from {folder}. image_kept_tokens / image_visual_tokens: "
                        "visual tokens per image the language model received / the image had; flops_reduction: "
                        "of the language model's prefill (scope 'llm')", digits=3)


def sources(frame: pd.DataFrame) -> str:
    """The provenance of a `mrpruner.results.load_results` frame in one line: each distinct source
    once, then the dates the cells span."""
    undated = sorted({label.removesuffix(f"; {date}") for label, date in zip(frame["provenance"], frame["date"])})
    dates = f"{frame['date'].min()}" + ("" if frame["date"].nunique() == 1 else f" to {frame['date'].max()}")
    return f"{'; '.join(undated)}; {dates}"


KIND_TITLES = {"overview": "overview questions\n(the base image holds the answer)",
               "detail": "detail questions\n(only the grid resolves the answer)", "all": "all questions"}


def _kind_axes(kinds: Sequence[str], width: float, height: float):
    fig, axes = plt.subplots(1, len(kinds), figsize=(width * len(kinds), height), squeeze=False, sharey=True)
    return fig, dict(zip(kinds, axes[0]))


def _guides(ax: Axes, kind: str, reference: dict | None, chance: dict | None, vertical: bool) -> None:
    """The unpruned model's accuracy (dashed) and chance (dotted) as lines across a panel."""
    line = ax.axvline if vertical else ax.axhline
    if reference and kind in reference:
        line(reference[kind], color=METHOD_COLORS["unpruned"], ls="--", lw=1, label="all tokens")
    if chance and kind in chance:
        line(chance[kind], color="#999999", ls=":", lw=1.2, label="chance")


def mini_dots(frame: pd.DataFrame, *, x: str = "accuracy", kinds: Sequence[str] = ("overview", "detail"),
              reference: dict | None = None, chance: dict | None = None, xlabel: str = "accuracy (95% CI)",
              width: float = 4.6):
    """One dot per row `label` with its 95% interval (`ci_low`, `ci_high`), one panel per question
    kind, in each method's colour; `reference` (the unpruned accuracy per kind) and `chance` drawn
    as lines. For the miniature's tables: differences read off a shared axis, not bar heights."""
    labels = list(dict.fromkeys(frame["label"]))
    palette = method_palette(labels)
    fig, axes = _kind_axes(kinds, width, 0.45 * len(labels) + 1.4)
    for kind, ax in axes.items():
        part = frame[frame["kind"] == kind].set_index("label").reindex(labels)
        y = np.arange(len(labels))
        for i, label in enumerate(labels):
            row = part.loc[label]
            ax.errorbar(row[x], i, xerr=[[row[x] - row["ci_low"]], [row["ci_high"] - row[x]]], fmt="o",
                        color=palette[label], capsize=3, ms=7)
        _guides(ax, kind, reference, chance, vertical=True)
        ax.set(yticks=y, yticklabels=labels, title=KIND_TITLES.get(kind, kind), xlabel=xlabel, ylim=(len(labels) - 0.5, -0.5))
    handles, names = next(iter(axes.values())).get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=len(names), frameon=False)
    fig.tight_layout()
    return fig


def mini_lines(frame: pd.DataFrame, *, x: str = "ratio", y: str = "accuracy",
               kinds: Sequence[str] = ("overview", "detail"), reference: dict | None = None,
               chance: dict | None = None, xlabel: str = "pruning ratio", ylabel: str = "accuracy (95% CI)",
               width: float = 4.6):
    """`y` (accuracy, with its 95% interval; or e.g. recall) against `x` (pruning ratio, or FLOPs
    reduction), one line per `label` in its method's colour, one panel per question kind;
    `reference` and `chance` as in `mini_dots`."""
    palette = method_palette(frame["label"])
    fig, axes = _kind_axes(kinds, width, 3.6)
    for kind, ax in axes.items():
        part = frame[frame["kind"] == kind]
        for label, rows in part.groupby("label", sort=False):
            rows = rows.sort_values(x)
            error = [rows[y] - rows["ci_low"], rows["ci_high"] - rows[y]] if y == "accuracy" else None
            ax.errorbar(rows[x], rows[y], yerr=error, fmt="-o", color=palette[label], capsize=3, ms=5, label=label)
        _guides(ax, kind, reference, chance, vertical=False)
        ax.set(title=KIND_TITLES.get(kind, kind), xlabel=xlabel, ylabel=ylabel)
    handles, names = next(iter(axes.values())).get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(4, len(names)), frameon=False)
    fig.tight_layout()
    return fig


def outline(fig, box: tuple[float, float, float, float], *, color: str = "#00e5ff") -> None:
    """Outline `box` (x0, y0, x1, y1 in image pixels: e.g. a miniature question's answer region)
    on every picture of `fig` (the panels of `grids`)."""
    from matplotlib.patches import Rectangle

    x0, y0, x1, y1 = box
    for ax in fig.axes:
        if ax.images:
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, lw=2))
