"""Direct JPEG tile decoding: pixel-identical to OpenSlide's read_region, or no answer."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import openslide
import pytest
import tifffile

from wsi_seg.io.slide import open_slide
from wsi_seg.io.tiff_tiles import TileDecoder, TiledArray, tiled_pages
from wsi_seg.synth import synthesize_slide


def _decoder(path) -> TileDecoder | None:
    with openslide.OpenSlide(str(path)) as handle:
        return TileDecoder.for_slide(path, handle.level_dimensions, handle.level_downsamples)


def _reference(path, level, x0, y0, width, height) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as handle:
        return np.asarray(handle.read_region((x0, y0), level, (width, height)))[..., :3]


@pytest.fixture(scope="module")
def cmu(real_dir):
    return real_dir / "wsi" / "cmu-1-small-region.svs"


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    slide, _ = synthesize_slide(tmp_path_factory.mktemp("synth"), "tiles", width=2400, height=2000, seed=3)
    return slide


@pytest.fixture()
def jpeg_pyramid(tmp_path):
    """A generic tiled TIFF with JPEG (YCbCr) tiles at 1x and 2x."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:700, 0:900]
    level0 = np.stack([128 + 90 * np.sin(xx / 29), 128 + 90 * np.cos(yy / 17), (xx + yy) % 256], -1)
    level0 = np.clip(level0 + rng.normal(0, 8, level0.shape), 0, 255).astype(np.uint8)
    level1 = level0.reshape(350, 2, 450, 2, 3).mean(axis=(1, 3)).astype(np.uint8)
    path = tmp_path / "jpeg.tif"
    with tifffile.TiffWriter(path) as tif:
        for index, page in enumerate((level0, level1)):
            tif.write(page, tile=(128, 128), compression="jpeg", compressionargs={"level": 90}, photometric="ycbcr",
                      subfiletype=1 if index else 0, resolution=(1e4 / (0.5 * 2**index),) * 2,
                      resolutionunit="CENTIMETER", metadata=None)
    return path


def test_real_aperio_regions_equal_read_region(cmu):
    decoder = _decoder(cmu)
    assert decoder is not None and decoder.levels() == (0,)
    width0, height0 = openslide.OpenSlide(str(cmu)).dimensions
    rng = np.random.default_rng(1)
    for _ in range(12):
        width, height = (int(v) for v in rng.integers(1, 600, 2))
        x0, y0 = int(rng.integers(0, width0 - width)), int(rng.integers(0, height0 - height))
        got = decoder.read(0, x0, y0, width, height)
        assert got is not None and got.shape == (height, width, 3)
        np.testing.assert_array_equal(got, _reference(cmu, 0, x0, y0, width, height))


def test_synthetic_svs_levels_equal_read_region(synthetic):
    decoder = _decoder(synthetic)
    handle = openslide.OpenSlide(str(synthetic))
    assert decoder is not None and 0 in decoder.levels()
    for level in decoder.levels():
        factor = round(handle.level_downsamples[level])
        width, height = handle.level_dimensions[level]
        # the most textured of a few windows: tissue, not glass, so the comparison means something
        candidates = [(x * factor, y * factor) for x in range(0, width - 128, 64) for y in range(0, height - 96, 64)]
        x0, y0 = max(candidates[::7], key=lambda xy: _reference(synthetic, level, *xy, 128, 96).std())
        got = decoder.read(level, x0, y0, 128, 96)
        assert got is not None and got.std() > 10
        np.testing.assert_array_equal(got, _reference(synthetic, level, x0, y0, 128, 96))


def test_generic_jpeg_tiff_both_levels_and_off_grid_positions(jpeg_pyramid):
    decoder = _decoder(jpeg_pyramid)
    assert decoder is not None and decoder.levels() == (0, 1)
    for level, (x0, y0) in ((0, (131, 77)), (1, (262, 154))):
        got = decoder.read(level, x0, y0, 250, 190)
        np.testing.assert_array_equal(got, _reference(jpeg_pyramid, level, x0, y0, 250, 190))


