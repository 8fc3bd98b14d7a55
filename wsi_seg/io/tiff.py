"""Pyramidal tiled TIFF writers that stream full-width row bands.

Two layouts share one engine:

* :func:`write_pyramidal_tiff`: a generic tiled TIFF (label masks, RGB overlays).
  Levels are consecutive pages of the main IFD chain, reduced levels marked
  ``subfiletype=1``, so OpenSlide ("generic-tiff") and viewers see a pyramid;
  resolution tags carry the microns per pixel; uint8 labels get a palette.
* :func:`write_aperio_svs`: the Aperio SVS layout (tiled JPEG level 0, stripped
  thumbnail, reduced levels at 4x steps, label and macro images, an
  ``Aperio Image Library ...|AppMag = ..|MPP = ..`` description on every page),
  which OpenSlide opens as vendor "aperio" with its mpp.

Memory. The caller gives an iterator of row bands; level 0 is re-tiled and
written as the bands arrive. tifffile writes one page at a time, so while
level 0 streams, every reduced level is computed on the fly (a cascade of 2x
reductions: nearest for labels so palette indices stay valid, 2x2 mean for RGB)
and spooled, uncompressed and row by row, to a temporary file next to the
output. Once level 0 is complete the spooled levels are read back one tile row
at a time and written as the following pages. Resident memory is therefore a
few bands per level whatever the slide size; the spool needs about a third of
the uncompressed level-0 size in disk space and is removed afterwards.

Atomicity. Everything is written to a hidden temporary name in the output's
folder and moved to the final path with :func:`os.replace` only when complete;
on any error (including one raised by the band iterator) the temporary file and
spool are removed and nothing appears at the final path. The temporary names
carry the writer's machine and process id (:mod:`wsi_seg.io.atomic`), so the
next write of the same path removes what a killed writer left behind.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import tifffile

from wsi_seg.io.atomic import output_error, temp_dir, temp_file

__all__ = [
    "DEFAULT_LABEL_COMPRESSION",
    "DEFAULT_RGB_COMPRESSION",
    "palette_colormap",
    "pyramid_shapes",
    "read_label_tiff",
    "write_aperio_svs",
    "write_pyramidal_tiff",
]

#: Lossless codec for label images. OpenSlide 4 (openslide-bin) decodes deflate,
#: LZW, zstd and packbits in TIFF (checked); deflate is chosen because every
#: TIFF reader (QuPath, ImageJ, older libtiff) decodes it too. zstd is ~25% smaller.
DEFAULT_LABEL_COMPRESSION = "zlib"
#: Codec for RGB images: JPEG (Photometric YCbCr, 2x2 subsampling), quality 90.
DEFAULT_RGB_COMPRESSION = ("jpeg", 90)

_BIGTIFF_BYTES = 2_000_000_000  # beyond ~2 GB (uncompressed estimate) use BigTIFF
_THUMBNAIL_MAX_PX = 1024
_APERIO_VERSION = "Aperio Image Library v12.0.15"


# --------------------------------------------------------------------------- geometry


def pyramid_shapes(width: int, height: int, *, min_size: int = 256, step: int = 2) -> list[tuple[int, int]]:
    """(width, height) of each pyramid level: level 0 then reductions by ``step``.

    A level of size ``ceil(w / step) x ceil(h / step)`` is added while its longer
    side is at least ``min_size`` pixels. ``step`` must be a power of two.
    """
    if step < 2 or step & (step - 1):
        raise ValueError(f"step must be a power of two >= 2, got {step}")
    shapes = [(int(width), int(height))]
    while True:
        w, h = shapes[-1]
        nw, nh = -(-w // step), -(-h // step)
        if max(nw, nh) < min_size or (nw, nh) == (w, h):
            return shapes
        shapes.append((nw, nh))


def palette_colormap(colors: np.ndarray | Sequence[Sequence[int]]) -> np.ndarray:
    """A TIFF colormap (3, 256) uint16 from ``(n, 3)`` uint8 RGB colours (n <= 256).

    Entries beyond ``n`` are black.
    """
    rgb = np.asarray(colors)
    if rgb.ndim != 2 or rgb.shape[1] != 3 or not 0 < rgb.shape[0] <= 256:
        raise ValueError(f"colours must have shape (n <= 256, 3), got {rgb.shape}")
    if rgb.dtype == np.uint16 and rgb.max() > 255:
        full = rgb.astype(np.uint16)
    else:
        full = rgb.astype(np.uint16) * 257
    cmap = np.zeros((3, 256), dtype=np.uint16)
    cmap[:, : rgb.shape[0]] = full.T
    return cmap


# --------------------------------------------------------------------------- reductions


def _reduce_nearest(rows: np.ndarray) -> np.ndarray:
    """Every other row and column (top-left sample of each 2x2 block)."""
    return rows[::2, ::2]


def _reduce_mean(rows: np.ndarray) -> np.ndarray:
    """Rounded mean of each 2x2 block; odd edges repeat the last row/column."""
    if rows.shape[0] % 2:
        rows = np.concatenate([rows, rows[-1:]], axis=0)
    if rows.shape[1] % 2:
        rows = np.concatenate([rows, rows[:, -1:]], axis=1)
    acc = rows[0::2, 0::2].astype(np.uint16)
    acc += rows[1::2, 0::2]
    acc += rows[0::2, 1::2]
    acc += rows[1::2, 1::2]
    acc += 2
    return (acc >> 2).astype(np.uint8)


class _Reducer:
    """One 2x reduction step of the cascade, fed row chunks of its finer level.

    Rows are consumed in pairs (an odd leftover row waits for the next chunk);
    the reduced rows go to an optional spool file, an optional in-memory list,
    and the next (coarser) reducer.
    """

    def __init__(self, width: int, height: int, mode: str, spool=None, keep: bool = False, next_=None):
        self.width, self.height = width, height  # of THIS (reduced) level
        self.mode = mode
        self.spool = spool
        self.kept: list[np.ndarray] | None = [] if keep else None
        self.next = next_
        self.carry: np.ndarray | None = None
        self.rows_out = 0

    def push(self, rows: np.ndarray) -> None:
        if self.carry is not None:
            rows = np.concatenate([self.carry, rows], axis=0)
            self.carry = None
        if rows.shape[0] % 2:
            self.carry = rows[-1:].copy()
            rows = rows[:-1]
        if rows.shape[0]:
            self._emit(rows)

    def finish(self) -> None:
        if self.carry is not None:
            self._emit(self.carry)  # the last odd row reduces on its own
            self.carry = None
        if self.rows_out != self.height:  # pragma: no cover - internal invariant
            raise RuntimeError(f"reduced level has {self.rows_out} rows, expected {self.height}")
        if self.next is not None:
            self.next.finish()

    def _emit(self, rows: np.ndarray) -> None:
        out = _reduce_nearest(rows) if self.mode == "nearest" else _reduce_mean(rows)
        out = np.ascontiguousarray(out)
        self.rows_out += out.shape[0]
        if self.spool is not None:
            self.spool.write(out.tobytes())
        if self.kept is not None:
            self.kept.append(out)
        if self.next is not None:
            self.next.push(out)


# --------------------------------------------------------------------------- tiling


def _tiles_from_rows(row_chunks: Iterable[np.ndarray], width: int, tile: int, samples: int) -> Iterator[np.ndarray]:
    """Re-cut a stream of full-width row chunks into ``tile x tile`` tiles, row-major.

    Edge tiles are padded by repeating the last row/column (no dark JPEG fringes).
    """
    shape = (tile, width) + ((samples,) if samples > 1 else ())
    buf = None
    filled = 0
    for chunk in row_chunks:
        start = 0
        while start < chunk.shape[0]:
            if buf is None:
                buf = np.empty(shape, dtype=np.uint8)
            take = min(tile - filled, chunk.shape[0] - start)
            buf[filled : filled + take] = chunk[start : start + take]
            filled += take
            start += take
            if filled == tile:
                yield from _cut_row(buf, width, tile)
                filled = 0
    if filled:
        buf[filled:] = buf[filled - 1 : filled]
        yield from _cut_row(buf, width, tile)


def _cut_row(buf: np.ndarray, width: int, tile: int) -> Iterator[np.ndarray]:
    for x0 in range(0, width, tile):
        t = buf[:, x0 : x0 + tile]
        if t.shape[1] < tile:
            pad = [(0, 0), (0, tile - t.shape[1])] + [(0, 0)] * (t.ndim - 2)
            t = np.pad(t, pad, mode="edge")
        yield np.ascontiguousarray(t)


def _read_spool(path: Path, width: int, height: int, samples: int, rows_per_read: int) -> Iterator[np.ndarray]:
    row_bytes = width * samples
    with open(path, "rb") as fh:
        done = 0
        while done < height:
            n = min(rows_per_read, height - done)
            data = np.frombuffer(fh.read(n * row_bytes), dtype=np.uint8)
            if data.size != n * row_bytes:  # pragma: no cover - disk trouble
                raise OSError(f"{path}: spool file is short")
            yield data.reshape((n, width) + ((samples,) if samples > 1 else ()))
            done += n


def _checked_bands(bands: Iterable[np.ndarray], width: int, height: int, band_height: int, samples: int):
    """Validate each band (shape, dtype, row count) while passing it through."""
    tail = (samples,) if samples > 1 else ()
    done = 0
    for i, band in enumerate(bands):
        band = np.asarray(band)
        expect = min(band_height, height - done)
        if band.dtype != np.uint8 or band.shape != (expect, width) + tail:
            raise ValueError(
                f"band {i}: expected uint8 array of shape {(expect, width) + tail}, got {band.dtype} {band.shape}"
            )
        done += expect
        yield band
        if done == height:
            break
    if done != height:
        raise ValueError(f"the bands cover {done} rows, expected {height}")


# --------------------------------------------------------------------------- engine


def _compression_args(compression) -> tuple[str | None, dict | None]:
    if compression is None or compression == "none":
        return None, None
    if isinstance(compression, (tuple, list)):
        name, level = compression
        return str(name), {"level": int(level)}
    return str(compression), None


def _write_levels(
    path: str | os.PathLike,
    *,
    width: int,
    height: int,
    bands: Iterable[np.ndarray],
    band_height: int,
    samples: int,
    mode: str,
    spooled_steps: list[int],
    thumbnail_max: int | None,
    page_args,
    before_levels=None,
    after_levels=None,
    bigtiff: bool | None,
) -> None:
    """The shared engine. ``spooled_steps``: which 2x-cascade steps become pages.

    ``page_args(level_index, (w, h))`` gives the keyword arguments of each
    tiled page; ``before_levels(tw, thumbnail)`` writes pages between level 0 and
    the reduced levels (the Aperio thumbnail), ``after_levels(tw)`` pages after them.
    """
    path = Path(path)
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    if band_height < 1:
        raise ValueError(f"band_height must be positive, got {band_height}")
    n_steps = max(spooled_steps, default=0)
    thumb_step = None
    if thumbnail_max is not None:
        thumb_step = 0
        w, h = width, height
        while max(w, h) > thumbnail_max:
            w, h = -(-w // 2), -(-h // 2)
            thumb_step += 1
        n_steps = max(n_steps, thumb_step)
    if bigtiff is None:
        bigtiff = width * height * samples * 4 // 3 > _BIGTIFF_BYTES

    tmp_name = str(temp_file(path, ".part"))  # OutputError when the folder cannot be written
    try:
        spool_dir = str(temp_dir(path, ".levels"))
    except BaseException:
        os.unlink(tmp_name)
        raise
    spools: dict[int, object] = {}
    try:
        # the cascade of 2x reducers, coarsest last
        sizes = [(width, height)]
        for _ in range(n_steps):
            w, h = sizes[-1]
            sizes.append((-(-w // 2), -(-h // 2)))
        head = None
        reducers: dict[int, _Reducer] = {}
        for step in range(n_steps, 0, -1):
            spool = None
            if step in spooled_steps:
                spool = open(os.path.join(spool_dir, f"level{step}.raw"), "wb")
                spools[step] = spool
            head = _Reducer(*sizes[step], mode, spool=spool, keep=(step == thumb_step), next_=head)
            reducers[step] = head

        kept0: list[np.ndarray] = []

        def level0_rows():
            for band in _checked_bands(bands, width, height, band_height, samples):
                if thumb_step == 0:
                    kept0.append(band)
                if head is not None:
                    head.push(band)
                yield band
            if head is not None:
                head.finish()
            for fh in spools.values():
                fh.close()

        first_page = page_args(0, (width, height))
        tile = first_page["tile"][0]
        rows0 = level0_rows()
        with tifffile.TiffWriter(tmp_name, bigtiff=bigtiff) as tw:
            tw.write(
                _tiles_from_rows(rows0, width, tile, samples),
                shape=(height, width) + ((samples,) if samples > 1 else ()),
                dtype=np.uint8,
                **first_page,
            )
            # tifffile stops pulling after the last tile: run the stream to its end
            # (validation, the cascade's last rows, closing the spools)
            for _ in rows0:
                pass
            if before_levels is not None:
                kept = kept0 if thumb_step == 0 else reducers[thumb_step].kept
                before_levels(tw, np.concatenate(kept, axis=0) if kept else None)
            for index, step in enumerate(sorted(spooled_steps), start=1):
                w, h = sizes[step]
                rows = _read_spool(Path(spool_dir) / f"level{step}.raw", w, h, samples, tile)
                tw.write(
                    _tiles_from_rows(rows, w, tile, samples),
                    shape=(h, w) + ((samples,) if samples > 1 else ()),
                    dtype=np.uint8,
                    **page_args(index, (w, h)),
                )
            if after_levels is not None:
                after_levels(tw)
        os.replace(tmp_name, path)
    except BaseException as exc:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise output_error(path, exc) from None
        raise
    finally:
        for fh in spools.values():
            fh.close()
        for name in os.listdir(spool_dir):
            os.unlink(os.path.join(spool_dir, name))
        os.rmdir(spool_dir)


def _resolution(mpp: float, level_w: int, width: int) -> dict:
    downsample = width / level_w
    px_per_cm = 1e4 / (mpp * downsample)
    return {"resolution": (px_per_cm, px_per_cm), "resolutionunit": "CENTIMETER"}


def _check_mpp(mpp: float) -> float:
    mpp = float(mpp)
    if not np.isfinite(mpp) or mpp <= 0:
        raise ValueError(f"mpp must be a positive number, got {mpp}")
    return mpp


# --------------------------------------------------------------------------- public writers


def write_pyramidal_tiff(
    path: str | os.PathLike,
    *,
    width: int,
    height: int,
    bands: Iterable[np.ndarray],
    band_height: int,
    mpp: float,
    tile: int = 256,
    compression=None,
    colormap: np.ndarray | Sequence[Sequence[int]] | None = None,
    min_size: int = 256,
    description: str | None = None,
    bigtiff: bool | None = None,
) -> None:
    """Write a tiled pyramidal TIFF from full-width row bands, atomically.

    Parameters
    ----------
    bands:
        Iterator of uint8 arrays ``(band_height, width)`` (labels, grey) or
        ``(band_height, width, 3)`` (RGB), top to bottom; the last may be shorter.
        Consumed once; at most a few bands per level are held in memory.
    mpp:
        Microns per level-0 pixel, stored as resolution tags (pixels/cm) on every
        level (scaled by the level's downsample).
    compression:
        A tifffile codec name or ``(name, level)``. Default: JPEG q90 for RGB,
        deflate for single-band images. Labels must use a lossless codec.
    colormap:
        ``(n, 3)`` uint8 RGB class colours (or a ready ``(3, 256)`` uint16 TIFF
        colormap): single-band data is then written as a palette image whose
        pixel values are the label indices. Without it labels are minisblack.
    min_size:
        Reduced levels (2x steps) are added while their longer side is >= min_size.
    bigtiff:
        Default: automatic, when the uncompressed estimate exceeds ~2 GB.

    Reduced levels use nearest sampling for single-band images (labels stay
    valid) and a 2x2 mean for RGB. Raises ``ValueError`` on inconsistent bands;
    nothing is left at ``path`` (or next to it) after any error.
    """
    mpp = _check_mpp(mpp)
    if tile < 16 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile}")
    samples = 1
    # peek at the first band to learn the sample count without consuming the stream
    iterator = iter(bands)
    try:
        first = np.asarray(next(iterator))
    except StopIteration:
        raise ValueError("no bands were given") from None
    samples = 3 if first.ndim == 3 else 1
    if first.ndim == 3 and first.shape[2] != 3:
        raise ValueError(f"RGB bands must have 3 samples, got {first.shape[2]}")

    def all_bands():
        yield first
        yield from iterator

    rgb = samples == 3
    if compression is None:
        compression = DEFAULT_RGB_COMPRESSION if rgb else DEFAULT_LABEL_COMPRESSION
    comp, comp_args = _compression_args(compression)
    cmap = None
    if colormap is not None:
        if rgb:
            raise ValueError("a colormap applies to single-band (label) images only")
        cmap = np.asarray(colormap)
        if cmap.shape != (3, 256):
            cmap = palette_colormap(cmap)
    photometric = "rgb" if rgb else ("palette" if cmap is not None else "minisblack")
    shapes = pyramid_shapes(width, height, min_size=min_size)

    def page_args(index, size):
        args = dict(
            tile=(tile, tile),
            photometric=photometric,
            compression=comp,
            compressionargs=comp_args,
            subfiletype=1 if index else 0,
            metadata=None,
            **_resolution(mpp, size[0], width),
        )
        if cmap is not None:
            args["colormap"] = cmap
        if description is not None and index == 0:
            args["description"] = description
        return args

    _write_levels(
        path,
        width=width,
        height=height,
        bands=all_bands(),
        band_height=band_height,
        samples=samples,
        mode="mean" if rgb else "nearest",
        spooled_steps=list(range(1, len(shapes))),
        thumbnail_max=None,
        page_args=page_args,
        bigtiff=bigtiff,
    )


def write_aperio_svs(
    path: str | os.PathLike,
    *,
    width: int,
    height: int,
    bands: Iterable[np.ndarray],
    band_height: int,
    mpp: float,
    app_mag: float = 20,
    tile: int = 256,
    quality: int = 90,
    min_size: int = 512,
    label: np.ndarray | None = None,
    macro: np.ndarray | None = None,
    extra_description: dict[str, object] | None = None,
    bigtiff: bool | None = None,
) -> None:
    """Write an RGB slide in the Aperio SVS layout, atomically.

    Pages, in main-chain order: level 0 (tiled JPEG), a stripped thumbnail
    (longer side <= 1024 px), reduced levels at 4x steps (tiled JPEG, while the
    longer side is >= ``min_size``), then the optional ``label`` (subfiletype 1)
    and ``macro`` (subfiletype 9) RGB images, stripped. Every page's description
    starts with "Aperio Image Library" and carries ``AppMag`` and ``MPP``.
    ``bands`` are ``(band_height, width, 3)`` uint8 row bands, as for
    :func:`write_pyramidal_tiff`.
    """
    mpp = _check_mpp(mpp)
    if tile < 16 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16, got {tile}")
    levels = pyramid_shapes(width, height, min_size=min_size, step=4)
    spooled_steps = [2 * i for i in range(1, len(levels))]
    props = {"AppMag": f"{app_mag:g}", "MPP": f"{mpp:.4f}"}
    props.update({str(k): str(v) for k, v in (extra_description or {}).items()})
    tail = "|".join(f"{k} = {v}" for k, v in props.items())

    def desc(first_line: str) -> str:
        return f"{_APERIO_VERSION}\r\n{first_line}|{tail}"

    jpeg = dict(compression="jpeg", compressionargs={"level": int(quality)}, photometric="rgb", metadata=None)

    def page_args(index, size):
        w, h = size
        line = f"{width}x{height} [0,0 {width}x{height}] ({tile}x{tile})"
        if index:
            line += f" -> {w}x{h}"
        return dict(
            tile=(tile, tile),
            subfiletype=0,
            description=desc(f"{line} JPEG/RGB Q={quality}"),
            **jpeg,
            **_resolution(mpp, w, width),
        )

    def write_thumbnail(tw, thumb):
        th, tw_ = thumb.shape[:2]
        tw.write(thumb, description=desc(f"{width}x{height} -> {tw_}x{th} - "), rowsperstrip=64, **jpeg)

    def write_associated(tw):
        for name, image, subfiletype in (("label", label, 1), ("macro", macro, 9)):
            if image is None:
                continue
            image = np.asarray(image, dtype=np.uint8)
            if image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"the {name} image must be (h, w, 3) uint8, got {image.shape}")
            h, w = image.shape[:2]
            tw.write(
                image,
                description=f"{_APERIO_VERSION}\n{name} {w}x{h}|{tail}",
                rowsperstrip=64,
                subfiletype=subfiletype,
                **jpeg,
            )

    _write_levels(
        path,
        width=width,
        height=height,
        bands=bands,
        band_height=band_height,
        samples=3,
        mode="mean",
        spooled_steps=spooled_steps,
        thumbnail_max=_THUMBNAIL_MAX_PX,
        page_args=page_args,
        before_levels=write_thumbnail,
        after_levels=write_associated,
        bigtiff=bigtiff,
    )


def read_label_tiff(path: str | os.PathLike, level: int = 0) -> np.ndarray:
    """The label indices of one pyramid level of a label TIFF, as a uint8 array.

    Reads with tifffile, which returns palette indices (OpenSlide would return
    the palette colours). ``level`` counts main-chain pages (0 = full size).
    """
    path = Path(path)
    from wsi_seg.errors import InputError

    try:
        with tifffile.TiffFile(path) as tif:
            if not 0 <= level < len(tif.pages):
                raise InputError(f"{path}: has {len(tif.pages)} level(s), level {level} requested")
            page = tif.pages[level]
            if page.samplesperpixel != 1:
                raise InputError(f"{path}: not a label image ({page.samplesperpixel} samples per pixel)")
            return page.asarray()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except tifffile.TiffFileError as exc:
        raise InputError(f"{path}: not a readable TIFF ({exc})") from None
