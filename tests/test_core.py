"""MR-Pruner core: hand-worked examples of Eq. 1-10, properties, ablations, variants, batching."""

import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

import mrpruner
from mrpruner.budget import split_budget
from mrpruner.testing import same_up_to_ties

SQ2 = math.sqrt(2.0)
# Hand-worked example (d = 2). High: norms 3, 1, sqrt2, 2; low: norms 2, 2.5, 0.1.
HIGH = torch.tensor([[3.0, 0.0], [0.0, 1.0], [1.0, 1.0], [-2.0, 0.0]])
LOW = torch.tensor([[2.0, 0.0], [0.0, -2.5], [0.0, 0.1]])


def test_paper_equations_by_hand():
    t = mrpruner.explain(LOW, HIGH, 2)
    # Eq. 2: informativeness is the L2 norm.
    torch.testing.assert_close(t.info_high, torch.tensor([3.0, 1.0, SQ2, 2.0]))
    torch.testing.assert_close(t.info_low, torch.tensor([2.0, 2.5, 0.1]))
    # Eq. 1 + 3: cos >= 0.5 links H0-H2 and H1-H2 (cos 1/sqrt2) and each token to itself.
    # S0 = 3 + (1/sqrt2) sqrt2 = 4, S1 = 1 + 1 = 2, S2 = 3/sqrt2 + 1/sqrt2 + sqrt2 = 3 sqrt2, S3 = 2.
    torch.testing.assert_close(t.intra_high, torch.tensor([4.0, 2.0, 3 * SQ2, 2.0]))
    # Low tokens are mutually orthogonal or opposite: S^L = I^L.
    torch.testing.assert_close(t.intra_low, t.info_low)
    # Eq. 4: K^H = floor(2 * 1.8536 / (1.8536 + 1.5333)) = floor(1.09) = 1, K^L = 1.
    assert (t.k_low, t.k_high) == (1, 1)
    # Eq. 5: R^H = {2}; Eq. 6-9: pruned H0, H1, H3; L0 links H0 (cos 1) -> 3; L1 none; L2 links H1 -> 1.
    torch.testing.assert_close(t.cross_low, torch.tensor([3.0, 0.0, 1.0]))
    # Eq. 10 with alpha = 0.3: [2.9, 2.5, 0.4] -> the cross term flips the choice from L1 to L0.
    torch.testing.assert_close(t.final_low, torch.tensor([2.9, 2.5, 0.4]))
    assert t.selection.high.tolist() == [2] and t.selection.low.tolist() == [0]
    assert mrpruner.mr_prune(LOW, HIGH, 2, cross=False).low.tolist() == [1]


def test_no_intra_scores_by_norm_alone():
    t = mrpruner.explain(LOW, HIGH, 2, intra=False)
    torch.testing.assert_close(t.intra_high, t.info_high)
    # R^H = {0} (norm 3); pruned H1, H2, H3: L0 gets cos(L0,H2) sqrt2 = 1, L2 gets 1 + 1 = 2.
    torch.testing.assert_close(t.cross_low, torch.tensor([1.0, 0.0, 2.0]))
    assert t.selection.high.tolist() == [0] and t.selection.low.tolist() == [1]


def test_released_variant_by_hand():
    # x0 = (1,0), x1 = (2,0), x2 = (0,1): P rows [.5,.5,0], [.5,.5,0], [0,0,1]; degree 2, 2, 1.
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    # G-Prune / released intra: score_j = sum_i I_i P_ij / deg_j = [0.75, 0.75, 1.0]: x2 wins.
    assert mrpruner.gprune(x, 1).tolist() == [2]
    assert mrpruner.gprune(x, 1, iterations=1).tolist() == [2]
    t = mrpruner.explain(x, x, 2, variant="released", cross=False)
    torch.testing.assert_close(t.intra_low, torch.tensor([0.75, 0.75, 1.0]))
    # The paper's Eq. 3 on the same graph: S = A I = [3, 3, 1]: x0 wins (tie with x1 -> lower index).
    t = mrpruner.explain(x, x, 2, cross=False)
    torch.testing.assert_close(t.intra_low, torch.tensor([3.0, 3.0, 1.0]))
    assert t.selection.low.tolist() == [0]


