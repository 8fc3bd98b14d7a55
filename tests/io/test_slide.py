"""Slide access: real OpenSlide on real and generated files, in physical units."""

from __future__ import annotations

import multiprocessing
import pickle
import shutil

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from wsi_seg.errors import InputError, MissingMppError, SlideError
from wsi_seg.io.slide import Slide, open_slide

MPP = 0.5


def _smooth_rgb(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Deterministic, spatially varying RGB content (so resampling errors show)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack(
        [
            128 + 100 * np.sin(xx / 37.0) * np.cos(yy / 53.0),
            128 + 100 * np.cos(xx / 23.0 + yy / 41.0),
            128 + 60 * np.sin((xx + yy) / 71.0),
        ],
        axis=-1,
    )
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def _write_generic_pyramid(path, level0: np.ndarray, *, mpp_x: float = MPP, mpp_y: float | None = None, levels: int = 3):
    """A generic tiled TIFF pyramid (main-chain pages, reduced ones subfiletype 1), lossless."""
    mpp_y = mpp_x if mpp_y is None else mpp_y
    pages = [level0]
    for _ in range(levels - 1):
        prev = pages[-1]
        h, w = prev.shape[0] // 2 * 2, prev.shape[1] // 2 * 2
        pages.append(prev[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8))
    with tifffile.TiffWriter(path) as tif:
        for i, page in enumerate(pages):
            scale = 2**i
            tif.write(
                page,
                tile=(128, 128),
                compression="zlib",
                photometric="rgb",
                subfiletype=1 if i else 0,
                resolution=(1e4 / (mpp_x * scale), 1e4 / (mpp_y * scale)),
                resolutionunit="CENTIMETER",
                metadata=None,
            )
    return pages


@pytest.fixture()
def pyramid(tmp_path):
    level0 = _smooth_rgb(1000, 760)
    path = tmp_path / "pyramid.tif"
    pages = _write_generic_pyramid(path, level0)
    return path, pages


@pytest.fixture(scope="module")
def cmu(real_dir):
    return real_dir / "wsi" / "cmu-1-small-region.svs"


@pytest.fixture(scope="module")
def tcga(real_dir):
    return real_dir / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"


# -- metadata -----------------------------------------------------------------


def test_real_aperio_metadata(cmu):
    slide = open_slide(cmu)
    assert slide.vendor == "aperio"
    assert slide.dimensions == (2220, 2967)
    assert slide.level_dimensions == ((2220, 2967),)
    assert slide.level_downsamples == (1.0,)
    assert slide.mpp == pytest.approx(0.499)
    assert slide.objective_power == 20.0
    assert slide.associated_images == ("label", "macro", "thumbnail")
    assert slide.properties["aperio.AppMag"] == "20"
    assert slide.size_at(0.998) == (1110, 1484)


def test_missing_mpp_names_the_option_and_user_mpp_fills_it(tcga):
    slide = open_slide(tcga)
    assert slide.level_dimensions == ((4443, 3567), (2221, 1783))
    with pytest.raises(MissingMppError) as info:
        _ = slide.mpp
    assert "--slide-mpp" in str(info.value) and str(tcga) in str(info.value)
    with pytest.raises(MissingMppError):
        slide.read(0, 0, 10, 10, 1.0)
    given = Slide(tcga, mpp=0.25)
    assert given.mpp == 0.25
    assert given.size_at(0.5) == (2222, 1784)
    assert given.best_level(0.5) == 1  # downsample 2.0005 counts as 2x
    assert given.read(0, 0, 64, 48, 0.5).shape == (48, 64, 3)


def test_user_mpp_overrides_metadata_and_is_validated(cmu):
    assert Slide(cmu, mpp=0.3).mpp == 0.3
    for bad in (0, -1, float("nan"), "x"):
        with pytest.raises(InputError):
            Slide(cmu, mpp=bad)


def test_mpp_from_tiff_resolution_tags(pyramid):
    path, pages = pyramid
    slide = open_slide(path)
    assert slide.vendor == "generic-tiff"
    assert slide.mpp == pytest.approx(MPP, rel=1e-6)
    assert slide.level_dimensions == tuple((p.shape[1], p.shape[0]) for p in pages)
    assert slide.level_downsamples == pytest.approx((1.0, 2.0, 4.0))


def test_slightly_different_xy_mpp_is_averaged_and_wild_difference_refused(tmp_path):
    level0 = _smooth_rgb(300, 200)
    near = tmp_path / "near.tif"
    _write_generic_pyramid(near, level0, mpp_x=0.50, mpp_y=0.51, levels=1)
    assert Slide(near).mpp == pytest.approx(0.505, rel=1e-6)
    wild = tmp_path / "wild.tif"
    _write_generic_pyramid(wild, level0, mpp_x=0.25, mpp_y=1.0, levels=1)
    with pytest.raises(SlideError, match="not square"):
        _ = Slide(wild).mpp
    assert Slide(wild, mpp=0.5).mpp == 0.5


# -- pixels -------------------------------------------------------------------


def test_read_at_level_mpp_equals_openslide_exactly(cmu):
    slide = open_slide(cmu)
    expected = np.asarray(openslide.OpenSlide(str(cmu)).read_region((123, 456), 0, (300, 200)))[..., :3]
    got = slide.read(123, 456, 300, 200, slide.mpp)
    assert got.dtype == np.uint8 and got.shape == (200, 300, 3)
    np.testing.assert_array_equal(got, expected)


def test_open_slides_share_one_tile_cache(pyramid, tmp_path, monkeypatch):
    """OpenSlide gives every handle its own 32 MiB tile cache by default; a worker that keeps
    the handles of all the slides it predicted would grow by that much per slide."""
    path, pages = pyramid
    other = tmp_path / "other.tif"
    shutil.copy(path, other)
    given = []
    set_cache = openslide.OpenSlide.set_cache
    monkeypatch.setattr(openslide.OpenSlide, "set_cache",
                        lambda handle, cache: (given.append(cache), set_cache(handle, cache))[1])
    for each in (path, other):
        np.testing.assert_array_equal(open_slide(each).read(200, 120, 100, 80, MPP), pages[0][120:200, 200:300])
    assert len(given) == 2 and given[0] is given[1] and isinstance(given[0], openslide.OpenSlideCache)


def test_read_uses_nearest_finer_level_and_matches_it(pyramid):
    path, pages = pyramid
    slide = open_slide(path)
    assert [slide.best_level(m) for m in (0.25, 0.5, 0.75, 1.0, 1.9, 2.0, 8.0)] == [0, 0, 0, 1, 1, 2, 2]
    handle = openslide.OpenSlide(str(path))
    for level, mpp in ((1, 1.0), (2, 2.0)):
        expected = np.asarray(handle.read_region((200, 120), level, (100, 80)))[..., :3]
        np.testing.assert_array_equal(slide.read(200, 120, 100, 80, mpp), expected)
        x, y = 200 // 2**level, 120 // 2**level
        np.testing.assert_array_equal(expected, pages[level][y : y + 80, x : x + 100])  # lossless file


def test_read_between_levels_is_antialiased_resample_of_finer_level(pyramid):
    path, pages = pyramid
    slide = open_slide(path)
    got = slide.read(0, 0, 200, 150, 1.5)  # 3x level 0, 1.5x level 1
    assert got.shape == (150, 200, 3)
    level0 = pages[0][:450, :600].astype(np.float32)
    box_mean = level0.reshape(150, 3, 200, 3, 3).mean(axis=(1, 3))
    error = np.abs(got.astype(np.float32) - box_mean)
    assert error.mean() < 4.0  # Lanczos vs box: close, never aliased noise
    # aliasing check: plain 3x subsampling of the noisy level 0 is much further from the box mean
    assert np.abs(level0[::3, ::3] - box_mean).mean() > 2 * error.mean()


def test_read_finer_than_level0_upsamples(pyramid):
    path, pages = pyramid
    got = open_slide(path).read(100, 100, 40, 40, 0.25)
    assert got.shape == (40, 40, 3)
    assert np.abs(got[::2, ::2].astype(int) - pages[0][100:120, 100:120].astype(int)).mean() < 12


def test_outside_the_slide_is_white(cmu, pyramid):
    slide = open_slide(cmu)
    region = slide.read(-50, -30, 100, 100, slide.mpp)
    assert (region[:30] == 255).all() and (region[:, :50] == 255).all()
    assert (region[30:, 50:] < 250).any()
    width0, height0 = slide.dimensions
    corner = slide.read(width0 - 10, height0 - 10, 40, 40, slide.mpp)
    assert (corner[10:] == 255).all() and (corner[:, 10:] == 255).all()
    path, _ = pyramid
    far = open_slide(path).read(5000, 5000, 16, 16, 2.0)
    assert (far == 255).all()


def test_thumbnail_matches_size_and_content(pyramid):
    path, pages = pyramid
    slide = open_slide(path)
    thumb = slide.thumbnail(4.0)
    assert thumb.shape == (95, 125, 3)
    reference = pages[0][:760, :1000].astype(np.float32).reshape(95, 8, 125, 8, 3).mean(axis=(1, 3))
    assert np.abs(thumb - reference).mean() < 6.0


def test_bad_region_arguments(cmu):
    slide = open_slide(cmu)
    with pytest.raises(InputError):
        slide.read(0, 0, 0, 10, 1.0)
    with pytest.raises(InputError):
        slide.read(0, 0, 10, 10, -1.0)


# -- plain images -------------------------------------------------------------


def test_plain_png_and_rgba_composited_on_white(tmp_path):
    rgba = np.zeros((40, 60, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[..., 3] = 255
    rgba[:10, :10, 3] = 0  # transparent corner
    rgba[10:20, :10, 3] = 128  # half transparent
    path = tmp_path / "plain.png"
    Image.fromarray(rgba).save(path)
    slide = open_slide(path, mpp=1.0)
    assert slide.vendor is None and slide.dimensions == (60, 40) and slide.associated_images == ()
    pixels = slide.read(0, 0, 60, 40, 1.0)
    assert (pixels[:10, :10] == 255).all()
    np.testing.assert_array_equal(pixels[15, 5], [(200 * 128 + 255 * 127 + 127) // 255, 127, 127])
    np.testing.assert_array_equal(pixels[30, 30], [200, 0, 0])
    with pytest.raises(MissingMppError):
        _ = Slide(path).mpp  # PNG dpi is not trusted as a scan resolution


def test_plain_jpeg_reads(real_dir):
    path = real_dir / "tiles" / "stardist_histo.jpg"
    slide = open_slide(path, mpp=0.5)
    expected = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(slide.read(10, 20, 50, 40, 0.5), expected[20:60, 10:60])


def test_plain_stripped_tiff_reads_through_tifffile_with_resolution(tmp_path):
    image = _smooth_rgb(900, 700, seed=3)
    path = tmp_path / "stripped.tiff"
    tifffile.imwrite(path, image, rowsperstrip=32, resolution=(1e4 / 0.4, 1e4 / 0.4), resolutionunit="CENTIMETER")
    assert openslide.OpenSlide.detect_format(str(path)) is None  # not a slide for OpenSlide
    slide = open_slide(path)
    assert slide.mpp == pytest.approx(0.4)
    assert slide.dimensions == (900, 700)
    np.testing.assert_array_equal(slide.read(850, 650, 100, 100, 0.4)[:50, :50], image[650:, 850:])
    assert (slide.read(850, 650, 100, 100, 0.4)[50:] == 255).all()
    assert slide.thumbnail(4.0).shape == (70, 90, 3)


# -- bad files ----------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.1, 0.6])
def test_truncated_real_svs_is_refused(cmu, tmp_path, fraction):
    data = cmu.read_bytes()
    path = tmp_path / f"cut{int(fraction * 100)}.svs"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(SlideError) as info:
        open_slide(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("fraction", [0.3, 0.6, 0.9])
def test_truncated_pyramid_with_readable_directory_is_refused(pyramid, tmp_path, fraction):
    path, _ = pyramid
    data = path.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(SlideError) as info:
        open_slide(cut)
    assert str(cut) in str(info.value)


def test_unusable_paths_give_one_clear_error(tmp_path, real_dir):
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    renamed = tmp_path / "renamed.svs"
    shutil.copy(real_dir / "tiles" / "histoqc_template1.png", renamed)
    cases = {
        tmp_path / "missing.svs": "no such file",
        empty: "empty file",
        tmp_path: "is a directory",
        renamed: "not a slide format OpenSlide can read; it is a PNG image",
    }
    for path, problem in cases.items():
        with pytest.raises(SlideError) as info:
            open_slide(path)
        assert str(info.value).startswith(f"{path}: ") and problem in str(info.value)


def test_read_error_drops_the_sticky_handle_and_recovers(pyramid):
    path, _ = pyramid
    good = path.read_bytes()
    slide = open_slide(path)
    slide.read(0, 0, 64, 64, MPP)  # the handle is cached now
    with open(path, "r+b") as handle:  # truncate in place under the open handle
        handle.truncate(len(good) // 3)
    with pytest.raises(SlideError) as info:
        slide.read(0, 400, 400, 200, MPP)  # tiles not read (so not cached) before
    assert str(path) in str(info.value)
    path.write_bytes(good)
    np.testing.assert_array_equal(
        slide.read(0, 400, 400, 200, MPP),
        np.asarray(openslide.OpenSlide(str(path)).read_region((0, 400), 0, (400, 200)))[..., :3],
    )


# -- processes ----------------------------------------------------------------


def test_pickles_to_path_and_mpp_only(cmu):
    slide = open_slide(cmu, mpp=0.6)
    slide.read(0, 0, 8, 8, 1.0)
    payload = pickle.dumps(slide)
    assert len(payload) < 300
    copy = pickle.loads(payload)
    assert copy.path == slide.path and copy.mpp == 0.6
    np.testing.assert_array_equal(copy.read(100, 100, 50, 50, 1.0), slide.read(100, 100, 50, 50, 1.0))


def _read_in_child(slide: Slide) -> np.ndarray:
    return slide.read(500, 700, 120, 90, 1.0)


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_reading_in_a_child_process_gives_identical_pixels(cmu, method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"start method {method} is not available on this platform")
    slide = open_slide(cmu)
    expected = slide.read(500, 700, 120, 90, 1.0)  # parent holds an open handle when forking
    with multiprocessing.get_context(method).Pool(1) as pool:
        got = pool.apply(_read_in_child, (slide,))
    np.testing.assert_array_equal(got, expected)
