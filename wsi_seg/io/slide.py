"""Whole-slide image access in physical units.

This is the only module that imports :mod:`openslide`. A :class:`Slide` holds a
path and options, never an open handle: the handle is opened lazily in each
process (a cache keyed by path and process id), so a ``Slide`` can be pickled to
Dask or multiprocessing workers and used after a fork. The handles of a process share
one tile cache of :data:`TILE_CACHE_BYTES`, so the memory a long-lived process holds
does not grow with the number of slides it has opened.

Positions are level-0 pixel coordinates; sizes are pixels at the requested
microns-per-pixel (mpp). Pixels come from the nearest finer pyramid level and
are resized with antialiasing; anything outside the slide reads as white.

Formats: everything OpenSlide reads (Aperio SVS, generic tiled TIFF, ...) plus
plain PNG/JPEG (Pillow) and plain TIFF (tifffile, read through zarr so large
stripped images are never loaded whole).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openslide
from PIL import Image

from wsi_seg.errors import InputError, MissingMppError, SlideError
from wsi_seg.io.tiff_tiles import TileDecoder

#: Suffixes read as plain images when OpenSlide does not recognise the file.
PLAIN_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")

#: X and Y pixel sizes that differ by more than this fraction are refused.
MPP_XY_TOLERANCE = 0.05

#: A level whose downsample exceeds the wanted one by at most this fraction still
#: counts as "finer" (scanners store e.g. 2.0005 for a nominal 2x level).
LEVEL_TOLERANCE = 0.01

#: Largest plain PNG/JPEG read (it is held in memory whole, 3-4 bytes a pixel); the size in
#: the header is checked before any pixel is decoded, so a "decompression bomb" is refused.
#: Larger images belong in a tiled TIFF, which is read window by window.
MAX_PLAIN_IMAGE_PIXELS = 1 << 30

#: Thumbnails are read in row bands of at most this many source pixels.
_BAND_SOURCE_PIXELS = 32 * 1024 * 1024

#: Decoded OpenSlide tiles kept in a process, in one cache shared by all the slides it
#: has open (OpenSlide's own default is a cache of this size for each open slide, so a
#: process that kept many slides open, such as a cluster worker, grew by up to that much
#: with every slide).
TILE_CACHE_BYTES = 32 * 1024 * 1024

#: Vendors whose JPEG-tiled levels are decoded directly (:mod:`wsi_seg.io.tiff_tiles`): their
#: levels are plain TIFF pages that OpenSlide paints tile by tile without overlaps.
_DIRECT_JPEG_VENDORS = ("aperio", "generic-tiff")

_RESOLUTION_UNIT_UM = {"centimeter": 1e4, "inch": 25400.0}


@dataclass(frozen=True)
class _Metadata:
    vendor: str | None
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    properties: dict[str, str]
    associated_images: tuple[str, ...]
    objective_power: float | None
    mpp_x: float | None
    mpp_y: float | None


def _positive_float(value: str | float | None) -> float | None:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """RGBA (straight alpha) -> RGB over white; transparent pixels become 255."""
    if rgba.shape[2] == 3:
        return rgba
    rgb = rgba[..., :3]
    if rgba.flags.c_contiguous and rgba.dtype == np.uint8:
        # opaque when every pixel's alpha byte is 255: one pass over the pixels as 32-bit words
        words = rgba.reshape(-1).view(np.uint32)
        opaque = bool(words.min() >= 0xFF000000) if sys.byteorder == "little" else bool((words & 0xFF).min() == 0xFF)
    else:
        opaque = bool(rgba[..., 3].min() == 255)
    if opaque:
        return rgb  # a view: the caller copies the pixels once, where it needs them
    # Slides are opaque or fully transparent almost everywhere (outside a level, missing
    # tiles): blend only the pixels in between, so a large region costs one RGB copy.
    alpha = rgba[..., 3]
    out = np.array(rgb, dtype=np.uint8)
    out[alpha == 0] = 255
    partial = np.nonzero((alpha != 0) & (alpha != 255))
    if partial[0].size:
        a = alpha[partial].astype(np.uint16)[:, None]
        out[partial] = ((rgb[partial].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    return out


def _to_rgb(array: np.ndarray) -> np.ndarray:
    """Any 2-D grey, grey+alpha, RGB or RGBA uint8-like array -> (h, w, 3) uint8."""
    if array.dtype != np.uint8:
        if array.dtype == np.uint16:
            array = (array >> 8).astype(np.uint8)
        elif array.dtype == bool:
            array = array.astype(np.uint8) * 255
        else:
            array = np.clip(array, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.shape[2] == 1:
        return np.repeat(array, 3, axis=2)
    if array.shape[2] == 2:
        grey = np.repeat(array[..., :1], 3, axis=2)
        return _composite_on_white(np.concatenate([grey, array[..., 1:2]], axis=2))
    return _composite_on_white(array[..., :4])


class _OpenSlideBackend:
    """An OpenSlide handle and the metadata read from it."""

    def __init__(self, path: Path):
        try:
            self._handle = openslide.OpenSlide(str(path))
        except openslide.OpenSlideUnsupportedFormatError as exc:
            raise SlideError(
                f"{path}: not a slide OpenSlide can read (unsupported format, or a truncated or corrupt file)"
            ) from exc
        except openslide.OpenSlideError as exc:
            raise SlideError(f"{path}: OpenSlide cannot open it: {exc}") from exc
        handle = self._handle
        cache = _tile_cache()
        if cache is not None:
            handle.set_cache(cache)
        props = dict(handle.properties)
        mpp_x = _positive_float(props.get(openslide.PROPERTY_NAME_MPP_X))
        mpp_y = _positive_float(props.get(openslide.PROPERTY_NAME_MPP_Y))
        if mpp_x is None or mpp_y is None:
            mpp_x, mpp_y = self._mpp_from_resolution_tags(props)
        self.metadata = _Metadata(
            vendor=props.get(openslide.PROPERTY_NAME_VENDOR),
            level_dimensions=tuple((int(w), int(h)) for w, h in handle.level_dimensions),
            level_downsamples=tuple(float(d) for d in handle.level_downsamples),
            properties=props,
            associated_images=tuple(sorted(handle.associated_images.keys())),
            objective_power=_positive_float(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)),
            mpp_x=mpp_x,
            mpp_y=mpp_y,
        )
        self._tiles = None
        if self.metadata.vendor in _DIRECT_JPEG_VENDORS:
            self._tiles = TileDecoder.for_slide(path, self.metadata.level_dimensions, self.metadata.level_downsamples)

    @staticmethod
    def _mpp_from_resolution_tags(props: dict[str, str]) -> tuple[float | None, float | None]:
        unit = _RESOLUTION_UNIT_UM.get(props.get("tiff.ResolutionUnit", "").lower())
        x_res = _positive_float(props.get("tiff.XResolution"))
        y_res = _positive_float(props.get("tiff.YResolution"))
        if unit is None or x_res is None or y_res is None:
            return None, None
        return unit / x_res, unit / y_res

    def read_level(self, level: int, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        """(height, width, 3) RGB of `level`, top-left at level-0 (x0, y0)."""
        if self._tiles is not None:
            direct = self._tiles.read(level, x0, y0, width, height)
            if direct is not None:
                return direct
        region = self._handle.read_region((int(x0), int(y0)), level, (int(width), int(height)))
        return _composite_on_white(np.asarray(region))

    def close(self) -> None:
        if self._tiles is not None:
            self._tiles.close()
        try:
            self._handle.close()
        except Exception:  # a handle in an error state may refuse to close; it is dropped anyway
            pass


def _tiff_truncation(tiff, file_size: int) -> str | None:
    """Why a TIFF is incomplete (data or next directory past the end), or None."""
    pages = list(tiff.pages)
    for index, page in enumerate(pages):
        ends = [offset + count for offset, count in zip(page.dataoffsets, page.databytecounts) if count]
        if ends and max(ends) > file_size:
            return f"image data of page {index} ends past the end of the file"
    pointer = tiff.pages.next_page_offset
    if pointer:
        handle = tiff.filehandle
        handle.seek(pointer)
        raw = handle.read(tiff.tiff.offsetsize)
        next_ifd = int.from_bytes(raw, "little" if tiff.tiff.byteorder == "<" else "big") if raw else 0
        if len(raw) < tiff.tiff.offsetsize or next_ifd >= file_size:
            return f"page {len(pages)} starts past the end of the file"
    return None


def check_plain_image_size(path: str | os.PathLike, size: tuple[int, int]) -> None:
    """Refuse a plain image whose header declares more than :data:`MAX_PLAIN_IMAGE_PIXELS`."""
    width, height = int(size[0]), int(size[1])
    if width * height > MAX_PLAIN_IMAGE_PIXELS:
        raise SlideError(f"{path}: {width} x {height} px, more than the {MAX_PLAIN_IMAGE_PIXELS:,} pixels a "
                         "plain PNG/JPEG may hold; convert it to a tiled TIFF")


class _PlainImageBackend:
    """A PNG/JPEG (held in memory) or plain TIFF (read through zarr) as a slide."""

    def __init__(self, path: Path):
        self._levels: list = []
        if path.suffix.lower() in (".tif", ".tiff"):
            self._open_tiff(path)
        else:
            self._open_pil(path)

    def _open_tiff(self, path: Path) -> None:
        import tifffile
        import zarr

        tiff_log = logging.getLogger("tifffile")
        previous_level = tiff_log.level
        tiff_log.setLevel(logging.CRITICAL)  # broken files are reported as one SlideError below
        try:
            self._tiff = tifffile.TiffFile(path)
            problem = _tiff_truncation(self._tiff, path.stat().st_size)
            if problem:
                raise SlideError(f"{path}: truncated or corrupt TIFF ({problem})")
            series = self._tiff.series[0]
            page = series.pages[0] if series.pages else self._tiff.pages[0]
            self._levels = [zarr.open(series.aszarr(level=i), mode="r") for i in range(len(series.levels))]
            axes = series.axes
        except SlideError:
            raise
        except Exception as exc:  # tifffile raises many types for broken files
            raise SlideError(f"{path}: not a readable TIFF image ({exc})") from exc
        finally:
            tiff_log.setLevel(previous_level)
        if not (axes in ("YX", "YXS") or axes.endswith("YXS") or axes.endswith("YX")):
            raise SlideError(f"{path}: unsupported TIFF layout (axes {axes}); expected a 2-D grey or RGB image")
        self._axes = axes
        mpp_x = mpp_y = None
        tags = page.tags
        unit_tag = tags.get("ResolutionUnit")
        unit = {2: 25400.0, 3: 1e4}.get(int(unit_tag.value)) if unit_tag is not None else None
        if unit is not None and "XResolution" in tags and "YResolution" in tags:
            xr = tags["XResolution"].value
            yr = tags["YResolution"].value
            x_res = _positive_float(xr[0] / xr[1] if xr[1] else None)
            y_res = _positive_float(yr[0] / yr[1] if yr[1] else None)
            if x_res and y_res:
                mpp_x, mpp_y = unit / x_res, unit / y_res
        dims = tuple((int(z.shape[self._axes.index("X")]), int(z.shape[self._axes.index("Y")])) for z in self._levels)
        self.metadata = self._metadata(dims, mpp_x, mpp_y, {"tiff.ImageDescription": page.description or ""})

    def _open_pil(self, path: Path) -> None:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # whole-slide sized PNGs are expected here
        try:
            with Image.open(path) as image:
                check_plain_image_size(path, image.size)
                image.load()
                mode = image.mode
                if mode not in ("L", "LA", "RGB", "RGBA"):
                    image = image.convert("RGBA" if "A" in mode or "transparency" in image.info else "RGB")
                array = np.asarray(image)
        except SlideError:
            raise
        except Exception as exc:  # PIL raises many types for broken files
            raise SlideError(f"{path}: not a readable image ({exc})") from exc
        finally:
            Image.MAX_IMAGE_PIXELS = previous
        self._axes = "YXS"
        self._levels = [_to_rgb(array)]
        dims = ((array.shape[1], array.shape[0]),)
        # PNG/JPEG dpi is almost always a screen default (72/96), not a scan resolution.
        self.metadata = self._metadata(dims, None, None, {})

    @staticmethod
    def _metadata(dims, mpp_x, mpp_y, props) -> _Metadata:
        width0 = dims[0][0]
        return _Metadata(
            vendor=None,
            level_dimensions=dims,
            level_downsamples=tuple(width0 / w for w, _ in dims),
            properties=props,
            associated_images=(),
            objective_power=None,
            mpp_x=mpp_x,
            mpp_y=mpp_y,
        )

    def read_level(self, level: int, x0: int, y0: int, width: int, height: int) -> np.ndarray:
        ds = self.metadata.level_downsamples[level]
        level_w, level_h = self.metadata.level_dimensions[level]
        x = int(math.floor(x0 / ds))
        y = int(math.floor(y0 / ds))
        out = np.full((height, width, 3), 255, dtype=np.uint8)
        xa, ya = max(x, 0), max(y, 0)
        xb, yb = min(x + width, level_w), min(y + height, level_h)
        if xa >= xb or ya >= yb:
            return out
        array = self._levels[level]
        if self._axes.endswith("YXS") or self._axes == "YXS":
            lead = (0,) * (array.ndim - 3)
            block = np.asarray(array[lead + (slice(ya, yb), slice(xa, xb))])
        else:
            lead = (0,) * (array.ndim - 2)
            block = np.asarray(array[lead + (slice(ya, yb), slice(xa, xb))])
        out[ya - y : yb - y, xa - x : xb - x] = _to_rgb(block)
        return out

    def close(self) -> None:
        tiff = getattr(self, "_tiff", None)
        if tiff is not None:
            tiff.close()


# ---------------------------------------------------------------------------
# the per-process handle cache

_CACHE: dict[tuple[str, int], _OpenSlideBackend | _PlainImageBackend] = {}
_CACHE_LOCK = threading.Lock()
_TILE_CACHES: dict[int, object] = {}


def _tile_cache():
    """This process's shared OpenSlide tile cache (``None`` where OpenSlide is older than 4.0
    and every handle keeps its own)."""
    pid = os.getpid()
    with _CACHE_LOCK:
        if pid not in _TILE_CACHES:
            try:
                _TILE_CACHES[pid] = openslide.OpenSlideCache(TILE_CACHE_BYTES)
            except Exception:  # no shared caches in this OpenSlide
                _TILE_CACHES[pid] = None
        return _TILE_CACHES[pid]


def _describe_unknown(path: Path) -> str:
    """A short hint about what a file that OpenSlide refused actually is."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                if image.format == "TIFF":
                    return " (an unsupported TIFF layout, or a truncated or corrupt file)"
                return f"; it is a {image.format} image: give it a .{image.format.lower()} suffix to read it as a plain image"
    except Exception:
        pass
    return " (an unsupported format, or a truncated or corrupt file)"


