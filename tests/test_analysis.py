"""The chapters' computations (mrpruner.analysis) on real photos and the tiny real-structure model."""

import contextlib
import functools

import numpy as np
import pandas as pd
import pytest
import torch

import mrpruner
from mrpruner import models
from mrpruner.analysis import probes, statements, sweeps
from mrpruner.budget import keep_count
from mrpruner.methods import resolution_only
from mrpruner.patch import pruned
from mrpruner.testing import sample_images


@pytest.fixture(scope="module")
def tiny():
    return models.load("tiny")


@pytest.fixture(scope="module")
def coffee(tiny):
    return probes.photo_tokens(*tiny, sample_images()["coffee"])


def test_photo_tokens_split_the_packed_sequence_as_the_model_packs_it(tiny, coffee):
    assert coffee.low_shape == (24, 24) and len(coffee.low) == 576
    rows, cols = coffee.high_shape
    assert len(coffee.high) == rows * cols and coffee.layout.total == 576 + rows * (cols + 1)
    assert rows < cols  # coffee is 400 x 600 (height x width): a landscape grid
    norms = probes.token_norms({"coffee": coffee})
    assert list(norms.groupby("resolution").size().sort_index()) == [rows * cols, 576]
    assert np.allclose(norms.query("resolution == 'low'")["norm"], coffee.low.norm(dim=-1).numpy())


def test_grids_are_row_major():
    values = torch.arange(6.0)
    assert probes.as_grid(values, (2, 3)).tolist() == [[0, 1, 2], [3, 4, 5]]
    assert probes.kept_grid(torch.tensor([1, 5]), (2, 3)).tolist() == [[False, True, False], [False, False, True]]


def test_lost_area_is_the_part_no_kept_token_covers():
    none, everything = np.zeros((2, 2), bool), np.ones((3, 3), bool)
    left = np.array([[True, False], [True, False]])
    assert probes.lost_area(none, none) == 1.0
    assert probes.lost_area(none, everything) == 0.0
    assert probes.lost_area(left, none) == pytest.approx(0.5)
    assert probes.lost_area(left, left[::-1, ::-1].copy()) == 0.0  # complementary halves
    assert probes.lost_area(left, np.array([[True, True], [False, False]])) == pytest.approx(0.25)


def test_variant_differences_compare_equal_budgets(coffee):
    diff = probes.variant_differences({"coffee": coffee}, [0.5, 0.9])
    n = len(coffee.low) + len(coffee.high)
    assert diff["keep"].tolist() == [keep_count(n, 0.5), keep_count(n, 0.9)]
    for row in diff.itertuples():
        assert row.low_paper + row.high_paper == row.keep
        paper = mrpruner.mr_prune(coffee.low, coffee.high, row.keep, variant="paper")
        released = mrpruner.mr_prune(coffee.low, coffee.high, row.keep, variant="released")
        union = len(set(paper.high.tolist()) | set(released.high.tolist()))
        assert row.high_jaccard == pytest.approx(1 - row.high_only_one / union)
    same = probes.variant_differences({"coffee": coffee}, [0.0])
    assert same["identical"].all()  # keeping everything: nothing to disagree about


def test_kept_grids_read_the_plugins_selection(tiny):
    image = sample_images()["chelsea"]
    low, high = probes.kept_grids(*tiny, image, "mrpruner", 0.9)
    tokens = probes.photo_tokens(*tiny, image)
    assert low.shape == tokens.low_shape and high.shape == tokens.high_shape
    rows = tokens.layout.rows  # newline tokens are kept inside the budget (mrpruner.patch)
    assert low.sum() + high.sum() + rows == keep_count(tokens.layout.total, 0.9)
    trace = mrpruner.explain(tokens.low, tokens.high, keep_count(tokens.layout.total, 0.9) - rows)
    assert np.flatnonzero(low).tolist() == trace.selection.low.tolist()


def test_a_single_resolution_control_hides_the_other_and_restores_the_model(tiny):
    net, processor = tiny
    image, question = sample_images()["rocket"], "What is shown in this image?"
    before = probes.answer(net, processor, image, question, max_new_tokens=1).first_logits
    outs = {}
    for resolution in ("low", "high"):
        with pruned(net, resolution_only(resolution), 0.0):
            outs[resolution] = probes.answer(net, processor, image, question, max_new_tokens=1).first_logits
    after = probes.answer(net, processor, image, question, max_new_tokens=1).first_logits
    assert torch.equal(before, after)
    assert not torch.allclose(outs["low"], before) and not torch.allclose(outs["high"], outs["low"])
    with pytest.raises(ValueError, match=r"resolution must be one of \('low', 'high'\)"):
        with pruned(net, resolution_only("both"), 0.0):
            pass


