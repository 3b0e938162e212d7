"""Random, L2, G-Prune and ToMe under the same budget."""

import pytest
import torch
from hypothesis import given, settings, strategies as st

import mrpruner


def test_random_is_seeded_and_reproducible():
    a = mrpruner.random_select(100, 10, seed=3)
    assert torch.equal(a, mrpruner.random_select(100, 10, seed=3))
    assert not torch.equal(a, mrpruner.random_select(100, 10, seed=4))
    assert a.dtype == torch.int64 and torch.equal(a, torch.unique(a)) and len(a) == 10
    assert mrpruner.random_select(5, 0).numel() == 0 and mrpruner.random_select(5, 5).tolist() == [0, 1, 2, 3, 4]


def test_l2_select_by_hand():
    x = torch.tensor([[3.0, 4.0], [0.0, 1.0], [6.0, 8.0], [0.0, 5.0]])  # norms 5, 1, 10, 5
    assert mrpruner.l2_select(x, 1).tolist() == [2]
    assert mrpruner.l2_select(x, 2).tolist() == [0, 2]  # tie 5 vs 5: lower index
    assert mrpruner.l2_select(x, 3).tolist() == [0, 2, 3]


@pytest.mark.parametrize("iterations, temperature", [(5, 0.03), (1, 0.03), (3, 0.1)])
def test_gprune_equals_dense_matrix_power_definition(iterations, temperature):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 8, generator=g)
    unit = x / x.norm(dim=1, keepdim=True)
    s = unit @ unit.T
    s = torch.where(s < 0.5, torch.zeros_like(s), s) / temperature
    s = torch.where(s.abs() < 1e-6, torch.full_like(s, -5000.0), s)
    p = torch.softmax(s, dim=1)
    deg = (p > 0).sum(1)
    score = (x.norm(dim=1) @ torch.linalg.matrix_power(p, iterations)) / deg
    expected = torch.topk(score, 12).indices.sort().values
    assert torch.equal(mrpruner.gprune(x, 12, iterations=iterations, temperature=temperature), expected)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 40), st.integers(1, 6), st.integers(0, 2**31 - 1), st.data())
def test_tome_merges_down_to_keep(n, d, seed, data):
    keep = data.draw(st.integers(0, n))
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    m = mrpruner.tome_merge(x, keep)
    assert m.tokens.shape == (keep, d) and m.sizes.shape == (keep,) and m.anchor.shape == (keep,)
    if keep == 0:
        assert torch.all(m.groups == -1)
        return
    assert m.sizes.sum().item() == n
    assert torch.equal(m.anchor, torch.unique(m.anchor))  # sorted original positions
    assert torch.equal(m.groups[m.anchor], torch.arange(keep))  # each anchor lies in its own group
    for row in range(keep):  # each merged token is the mean of the source tokens it holds
        members = (m.groups == row).nonzero().flatten()
        assert len(members) == m.sizes[row].item()
        torch.testing.assert_close(m.tokens[row], x[members].mean(0), rtol=1e-5, atol=1e-5)


def test_tome_merges_the_most_similar_pair_first():
    x = torch.tensor([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [-1.0, 0.2]])
    m = mrpruner.tome_merge(x, 3)
    # A = {0, 2}, B = {1, 3}: token 0 is nearly parallel to token 1, so it merges into it.
    assert m.anchor.tolist() == [1, 2, 3] and m.groups.tolist() == [0, 0, 1, 2]
    torch.testing.assert_close(m.tokens[0], (x[0] + x[1]) / 2)
    assert torch.equal(mrpruner.tome_merge(x, 4).tokens, x)


def test_tome_keeps_dtype():
    x = torch.randn(10, 4).to(torch.bfloat16)
    assert mrpruner.tome_merge(x, 3).tokens.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "call, error, words",
    [
        (lambda: mrpruner.random_select(5, 6), ValueError, "keep must be in"),
        (lambda: mrpruner.random_select(5, 2, seed=-1), ValueError, "seed"),
        (lambda: mrpruner.l2_select(torch.ones(3), 1), ValueError, "tokens must be 2-D"),
        (lambda: mrpruner.gprune(torch.ones(3, 2), 4), ValueError, "keep must be in"),
        (lambda: mrpruner.gprune(torch.ones(3, 2), 1, iterations=0), ValueError, "iterations"),
        (lambda: mrpruner.gprune(torch.ones(3, 2), 1, threshold=2.0), ValueError, "threshold"),
        (lambda: mrpruner.gprune(torch.ones(3, 2), 1, temperature=0.0), ValueError, "temperature"),
        (lambda: mrpruner.tome_merge(torch.ones(3, 2), 4), ValueError, "keep must be in"),
    ],
)
def test_bad_input_is_named(call, error, words):
    with pytest.raises(error, match=words):
        call()
