"""Pure numpy geometry: tile grids and coordinate maps between level 0 and a target mpp.

Conventions used everywhere in wsi-seg:

* positions are level-0 pixel coordinates (``x0``, ``y0``), top-left corners;
* sizes of what is read are pixels at the *target* mpp (``patch_px``, ``stride_px``);
* ``scale`` is level-0 pixels per target pixel, ``target_mpp / slide_mpp``;
* a box is ``(x0, y0, width0, height0)``: its position and its extent, both in level-0
  pixels.

Nothing here touches a file.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

#: Relative tolerance under which two mpp values (or downsample factors) count as equal.
MPP_RTOL = 0.01


def level0_per_target(slide_mpp: float, target_mpp: float) -> float:
    """Level-0 pixels per target pixel (``target_mpp / slide_mpp``)."""
    if not (slide_mpp > 0 and target_mpp > 0):
        raise ValueError(f"mpp values must be positive, got slide {slide_mpp!r}, target {target_mpp!r}")
    return float(target_mpp) / float(slide_mpp)


def size_at_mpp(width0: int, height0: int, slide_mpp: float, target_mpp: float) -> tuple[int, int]:
    """Extent ``(width, height)`` of a level-0 extent in pixels at the target mpp (rounded)."""
    scale = level0_per_target(slide_mpp, target_mpp)
    return max(1, int(round(width0 / scale))), max(1, int(round(height0 / scale)))


def _axis_starts_px(extent_px: int, patch_px: int, stride_px: int) -> np.ndarray:
    """Start positions (target pixels) of windows covering ``[0, extent_px)``.

    The first window starts at 0, then every ``stride_px``; the last one is the first
    that reaches the end of the extent (it may stick out past it: readers pad).
    """
    if extent_px <= patch_px:
        return np.zeros(1, dtype=np.int64)
    count = math.ceil((extent_px - patch_px) / stride_px) + 1
    return np.arange(count, dtype=np.int64) * stride_px


def tile_grid(
    width0: int,
    height0: int,
    *,
    slide_mpp: float,
    target_mpp: float,
    patch_px: int,
    stride_px: int | None = None,
) -> np.ndarray:
    """Boxes of a regular grid of patches over a level-0 extent, row-major.

    Each patch is ``patch_px`` x ``patch_px`` pixels at ``target_mpp``; consecutive patches
    are ``stride_px`` target pixels apart (default: ``patch_px``, no overlap). The grid
    covers the whole extent: the last row and column may stick out past it.

    Returns an ``(N, 4)`` int64 array of level-0 boxes ``x0, y0, width0, height0``.
    Positions are rounded to whole level-0 pixels; the extent of every box is the
    rounded level-0 extent of one patch.
    """
    stride_px = patch_px if stride_px is None else stride_px
    if patch_px <= 0 or stride_px <= 0:
        raise ValueError(f"patch and stride must be positive, got {patch_px}, {stride_px}")
    if width0 <= 0 or height0 <= 0:
        raise ValueError(f"extent must be positive, got {width0} x {height0}")
    scale = level0_per_target(slide_mpp, target_mpp)
    width_px, height_px = size_at_mpp(width0, height0, slide_mpp, target_mpp)
    xs0 = np.round(_axis_starts_px(width_px, patch_px, stride_px) * scale).astype(np.int64)
    ys0 = np.round(_axis_starts_px(height_px, patch_px, stride_px) * scale).astype(np.int64)
    extent0 = max(1, int(round(patch_px * scale)))
    yy, xx = np.meshgrid(ys0, xs0, indexing="ij")
    boxes = np.empty((xx.size, 4), dtype=np.int64)
    boxes[:, 0] = xx.ravel()
    boxes[:, 1] = yy.ravel()
    boxes[:, 2] = extent0
    boxes[:, 3] = extent0
    return boxes


def batch_slices(count: int, batch: int) -> list[slice]:
    """Consecutive slices of at most ``batch`` items covering ``range(count)``."""
    if batch <= 0:
        raise ValueError(f"batch must be positive, got {batch}")
    return [slice(start, min(start + batch, count)) for start in range(0, count, batch)]


def nearest_finer_level(downsamples: Sequence[float], target_downsample: float) -> int:
    """Index of the coarsest level whose downsample does not exceed ``target_downsample``.

    Reading there and shrinking never upsamples. Falls back to the finest level when
    every level is coarser than the target. A level within :data:`MPP_RTOL` of the target
    counts as equal.
    """
    if len(downsamples) == 0:
        raise ValueError("no levels")
    best = int(np.argmin(downsamples))
    for index, factor in enumerate(downsamples):
        if factor <= target_downsample * (1 + MPP_RTOL) and factor > downsamples[best]:
            best = index
    return best


def pixel_centres_to_level(
    start0: float, count: int, scale: float, level_factor: float
) -> np.ndarray:
    """Indices, in a level ``level_factor`` times coarser than level 0, of the pixels under
    the centres of ``count`` target pixels that start at level-0 ``start0`` and are ``scale``
    level-0 pixels wide (nearest-neighbour sampling).
    """
    centres0 = start0 + (np.arange(count, dtype=np.float64) + 0.5) * scale
    return np.floor(centres0 / level_factor).astype(np.int64)
