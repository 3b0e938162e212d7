"""LLaVA-NeXT (`LlavaNextForConditionalGeneration`, transformers >= 5.18): where each image's
tokens sit in the packed visual sequence (`packed_layout`: base tokens, then the unpadded anyres
grid with a newline after each row) and the hooks `mrpruner.patch` installs.

The hooks: `LlavaNextModel.get_image_features` tags every image's packed features with its
`Layout` (generate() pre-encodes the images and does not pass `image_sizes` to the forward);
`LlavaNextModel.forward` encodes, finds the placeholders by transformers' own
`get_placeholder_mask` and hands the prompt to `mrpruner.seam.prefill`, or a decode step to
`mrpruner.seam.step`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

from mrpruner.seam import (Layout, PatchState, cache_key, images_forward, install_forward, set_attribute, step, tag,
                           tagged_layouts, unwrap)

NAME = "LLaVA-NeXT"
CLASSES = ("LlavaNextForConditionalGeneration", "LlavaNextModel")  # what `patch` takes, by class name
MODEL_TYPE = "llava_next"


def inner_model(model: torch.nn.Module) -> torch.nn.Module:
    """The `LlavaNextModel` of a `LlavaNextForConditionalGeneration` (or the model itself), after
    checking the class (transformers is imported only here)."""
    from transformers import LlavaNextForConditionalGeneration, LlavaNextModel

    return unwrap(model, LlavaNextForConditionalGeneration, LlavaNextModel, "LLaVA-NeXT")


def packed_layout(image_size, config) -> Layout:
    """The `Layout` transformers' `pack_image_features` produces for an image of `image_size`
    (height, width) under a `LlavaNextConfig`: its anyres grid and `unpad_image`, on shapes only."""
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape

    if isinstance(image_size, torch.Tensor):
        image_size = image_size.tolist()
    height, width = (int(v) for v in image_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be a positive (height, width), got {image_size!r}")
    vision = config.vision_config
    side = vision.image_size // vision.patch_size
    grid_h, grid_w = get_anyres_image_grid_shape([height, width], config.image_grid_pinpoints, vision.image_size)
    rows, cols = grid_h * side, grid_w * side
    # unpad_image's arithmetic, verbatim in floating point so the counts agree to the token.
    if width / height > cols / rows:
        new_height = int(round(height * (cols / width), 7))
        rows -= 2 * ((rows - new_height) // 2)
    else:
        new_width = int(round(width * (rows / height), 7))
        cols -= 2 * ((cols - new_width) // 2)
    return Layout(side * side, rows, cols)


def image_layouts(image_sizes, config, batch_num_images=None) -> list[Layout]:
    """Each image's layout, by its (height, width) (every image of a prompt packs alike)."""
    return [packed_layout(size, config) for size in image_sizes]


def token_coverage(model, processor, masks: list) -> list[torch.Tensor]:
    """For each image's masks (a PIL 'RGB' image whose channels are three 0/255 masks drawn at the
    image's size), the share of every packed visual token's patch each mask covers: (tokens, 3)
    in [0, 1], in the order the model packs the image (base, grid rows each ending in a newline,
    whose rows read -1). Exact: the masks go through the same processor (tiling, resizing) and
    the model's own `pack_image_features`."""
    from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

    inputs = processor.image_processor(masks, return_tensors="pt", do_normalize=False)
    inner = inner_model(model)
    vision = inner.config.vision_config
    out = []
    for pixels, size in zip(inputs["pixel_values"], inputs["image_sizes"]):
        tiles = image_size_to_num_patches(image_size=size, grid_pinpoints=inner.config.image_grid_pinpoints,
                                          patch_size=vision.image_size)
        pooled = F.avg_pool2d(pixels[:tiles].float(), vision.patch_size).clamp(0, 1)  # (tiles, 3, side, side)
        features = pooled.flatten(2).transpose(1, 2)  # (tiles, side*side, 3)
        packed, _ = inner.pack_image_features([features], size[None], "default", torch.full((3,), -1.0))
        out.append(packed[0])
    return out


REGION_SHARE = 0.1  # a token belongs to a region if the region covers >= 10% of its patch


def region_tokens(model, processor, images: list, boxes: list) -> list[torch.Tensor]:
    """Per image (a PIL image) and box (x0, y0, x1, y1 in its pixels): the sorted indices of its
    packed base and grid tokens whose patch the box covers by >= REGION_SHARE."""
    from PIL import Image, ImageDraw

    masks = []
    for image, (x0, y0, x1, y1) in zip(images, boxes):
        mask = Image.new("RGB", image.size)
        ImageDraw.Draw(mask).rectangle((x0, y0, x1 - 1, y1 - 1), fill=(255, 255, 255))
        masks.append(mask)
    return [torch.nonzero(cover[:, 0] >= REGION_SHARE).flatten() for cover in token_coverage(model, processor, masks)]


def install(model: torch.nn.Module, state: PatchState) -> None:
    """Patch `model` (a `LlavaNextModel`) in place; `state.restore` records how to undo it
    (`mrpruner.seam.uninstall`)."""
    set_attribute(state, model, "get_image_features", _tagging_encoder(model, model.get_image_features))
    install_forward(state, model, functools.partial(_forward, model, state=state))


def _tagging_encoder(model, original: Callable) -> Callable:
    """`get_image_features` that tags each image's packed feature tensor with the `Layout` of its
    size (`mrpruner.seam.tag`)."""

    @functools.wraps(original)
    def get_image_features(pixel_values, image_sizes, *args, return_dict=None, **kwargs):
        output = original(pixel_values, image_sizes, *args, return_dict=True, **kwargs)
        tag(output.pooler_output, [packed_layout(size, model.config) for size in image_sizes])
        return output.to_tuple() if return_dict is False else output

    return get_image_features


PACKING = "the 'default' feature strategy with anyres 'spatial_unpad' packing"  # what this host lays out


def _forward(inner, original: Callable, input_ids=None, pixel_values=None, image_sizes=None, attention_mask=None,
             position_ids=None, *, state: PatchState, inputs_embeds=None, vision_feature_layer=None,
             vision_feature_select_strategy=None, mm_encoder_outputs=None, **kwargs):
    """`LlavaNextModel.forward` with pruning (`mrpruner.seam.images_forward`). `kwargs` (the KV
    cache, use_cache, ...) go to the original forward unchanged."""
    encoded = (mm_encoder_outputs or {}).get("image")
    if encoded is None and pixel_values is not None and pixel_values.size(0) > 0:
        encoded = inner.get_image_features(pixel_values, image_sizes, vision_feature_layer=vision_feature_layer,
                                           vision_feature_select_strategy=vision_feature_select_strategy,
                                           return_dict=True)
    if encoded is None:
        cache = kwargs.get(cache_key(), kwargs.get("past_key_values"))  # 5.24 still takes the deprecated name
        return step(original, state, input_ids, inputs_embeds, attention_mask, position_ids, cache, kwargs)
    count = len(encoded.pooler_output)
    sizes = image_sizes is not None and len(image_sizes) == count
    layouts = tagged_layouts(list(encoded.pooler_output),
                             (lambda i: packed_layout(image_sizes[i], inner.config)) if sizes else None, PACKING)
    return images_forward(inner, original, state, encoded, layouts, inner.get_placeholder_mask, input_ids,
                          inputs_embeds, attention_mask, position_ids, kwargs)
