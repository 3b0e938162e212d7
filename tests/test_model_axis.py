"""The sweeps' model axis: several miniatures trained alike, their mean with a pooled interval and
the range across them (`mrpruner.analysis.sweeps.across_models`), figures that draw each model, and
sentences that say on how many models a comparison holds."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from mrpruner import book, models, plotting, results, rule
from mrpruner.analysis import statements, sweeps


def rows(model, label, kind, scores, ratio=0.9):
    """A `task_frame` row of one model from its per-document scores (0/1), with its own interval."""
    low, high = rule.interval([scores])
    return {"model": model, "label": label, "method": label.lower(), "options": "{}", "ratio": ratio, "kind": kind,
            "accuracy": float(np.mean(scores)), "ci_low": low, "ci_high": high, "recall": None, "kept_tokens": 10.0,
            "tokens": 100.0, "flops_reduction": 0.8, "n": len(scores), "doc_scores": dict(enumerate(scores))}


def scores(right, n=100):
    return [1.0] * right + [0.0] * (n - right)


def detail_cell(model, label, values):
    """A sweep cell of the detail task with its per-document scores (for `complementarity`)."""
    return {"model": model, "label": label, "task": "mrpruner_mini_detail", "benchmark": "b",
            "doc_scores": dict(enumerate(values))}


@pytest.fixture
def two_models():
    return pd.DataFrame([rows("a", "Random", "detail", scores(40)), rows("a", "G-Prune", "detail", scores(90)),
                         rows("b", "Random", "detail", scores(50)), rows("b", "G-Prune", "detail", scores(80)),
                         rows("a", "Random", "overview", scores(90)), rows("a", "G-Prune", "overview", scores(60)),
                         rows("b", "Random", "overview", scores(70)), rows("b", "G-Prune", "overview", scores(75))])


def test_across_models_gives_the_mean_an_interval_over_models_and_questions_and_the_range(two_models):
    mean = sweeps.across_models(two_models).set_index(["label", "kind"])
    row = mean.loc[("G-Prune", "detail")]
    assert row["accuracy"] == pytest.approx(0.85) and (row["model_low"], row["model_high"]) == (0.8, 0.9)
    assert row["models"] == 2 and row["n"] == 200
    assert (row["ci_low"], row["ci_high"]) == rule.interval([scores(90), scores(80)])  # models, then questions
    pooled = rule.interval([scores(90) + scores(80)])  # the questions alone: narrower, it ignores the models
    assert row["ci_low"] < pooled[0] and row["ci_high"] > pooled[1]
    one = sweeps.across_models(two_models[two_models["model"] == "a"]).set_index(["label", "kind"])
    assert one.loc[("G-Prune", "detail"), "ci_low"] == two_models.iloc[1]["ci_low"]  # one model: its own interval
    assert list(mean.index) == [("Random", "detail"), ("G-Prune", "detail"), ("Random", "overview"),
                                ("G-Prune", "overview")]  # the frame's order


def test_the_score_table_shows_each_models_score(two_models):
    table = sweeps.score_table(two_models)
    cell = table.loc[("G-Prune", 0.9), "score: detail"].replace("\u00a0", " ")
    assert cell.startswith("0.85 [") and cell.endswith("]") and "\n" not in cell
    assert table.loc[("G-Prune", 0.9), "each model: detail"] == "0.90\u00a00.80"
    single = sweeps.score_table(two_models[two_models["model"] == "a"])
    assert single.loc[("G-Prune", 0.9), "score: detail"].endswith("]") and "each model: detail" not in single


def test_agreement_words_the_rule_in_both_directions_with_each_model(two_models):
    above = statements.agreement(two_models, "G-Prune", "Random", 0.9, "detail")
    assert above.startswith("G-Prune above Random by 0.40\u00a0[") and "above on 2 of 2" in above
    assert "a 0.90 against 0.40" in above and "b 0.80 against 0.50" in above
    below = statements.agreement(two_models, "Random", "G-Prune", 0.9, "detail")
    assert below.startswith("Random below G-Prune by 0.40\u00a0[") and "below on 2 of 2" in below
    mixed = statements.agreement(two_models, "G-Prune", "Random", 0.9, "overview")  # -0.30 on a, +0.05 on b
    assert mixed.startswith("G-Prune and Random tie (difference -0.12\u00a0[") and "below on 1" in mixed
    assert statements.agreement(two_models, "G-Prune", "ToMe", 0.9, "detail") is None


def test_findings_name_a_first_place_only_above_every_other(two_models):
    lines = statements.findings(two_models, 0.9)
    detail = next(line for line in lines if line.startswith("- Detail questions"))
    assert "G-Prune 0.85\u00a0[" in detail and "G-Prune is first, above every other" in detail
    overview = next(line for line in lines if line.startswith("- Overview questions"))
    assert "all 2 tie under the rule" in overview and "first" not in overview


def test_differences_subtract_each_models_own_unpruned_score(two_models):
    frame = pd.concat([two_models, pd.DataFrame([rows("a", sweeps.UNPRUNED, "detail", scores(95), 0.0),
                                                 rows("b", sweeps.UNPRUNED, "detail", scores(85), 0.0)])])
    drop = sweeps.difference(frame[frame["kind"] == "detail"]).set_index(["model", "label"])
    assert drop.loc[("a", "G-Prune"), "accuracy"] == pytest.approx(-5.0)
    assert drop.loc[("b", "G-Prune"), "accuracy"] == pytest.approx(-5.0)
    assert drop.loc[("b", "Random"), "doc_scores"][0] == pytest.approx(100 * (1.0 - 0.85))
    pooled = sweeps.across_models(drop.reset_index()).set_index("label")
    assert pooled.loc["G-Prune", "ci_low"] < -5.0 < pooled.loc["G-Prune", "ci_high"]


def test_complementarity_pools_the_models_documents():
    frame = pd.DataFrame([detail_cell("a", "base only", [1, 0]), detail_cell("a", "grid only", [0, 1]),
                          detail_cell("b", "base only", [0, 0]), detail_cell("b", "grid only", [1, 1])])
    table = sweeps.complementarity(frame)
    assert table.loc["detail", "documents"] == 4 and table.loc["detail", "low resolution only"] == 0.25


@pytest.mark.parametrize("draw", ["lines", "dots"])
def test_figures_draw_each_model_beside_the_mean(two_models, draw):
    plotting.setup()
    if draw == "lines":
        fig = plotting.mini_lines(two_models, kinds=["overview", "detail"])
    else:
        fig = plotting.mini_dots(two_models, kinds=["overview", "detail"])
    hollow = [line for ax in fig.axes for line in ax.get_lines()
              if line.get_linestyle() == "None" and line.get_markerfacecolor() == "none"]
    assert sum(len(line.get_xdata()) for line in hollow) == len(two_models)  # one hollow marker per model and cell
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert "filled: the mean of the 2 models" in legend and "hollow: each model" in legend
    assert plotting.coinciding_markers(fig) == []
    plt.close(fig)
    fig = plotting.mini_lines(two_models[two_models["model"] == "a"], kinds=["overview", "detail"])
    assert not [line for ax in fig.axes for line in ax.get_lines() if line.get_markerfacecolor() == "none"]
    plt.close(fig)


@pytest.mark.parametrize("bad", [[], ["mini", "mini"], ["mini", "nope"], 3])
def test_a_bad_list_of_models_is_refused(bad):
    with pytest.raises(ValueError, match="model"):
        models.check_models(bad)
    with pytest.raises(ValueError, match="model"):
        book.check_params(model=bad, several_models=True)


def test_a_list_of_models_is_only_taken_where_a_chapter_runs_several():
    assert models.check_models("mini") == ["mini"]
    assert models.check_models(["mini", "mini-seed1"]) == ["mini", "mini-seed1"]
    with pytest.raises(ValueError, match="model must be"):
        book.check_params(model=["mini", "mini-seed1"])
    with pytest.raises(ValueError, match="results_dir must be None with several models"):
        sweeps.chapter_sweep("mini_table1", model=["mini", "mini-seed1"], tasks=["mrpruner_mini_detail"],
                               device="cpu", results_dir="somewhere", recompute=False)
    assert sweeps.models_label(["mini", "mini-seed1"]) == "2 models (mini, mini-seed1)"
    assert sweeps.models_label("mini") == "mini"


def test_the_model_note_names_every_model_and_what_the_interval_covers():
    from mrpruner.testing import tiny_llava_next

    net, _ = tiny_llava_next()
    note = book.model_note(["mini", "mini-seed1", "mini-seed2"], net).data
    assert "3 miniatures trained here by one recipe" in note and "`mini-seed2`" in note
    assert "intervals cover the models and their questions" in note and "Figures draw each model" in note
    assert 'task "marks"' in note


def test_the_provenance_names_each_setting_once_with_its_models_and_commits():
    def cell(model, commit, date):
        return {"model": model, "dtype": "float32", "device": "CPU X", "limit": None, "seed": 0, "torch": "2.14.1",
                "transformers": "5.23.0", "lmms_eval": "0.7.3", "mrpruner": "0.1.0", "commit": commit,
                "dirty": False, "date": date}

    frame = pd.DataFrame([cell("mini", "a" * 40, "2026-12-01"), cell("mini-seed1", "b" * 40, "2026-12-02"),
                          cell("mini-seed1", "b" * 40, "2026-12-03")])
    assert results.sources(frame) == (
        "measured here: mini, mini-seed1 (float32) on CPU X, all samples, seed 0; torch 2.14.1, transformers 5.23.0, "
        f"lmms-eval 0.7.3, mrpruner 0.1.0 ({'a' * 10}, {'b' * 10}); 2026-12-01 to 2026-12-03")
    one = frame.iloc[:1].assign(limit=20, dirty=True)
    assert results.sources(one) == results.label({
        "model": "mini", "dtype": "float32", "device": "CPU X", "limit": 20, "seed": 0, "date": "2026-12-01",
        "versions": {"torch": "2.14.1", "transformers": "5.23.0", "lmms_eval": "0.7.3", "mrpruner": "0.1.0"},
        "git": {"commit": "a" * 40, "dirty": True}})  # one model: the words of its cells' own label


def test_tokens_beside_scores_give_one_row_per_cell_with_the_models_mean_score():
    def cell(model, score):
        return {"model": model, "label": "Random", "protocol": "exact", "ratio": 0.9, "benchmark": "Miniature: detail",
                "score": score, "samples": 10, "image_kept_tokens": 30.0}

    table = sweeps.tokens_beside_scores(pd.DataFrame([cell("a", 0.4), cell("b", 0.6)]))
    assert len(table) == 1 and table.iloc[0]["visual tokens per image"] == 30.0
    assert table.iloc[0]["Miniature: detail"] == pytest.approx(0.5)


def test_a_first_place_that_one_model_contradicts_is_a_tie():
    frame = pd.DataFrame([rows("a", "Random", "detail", scores(40)), rows("a", "G-Prune", "detail", scores(97)),
                          rows("b", "Random", "detail", scores(40)), rows("b", "G-Prune", "detail", scores(98)),
                          rows("c", "Random", "detail", scores(90)), rows("c", "G-Prune", "detail", scores(60))])
    assert statements.leaders(frame, 0.9, "detail") == ("G-Prune", "Random")  # above on 2 of 3, below on 1
    assert statements.verdict(frame, "G-Prune", "Random", 0.9, "detail") == rule.TIE
    two = frame[frame["model"] != "c"]
    assert statements.leaders(two, 0.9, "detail") == ("G-Prune",)


def test_identical_scores_are_a_tie_and_never_a_first_place():
    same = scores(95)
    frame = pd.DataFrame([rows(m, label, "detail", same) for m in "abc" for label in ("G-Prune", "MR-Pruner (released)")]
                         + [rows(m, "Random", "detail", scores(40)) for m in "abc"])
    assert statements.leaders(frame, 0.9, "detail") == ("G-Prune", "MR-Pruner (released)")
    found = statements.compare(frame, "G-Prune", "MR-Pruner (released)", 0.9, "detail")
    assert found.direction == rule.TIE and (found.difference, found.low, found.high) == (0.0, 0.0, 0.0)
    assert "G-Prune and MR-Pruner (released) tie for first under the rule" in statements.ranking(frame, 0.9, "detail")


def test_complementarity_is_also_judged_model_by_model():
    frame = pd.DataFrame([detail_cell("a", "base only", [1, 0]), detail_cell("a", "grid only", [0, 1]),
                          detail_cell("b", "base only", [0, 0]), detail_cell("b", "grid only", [1, 1])])
    controls = pd.DataFrame([rows(m, label, "detail", scores(50), 0.0) for m in "ab"
                             for label in ("base only", "grid only", sweeps.UNPRUNED)])
    lines = statements.complementarity_findings(controls, sweeps.complementarity(frame), frame)
    assert "(the 2 models' pooled) each resolution alone answers some" in lines[-2]
    assert "but model by model only on 1 of the 2: the models disagree, so mutual complementarity" in lines[-2]
    assert lines[-1] == ("- Model by model, each resolution alone answers some questions the other cannot on 1 of "
                         "the 2 models (a).")


def test_verdict_is_the_direction_agreement_words(two_models):
    cases = {("G-Prune", "Random", "detail"): rule.ABOVE, ("G-Prune", "Random", "overview"): rule.TIE,
             ("Random", "G-Prune", "detail"): rule.BELOW}
    for (label, other, kind), expected in cases.items():
        assert statements.verdict(two_models, label, other, 0.9, kind) == expected
        assert f" {expected} " in statements.agreement(two_models, label, other, 0.9, kind).replace(" tie (", " tie ")
    assert statements.verdict(two_models, "DivPrune", "Random", 0.9, "detail") is None