def test_answers_under_score_each_answer_with_the_given_score_in_each_condition(tiny, monkeypatch):
    texts = iter(["Cat.", "dog", "CAT", "a dog", "dog", "dog"])
    monkeypatch.setattr(probes, "answer", lambda *a, **k: probes.Answer(next(texts), torch.zeros(1)))
    questions = pd.DataFrame({"image": [None, None], "question": ["What animal?", "Which?"], "answer": ["cat", "dog"]})
    scored, entered = [], []

    def score(i: int, text: str) -> float:
        scored.append((i, text))
        return float(text.lower().strip(".") == questions["answer"][i])

    @contextlib.contextmanager
    def condition(name):
        entered.append(name)
        yield

    conditions = {name: functools.partial(condition, name) for name in ("both", "low", "high")}
    rows = probes.answers_under(*tiny, questions, score, conditions)
    assert entered == ["both", "low", "high"] * 2
    assert scored == [(0, "Cat."), (0, "dog"), (0, "CAT"), (1, "a dog"), (1, "dog"), (1, "dog")]
    assert rows[["both", "low", "high"]].values.tolist() == [["Cat.", "dog", "CAT"], ["a dog", "dog", "dog"]]
    assert rows[["score_both", "score_low", "score_high"]].values.tolist() == [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]
    assert rows["answer"].tolist() == ["cat", "dog"]


def test_complementarity_counts_the_documents_each_resolution_alone_answers():
    frame = pd.DataFrame([
        {"label": "base only", "task": "mrpruner_mini_detail", "benchmark": "b", "doc_scores": {0: 1.0, 1: 0.0, 2: 1.0, 3: 0.0}},
        {"label": "grid only", "task": "mrpruner_mini_detail", "benchmark": "b", "doc_scores": {0: 1.0, 1: 1.0, 2: 0.0, 3: 0.0}},
        {"label": "all tokens", "task": "mrpruner_mini_detail", "benchmark": "b", "doc_scores": {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}},
        {"label": "base only", "task": "textvqa_val", "benchmark": "TextVQA", "doc_scores": {0: 30.0, 1: 0.0}},
        {"label": "grid only", "task": "textvqa_val", "benchmark": "TextVQA", "doc_scores": {0: 0.0, 1: 0.0}},
        {"label": "base only", "task": "mme", "benchmark": "MME", "doc_scores": None},
        {"label": "grid only", "task": "mme", "benchmark": "MME", "doc_scores": None}])
    table = sweeps.complementarity(frame)
    assert list(table.index) == ["detail", "TextVQA", "all"]  # MME logs no number per document
    assert table.loc["detail"].to_dict() == {"low resolution only": 0.25, "high resolution only": 0.25, "both": 0.25,
                                             "neither": 0.25, "documents": 4}
    assert table.loc["TextVQA", "low resolution only"] == 0.5 and table.loc["TextVQA", "neither"] == 0.5
    assert table.loc["all", "documents"] == 6 and table.loc["all", "low resolution only"] == pytest.approx(2 / 6)


def test_complementarity_is_judged_over_all_questions_not_per_kind():
    """One kind answered only by the base, the other only by the grid: complementary as a whole."""
    def row(label, task, scores):
        return {"label": label, "task": task, "benchmark": "b", "doc_scores": dict(enumerate(scores))}

    frame = pd.DataFrame([row("base only", "mrpruner_mini_tiles_overview", [1, 1, 1]),
                          row("grid only", "mrpruner_mini_tiles_overview", [0, 0, 1]),
                          row("base only", "mrpruner_mini_tiles_detail", [0, 0, 1]),
                          row("grid only", "mrpruner_mini_tiles_detail", [1, 1, 1])])
    alone = sweeps.complementarity(frame)
    assert list(alone.index) == ["overview (tiles)", "detail (tiles)", "all"]
    controls = pd.DataFrame([{"label": label, "ratio": 0.0, "kind": kind, "accuracy": 0.5, "ci_low": 0.4,
                              "ci_high": 0.6} for label in ("base only", "grid only", sweeps.UNPRUNED)
                             for kind in ("overview (tiles)", "detail (tiles)")])
    lines = statements.complementarity_findings(controls, alone)
    assert "chance: 0.33 on overview (tiles), 0.25 on detail (tiles)" in lines[0]
    assert "mutual complementarity holds here" in lines[-1]
    one_way = sweeps.complementarity(frame[frame["label"] == "base only"].assign(label="grid only").pipe(
        lambda grid: pd.concat([frame[frame["label"] == "base only"], grid])))
    assert "no complementarity" in statements.complementarity_findings(controls, one_way)[-1]


