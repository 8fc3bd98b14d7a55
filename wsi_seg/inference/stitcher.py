"""Seamless, streaming stitching of overlapping tile predictions (pure numpy).

Tiles of ``tile`` px are laid on a regular grid with stride ``tile - overlap``
(row-major, starting at 0; the last tiles may stick out past the image). Each
tile's class probabilities are multiplied by a separable blend window that is
tiny (but strictly positive) in a border margin, rises smoothly (sin^2)
across the rest of the overlap and is 1 in the tile's core; the stitched
probability of a pixel is the weighted mean over the tiles covering it and the
label is its argmax. Pixels no tile covered (tiles skipped for lack of tissue)
get label 0.

Memory: tiles are consumed row by row, left to right, and every pixel is final
as soon as the last tile covering it has been added, so the stitcher keeps only
the overlap strip below the current tile row (``classes x overlap x width``),
the strip right of the current tile (``classes x tile x overlap``) and the
finished label rows of the current band (``stride x width`` bytes). Nothing
grows with the image height, and nothing holds ``tile`` rows of probabilities
for the full width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

#: Weight of the outermost margin: small enough that any interior prediction
#: dominates, positive so every covered pixel has a defined average.
MIN_WEIGHT = 1e-3


def blend_window_1d(tile: int, overlap: int, margin: int | None = None) -> np.ndarray:
    """Weights along one axis of a tile: MIN_WEIGHT in the outer ``margin`` pixels
    at each end, a sin^2 ramp up to 1 across the rest of the overlap, then 1.

    The default margin is a quarter of the overlap. With two neighbours that
    overlap by ``overlap`` pixels, each pixel of the overlap is dominated by the
    tile whose border is farther away.
    """
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap must be in [0, tile), got {overlap} for tile {tile}")
    margin = overlap // 4 if margin is None else margin
    if not 0 <= 2 * margin <= overlap:
        raise ValueError(f"margin {margin} does not fit in overlap {overlap}")
    t = np.arange(tile, dtype=np.float64) + 0.5
    distance = np.minimum(t, tile - t)  # to the nearest tile border, in pixels
    ramp = max(overlap - 2 * margin, 1)
    phase = np.clip((distance - margin) / ramp, 0.0, 1.0)
    return (MIN_WEIGHT + (1.0 - MIN_WEIGHT) * np.sin(phase * np.pi / 2) ** 2).astype(np.float32)


def blend_window(tile: int, overlap: int, margin: int | None = None) -> np.ndarray:
    """The separable 2-D window (tile x tile), strictly positive."""
    w = blend_window_1d(tile, overlap, margin)
    return np.outer(w, w)


def grid_starts(extent: int, tile: int, stride: int) -> np.ndarray:
    """Tile start positions along one axis: 0, stride, ... until the extent is covered."""
    if extent <= tile:
        return np.zeros(1, dtype=np.int64)
    return np.arange(math.ceil((extent - tile) / stride) + 1, dtype=np.int64) * stride


@dataclass(frozen=True)
class TileGrid:
    width: int
    height: int
    tile: int
    overlap: int

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @property
    def xs(self) -> np.ndarray:
        return grid_starts(self.width, self.tile, self.stride)

    @property
    def ys(self) -> np.ndarray:
        return grid_starts(self.height, self.tile, self.stride)


class StreamingStitcher:
    """Accumulate tiles in row-major order; yield finished label rows.

    Call :meth:`add` for every tile of the grid in row-major order with its
    probabilities ``(C, tile, tile)`` or ``None`` for a skipped tile; after the
    last tile of a row, :meth:`add` returns the finished label band for the rows
    that no later tile touches: ``(rows, width)`` uint8, top to bottom.
    """

    def __init__(self, grid: TileGrid, num_classes: int, *, margin: int | None = None,
                 on_probabilities=None):
        self.grid = grid
        self.c = num_classes
        self.window = blend_window(grid.tile, grid.overlap, margin)
        self._xs, self._ys = grid.xs, grid.ys
        self._row = 0
        self._col = 0
        o, s, w = grid.overlap, grid.stride, grid.width
        # Overlap strip carried from the tile row above (weighted probabilities, then weights).
        self._vcarry = np.zeros((self.c + 1, o, w), np.float32)
        self._vnext = np.zeros_like(self._vcarry)
        # Strip carried from the tile to the left, for the current band rows.
        self._hcarry = np.zeros((self.c + 1, grid.tile, o), np.float32)
        self._band: np.ndarray | None = None
        self._band_probs: np.ndarray | None = None
        self.on_probabilities = on_probabilities  # optional callback(y, x, probs (C, h, w))

    def tiles(self) -> Iterator[tuple[int, int, int, int]]:
        """(row, col, y, x) of every tile, in the order :meth:`add` expects."""
        for r, y in enumerate(self._ys):
            for c, x in enumerate(self._xs):
                yield r, c, int(y), int(x)

    def add(self, probs: np.ndarray | None) -> np.ndarray | None:
        g = self.grid
        r, c = self._row, self._col
        last_row, last_col = r == len(self._ys) - 1, c == len(self._xs) - 1
        y0, x0 = int(self._ys[r]), int(self._xs[c])
        t, o, s = g.tile, g.overlap, g.stride
        band_rows = (g.height - y0) if last_row else s
        band_rows = min(band_rows, t)
        if c == 0:
            self._band = np.zeros((band_rows, g.width), np.uint8)
            self._hcarry[:] = 0
        # weighted probabilities and weights of this tile, clipped to the image
        th, tw = min(t, g.height - y0), min(t, g.width - x0)
        acc = np.zeros((self.c + 1, th, tw), np.float32)
        if probs is not None:
            if probs.shape != (self.c, t, t):
                raise ValueError(f"tile probabilities must be {(self.c, t, t)}, got {probs.shape}")
            win = self.window[:th, :tw]
            np.multiply(probs[:, :th, :tw], win, out=acc[: self.c])
            acc[self.c] = win
        # columns this tile finalises in the band: [x0, x_end)
        x_end = g.width if last_col else min(x0 + s, g.width)
        cols = x_end - x0
        block = acc[:, :band_rows, :cols]  # a view: the carries below read only other parts of acc
        hc = min(o, cols)
        if c > 0:
            block[:, :, :hc] += self._hcarry[:, :band_rows, :hc]
        if r > 0:
            vr = min(o, band_rows)
            block[:, :vr, :] += self._vcarry[:, :vr, x0:x_end]
        self._finalise(block, r, x0)
        # carry right: band rows of columns beyond this tile's finalised part
        if not last_col:
            right = acc[:, :band_rows, cols:]
            self._hcarry[:, :band_rows, : right.shape[2]] = right
            self._hcarry[:, :band_rows, right.shape[2]:] = 0
        # carry down: rows below the band
        if not last_row and th > band_rows:
            below = acc[:, band_rows:, :]
            self._vnext[:, : below.shape[1], x0 : x0 + below.shape[2]] += below
        if last_col:
            band = self._band
            self._vcarry, self._vnext = self._vnext, self._vcarry
            self._vnext[:] = 0
            self._row, self._col = r + 1, 0
            return band
        self._col = c + 1
        return None

    def _finalise(self, block: np.ndarray, r: int, x0: int) -> None:
        weights = block[self.c]
        covered = weights > 0
        # The weight is a positive per-pixel factor, so the argmax of the weighted sums is
        # the argmax of the weighted mean; a running maximum over classes is contiguous
        # work, much cheaper than numpy's strided argmax over axis 0 (first maximum wins).
        best = block[0].copy()
        labels = np.zeros(best.shape, np.uint8)
        for k in range(1, self.c):
            better = block[k] > best
            labels[better] = k
            np.maximum(best, block[k], out=best)
        labels *= covered
        self._band[:, x0 : x0 + labels.shape[1]] = labels
        if self.on_probabilities is not None:
            probs = block[: self.c] / np.where(covered, weights, 1.0)
            self.on_probabilities(int(self._ys[r]), x0, probs)
