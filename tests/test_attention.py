"""ToMe's proportional attention in the language model (mrpruner.attention): every layer adds
log(size) of each merged key to its logits, exactly as a hand-built additive mask does, under sdpa
and eager, in the prefill and in decode steps from the KV cache; switched off, ToMe is the plain
merge it was."""

import functools

import pytest
import torch

from mrpruner.baselines import tome_merge
from mrpruner.budget import keep_count
from mrpruner.patch import pruned, stats
from mrpruner.testing import chat_inputs, sample_images, tiny_llava_next

RATIO = 0.9


@functools.cache
def tiny(attn="sdpa"):
    return tiny_llava_next(attn_implementation=attn)


def padded_batch():
    photos = sample_images()
    return chat_inputs(tiny()[1], [([photos["astronaut_portrait"]], "What is shown in this image ?"),
                                   ([photos["chelsea"]], "Describe the photo briefly please .")])


def sizes_in_prompt(model, inputs) -> torch.Tensor:
    """(B, L): how many source tokens each prompt position holds after ToMe at RATIO (1 elsewhere),
    from the unpatched encoder and `tome_merge` directly."""
    with torch.no_grad():
        features = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output
    image_mask = inputs["input_ids"] == model.config.image_token_id
    sizes = torch.ones(image_mask.shape)
    for row, feature in enumerate(features):  # one image per prompt
        merge = tome_merge(feature, keep_count(len(feature), RATIO))
        sizes[row, image_mask[row].nonzero().flatten()[merge.anchor]] = merge.sizes
    return sizes


def patched_run(model, inputs, **options):
    """Logits of the patched model and what its language model received (embeddings, positions, mask)."""
    seen = {}
    handle = model.model.language_model.register_forward_pre_hook(lambda m, a, k: seen.update(k), with_kwargs=True)
    try:
        with pruned(model, "tome", RATIO, **options), torch.no_grad():
            logits = model(**inputs).logits
    finally:
        handle.remove()
    return logits, seen


def reference_logits(model, seen, sizes, *, bias: bool) -> torch.Tensor:
    """The unpatched language model on the same pruned inputs with a mask built here: causal, real
    tokens only, and log(size) added to each key's logits when `bias`."""
    valid, positions = seen["attention_mask"].bool(), seen["position_ids"]
    length = valid.shape[1]
    key_bias = torch.gather(sizes, 1, positions).log() * bias  # the size of the token in each slot
    allowed = valid[:, None, None, :] & torch.ones(length, length, dtype=torch.bool).tril()
    mask = torch.where(allowed, key_bias[:, None, None, :], torch.finfo(torch.float32).min)
    with torch.no_grad():
        hidden = model.model.language_model(inputs_embeds=seen["inputs_embeds"], position_ids=positions,
                                            attention_mask=mask).last_hidden_state
        return model.lm_head(hidden)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_the_bias_is_log_size_on_every_key(attn):
    model, _ = tiny(attn)
    inputs = padded_batch()
    sizes = sizes_in_prompt(model, inputs)
    assert sizes.max() > 1  # tokens were merged
    logits, seen = patched_run(model, inputs)
    valid = seen["attention_mask"].bool()
    kept = torch.zeros(inputs["input_ids"].shape, dtype=torch.bool).scatter_(1, seen["position_ids"], valid)
    expected = reference_logits(model, seen, sizes, bias=True)[valid]
    torch.testing.assert_close(logits[kept], expected, atol=1e-5, rtol=1e-5)
    unbiased = reference_logits(model, seen, sizes, bias=False)[valid]
    assert (logits[kept] - unbiased).abs().max() > 1e-3  # the bias matters


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_switched_off_it_is_the_plain_merge(attn):
    model, _ = tiny(attn)
    inputs = padded_batch()
    configs = [layer.self_attn.config for layer in model.model.language_model.layers]
    logits, seen = patched_run(model, inputs, proportional=False)
    with pruned(model, "tome", RATIO, proportional=False):
        assert [layer.self_attn.config for layer in model.model.language_model.layers] == configs  # untouched
    valid = seen["attention_mask"].bool()
    kept = torch.zeros(inputs["input_ids"].shape, dtype=torch.bool).scatter_(1, seen["position_ids"], valid)
    expected = reference_logits(model, seen, sizes_in_prompt(model, inputs), bias=False)[valid]
    torch.testing.assert_close(logits[kept], expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_decode_steps_from_the_cache_equal_greedy_without_it(attn):
    model, _ = tiny(attn)
    inputs = padded_batch()
    options = dict(max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True)
    with pruned(model, "tome", RATIO):
        cached = model.generate(**inputs, **options)
        assert stats(model).options["proportional"] is True
        uncached = model.generate(**inputs, use_cache=False, **options)
    with pruned(model, "tome", RATIO, proportional=False):
        plain = model.generate(**inputs, **options)
    for step, (a, b, c) in enumerate(zip(cached.logits, uncached.logits, plain.logits)):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert (a - c).abs().max() > 1e-4, step  # each decode step attends with the sizes
    assert torch.equal(cached.sequences, uncached.sequences)
