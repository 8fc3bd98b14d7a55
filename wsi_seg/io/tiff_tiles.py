"""Direct decoding of the tiles of tiled TIFF pages: slide levels and label levels.

OpenSlide reads an Aperio SVS or a generic tiled TIFF by decoding JPEG tiles and
painting them into an ARGB buffer; for a region inside a level that is several times
more work than the decoding itself. :class:`TileDecoder` reads the same tiles with
tifffile/imagecodecs (libjpeg-turbo, the same decoder settings) and pastes them into
an RGB array: the pixels are identical to ``read_region``'s (tested on the real and
the synthetic slides) at a fraction of the cost.

It only answers what it can answer exactly: level 0, or a level with an integer
downsample at a position on that level's pixel grid; tiles that are all present; 8-bit
RGB or YCbCr JPEG. A region reaching past the level reads white there (OpenSlide's
transparent pixels, composited on white as :mod:`wsi_seg.io.slide` does). Anything else
returns ``None`` and the caller reads through OpenSlide. File reads use ``os.pread`` on a descriptor of its
own, so threads share one decoder without locks.

:class:`TiledArray` reads windows of any tiled page (the label TIFFs that go with
slides) the same way, without the per-chunk machinery of a zarr view.
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
class TiledPage:
    """The tile table of one tiled TIFF page and the function that decodes its tiles."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    tiles_across: int
    offsets: np.ndarray
    bytecounts: np.ndarray
    jpeg_tables: bytes | None
    decode: Callable
    dtype: np.dtype
    samples: int

    @classmethod
    def from_page(cls, page) -> TiledPage | None:
        """The page's tile table when it is a tiled, chunky, single-plane image, else None."""
        try:
            if not page.is_tiled or page.planarconfig not in (1, None) or page.imagedepth != 1:
                return None
            tiles_across = -(-page.imagewidth // page.tilewidth)
            tiles_down = -(-page.imagelength // page.tilelength)
            offsets = np.asarray(page.dataoffsets, dtype=np.int64)
            bytecounts = np.asarray(page.databytecounts, dtype=np.int64)
            if len(offsets) != tiles_across * tiles_down or len(bytecounts) != len(offsets):
                return None
            return cls(
                width=int(page.imagewidth), height=int(page.imagelength),
                tile_width=int(page.tilewidth), tile_height=int(page.tilelength), tiles_across=tiles_across,
                offsets=offsets, bytecounts=bytecounts, jpeg_tables=page.jpegtables, decode=page.decode,
                dtype=np.dtype(page.dtype), samples=int(page.samplesperpixel),
            )
        except Exception:  # an unusual page: left to the general readers
            return None

    def end_of_data(self) -> int:
        """One past the last byte of tile data the table points at."""
        return int((self.offsets + self.bytecounts).max(initial=0))

    def window(self, fd: int, x: int, y: int, width: int, height: int, *, missing_ok: bool) -> np.ndarray | None:
        """Pixels ``[y:y+height, x:x+width]`` (inside the page) as ``(height, width)`` or
        ``(height, width, samples)``. A tile that is not stored reads as zeros when
        ``missing_ok``; otherwise such a window gives None."""
        tw, th = self.tile_width, self.tile_height
        columns = range(x // tw, (x + width - 1) // tw + 1)
        rows = range(y // th, (y + height - 1) // th + 1)
        indices = [row * self.tiles_across + column for row in rows for column in columns]
        stored = [self.bytecounts[index] > 0 for index in indices]
        if not missing_ok and not all(stored):
            return None
        shape = (height, width) if self.samples == 1 else (height, width, self.samples)
        out = (np.zeros if not all(stored) else np.empty)(shape, dtype=self.dtype)
        for index, present in zip(indices, stored):
            if not present:
                continue
            row, column = divmod(index, self.tiles_across)
            data = os.pread(fd, int(self.bytecounts[index]), int(self.offsets[index]))
            tile = self.decode(data, index, jpegtables=self.jpeg_tables)[0]
            if tile is None:
                return None
            tile = tile.reshape(tile.shape[-3], tile.shape[-2], -1)
            left, top = column * tw, row * th
            xa, xb = max(x, left), min(x + width, left + tw)
            ya, yb = max(y, top), min(y + height, top + th)
            part = tile[ya - top : yb - top, xa - left : xb - left]
            out[ya - y : yb - y, xa - x : xb - x] = part[..., 0] if self.samples == 1 else part
        return out


def _jpeg_rgb(page) -> TiledPage | None:
    """The page's tile table when its tiles are 8-bit RGB or YCbCr JPEG, else None."""
    try:
        if page.compression != _JPEG or int(page.photometric) not in _PHOTOMETRIC:
            return None
        if page.samplesperpixel != 3 or page.bitspersample != 8:
            return None
    except Exception:
        return None
    return TiledPage.from_page(page)


class TiledArray:
    """A 2-D tiled TIFF page (a label level) read window by window: ``shape``, ``dtype``
    and 2-D slicing, as the label readers use it. It is not pickled (label sources reopen
    their levels in each process); its descriptor is opened on first use and per process."""

    def __init__(self, path: Path, page: TiledPage):
        self.path = Path(path)
        self._page = page
        self.shape = (page.height, page.width) if page.samples == 1 else (page.height, page.width, page.samples)
        self.dtype = page.dtype
        self._fd: tuple[int, int] | None = None  # (pid, descriptor)

    def _descriptor(self) -> int:
        if self._fd is None or self._fd[0] != os.getpid():
            self._fd = (os.getpid(), os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0)))
        return self._fd[1]

    def __getitem__(self, key) -> np.ndarray:
        if key is Ellipsis:
            key = (slice(None), slice(None))
        rows, columns = key
        y0, y1, ystep = rows.indices(self.shape[0])
        x0, x1, xstep = columns.indices(self.shape[1])
        if ystep != 1 or xstep != 1:
            raise IndexError("a tiled page is read in windows with step 1")
        if y1 <= y0 or x1 <= x0:
            return np.zeros((max(0, y1 - y0), max(0, x1 - x0)) + self.shape[2:], dtype=self.dtype)
        window = self._page.window(self._descriptor(), x0, y0, x1 - x0, y1 - y0, missing_ok=True)
        if window is None:
            raise ValueError(f"{self.path}: a tile could not be decoded")
        return window

    def close(self) -> None:
        if self._fd is not None and self._fd[0] == os.getpid():
            os.close(self._fd[1])
        self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter exit os may be gone
            pass


def tiled_pages(path: str | os.PathLike, levels: int | None = None) -> list[TiledPage] | None:
    """The tile tables of the first series' levels of a TIFF, or None when any level is
    not a tiled page this module reads, or tile data lies past the end of the file."""
    import tifffile

    path = Path(path)
    try:
        with tifffile.TiffFile(path) as tiff:
            series = tiff.series[0]
            pages = [level.keyframe for level in series.levels[:levels]]
            if any(len(level.pages) != 1 for level in series.levels[:levels]):
                return None
            tables = [TiledPage.from_page(page) for page in pages]
    except Exception:
        return None
    if any(table is None for table in tables) or not _data_inside_file(path, tables):
        return None
    return tables


def _data_inside_file(path: Path, tables) -> bool:
    """Whether all tile data the tables point at lies inside the file (a truncated file
    is left to the general readers, which report it)."""
    size = path.stat().st_size
    return all(table.end_of_data() <= size for table in tables)


class TileDecoder:
    """Region reads from the JPEG tiles of the pages that make up a slide's levels."""

    def __init__(self, path: Path, levels: dict[int, TiledPage], downsamples: tuple[float, ...]):
        self.path = path
        self._levels = levels
        self._downsamples = downsamples
        self._fd: int | None = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))

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
        levels: dict[int, TiledPage] = {}
        try:
            with tifffile.TiffFile(path) as tiff:
                pages = [page for page in tiff.pages if getattr(page, "is_tiled", False)]
                start = 0
                for index, size in enumerate(level_dimensions):
                    for position in range(start, len(pages)):
                        page = pages[position]
                        if (page.imagewidth, page.imagelength) == tuple(size):
                            level = _jpeg_rgb(page)
                            if level is not None:
                                levels[index] = level
                            start = position + 1
                            break
        except Exception:  # tifffile cannot parse it: OpenSlide reads everything
            return None
        if not levels or not _data_inside_file(path, levels.values()):
            return None  # nothing to decode, or a truncated file: OpenSlide reports that
        return cls(path, levels, tuple(float(d) for d in downsamples))

    def levels(self) -> tuple[int, ...]:
        """The levels this decoder reads."""
        return tuple(sorted(self._levels))

    def read(self, level: int, x0: int, y0: int, width: int, height: int) -> np.ndarray | None:
        """(height, width, 3) uint8 RGB of ``level`` with level-0 top-left (x0, y0), white
        outside the level, or None when this region is not one the decoder answers exactly."""
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
        if width <= 0 or height <= 0:
            return None
        # OpenSlide's pixels outside a level are transparent, white once composited
        xa, ya = max(x, 0), max(y, 0)
        xb, yb = min(x + width, spec.width), min(y + height, spec.height)
        if (xa, ya, xb, yb) == (x, y, x + width, y + height):
            return spec.window(self._fd, x, y, width, height, missing_ok=False)
        out = np.full((height, width, 3), 255, dtype=np.uint8)
        if xb > xa and yb > ya:
            inside = spec.window(self._fd, xa, ya, xb - xa, yb - ya, missing_ok=False)
            if inside is None:
                return None
            out[ya - y : yb - y, xa - x : xb - x] = inside
        return out

    def close(self) -> None:
        if self._fd is not None:
            try:
                os.close(self._fd)
            finally:
                self._fd = None
