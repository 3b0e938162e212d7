"""The budget protocols of mrpruner.patch. Under protocol="paper" each method keeps the count its
authors' code keeps, stated here from that code and independently of mrpruner.budget; under
"exact" every method keeps n - floor(ratio * n). Checked on the counts `plan` gives for hundreds
of image sizes and on what the patched model hands the language model for a spread of them
(extreme aspect ratios included)."""

import functools

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from mrpruner.budget import authors_keep, plan
from mrpruner.hosts.llava_next import packed_layout
from mrpruner.patch import METHODS, pruned, stats
from mrpruner.testing import tiny_llava_next

RATIOS = (0.5, 0.7, 0.9, 0.95)
KEEP = {0.5: 0.5, 0.7: 0.3, 0.9: 0.1, 0.95: 0.05}  # the keep_ratio literal the authors' code holds per ratio
PERCENT = {0.5: 50, 0.7: 70, 0.9: 90, 0.95: 95}
SIZES = [(h, w) for h in (6, 40, 200, 336, 480, 512, 700, 1000, 1500, 3000) for w in (6, 50, 300, 427, 640, 1000, 2000)]


def paper_rule(method: str, ratio: float, base: int, rows: int, cols: int) -> int:
    """Visual tokens the language model receives from one image, as each authors' code computes it."""
    k, n = KEEP[ratio], base + rows * (cols + 1)
    if method == "mrpruner":  # released MR-Pruner: total_keep = int(keep_ratio * image_token_length), row ends on top
        return min(int(k * n), base + rows * cols) + rows
    if method == "gprune":  # G-Prune: topk(int(keep_ratio * 576)), topk(int(keep_ratio * row_num * col_num)), row ends
        return int(k * base) + int(k * rows * cols) + rows
    if method == "fastv":  # FastV's lmms-eval code: topk(int(image_token_length * ratio)) of the image span
        return int(n * k)
    return exact_rule(ratio, n)  # random, tome: no authors' code, the plain reading of the ratio


def exact_rule(ratio: float, n: int) -> int:
    return n - n * PERCENT[ratio] // 100


@functools.cache
def tiny():
    return tiny_llava_next()


def layout_of(size):
    return packed_layout(size, tiny()[0].config)


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("method", METHODS)
def test_plan_states_each_authors_budget_for_many_image_sizes(method, ratio):
    layouts = {layout_of(size) for size in SIZES}
    assert any(layout.rows == 0 for layout in layouts) and any(layout.cols == 0 for layout in layouts)
    for base, rows, cols in layouts:
        n = base + rows * (cols + 1)
        got = plan(method, "paper", ratio, base=base, rows=rows, cols=cols).total
        assert got == paper_rule(method, ratio, base, rows, cols), (base, rows, cols)
        assert plan(method, "exact", ratio, base=base, rows=rows, cols=cols).total == exact_rule(ratio, n)


def test_the_issues_example_at_90_percent():
    # One 480x640 image: 576 + 36 x (48 + 1) = 2340 tokens.
    assert layout_of((480, 640)) == (576, 36, 48)
    paper = {m: plan(m, "paper", 0.9, base=576, rows=36, cols=48).total for m in METHODS}
    assert paper == {"random": 234, "tome": 234, "fastv": 234, "gprune": 265, "mrpruner": 270}
    assert {plan(m, "exact", 0.9, base=576, rows=36, cols=48).total for m in METHODS} == {234}


@pytest.mark.parametrize("ratio", RATIOS)
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("base, rows, cols, newlines", [(256, 32, 48, 0), (729, 0, 0, 1), (576, 36, 48, 36)])
def test_plan_counts_the_separators_a_layout_states(method, ratio, base, rows, cols, newlines):
    # InternVL's tiles have no newline (0), OneVision's image of a multi-image prompt one and no grid.
    n = base + rows * cols + newlines
    exact = plan(method, "exact", ratio, base=base, rows=rows, cols=cols, newlines=newlines)
    assert exact.total == exact_rule(ratio, n)
    if method in ("mrpruner", "gprune"):
        assert exact.newlines == (newlines if exact_rule(ratio, n) >= newlines else 0)
    paper = plan(method, "paper", ratio, base=base, rows=rows, cols=cols, newlines=newlines)
    k = KEEP[ratio]
    expected = {"mrpruner": min(int(k * n), base + rows * cols) + newlines,
                "gprune": int(k * base) + int(k * rows * cols) + newlines, "fastv": int(k * n)}
    assert paper.total == expected.get(method, exact_rule(ratio, n))
    with pytest.raises(ValueError, match="newlines must be in"):
        plan(method, "exact", ratio, base=base, rows=rows, cols=cols, newlines=-1)


def test_authors_arithmetic_is_floating_point():
    assert authors_keep(0.7, 3, 30) == int(0.3 * 3 * 30) == 26  # 27 in exact arithmetic
    assert authors_keep(0.9, 2340) == 234 and authors_keep(0.5, 7) == 3
    with pytest.raises(ValueError, match="ratio must be in"):
        authors_keep(1.0, 10)


def run_with_features(model, processor, size, **patch_args):
    """One prompt whose single image of `size` gets random features (no vision tower): the patched
    model's statistics of that prefill."""
    layout = layout_of(size)
    tokenizer = processor.tokenizer
    image = model.config.image_token_id
    ids = [tokenizer.bos_token_id, *[image] * layout.total, *tokenizer.convert_tokens_to_ids(["what", "is", "it"])]
    features = torch.randn(layout.total, model.config.text_config.hidden_size, generator=torch.Generator().manual_seed(0))
    with pruned(model, **patch_args), torch.no_grad():
        model(input_ids=torch.tensor([ids]), image_sizes=torch.tensor([size]),
              mm_encoder_outputs={"image": BaseModelOutputWithPooling(pooler_output=[features])})
        return stats(model)


@pytest.mark.parametrize("protocol", ["paper", "exact"])
@pytest.mark.parametrize("method", METHODS)
def test_patched_model_hands_the_language_model_each_rules_count(method, protocol):
    model, processor = tiny()
    sizes = [(480, 640), (300, 451), (512, 256), (1000, 200), (6, 1000), (1000, 6), (400, 7), (336, 336)]
    for ratio in (0.7, 0.9):
        for size in sizes:
            record = run_with_features(model, processor, size, method=method, ratio=ratio, protocol=protocol)
            (image,) = record.images
            base, rows, cols = image.layout
            expected = (paper_rule(method, ratio, base, rows, cols) if protocol == "paper"
                        else exact_rule(ratio, image.layout.total))
            assert image.tokens_after == len(image.kept) == expected, (size, ratio)
            assert record.lengths_after[0] == 4 + expected  # bos + 3 words + the image's kept tokens
            assert record.protocol == protocol


def test_released_variant_keeps_the_released_budget_too():
    model, processor = tiny()
    for size in [(480, 640), (1000, 200), (6, 1000), (1000, 6)]:
        record = run_with_features(model, processor, size, method="mrpruner", ratio=0.9, protocol="paper",
                                   variant="released")
        base, rows, cols = record.images[0].layout
        assert record.images[0].tokens_after == paper_rule("mrpruner", 0.9, base, rows, cols), size
