"""InternVL (`InternVLForConditionalGeneration`): the processor cuts an image into a grid of
`tile`-pixel tiles (the arrangement of 1 to `max_patches` tiles closest to its aspect ratio) and,
when there is more than one tile, adds a thumbnail of the whole image; each tile's patches are
pixel-shuffled to (tile / patch * downsample_ratio)^2 tokens, row-major over the tile, and the
language model receives the tiles row by row, then the thumbnail, with no newline tokens.

The processor does not return the images' sizes and the model never sees them, so a patched
InternVL takes `image_sizes` (height, width per image) beside its inputs, to forward() and
generate(): each image's tile grid follows from its size under the processor's default tiling (1
to 12 tiles, thumbnail), and a count that disagrees is a clear error. `with_image_sizes(processor)`
gives a processor whose outputs carry them, so that `model.generate(**processor(images=...,
text=...))` works on a pruned InternVL unchanged (an unpatched one ignores them); inputs built by
hand pass `image_sizes=image_sizes(images)`. The patched `get_image_features` returns one (tokens,
hidden) tensor per image, tagged with its layout."""

from __future__ import annotations

import copy
import functools
import inspect
import math
from collections.abc import Callable
from typing import NamedTuple

import torch

from mrpruner.seam import (PatchState, cache_key, images_forward, install_forward, set_attribute, step, tag,
                           tagged_layouts, unwrap)


