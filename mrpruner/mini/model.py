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

def vocabulary() -> list[str]:
    """The tokenizer's words (after the special tokens): the roles, every question's and answer's word."""
    words = ["user", "assistant", "system"]
    for _, question in TOPICS.values():
        words += question.split()
    for answers in ANSWERS.values():
        words += list(answers)
    return list(dict.fromkeys(words))


def processor():
    """The miniature's `LlavaNextProcessor` (`mrpruner.testing.offline_processor`): a WordLevel
    tokenizer over `vocabulary()` and LLaVA-NeXT's image processor on 112-pixel tiles."""
    from mrpruner.testing import offline_processor

    return offline_processor(vocabulary(), tile=TILE, pinpoints=PINPOINTS)


def config(tokenizer):
    """The miniature's `LlavaNextConfig`: CLIP 112/14 (hidden 128, 3 layers, feature layer -2),
    a gelu projector and a Llama (hidden 128, 4 layers, 4 heads over 2 KV heads)."""
    from mrpruner.testing import small_llava_next_config

    return small_llava_next_config(tokenizer, hidden=128, intermediate=256, layers=4, heads=4, kv_heads=2,
                                   vision=(128, 256, 3, 4), tile=TILE, pinpoints=PINPOINTS, rope_theta=10000.0,
                                   max_positions=1024)


def new_model(proc, seed: int = 0):
    """A freshly initialised miniature (seeded; the global RNG is left untouched)."""
    from mrpruner.testing import random_llava_next

    return random_llava_next(config(proc.tokenizer), seed=seed)


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
