"""A label mask aligned to its slide: full-resolution row bands and resampled windows.

The mask is a label TIFF (pyramidal or not) or a palette/grey PNG of class ids. Its
level 0 is either the slide's level-0 size or a scaled copy of it (e.g. a mask
predicted with ``--mask-mpp``): aspect ratios must agree within 1%. Nothing reads
the whole mask at once: full-resolution access is by row bands through
tifffile's zarr interface, resampled access (thumbnails, pyramid tiles) goes
through :class:`wsi_seg.io.annotations.RasterLabelSource`, which picks the
nearest finer pyramid level.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from wsi_seg.errors import InputError
from wsi_seg.io.annotations import RasterLabelSource


class ReviewMask:
    """Class ids of ``path`` for a slide of level-0 size ``slide_size0`` and ``slide_mpp``."""

    def __init__(self, path: str | os.PathLike, *, slide_size0: tuple[int, int], slide_mpp: float,
                 num_classes: int):
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise InputError(f"{self.path}: is a directory, expected a label mask")
        self.num_classes = int(num_classes)
        self.slide_size0 = (int(slide_size0[0]), int(slide_size0[1]))
        self.slide_mpp = float(slide_mpp)
        self._source = RasterLabelSource(self.path, slide_size0=self.slide_size0, slide_mpp=self.slide_mpp,
                                         num_classes=self.num_classes)
        self._full = None
        self.width, self.height = self._source.level_sizes[0]
        slide_w, slide_h = self.slide_size0
        # level-0 slide pixels per mask pixel, along x and y
        self.scale = (slide_w / self.width, slide_h / self.height)

    @property
    def pixel_area_um2(self) -> float:
        """Area of one full-resolution mask pixel in square microns."""
        return self.slide_mpp * self.scale[0] * self.slide_mpp * self.scale[1]

    def _level0(self):
        if self._full is None:
            if self.path.suffix.lower() in (".tif", ".tiff"):
                import tifffile
                import zarr

                self._full = zarr.open(tifffile.imread(self.path, aszarr=True, level=0), mode="r")
            else:
                from PIL import Image

                previous = Image.MAX_IMAGE_PIXELS
                Image.MAX_IMAGE_PIXELS = None
                try:
                    with Image.open(self.path) as image:
                        self._full = np.asarray(image)
                finally:
                    Image.MAX_IMAGE_PIXELS = previous
        return self._full

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Full-resolution rows ``start:stop`` as uint8; values are checked against the class list."""
        block = np.asarray(self._level0()[start:stop])
        if block.size and int(block.max()) >= self.num_classes:
            raise InputError(f"{self.path}: label value {int(block.max())} is outside the class list "
                             f"(0..{self.num_classes - 1}); pass the checkpoint the mask was predicted with")
        return block.astype(np.uint8, copy=False)

    def read(self, x0: float, y0: float, width: int, height: int, mpp: float) -> np.ndarray:
        """Class ids (nearest) of ``width`` x ``height`` pixels at ``mpp`` from level-0 ``(x0, y0)``."""
        return self._source.read(x0, y0, int(width), int(height), mpp)
