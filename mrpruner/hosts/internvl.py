"""InternVL (`InternVLForConditionalGeneration`): the processor cuts an image into a grid of
`tile`-pixel tiles (the arrangement of 1 to `max_patches` tiles closest to its aspect ratio) and,
when there is more than one tile, adds a thumbnail of the whole image; each tile's patches are
pixel-shuffled to (tile / patch * downsample_ratio)^2 tokens, row-major over the tile, and the
language model receives the tiles row by row, then the thumbnail, with no newline tokens."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


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