def test_released_cross_and_alpha_default():
    # low = x0..x2 as above; high = same tokens; keep 2. Released K^L = min(int(2 * 4/3 / (8/3)), 3) = 1.
    x = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0]])
    t = mrpruner.explain(x, x, 2, variant="released")
    assert (t.k_low, t.k_high) == (1, 1)
    # R^H = {2}; pruned high x0, x1 (both cos 1 with low x0, x1; cos 0 with x2).
    # Rows of low x0, x1: softmax([33.3, 33.3]) = [.5, .5], degree 2: cross = (1*.5 + 2*.5)/2 = 0.75.
    # Row of low x2: no neighbour -> uniform [.5, .5], degree 2 -> also 0.75.
    torch.testing.assert_close(t.cross_low, torch.tensor([0.75, 0.75, 0.75]))
    torch.testing.assert_close(t.final_low, t.intra_low + 0.5 * t.cross_low)  # alpha defaults to 0.5
    t3 = mrpruner.explain(x, x, 2, variant="released", alpha=0.3)
    torch.testing.assert_close(t3.final_low, t.intra_low + 0.3 * t.cross_low)


def test_budget_eq4_and_excess():
    assert split_budget(10, 4, 100, mean_low=1.0, mean_high=3.0) == (3, 7)  # K^H = floor(7.5)
    assert split_budget(10, 4, 100, mean_low=3.0, mean_high=1.0) == (4, 6)  # K^H=2, K^L=8 > 4: excess moves
    assert split_budget(10, 100, 3, mean_low=1.0, mean_high=9.0) == (7, 3)  # K^H=9 > 3: excess moves
    assert split_budget(10, 50, 50, mean_low=1.0, mean_high=1.0, adaptive=False) == (5, 5)
    assert split_budget(10, 30, 70, mean_low=5.0, mean_high=1.0, adaptive=False) == (3, 7)
    # Released: floor on the low side, min with the counts, the sum may fall short of K.
    assert split_budget(10, 100, 100, mean_low=1.0, mean_high=2.0, variant="released") == (3, 7)
    assert split_budget(10, 100, 5, mean_low=1.0, mean_high=2.0, variant="released") == (3, 5)
    assert split_budget(0, 3, 3, mean_low=0.0, mean_high=0.0) == (0, 0)


def test_budget_all_zero_means_falls_back_to_counts():
    assert split_budget(4, 1, 3, mean_low=0.0, mean_high=0.0) == (1, 3)


@pytest.mark.parametrize("variant", ["paper", "released"])
def test_no_high_resolution_tokens_leaves_intra_scoring_of_the_low_side(variant):
    # An image too elongated for a grid row or column: no high tokens, so no cross term and all K go low.
    low = torch.tensor([[2.0, 0.0], [1.9, 0.2], [0.0, -2.5], [0.0, 0.1]])
    t = mrpruner.explain(low, HIGH[:0], 2, variant=variant)
    assert (t.k_low, t.k_high) == (2, 0) and t.selection.high.numel() == 0
    assert torch.equal(t.cross_low, torch.zeros(4)) and torch.equal(t.final_low, t.intra_low)
    # Paper (Eq. 1 + 3): L0 and L1 link (cos 0.995): S = [2 + 0.995 * 1.91, 1.91 + 0.995 * 2, 2.5, 0.1].
    # Released: one softmax step divided by the degree keeps the pair's mean, ~1.95 each, below L2's 2.5.
    expected = [0, 1] if variant == "paper" else [0, 2]
    assert t.selection.low.tolist() == expected
    assert split_budget(3, 4, 0, mean_low=1.0, mean_high=float("nan")) == (3, 0)


def test_zero_norm_token_never_nan():
    low = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    high = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    for variant in ("paper", "released"):
        for s in (-1.0, 0.0, 0.5):
            t = mrpruner.explain(low, high, 3, variant=variant, s_a=s, s_c=s)
            for v in (t.intra_low, t.intra_high, t.cross_low, t.final_low):
                assert torch.isfinite(v).all(), (variant, s)


@st.composite
def images(draw, max_low=12, max_high=30, d=None):
    n_low = draw(st.integers(1, max_low))
    n_high = draw(st.integers(1, max_high))
    d = d or draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    low = torch.randn(n_low, d, generator=g) * draw(st.floats(0.1, 5.0))
    high = torch.randn(n_high, d, generator=g)
    keep = draw(st.integers(0, n_low + n_high))
    return low, high, keep


