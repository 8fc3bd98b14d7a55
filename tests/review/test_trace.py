"""Tracing label rasters into polygons: exact outlines, holes, tile seams."""

from __future__ import annotations

import numpy as np
import shapely
from skimage.draw import disk

from wsi_seg.io.annotations import LabelPolygon, rasterise_polygons
from wsi_seg.review.classes import default_classes
from wsi_seg.review.geojson import RegionTracer, clean_region, region_features, trace_binary


def _raster(polygons, shape):
    items = []
    for p in polygons:
        ext = np.asarray(p.exterior.coords)
        holes = tuple(np.asarray(h.coords) for h in p.interiors)
        items.append(LabelPolygon(1, ext, holes, tuple(p.bounds)))
    return rasterise_polygons(items, 0, 0, shape[1], shape[0], 1.0) == 1


def _ring_with_island(size=64):
    image = np.zeros((size, size), bool)
    image[disk((32, 32), 25, shape=image.shape)] = True
    image[disk((32, 32), 12, shape=image.shape)] = False  # a hole
    image[disk((32, 32), 5, shape=image.shape)] = True   # an island inside the hole
    image[2:5, 50:62] = True                              # a separate bar
    return image


def test_outlines_hold_exactly_the_pixel_centres():
    image = _ring_with_island()
    polygons = trace_binary(image)
    assert len(polygons) == 3
    assert sum(len(p.interiors) for p in polygons) == 1
    assert all(p.is_valid for p in polygons)
    np.testing.assert_array_equal(_raster(polygons, image.shape), image)


def test_random_labels_trace_exactly():
    rng = np.random.default_rng(3)
    image = rng.random((40, 50)) > 0.55
    polygons = trace_binary(image)
    assert all(p.is_valid for p in polygons)
    np.testing.assert_array_equal(_raster(polygons, image.shape), image)


def test_regions_cut_by_tile_edges_are_merged():
    labels = np.zeros((100, 130), np.uint8)
    labels[10:90, 5:125] = 2
    labels[40:60, 40:90] = 3  # a hole of class 2 that straddles tiles
    tracer = RegionTracer(130, 4, tile=32)
    for start in range(0, 100, 32):
        first = max(0, start - 1)
        tracer.add_band(start, labels[first : start + 33], top=start - first, height=min(32, 100 - start))
    regions = tracer.regions()
    assert len(regions[2]) == 1 and len(regions[3]) == 1
    assert len(regions[2][0].interiors) == 1
    # the same outline as tracing the whole image at once: nothing is added at the tile edges
    (whole,) = trace_binary(labels == 2)
    assert regions[2][0].equals(whole)
    np.testing.assert_array_equal(_raster(regions[2], labels.shape), labels == 2)


def test_simplification_drops_vertices_and_small_regions():
    image = np.zeros((200, 200), bool)
    image[disk((100, 100), 80, shape=image.shape)] = True
    polygon = trace_binary(image)[0]
    simplified = clean_region(polygon, tolerance=1.0, min_area=10)
    assert len(simplified) == 1 and simplified[0].is_valid
    assert len(simplified[0].exterior.coords) < len(polygon.exterior.coords) / 2
    assert abs(simplified[0].area - polygon.area) < 0.01 * polygon.area
    assert clean_region(polygon, tolerance=1.0, min_area=polygon.area + 1) == []


def test_scale_maps_mask_pixels_to_level0():
    labels = np.zeros((10, 10), np.uint8)
    labels[2:4, 2:4] = 1
    tracer = RegionTracer(10, 2, scale=(4.0, 4.0))
    tracer.add_band(0, labels)
    (region,) = tracer.regions()[1]
    assert region.bounds == (8.0, 8.0, 16.0, 16.0)


def test_features_are_deterministic_and_oriented():
    labels = np.zeros((50, 50), np.uint8)
    labels[5:45, 5:45] = 1
    labels[20:30, 20:30] = 0
    tracer = RegionTracer(50, 8)
    tracer.add_band(0, labels)
    classes = default_classes()
    first = list(region_features(tracer.regions(), classes, tolerance=0.5, min_area=0, namespace="a"))
    again = list(region_features(tracer.regions(), classes, tolerance=0.5, min_area=0, namespace="a"))
    assert first == again and len(first) == 1
    polygon = shapely.geometry.shape(first[0]["geometry"])
    assert polygon.exterior.is_ccw and not polygon.interiors[0].is_ccw
