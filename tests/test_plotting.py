"""The book's figures (mrpruner.plotting) as a reader sees them: each method in one colour and
marker everywhere, no two labels overlapping, no text under MIN_TEXT_PX at the page's width,
token grids with a kept/pruned legend and difference maps on a diverging map centred at 0."""

import json
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex

from mrpruner import claims, methods, palette, paper, plotting
from mrpruner.testing import sample_images

matplotlib.use("Agg")
REPORTED, MEASURED = "reported in the paper", "measured here"
LATENCY = Path(__file__).resolve().parent.parent / "results" / "latency" / "llava-next-8b-bf16-cpu.json"  # shipped


@pytest.fixture(autouse=True)
def style():
    plotting.setup()
    yield
    matplotlib.pyplot.close("all")


def readable(fig) -> None:
    """The figure as the book shows it: no overlapping labels, no text below MIN_TEXT_PX."""
    assert plotting.overlapping_text(fig) == []
    assert plotting.smallest_text_px(fig) >= plotting.MIN_TEXT_PX


def table2_differences(measured: pd.DataFrame | None = None) -> pd.DataFrame:
    """Table 2 and its Table 1 context (unpruned, 90%) as the extreme-pruning chapter draws them."""
    reported, table1 = paper.reported(2), paper.reported(1)
    context = table1[table1["benchmark"].isin(reported["benchmark"])
                     & (table1["method"].eq("LLaVA-NeXT-8B") | table1["method"].isin(reported["method"])
                        & table1["ratio"].eq(0.9))]
    measured = measured if measured is not None else pd.DataFrame(
        columns=["method", "ratio", "benchmark", "value", "provenance"])
    long = paper.long_form(paper.compare(pd.concat([reported, context]), measured))
    return paper.differences(long, "LLaVA-NeXT-8B")


def test_overlapping_text_finds_colliding_labels_and_ignores_undrawn_ticks():
    fig, axes = matplotlib.pyplot.subplots(1, 2, figsize=(6, 3), layout="constrained")
    for ax in axes:
        ax.set_xlabel("FLOPs reduction (%), language-model prefill (computed here)")
    assert ("FLOPs reduction (%), language-model prefill (computed here)",) * 2 in plotting.overlapping_text(fig)
    fig, ax = matplotlib.pyplot.subplots(figsize=(4, 3), layout="constrained")
    ax.plot([0, 1], [0, 1])
    ax.set_xlim(0.2, 0.8)  # the locator's ticks at 0 and 1 are not drawn
    assert plotting.overlapping_text(fig) == []


def test_smallest_text_is_measured_at_the_pages_width():
    fig, ax = matplotlib.pyplot.subplots(figsize=(plotting.PAGE_WIDTH, 2), layout="constrained")
    ax.set_title("title")
    assert plotting.smallest_text_px(fig) == pytest.approx(8.8 * plotting.DPI / 72)  # tick labels, shown as drawn
    fig.set_size_inches(2 * plotting.PAGE_WIDTH, 2)  # twice the page: shown at half its size
    assert plotting.smallest_text_px(fig) == pytest.approx(8.8 * plotting.DPI / 72 / 2, rel=0.05)


def test_one_colour_and_marker_per_method_in_every_plot():
    frame = pd.DataFrame({"method": ["FastV", "FastV", "MR-Pruner", "MR-Pruner"], "ratio": [0.5, 0.9] * 2,
                          "value": [1.0, 2.0, 3.0, 4.0], "benchmark": "GQA"})
    lines = [line for line in plotting.by_ratio(frame).axes[0].get_lines() if len(line.get_xdata()) == 2]
    assert {(to_hex(line.get_color()), line.get_marker()) for line in lines} == {
        palette.METHODS[m] for m in ("FastV", "MR-Pruner")}
    fig = plotting.differences(table2_differences(), "LLaVA-NeXT-8B (unpruned)")
    dots = {to_hex(line.get_color()) for ax in fig.axes for line in ax.get_lines() if line.get_linestyle() == "None"}
    assert dots == {palette.METHODS[m].color for m in ("FastV", "G-Prune", "MR-Pruner")}
    labels = {t.get_text(): to_hex(t.get_color()) for t in fig.axes[0].get_yticklabels()}
    assert labels == {m: palette.METHODS[m].color for m in ("FastV", "G-Prune", "MR-Pruner")}
    assert plotting.method_palette(["ToMe", "my rule"]) == {"ToMe": palette.METHODS["ToMe"].color,
                                                             "my rule": palette.EXERCISE["my rule"].color}
    assert plotting.method_markers(["MR-Pruner [-IR]", "FastV"]) == {
        "MR-Pruner [-IR]": palette.ABLATION_MARKERS["[-IR]"], "FastV": palette.METHODS["FastV"].marker}
    red = palette.METHODS["MR-Pruner"].color
    fig = plotting.grids(np.zeros((8, 8, 3)), [("MR-Pruner", np.ones((2, 2), bool))], ncols=1, title_colors=[red])
    assert to_hex(fig.axes[0].title.get_color()) == red