def _valid_selection(sel, n_low, n_high):
    for idx, n in ((sel.low, n_low), (sel.high, n_high)):
        assert idx.dtype == torch.int64
        assert torch.equal(idx, torch.unique(idx))  # sorted and unique
        assert idx.numel() == 0 or (0 <= idx.min() and idx.max() < n)


@settings(max_examples=60, deadline=None)
@given(images(), st.booleans(), st.booleans(), st.booleans())
def test_paper_sizes_order_determinism(image, intra, cross, adaptive):
    low, high, keep = image
    opts = dict(intra=intra, cross=cross, adaptive=adaptive)
    t = mrpruner.explain(low, high, keep, **opts)
    sel = t.selection
    _valid_selection(sel, len(low), len(high))
    assert len(sel.low) == t.k_low and len(sel.high) == t.k_high and t.k_low + t.k_high == keep
    again = mrpruner.mr_prune(low, high, keep, **opts)
    assert torch.equal(again.low, sel.low) and torch.equal(again.high, sel.high)
    if not adaptive:
        k_high = min(max(math.floor(keep * len(high) / (len(low) + len(high))), keep - len(low)), len(high))
        assert t.k_high == k_high


@settings(max_examples=40, deadline=None)
@given(images(), st.booleans())
def test_released_sizes_follow_its_allocation(image, adaptive):
    low, high, keep = image
    t = mrpruner.explain(low, high, keep, variant="released", adaptive=adaptive)
    _valid_selection(t.selection, len(low), len(high))
    w_low, w_high = (t.info_low.double().mean().item(), t.info_high.double().mean().item()) if adaptive \
        else (len(low), len(high))
    k_low = min(int(keep * w_low / (w_low + w_high)), len(low))
    assert (len(t.selection.low), len(t.selection.high)) == (k_low, min(keep - k_low, len(high)))


@settings(max_examples=40, deadline=None)
@given(images())
def test_ablation_switches_mean_what_table3_says(image):
    low, high, keep = image
    full = mrpruner.explain(low, high, keep)
    no_cr = mrpruner.explain(low, high, keep, cross=False)
    # Removing CR changes only the low side: same budget and same high-resolution choice.
    assert torch.equal(full.selection.high, no_cr.selection.high)
    assert torch.all(no_cr.cross_low == 0) and torch.equal(no_cr.final_low, no_cr.intra_low)
    # Removing everything is L2-norm top-K per resolution with a count split.
    bare = mrpruner.mr_prune(low, high, keep, intra=False, cross=False, adaptive=False)
    k_high = min(max(math.floor(keep * len(high) / (len(low) + len(high))), keep - len(low)), len(high))
    assert torch.equal(bare.high, mrpruner.l2_select(high, k_high))
    assert torch.equal(bare.low, mrpruner.l2_select(low, keep - k_high))


def test_variants_differ_where_they_should():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(8, 16, generator=g)
    low = torch.cat([base + 0.3 * torch.randn(8, 16, generator=g) for _ in range(4)])
    high = torch.cat([base + 0.3 * torch.randn(8, 16, generator=g) for _ in range(12)])
    paper = mrpruner.mr_prune(low, high, 20)
    released = mrpruner.mr_prune(low, high, 20, variant="released")
    assert not (torch.equal(paper.low, released.low) and torch.equal(paper.high, released.high))


@settings(max_examples=30, deadline=None)
# d >= 2: with d = 1 every cosine is exactly +-1 and scores tie exactly in real arithmetic, so the
# last bit of a differently blocked matrix product decides (documented in mr_prune_batched).
@given(st.integers(2, 6).flatmap(lambda d: st.lists(images(d=d), min_size=1, max_size=4)),
       st.sampled_from(["paper", "released"]))
