"""Mask-vs-truth evaluation, streamed in bands."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from wsi_seg.errors import InputError
from wsi_seg.evaluation import evaluate_masks, format_table
from wsi_seg.io.tiff import write_pyramidal_tiff

NAMES = ["background", "a", "b", "c"]


def _write(path, labels):
    write_pyramidal_tiff(path, width=labels.shape[1], height=labels.shape[0], bands=[labels],
                         band_height=labels.shape[0], mpp=0.5, colormap=[(0, 0, 0), (255, 0, 0), (0, 255, 0),
                                                                         (0, 0, 255)])
    return path


@pytest.fixture()
def truth(tmp_path):
    labels = np.zeros((1200, 1600), np.uint8)
    labels[100:700, 200:900] = 1
    labels[800:1100, 1000:1500] = 2
    labels[300:500, 1200:1400] = 3
    return _write(tmp_path / "truth.tif", labels), labels


def test_perfect_prediction(truth):
    path, _ = truth
    result = evaluate_masks(path, path, NAMES)
    assert result.confusion.miou() == 1.0 and result.confusion.pixel_accuracy() == 1.0
    assert "mIoU" in format_table(result)


def test_known_errors_give_known_iou(truth, tmp_path):
    path, labels = truth
    pred = labels.copy()
    pred[100:400, 200:900] = 0  # half of class 1 missed
    result = evaluate_masks(_write(tmp_path / "pred.tif", pred), path, NAMES)
    iou = result.confusion.iou()
    assert iou[1] == pytest.approx(0.5)
    assert iou[2] == iou[3] == 1.0
    bg = (labels == 0).sum()
    assert iou[0] == pytest.approx(bg / (bg + 300 * 700))


def test_prediction_at_a_coarser_resolution(truth, tmp_path):
    path, labels = truth
    coarse = labels[::4, ::4]  # nearest, 4x coarser; all boundaries are multiples of 4
    result = evaluate_masks(_write(tmp_path / "coarse.tif", coarse), path, NAMES)
    assert result.scale == (0.25, 0.25)
    assert result.confusion.miou() == 1.0
    png = tmp_path / "coarse.png"
    Image.fromarray(coarse).save(png)
    assert evaluate_masks(png, path, NAMES).confusion.miou() == 1.0


def test_bad_inputs(truth, tmp_path):
    path, labels = truth
    with pytest.raises(InputError, match="aspect ratios differ"):
        evaluate_masks(_write(tmp_path / "wide.tif", np.zeros((300, 800), np.uint8)), path, NAMES)
    beyond = labels.copy()
    beyond[0, 0] = 9
    with pytest.raises(InputError, match="label value 9 is beyond the 4 classes"):
        evaluate_masks(_write(tmp_path / "beyond.tif", beyond), path, NAMES)
    with pytest.raises(InputError, match="no such file"):
        evaluate_masks(tmp_path / "missing.tif", path, NAMES)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(rgb)
    with pytest.raises(InputError, match="not a label mask"):
        evaluate_masks(rgb, path, NAMES)
