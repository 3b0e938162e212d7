"""mrpruner.patch on a tiny LLaVA-NeXT: one meaning of ratio, exact counts, positions, generate()
with and without the KV cache, batches with left padding, several images per prompt, dtypes,
attention kernels, labels, statistics and clear errors.

Runs that must agree although they compute differently (another kernel, batch shape or device)
never compare discrete choices that a last-bit difference can flip: their selections see the same
image features (`given_features`: the vision tower's last bits follow the batch's shape on some
CPUs, and ToMe's merge partners or a top-k can be nearly tied), FastV's ranking is replayed after
a check that it agrees up to ties (`fastv_choices`, conftest.py), and greedy tokens are compared
only where the logits' top two stand well apart (`argmax_margin`)."""

import copy
import functools

import pytest
import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

import mrpruner
from mrpruner.budget import keep_count
from mrpruner.flops import DecoderShape, prefill_flops
from mrpruner.hosts.llava_next import packed_layout
from mrpruner.patch import METHODS, patch, pruned, stats, unpatch
from mrpruner.testing import argmax_margin, chat_inputs, sample_images, tiny_llava_next

PRE_LLM = [m for m in METHODS if m != "fastv"]
QUESTIONS = ["What is shown in this image ?", "Describe the photo briefly please ."]
CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]


def tiny(dtype=torch.float32, attn="sdpa", device="cpu"):
    return _tiny(dtype, attn, device)  # one cache entry however the arguments are passed


@functools.cache
def _tiny(dtype, attn, device):
    model, processor = tiny_llava_next(dtype=dtype, attn_implementation=attn)
    return model.to(device), processor


@functools.cache
def images():
    photos = sample_images()
    return photos["astronaut_portrait"], photos["chelsea"], photos["rocket"]


def batch(device="cpu"):
    """Two prompts of different lengths and aspect ratios: row 1 is left-padded."""
    portrait, chelsea, _ = images()
    return chat_inputs(tiny()[1], [([portrait], QUESTIONS[0]), ([chelsea], QUESTIONS[1])], device=device)


def single(row, device="cpu"):
    return chat_inputs(tiny()[1], [([images()[row]], QUESTIONS[row])], device=device)


def encoded(model, inputs) -> list:
    """Each image's features from the patched encoder of `model` (tagged with their layouts)."""
    with torch.no_grad():
        return list(model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output)


