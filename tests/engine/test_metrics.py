import json
import math

import numpy as np
import pytest
import torch

from wsi_seg.engine.metrics import ConfusionMatrix


def _example():
    # true: 0 0 1 1 2 2 ; pred: 0 1 1 1 2 0
    target = np.array([[0, 0, 1], [1, 2, 2]])
    pred = np.array([[0, 1, 1], [1, 2, 0]])
    return pred, target


def test_matrix_counts_true_rows_pred_columns():
    cm = ConfusionMatrix(3)
    cm.update(*_example())
    expected = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    np.testing.assert_array_equal(cm.matrix, expected)
    assert cm.matrix.dtype == np.int64


def test_iou_dice_accuracy_hand_computed():
    cm = ConfusionMatrix(3)
    cm.update(*_example())
    # class 0: tp1, fp1 (row2), fn1 -> 1/3 ; class 1: tp2, fp1, fn0 -> 2/3 ; class 2: tp1 fp0 fn1 -> 1/2
    np.testing.assert_allclose(cm.iou(), [1 / 3, 2 / 3, 1 / 2])
    assert cm.miou() == pytest.approx((1 / 3 + 2 / 3 + 1 / 2) / 3)
    np.testing.assert_allclose(cm.dice(), [2 / 4, 4 / 5, 2 / 3])
    assert cm.pixel_accuracy() == pytest.approx(4 / 6)


def test_ignore_index_skipped_and_absent_class_is_nan():
    cm = ConfusionMatrix(4, ignore_index=255)
    target = torch.tensor([0, 255, 1, 1, 255])
    pred = torch.tensor([0, 3, 1, 0, 2])  # predictions at ignored pixels do not count
    cm.update(pred, target)
    assert cm.total == 3
    iou = cm.iou()
    assert iou[0] == pytest.approx(1 / 2) and iou[1] == pytest.approx(1 / 2)
    assert math.isnan(iou[2]) and math.isnan(iou[3])
    assert cm.miou() == pytest.approx(0.5)


def test_values_out_of_range_raise_naming_the_value():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="7"):
        cm.update(np.array([0, 7]), np.array([0, 1]))
    with pytest.raises(ValueError, match="-1"):
        cm.update(np.array([0, 1]), np.array([-1, 1]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros(3), np.zeros(4))
    assert cm.total == 0  # nothing was half-added


def test_ignore_index_none_makes_255_an_error():
    cm = ConfusionMatrix(3, ignore_index=None)
    with pytest.raises(ValueError, match="255"):
        cm.update(np.array([0]), np.array([255]))


def test_merge_equals_single_update():
    pred, target = _example()
    a, b, whole = ConfusionMatrix(3), ConfusionMatrix(3), ConfusionMatrix(3)
    a.update(pred[0], target[0])
    b.update(pred[1], target[1])
    a.merge(b)
    whole.update(pred, target)
    np.testing.assert_array_equal(a.matrix, whole.matrix)
    with pytest.raises(ValueError):
        a.merge(ConfusionMatrix(4))


def test_as_dict_is_json_ready_with_none_for_nan():
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1]), np.array([0, 1]))
    d = cm.as_dict(["bg", "a", "b"])
    json.dumps(d)  # must be serialisable
    assert d["iou"] == {"bg": 1.0, "a": 1.0, "b": None}
    assert d["miou"] == 1.0 and d["pixel_accuracy"] == 1.0
    assert d["support"]["b"] == 0
    with pytest.raises(ValueError):
        cm.as_dict(["only", "two"])


def test_empty_matrix_metrics_are_nan():
    cm = ConfusionMatrix(2)
    assert math.isnan(cm.miou()) and math.isnan(cm.pixel_accuracy())
    assert cm.as_dict()["miou"] is None
