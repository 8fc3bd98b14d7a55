"""Synthetic biopsies: real files, opened with OpenSlide and tifffile."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
import tifffile

from wsi_seg.errors import InputError
from wsi_seg.io.tiff import read_label_tiff
from wsi_seg.synth import BIOPSY_CLASSES, synthesize, synthesize_slide


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    return synthesize_slide(out, "s", width=2048, height=1536, mpp=0.5, seed=1)


def test_classes_are_eight_named_colours():
    assert len(BIOPSY_CLASSES) == 8
    assert BIOPSY_CLASSES[0][0] == "background" and BIOPSY_CLASSES[7][0] == "necrosis"
    colours = [c for _, c in BIOPSY_CLASSES]
    assert len(set(colours)) == 8


def test_slide_is_aperio_with_mpp(small_slide):
    svs, mask = small_slide
    assert svs.name == "s.svs" and mask.name == "s.mask.tif"
    slide = openslide.OpenSlide(svs)
    assert slide.properties["openslide.vendor"] == "aperio"
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(0.5)
    assert slide.dimensions == (2048, 1536)
    assert len(slide.level_dimensions) >= 2
    assert {"thumbnail", "label", "macro"} <= set(slide.associated_images)


def test_mask_is_pyramidal_palette_with_all_classes(small_slide):
    svs, mask = small_slide
    labels = read_label_tiff(mask)
    assert labels.shape == (1536, 2048) and labels.dtype == np.uint8
    counts = np.bincount(labels.ravel(), minlength=8)
    assert counts.size == 8, "labels outside the 8 classes"
    assert (counts > 0).all(), f"missing classes: {np.flatnonzero(counts == 0)}"
    m = openslide.OpenSlide(mask)
    assert m.level_dimensions[0] == (2048, 1536) and len(m.level_dimensions) >= 3
    assert float(m.properties["openslide.mpp-x"]) == pytest.approx(0.5)
    with tifffile.TiffFile(mask) as tif:
        cmap = tif.pages[0].colormap
        assert cmap[:, 2].tolist() == [c * 257 for c in BIOPSY_CLASSES[2][1]]


def test_pixels_follow_the_mask(small_slide):
    svs, mask = small_slide
    labels = read_label_tiff(mask)
    rgb = np.asarray(openslide.OpenSlide(svs).read_region((0, 0), 0, (2048, 1536)).convert("RGB")).astype(float)
    glass = rgb[labels == 0].mean(axis=0)
    assert glass.min() > 225, "glass should be near white"
    tissue = rgb[labels == 3].mean(axis=0)
    assert tissue[1] < glass[1] - 40, "stroma should be stained (pink: low green)"
    # epithelium is dominated by nuclei: bluer (lower red) than stroma
    assert rgb[labels == 2][:, 0].mean() < tissue[0] - 10
    # blood is red: red channel well above green and blue
    blood = rgb[labels == 6].mean(axis=0)
    assert blood[0] > blood[1] + 40
    # benign and malignant epithelium overlap in mean colour (texture must separate them)
    benign, malignant = rgb[labels == 1].mean(axis=0), rgb[labels == 2].mean(axis=0)
    assert np.abs(benign - malignant).max() < 40


def test_nuclei_and_red_cells_lie_in_their_class():
    """Objects are drawn for a class and must land on pixels the mask gives that class
    (the label map is displaced for organic boundaries; the objects move with it)."""
    from wsi_seg.synth import _Renderer

    renderer = _Renderer(2048, 1536, 0.5, seed=1, pen=False)
    labels = np.concatenate([renderer.labels(y0, y1) for y0, y1 in renderer.band_rows()], 0)
    objects = renderer.objects
    assert len(objects) > 1000
    ys = objects[:, 0].astype(int).clip(0, labels.shape[0] - 1)
    xs = objects[:, 1].astype(int).clip(0, labels.shape[1] - 1)
    on_class = labels[ys, xs] == objects[:, 8].astype(np.uint8)
    assert on_class.all(), f"{(~on_class).sum()} of {len(objects)} objects lie on another class"
    for cls in (1, 2, 6):  # benign and malignant nuclei, red cells: all present
        assert (objects[:, 8] == cls).sum() > 50


def test_same_seed_same_output(tmp_path, small_slide):
    svs, mask = small_slide
    svs2, mask2 = synthesize_slide(tmp_path, "s", width=2048, height=1536, mpp=0.5, seed=1)
    assert mask2.read_bytes() == mask.read_bytes()
    a = openslide.OpenSlide(svs).read_region((512, 512), 0, (512, 512))
    b = openslide.OpenSlide(svs2).read_region((512, 512), 0, (512, 512))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    other = synthesize_slide(tmp_path, "t", width=2048, height=1536, mpp=0.5, seed=2)[1]
    assert other.read_bytes() != mask.read_bytes()


def test_pen_strokes_are_background(tmp_path):
    svs, mask = synthesize_slide(tmp_path, "p", width=1024, height=1024, mpp=1.0, seed=4, pen=True)
    plain_svs, plain_mask = synthesize_slide(tmp_path, "q", width=1024, height=1024, mpp=1.0, seed=4)
    with_pen, without = read_label_tiff(mask), read_label_tiff(plain_mask)
    assert (with_pen[without == 0] == 0).all()
    assert (with_pen == 0).sum() > (without == 0).sum(), "the stroke over the tissue edge is background"
    a = np.asarray(openslide.OpenSlide(svs).read_region((0, 0), 0, (1024, 1024)).convert("RGB")).astype(int)
    b = np.asarray(openslide.OpenSlide(plain_svs).read_region((0, 0), 0, (1024, 1024)).convert("RGB")).astype(int)
    inked = np.abs(a - b).sum(axis=2) > 60
    assert inked[without == 0].sum() > 500, "ink on the glass"
    assert inked.sum() > 2000


def test_existing_outputs_are_kept_unless_overwrite(tmp_path):
    svs, mask = synthesize_slide(tmp_path, "k", width=512, height=512, seed=0)
    mask.write_bytes(b"sentinel")
    synthesize_slide(tmp_path, "k", width=512, height=512, seed=0)
    assert mask.read_bytes() == b"sentinel"
    synthesize_slide(tmp_path, "k", width=512, height=512, seed=0, overwrite=True)
    assert read_label_tiff(mask).shape == (512, 512)


def test_synthesize_names_and_distinct_slides(tmp_path):
    pairs = synthesize(tmp_path, n=2, width=512, height=384, mpp=1.0, seed=5)
    assert [(s.name, m.name) for s, m in pairs] == [
        ("synth_000.svs", "synth_000.mask.tif"), ("synth_001.svs", "synth_001.mask.tif")]
    assert pairs[0][1].read_bytes() != pairs[1][1].read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "synth_000.mask.tif", "synth_000.svs", "synth_001.mask.tif", "synth_001.svs"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(width=100), "at least 256"),
    (dict(mpp=0.0), "mpp"),
    (dict(mpp=float("nan")), "mpp"),
])
def test_bad_values_raise_input_error(tmp_path, kwargs, message):
    args = dict(width=512, height=512, mpp=0.5)
    args.update(kwargs)
    with pytest.raises(InputError, match=message):
        synthesize_slide(tmp_path, "x", **args)
    assert list(tmp_path.iterdir()) == []