def given_features(inputs, features) -> dict:
    """`inputs` with the images' precomputed `features` in place of their pixels."""
    rest = {k: v for k, v in inputs.items() if k not in ("pixel_values", "image_sizes")}
    return {**rest, "mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=features)}}


def logits(model, inputs, **kwargs):
    with torch.no_grad():
        return model(**inputs, **kwargs).logits


def capture_language_model_inputs(model):
    """A forward pre-hook recording what the language model receives."""
    seen = {}

    def hook(module, args, kwargs):
        seen.update(kwargs)

    return seen, model.model.language_model.register_forward_pre_hook(hook, with_kwargs=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHODS)
def test_ratio_zero_gives_the_unpatched_logits(method, device):
    model, _ = tiny(device=device)
    inputs = batch(device)
    assert inputs["attention_mask"].eq(0).any()  # the batch is padded
    reference = logits(model, inputs)
    with pruned(model, method, 0.0):
        assert torch.equal(logits(model, inputs), reference)
        assert all(image.tokens_after == image.tokens_before for image in stats(model).images)


@pytest.mark.parametrize("method", METHODS)
def test_unpatch_restores_exactly(method):
    model, _ = tiny()
    inputs = batch()
    reference = logits(model, inputs)
    before = {name: dict(vars(module)) for name, module in model.named_modules()}
    patch(model, method, 0.9)
    try:
        assert not torch.equal(logits(model, inputs), reference)
    finally:
        unpatch(model)
    after = {name: dict(vars(module)) for name, module in model.named_modules()}
    assert after.keys() == before.keys()
    for name in before:
        assert after[name].keys() == before[name].keys(), name
        assert all(after[name][k] is before[name][k] for k in before[name] if not k.startswith("_")), name
    assert torch.equal(logits(model, inputs), reference)
    with pytest.raises(ValueError, match="not patched"):
        stats(model)


def test_context_manager_unpatches_on_error():
    model, _ = tiny()
    with pytest.raises(RuntimeError, match="boom"):
        with pruned(model, "random", 0.5):
            raise RuntimeError("boom")
    with pytest.raises(ValueError, match="not patched"):
        unpatch(model)


@pytest.mark.parametrize("method", PRE_LLM)
@pytest.mark.parametrize("ratio", [0.5, 0.9])
def test_each_image_reaches_the_language_model_with_exactly_keep_count_tokens(method, ratio):
    model, _ = tiny()
    inputs = batch()
    seen, handle = capture_language_model_inputs(model)
    try:
        with pruned(model, method, ratio):
            out = logits(model, inputs)
            record = stats(model)
    finally:
        handle.remove()
    assert out.shape[:2] == inputs["input_ids"].shape  # outputs stay aligned with input_ids
    zero_rows = (out.abs().sum(-1) == 0).sum(1)  # pruned tokens and padding were not computed
    assert zero_rows.tolist() == [out.shape[1] - n for n in record.lengths_after]
    image_token = model.config.image_token_id
    for image, size in zip(record.images, inputs["image_sizes"]):
        assert image.layout == packed_layout(size, model.config)
        assert image.tokens_before == image.layout.total
        assert image.tokens_after == len(image.kept) == keep_count(image.layout.total, ratio)
        assert torch.equal(image.kept, image.kept.unique())  # sorted, distinct
    text = (inputs["attention_mask"].bool() & (inputs["input_ids"] != image_token)).sum(1)
    expected = [int(t) + sum(i.tokens_after for i in record.images if i.row == r) for r, t in enumerate(text)]
    assert list(record.lengths_after) == expected
    assert seen["attention_mask"].sum(1).tolist() == expected  # what the language model really got
    assert seen["inputs_embeds"].shape[1] == max(expected)


@pytest.mark.parametrize("method", ["random", "gprune", "mrpruner"])
def test_kept_tokens_keep_their_embeddings_original_positions_and_order(method):
    model, _ = tiny()
    inputs = batch()
    seen, handle = capture_language_model_inputs(model)
    try:
        logits(model, inputs, position_ids=None)
        full = seen["inputs_embeds"]
        with pruned(model, method, 0.8):
            logits(model, inputs)
            record = stats(model)
        short, positions, mask = seen["inputs_embeds"], seen["position_ids"], seen["attention_mask"].bool()
    finally:
        handle.remove()
    image_mask = inputs["input_ids"] == model.config.image_token_id
    for row in range(2):
        keep = inputs["attention_mask"][row].bool() & ~image_mask[row]
        where = image_mask[row].nonzero().flatten()
        keep[where[record.images[row].kept]] = True
        kept_at = keep.nonzero().flatten()
        assert torch.equal(positions[row][mask[row]], kept_at)  # forward without position_ids: arange
        assert torch.equal(short[row][mask[row]], full[row][kept_at])


def test_tome_puts_merged_tokens_at_their_anchor_positions():
    model, _ = tiny()
    inputs = single(1)
    seen, handle = capture_language_model_inputs(model)
    try:
        with pruned(model, "tome", 0.9):
            logits(model, inputs)
            record = stats(model)
        short = seen["inputs_embeds"][0]
    finally:
        handle.remove()
    from mrpruner.baselines import tome_merge

    with torch.no_grad():
        feature = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output[0]
    merge = tome_merge(feature, keep_count(len(feature), 0.9))
    assert torch.equal(record.images[0].kept, merge.anchor)
    start = int((inputs["input_ids"][0] == model.config.image_token_id).nonzero()[0])
    torch.testing.assert_close(short[start:start + len(merge.anchor)], merge.tokens)


@pytest.mark.parametrize("method", ["gprune", "mrpruner"])
def test_newline_tokens_are_kept_inside_the_budget(method):
    model, _ = tiny()
    with pruned(model, method, 0.9):
        logits(model, batch())
        for image in stats(model).images:
            _, _, newline = image.layout.parts()
            assert torch.isin(newline, image.kept).all()
            assert len(image.kept) == keep_count(image.layout.total, 0.9)


@pytest.mark.parametrize("method", ["gprune", "mrpruner"])
def test_a_budget_below_the_row_count_drops_the_newlines(method):
    model, _ = tiny()
    inputs = single(1)  # chelsea: 24 rows, 1464 tokens; keep_count(1464, 0.99) = 15
    with pruned(model, method, 0.99):
        logits(model, inputs)
        image = stats(model).images[0]
    _, _, newline = image.layout.parts()
    assert image.layout.rows == 24 and len(image.kept) == keep_count(1464, 0.99) == 15
    assert not torch.isin(newline, image.kept).any()


@pytest.mark.parametrize("variant", ["paper", "released"])
def test_paper_protocol_keeps_newlines_on_top(variant):
    model, _ = tiny()
    with pruned(model, "mrpruner", 0.9, protocol="paper", variant=variant):
        logits(model, batch())
        assert stats(model).protocol == "paper"
        for image in stats(model).images:
            layout = image.layout
            assert len(image.kept) == layout.total // 10 + layout.rows  # int(0.1 n) scored + newlines
            assert torch.isin(layout.parts()[2], image.kept).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_single(method, device, fastv_choices):
    model, _ = tiny(device=device)
    inputs = batch(device)
    with pruned(model, method, 0.7):
        features = encoded(model, inputs)
        batched = logits(model, inputs)
        kept = [image.kept for image in stats(model).images]
        ranked = fastv_choices.take()
        for row in range(2):
            fastv_choices.replay(ranked[row:row + 1])
            alone = logits(model, given_features(single(row, device), features[row:row + 1]))
            assert torch.equal(stats(model).images[0].kept, kept[row])
            length = alone.shape[1]
            torch.testing.assert_close(batched[row, -length:], alone[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", PRE_LLM)
def test_generate_with_and_without_cache_batched_and_single(method, device):
    model, _ = tiny(device=device)
    inputs = batch(device)
    options = dict(max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True)
    with pruned(model, method, 0.7):
        features = encoded(model, inputs)
        cached = model.generate(**inputs, **options)
        assert argmax_margin(torch.stack(cached.logits)) > 1e-4  # greedy steps clear of ties
        uncached = model.generate(**inputs, use_cache=False, **options)
        assert torch.equal(cached.sequences, uncached.sequences)
        for a, b in zip(cached.logits, uncached.logits):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        for row in range(2):
            alone = model.generate(**given_features(single(row, device), features[row:row + 1]), **options)
            assert torch.equal(alone.sequences[0, -4:], cached.sequences[row, -4:])
            for a, b in zip(cached.logits, alone.logits):  # decode steps attend to the pruned prefix
                torch.testing.assert_close(a[row], b[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["mrpruner", "fastv"])
def test_beam_search_and_several_samples_per_prompt(method, fastv_choices):
    model, _ = tiny()
    inputs = batch()
    with pruned(model, method, 0.8):
        features = encoded(model, inputs)
        beams = model.generate(**inputs, max_new_tokens=3, num_beams=2, do_sample=False, output_logits=True,
                               return_dict_in_generate=True)
        assert len(stats(model).images) == 4  # each prompt expanded to its 2 beams before the prefill
        assert argmax_margin(beams.logits[0]) > 1e-4  # the first step's beams are clear of ties
        fastv_choices.replay(fastv_choices.take()[2:])  # prompt 1's two beams
        alone = model.generate(**given_features(single(1), features[1:]), max_new_tokens=3, num_beams=2,
                               do_sample=False)
        beams = beams.sequences
        assert torch.equal(beams[1, -3:], alone[0, -3:])
        samples = model.generate(**inputs, max_new_tokens=2, do_sample=True, num_return_sequences=3)
    assert samples.shape == (6, inputs["input_ids"].shape[1] + 2)


@pytest.mark.parametrize("method", ["tome", "mrpruner", "fastv"])
def test_several_images_in_one_prompt_each_on_its_own_budget(method, fastv_choices):
    model, processor = tiny()
    portrait, chelsea, rocket = images()
    inputs = chat_inputs(processor, [([portrait, chelsea], "What is shown ?"), ([rocket], QUESTIONS[0])])
    options = dict(max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True)
    with pruned(model, method, 0.8):
        features = encoded(model, inputs)
        both = model.generate(**inputs, **options)
        record = stats(model)
        assert [image.row for image in record.images] == [0, 0, 1]
        for image in record.images:
            assert len(image.kept) == keep_count(image.layout.total, 0.8)
        fastv_choices.replay(fastv_choices.take()[:2])
        alone = chat_inputs(processor, [([portrait, chelsea], "What is shown ?")])
        first = model.generate(**given_features(alone, features[:2]), **options)
        assert [i.kept.tolist() for i in stats(model).images] == [i.kept.tolist() for i in record.images[:2]]
    for a, b in zip(both.logits, first.logits):
        torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", METHODS)
def test_half_precision_on_cpu(dtype, method):
    model, _ = tiny(dtype)
    inputs = batch().to(dtype=dtype)
    with pruned(model, method, 0.9):
        out = model.generate(**inputs, max_new_tokens=2, do_sample=False, output_logits=True,
                             return_dict_in_generate=True)
        assert all(torch.isfinite(step).all() for step in out.logits)
        for image in stats(model).images:
            assert len(image.kept) == keep_count(image.layout.total, 0.9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", METHODS)
def test_eager_attention_matches_sdpa(method, device, fastv_choices):
    inputs = batch(device)
    models = [tiny(attn=attn, device=device)[0] for attn in ("sdpa", "eager")]
    with torch.no_grad():  # the vision kernels agree to rounding (ToMe's near ties may not: they see one set)
        unpatched = [m.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output
                     for m in models]
    for a, b in zip(*unpatched, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    results = []
    with pruned(models[0], method, 0.7):
        features = encoded(models[0], inputs)
    for model in models:
        with pruned(model, method, 0.7):
            results.append((logits(model, given_features(inputs, features)), [i.kept for i in stats(model).images]))
        fastv_choices.replay(fastv_choices.take() if model is models[0] else [])
    (sdpa, kept_sdpa), (eager, kept_eager) = results
    assert all(torch.equal(a, b) for a, b in zip(kept_sdpa, kept_eager))
    valid = inputs["attention_mask"].bool()
    torch.testing.assert_close(sdpa[valid], eager[valid], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["mrpruner", "fastv"])
def test_labels_give_the_loss_of_the_pruned_logits(method):
    model, _ = tiny()
    inputs = single(0)
    length = inputs["input_ids"].shape[1]
    labels = inputs["input_ids"].masked_fill(torch.arange(length) < length - 6, -100)  # the last text tokens
    with torch.no_grad():
        reference = model(**inputs, labels=labels).loss
        with pruned(model, method, 0.0):
            assert torch.equal(model(**inputs, labels=labels).loss, reference)
        with pruned(model, method, 0.9):
            out = model(**inputs, labels=labels)
    assert (out.logits[0, -7:].abs().sum(-1) > 0).all()  # computed, not zero-filled
    expected = torch.nn.functional.cross_entropy(out.logits[0, :-1], labels[0, 1:], ignore_index=-100)
    torch.testing.assert_close(out.loss, expected)
    assert out.loss != reference


def test_the_bare_llava_next_model_can_be_patched():
    model, _ = tiny()
    inputs = single(1)
    with pruned(model.model, "mrpruner", 0.9):
        with torch.no_grad():
            hidden = model.model(**inputs).last_hidden_state
        assert stats(model.model).images[0].tokens_after == keep_count(1464, 0.9)
        with pytest.raises(ValueError, match="already patched"):
            patch(model, "random", 0.5)  # the same LlavaNextModel underneath
    assert hidden.shape[:2] == inputs["input_ids"].shape


@pytest.mark.filterwarnings("ignore:The following device_map keys")  # image_newline: a parameter, not a module
@pytest.mark.parametrize("method", METHODS)
def test_models_dispatched_by_accelerate(method, tmp_path):
    """Under accelerate's hooks the patched model gives what it gives without them: the language
    model's layers offloaded to disk (what device_map="auto" does with too little memory), forward
    and generate; and cpu_offload, a hook on every module, whose image_newline weight exists only
    inside the LlavaNextModel's own hook (forward only: its generate fails unpatched too)."""
    from accelerate import cpu_offload, dispatch_model

    model, _ = tiny()
    inputs = batch()
    with pruned(model, method, 0.7):
        reference = logits(model, inputs)
        tokens = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    layers = len(model.model.language_model.layers)
    on_cpu = ("model.vision_tower", "model.multi_modal_projector", "model.image_newline", "lm_head",
              "model.language_model.embed_tokens", "model.language_model.norm", "model.language_model.rotary_emb")
    device_map = dict.fromkeys(on_cpu, "cpu")
    device_map.update({f"model.language_model.layers.{i}": "disk" for i in range(layers)})
    on_disk = dispatch_model(copy.deepcopy(model), device_map=device_map, offload_dir=str(tmp_path))
    assert on_disk.model.language_model.layers[0].self_attn.q_proj.weight.device.type == "meta"
    with pruned(on_disk, method, 0.7):
        assert torch.equal(logits(on_disk, inputs), reference)
        assert torch.equal(on_disk.generate(**inputs, max_new_tokens=4, do_sample=False), tokens)
    offloaded = cpu_offload(copy.deepcopy(model), execution_device=torch.device("cpu"))
    assert offloaded.model.image_newline.device.type == "meta"
    with pruned(offloaded, method, 0.7):
        assert torch.equal(logits(offloaded, inputs), reference)
    assert torch.equal(logits(offloaded, inputs), logits(model, inputs))  # unpatched again


@pytest.mark.filterwarnings("ignore:The following device_map keys")
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("other", DEVICES)
def test_model_split_across_devices(method, other):
    """A model split between the CPU and `other` by accelerate (what device_map="auto" does over
    several GPUs), each half of the split swapped too: the vision tower apart from the embeddings,
    FastV's layers K-1 and K apart, the last layer apart from the LM head. Same logits (within
    float32 reordering) and tokens as on one device. With other="cpu" only the hooks differ."""
    from accelerate import dispatch_model

    model, _ = tiny()
    inputs = batch()
    with pruned(model, method, 0.7):
        reference, kept = logits(model, inputs), [i.kept for i in stats(model).images]
        tokens = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    first = ("model.vision_tower", "model.multi_modal_projector", "model.language_model.layers.0",
             "model.language_model.layers.1", "model.language_model.norm")
    second = ("model.image_newline", "model.language_model.embed_tokens", "model.language_model.rotary_emb",
              "model.language_model.layers.2", "model.language_model.layers.3", "lm_head")
    assert len(model.model.language_model.layers) == 4  # FastV's default K = 2: layers 1 and 2 apart
    for on_other, on_cpu in [(first, second), (second, first)]:
        device_map = dict.fromkeys(on_other, other) | dict.fromkeys(on_cpu, "cpu")
        split = dispatch_model(copy.deepcopy(model), device_map=device_map, main_device="cpu", force_hooks=True)
        with pruned(split, method, 0.7):
            torch.testing.assert_close(logits(split, inputs).cpu(), reference, rtol=1e-4, atol=1e-4)
            assert all(torch.equal(i.kept, k) for i, k in zip(stats(split).images, kept, strict=True))
            assert torch.equal(split.generate(**inputs, max_new_tokens=4, do_sample=False).cpu(), tokens)


def test_inputs_embeds_and_precomputed_features():
    model, _ = tiny()
    inputs = single(1)
    with pruned(model, "mrpruner", 0.9):
        reference = logits(model, inputs)
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        rest = {k: v for k, v in inputs.items() if k != "input_ids"}
        torch.testing.assert_close(logits(model, dict(rest, inputs_embeds=embeds)), reference)
    with torch.no_grad():  # features computed by the unpatched encoder carry no layout
        encoded = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"])
    with pruned(model, "mrpruner", 0.9):
        given = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
        torch.testing.assert_close(logits(model, given, mm_encoder_outputs={"image": encoded},
                                          image_sizes=inputs["image_sizes"]), reference)
        with pytest.raises(ValueError, match="carry no layout"):
            logits(model, given, mm_encoder_outputs={"image": encoded})


def test_statistics():
    model, _ = tiny()
    inputs = batch()
    shape = DecoderShape.from_config(model.config)
    with pruned(model, "mrpruner", 0.9, alpha=0.4) as patched:
        assert patched is model and stats(model) is None
        logits(model, inputs)
        record = stats(model)
    assert (record.method, record.ratio, record.options["alpha"], record.prune_layer) == ("mrpruner", 0.9, 0.4, 0)
    assert record.tokens_before == sum(i.layout.total for i in record.images)
    assert record.tokens_after == sum(len(i.kept) for i in record.images) < record.tokens_before
    assert all(i.selection_seconds >= 0 for i in record.images)
    assert record.selection_seconds == pytest.approx(sum(i.selection_seconds for i in record.images))
    assert list(record.lengths_before) == inputs["attention_mask"].sum(1).tolist()
    for row in range(2):
        assert record.dense_prefill_flops[row] == prefill_flops(record.lengths_before[row], shape, lm_head=True)
        assert prefill_flops(record.lengths_after[row], shape, lm_head=True) < record.prefill_flops[row]
        assert record.prefill_flops[row] < record.dense_prefill_flops[row]


@pytest.mark.parametrize("protocol", ["exact", "paper"])
@pytest.mark.parametrize("method", ["mrpruner", "gprune"])
def test_images_too_elongated_for_a_grid_keep_base_tokens(method, protocol):
    """Beyond about 48:1 the unpadded grid has no row (wide) or no column (tall: newlines only);
    the unpatched model runs, and so does the plug-in: it scores the base tokens alone."""
    import numpy as np
    from PIL import Image

    from mrpruner.baselines import gprune
    from mrpruner.budget import plan

    model, processor = tiny()
    pixels = np.random.default_rng(0).integers(0, 256, (6, 1000, 3), dtype=np.uint8)
    for array in (pixels, pixels.transpose(1, 0, 2).copy()):  # 6 x 1000 (no rows), 1000 x 6 (no columns)
        inputs = chat_inputs(processor, [([Image.fromarray(array)], QUESTIONS[0])])
        reference = logits(model, inputs)
        with pruned(model, method, 0.9, protocol=protocol):
            out = logits(model, inputs)
            image = stats(model).images[0]
        assert out.shape == reference.shape and torch.isfinite(out).all()
        base, rows, cols = image.layout
        assert rows * cols == 0 and image.tokens_before == base + rows
        budget = plan(method, protocol, 0.9, base=base, rows=rows, cols=cols)
        low_at, _, newline_at = image.layout.parts()
        kept_low = image.kept[image.kept < base]
        assert len(kept_low) == budget.scored and image.tokens_after == budget.total
        assert torch.equal(image.kept[image.kept >= base], newline_at if budget.newlines else newline_at[:0])
        with torch.no_grad():
            low = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output[0][:base]
        expected = (mrpruner.mr_prune(low, low[:0], budget.scored).low if method == "mrpruner"
                    else gprune(low, budget.scored))
        assert torch.equal(kept_low, low_at[expected])


def test_placeholder_mismatch_is_a_clear_error():
    model, _ = tiny()
    inputs = single(1)
    inputs["image_sizes"] = torch.tensor([[300, 300]])  # not the size the placeholders were made for
    with pruned(model, "mrpruner", 0.5), pytest.raises(ValueError, match="placeholder tokens"):
        logits(model, inputs)


def test_features_that_do_not_fit_their_layout_are_a_clear_error():
    model, _ = tiny()
    inputs = single(1)
    with torch.no_grad():
        encoded = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"])
    given = dict(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])
    with pruned(model, "mrpruner", 0.5), pytest.raises(ValueError, match=r"has 1464 feature tokens, but its layout"):
        logits(model, given, mm_encoder_outputs={"image": encoded}, image_sizes=torch.tensor([[512, 256]]))


def test_bad_arguments_are_clear_errors():
    model, _ = tiny()
    with pytest.raises(ValueError, match=r"method must be one of \('random', 'tome', 'fastv', 'gprune', 'mrpruner'\)"):
        patch(model, "fast_v", 0.5)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['k'\] for method 'fastv'; allowed: \['layer'\]"):
        patch(model, "fastv", 0.5, k=2)
    with pytest.raises(ValueError, match=r"allowed: \['proportional'\]"):
        patch(model, "tome", 0.5, seed=1)
    for ratio in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="ratio must be in"):
            patch(model, "random", ratio)
    for ratio in ("0.5", True, float("nan"), None):
        with pytest.raises(TypeError, match="ratio"):
            patch(model, "random", ratio)
    with pytest.raises(ValueError, match="variant must be one of"):
        patch(model, "mrpruner", 0.5, variant="official")
    with pytest.raises(TypeError, match="cross must be True or False"):
        patch(model, "mrpruner", 0.5, cross=1)
    with pytest.raises(ValueError, match="s_a must be in"):
        patch(model, "mrpruner", 0.5, s_a=2.0)
    with pytest.raises(ValueError, match="budget was replaced by patch's protocol: protocol='paper'"):
        patch(model, "mrpruner", 0.5, variant="released", budget="released")
    with pytest.raises(ValueError, match=r"protocol must be one of \('exact', 'paper'\)"):
        patch(model, "mrpruner", 0.5, protocol="released")
    with pytest.raises(TypeError, match="proportional must be True or False"):
        patch(model, "tome", 0.5, proportional="yes")
    with pytest.raises(TypeError, match="seed must be an integer"):
        patch(model, "random", 0.5, seed=1.5)
    with pytest.raises(ValueError, match="iterations must be in"):
        patch(model, "gprune", 0.5, iterations=0)
    with pytest.raises(ValueError, match=r"layer must be in \[1, 3\]"):
        patch(model, "fastv", 0.5, layer=4)
    with pytest.raises(TypeError, match=r"model must be one of \['LlavaNextForConditionalGeneration', "
                                        r"'LlavaNextModel', 'LlavaOnevisionForConditionalGeneration', 'LlavaOnevisionModel', "
                                        r"'InternVLForConditionalGeneration', 'InternVLModel'\] \(transformers\), "
                                        r"got LlamaModel"):
        patch(model.model.language_model, "random", 0.5)
    patch(model, "random", 0.5)
    try:
        with pytest.raises(ValueError, match="already patched"):
            patch(model, "mrpruner", 0.5)
    finally:
        unpatch(model)
    with pytest.raises(ValueError, match="not patched"):
        unpatch(model)
    assert "forward" not in vars(model.model)  # failed patches left nothing behind


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("method", METHODS)
def test_cuda_bf16_batched_generate_matches_single(method):
    model, processor = tiny_llava_next(dtype=torch.bfloat16)
    model = model.cuda()
    portrait, chelsea, _ = images()
    inputs = chat_inputs(processor, [([portrait], QUESTIONS[0]), ([chelsea], QUESTIONS[1])], device="cuda")
    options = dict(max_new_tokens=3, do_sample=False, output_logits=True, return_dict_in_generate=True)
    with pruned(model, method, 0.9):
        both = model.generate(**inputs, **options)
        assert all(len(i.kept) == keep_count(i.layout.total, 0.9) for i in stats(model).images)
        alone = model.generate(**chat_inputs(processor, [([chelsea], QUESTIONS[1])], device="cuda"), **options)
    for a, b in zip(both.logits, alone.logits):
        torch.testing.assert_close(a[1], b[0], atol=3e-2, rtol=3e-2)