def _open_backend(path: Path) -> _OpenSlideBackend | _PlainImageBackend:
    if not path.exists():
        raise SlideError(f"{path}: no such file")
    if path.is_dir():
        raise SlideError(f"{path}: is a directory, not a slide file")
    if path.stat().st_size == 0:
        raise SlideError(f"{path}: empty file (0 bytes)")
    try:
        detected = openslide.OpenSlide.detect_format(str(path))
    except openslide.OpenSlideError:
        detected = None
    if detected is None and path.suffix.lower() in PLAIN_IMAGE_SUFFIXES:
        return _PlainImageBackend(path)
    if detected is None:
        raise SlideError(f"{path}: not a slide format OpenSlide can read{_describe_unknown(path)}")
    return _OpenSlideBackend(path)


def _backend(path: Path):
    key = (str(path), os.getpid())
    with _CACHE_LOCK:
        backend = _CACHE.get(key)
    if backend is None:
        backend = _open_backend(path)
        with _CACHE_LOCK:
            backend = _CACHE.setdefault(key, backend)
    return backend


def _drop_backend(path: Path) -> None:
    with _CACHE_LOCK:
        backend = _CACHE.pop((str(path), os.getpid()), None)
    if backend is not None:
        backend.close()


def close_all() -> None:
    """Close every handle this process has opened (the next read reopens)."""
    pid = os.getpid()
    with _CACHE_LOCK:
        keys = [key for key in _CACHE if key[1] == pid]
        backends = [_CACHE.pop(key) for key in keys]
    for backend in backends:
        backend.close()