def test_by_ratio_keeps_equal_lines_apart_and_wants_one_value_per_point():
    frame = pd.DataFrame({"method": ["Random", "ToMe", "FastV"], "ratio": 0.9, "value": 5.0, "benchmark": "GQA"})
    xs = [line.get_xdata()[0] for line in plotting.by_ratio(frame, dodge=0.01).axes[0].get_lines()[:3]]
    assert xs == pytest.approx([0.89, 0.9, 0.91])
    with pytest.raises(ValueError, match="more than one value per"):
        plotting.by_ratio(pd.concat([frame, frame]))


def test_by_ratio_shares_one_y_axis_and_draws_the_spread_when_asked():
    frame = pd.DataFrame({"method": "FastV", "ratio": [0.5, 0.9] * 2, "benchmark": ["GQA"] * 2 + ["TextVQA"] * 2,
                          "value": [99.0, 97.0, 98.0, 80.0], "low": [98.0, 95.0, 97.0, 78.0],
                          "high": [99.5, 98.0, 99.0, 82.0]})
    free, shared = plotting.by_ratio(frame), plotting.by_ratio(frame, sharey=True, low="low", high="high")
    assert free.axes[0].get_ylim() != free.axes[1].get_ylim()
    assert shared.axes[0].get_ylim() == shared.axes[1].get_ylim() and shared.axes[1].get_ylim()[0] < 78.0
    bars = [c for c in shared.axes[1].collections if len(c.get_segments()) == 2]  # one error bar per point
    assert [tuple(seg[:, 1]) for seg in bars[0].get_segments()] == [(97.0, 99.0), (78.0, 82.0)]


def test_differences_draw_each_source_and_ratio():
    measured = pd.DataFrame({"method": ["LLaVA-NeXT-8B", "MR-Pruner"], "ratio": [0.0, 0.95], "benchmark": "GQA",
                             "value": [64.0, 57.0], "provenance": "measured here: test"})
    fig = plotting.differences(table2_differences(measured), "LLaVA-NeXT-8B (unpruned)")
    gqa = next(ax for ax in fig.axes if ax.get_title() == "GQA")
    hollow = [line for line in gqa.get_lines() if line.get_marker() == palette.SOURCE_MARKERS[MEASURED]]
    assert [(line.get_xdata()[0], to_hex(line.get_markerfacecolor())) for line in hollow] == [(-7.0, "#ffffff")]
    solid = [line for line in gqa.get_lines() if line.get_marker() == palette.SOURCE_MARKERS[REPORTED]]
    assert len(solid) == 6  # three methods at 90% and 95%
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == [REPORTED, MEASURED, "90% → 95% pruning (the 95% dot largest)"]


def test_grids_show_kept_tokens_as_the_photo_and_heatmaps_on_one_scale_beside_it():
    image = sample_images()["coffee"]
    rng = np.random.default_rng(0)
    kept = rng.random((24, 24)) > 0.9
    fig = plotting.grids(image, [("kept", kept)], ncols=1)
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["kept token (the photo shows)", "pruned token (grey)"]
    (photo, mask), = [ax.get_images() for ax in fig.axes]
    pruned = np.argwhere(~kept)[0]
    assert mask.get_array()[tuple(pruned)][3] == 1  # a pruned token hides the photo entirely
    assert mask.get_array()[tuple(np.argwhere(kept)[0])][3] == 0  # a kept one shows it
    fig = plotting.grids(image, [("score", rng.random((24, 24))), ("raise", 3 + rng.random((24, 24)))], colorbar=True,
                         ncols=3)
    assert [ax.get_title() for ax in fig.axes if ax.get_images()] == ["the photo", "score", "raise"]
    photo, score, raised = (ax.get_images()[0] for ax in fig.axes if ax.get_images())
    assert photo.get_array().ndim == 3 and score.get_array().ndim == 2  # the heatmap is not drawn over the photo
    assert score.norm.vmin == raised.norm.vmin and score.norm.vmax == raised.norm.vmax  # one colour scale
    assert score.norm.vmax > 3 > score.norm.vmin


