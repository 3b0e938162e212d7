"""FastV inside the tiny LLaVA-NeXT: the one-row attention under sdpa equals eager attention's,
tokens are dropped from layer K on with exact counts, and the KV cache stays consistent. The random
tiny model attends almost uniformly, so rankings computed by different kernels are compared up to
near ties (`same_up_to_ties`, the `fastv_choices` fixture of conftest.py)."""

import functools

import pytest
import torch

from mrpruner.budget import keep_count
from mrpruner.core import top_mask
from mrpruner.fastv import ATTENTION_NAME, last_query_attention
from mrpruner.seam import cache_key
from mrpruner.patch import patch, pruned, stats
from mrpruner.testing import argmax_margin, chat_inputs, sample_images, same_up_to_ties, tiny_llava_next

QUESTIONS = ["What is shown in this image ?", "Describe the photo briefly please ."]
CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


def tiny(attn="sdpa", device="cpu"):
    return _tiny(attn, device)  # one cache entry however the arguments are passed


@functools.cache
def _tiny(attn, device):
    model, processor = tiny_llava_next(attn_implementation=attn)
    return model.to(device), processor


def prompts(rows=(0, 1), device="cpu"):
    photos = sample_images()
    pairs = [([photos["astronaut_portrait"]], QUESTIONS[0]), ([photos["chelsea"]], QUESTIONS[1])]
    return chat_inputs(tiny()[1], [pairs[r] for r in rows], device=device)


@pytest.mark.parametrize("mask_kind", ["none", "bool", "float", "bool_per_head"])
def test_last_query_attention_equals_the_full_softmax_row(mask_kind):
    g = torch.Generator().manual_seed(0)
    batch, heads, groups, length, dim = 2, 4, 2, 7, 8
    query = torch.randn(batch, heads, length, dim, generator=g)
    key = torch.randn(batch, groups, length, dim, generator=g)
    allowed = torch.ones(batch, 1, length, length, dtype=torch.bool).tril()
    allowed[1, :, :, :3] = False  # row 1 is left-padded by 3
    mask = {"none": None, "bool": allowed,
            "float": torch.zeros(allowed.shape).masked_fill(~allowed, torch.finfo(torch.float32).min),
            "bool_per_head": allowed.expand(batch, heads, length, length)}[mask_kind]
    last = torch.tensor([length - 1, length - 2])
    if mask is None:  # the kernels get no mask only without padding, where the last query is the last token
        allowed = torch.ones(batch, 1, length, length, dtype=torch.bool).tril()
        last = torch.tensor([length - 1, length - 1])
    scores = query @ key.repeat_interleave(heads // groups, dim=1).transpose(2, 3) * 0.3
    probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
    expected = probs[torch.arange(batch), :, last].mean(1)
    torch.testing.assert_close(last_query_attention(query, key, mask, last, 0.3), expected)


@functools.cache
def eager_attentions(device="cpu"):
    """Every layer's attention probabilities of the unpatched eager model on prompts()."""
    with torch.no_grad():
        return tiny("eager", device)[0](**prompts(device=device), output_attentions=True).attentions


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layer", [1, 2, 3])
def test_selection_equals_an_eager_attention_reference(layer, device, fastv_choices):
    inputs = prompts(device=device)
    attentions = eager_attentions(device)
    model, _ = tiny("sdpa", device)
    with pruned(model, "fastv", 0.8, layer=layer):
        with torch.no_grad():
            model(**inputs)
        record = stats(model)
        assert model.config.text_config._attn_implementation == "sdpa"  # no model-wide eager switch
        ranking = model.model.language_model.layers[layer - 1].self_attn.config._attn_implementation
        assert ranking == ATTENTION_NAME
    image_mask = inputs["input_ids"] == model.config.image_token_id
    for row, (image, (ours, _)) in enumerate(zip(record.images, fastv_choices.take(), strict=True)):
        row_attention = attentions[layer - 1][row, :, -1].mean(0)  # left padding: the last token is last
        where = image_mask[row].nonzero().flatten()
        scores = row_attention[where].unsqueeze(0)
        kept = top_mask(scores, torch.ones_like(scores, dtype=torch.bool), [keep_count(len(where), 0.8)])
        reference = scores[0].float().cpu()
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-9)
        tie = float((ours - reference).abs().max())
        assert same_up_to_ties(image.kept, kept[0].nonzero().flatten().cpu(), reference, tie)
    assert record.prune_layer == layer


def test_tokens_are_dropped_from_layer_k_on_and_the_cache_agrees():
    model, _ = tiny()
    inputs = prompts()
    lengths = {}
    layers = model.model.language_model.layers
    handles = [layer.register_forward_hook(lambda module, args, output, i=i: lengths.__setitem__(i, output.shape[1]))
               for i, layer in enumerate(layers)]
    try:
        with pruned(model, "fastv", 0.9):
            with torch.no_grad():
                cache = getattr(model(**inputs, use_cache=True), cache_key())  # past_key_values before 5.24
            record = stats(model)
    finally:
        for handle in handles:
            handle.remove()
    full, short = inputs["input_ids"].shape[1], max(record.lengths_after)
    text = (inputs["attention_mask"].bool() & (inputs["input_ids"] != model.config.image_token_id)).sum(1)
    for row, image in enumerate(record.images):
        assert len(image.kept) == keep_count(image.layout.total, 0.9)
        assert record.lengths_after[row] == int(text[row]) + len(image.kept)
    assert [lengths[i] for i in range(4)] == [full, full, short, short]
    assert [cache.layers[i].keys.shape[2] for i in range(4)] == [full, full, short, short]


@pytest.mark.parametrize("device", DEVICES)
def test_generate_batched_equals_single_through_the_two_masks(device, fastv_choices):
    model, _ = tiny(device=device)
    inputs = prompts(device=device)
    assert inputs["attention_mask"].eq(0).any()
    options = dict(max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True)
    with pruned(model, "fastv", 0.7):
        both = model.generate(**inputs, **options)
        assert argmax_margin(torch.stack(both.logits)) > 1e-4  # greedy steps clear of ties
        ranked = fastv_choices.take()
        for row in range(2):
            fastv_choices.replay(ranked[row:row + 1])
            alone = model.generate(**prompts((row,), device), **options)
            assert torch.equal(alone.sequences[0, -4:], both.sequences[row, -4:])
            for a, b in zip(both.logits, alone.logits):
                torch.testing.assert_close(a[row], b[0], atol=1e-5, rtol=1e-5)
        uncached = model.generate(**inputs, use_cache=False, max_new_tokens=2, do_sample=False)
        assert uncached.shape[1] == inputs["input_ids"].shape[1] + 2  # re-ranks each step by its last token


def test_unsupported_attention_is_a_clear_error():
    model, _ = tiny_llava_next()
    model.model.language_model.config._attn_implementation = "flash_attention_2"
    with pytest.raises(ValueError, match="'sdpa' or 'eager'"):
        patch(model, "fastv", 0.5)
    assert "forward" not in vars(model.model.language_model.layers[2])  # nothing left behind