class TiledLayout(NamedTuple):
    """One image's packed visual sequence: `tile_rows` x `tile_cols` tiles of `side` x `side` tokens
    each, tile after tile (row-major), then `base` thumbnail tokens (0 for a single tile)."""

    base: int
    tile_rows: int
    tile_cols: int
    side: int

    @property
    def rows(self) -> int:
        """Token rows of the high-resolution grid that the tiles form together."""
        return self.tile_rows * self.side

    @property
    def cols(self) -> int:
        """Token columns of the high-resolution grid."""
        return self.tile_cols * self.side

    @property
    def newlines(self) -> int:
        """Separator tokens in the visual sequence: none (InternVL's <img> and </img> lie outside it)."""
        return 0

    @property
    def tiles(self) -> int:
        """Tiles the vision tower encodes: the grid's and the thumbnail."""
        return self.tile_rows * self.tile_cols + (self.base > 0)

    @property
    def total(self) -> int:
        """Tokens in the packed sequence: the tiles' and the thumbnail's."""
        return self.rows * self.cols + self.base

    @property
    def base_shape(self) -> tuple[int, int]:
        """(side, side): the square grid of the thumbnail's tokens over the whole image."""
        side = math.isqrt(self.base)
        return side, side

    def parts(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Indices into the packed sequence of the thumbnail's tokens, of the grid's tokens in
        row-major order over the whole grid (not tile by tile) and of the newlines (none)."""
        row = torch.arange(self.rows, device=device)[:, None]
        col = torch.arange(self.cols, device=device)[None, :]
        tile = (row // self.side) * self.tile_cols + col // self.side
        grid = tile * self.side**2 + (row % self.side) * self.side + col % self.side
        grid_tokens = self.rows * self.cols
        return (torch.arange(grid_tokens, grid_tokens + self.base, device=device), grid.reshape(-1),
                torch.arange(0, device=device))


def tokens_per_tile(config) -> int:
    """The language-model tokens of one tile: (tile / patch * downsample_ratio)^2, after `check_config`."""
    check_config(config)
    return _side(config) ** 2


def check_config(config) -> None:
    """Refuse an `InternVLConfig` this host cannot lay out, naming the setting and its value."""
    tile, patch = tuple(config.vision_config.image_size), tuple(config.vision_config.patch_size)
    if tile[0] != tile[1] or patch[0] != patch[1]:
        raise ValueError(f"vision_config.image_size ({tile}) and patch_size ({patch}) must be square")
    if tile[0] % patch[0]:
        raise ValueError(f"vision_config.image_size ({tile[0]}) must be a multiple of vision_config.patch_size "
                         f"({patch[0]}): a tile is a whole number of patches")
    ratio = config.downsample_ratio
    shuffled = tile[0] // patch[0] * ratio
    if not 0 < ratio <= 1 or shuffled != int(shuffled) or (1 / ratio) != int(1 / ratio):
        raise ValueError(f"downsample_ratio must be 1/k for an integer k dividing the {tile[0] // patch[0]} "
                         f"patches of a tile side, got {ratio!r}")
    if config.image_seq_length != int(shuffled) ** 2:
        raise ValueError(f"image_seq_length ({config.image_seq_length}) must be the tokens of a tile, "
                         f"{int(shuffled) ** 2} for image_size {tile[0]}, patch_size {patch[0]}, "
                         f"downsample_ratio {ratio}")


def packed_layout(image_size, config, *, min_tiles: int = 1, max_tiles: int = 12,
                  thumbnail: bool = True) -> TiledLayout:
    """The layout InternVL's processor and model give an image of `image_size` (height, width):
    transformers' `get_optimal_tiled_canvas` picks the tile grid from 1 to `max_tiles` tiles (the
    processor's `min_patches`, `max_patches`), a thumbnail follows when there is more than one tile
    and `thumbnail` (its `use_thumbnail`)."""
    from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas

    check_config(config)
    if isinstance(image_size, torch.Tensor):
        image_size = image_size.tolist()
    height, width = (int(v) for v in image_size)
    if height <= 0 or width <= 0:
        raise ValueError(f"image_size must be a positive (height, width), got {image_size!r}")
    if not 1 <= min_tiles <= max_tiles:
        raise ValueError(f"min_tiles and max_tiles must satisfy 1 <= min_tiles <= max_tiles, got {min_tiles}, "
                         f"{max_tiles}")
    tile = config.vision_config.image_size[0]
    cols, rows = get_optimal_tiled_canvas((height, width), (tile, tile), min_tiles, max_tiles)
    side = _side(config)
    return TiledLayout(side**2 if thumbnail and rows * cols > 1 else 0, rows, cols, side)


def _side(config) -> int:
    """Tokens along one side of a tile after the pixel shuffle."""
    return int(config.vision_config.image_size[0] // config.vision_config.patch_size[0] * config.downsample_ratio)


NAME = "InternVL"
CLASSES = ("InternVLForConditionalGeneration", "InternVLModel")  # what `patch` takes, by class name
MODEL_TYPE = "internvl"


def inner_model(model: torch.nn.Module) -> torch.nn.Module:
    """The `InternVLModel` of an `InternVLForConditionalGeneration` (or the model itself), after
    checking the class and that its config is one this host lays out."""
    from transformers import InternVLForConditionalGeneration, InternVLModel

    inner = unwrap(model, InternVLForConditionalGeneration, InternVLModel, "InternVL")
    check_config(inner.config)
    return inner


def image_sizes(images: list) -> torch.Tensor:
    """(images, 2): the (height, width) of each PIL image, what a patched InternVL takes as `image_sizes`."""
    return torch.tensor([(image.height, image.width) for image in images], dtype=torch.long).reshape(-1, 2)


#: The processor settings this host lays out (`packed_layout`'s defaults): the only tiling
#: `with_image_sizes` lets through.
TILING = {"crop_to_patches": True, "min_patches": 1, "max_patches": 12}


def with_image_sizes(processor):
    """A copy of InternVL's `processor` whose outputs also hold `image_sizes` ((height, width) of
    each image, in the order of `pixel_values`), through `processor(images=..., text=...)` and
    `processor.apply_chat_template(..., tokenize=True)` alike: `model.generate(**inputs)` then
    works on a pruned InternVL as it is (an unpatched one ignores the sizes). `processor` itself is
    left as it was; the copy saves (`save_pretrained`) as the plain processor. A call with another
    tiling than `TILING` is refused, naming the setting."""
    image_processor = getattr(processor, "image_processor", None)
    if not all(hasattr(image_processor, name) for name in TILING) or not hasattr(processor, "image_seq_length"):
        raise TypeError(f"processor must be an InternVL processor (transformers' InternVLProcessor, e.g. "
                        f"AutoProcessor.from_pretrained('OpenGVLab/InternVL3-8B-hf')), got {type(processor).__name__}")
    if isinstance(image_processor, _ImageSizes):
        return processor
    sized = copy.copy(processor)
    sized.image_processor = _sizes_added(image_processor)
    return sized


class _ImageSizes:
    """Mixed into a copy of InternVL's image processor by `with_image_sizes`: its outputs also hold
    `image_sizes`, each image's (height, width)."""

    def __call__(self, images, *args, **kwargs):
        for name, default in TILING.items():
            value = kwargs.get(name)
            value = getattr(self, name) if value is None else value
            if value != default:
                raise ValueError(f"{name}: a pruned InternVL lays out the processor's default tiling only "
                                 f"({', '.join(f'{k}={v}' for k, v in TILING.items())}), got {name}={value!r}")
        output = super().__call__(images, *args, **kwargs)
        output["image_sizes"] = [_size(image, kwargs.get("input_data_format")) for image in _flat(images)]
        return output

    def __reduce__(self):
        """Pickled as the plain image processor, given its sizes again when loaded."""
        plain = object.__new__(type(self).__bases__[1])
        plain.__dict__.update(self.__dict__)
        return _sizes_added, (plain,)


_SIZED: dict[type, type] = {}  # image processor class -> its class with _ImageSizes


def _sizes_added(image_processor):
    """A copy of `image_processor` of a subclass that adds `_ImageSizes`, named as its class (so that
    transformers saves it as it would the original)."""
    base = type(image_processor)
    if base not in _SIZED:
        _SIZED[base] = type(base.__name__, (_ImageSizes, base), {})
    sized = copy.copy(image_processor)
    sized.__class__ = _SIZED[base]
    return sized


def _flat(images) -> list:
    """The images of a processor call (one, a list, or a list per prompt) as one flat list."""
    from transformers.image_utils import make_flat_list_of_images

    return images if isinstance(images, str) or not images else make_flat_list_of_images(images)


