"""The streaming stitcher equals a brute-force full-canvas weighted average."""

from __future__ import annotations

import numpy as np
import pytest

from wsi_seg.inference.stitcher import MIN_WEIGHT, StreamingStitcher, TileGrid, blend_window, blend_window_1d


def _brute_force(grid: TileGrid, tiles: dict, classes: int) -> np.ndarray:
    acc = np.zeros((classes, grid.height + grid.tile, grid.width + grid.tile), np.float64)
    weight = np.zeros(acc.shape[1:], np.float64)
    win = blend_window(grid.tile, grid.overlap).astype(np.float64)
    for (y, x), probs in tiles.items():
        if probs is None:
            continue
        acc[:, y:y + grid.tile, x:x + grid.tile] += probs * win
        weight[y:y + grid.tile, x:x + grid.tile] += win
    acc, weight = acc[:, :grid.height, :grid.width], weight[:grid.height, :grid.width]
    labels = np.argmax(acc / np.maximum(weight, 1e-30), axis=0).astype(np.uint8)
    labels[weight == 0] = 0
    return labels


@pytest.mark.parametrize("width,height,tile,overlap", [(200, 150, 64, 16), (64, 64, 64, 16), (130, 61, 32, 8),
                                                        (300, 97, 48, 0), (50, 40, 64, 16)])
def test_streaming_equals_brute_force(width, height, tile, overlap):
    rng = np.random.default_rng(width * height + tile)
    classes = 5
    grid = TileGrid(width, height, tile, overlap)
    stitcher = StreamingStitcher(grid, classes)
    tiles, rows = {}, []
    for r, c, y, x in stitcher.tiles():
        skip = rng.random() < 0.2
        probs = None if skip else rng.dirichlet(np.ones(classes), size=(tile, tile)).transpose(2, 0, 1).astype(
            np.float32)
        tiles[(y, x)] = probs
        band = stitcher.add(probs)
        if band is not None:
            rows.append(band)
    stitched = np.concatenate(rows, 0)
    assert stitched.shape == (height, width)
    expected = _brute_force(grid, tiles, classes)
    assert (stitched == expected).mean() > 0.999  # float32 vs float64 ties only
    assert np.array_equal(stitched == 0, expected == 0) or (stitched != expected).sum() < 5


def test_window_is_smooth_positive_and_tiny_at_the_border():
    w = blend_window_1d(256, 64)
    assert w.min() >= MIN_WEIGHT and w.max() == pytest.approx(1.0)
    assert np.allclose(w, w[::-1])
    assert w[:16].max() == pytest.approx(MIN_WEIGHT)  # margin = overlap / 4
    assert np.all(w[64:192] == pytest.approx(1.0))
    assert np.all(np.diff(w[:128]) >= -1e-7)  # rises monotonically to the core
    # two neighbours: the one whose border is farther dominates each overlap pixel
    stride = 256 - 64
    left, right = w[stride:], w[:64]
    assert np.all(left[:24] > right[:24]) and np.all(right[40:] > left[40:])


def test_bad_overlap_is_refused():
    with pytest.raises(ValueError):
        blend_window_1d(64, 64)
    with pytest.raises(ValueError):
        StreamingStitcher(TileGrid(10, 10, 8, 8), 2)
