"""LLaVA-OneVision (`LlavaOnevisionForConditionalGeneration`): a single image packs as LLaVA-NeXT's
does (729 SigLIP base tokens, no CLS, then the unpadded anyres grid with a newline after each row),
except that a grid of more than `anyres_max_N` tiles' worth of tokens (by 1.1x) is shrunk
bilinearly to about N tiles' worth; an image of a multi-image prompt packs its 729 base tokens
and one newline, with no grid."""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Callable
from typing import NamedTuple

import torch

from mrpruner.hosts.llava_next import packed_layout as _anyres_layout
from mrpruner.seam import (Layout, PatchState, cache_key, images_forward, install_forward, set_attribute, step, tag,
                           tagged_layouts, unwrap)

ASPECT_RATIO = re.compile(r"anyres_max_([1-9][0-9]*)")


class BaseOnly(NamedTuple):
    """An image packed at one resolution: `base` tokens, then `newlines` newline tokens and no grid."""

    base: int
    newlines: int = 1
    rows: int = 0
    cols: int = 0

    @property
    def total(self) -> int:
        """Tokens in the packed sequence."""
        return self.base + self.newlines

    @property
    def base_shape(self) -> tuple[int, int]:
        """(side, side): the square grid of the base tokens over the whole image."""
        side = math.isqrt(self.base)
        return side, side

    def parts(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Indices of the base tokens, of the grid tokens (none) and of the newline tokens."""
        return (torch.arange(self.base, device=device), torch.arange(0, device=device),
                torch.arange(self.base, self.total, device=device))


def check_config(config) -> None:
    """Refuse a `LlavaOnevisionConfig` this host cannot lay out, naming the setting and its value."""
    ratio = getattr(config, "vision_aspect_ratio", None)
    if not isinstance(ratio, str) or ASPECT_RATIO.fullmatch(ratio) is None:
        raise ValueError(f"vision_aspect_ratio must be 'anyres_max_N' with N a positive integer (the grid's "
                         f"largest size in tiles), got {ratio!r}")
    # SigLIP's 384-pixel tiles are not a multiple of its 14-pixel patches: the tower reads
    # 384 // 14 = 27 patches a side, and so does the packing; the pinpoints must be whole tiles.
    tile = config.vision_config.image_size
    for pinpoint in config.image_grid_pinpoints:
        if any(side <= 0 or side % tile for side in pinpoint):
            raise ValueError(f"image_grid_pinpoints must be positive multiples of vision_config.image_size "
                             f"({tile}), got {pinpoint!r}")


def packed_layout(image_size, config, *, multi_image: bool = False) -> Layout | BaseOnly:
    """The layout transformers' `LlavaOnevisionModel.pack_image_features` gives an image of
    `image_size` (height, width): LLaVA-NeXT's anyres grid and unpadding, then OneVision's shrink
    (the grid is resized to int(rows // s) x int(cols // s) when s = sqrt(rows cols / (N side^2))
    exceeds 1.1); `multi_image` for an image of a prompt with several (base tokens and a newline)."""
    check_config(config)
    layout = _anyres_layout(image_size, config)
    if multi_image:
        return BaseOnly(layout.base)
    side = config.vision_config.image_size // config.vision_config.patch_size
    max_tiles = int(ASPECT_RATIO.fullmatch(config.vision_aspect_ratio).group(1))
    shrink = math.sqrt(layout.rows * layout.cols / (max_tiles * side**2))
    if shrink > 1.1:
        return Layout(layout.base, int(layout.rows // shrink), int(layout.cols // shrink))
    return layout


NAME = "LLaVA-OneVision"
CLASSES = ("LlavaOnevisionForConditionalGeneration", "LlavaOnevisionModel")  # what `patch` takes, by class name
MODEL_TYPE = "llava_onevision"


def inner_model(model: torch.nn.Module) -> torch.nn.Module:
    """The `LlavaOnevisionModel` of a `LlavaOnevisionForConditionalGeneration` (or the model itself),
    after checking the class and that its config is one this host lays out."""
    from transformers import LlavaOnevisionForConditionalGeneration, LlavaOnevisionModel

    inner = unwrap(model, LlavaOnevisionForConditionalGeneration, LlavaOnevisionModel, "LLaVA-OneVision")
    check_config(inner.config)
    return inner


def install(model: torch.nn.Module, state: PatchState) -> None:
    """Patch `model` (a `LlavaOnevisionModel`) in place; `state.restore` records how to undo it."""
    set_attribute(state, model, "get_image_features", _tagging_encoder(model, model.get_image_features))
    install_forward(state, model, functools.partial(_forward, model, state=state))


def image_layouts(image_sizes, config, batch_num_images=None) -> list[Layout | BaseOnly]:
    """Each image's layout as `get_image_features` packs it: an image alone in its prompt (or every
    image, when `batch_num_images`, the images per prompt, is not given) on anyres, the images of a
    multi-image prompt base-only."""
    multi = [False] * len(image_sizes) if batch_num_images is None else [
        int(n) != 1 for n in batch_num_images for _ in range(int(n))]
    if len(multi) != len(image_sizes):
        raise ValueError(f"batch_num_images must sum to the number of images ({len(image_sizes)}), got "
                         f"{[int(n) for n in batch_num_images]}")
    return [packed_layout(size, config, multi_image=m) for size, m in zip(image_sizes, multi)]


def _tagging_encoder(model, original: Callable) -> Callable:
    """`get_image_features` that tags each image's packed feature tensor with its layout."""
    signature = inspect.signature(original)

    @functools.wraps(original)
    def get_image_features(*args, **kwargs):
        bound = signature.bind(*args, **kwargs).arguments
        ratio = bound.get("vision_aspect_ratio")
        if ratio is not None and ratio != model.config.vision_aspect_ratio:
            raise ValueError(f"vision_aspect_ratio: a pruned model packs with its config's "
                             f"{model.config.vision_aspect_ratio!r}, got {ratio!r}")
        return_dict = kwargs.pop("return_dict", None)
        output = original(*args, **kwargs, return_dict=True)
        tag(output.pooler_output, image_layouts(bound["image_sizes"], model.config, bound.get("batch_num_images")))
        return output.to_tuple() if return_dict is False else output

    return get_image_features


PACKING = "anyres 'spatial_unpad' packing with the anyres_max_N shrink, or base-only images in a multi-image prompt"


def _forward(inner, original: Callable, input_ids=None, pixel_values=None, image_sizes=None, pixel_values_videos=None,
             image_sizes_videos=None, attention_mask=None, position_ids=None, *, state: PatchState, inputs_embeds=None,
             vision_feature_layer=None, vision_feature_select_strategy=None, vision_aspect_ratio=None,
             batch_num_images=None, mm_encoder_outputs=None, **kwargs):
    """`LlavaOnevisionModel.forward` with pruning (`mrpruner.seam.images_forward`); videos are refused.
    `vision_aspect_ratio` is dropped as transformers' forward drops it (the config's applies)."""
    if pixel_values_videos is not None or (mm_encoder_outputs or {}).get("video") is not None:
        raise ValueError("pixel_values_videos: mrpruner prunes images only; call the model unpatched "
                         "(mrpruner.unpatch) for a prompt with a video")
    encoded = (mm_encoder_outputs or {}).get("image")
    if encoded is None and pixel_values is not None and pixel_values.size(0) > 0:
        encoded = inner.get_image_features(pixel_values, image_sizes, vision_feature_layer=vision_feature_layer,
                                           vision_feature_select_strategy=vision_feature_select_strategy,
                                           batch_num_images=batch_num_images, return_dict=True)
    if encoded is None:
        cache = kwargs.get(cache_key(), kwargs.get("past_key_values"))
        return step(original, state, input_ids, inputs_embeds, attention_mask, position_ids, cache, kwargs)
    features = list(encoded.pooler_output)
    sizes = image_sizes is not None and len(image_sizes) == len(features)
    fallback = image_layouts(image_sizes, inner.config, batch_num_images).__getitem__ if sizes else None
    layouts = tagged_layouts(features, fallback, PACKING)

    def find(ids, inputs_embeds, image_features):
        return inner.get_placeholder_mask(ids, inputs_embeds=inputs_embeds, image_features=image_features)[0]

    return images_forward(inner, original, state, encoded, layouts, find, input_ids, inputs_embeds, attention_mask,
                          position_ids, kwargs)
