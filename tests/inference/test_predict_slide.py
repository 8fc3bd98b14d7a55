"""Whole-slide prediction through the real pipeline: OpenSlide in, pyramidal TIFF out."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
import tifffile
import zarr

from wsi_seg.errors import BatchError, MissingMppError
from wsi_seg.inference.predictor import TorchPredictor
from wsi_seg.inference.slide import PredictOptions, predict_slide, predict_slides
from wsi_seg.io.slide import Slide
from wsi_seg.synth import BIOPSY_CLASSES
from wsi_seg.tissue import detect_tissue

FAST = dict(tile=256, overlap=64, progress=False, batch_size=4)


@pytest.fixture(scope="module")
def predictor(random_checkpoint):
    return TorchPredictor.from_checkpoint(random_checkpoint)


def test_mask_is_a_pyramidal_palette_tiff_at_level0_size(small_slide, predictor, tmp_path):
    svs, _ = small_slide
    out = tmp_path / "m.mask.tif"
    res = predict_slide(svs, out, predictor, PredictOptions(**{**FAST, "tile": 128, "overlap": 32}))
    assert res.size == (2048, 1536) and res.model_mpp == 2.0
    assert 0 < res.tiles_run < res.tiles_total  # glass-only tiles are never run
    osl = openslide.OpenSlide(out)
    assert osl.dimensions == (2048, 1536)
    assert osl.level_count >= 3
    assert [round(d) for d in osl.level_downsamples[:3]] == [1, 2, 4]
    assert float(osl.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(0.5, rel=1e-3)
    with tifffile.TiffFile(out) as tif:
        page = tif.pages[0]
        assert page.photometric == tifffile.PHOTOMETRIC.PALETTE and page.is_tiled
        cmap = page.colormap
        for i, (_, rgb) in enumerate(BIOPSY_CLASSES):
            assert tuple(int(v) >> 8 for v in cmap[:, i]) == rgb
        labels = page.asarray()
    assert labels.max() < len(BIOPSY_CLASSES)
    assert res.class_pixels == np.bincount(labels.ravel(), minlength=8).tolist()
    # non-tissue is background: every pixel outside the tissue map is 0
    tissue = detect_tissue(Slide(svs))
    rows = np.minimum(((np.arange(1536) + 0.5) * 0.5 / tissue.mpp).astype(int), tissue.mask.shape[0] - 1)
    cols = np.minimum(((np.arange(2048) + 0.5) * 0.5 / tissue.mpp).astype(int), tissue.mask.shape[1] - 1)
    outside = ~tissue.mask[rows][:, cols]
    assert outside.any() and (labels[outside] == 0).all()
    assert (labels[~outside] != 0).any()


def test_mask_mpp_and_probabilities(small_slide, predictor, tmp_path):
    svs, _ = small_slide
    out, probs_path = tmp_path / "m.tif", tmp_path / "p.zarr"
    res = predict_slide(svs, out, predictor, PredictOptions(**FAST, mask_mpp=2.0, probabilities=probs_path))
    assert res.size == (512, 384)
    labels = tifffile.imread(out)
    assert labels.shape == (384, 512)
    osl = openslide.OpenSlide(out)
    assert float(osl.properties[openslide.PROPERTY_NAME_MPP_X]) == pytest.approx(2.0, rel=1e-3)
    probs = zarr.open_group(str(probs_path), mode="r")["probabilities"][...]
    assert probs.shape == (8, 384, 512) and probs.dtype == np.float16
    covered = probs.sum(0) > 0
    assert np.allclose(probs.sum(0)[covered], 1, atol=5e-3)
    # the mask is the argmax of the kept probabilities wherever the mask is not background
    fg = labels > 0
    assert (probs.argmax(0)[fg] == labels[fg]).mean() > 0.99
    assert not list(tmp_path.glob(".*"))  # no temporary folders left


def test_output_is_deterministic_and_band_size_independent(small_slide, predictor, tmp_path):
    svs, _ = small_slide
    a, b = tmp_path / "a.tif", tmp_path / "b.tif"
    predict_slide(svs, a, predictor, PredictOptions(**FAST))
    predict_slide(svs, b, predictor, PredictOptions(**{**FAST, "batch_size": 3}))
    assert np.array_equal(tifffile.imread(a), tifffile.imread(b))


def test_a_failure_midway_leaves_nothing_at_the_final_path(small_slide, predictor, tmp_path):
    svs, _ = small_slide
    calls = {"n": 0}

    class Exploding:
        meta, num_classes, input_multiple = predictor.meta, predictor.num_classes, predictor.input_multiple

        def __call__(self, tiles):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("device lost")
            return predictor(tiles)

    out = tmp_path / "m.mask.tif"
    with pytest.raises(RuntimeError, match="device lost"):
        predict_slide(svs, out, Exploding(), PredictOptions(**{**FAST, "batch_size": 1}))
    assert list(tmp_path.iterdir()) == []


def test_batch_goes_on_past_a_bad_slide_and_skips_finished_ones(small_slide, predictor, tmp_path):
    svs, _ = small_slide
    bad = tmp_path / "broken.svs"
    bad.write_bytes(svs.read_bytes()[: 200_000])
    out_dir = tmp_path / "masks"
    out_dir.mkdir()
    with pytest.raises(BatchError) as info:
        predict_slides([bad, svs], out_dir, predictor, PredictOptions(**FAST), report=lambda m: None)
    assert info.value.failures[0][0] == str(bad)
    assert sorted(p.name for p in out_dir.iterdir()) == ["biopsy.mask.tif"]
    before = (out_dir / "biopsy.mask.tif").stat().st_mtime_ns
    messages = []
    assert predict_slides([svs], out_dir, predictor, PredictOptions(**FAST), report=messages.append) == []
    assert "skip" in messages[0] and (out_dir / "biopsy.mask.tif").stat().st_mtime_ns == before


def test_slide_without_mpp_names_the_option(real_dir, predictor, tmp_path):
    tcga = real_dir / "wsi/tcga-cr-7395-01a-01-ts1.svs"
    with pytest.raises(MissingMppError, match="--slide-mpp"):
        predict_slide(tcga, tmp_path / "t.tif", predictor, PredictOptions(**FAST))
    assert not (tmp_path / "t.tif").exists()
    res = predict_slide(tcga, tmp_path / "t.tif", predictor, PredictOptions(**FAST, slide_mpp=0.5, mask_mpp=4.0))
    assert res.size == Slide(tcga, mpp=0.5).size_at(4.0)
    assert openslide.OpenSlide(tmp_path / "t.tif").dimensions == res.size


def test_two_slides_with_one_stem_are_refused_before_any_work(small_slide, predictor, tmp_path):
    import shutil

    from wsi_seg.errors import InputError

    svs, _ = small_slide
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = shutil.copy(svs, tmp_path / "a" / "x.svs"), shutil.copy(svs, tmp_path / "b" / "x.svs")
    out_dir = tmp_path / "masks"
    out_dir.mkdir()
    with pytest.raises(InputError, match="would both be written to .*x.mask.tif"):
        predict_slides([first, second], out_dir, predictor, PredictOptions(**FAST), report=lambda m: None)
    assert list(out_dir.iterdir()) == []