def test_paper_measurements_keep_only_the_papers_benchmarks():
    def cell(task, benchmark, score):
        return {"label": "MR-Pruner", "ratio": 0.9, "task": task, "benchmark": benchmark, "score": score,
                "samples": 10, "throughput": 2.0, "provenance": "measured here: x"}

    frame = pd.DataFrame([cell("gqa", "GQA", 60.0), cell("mrpruner_tiny", "Tiny (offline)", 0.0)])
    long = sweeps.paper_measurements([frame, None])
    assert sorted(long["benchmark"]) == ["GQA", "Throughput"]
    assert long.set_index("benchmark").loc["Throughput", "value"] == pytest.approx(2.0)
    assert sweeps.paper_measurements([None]).empty


def test_region_kept_is_the_share_of_the_boxes_tokens_each_grid_keeps(tiny):
    from mrpruner.hosts.llava_next import region_tokens

    image = sample_images()["chelsea"]
    tokens = probes.photo_tokens(*tiny, image)
    box = (100, 80, 220, 160)
    every_low, every_high = np.ones(tokens.low_shape, bool), np.ones(tokens.high_shape, bool)
    assert probes.region_kept(*tiny, image, box, every_low, every_high) == {"low": 1.0, "high": 1.0}
    assert probes.region_kept(*tiny, image, box, ~every_low, ~every_high) == {"low": 0.0, "high": 0.0}
    region = region_tokens(*tiny, [image], [box])[0].numpy()
    low_at, high_at, _ = (part.numpy() for part in tokens.layout.parts())
    high = np.isin(high_at, region).reshape(tokens.high_shape)  # exactly the box's grid tokens
    n = int(high.sum())
    assert n > 2 and np.isin(low_at, region).any()
    assert probes.region_kept(*tiny, image, box, ~every_low, high) == {"low": 0.0, "high": 1.0}
    high.flat[np.flatnonzero(high)[0]] = False
    assert probes.region_kept(*tiny, image, box, every_low, high) == {"low": 1.0, "high": pytest.approx((n - 1) / n)}


def test_the_exercise_goals_follow_the_rule_paired_on_the_same_questions():
    def row(label, kind, right, n=200):
        scores = dict(enumerate([1.0] * right + [0.0] * (n - right)))
        return {"model": "mini", "label": label, "ratio": 0.9, "kind": kind, "accuracy": right / n, "ci_low": float("nan"),
                "ci_high": float("nan"), "doc_scores": scores}

    frame = pd.DataFrame([row("Random", "detail", 90), row("Random", "overview", 184),
                          row("mine", "detail", 120), row("mine", "overview", 184),  # overview: the same answers, a tie
                          row("worse", "detail", 120), row("worse", "overview", 170),  # 14 fewer overview answers
                          row("close", "detail", 92), row("close", "overview", 190)])
    goals = statements.exercise_goals(frame, "mine", 0.9)
    assert list(goals.index) == ["detail: above", "overview: not below"]
    assert list(goals["met"]) == [True, True] and goals.iloc[1]["difference"] == "tie: 0.00\u00a0[0.00,\u00a00.00]"
    assert goals.iloc[0]["mine"] == "0.60" and goals.iloc[0]["Random"] == "0.45"
    # 14 overview answers lost, each paired with a question Random answers: below, so the goal fails,
    # although the two unpaired intervals (about +-0.04 each) overlap
    assert list(statements.exercise_goals(frame, "worse", 0.9)["met"]) == [True, False]
    assert list(statements.exercise_goals(frame, "close", 0.9)["met"]) == [False, True]
    with pytest.raises(ValueError, match=r"label and reference must both be measured, with per-question scores, at "
                                         r"ratio 0.5"):
        statements.exercise_goals(frame, "mine", 0.5)


@pytest.fixture(scope="module")
def hosts():
    """The random tiny model of each family, by name."""
    return {name: models.load(name) for name in ("tiny", "tiny-onevision", "tiny-internvl")}


@pytest.mark.parametrize("name", ["tiny", "tiny-onevision", "tiny-internvl"])
def test_kept_grids_follow_each_familys_layout_and_budget(hosts, name):
    """On every family the maps have the host's base and grid shapes, and base, grid and kept
    separators add up to the exact budget; resolution_budgets counts them back."""
    net, processor = hosts[name]
    image = sample_images()["coffee"]
    layout = probes.host_layout(net, image)
    assert layout.total > layout.base > 0 and layout.rows * layout.cols > 0
    for method in ("random", "fastv", "mrpruner"):
        low, high = probes.kept_grids(net, processor, image, method, 0.9)
        assert low.shape == layout.base_shape and high.shape == (layout.rows, layout.cols)
        separators = keep_count(layout.total, 0.9) - int(low.sum() + high.sum())
        assert 0 <= separators <= layout.newlines  # separators are kept inside the budget (none on InternVL)
        split = probes.resolution_budgets({(method, 0.9): (low, high)}).iloc[0]
        assert (split["base kept"], split["grid kept"]) == (low.sum(), high.sum())
        assert split["base tokens"] == layout.base and split["grid tokens"] == layout.rows * layout.cols
        assert split["base share of tokens"] == pytest.approx(layout.base / (layout.base + layout.rows * layout.cols))
        assert split["base share of kept"] == pytest.approx(low.sum() / (low.sum() + high.sum()))