# ---------------------------------------------------------------------------


class Slide:
    """A whole-slide image addressed in level-0 pixels and read at any mpp.

    ``mpp`` (the ``--slide-mpp`` option) supplies or overrides the level-0
    microns per pixel. Only the path and that value are pickled.
    """

    def __init__(self, path: str | os.PathLike, *, mpp: float | None = None):
        self.path = Path(path).expanduser().absolute()
        if mpp is not None:
            checked = _positive_float(mpp)
            if checked is None:
                raise InputError(f"{self.path}: --slide-mpp must be a positive number of microns per pixel, got {mpp!r}")
            mpp = checked
        self._mpp_override: float | None = mpp

    # pickling: the handle never travels
    def __getstate__(self) -> dict:
        return {"path": str(self.path), "mpp": self._mpp_override}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], mpp=state["mpp"])

    def __repr__(self) -> str:
        extra = f", mpp={self._mpp_override}" if self._mpp_override is not None else ""
        return f"Slide({str(self.path)!r}{extra})"

    # metadata
    @property
    def _meta(self) -> _Metadata:
        return _backend(self.path).metadata

    @property
    def vendor(self) -> str | None:
        return self._meta.vendor

    @property
    def dimensions(self) -> tuple[int, int]:
        return self._meta.level_dimensions[0]

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        return self._meta.level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        return self._meta.level_downsamples

    @property
    def objective_power(self) -> float | None:
        return self._meta.objective_power

    @property
    def associated_images(self) -> tuple[str, ...]:
        return self._meta.associated_images

    @property
    def properties(self) -> dict[str, str]:
        return dict(self._meta.properties)

    @property
    def mpp_is_known(self) -> bool:
        """Whether :attr:`mpp` is available (from metadata or the user)."""
        meta = self._meta
        return self._mpp_override is not None or (meta.mpp_x is not None and meta.mpp_y is not None)

    @property
    def mpp(self) -> float:
        """Level-0 microns per pixel (the mean of x and y when they differ slightly)."""
        if self._mpp_override is not None:
            return self._mpp_override
        meta = self._meta
        if meta.mpp_x is None or meta.mpp_y is None:
            raise MissingMppError(f"{self.path}: no microns-per-pixel metadata; pass --slide-mpp MPP")
        if abs(meta.mpp_x - meta.mpp_y) > MPP_XY_TOLERANCE * min(meta.mpp_x, meta.mpp_y):
            raise SlideError(
                f"{self.path}: pixels are not square (mpp x {meta.mpp_x:g}, y {meta.mpp_y:g}); "
                "pass --slide-mpp MPP to read it anyway"
            )
        return (meta.mpp_x + meta.mpp_y) / 2.0

    # geometry
    def size_at(self, mpp: float) -> tuple[int, int]:
        """Whole-slide (width, height) in pixels at `mpp`, rounded."""
        scale = self.mpp / _check_target_mpp(self.path, mpp)
        width0, height0 = self.dimensions
        return max(1, int(round(width0 * scale))), max(1, int(round(height0 * scale)))

    def best_level(self, mpp: float) -> int:
        """The coarsest level whose pixels are at least as fine as `mpp`."""
        downsample = _check_target_mpp(self.path, mpp) / self.mpp
        best = 0
        for level, level_downsample in enumerate(self.level_downsamples):
            if level_downsample <= downsample * (1.0 + LEVEL_TOLERANCE):
                best = level
        return best

    # pixels
    def read(self, x: int, y: int, width: int, height: int, mpp: float) -> np.ndarray:
        """(height, width, 3) uint8 RGB of the region with level-0 top-left (x, y).

        `width` and `height` are pixels at `mpp`. The pixels come from the
        nearest finer level, resized with antialiasing (the mean of each block for
        an exact integer factor, Lanczos otherwise); when `mpp` equals a level's
        mpp they are that level's pixels unchanged.
        """
        width, height = int(width), int(height)
        if width <= 0 or height <= 0:
            raise InputError(f"{self.path}: region size must be positive, got {width} x {height}")
        downsample = _check_target_mpp(self.path, mpp) / self.mpp
        level = self.best_level(mpp)
        level_downsample = self.level_downsamples[level]
        scale = downsample / level_downsample  # level pixels per output pixel
        source_w, source_h = width * scale, height * scale
        read_w = max(1, int(math.ceil(source_w - 1e-6)))
        read_h = max(1, int(math.ceil(source_h - 1e-6)))
        backend = _backend(self.path)
        try:
            region = backend.read_level(level, int(x), int(y), read_w, read_h)
        except openslide.OpenSlideError as exc:
            _drop_backend(self.path)  # OpenSlide errors are sticky: reopen next time
            raise SlideError(f"{self.path}: cannot read pixels at level {level} near ({x}, {y}): {exc}") from exc
        if (read_w, read_h) == (width, height):
            return region
        image = Image.fromarray(region)
        factor = round(scale)
        if factor >= 2 and abs(scale - factor) < 1e-6 and (read_w, read_h) == (width * factor, height * factor):
            # an exact integer reduction: a box filter over factor x factor blocks (antialiased, ~10x
            # cheaper than Lanczos)
            return np.asarray(image.reduce(factor))
        resized = image.resize(
            (width, height),
            Image.Resampling.LANCZOS,
            box=(0.0, 0.0, min(source_w, read_w), min(source_h, read_h)),
            reducing_gap=3.0 if scale > 1 else None,
        )
        return np.asarray(resized)

    def thumbnail(self, mpp: float) -> np.ndarray:
        """The whole slide at `mpp` as (height, width, 3) uint8, read in row bands."""
        width, height = self.size_at(mpp)
        downsample = mpp / self.mpp
        level_scale = downsample / self.level_downsamples[self.best_level(mpp)]
        band_rows = max(1, min(height, int(_BAND_SOURCE_PIXELS / (width * level_scale * level_scale))))
        out = np.empty((height, width, 3), dtype=np.uint8)
        for row in range(0, height, band_rows):
            rows = min(band_rows, height - row)
            out[row : row + rows] = self.read(0, int(round(row * downsample)), width, rows, mpp)
        return out