def test_batched_equals_single(batch, variant):
    # The batch pads and blocks its matrix products differently: scores may differ in the last bit,
    # so tokens scored within rounding of the boundary may swap (same_up_to_ties), nothing else.
    lows, highs, keeps = zip(*batch)
    together = mrpruner.mr_prune_batched(lows, highs, keeps, variant=variant)
    for (low, high, keep), sel in zip(batch, together):
        single = mrpruner.explain(low, high, keep, variant=variant)
        for ours, theirs, scores in ((sel.low, single.selection.low, single.final_low),
                                     (sel.high, single.selection.high, single.intra_high)):
            assert same_up_to_ties(ours, theirs, scores, 1e-5 * float(scores.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_are_scored_in_float32(dtype):
    g = torch.Generator().manual_seed(1)
    low, high = torch.randn(20, 8, generator=g).to(dtype), torch.randn(50, 8, generator=g).to(dtype)
    for variant in ("paper", "released"):
        a = mrpruner.mr_prune(low, high, 17, variant=variant)
        b = mrpruner.mr_prune(low.float(), high.float(), 17, variant=variant)
        assert torch.equal(a.low, b.low) and torch.equal(a.high, b.high)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("variant", ["paper", "released"])
def test_cpu_and_cuda_select_the_same(variant):
    g = torch.Generator().manual_seed(2)
    lows = [torch.randn(576, 64, generator=g) for _ in range(3)]
    highs = [torch.randn(n, 64, generator=g) for n in (1800, 2300, 1200)]
    keeps = [200, 300, 100]
    cpu = mrpruner.mr_prune_batched(lows, highs, keeps, variant=variant)
    gpu = mrpruner.mr_prune_batched([x.cuda() for x in lows], [x.cuda() for x in highs], keeps, variant=variant)
    for a, b in zip(cpu, gpu):
        assert torch.equal(a.low, b.low.cpu()) and torch.equal(a.high, b.high.cpu())


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: mrpruner.mr_prune(LOW, HIGH, 8), ValueError, "keep must be in [0, 7]"),
        (lambda: mrpruner.mr_prune(LOW, HIGH, -1), ValueError, "keep"),
        (lambda: mrpruner.mr_prune(LOW, HIGH, 2.0), TypeError, "keep"),
        (lambda: mrpruner.mr_prune(LOW, HIGH, True), TypeError, "keep"),
        (lambda: mrpruner.mr_prune(LOW[0], HIGH, 2), ValueError, "low must be 2-D"),
        (lambda: mrpruner.mr_prune(LOW, HIGH[None], 2), ValueError, "high must be 2-D"),
        (lambda: mrpruner.mr_prune(LOW, torch.ones(3, 5), 2), ValueError, "dimension"),
        (lambda: mrpruner.mr_prune(LOW, HIGH.clone().fill_(float("nan")), 2), ValueError, "high holds non-finite"),
        (lambda: mrpruner.mr_prune(LOW * float("inf"), HIGH, 2), ValueError, "low holds non-finite"),
        (lambda: mrpruner.mr_prune(LOW, HIGH, 2, s_a=1.5), ValueError, "s_a must be in [-1.0, 1.0]"),
        (lambda: mrpruner.mr_prune(LOW, HIGH, 2, s_c=-2), ValueError, "s_c"),
        (lambda: mrpruner.mr_prune(LOW, HIGH, 2, variant="fast"), ValueError, "variant must be one of"),
        (lambda: mrpruner.mr_prune(LOW[:0], HIGH, 2), ValueError, r"low must hold at least 1 token\(s\)"),
        (lambda: mrpruner.mr_prune(LOW, HIGH[:, :0], 2), ValueError, "high must hold at least 0 token"),
        (lambda: mrpruner.mr_prune(LOW.long(), HIGH, 2), TypeError, "low must be a floating"),
        (lambda: mrpruner.mr_prune(LOW.tolist(), HIGH, 2), TypeError, "low must be a torch.Tensor"),
        (lambda: mrpruner.mr_prune(LOW, HIGH, 2, alpha=float("nan")), TypeError, "alpha"),
        (lambda: mrpruner.mr_prune(LOW, HIGH, 2, cross=1), TypeError, "cross must be True or False"),
        (lambda: mrpruner.mr_prune_batched([LOW], [HIGH, HIGH], [2]), ValueError, "one length"),
        (lambda: mrpruner.mr_prune_batched([LOW, LOW], [HIGH, HIGH], [2, 99]), ValueError, "keeps[1]"),
    ],
)
def test_bad_input_is_named(call, error, words):
    with pytest.raises(error, match=words.replace("[", r"\[").replace("]", r"\]").replace(".", r"\.")):
        call()
