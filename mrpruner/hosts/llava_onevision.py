"""LLaVA-OneVision (`LlavaOnevisionForConditionalGeneration`): a single image packs as LLaVA-NeXT's
does (729 SigLIP base tokens, no CLS, then the unpadded anyres grid with a newline after each row),
except that a grid of more than `anyres_max_N` tiles' worth of tokens (by 1.1x) is shrunk
bilinearly to about N tiles' worth; an image of a multi-image prompt packs its 729 base tokens
and one newline, with no grid."""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import torch

from mrpruner.hosts.llava_next import packed_layout as _anyres_layout
from mrpruner.seam import Layout

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
