"""``overlay.tif``: the slide with the mask blended in, as a tiled pyramidal JPEG TIFF.

Level 0 has the slide's level-0 size and mpp (resolution tags), so OpenSlide,
QuPath and ASAP open it as a slide that lines up with the original. It is
written in full-width row bands (bounded memory) by
:func:`wsi_seg.io.tiff.write_pyramidal_tiff`, atomically.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wsi_seg.io.tiff import write_pyramidal_tiff
from wsi_seg.prefetch import ordered_map
from wsi_seg.review.colour import blend

#: Rows of level 0 blended and written at a time.
OVERLAY_BAND_ROWS = 512

#: JPEG quality of the overlay.
OVERLAY_QUALITY = 85


def write_overlay(path: str | Path, slide, mask, palette: np.ndarray, alpha: float, *,
                  band_rows: int = OVERLAY_BAND_ROWS, description: str | None = None) -> None:
    """Blend ``mask`` (a :class:`~wsi_seg.review.mask.ReviewMask`) over ``slide`` at level 0
    and write ``path``."""
    width, height = slide.dimensions
    mpp = slide.mpp

    def band(start: int) -> np.ndarray:
        rows = min(band_rows, height - start)
        rgb = slide.read(0, start, width, rows, mpp)
        labels = mask.read(0, start, width, rows, mpp)
        return blend(rgb, labels, palette, alpha)

    bands = ordered_map(band, range(0, height, band_rows), threads=2, ahead=3)
    try:
        write_pyramidal_tiff(path, width=width, height=height, bands=bands, band_height=band_rows, mpp=mpp,
                             compression=("jpeg", OVERLAY_QUALITY), description=description)
    finally:
        bands.close()
