"""Label sources: label TIFF pyramids, proportional label images, QuPath GeoJSON."""

import json
import pickle

import numpy as np
import pytest
from PIL import Image

from wsi_seg.errors import InputError
from wsi_seg.io.annotations import (
    GeoJsonLabelSource,
    RasterLabelSource,
    find_label_source,
    parse_geojson,
)
from wsi_seg.io.tiff import write_pyramidal_tiff

CLASSES = ("background", "benign epithelium", "malignant epithelium", "normal stroma")
PALETTE = np.array([[255, 255, 255], [0, 200, 0], [200, 0, 0], [240, 180, 200]], dtype=np.uint8)


class FakeSlide:
    """Only what find_label_source asks of a slide: path, level-0 size, mpp."""

    def __init__(self, path, dimensions, mpp):
        self.path, self.dimensions, self.mpp = path, dimensions, mpp


def _blocks(height, width, block=8, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, classes, (height // block, width // block), dtype=np.uint8)
    return np.kron(small, np.ones((block, block), dtype=np.uint8))


def _write_label_tiff(path, labels, mpp=0.5, min_size=128):
    height, width = labels.shape
    bands = (labels[row:row + 256] for row in range(0, height, 256))
    write_pyramidal_tiff(path, width=width, height=height, bands=bands, band_height=256, mpp=mpp,
                         colormap=PALETTE, compression="zstd", min_size=min_size)


def test_pyramidal_label_tiff_reads_windows_at_any_mpp(tmp_path):
    labels = _blocks(512, 768)
    path = tmp_path / "s.mask.tif"
    _write_label_tiff(path, labels)
    source = RasterLabelSource(path, slide_size0=(768, 512), slide_mpp=0.5, num_classes=4)
    assert len(source.level_sizes) >= 3  # 768, 384, 192 wide
    np.testing.assert_array_equal(source.read(100, 40, 200, 120, mpp=0.5), labels[40:160, 100:300])
    # 2x coarser: pixel centres at x + 2c + 1 (nearest), read from the 2x level
    np.testing.assert_array_equal(source.read(96, 32, 64, 48, mpp=1.0), labels[33:128:2, 97:224:2])
    # 4x coarser
    np.testing.assert_array_equal(source.read(0, 0, 192, 128, mpp=2.0), labels[2::4, 2::4])
    # the slide's edge: outside is background
    window = source.read(700, 480, 100, 50, mpp=0.5)
    np.testing.assert_array_equal(window[:32, :68], labels[480:, 700:])
    assert not window[32:].any() and not window[:, 68:].any()
    # pickles as parameters and reopens its file
    clone = pickle.loads(pickle.dumps(source))
    np.testing.assert_array_equal(clone.read(5, 7, 33, 21, mpp=0.5), labels[7:28, 5:38])


def test_label_png_of_a_proportional_size(tmp_path):
    small = _blocks(96, 128, block=4)
    path = tmp_path / "s.png"
    image = Image.fromarray(small, mode="P")
    image.putpalette(PALETTE.ravel().tolist())
    image.save(path)
    # the slide is 4x larger: a label pixel covers 4 x 4 level-0 pixels
    source = RasterLabelSource(path, slide_size0=(512, 384), slide_mpp=0.25, num_classes=4)
    window = source.read(40, 20, 100, 60, mpp=0.25)
    rows = (20 + np.arange(60) + 0.5) // 4
    cols = (40 + np.arange(100) + 0.5) // 4
    np.testing.assert_array_equal(window, small[rows.astype(int)][:, cols.astype(int)])


def test_wrong_aspect_ratio_is_refused_with_both_sizes(tmp_path):
    path = tmp_path / "s.png"
    Image.fromarray(np.zeros((100, 100), dtype=np.uint8)).save(path)
    with pytest.raises(InputError, match=r"s.png: mask aspect ratio 100x100 .* does not match slide 300x200"):
        RasterLabelSource(path, slide_size0=(300, 200), slide_mpp=0.5, num_classes=4)


def test_label_values_beyond_the_class_list_are_refused(tmp_path):
    labels = np.zeros((64, 64), dtype=np.uint8)
    labels[10, 10] = 9
    path = tmp_path / "s.png"
    Image.fromarray(labels).save(path)
    with pytest.raises(InputError, match=r"s.png: label value 9 is outside the class list \(0..3\)"):
        RasterLabelSource(path, slide_size0=(64, 64), slide_mpp=0.5, num_classes=4)


def test_rgb_label_image_is_refused(tmp_path):
    path = tmp_path / "s.png"
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path)
    with pytest.raises(InputError, match="one class id per pixel"):
        RasterLabelSource(path, slide_size0=(8, 8), slide_mpp=0.5, num_classes=4)


def _feature(geometry, name):
    return {"type": "Feature", "geometry": geometry,
            "properties": {"objectType": "annotation", "classification": {"name": name, "color": [0, 0, 0]}}}


def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


@pytest.fixture
def geojson_path(tmp_path):
    features = [
        _feature({"type": "Polygon", "coordinates": [_square(10, 10, 50, 50), _square(20, 20, 30, 30)]},
                 "Benign epithelium"),
        _feature({"type": "MultiPolygon", "coordinates": [[_square(60, 10, 70, 20)], [_square(60, 30, 80, 40)]]},
                 "malignant epithelium"),
        _feature({"type": "Point", "coordinates": [5, 5]}, "normal stroma"),  # not an area: ignored
        # drawn last, on top of the first polygon's hole and rim
        _feature({"type": "Polygon", "coordinates": [[[24, 24], [40, 24], [40, 28], [24, 28], [24, 24]]]},
                 "normal stroma"),
    ]
    path = tmp_path / "s.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return path


def _expected_raster():
    expected = np.zeros((60, 100), dtype=np.uint8)
    expected[10:50, 10:50] = 1
    expected[20:30, 20:30] = 0  # the hole
    expected[10:20, 60:70] = 2
    expected[30:40, 60:80] = 2
    expected[24:28, 24:40] = 3
    return expected


def test_geojson_rasterised_with_holes_and_multipolygons(geojson_path):
    source = GeoJsonLabelSource(geojson_path, slide_size0=(100, 60), slide_mpp=0.5, class_names=CLASSES)
    expected = _expected_raster()
    np.testing.assert_array_equal(source.read(0, 0, 100, 60, mpp=0.5), expected)
    np.testing.assert_array_equal(source.read(5, 7, 40, 30, mpp=0.5), expected[7:37, 5:45])
    # 2x coarser: the pixel centres sit on odd level-0 coordinates
    np.testing.assert_array_equal(source.read(0, 0, 50, 30, mpp=1.0), expected[1::2, 1::2])
    assert not source.read(200, 200, 16, 16, mpp=0.5).any()


def test_geojson_unknown_or_missing_classification(tmp_path):
    path = tmp_path / "u.geojson"
    features = [_feature({"type": "Polygon", "coordinates": [_square(0, 0, 5, 5)]}, name)
                for name in ("Tumor", "Stroma", "Tumor")]
    path.write_text(json.dumps(features))  # a plain list of features is accepted too
    with pytest.raises(InputError, match=r"u.geojson: classification names not in the class list: 'Tumor', 'Stroma'"):
        parse_geojson(path, CLASSES)
    unclassified = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [_square(0, 0, 5, 5)]},
                    "properties": {}}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [unclassified]}))
    with pytest.raises(InputError, match="feature 0 .* has no classification"):
        parse_geojson(path, CLASSES)
    path.write_text("{not json")
    with pytest.raises(InputError, match="not a readable GeoJSON"):
        parse_geojson(path, CLASSES)


def test_find_label_source_by_stem(tmp_path, geojson_path):
    slide = FakeSlide(tmp_path / "s.svs", (100, 60), 0.5)
    assert isinstance(find_label_source(tmp_path, slide, CLASSES), GeoJsonLabelSource)
    Image.fromarray(np.zeros((30, 50), dtype=np.uint8)).save(tmp_path / "s.png")
    found = find_label_source(tmp_path, slide, CLASSES)
    assert isinstance(found, RasterLabelSource) and found.path.name == "s.png"
    assert find_label_source(tmp_path, FakeSlide(tmp_path / "other.svs", (100, 60), 0.5), CLASSES) is None
    assert find_label_source(None, slide, CLASSES) is None
    with pytest.raises(InputError, match="masks folder not found"):
        find_label_source(tmp_path / "nope", slide, CLASSES)
