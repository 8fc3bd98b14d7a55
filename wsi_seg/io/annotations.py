"""Label sources: class-id rasters aligned to a slide, read window by window.

Three kinds of annotation are understood, all addressed like a slide (level-0 top-left,
size in pixels at a target mpp) and all resampled with nearest neighbour only:

* a label TIFF (``<stem>.mask.tif``, optionally pyramidal, palette or grey uint8 class ids),
  read through tifffile's zarr interface from the pyramid level nearest finer to the
  target mpp, so memory stays bounded by the window;
* a label image (``<stem>.png`` / ``<stem>.tif``) of any size proportional to the slide;
* QuPath GeoJSON (``<stem>.geojson``): polygons in level-0 pixel coordinates whose
  ``properties.classification.name`` maps to a class id through the class list. Files
  are bounded before parsing (:data:`MAX_GEOJSON_BYTES`, :data:`MAX_GEOJSON_VERTICES`).

A label source pickles as its parameters; file handles are opened lazily per process.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wsi_seg.errors import InputError
from wsi_seg.geometry import level0_per_target, nearest_finer_level, pixel_centres_to_level
from wsi_seg.io.tiff_tiles import TiledArray, tiled_pages

#: Largest relative difference between the aspect ratios of a label image and its slide.
ASPECT_TOLERANCE = 0.01

#: Largest GeoJSON file read: whole-slide annotation sets are tens of megabytes; the
#: parsed document takes several times the file's size in memory.
MAX_GEOJSON_BYTES = 512 * 1024 * 1024
#: Most polygon vertices (over all features) of one GeoJSON file.
MAX_GEOJSON_VERTICES = 20_000_000

#: Candidate label files for a slide ``<stem>``, in order of preference.
LABEL_SUFFIXES = (".mask.tif", ".mask.tiff", ".tif", ".tiff", ".png", ".geojson")


class LabelSource(ABC):
    """A uint8 class-id raster aligned to a slide of level-0 size ``slide_size0``."""

    def __init__(self, path: str | Path, *, slide_size0: tuple[int, int], slide_mpp: float, num_classes: int):
        self.path = Path(path)
        self.slide_size0 = (int(slide_size0[0]), int(slide_size0[1]))
        self.slide_mpp = float(slide_mpp)
        self.num_classes = int(num_classes)

    @abstractmethod
    def read(self, x: int, y: int, width: int, height: int, mpp: float) -> np.ndarray:
        """``(height, width)`` uint8 class ids of the window with level-0 top-left ``(x, y)``
        and ``width`` x ``height`` pixels at ``mpp``; outside the labelled area is 0."""

    def _check_range(self, labels: np.ndarray) -> np.ndarray:
        if labels.size and int(labels.max()) >= self.num_classes:
            raise InputError(
                f"{self.path}: label value {int(labels.max())} is outside the class list "
                f"(0..{self.num_classes - 1})"
            )
        return labels

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


# ----------------------------------------------------------------------------- rasters


class RasterLabelSource(LabelSource):
    """A label TIFF (pyramidal or not) or PNG whose extent maps onto the whole slide."""

    def __init__(self, path, *, slide_size0, slide_mpp, num_classes):
        super().__init__(path, slide_size0=slide_size0, slide_mpp=slide_mpp, num_classes=num_classes)
        self._opened: tuple[int, list] | None = None
        levels = self._levels()
        width, height = int(levels[0].shape[1]), int(levels[0].shape[0])
        slide_w, slide_h = self.slide_size0
        mask_ratio, slide_ratio = width / height, slide_w / slide_h
        if abs(mask_ratio - slide_ratio) > ASPECT_TOLERANCE * slide_ratio:
            raise InputError(
                f"{self.path}: mask aspect ratio {width}x{height} ({mask_ratio:.4f}) does not match "
                f"slide {slide_w}x{slide_h} ({slide_ratio:.4f})"
            )
        self.level_sizes = [(int(level.shape[1]), int(level.shape[0])) for level in levels]
        # the coarsest level is small: checking it catches most out-of-range files up front
        self._check_range(np.asarray(levels[-1][...]))

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_opened"] = None
        return state

    def _levels(self) -> list:
        if self._opened is not None and self._opened[0] == os.getpid():
            return self._opened[1]
        if self.path.suffix.lower() in (".tif", ".tiff"):
            levels = self._open_tiff()
        else:
            levels = [self._open_image()]
        self._opened = (os.getpid(), levels)
        return levels

    def _open_tiff(self) -> list:
        import tifffile
        import zarr

        try:
            with tifffile.TiffFile(self.path) as tif:
                series = tif.series[0]
                count, axes, dtype = len(series.levels), series.axes, series.dtype
            tiled = tiled_pages(self.path, count)
            if tiled is not None:
                levels = [TiledArray(self.path, page) for page in tiled]  # tile by tile, no zarr layer
            else:  # stripped TIFFs
                levels = [zarr.open(tifffile.imread(self.path, aszarr=True, level=i), mode="r") for i in range(count)]
        except Exception as exc:  # tifffile raises many types for broken files
            raise InputError(f"{self.path}: not a readable label TIFF ({exc})") from None
        if axes != "YX":
            raise InputError(f"{self.path}: a label TIFF must hold one class id per pixel (axes {axes}, expected YX)")
        if not np.issubdtype(dtype, np.integer):
            raise InputError(f"{self.path}: label TIFF has dtype {dtype}; expected integer class ids")
        return levels

    def _open_image(self) -> np.ndarray:
        from PIL import Image

        from wsi_seg.io.slide import check_plain_image_size

        previous = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(self.path) as image:
                check_plain_image_size(self.path, image.size)  # before any pixel is decoded
                mode = image.mode
                array = np.asarray(image)
        except InputError:
            raise
        except Exception as exc:  # PIL raises many types for broken files
            raise InputError(f"{self.path}: not a readable label image ({exc})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = previous
        if array.ndim != 2 or mode not in ("P", "L", "I", "I;16", "I;16B", "I;16L", "1"):
            raise InputError(
                f"{self.path}: a label image must hold one class id per pixel (palette or grey), got mode {mode}"
            )
        return array

    def read(self, x: int, y: int, width: int, height: int, mpp: float) -> np.ndarray:
        scale = level0_per_target(self.slide_mpp, mpp)
        slide_w, slide_h = self.slide_size0
        factors_x = [slide_w / w for w, _ in self.level_sizes]
        level = nearest_finer_level(factors_x, scale)
        level_w, level_h = self.level_sizes[level]
        cols = pixel_centres_to_level(x, int(width), scale, slide_w / level_w)
        rows = pixel_centres_to_level(y, int(height), scale, slide_h / level_h)
        out = np.zeros((int(height), int(width)), dtype=np.uint8)
        col_ok = (cols >= 0) & (cols < level_w)
        row_ok = (rows >= 0) & (rows < level_h)
        if not col_ok.any() or not row_ok.any():
            return out
        c0, c1 = int(cols[col_ok].min()), int(cols[col_ok].max()) + 1
        r0, r1 = int(rows[row_ok].min()), int(rows[row_ok].max()) + 1
        block = np.asarray(self._levels()[level][r0:r1, c0:c1])
        self._check_range(block)
        row_pick, col_pick = _as_slice(rows[row_ok] - r0), _as_slice(cols[col_ok] - c0)
        if row_pick is not None and col_pick is not None and row_ok.all() and col_ok.all():
            out[...] = block[row_pick, col_pick]  # a regular grid (the usual case): no index arrays
        else:
            out[np.ix_(row_ok, col_ok)] = block[np.ix_(rows[row_ok] - r0, cols[col_ok] - c0)]
        return out


def _as_slice(indices: np.ndarray) -> slice | None:
    """``indices`` as a slice when they step evenly forward, else None."""
    if len(indices) == 0:
        return None
    step = int(indices[1] - indices[0]) if len(indices) > 1 else 1
    if step < 1 or not np.array_equal(indices, indices[0] + step * np.arange(len(indices))):
        return None
    return slice(int(indices[0]), int(indices[-1]) + 1, step)


# ----------------------------------------------------------------------------- GeoJSON


@dataclass(frozen=True)
class LabelPolygon:
    """One polygon with holes, in level-0 pixel coordinates, and its class id."""

    class_id: int
    exterior: np.ndarray  # (K, 2) x, y
    holes: tuple[np.ndarray, ...]
    bounds0: tuple[float, float, float, float]  # x_min, y_min, x_max, y_max


def _normalise_name(name: str) -> str:
    return " ".join(str(name).split()).lower()


def _features(document: Any, path: Path) -> list[dict]:
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        if document.get("type") == "FeatureCollection":
            return list(document.get("features") or [])
        if document.get("type") == "Feature":
            return [document]
    raise InputError(f"{path}: not a GeoJSON FeatureCollection or list of features")


def _classification_name(feature: dict) -> str | None:
    properties = feature.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    classification = properties.get("classification")
    if isinstance(classification, dict):
        return classification.get("name")
    if isinstance(classification, str):
        return classification
    return None


def _ring(points: Any, path: Path, index: int) -> np.ndarray:
    try:
        ring = np.asarray(points, dtype=np.float64)[:, :2]
    except (TypeError, ValueError, IndexError):
        raise InputError(f"{path}: feature {index} has malformed polygon coordinates") from None
    if ring.ndim != 2 or len(ring) < 3:
        raise InputError(f"{path}: feature {index} has a polygon ring with fewer than 3 points")
    return ring


def _read_bounded_json(path: Path) -> Any:
    """The JSON document of a GeoJSON file, refused before parsing when it is larger than
    :data:`MAX_GEOJSON_BYTES` or holds more coordinate arrays than the vertex limit allows
    (each vertex is one ``[x, y]``, so counting ``[`` bounds the vertices from above)."""
    try:
        size = path.stat().st_size
        if size > MAX_GEOJSON_BYTES:
            raise InputError(f"{path}: {size:,} bytes, larger than the limit of {MAX_GEOJSON_BYTES:,} bytes "
                             "for a GeoJSON file; split the annotations")
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: not a readable GeoJSON file ({exc.strerror or exc})") from None
    arrays = data.count(b"[")
    if arrays > MAX_GEOJSON_VERTICES + MAX_GEOJSON_VERTICES // 2:
        raise InputError(f"{path}: about {arrays:,} coordinates, more than the limit of {MAX_GEOJSON_VERTICES:,} "
                         "polygon vertices; simplify the annotations or split them")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise InputError(f"{path}: not a readable GeoJSON file ({reason})") from None


def parse_geojson(path: str | Path, class_names: Sequence[str]) -> list[LabelPolygon]:
    """Polygons of a QuPath GeoJSON file with class ids from ``class_names`` (file order).

    Polygon and MultiPolygon geometries are kept (others, e.g. points, are ignored).
    Raises :class:`InputError` naming the file for unreadable JSON, features without a
    classification and classification names that are not in the class list.
    """
    path = Path(path)
    document = _read_bounded_json(path)
    lookup = {_normalise_name(name): index for index, name in enumerate(class_names)}
    polygons: list[LabelPolygon] = []
    unknown: list[str] = []
    vertices = 0
    for index, feature in enumerate(_features(document, path)):
        geometry = feature.get("geometry") if isinstance(feature, dict) else None
        if not isinstance(feature, dict) or not isinstance(geometry or {}, dict):
            raise InputError(f"{path}: feature {index} is not a GeoJSON feature object")
        kind = (geometry or {}).get("type")
        if kind not in ("Polygon", "MultiPolygon"):
            continue
        name = _classification_name(feature)
        if name is None:
            raise InputError(f"{path}: feature {index} ({kind}) has no classification name")
        class_id = lookup.get(_normalise_name(name))
        if class_id is None:
            if name not in unknown:
                unknown.append(name)
            continue
        coordinates = geometry.get("coordinates")
        if not isinstance(coordinates, list):
            raise InputError(f"{path}: feature {index} has malformed polygon coordinates")
        parts = [coordinates] if kind == "Polygon" else coordinates
        for rings in parts:
            if not rings:
                continue
            if not isinstance(rings, list):
                raise InputError(f"{path}: feature {index} has malformed polygon coordinates")
            vertices += sum(len(ring) if isinstance(ring, list) else 0 for ring in rings)
            if vertices > MAX_GEOJSON_VERTICES:
                raise InputError(f"{path}: more than {MAX_GEOJSON_VERTICES:,} polygon vertices (the limit); "
                                 "simplify the annotations or split them")
            exterior = _ring(rings[0], path, index)
            holes = tuple(_ring(hole, path, index) for hole in rings[1:])
            bounds = (*exterior.min(axis=0), *exterior.max(axis=0))
            polygons.append(LabelPolygon(class_id, exterior, holes, tuple(float(v) for v in bounds)))
    if unknown:
        raise InputError(
            f"{path}: classification names not in the class list: {', '.join(repr(n) for n in unknown)} "
            f"(classes: {', '.join(class_names)})"
        )
    return polygons


def rasterise_polygons(
    polygons: Sequence[LabelPolygon], x: float, y: float, width: int, height: int, scale: float
) -> np.ndarray:
    """Class ids of a window: pixel ``(r, c)`` takes the class of the last polygon (file
    order) that contains its centre ``(x + (c + 0.5) * scale, y + (r + 0.5) * scale)``;
    holes belong to no polygon; everything else is 0."""
    from skimage.draw import polygon as fill_polygon

    out = np.zeros((height, width), dtype=np.uint8)
    x_end, y_end = x + width * scale, y + height * scale
    inside = np.zeros((height, width), dtype=bool)
    for item in polygons:
        x_min, y_min, x_max, y_max = item.bounds0
        if x_max < x or y_max < y or x_min > x_end or y_min > y_end:
            continue
        inside[...] = False
        rr, cc = fill_polygon(*_window_rc(item.exterior, x, y, scale), shape=(height, width))
        inside[rr, cc] = True
        for hole in item.holes:
            rr, cc = fill_polygon(*_window_rc(hole, x, y, scale), shape=(height, width))
            inside[rr, cc] = False
        out[inside] = item.class_id
    return out


def _window_rc(ring: np.ndarray, x: float, y: float, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Ring vertices as (row, col) in a window where pixel centres sit on integers."""
    return (ring[:, 1] - y) / scale - 0.5, (ring[:, 0] - x) / scale - 0.5


class GeoJsonLabelSource(LabelSource):
    """QuPath GeoJSON annotations rasterised per requested window."""

    def __init__(self, path, *, slide_size0, slide_mpp, class_names: Sequence[str]):
        super().__init__(path, slide_size0=slide_size0, slide_mpp=slide_mpp, num_classes=len(class_names))
        self.polygons = parse_geojson(path, class_names)
        self._bounds0 = np.array([item.bounds0 for item in self.polygons], dtype=np.float64).reshape(-1, 4)

    def read(self, x: int, y: int, width: int, height: int, mpp: float) -> np.ndarray:
        scale = level0_per_target(self.slide_mpp, mpp)
        x_end, y_end = x + int(width) * scale, y + int(height) * scale
        bounds = self._bounds0
        near = (bounds[:, 2] >= x) & (bounds[:, 3] >= y) & (bounds[:, 0] <= x_end) & (bounds[:, 1] <= y_end)
        polygons = [self.polygons[index] for index in np.flatnonzero(near)]  # file order kept
        return rasterise_polygons(polygons, x, y, int(width), int(height), scale)


# ----------------------------------------------------------------------------- lookup


def label_candidates(mask_dir: str | Path, slide_path: str | Path) -> list[Path]:
    """Paths where the labels of a slide may be, in order of preference."""
    slide_path = Path(slide_path)
    stem = slide_path.stem
    return [Path(mask_dir) / f"{stem}{suffix}" for suffix in LABEL_SUFFIXES]


def find_label_source(mask_dir, slide, class_names: Sequence[str]) -> LabelSource | None:
    """The label source of ``slide`` in ``mask_dir`` (``None`` when there is none).

    Looks for ``<stem>.mask.tif``, ``<stem>.tif``, ``<stem>.png`` and ``<stem>.geojson``
    (first found wins; the slide file itself is never taken for its labels).
    """
    if mask_dir is None:
        return None
    mask_dir = Path(mask_dir)
    if not mask_dir.is_dir():
        raise InputError(f"{mask_dir}: masks folder not found")
    slide_path = Path(slide.path).resolve()
    for candidate in label_candidates(mask_dir, slide_path):
        if not candidate.is_file() or candidate.resolve() == slide_path:
            continue
        common = {"slide_size0": tuple(slide.dimensions), "slide_mpp": slide.mpp}
        if candidate.suffix.lower() == ".geojson":
            return GeoJsonLabelSource(candidate, class_names=class_names, **common)
        return RasterLabelSource(candidate, num_classes=len(class_names), **common)
    return None
