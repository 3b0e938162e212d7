"""The miniature LLaVA-NeXT: transformers' own `LlavaNextForConditionalGeneration` and
`LlavaNextProcessor` with the real model's layout rules (a base image plus an anyres grid from
pinpoints, unpadding, one newline token per grid row, vision layer -2, the 'default' strategy) on
112-pixel tiles of 14-pixel patches: 64 base tokens, and LLaVA-NeXT-8B's pinpoints scaled by 1/3.

`token_coverage` maps masks drawn on an image onto the model's packed visual tokens exactly, by
sending them through the same processor and the model's own `pack_image_features`.
"""

from __future__ import annotations

import torch

from mrpruner.mini.data import ANSWERS, PATCH, PINPOINTS, TILE, TOPICS

_SPECIAL = ["<pad>", "<unk>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "<image>"]
# Llama-3 chat layout (header, blank line, content, end of turn), images before the text of a turn.
CHAT_TEMPLATE = (
    "{{ '<|begin_of_text|>' }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for item in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}"
    "{% for item in message['content'] | selectattr('type', 'equalto', 'text') %}{{ item['text'] }}{% endfor %}"
    "{% endif %}{{ '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def vocabulary() -> list[str]:
    """The tokenizer's words: special tokens, the roles, every question's and answer's word."""
    words = ["user", "assistant", "system"]
    for _, question in TOPICS.values():
        words += question.split()
    for answers in ANSWERS.values():
        words += list(answers)
    return list(dict.fromkeys(_SPECIAL + words))


def processor():
    """The miniature's `LlavaNextProcessor`: a WordLevel tokenizer over `vocabulary()` (left
    padding, Llama-3 chat template) and LLaVA-NeXT's image processor at 112-pixel tiles."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlavaNextImageProcessor, LlavaNextProcessor, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<pad>",
        unk_token="<unk>", additional_special_tokens=_SPECIAL[3:], padding_side="left",
    )
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE}, image_grid_pinpoints=PINPOINTS,
    )
    return LlavaNextProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=PATCH,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )


def config(tokenizer):
    """The miniature's `LlavaNextConfig`: CLIP 112/14 (hidden 128, 3 layers, feature layer -2),
    a gelu projector and a Llama (hidden 128, 4 layers, 4 heads over 2 KV heads)."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig

    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    vision = CLIPVisionConfig(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
                              image_size=TILE, patch_size=PATCH, projection_dim=128, hidden_act="quick_gelu")
    return LlavaNextConfig(
        vision_config=vision, text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=PINPOINTS, vision_feature_layer=-2, vision_feature_select_strategy="default",
        projector_hidden_act="gelu", image_seq_length=(TILE // PATCH) ** 2, tie_word_embeddings=False,
    )


def new_model(proc, seed: int = 0):
    """A freshly initialised miniature (seeded; the global RNG is left untouched)."""
    from mrpruner.testing import random_llava_next

    model = random_llava_next(config(proc.tokenizer), seed=seed)
    return model


def token_coverage(model, proc, masks: list) -> list[torch.Tensor]:
    """For each image's masks (a PIL 'RGB' image whose channels are three 0/255 masks drawn at the
    image's size), the share of every packed visual token's patch each mask covers: (tokens, 3)
    in [0, 1], in the order the model packs the image (base, grid rows each ending in a newline,
    whose rows read -1)."""
    inputs = proc.image_processor(masks, return_tensors="pt", do_normalize=False)
    inner = model.model if hasattr(model, "model") else model
    out = []
    for pixels, size in zip(inputs["pixel_values"], inputs["image_sizes"]):
        tiles = pixels[: _num_tiles(size, inner.config)].float()
        pooled = torch.nn.functional.avg_pool2d(tiles, PATCH).clamp(0, 1)  # (tiles, 3, side, side)
        features = pooled.flatten(2).transpose(1, 2)  # (tiles, side*side, 3)
        packed, _ = inner.pack_image_features([features], size[None], "default", torch.full((3,), -1.0))
        out.append(packed[0])
    return out


def _num_tiles(image_size, config) -> int:
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    return image_size_to_num_patches(image_size=image_size, grid_pinpoints=config.image_grid_pinpoints,
                                     patch_size=config.vision_config.image_size)