def test_each_family_loads_by_name_and_from_a_saved_folder(hosts, tmp_path):
    """models.load picks the class from a checkpoint's config; a family mrpruner.patch does not drive is refused."""
    from mrpruner.hosts import host_of

    for name in ("tiny-onevision", "tiny-internvl"):
        folder = models.tiny_checkpoint(tmp_path, name=name)
        net, processor = models.load(str(folder))
        assert type(net) is type(hosts[name][0]) and host_of(net) is host_of(hosts[name][0])
        assert type(processor) is type(hosts[name][1])
        first = next(iter(hosts[name][0].state_dict().values()))
        assert torch.equal(next(iter(net.state_dict().values())), first)  # the same seed-0 weights
    with pytest.raises(ValueError, match="name must be one of"):
        models.tiny_checkpoint(tmp_path, name="tiny-qwen")


def test_kept_sets_are_the_plugins_own_selections_and_their_overlap_is_counted(tiny):
    """Issue 30, item 4: the kept sets compared for a tie are the ones `mrpruner.patch` hands the
    language model (read back from `mrpruner.stats` after a prefill), batched or one by one."""
    images = [sample_images()[name] for name in ("coffee", "chelsea", "rocket")]
    methods = {"G-Prune": ("gprune", {}), "MR-Pruner (released)": ("mrpruner", {"variant": "released"}),
               "again": ("gprune", {})}
    sets = probes.kept_sets(*tiny, images, 0.9, methods, batch=2)
    assert list(sets.columns) == list(methods) and len(sets) == 3
    for image, row in zip(images, sets.itertuples(index=False)):
        low, high = probes.kept_grids(*tiny, image, "gprune", 0.9)
        layout = probes.photo_tokens(*tiny, image).layout
        low_at, high_at, _ = layout.parts()
        kept = set(low_at[torch.from_numpy(low.reshape(-1))].tolist()) | set(high_at[torch.from_numpy(high.reshape(-1))].tolist())
        assert kept <= row[0] and len(row[0]) == keep_count(layout.total, 0.9)  # plus the kept newlines
    same = probes.overlap(sets, "G-Prune", "again")
    assert not same["differ"].any() and (same["jaccard"] == 1.0).all()
    other = probes.overlap(sets, "G-Prune", "MR-Pruner (released)")
    expected = [len(a & b) / len(a | b) for a, b in zip(sets["G-Prune"], sets["MR-Pruner (released)"])]
    assert other["jaccard"].tolist() == expected and other["differ"].tolist() == [j < 1 for j in expected]
    with pytest.raises(ValueError, match="methods must select before the language model; 'FastV'"):
        probes.kept_sets(*tiny, images, 0.9, {"FastV": ("fastv", {})})


def test_the_protocols_are_set_side_by_side_and_judged_by_the_rule():
    def row(model, label, kind, right, tokens):
        scores = dict(enumerate([1.0] * right + [0.0] * (100 - right)))
        return {"model": model, "label": label, "method": label.lower(), "options": "{}", "ratio": 0.9, "kind": kind,
                "accuracy": right / 100, "ci_low": np.nan, "ci_high": np.nan, "recall": 0.5, "kept_tokens": tokens,
                "tokens": 336.0, "flops_reduction": 0.8, "n": 100, "doc_scores": scores}

    exact = pd.DataFrame([row(m, "G-Prune", "overview", 47, 34.0) for m in "ab"]
                         + [row(m, "Random", "overview", 92, 34.0) for m in "ab"])
    authors = pd.DataFrame([row(m, "G-Prune", "overview", 58, 47.0) for m in "ab"])
    table = statements.protocols_side_by_side(exact, authors, 0.9)
    assert list(table.index) == [("G-Prune", "overview")]
    cell = table.iloc[0]
    assert cell["one budget (tokens)"].startswith("0.47") and cell["one budget (tokens)"].endswith("(34.0)")
    assert cell["authors' budget (tokens)"].startswith("0.58") and cell["authors' budget (tokens)"].endswith("(47.0)")
    assert cell["authors' minus one"].startswith("above: 0.11")
