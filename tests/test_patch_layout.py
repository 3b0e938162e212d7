"""The packed layout of a LLaVA-NeXT image (base tokens, unpadded grid, newline column) derived from
image_sizes + config agrees with transformers' processor count and with the model's packing."""

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mrpruner.hosts.llava_next import packed_layout
from mrpruner.seam import Layout
from mrpruner.testing import sample_images, tiny_llava_next


@functools.lru_cache(maxsize=1)
def tiny():
    return tiny_llava_next()


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 4000), st.integers(1, 4000))
def test_layout_count_equals_the_processors_placeholder_count(height, width):
    model, processor = tiny()
    layout = packed_layout((height, width), model.config)
    # The processor counts the CLS token too (num_additional_image_tokens=1) and drops it for 'default'.
    assert layout.total == processor._get_number_of_features(height, width, 336, 336) - 1
    # rows or cols reach 0 for aspect ratios beyond about 48:1 (unpad_image truncates them to 0).
    assert layout.base == 576 and 0 <= layout.rows <= 3 * 24 and 0 <= layout.cols <= 3 * 24


def test_layout_matches_the_models_packing_on_real_photos():
    model, processor = tiny()
    images = list(sample_images().values())
    inputs = processor(images=images, text=["<image>"] * len(images), return_tensors="pt", padding=True)
    with torch.no_grad():
        packed = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"]).pooler_output
    shapes = set()
    for feature, size in zip(packed, inputs["image_sizes"]):
        layout = packed_layout(size, model.config)
        assert len(feature) == layout.total
        low, high, newline = layout.parts()
        # The newline positions hold the learned image_newline embedding, and only those do.
        is_newline = (feature == model.model.image_newline).all(-1)
        assert torch.equal(is_newline.nonzero().flatten(), newline)
        assert len(low) == 576 and len(high) == layout.rows * layout.cols and len(newline) == layout.rows
        shapes.add((layout.rows, layout.cols))
    assert len(shapes) >= 3


def test_parts_partition_the_sequence_in_row_order():
    layout = Layout(4, 2, 3)
    low, high, newline = layout.parts()
    assert layout.total == 4 + 2 * 4
    assert low.tolist() == [0, 1, 2, 3] and high.tolist() == [4, 5, 6, 8, 9, 10] and newline.tolist() == [7, 11]


def test_bad_image_size():
    model, _ = tiny()
    with pytest.raises(ValueError, match="image_size"):
        packed_layout((0, 10), model.config)