def test_grids_outline_where_the_answer_lies_on_every_panel():
    from matplotlib.patches import Rectangle

    image = sample_images()["coffee"]
    rng = np.random.default_rng(0)
    fig = plotting.grids(image, [("a", rng.random((24, 24))), ("b", rng.random((24, 24)) > 0.5)], box=(10, 20, 60, 90))
    for ax in fig.axes[:3]:
        (box,) = [p for p in ax.patches if isinstance(p, Rectangle)]
        assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (10, 20, 50, 70)
    assert "where the answer lies" in [t.get_text() for t in fig.legends[0].get_texts()]
    readable(fig)


def test_every_figure_of_the_book_is_readable_at_the_pages_width():
    """The chapters' figures, drawn from the data they draw (the paper's tables, the shipped latency
    run, a photo): no overlapping labels, no text under MIN_TEXT_PX."""
    table1 = paper.reported(1)
    scores = table1[table1["unit"] == "score"].copy()
    base = scores[scores["method"] == "LLaVA-NeXT-8B"].set_index("benchmark")["value"]
    scores["% of unpruned"] = 100 * scores["value"] / scores["benchmark"].map(base)
    readable(plotting.by_ratio(scores[scores["method"] != "LLaVA-NeXT-8B"], y="% of unpruned", reference=100.0,
                               reference_label="LLaVA-NeXT-8B (unpruned)", title=paper.provenance(1)))
    fig4 = pd.concat([table1, paper.reported(2)])
    fig4 = fig4[fig4["benchmark"].isin(["GQA", "MMB-EN", "MME", "TextVQA"])
                & fig4["method"].isin(["FastV", "G-Prune", "MR-Pruner"])].copy()
    fig4["FLOPs"] = [100 * methods.flops_reduction(paper.METHODS[m], r, n_text=64) for m, r in zip(fig4["method"],
                                                                                                 fig4["ratio"])]
    readable(plotting.by_ratio(fig4, x="FLOPs", col_wrap=2, reference=base.to_dict(), reference_label="unpruned",
                               xlabel="FLOPs reduction (%) of the language model's prefill (computed here)",
                               title="x: mrpruner.flops; y: " + paper.provenance(1)))
    rows = pd.DataFrame(json.loads(LATENCY.read_text())["rows"])
    rows = rows[rows["method"] != "none"].assign(method=lambda r: r["method"].map(paper.LABELS))
    readable(plotting.by_ratio(rows, y="vs_unpruned", col=None, dodge=0.12, aspect=2.0, reference=1.0, categorical=True,
                               reference_label="unpruned (1×)", ylabel="prefill speed-up over unpruned (×)"))
    readable(plotting.differences(table2_differences(), "LLaVA-NeXT-8B (unpruned)", title=paper.provenance(2)))
    table3 = paper.differences(paper.long_form(paper.compare(paper.reported(3), pd.DataFrame(
        columns=["method", "ratio", "benchmark", "value", "provenance"]))), "MR-Pruner")
    readable(plotting.differences(table3, "MR-Pruner (all components)", title=paper.provenance(3)))
    image = sample_images()["coffee"]
    rng = np.random.default_rng(0)
    readable(plotting.grids(image, [("$S^L$", rng.random((24, 24))), (r"$\bar S^L$", rng.random((24, 24))),
                                    (r"raised by cross-resolution scoring, $\alpha S^C$", rng.random((24, 24)))],
                            ncols=2, colorbar=True))
    readable(plotting.grids(image, [(f"G-Prune: {r} resolution", rng.random((24, 36)) > 0.9) for r in ("low", "high")]))
    norms = pd.DataFrame({"norm": rng.normal(1, 0.1, 400), "resolution": ["low", "high"] * 200})
    readable(plotting.norm_distributions(norms))
    readable(plotting.margins(claims.tests(1.96), 1.96))


