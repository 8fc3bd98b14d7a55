"""Tissue detection: measured on real H&E tiles and real pen/coverslip artefacts."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image

from wsi_seg.errors import InputError
from wsi_seg.io.slide import open_slide
from wsi_seg.tissue import TissueMap, detect_tissue, ink_mask, tissue_mask

#: The artefact images are slide thumbnails; their scale is not recorded, 8 um/px is typical.
ARTEFACT_MPP = 8.0
#: The real tiles are 0.25-0.5 um/px crops of tissue.
TILE_MPP = 0.5


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def _artefact(real_dir, name):
    image = _rgb(real_dir / "artifacts" / f"{name}.png")
    mask = np.asarray(Image.open(real_dir / "artifacts" / f"{name}_mask.png")) > 0
    return image, mask


@pytest.mark.parametrize("name", ["pen_red", "pen_green"])
def test_pen_ink_is_not_tissue(real_dir, name):
    image, pen = _artefact(real_dir, name)
    tissue = tissue_mask(image, ARTEFACT_MPP)
    assert pen.sum() > 1000
    assert tissue[pen].mean() <= 0.10
    assert tissue[~pen].mean() > 0.15  # the tissue on those slides is still found


def test_coverslip_edge_mostly_rejected(real_dir):
    image, edge = _artefact(real_dir, "coverslip_edge")
    tissue = tissue_mask(image, ARTEFACT_MPP)
    assert tissue[edge].mean() <= 0.15  # measured 0.09
    assert tissue[~edge].mean() > 0.3


def _tile_paths(real_dir):
    paths = sorted((real_dir / "tiles").glob("*"))
    assert len(paths) >= 10
    return paths


def test_real_tiles_are_tissue(real_dir):
    for path in _tile_paths(real_dir):
        fraction = tissue_mask(_rgb(path), TILE_MPP).mean()
        assert fraction >= 0.95, f"{path.name}: only {fraction:.3f} called tissue"


def test_pale_tissue_is_kept(real_dir):
    for path in _tile_paths(real_dir):
        image = _rgb(path)
        pale = ((image.astype(np.uint16) + 255) // 2).astype(np.uint8)  # 50 % towards white
        fraction = tissue_mask(pale, TILE_MPP).mean()
        assert fraction >= 0.90, f"{path.name} blended to white: only {fraction:.3f} called tissue"


@pytest.mark.parametrize("mpp", [0.5, 8.0, 16.0])
def test_white_glass_is_never_tissue(mpp):
    rng = np.random.default_rng(1)
    glass = np.clip(rng.normal(236, 4, (400, 500, 3)), 0, 255).astype(np.uint8)
    assert not tissue_mask(glass, mpp).any()


def test_all_white_and_uniform_images_have_no_tissue():
    assert not tissue_mask(np.full((64, 80, 3), 255, np.uint8), 8.0).any()
    assert not tissue_mask(np.full((64, 80, 3), 230, np.uint8), 8.0).any()
    assert tissue_mask(np.full((1, 1, 3), 255, np.uint8), 8.0).shape == (1, 1)


def test_tissue_on_glass_found_and_small_specks_dropped(real_dir):
    tile = np.asarray(Image.open(real_dir / "tiles" / "histoqc_template1.png").convert("RGB").resize((60, 60)))
    canvas = np.full((200, 300, 3), 238, np.uint8)
    canvas[50:110, 40:100] = tile  # 60 px at 8 um = 480 um square
    canvas[150:153, 250:253] = tile[:3, :3]  # 24 um speck: below min area
    mask = tissue_mask(canvas, 8.0)
    assert mask[55:105, 45:95].mean() > 0.97
    assert not mask[140:160, 240:260].any()
    assert mask.sum() < 60 * 60 * 1.15


def test_rgba_thumbnail_is_composited_on_white(real_dir):
    image = _rgb(real_dir / "tiles" / "histoqc_template2.png")
    rgba = np.zeros((500, 1500, 4), np.uint8)  # transparent: 500 x 250 um of "glass"
    rgba[:, 1000:, :3] = image
    rgba[:, 1000:, 3] = 255
    mask = tissue_mask(rgba, TILE_MPP)
    assert not mask[:, :900].any() and mask[:, 1050:].mean() > 0.95


def test_ink_colours():
    swatches = np.array(
        [[[40, 160, 130], [30, 60, 160], [20, 20, 25], [210, 45, 70], [225, 155, 184], [150, 80, 140]]], np.uint8
    )  # green, blue, black, pen red, eosin, hematoxylin-eosin purple
    assert ink_mask(swatches)[0].tolist() == [True, True, True, True, False, False]


def test_bad_arguments():
    with pytest.raises(InputError):
        tissue_mask(np.zeros((10, 10), np.uint8), 8.0)
    with pytest.raises(InputError):
        tissue_mask(np.zeros((10, 10, 3), np.float32), 8.0)
    with pytest.raises(InputError):
        tissue_mask(np.zeros((10, 10, 3), np.uint8), 0.0)


# -- TissueMap ----------------------------------------------------------------


def _hand_mask() -> TissueMap:
    mask = np.zeros((10, 20), bool)
    mask[2:6, 4:12] = True  # 4 x 8 = 32 mask pixels of tissue
    return TissueMap(mask=mask, mpp=8.0)


def test_fraction_of_level0_boxes_through_mpp():
    tissue = _hand_mask()
    # slide at 0.5 um/px: one mask pixel is 16 x 16 level-0 pixels
    assert tissue.fraction(4 * 16, 2 * 16, 8 * 16, 4 * 16, 0.5) == 1.0
    assert tissue.fraction(0, 0, 4 * 16, 2 * 16, 0.5) == 0.0
    assert tissue.fraction(0, 0, 20 * 16, 10 * 16, 0.5) == pytest.approx(32 / 200)
    # half a mask pixel counts in proportion: x 56..72 covers mask columns 3.5..4.5
    assert tissue.fraction(56, 2 * 16, 16, 16, 0.5) == pytest.approx(0.5)
    # at 1 um/px one mask pixel is 8 level-0 pixels
    assert tissue.fraction(4 * 8, 2 * 8, 8 * 8, 4 * 8, 1.0) == 1.0
    # outside the mask is background
    assert tissue.fraction(10_000, 10_000, 64, 64, 0.5) == 0.0
    assert tissue.fraction(-32, 2 * 16, 64, 16, 0.5) == 0.0
    assert tissue.tissue_fraction == pytest.approx(32 / 200)


def test_fractions_vectorised_equals_scalar():
    tissue = _hand_mask()
    rng = np.random.default_rng(0)
    boxes = np.column_stack([rng.integers(-50, 330, 200), rng.integers(-50, 170, 200), rng.integers(1, 120, 200), rng.integers(1, 120, 200)])
    got = tissue.fractions(boxes, 0.5)
    assert got.shape == (200,)
    assert (got > 0).any() and (got < 1).any()
    for box, value in zip(boxes[:40], got[:40]):
        assert tissue.fraction(*box, 0.5) == pytest.approx(value)
        # brute force over the mask pixels the box covers
        x0, y0, w, h = box / 16.0
        xs = np.clip([x0, x0 + w], 0, 20)
        ys = np.clip([y0, y0 + h], 0, 10)
        covered = 0.0
        for r in range(10):
            for c in range(20):
                ox = max(0.0, min(xs[1], c + 1) - max(xs[0], c))
                oy = max(0.0, min(ys[1], r + 1) - max(ys[0], r))
                covered += ox * oy * tissue.mask[r, c]
        assert value == pytest.approx(covered / (w * h))
    with pytest.raises(InputError):
        tissue.fractions(np.zeros((3, 3)), 0.5)


def test_detect_tissue_on_a_generated_slide(tmp_path, real_dir):
    tile = np.asarray(Image.open(real_dir / "tiles" / "histoqc_template3.png").convert("RGB"))
    slide_rgb = np.full((1600, 2400, 3), 240, np.uint8)
    slide_rgb[400:900, 600:1100] = tile  # 250 um square of tissue at 0.5 um/px
    path = tmp_path / "slide.tif"
    tifffile.imwrite(path, slide_rgb, tile=(256, 256), compression="zlib", resolution=(2e4, 2e4), resolutionunit="CENTIMETER", metadata=None)
    slide = open_slide(path)
    tissue = detect_tissue(slide, mpp=8.0)
    assert tissue.mpp == 8.0 and tissue.mask.shape == (100, 150)
    assert tissue.fraction(650, 650, 200, 200, slide.mpp) == 1.0
    assert tissue.fraction(1500, 100, 512, 512, slide.mpp) == 0.0
    boxes = np.array([[600, 400, 500, 500], [0, 0, 500, 300]])
    np.testing.assert_allclose(tissue.fractions(boxes, slide.mpp), [1.0, 0.0], atol=0.05)
