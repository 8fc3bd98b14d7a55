"""From a stream of tile images to stitched label bands: batching through the
model and blending with the streaming stitcher. Shared by slides and plain images."""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import numpy as np

from wsi_seg.inference.stitcher import StreamingStitcher, TileGrid


def batched_probabilities(run_mask: Sequence[bool], images: Iterator[np.ndarray], predictor, batch_size: int,
                          on_tile: Callable[[], None] | None = None) -> Iterator[np.ndarray | None]:
    """Probabilities of every grid tile in row-major order; ``None`` for tiles not
    run (``run_mask`` False). ``images`` yields only the tiles that are run."""
    batch_size = max(1, batch_size)

    def run(chunk: list[bool], n_run: int) -> Iterator[np.ndarray | None]:
        probs = predictor(np.stack([next(images) for _ in range(n_run)])) if n_run else None
        i = 0
        for keep in chunk:
            if on_tile is not None:
                on_tile()
            if keep:
                yield probs[i]
                i += 1
            else:
                yield None

    chunk: list[bool] = []
    n_run = 0
    for keep in run_mask:
        chunk.append(bool(keep))
        n_run += bool(keep)
        if n_run == batch_size:
            yield from run(chunk, n_run)
            chunk, n_run = [], 0
    yield from run(chunk, n_run)


def stitched_bands(grid: TileGrid, run_mask: Sequence[bool], images: Iterator[np.ndarray], predictor,
                   batch_size: int, *, on_tile=None, on_probabilities=None) -> Iterator[np.ndarray]:
    """Finished label bands ``(rows, grid.width)`` uint8, top to bottom."""
    stitcher = StreamingStitcher(grid, predictor.num_classes, on_probabilities=on_probabilities)
    for probs in batched_probabilities(run_mask, images, predictor, batch_size, on_tile):
        band = stitcher.add(probs)
        # a tile's probabilities are a view of its whole batch: let the batch go before
        # the model runs the next one
        del probs
        if band is not None:
            yield band


def predict_image(image: np.ndarray, predictor, *, tile: int = 1024, overlap: int = 128,
                  batch_size: int = 4) -> np.ndarray:
    """Label an in-memory (H, W, 3) uint8 RGB image at its own resolution with
    overlapping tiles (padded with white past the edges): (H, W) uint8."""
    height, width = image.shape[:2]
    grid = TileGrid(width, height, tile, overlap)

    def tiles() -> Iterator[np.ndarray]:
        for y in grid.ys:
            for x in grid.xs:
                out = np.full((tile, tile, 3), 255, np.uint8)
                crop = image[y:y + tile, x:x + tile]
                out[:crop.shape[0], :crop.shape[1]] = crop
                yield out

    run_mask = [True] * (len(grid.ys) * len(grid.xs))
    return np.concatenate(list(stitched_bands(grid, run_mask, tiles(), predictor, batch_size)), 0)
