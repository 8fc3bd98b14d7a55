"""``annotations.geojson``: mask regions as QuPath annotation polygons.

Tracing. The mask is scanned in tiles (``TRACE_TILE`` mask pixels square, read in
full-width row bands, so no whole-mask array is ever built). In each tile, each
class present is traced with :func:`skimage.measure.find_contours` at level 0.5
on a zero-padded binary image: every ring is closed, runs between the centres of
inside and outside pixels, and holds exactly the pixel centres of the region
(4-connected regions; diagonal neighbours are separate regions). Rings are told
apart as exteriors or holes by their orientation; each hole goes to the smallest
exterior around it. Collinear vertices are dropped (exact). Polygons cut by tile
edges share their edge segments exactly, so :func:`shapely.union_all` merges them
back into whole regions per class.

Output. One GeoJSON feature per connected region (a Polygon with its holes).
Coordinates are level-0 slide pixels (x right, y down), which QuPath expects.
Each region is simplified (Douglas-Peucker, topology preserved) within
``tolerance`` level-0 pixels; regions and holes smaller than ``min_area``
level-0 square pixels are dropped; the background class is not exported.
Every written polygon is valid (:func:`shapely.is_valid`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import shapely
from shapely.geometry import Polygon, mapping

from wsi_seg.review.classes import ClassList

#: Side of the square tiles traced one at a time, in mask pixels.
TRACE_TILE = 2048

#: Decimals kept in written coordinates (level-0 pixels).
COORD_DECIMALS = 2


def _drop_collinear(ring: np.ndarray) -> np.ndarray:
    """A closed ring (first == last) without vertices that lie on a straight run."""
    points = ring[:-1]
    before = points - np.roll(points, 1, axis=0)
    after = np.roll(points, -1, axis=0) - points
    cross = before[:, 0] * after[:, 1] - before[:, 1] * after[:, 0]
    keep = points[cross != 0]
    if len(keep) < 3:
        return ring
    return np.vstack([keep, keep[:1]])


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def trace_binary(inside: np.ndarray, x0: float = 0.0, y0: float = 0.0) -> list[Polygon]:
    """Polygons (with holes) around the True pixels of ``inside``; pixel ``(r, c)`` is the
    unit square ``[x0 + c, x0 + c + 1] x [y0 + r, y0 + r + 1]`` and its centre lies inside
    exactly when the pixel is True."""
    from skimage.measure import find_contours

    padded = np.pad(inside.astype(np.float32), 1)
    exteriors, holes = [], []
    for contour in find_contours(padded, 0.5):
        if len(contour) < 4:
            continue
        ring = np.column_stack([contour[:, 1] - 0.5 + x0, contour[:, 0] - 0.5 + y0])
        ring = _drop_collinear(ring)
        # find_contours winds around high values one way and around holes the other
        (exteriors if _signed_area(ring) > 0 else holes).append(ring)
    if not exteriors:
        return []
    shells = shapely.polygons([shapely.linearrings(r) for r in exteriors])
    assigned: list[list[np.ndarray]] = [[] for _ in exteriors]
    if holes:
        tree = shapely.STRtree(shells)
        points = shapely.points([h[0] for h in holes])
        hole_index, shell_index = tree.query(points, predicate="within")
        areas = shapely.area(shells)
        best: dict[int, int] = {}
        for h, s in zip(hole_index.tolist(), shell_index.tolist()):
            if h not in best or areas[s] < areas[best[h]]:
                best[h] = s
        for h, s in best.items():
            assigned[s].append(holes[h])
    return [Polygon(shell, assigned[i]) for i, shell in enumerate(exteriors)]


class RegionTracer:
    """Collects class regions from full-resolution mask row bands, tile by tile.

    ``scale`` is level-0 slide pixels per mask pixel (x, y); ``skip`` lists label
    values not traced (the background).
    """

    def __init__(self, width: int, num_classes: int, *, scale=(1.0, 1.0), skip=(0,), tile: int = TRACE_TILE):
        self.width = int(width)
        self.num_classes = int(num_classes)
        self.scale = (float(scale[0]), float(scale[1]))
        self.skip = set(skip)
        self.tile = int(tile)
        self._parts: dict[int, list[Polygon]] = {}

    def add_band(self, y0: int, rows: np.ndarray, *, top: int = 0, height: int | None = None) -> None:
        """Trace the tiles of the full-width mask rows ``y0:y0 + height``.

        ``rows`` may carry context: ``top`` rows above ``y0`` and any rows below the band
        (one each way is enough). Outlines are traced with one pixel of context around
        each tile and then clipped to the tile, so the pieces of a region that crosses a
        tile edge meet exactly along it.
        """
        height = len(rows) - top if height is None else int(height)
        below = min(len(rows), top + height + 1)
        above = max(0, top - 1)
        for x0 in range(0, self.width, self.tile):
            x1 = min(x0 + self.tile, self.width)
            left, right = max(0, x0 - 1), min(self.width, x1 + 1)
            window = rows[above:below, left:right]
            core = rows[top : top + height, x0:x1]
            present = np.flatnonzero(np.bincount(core.ravel(), minlength=self.num_classes))
            box = shapely.box(x0, y0, x1, y0 + height)
            for label in present.tolist():
                if label in self.skip:
                    continue
                traced = trace_binary(window == label, left, y0 - (top - above))
                if not traced:
                    continue
                clipped = shapely.intersection(shapely.union_all(traced), box)
                self._parts.setdefault(label, []).extend(_polygonal_parts(clipped))

    def regions(self) -> dict[int, list[Polygon]]:
        """Connected regions per label, in level-0 pixel coordinates (unsimplified)."""
        sx, sy = self.scale
        out: dict[int, list[Polygon]] = {}
        for label in sorted(self._parts):
            merged = shapely.union_all(self._parts[label])
            if (sx, sy) != (1.0, 1.0):
                merged = shapely.transform(merged, lambda c: c * np.array([sx, sy]))
            out[label] = [p for p in shapely.get_parts(merged) if isinstance(p, Polygon) and not p.is_empty]
        return out


def _polygonal_parts(geometry) -> list[Polygon]:
    if isinstance(geometry, Polygon):
        return [geometry]
    return [p for p in shapely.get_parts(geometry) if isinstance(p, Polygon)] if geometry is not None else []


def clean_region(polygon: Polygon, *, tolerance: float, min_area: float) -> list[Polygon]:
    """``polygon`` simplified within ``tolerance``, small holes removed, made valid; regions
    below ``min_area`` are dropped (areas in square level-0 pixels)."""
    if polygon.area < min_area:
        return []
    holes = [h for h in polygon.interiors if Polygon(h).area >= min_area]
    polygon = Polygon(polygon.exterior, holes)
    if tolerance > 0:
        polygon = shapely.simplify(polygon, tolerance, preserve_topology=True)
    parts = _polygonal_parts(polygon if polygon.is_valid else shapely.make_valid(polygon))
    return [p for p in parts if p.is_valid and p.area >= min_area]


def _rounded(polygon: Polygon):
    """Coordinates snapped to ``COORD_DECIMALS`` (kept valid), exterior counter-clockwise
    and holes clockwise as RFC 7946 asks."""
    return shapely.orient_polygons(shapely.set_precision(polygon, 10 ** -COORD_DECIMALS))


def region_features(regions: dict[int, list[Polygon]], classes: ClassList, *, tolerance: float,
                    min_area: float, namespace: str = "") -> Iterator[dict]:
    """GeoJSON features (QuPath annotations) for the regions, one per connected region.

    Ids are UUIDs derived from ``namespace`` and the feature's position, so the same
    input gives the same file.
    """
    base = uuid.uuid5(uuid.NAMESPACE_URL, f"wsi-seg-review:{namespace}")
    index = 0
    for label, polygons in regions.items():
        name, color = classes.names[label], [int(v) for v in classes.colors[label]]
        for polygon in polygons:
            for part in clean_region(polygon, tolerance=tolerance, min_area=min_area):
                part = _rounded(part)
                if part.is_empty or not part.is_valid or not isinstance(part, Polygon):
                    continue
                yield {
                    "type": "Feature",
                    "id": str(uuid.uuid5(base, str(index))),
                    "geometry": mapping(part),
                    "properties": {
                        "objectType": "annotation",
                        "classification": {"name": name, "color": color},
                        "isLocked": False,
                    },
                }
                index += 1


def write_features(path: str | Path, features) -> int:
    """Write a FeatureCollection feature by feature; returns the number written."""
    count = 0
    with open(path, "w", encoding="utf-8") as fh:
        fh.write('{"type": "FeatureCollection", "features": [\n')
        for feature in features:
            if count:
                fh.write(",\n")
            fh.write(json.dumps(feature, ensure_ascii=False, separators=(",", ":")))
            count += 1
        fh.write("\n]}\n")
    return count
