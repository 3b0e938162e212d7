"""mrpruner.testing: the tiny LLaVA-NeXT mirrors the real one's structure and runs offline."""

import numpy as np
import pytest
import torch

from mrpruner.testing import LLAVA_NEXT_8B_ID, PINPOINTS, llava_next_8b_config, sample_images, tiny_llava_next


def test_tiny_config_mirrors_the_8b_structure():
    tiny, _ = tiny_llava_next()
    real = llava_next_8b_config()
    for config in (tiny.config, real):
        assert config.image_grid_pinpoints == PINPOINTS
        assert config.vision_feature_layer == -2 and config.vision_feature_select_strategy == "default"
        assert config.projector_hidden_act == "gelu"
        assert (config.vision_config.image_size, config.vision_config.patch_size) == (336, 14)
        text = config.text_config
        assert text.model_type == "llama" and text.num_attention_heads > text.num_key_value_heads
        assert text.rope_parameters["rope_theta"] == 500000.0
    assert (real.text_config.hidden_size, real.text_config.num_hidden_layers, real.text_config.intermediate_size,
            real.text_config.num_attention_heads, real.text_config.num_key_value_heads) == (4096, 32, 14336, 32, 8)
    assert (real.vision_config.hidden_size, real.vision_config.num_hidden_layers) == (1024, 24)
    assert real.image_token_id == 128256 and LLAVA_NEXT_8B_ID == "llava-hf/llama3-llava-next-8b-hf"
    assert tiny.config.image_token_id < tiny.config.text_config.vocab_size
    assert tiny.model.language_model.config._attn_implementation == "sdpa"


def test_seeded_weights_and_the_global_rng_is_untouched():
    state = torch.random.get_rng_state()
    a, _ = tiny_llava_next(seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    b, _ = tiny_llava_next(seed=3)
    c, _ = tiny_llava_next(seed=4)
    pa, pb, pc = (dict(m.named_parameters()) for m in (a, b, c))
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert not torch.equal(pa["lm_head.weight"], pc["lm_head.weight"])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_dtype_and_attention_choice(dtype):
    model, _ = tiny_llava_next(dtype=dtype, attn_implementation="eager")
    assert model.dtype == dtype and model.config.text_config._attn_implementation == "eager"
    with pytest.raises(ValueError, match="attn_implementation"):
        tiny_llava_next(attn_implementation="flash_attention_2")
    with pytest.raises(TypeError, match="dtype"):
        tiny_llava_next(dtype="float16")


def test_sample_images_are_real_photos_of_different_aspect_ratios():
    images = sample_images()
    assert {"astronaut", "coffee", "chelsea", "rocket"} <= set(images)
    ratios = {round(im.width / im.height, 1) for im in images.values()}
    assert len(ratios) >= 3 and min(ratios) < 1 < max(ratios)  # portrait, square, landscape
    for image in images.values():
        pixels = np.asarray(image)
        assert image.mode == "RGB" and len(np.unique(pixels[::4, ::4].reshape(-1, 3), axis=0)) > 500


def test_processor_and_model_agree_offline():
    model, processor = tiny_llava_next()
    images = sample_images()
    chat = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is shown ?"}]}]
    prompt = processor.apply_chat_template(chat, add_generation_prompt=True)
    assert prompt.count("<image>") == 1 and prompt.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
    inputs = processor(images=[images["chelsea"], images["astronaut_portrait"]], text=[prompt, prompt],
                       return_tensors="pt", padding=True)
    assert processor.tokenizer.padding_side == "left" and not inputs["attention_mask"][:, -1].eq(0).any()
    with torch.no_grad():
        features = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output
    placeholders = (inputs["input_ids"] == model.config.image_token_id).sum(1)
    assert placeholders.tolist() == [len(f) for f in features]
    assert model(**inputs).logits.shape[:2] == inputs["input_ids"].shape


def test_the_real_size_config_builds_an_8b_model_without_weights():
    from transformers import LlavaNextForConditionalGeneration

    with torch.device("meta"):
        model = LlavaNextForConditionalGeneration(llava_next_8b_config())
    assert 8.3e9 < sum(p.numel() for p in model.parameters()) < 8.4e9  # llama3-llava-next-8b: 8.36B
