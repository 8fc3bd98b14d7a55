"""The review folder: areas, GeoJSON round trip, overlay TIFF, overview image."""

from __future__ import annotations

import csv
import json

import numpy as np
import openslide
import pytest
import shapely
from PIL import Image
from shapely.geometry import shape

from wsi_seg.io.annotations import parse_geojson, rasterise_polygons
from wsi_seg.io.slide import open_slide
from wsi_seg.io.tiff import read_label_tiff, write_pyramidal_tiff
from wsi_seg.review import ExportOptions, default_classes, export_review
from wsi_seg.synth import BIOPSY_CLASSES


def test_review_folder_holds_every_output(review):
    names = set(review.files)
    assert {"overview.png", "areas.csv", "annotations.geojson", "overlay.tif", "index.html"} <= names
    assert not [p for p in review.review_dir.parent.iterdir() if p.name.startswith(".")]


def test_areas_are_pixel_counts_times_mpp_squared(review, biopsy):
    truth = read_label_tiff(biopsy[1])
    counts = np.bincount(truth.ravel(), minlength=len(BIOPSY_CLASSES))
    mpp = open_slide(biopsy[0]).mpp
    tissue = counts[1:].sum()
    for area in review.areas:
        assert area.pixels == counts[area.label]
        assert area.area_mm2 == pytest.approx(counts[area.label] * mpp**2 / 1e6, rel=1e-12)
        if area.label:
            assert area.percent_of_tissue == pytest.approx(100 * counts[area.label] / tissue)
    with open(review.review_dir / "areas.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["class"] for r in rows] == [name for name, _ in BIOPSY_CLASSES]
    for row, area in zip(rows, review.areas):
        assert int(row["pixels"]) == area.pixels
        assert float(row["area_mm2"]) == pytest.approx(area.area_mm2, abs=1e-6)


def test_geojson_rasterises_back_to_the_mask(review, biopsy):
    truth = read_label_tiff(biopsy[1])
    names = default_classes().names
    polygons = parse_geojson(review.review_dir / "annotations.geojson", names)
    raster = rasterise_polygons(polygons, 0, 0, truth.shape[1], truth.shape[0], 1.0)
    present = [c for c in range(1, len(names)) if (truth == c).any()]
    assert len(present) >= 5
    for c in present:
        a, b = truth == c, raster == c
        assert (a & b).sum() / (a | b).sum() >= 0.98, names[c]


def test_geojson_features_are_valid_qupath_annotations(review):
    document = json.loads((review.review_dir / "annotations.geojson").read_text(encoding="utf-8"))
    assert document["type"] == "FeatureCollection"
    features = document["features"]
    assert len(features) == review.features > 0
    colours = {name: list(colour) for name, colour in BIOPSY_CLASSES}
    ids = set()
    for feature in features:
        assert feature["type"] == "Feature"
        ids.add(feature["id"])
        assert feature["geometry"]["type"] == "Polygon"
        assert feature["properties"]["objectType"] == "annotation"
        classification = feature["properties"]["classification"]
        assert classification["name"] in colours and classification["name"] != "background"
        assert classification["color"] == colours[classification["name"]]
        geometry = shape(feature["geometry"])
        assert geometry.is_valid and geometry.area > 0
        x0, y0, x1, y1 = geometry.bounds
        assert 0 <= x0 and 0 <= y0 and x1 <= 2048 and y1 <= 1536
    assert len(ids) == len(features)
    assert any(shape(f["geometry"]).interiors for f in features)  # holes are kept


def test_overlay_opens_in_openslide_with_the_slide_geometry(review, biopsy):
    path = review.review_dir / "overlay.tif"
    with openslide.OpenSlide(str(path)) as overlay:
        assert overlay.dimensions == (2048, 1536)
        assert overlay.level_count >= 2
        assert float(overlay.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5, rel=1e-3)
        assert float(overlay.properties[openslide.PROPERTY_NAME_MPP_Y]) == pytest.approx(0.5, rel=1e-3)
        blended = np.asarray(overlay.read_region((0, 0), 0, (2048, 1536)).convert("RGB")).astype(int)
    original = open_slide(biopsy[0]).read(0, 0, 2048, 1536, 0.5).astype(int)
    truth = read_label_tiff(biopsy[1])
    red = BIOPSY_CLASSES[2][1]
    malignant = truth == 2
    # malignant epithelium moves towards its red class colour; background stays as it was
    shift = np.abs(blended[malignant] - red).mean() - np.abs(original[malignant] - red).mean()
    assert shift < -10
    assert np.abs(blended[truth == 0] - original[truth == 0]).mean() < 3


def test_overview_shows_thumbnail_and_legend(review):
    with Image.open(review.review_dir / "overview.png") as image:
        width, height = image.size
        pixels = np.asarray(image.convert("RGB"))
    assert width > 1600 and height >= 1200
    # every class colour appears as a legend swatch in the panel right of the thumbnail
    panel = pixels[:, 1600:].reshape(-1, 3)
    for _, colour in BIOPSY_CLASSES[1:]:
        assert (np.abs(panel.astype(int) - colour).sum(axis=1) == 0).sum() > 100


def test_scaled_mask_gives_level0_geometry_and_true_areas(biopsy, tmp_path):
    slide, mask = biopsy
    truth = read_label_tiff(mask)
    half = truth[::2, ::2]
    small = tmp_path / "half.tif"
    write_pyramidal_tiff(small, width=1024, height=768, bands=[half], band_height=768, mpp=1.0)
    result = export_review(slide, small, tmp_path / "review", options=ExportOptions(viewer=False))
    counts = np.bincount(half.ravel(), minlength=8)
    for area in result.areas:
        assert area.area_mm2 == pytest.approx(counts[area.label] * 1.0 / 1e6)
    polygons = parse_geojson(tmp_path / "review" / "annotations.geojson", default_classes().names)
    raster = rasterise_polygons(polygons, 0, 0, 1024, 768, 2.0)  # level-0 coordinates, sampled every 2 px
    for c in range(1, 8):
        a, b = half == c, raster == c
        if a.sum() > 2000:
            assert (a & b).sum() / (a | b).sum() >= 0.97


def test_class_names_come_from_the_given_list(biopsy, tmp_path):
    from wsi_seg.review import ClassList

    names = tuple(f"tissue type {i}" for i in range(8))
    classes = ClassList(names, tuple(c for _, c in BIOPSY_CLASSES))
    result = export_review(*biopsy, tmp_path / "r", classes=classes, options=ExportOptions(viewer=False))
    document = json.loads((result.review_dir / "annotations.geojson").read_text(encoding="utf-8"))
    assert {f["properties"]["classification"]["name"] for f in document["features"]} <= set(names[1:])
    assert shapely.is_valid(shapely.from_geojson(json.dumps(document["features"][0]["geometry"])))