def _composited(path, level, x0, y0, width, height) -> np.ndarray:
    """OpenSlide's region composited on white (what Slide.read returns through OpenSlide)."""
    with openslide.OpenSlide(str(path)) as handle:
        rgba = np.asarray(handle.read_region((x0, y0), level, (width, height))).astype(np.uint16)
    alpha = rgba[..., 3:4]
    return ((rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def test_regions_past_the_level_edge_are_white_there_as_in_openslide(cmu, synthetic):
    for path in (cmu, synthetic):
        decoder = _decoder(path)
        width0, height0 = openslide.OpenSlide(str(path)).dimensions
        for x0, y0, width, height in [(-5, 10, 50, 50), (width0 - 20, 10, 50, 50), (10, height0 - 1, 5, 5),
                                      (width0 - 30, height0 - 40, 100, 90), (-20, -20, 10, 10),
                                      (width0 + 5, 0, 8, 8)]:
            got = decoder.read(0, x0, y0, width, height)
            assert got is not None and got.shape == (height, width, 3)
            np.testing.assert_array_equal(got, _composited(path, 0, x0, y0, width, height))
    # and through the slide reader
    slide = open_slide(cmu)
    width0 = slide.dimensions[0]
    got = slide.read(width0 - 20, 10, 50, 50, slide.mpp)
    np.testing.assert_array_equal(got[:, :20], _reference(cmu, 0, width0 - 20, 10, 20, 50))
    assert (got[:, 20:] == 255).all()


def test_regions_it_cannot_answer_exactly_fall_back_to_openslide(cmu, jpeg_pyramid):
    assert _decoder(cmu).read(3, 0, 0, 10, 10) is None  # no such level
    assert _decoder(jpeg_pyramid).read(1, 263, 154, 50, 50) is None  # between level-1 pixels


def test_compositing_a_mostly_transparent_region_on_white(cmu):
    """OpenSlide's path (a level the decoder does not take): the memory-lean compositing
    equals the straight-alpha formula, including partly transparent pixels."""
    from wsi_seg.io.slide import _composite_on_white

    rgba = np.random.default_rng(2).integers(0, 256, (64, 80, 4), dtype=np.uint8)
    rgba[:20, :, 3] = 0
    rgba[20:40, :, 3] = 255
    a = rgba[..., 3:4].astype(np.uint16)
    expected = ((rgba[..., :3].astype(np.uint16) * a + 255 * (255 - a) + 127) // 255).astype(np.uint8)
    np.testing.assert_array_equal(_composite_on_white(rgba), expected)
    width0, height0 = openslide.OpenSlide(str(cmu)).dimensions
    handle = openslide.OpenSlide(str(cmu))
    region = np.asarray(handle.read_region((width0 - 30, height0 - 30), 0, (60, 60)))
    np.testing.assert_array_equal(_composite_on_white(region), _composited(cmu, 0, width0 - 30, height0 - 30, 60, 60))


def test_zlib_tiles_and_other_formats_get_no_decoder(tmp_path):
    path = tmp_path / "zlib.tif"
    tifffile.imwrite(path, np.zeros((300, 300, 3), np.uint8), tile=(128, 128), compression="zlib",
                     photometric="rgb", resolution=(2e4, 2e4), resolutionunit="CENTIMETER", metadata=None)
    assert _decoder(path) is None


def test_threads_share_a_decoder(cmu):
    decoder = _decoder(cmu)
    boxes = [(37 * i, 29 * i, 240, 180) for i in range(16)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda box: decoder.read(0, *box), boxes))
    for box, got in zip(boxes, results):
        np.testing.assert_array_equal(got, _reference(cmu, 0, *box))
    decoder.close()
    assert decoder.read(0, 0, 0, 10, 10) is None


def test_tiled_label_levels_read_like_tifffile(tmp_path):
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 8, (300, 420), dtype=np.uint8)
    path = tmp_path / "labels.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(labels, tile=(64, 64), compression="zlib", subifds=1, metadata=None)
        tif.write(labels[::2, ::2], tile=(64, 64), compression="zlib", subfiletype=1, metadata=None)
    pages = tiled_pages(path)
    assert pages is not None and [(p.width, p.height) for p in pages] == [(420, 300), (210, 150)]
    level0, level1 = (TiledArray(path, page) for page in pages)
    assert level0.shape == (300, 420) and level0.dtype == np.uint8
    np.testing.assert_array_equal(level0[37:251, 5:390], labels[37:251, 5:390])
    np.testing.assert_array_equal(level1[...], labels[::2, ::2])
    np.testing.assert_array_equal(level0[290:400, 410:500], labels[290:, 410:])  # clipped like numpy
    level0.close()
    np.testing.assert_array_equal(level0[0:64, 0:64], labels[:64, :64])  # reopens


def test_stripped_label_tiff_has_no_tile_table(tmp_path):
    path = tmp_path / "stripped.tif"
    tifffile.imwrite(path, np.zeros((100, 100), np.uint8), rowsperstrip=16, metadata=None)
    assert tiled_pages(path) is None