def test_answers_table_says_the_shared_post_prompt_once():
    answers = pd.DataFrame({"question": ["What animal?\nAnswer in a word.", "What drink?\nAnswer in a word."],
                            "answer": ["cat", None], "both": ["cat", "tea"], "score_both": [1.0, 0.0],
                            "low": ["dog", "tea"], "score_low": [0.0, 0.0], "high": ["cat", "coffee"],
                            "score_high": [1.0, 1 / 3]})
    styler = plotting.answers_table(answers, "Answers.")
    assert styler.data["question"].tolist() == ["What animal?", "What drink?"]
    assert styler.data.loc[1, ["target", "high"]].tolist() == ["", "coffee (0.33)"]
    assert list(styler.data.columns) == ["question", "target", "both", "low", "high"]
    assert styler.caption == "Answers. Every question ends with: Answer in a word."


def test_the_miniature_plots_are_readable_at_the_pages_width():
    rows = [{"label": label, "ratio": r, "kind": kind, "accuracy": a, "ci_low": a - 0.05, "ci_high": a + 0.05,
             "recall": a, "flops_reduction": 100 * r}
            for label, a in (("Random", 0.5), ("ToMe", 0.55), ("FastV", 0.6), ("G-Prune", 0.65), ("MR-Pruner", 0.7),
                             ("MR-Pruner [-IR -CR -IA]", 0.4), ("DivPrune", 0.45))
            for r in (0.5, 0.7, 0.9, 0.95) for kind in ("overview", "detail")]
    frame = pd.DataFrame(rows)
    guides = {"reference": {"overview": 0.8, "detail": 0.9}, "chance": {"overview": 1 / 6, "detail": 1 / 4}}
    readable(plotting.mini_dots(frame[frame["ratio"] == 0.9], title="measured on the miniature (trained here), "
                                "a provenance line as long as the book's: device, versions and date", **guides))
    readable(plotting.mini_lines(frame, **guides, title="Table 1 on the miniature: accuracy against pruning ratio"))
    readable(plotting.mini_lines(frame, x="flops_reduction", y="recall", xlabel="FLOPs reduction (%)"))


