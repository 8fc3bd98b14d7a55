"""Direct decoding of the JPEG tiles of a tiled TIFF pyramid level.

OpenSlide reads an Aperio SVS or a generic tiled TIFF by decoding JPEG tiles and
painting them into an ARGB buffer; for a region inside a level that is several times
more work than the decoding itself. :class:`TileDecoder` reads the same tiles with
tifffile/imagecodecs (libjpeg-turbo, the same decoder settings) and pastes them into
an RGB array: the pixels are identical to ``read_region``'s (tested on the real and
the synthetic slides) at a fraction of the cost.

It only answers what it can answer exactly: level 0, or a level with an integer
downsample at a position on that level's pixel grid; a region wholly inside the level;
tiles that are all present; 8-bit RGB or YCbCr JPEG. Anything else returns ``None`` and
the caller reads through OpenSlide. File reads use ``os.pread`` on a descriptor of its
own, so threads share one decoder without locks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

#: TIFF compression code of JPEG tiles (the only one decoded here).
_JPEG = 7
#: Photometric interpretations whose JPEG tiles decode to RGB: RGB, YCbCr.
_PHOTOMETRIC = (2, 6)


@dataclass(frozen=True)
class _Level:
    width: int
    height: int
    tile_width: int
    tile_height: int
    tiles_across: int
    offsets: np.ndarray
    bytecounts: np.ndarray
    jpeg_tables: bytes | None
    decode: Callable


def _level_from_page(page) -> _Level | None:
    """The tile table of a page when it is a tiled 8-bit 3-sample JPEG image, else None."""
    try:
        if not page.is_tiled or page.compression != _JPEG or int(page.photometric) not in _PHOTOMETRIC:
            return None
        if page.samplesperpixel != 3 or page.bitspersample != 8 or page.planarconfig != 1 or page.imagedepth != 1:
            return None
        tiles_across = -(-page.imagewidth // page.tilewidth)
        tiles_down = -(-page.imagelength // page.tilelength)
        offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        bytecounts = np.asarray(page.databytecounts, dtype=np.int64)
        if len(offsets) != tiles_across * tiles_down or len(bytecounts) != len(offsets):
            return None
        return _Level(
            width=int(page.imagewidth), height=int(page.imagelength),
            tile_width=int(page.tilewidth), tile_height=int(page.tilelength), tiles_across=tiles_across,
            offsets=offsets, bytecounts=bytecounts, jpeg_tables=page.jpegtables, decode=page.decode,
        )
    except Exception:  # an unusual page: left to OpenSlide
        return None


class TileDecoder:
    """Region reads from the JPEG tiles of the pages that make up a slide's levels."""

    def __init__(self, path: Path, levels: dict[int, _Level], downsamples: tuple[float, ...]):
        self.path = path
        self._levels = levels
        self._downsamples = downsamples
        self._fd: int | None = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._file_size = os.fstat(self._fd).st_size

    @classmethod
    def for_slide(
        cls, path: str | os.PathLike, level_dimensions: tuple[tuple[int, int], ...], downsamples: tuple[float, ...]
    ) -> TileDecoder | None:
        """A decoder for the levels of ``path`` it can read exactly, or None for none.

        Level ``i`` is the first tiled page, in file order, whose size equals
        ``level_dimensions[i]`` (the pages OpenSlide takes as levels in Aperio and generic
        tiled TIFF files).
        """
        import tifffile

        path = Path(path)
        levels: dict[int, _Level] = {}
        try:
            with tifffile.TiffFile(path) as tiff:
                pages = [page for page in tiff.pages if getattr(page, "is_tiled", False)]
                start = 0
                for index, size in enumerate(level_dimensions):
                    for position in range(start, len(pages)):
                        page = pages[position]
                        if (page.imagewidth, page.imagelength) == tuple(size):
                            level = _level_from_page(page)
                            if level is not None:
                                levels[index] = level
                            start = position + 1
                            break
        except Exception:  # tifffile cannot parse it: OpenSlide reads everything
            return None
        if not levels:
            return None
        decoder = cls(path, levels, tuple(float(d) for d in downsamples))
        if any(int((lv.offsets + lv.bytecounts).max(initial=0)) > decoder._file_size for lv in levels.values()):
            decoder.close()  # tiles past the end of the file: OpenSlide reports that
            return None
        return decoder

    def levels(self) -> tuple[int, ...]:
        """The levels this decoder reads."""
        return tuple(sorted(self._levels))

    def read(self, level: int, x0: int, y0: int, width: int, height: int) -> np.ndarray | None:
        """(height, width, 3) uint8 RGB of ``level`` with level-0 top-left (x0, y0), or
        None when this region is not one the decoder answers exactly."""
        spec = self._levels.get(level)
        if spec is None or self._fd is None:
            return None
        if level == 0:
            x, y = int(x0), int(y0)
        else:
            factor = round(self._downsamples[level])
            if factor < 1 or self._downsamples[level] != factor or x0 % factor or y0 % factor:
                return None
            x, y = int(x0) // factor, int(y0) // factor
        if x < 0 or y < 0 or x + width > spec.width or y + height > spec.height or width <= 0 or height <= 0:
            return None
        tw, th = spec.tile_width, spec.tile_height
        columns = range(x // tw, (x + width - 1) // tw + 1)
        rows = range(y // th, (y + height - 1) // th + 1)
        indices = [row * spec.tiles_across + column for row in rows for column in columns]
        if not all(spec.bytecounts[index] > 0 for index in indices):
            return None  # missing tiles are transparent in OpenSlide
        out = np.empty((height, width, 3), dtype=np.uint8)
        for index in indices:
            row, column = divmod(index, spec.tiles_across)
            data = os.pread(self._fd, int(spec.bytecounts[index]), int(spec.offsets[index]))
            tile = spec.decode(data, index, jpegtables=spec.jpeg_tables)[0]
            if tile is None:
                return None
            tile = tile.reshape(tile.shape[-3], tile.shape[-2], -1)
            left, top = column * tw, row * th
            xa, xb = max(x, left), min(x + width, left + tw)
            ya, yb = max(y, top), min(y + height, top + th)
            out[ya - y : yb - y, xa - x : xb - x] = tile[ya - top : yb - top, xa - left : xb - left, :3]
        return out

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None
