"""Test-time augmentation: a tile's class probabilities averaged over flips.

``flips`` runs each batch of tiles as it is, mirrored left-right, mirrored top-bottom and
both (4 forward passes), maps each output back and averages the probabilities; ``d4``
adds the four transposed versions (all 8 symmetries of the square, 8 passes). The model
cost grows by that factor; reading, stitching and writing do not. Tissue has no preferred
orientation (training augments with the same flips and 90-degree rotations), so the
average is a cheap ensemble: on the held-out synthetic slide it added about one mIoU
point (docs/prediction.md).
"""

from __future__ import annotations

import numpy as np

#: Forward passes per tile of each mode.
TTA_MODES = {"none": 1, "flips": 4, "d4": 8}

# (transpose, flip rows, flip columns) of each pass, in order
_PASSES = [(t, r, c) for t in (False, True) for r in (False, True) for c in (False, True)]


def _apply(tiles: np.ndarray, transpose: bool, rows: bool, columns: bool) -> np.ndarray:
    """(N, H, W, 3) tiles, transposed then flipped."""
    if transpose:
        tiles = tiles.transpose(0, 2, 1, 3)
    if rows:
        tiles = tiles[:, ::-1]
    if columns:
        tiles = tiles[:, :, ::-1]
    return np.ascontiguousarray(tiles)


def _undo(probabilities: np.ndarray, transpose: bool, rows: bool, columns: bool) -> np.ndarray:
    """(N, C, H, W) outputs of transformed tiles mapped back onto the original tiles."""
    if columns:
        probabilities = probabilities[:, :, :, ::-1]
    if rows:
        probabilities = probabilities[:, :, ::-1]
    if transpose:
        probabilities = probabilities.transpose(0, 1, 3, 2)
    return probabilities


class FlipAveraging:
    """Wraps a predictor (``__call__(tiles) -> (N, C, H, W)`` probabilities) so that every
    call averages its outputs over the symmetries of ``mode`` ("flips" or "d4"). Every
    other attribute is the wrapped predictor's."""

    def __init__(self, predictor, mode: str = "flips"):
        if mode not in TTA_MODES or mode == "none":
            raise ValueError(f"test-time augmentation mode must be one of flips, d4; got {mode!r}")
        self.predictor = predictor
        self.mode = mode
        self._passes = _PASSES[: TTA_MODES[mode]]

    def __getattr__(self, name):
        try:
            predictor = self.__dict__["predictor"]
        except KeyError:  # while unpickling
            raise AttributeError(name) from None
        return getattr(predictor, name)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        total = None
        for transform in self._passes:
            out = _undo(self.predictor(_apply(tiles, *transform)), *transform)
            total = np.array(out, dtype=np.float32) if total is None else np.add(total, out, out=total)
        total /= len(self._passes)
        return total
