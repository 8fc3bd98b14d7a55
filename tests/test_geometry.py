"""Tile grids and coordinate maps (pure numpy, no slides)."""

import numpy as np
import pytest

from wsi_seg.geometry import (
    batch_slices,
    level0_per_target,
    nearest_finer_level,
    pixel_centres_to_level,
    size_at_mpp,
    tile_grid,
)


def test_grid_at_coarser_mpp_is_in_level0_pixels_row_major():
    boxes = tile_grid(1000, 600, slide_mpp=0.5, target_mpp=1.0, patch_px=100)
    # 500 x 300 target pixels -> 5 x 3 patches of 200 level-0 pixels
    assert boxes.shape == (15, 4) and boxes.dtype == np.int64
    assert boxes[:5, 0].tolist() == [0, 200, 400, 600, 800]
    assert boxes[:5, 1].tolist() == [0] * 5
    assert boxes[5:10, 1].tolist() == [200] * 5
    assert set(boxes[:, 2].tolist()) == {200} and set(boxes[:, 3].tolist()) == {200}


def test_grid_covers_the_extent_with_a_last_partial_patch():
    boxes = tile_grid(450, 100, slide_mpp=1.0, target_mpp=1.0, patch_px=100)
    assert boxes[:, 0].tolist() == [0, 100, 200, 300, 400]
    assert boxes[-1, 0] + boxes[-1, 2] >= 450


def test_grid_with_overlapping_stride():
    boxes = tile_grid(200, 100, slide_mpp=0.25, target_mpp=0.25, patch_px=100, stride_px=50)
    assert boxes[:, 0].tolist() == [0, 50, 100]
    assert boxes[:, 1].tolist() == [0, 0, 0]


def test_extent_smaller_than_a_patch_gives_one_patch():
    boxes = tile_grid(30, 20, slide_mpp=0.5, target_mpp=0.5, patch_px=64)
    assert boxes.tolist() == [[0, 0, 64, 64]]


def test_fractional_scale_rounds_positions_to_whole_level0_pixels():
    boxes = tile_grid(1000, 10, slide_mpp=0.499, target_mpp=1.0, patch_px=100)
    scale = 1.0 / 0.499
    assert boxes[:, 0].tolist() == [int(round(i * 100 * scale)) for i in range(len(boxes))]
    assert boxes[0, 2] == int(round(100 * scale))


@pytest.mark.parametrize("bad", [dict(patch_px=0), dict(patch_px=10, stride_px=0)])
def test_grid_refuses_non_positive_sizes(bad):
    with pytest.raises(ValueError):
        tile_grid(100, 100, slide_mpp=0.5, target_mpp=0.5, **bad)


def test_mpp_conversions():
    assert level0_per_target(0.25, 1.0) == 4.0
    assert size_at_mpp(1001, 500, 0.5, 1.0) == (500, 250)
    with pytest.raises(ValueError):
        level0_per_target(0.0, 1.0)


def test_nearest_finer_level():
    downsamples = [1.0, 4.0, 16.0]
    assert nearest_finer_level(downsamples, 5.0) == 1
    assert nearest_finer_level(downsamples, 3.99) == 1  # within tolerance counts as equal
    assert nearest_finer_level(downsamples, 3.0) == 0
    assert nearest_finer_level(downsamples, 0.5) == 0
    assert nearest_finer_level(downsamples, 100.0) == 2


def test_pixel_centres_to_level():
    # target pixels 2 level-0 px wide from x=10: centres 11, 13, 15, 17; level 4x coarser
    assert pixel_centres_to_level(10, 4, 2.0, 4.0).tolist() == [2, 3, 3, 4]
    assert pixel_centres_to_level(0, 3, 1.0, 1.0).tolist() == [0, 1, 2]


def test_batch_slices():
    assert batch_slices(35, 16) == [slice(0, 16), slice(16, 32), slice(32, 35)]
    assert batch_slices(0, 16) == []