def _check_target_mpp(path: Path, mpp: float) -> float:
    checked = _positive_float(mpp)
    if checked is None:
        raise InputError(f"{path}: target mpp must be a positive number, got {mpp!r}")
    return checked


def open_slide(path: str | os.PathLike, *, mpp: float | None = None) -> Slide:
    """Open and validate a slide; raise :class:`SlideError` naming the file when unusable.

    Validation reads a small region of the lowest-resolution level and the last
    tile of level 0, so truncated or corrupt files are refused up front.
    """
    slide = Slide(path, mpp=mpp)
    backend = _backend(slide.path)
    meta = backend.metadata
    checks = []
    last = len(meta.level_dimensions) - 1
    checks.append((last, 0, 0, *(min(64, d) for d in meta.level_dimensions[last])))
    width0, height0 = meta.level_dimensions[0]
    tile_w = int(meta.properties.get("openslide.level[0].tile-width", 256) or 256)
    tile_h = int(meta.properties.get("openslide.level[0].tile-height", 256) or 256)
    tw, th = min(tile_w, width0), min(tile_h, height0)
    checks.append((0, width0 - tw, height0 - th, tw, th))
    for level, x0, y0, w, h in checks:
        try:
            backend.read_level(level, x0, y0, w, h)
        except Exception as exc:  # OpenSlideError, zarr/tifffile decode errors
            _drop_backend(slide.path)
            raise SlideError(f"{slide.path}: unreadable pixel data (truncated or corrupt file?): {exc}") from exc
    return slide


def deepzoom_generator(slide: Slide, *, tile_size: int = 254, overlap: int = 1, limit_bounds: bool = False):
    """An :class:`openslide.deepzoom.DeepZoomGenerator` over ``slide`` (DeepZoom tiles of the
    whole level-0 image). Slides OpenSlide does not read (PNG, plain TIFF) go through
    :class:`openslide.ImageSlide`, which holds the image in memory."""
    from openslide.deepzoom import DeepZoomGenerator

    backend = _backend(slide.path)
    if isinstance(backend, _OpenSlideBackend):
        source = backend._handle
    else:
        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            source = openslide.ImageSlide(Image.open(slide.path).convert("RGB"))
        finally:
            Image.MAX_IMAGE_PIXELS = previous
    return DeepZoomGenerator(source, tile_size=tile_size, overlap=overlap, limit_bounds=limit_bounds)