def _size(image, channel_dim=None) -> list[int]:
    """[height, width] of a PIL image, an array or tensor (channels first or last), a path or a URL."""
    from transformers.image_utils import get_image_size, load_image

    if isinstance(image, str):
        image = load_image(image)
    if hasattr(image, "height") and hasattr(image, "width") and not hasattr(image, "shape"):
        return [int(image.height), int(image.width)]
    return [int(v) for v in get_image_size(image, channel_dim)]


def image_layouts(image_sizes, config, batch_num_images=None) -> list[TiledLayout]:
    """Each image's layout, by its (height, width) (every image of a prompt packs alike)."""
    return [packed_layout(size, config) for size in image_sizes]


def install(model: torch.nn.Module, state: PatchState) -> None:
    """Patch `model` (an `InternVLModel`) in place; `state.restore` records how to undo it."""
    set_attribute(state, model, "get_image_features", _tagging_encoder(model, model.get_image_features))
    install_forward(state, model, functools.partial(_forward, model, state=state))


VIDEO = ("A prompt with a video is not pruned (its frames are tiles of pixel_values, with no image size): "
         "call the model unpatched (mrpruner.unpatch) for it")
NO_SIZES = ("image_sizes: a pruned InternVL needs each image's (height, width) to lay out its tiles, and "
            "InternVL's processor does not give them; make the inputs with "
            "mrpruner.hosts.internvl.with_image_sizes(processor), or pass "
            "image_sizes=mrpruner.hosts.internvl.image_sizes(images) to forward() or generate(). " + VIDEO)


def _split(features: torch.Tensor, sizes, config) -> list[torch.Tensor]:
    """The vision tower's (tiles, tokens, hidden) output as one (tokens, hidden) tensor per image,
    each tagged with the layout of its size; a tile count that disagrees is a clear error."""
    if sizes is None:
        raise ValueError(NO_SIZES)
    layouts = [packed_layout(size, config) for size in sizes]
    counts = [layout.tiles for layout in layouts]
    if sum(counts) != len(features):
        raise ValueError(f"image_sizes give {sum(counts)} tiles ({counts} per image, InternVL's default tiling of "
                         f"1 to 12 tiles and a thumbnail), but pixel_values has {len(features)}; only the "
                         f"processor's default min_patches, max_patches and crop_to_patches are supported. {VIDEO}")
    images = [tiles.flatten(0, 1) for tiles in torch.split(features, counts)]
    tag(images, layouts)
    return images


def _tagging_encoder(model, original: Callable) -> Callable:
    """`get_image_features` that also takes `image_sizes` (generate() passes what its signature
    names) and returns each image's packed features, tagged with its layout."""

    @functools.wraps(original)
    def get_image_features(pixel_values, *args, image_sizes=None, return_dict=None, **kwargs):
        output = original(pixel_values, *args, return_dict=True, **kwargs)
        output.pooler_output = _split(output.pooler_output, image_sizes, model.config)
        return output.to_tuple() if return_dict is False else output

    parameters = list(inspect.signature(original).parameters.values())
    sizes = inspect.Parameter("image_sizes", inspect.Parameter.KEYWORD_ONLY, default=None)
    get_image_features.__signature__ = inspect.Signature(parameters[:-1] + [sizes, parameters[-1]])
    return get_image_features


PACKING = "InternVL's default tiling (1 to 12 tiles of its image size, a thumbnail when there are several)"


def _forward(inner, original: Callable, input_ids=None, pixel_values=None, attention_mask=None, position_ids=None,
             *, state: PatchState, inputs_embeds=None, vision_feature_layer=None, vision_feature_select_strategy=None,
             mm_encoder_outputs=None, image_sizes=None, **kwargs):
    """`InternVLModel.forward` with pruning (`mrpruner.seam.images_forward`), given `image_sizes`."""
    encoded = (mm_encoder_outputs or {}).get("image")
    if encoded is None and pixel_values is not None and pixel_values.size(0) > 0:
        encoded = inner.get_image_features(pixel_values, vision_feature_layer=vision_feature_layer,
                                           vision_feature_select_strategy=vision_feature_select_strategy,
                                           image_sizes=image_sizes, return_dict=True)
    if encoded is None:
        cache = kwargs.get(cache_key(), kwargs.get("past_key_values"))
        return step(original, state, input_ids, inputs_embeds, attention_mask, position_ids, cache, kwargs)
    if isinstance(encoded.pooler_output, torch.Tensor):  # computed without the patched encoder
        encoded.pooler_output = _split(encoded.pooler_output, image_sizes, inner.config)
    layouts = tagged_layouts(list(encoded.pooler_output), None, PACKING)

    def find(ids, inputs_embeds, image_features):
        return inner.get_placeholder_mask(ids, inputs_embeds=inputs_embeds, image_features=image_features)

    return images_forward(inner, original, state, encoded, layouts, find, input_ids, inputs_embeds, attention_mask,
                          position_ids, kwargs)