def test_a_table_too_wide_for_the_page_comes_in_parts_that_ipython_shows_cleanly():
    """Scores with their intervals stay on one line (no-break spaces), so a wide table is split into
    tables one under the other, each with the index; IPython shows the parts as HTML, no warning."""
    import warnings

    from IPython.core.formatters import DisplayFormatter

    frame = pd.DataFrame({f"score: kind {i}": ["0.85\u00a0[0.80,\u00a00.90]\u00a0(0.80-0.90)"] * 3 for i in range(4)},
                         index=pd.Index(["Random", "ToMe", "FastV"], name="label"))
    shown = plotting.table(frame, "a caption")
    assert len(shown.parts) == 2 and all(len(part.data.columns) == 2 for part in shown.parts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data, _ = DisplayFormatter().format(shown)
    assert set(data) == {"text/plain", "text/html"} and "(continued, 2 of 2)" in data["text/html"]
    assert not hasattr(shown, "_repr_latex_")
    assert not hasattr(plotting.table(frame.iloc[:, :2], "a caption"), "parts")  # two fit the page


def test_token_maps_name_methods_and_columns_readably():
    image = sample_images()["coffee"]
    rng = np.random.default_rng(0)
    labels = ["Random", "MR-Pruner (released)"]
    maps = {label: [rng.random((27, 27)) > 0.5, rng.random((36, 54)) > 0.5, rng.random((27, 27)) > 0.9,
                    rng.random((81, 81)) > 0.9] for label in labels}
    columns = ["base, 50% pruned", "grid, 50% pruned", "base, 90% pruned", "grid, 90% pruned"]
    fig = plotting.token_maps(image, maps, columns, title="InternVL (tiny-internvl): the tokens each method keeps")
    readable(fig)
    assert [ax.get_title() for ax in fig.axes[:4]] == columns and not any(ax.get_title() for ax in fig.axes[4:])
    names = [ax.get_ylabel() for ax in fig.axes[::4]]
    assert names == ["Random", "MR-Pruner\n(released)"]
    assert [to_hex(ax.yaxis.label.get_color()) for ax in fig.axes[::4]] == [palette.METHODS[m].color for m in
                                                                            ("Random", "MR-Pruner (released)")]
    lines = [len(ax.get_lines()) for ax in fig.axes[:4]]
    assert lines[0] == 27 + 1 + 27 + 1 and lines[3] == 0  # a line between tokens only where a token is 4 px or more
    empty = plotting.token_maps(image, {"Random": [np.zeros((0, 0), bool), maps["Random"][1]]}, columns[:2])
    assert [t.get_text() for t in empty.axes[0].texts] == ["no tokens"] and not empty.axes[1].texts
    readable(empty)
    with pytest.raises(ValueError, match=r"maps must give one grid per column \(4"):
        plotting.token_maps(image, {"Random": maps["Random"][:3]}, columns)


def test_panels_that_compare_share_their_axis_and_no_model_hides_another():
    """Issue 31's figure faults: shared axes where panels are compared, every model's marker visible
    when the models agree, categorical ratios not joined into a trend, and every legend entry
    recorded for the book's palette check."""
    from mrpruner.analysis import sweeps

    measured = sweeps.task_frame(sweeps.chapter_sweep(
        "mini_table1", model=["mini", "mini-seed1", "mini-seed2"], device="cpu", recompute=False,
        tasks=["mrpruner_mini_overview", "mrpruner_mini_detail"]))
    frame = measured[(measured["label"] == "grid only")
                     | measured["label"].isin(["Random", "MR-Pruner"]) & measured["ratio"].eq(0.9)]
    fig = plotting.mini_dots(frame)
    overview, detail = fig.axes[:2]
    assert overview.get_xlim() == detail.get_xlim()  # one scale: 0.2 and 1.0 read off the same axis
    hollow = [line for line in detail.get_lines() if line.get_markerfacecolor() == "none"]
    for line in hollow:  # three models scoring alike: three markers, none on top of another
        points = list(zip(line.get_xdata(), line.get_ydata()))
        assert len(set(points)) == len(points) == 3
    labels = [text.get_text() for text in fig.legends[0].get_texts()]
    assert "filled: the mean of the 3 models" in labels and "hollow: each model" in labels
    speed = pd.DataFrame({"method": ["Random", "Random", "FastV", "FastV"], "ratio": [0.9, 0.95, 0.9, 0.95],
                          "value": [6.0, 9.0, 5.0, 6.0]})
    fig = plotting.by_ratio(speed, col=None, categorical=True, dodge=0.1)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["90%", "95%"]
    assert all(line.get_linestyle() in ("None", "none", "") for line in ax.get_lines())  # not joined
    assert ("FastV", palette.METHODS["FastV"].color) in plotting.legend_entries(fig)


def test_the_book_build_records_every_figures_legend(tmp_path, monkeypatch):
    log = tmp_path / "legends.jsonl"
    monkeypatch.setenv(plotting.LEGENDS_ENV, str(log))
    tasks = pd.DataFrame({"task": ["overview", "overview", "detail", "detail"], "ratio": [0.5, 0.9] * 2,
                          "overlap": [0.8, 0.1, 0.9, 0.2], "resolution": "low"})
    plotting.by_ratio(tasks, y="overlap", hue="task", col="resolution")
    (record,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert record["figure"] == "by_ratio"
    assert {label for label, _ in record["entries"]} == {"overview", "detail"}
    assert all(palette.neutral(colour) for _, colour in record["entries"])  # tasks are not methods: no hue


def test_a_legend_reads_in_its_order_row_by_row():
    import matplotlib.backends.backend_agg
    import matplotlib.figure
    import matplotlib.lines

    labels = ["Random", "ToMe", "FastV", "G-Prune", "MR-Pruner", "LLaVA-NeXT-8B"]
    for ncols in range(1, 7):
        fig = matplotlib.figure.Figure()
        matplotlib.backends.backend_agg.FigureCanvasAgg(fig)
        legend = fig.legend(handles=plotting._row_major([matplotlib.lines.Line2D([], [], label=k) for k in labels],
                                                        ncols), ncols=ncols)
        fig.canvas.draw()
        rows = sorted({round(t.get_window_extent().y0 / 5) for t in legend.get_texts()}, reverse=True)
        shown = sorted(legend.get_texts(), key=lambda t: (rows.index(round(t.get_window_extent().y0 / 5)),
                                                          t.get_window_extent().x0))
        assert [t.get_text() for t in shown] == labels, ncols
