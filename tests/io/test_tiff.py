"""Pyramidal TIFF and Aperio SVS writers, checked with real OpenSlide and tifffile."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
import tifffile

from wsi_seg.errors import InputError
from wsi_seg.io.tiff import (
    palette_colormap,
    pyramid_shapes,
    read_label_tiff,
    write_aperio_svs,
    write_pyramidal_tiff,
)

COLOURS = np.array([[255, 255, 255], [0, 170, 0], [220, 20, 20], [250, 160, 200], [140, 90, 200]], np.uint8)


def bands_of(image: np.ndarray, band_height: int):
    for y in range(0, image.shape[0], band_height):
        yield image[y : y + band_height]


def label_image(width: int, height: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, len(COLOURS), size=(height // 16 + 1, width // 16 + 1)).astype(np.uint8)
    return np.repeat(np.repeat(coarse, 16, 0), 16, 1)[:height, :width].copy()


def rgb_image(width: int, height: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = xx * 255 // width
    img[..., 1] = yy * 255 // height
    img[..., 2] = 60 + (xx + yy) * 120 // (width + height)
    return img


def test_pyramid_shapes_halve_until_min_size():
    assert pyramid_shapes(12000, 10000, min_size=256) == [
        (12000, 10000), (6000, 5000), (3000, 2500), (1500, 1250), (750, 625), (375, 313)]
    assert pyramid_shapes(300, 200, min_size=256) == [(300, 200)]
    assert pyramid_shapes(4096, 1000, min_size=512, step=4) == [(4096, 1000), (1024, 250)]


def test_palette_colormap_scales_to_16_bit():
    cmap = palette_colormap(COLOURS)
    assert cmap.shape == (3, 256) and cmap.dtype == np.uint16
    assert cmap[:, 2].tolist() == [220 * 257, 20 * 257, 20 * 257]
    assert cmap[:, 5:].max() == 0


def test_label_pyramid_opens_in_openslide_and_round_trips(tmp_path):
    width, height = 1500, 1100  # odd reductions: 750x550 -> 375x275
    labels = label_image(width, height)
    path = tmp_path / "mask.tif"
    write_pyramidal_tiff(path, width=width, height=height, bands=bands_of(labels, 100), band_height=100,
                         mpp=0.5, colormap=COLOURS, min_size=256)

    slide = openslide.OpenSlide(path)
    assert slide.properties["openslide.vendor"] == "generic-tiff"
    assert slide.level_dimensions == ((1500, 1100), (750, 550), (375, 275))
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5)
    # OpenSlide shows palette colours
    y, x = 500, 700
    rgba = slide.read_region((x, y), 0, (1, 1)).getpixel((0, 0))
    assert rgba[:3] == tuple(COLOURS[labels[y, x]])
    slide.close()

    assert np.array_equal(read_label_tiff(path), labels)
    assert np.array_equal(read_label_tiff(path, level=1), labels[::2, ::2])
    assert np.array_equal(read_label_tiff(path, level=2), labels[::4, ::4])
    with tifffile.TiffFile(path) as tif:
        assert [p.subfiletype for p in tif.pages] == [0, 1, 1]
        assert all(p.is_tiled and p.photometric == tifffile.PHOTOMETRIC.PALETTE for p in tif.pages)
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE


def test_band_height_does_not_change_the_file(tmp_path):
    labels = label_image(700, 530, seed=3)
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    write_pyramidal_tiff(a, width=700, height=530, bands=bands_of(labels, 64), band_height=64, mpp=1.0)
    write_pyramidal_tiff(b, width=700, height=530, bands=bands_of(labels, 333), band_height=333, mpp=1.0)
    assert a.read_bytes() == b.read_bytes()


def test_rgb_jpeg_pyramid_is_close_in_openslide(tmp_path):
    width, height = 1300, 900
    img = rgb_image(width, height)
    path = tmp_path / "overlay.tif"
    write_pyramidal_tiff(path, width=width, height=height, bands=bands_of(img, 128), band_height=128, mpp=0.25)
    slide = openslide.OpenSlide(path)
    assert slide.level_dimensions == ((1300, 900), (650, 450), (325, 225))
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    got = np.asarray(slide.read_region((0, 0), 0, (width, height)).convert("RGB")).astype(int)
    assert np.abs(got - img).mean() < 2.0
    lvl1 = np.asarray(slide.read_region((0, 0), 1, (650, 450)).convert("RGB")).astype(int)
    assert np.abs(lvl1 - img[::2, ::2]).mean() < 3.0


def test_aperio_svs_layout(tmp_path):
    width, height = 2600, 2100
    img = rgb_image(width, height)
    path = tmp_path / "slide.svs"
    label = np.full((100, 120, 3), 240, np.uint8)
    macro = np.full((90, 200, 3), 200, np.uint8)
    write_aperio_svs(path, width=width, height=height, bands=bands_of(img, 256), band_height=256, mpp=0.5,
                     app_mag=20, label=label, macro=macro, min_size=512)
    slide = openslide.OpenSlide(path)
    assert slide.properties["openslide.vendor"] == "aperio"
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5)
    assert slide.properties["openslide.objective-power"] == "20"
    assert slide.level_dimensions == ((2600, 2100), (650, 525))
    assert slide.level_downsamples == pytest.approx((1.0, 4.0))
    assert sorted(slide.associated_images) == ["label", "macro", "thumbnail"]
    assert slide.associated_images["label"].size == (120, 100)
    got = np.asarray(slide.read_region((1000, 800), 0, (400, 300)).convert("RGB")).astype(int)
    assert np.abs(got - img[800:1100, 1000:1400]).mean() < 2.0
    with tifffile.TiffFile(path) as tif:
        pages = list(tif.pages)
        assert [p.is_tiled for p in pages] == [True, False, True, False, False]
        assert [p.subfiletype for p in pages] == [0, 0, 0, 1, 9]
        assert all(p.description.startswith("Aperio Image Library") for p in pages)
        assert all("MPP = 0.5000" in p.description and "AppMag = 20" in p.description for p in pages)


def test_failing_band_iterator_leaves_nothing(tmp_path):
    labels = label_image(600, 600)

    def broken():
        yield labels[:200]
        yield labels[200:400]
        raise RuntimeError("reader died")

    path = tmp_path / "mask.tif"
    with pytest.raises(RuntimeError, match="reader died"):
        write_pyramidal_tiff(path, width=600, height=600, bands=broken(), band_height=200, mpp=0.5)
    def broken_rgb():
        yield np.zeros((200, 600, 3), np.uint8)
        raise RuntimeError("reader died")

    with pytest.raises(RuntimeError, match="reader died"):
        write_aperio_svs(tmp_path / "s.svs", width=600, height=600, bands=broken_rgb(), band_height=200, mpp=0.5)
    assert list(tmp_path.iterdir()) == []


def test_existing_output_survives_a_failed_rewrite(tmp_path):
    labels = label_image(300, 300)
    path = tmp_path / "mask.tif"
    write_pyramidal_tiff(path, width=300, height=300, bands=[labels], band_height=300, mpp=0.5)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="rows"):
        write_pyramidal_tiff(path, width=300, height=300, bands=[labels[:100]], band_height=100, mpp=0.5)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["mask.tif"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mpp=0), "mpp"),
        (dict(band_height=100, bands=[np.zeros((100, 299), np.uint8)]), "shape"),
        (dict(bands=[np.zeros((300, 300), np.float32)]), "uint8"),
    ],
)
def test_bad_arguments_raise_value_error(tmp_path, kwargs, message):
    args = dict(width=300, height=300, bands=[np.zeros((300, 300), np.uint8)], band_height=300, mpp=0.5)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        write_pyramidal_tiff(tmp_path / "x.tif", **args)
    assert list(tmp_path.iterdir()) == []


def test_read_label_tiff_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_label_tiff(tmp_path / "missing.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"not a tiff at all")
    with pytest.raises(InputError, match="bad.tif"):
        read_label_tiff(bad)
    labels = label_image(300, 300)
    path = tmp_path / "m.tif"
    write_pyramidal_tiff(path, width=300, height=300, bands=[labels], band_height=300, mpp=0.5)
    with pytest.raises(InputError, match="level 5"):
        read_label_tiff(path, level=5)


def test_height_a_multiple_of_the_tile_builds_every_level(tmp_path):
    # the writer must run the band stream to its end even when the last tile is complete
    labels = label_image(1024, 1024, seed=7)
    path = tmp_path / "m.tif"
    write_pyramidal_tiff(path, width=1024, height=1024, bands=bands_of(labels, 128), band_height=128, mpp=0.5)
    for level in range(3):
        assert np.array_equal(read_label_tiff(path, level), labels[:: 2**level, :: 2**level])
