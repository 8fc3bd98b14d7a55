"""Cityscapes: label ids -> train ids, the official layout, categories, training through the CLI."""

from __future__ import annotations

import pickle
import shutil

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from fake_datasets import city_label_ids

from wsi_seg.cli import main
from wsi_seg.data.cityscapes import (CATEGORIES, CityscapesLabels, category_iou, category_matrix, cityscapes_pairs,
                                     label_lookup)
from wsi_seg.data.image_pairs import ImagePairDataset, open_pairs, pairs_histogram
from wsi_seg.errors import InputError
from wsi_seg.models.checkpoint import IMAGENET_NORMALIZATION, read_checkpoint
from wsi_seg.models.pretrained import CITYSCAPES_CLASSES


def test_label_ids_map_to_the_official_train_ids():
    table = label_lookup(19)
    expected = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
                26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    for label_id in range(256):
        assert table[label_id] == expected.get(label_id, 255), label_id
    # the authors' 20-class variant: every unmapped id becomes 19 (background)
    table20 = label_lookup(20)
    for label_id in range(256):
        assert table20[label_id] == expected.get(label_id, 19), label_id


def test_the_mapping_inverts_the_authors_train_id_to_label_id_table():
    # ARCHITECTURE.md 1.9: VisualizeResults --cityFormat maps train id -> label id
    city_format = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]
    assert [int(label_lookup(19)[i]) for i in city_format] == list(range(19))


def test_pairs_follow_the_official_layout(cityscapes_root):
    pairs = cityscapes_pairs(cityscapes_root, "train")
    assert [p[0].name for p in pairs] == ["aachen_000000_000019_leftImg8bit.png",
                                          "aachen_000001_000019_leftImg8bit.png",
                                          "bochum_000000_000019_leftImg8bit.png"]
    assert all(label.name.endswith("_gtFine_labelIds.png") and label.parent.name == image.parent.name
               for image, label in pairs)
    assert len(cityscapes_pairs(cityscapes_root, "val")) == 2


def test_labels_read_as_train_ids_with_void_ignored_or_background(cityscapes_root):
    _, label_path = cityscapes_pairs(cityscapes_root, "train")[0]
    labels = CityscapesLabels(19)(label_path)
    assert labels[0, 0] == 10 and labels[20, 0] == 2 and labels[20, 100] == 8 and labels[50, 5] == 0
    assert labels[40, 20] == 13
    assert labels[40, 125] == 255 and labels[60, 3] == 255          # parking and ego vehicle: ignored
    with_background = CityscapesLabels(20)(label_path)
    assert with_background[40, 125] == 19 and with_background[60, 3] == 19
    assert (with_background[labels != 255] == labels[labels != 255]).all()


def test_histogram_skips_ignored_pixels(cityscapes_root):
    pairs = open_pairs("cityscapes", cityscapes_root, "train", 19)
    counts = pairs_histogram(pairs, 19)
    ids = city_label_ids()
    per_image = {10: 16 * 128, 2: 16 * 64, 8: 16 * 64, 13: 12 * 32, 0: 24 * 120 - 12 * 32}
    for train_id, count in per_image.items():
        assert counts[train_id] == 3 * count, train_id
    assert counts.sum() == 3 * int(((ids != 9) & (ids != 1)).sum())
    counts20 = pairs_histogram(open_pairs("cityscapes", cityscapes_root, "train", 20), 20)
    assert counts20[19] == 3 * int(((ids == 9) | (ids == 1)).sum())


def test_dataset_resizes_image_bilinear_and_label_nearest(cityscapes_root):
    pairs = open_pairs("cityscapes", cityscapes_root, "val", 19)
    ds = ImagePairDataset(pairs, normalization=IMAGENET_NORMALIZATION, size=(64, 32))
    image, label = ds[0]
    assert image.shape == (3, 32, 64) and image.dtype == torch.float32
    assert label.shape == (32, 64) and label.dtype == torch.int64
    assert set(label.unique().tolist()) <= {0, 2, 8, 10, 13, 255}
    assert label[0, 0] == 10 and label[31, 0] == 255
    copy = pickle.loads(pickle.dumps(ds))  # DataLoader workers receive the dataset pickled
    assert torch.equal(copy[1][1], ds[1][1]) and not torch.equal(ds[0][1], ds[1][1])


def test_a_missing_split_or_label_names_the_first_missing_file(cityscapes_root, tmp_path):
    with pytest.raises(InputError, match="leftImg8bit/test2"):
        cityscapes_pairs(cityscapes_root, "test2")
    root = tmp_path / "city"
    shutil.copytree(cityscapes_root, root)
    missing = root / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png"
    missing.unlink()
    (root / "gtFine/train/bochum/bochum_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(InputError) as info:
        cityscapes_pairs(root, "train")
    assert str(missing) in str(info.value) and "bochum" not in str(info.value).split("(for")[0]


def test_category_matrix_sums_classes_into_categories():
    m = np.zeros((20, 20), np.int64)
    m[0, 1] = 5      # road as sidewalk: both flat
    m[13, 14] = 7    # car as truck: both vehicle
    m[11, 13] = 3    # person as car: human -> vehicle
    cm = category_matrix(m)
    names = [n for n, _ in CATEGORIES]
    assert cm[names.index("flat"), names.index("flat")] == 5
    assert cm[names.index("vehicle"), names.index("vehicle")] == 7
    assert cm[names.index("human"), names.index("vehicle")] == 3
    assert cm.sum() == 15


def test_category_iou_on_a_known_confusion_matrix():
    m = np.zeros((20, 20), np.int64)
    m[0, 0], m[0, 1], m[1, 1] = 50, 10, 40     # flat: all 100 pixels inside the category
    m[2, 2], m[2, 8] = 30, 10                  # building, 10 predicted vegetation
    m[8, 8], m[9, 2] = 20, 10                  # nature: 20 right, terrain 10 predicted building
    m[10, 10], m[10, 19] = 10, 10              # sky: 10 predicted background (a miss)
    m[19, 10] = 99                             # truth background: not counted against sky
    iou = category_iou(m)
    assert iou["flat"] == pytest.approx(1.0)
    assert iou["construction"] == pytest.approx(30 / (30 + 10 + 10))   # tp 30, fn 10, fp 10
    assert iou["nature"] == pytest.approx(20 / (20 + 10 + 10))         # tp 20, fn 10, fp 10
    assert iou["sky"] == pytest.approx(10 / 20)
    assert iou["object"] is None and iou["human"] is None and iou["vehicle"] is None
    assert list(iou) == ["flat", "construction", "object", "nature", "sky", "human", "vehicle"]


def _config(tmp_path, root, num_classes=20, **data):
    classes = [{"name": n, "color": list(c)} for n, c in CITYSCAPES_CLASSES[:num_classes]]
    config = {"model": {"name": "espnet_c", "hparams": {"alpha2": 1, "alpha3": 1}}, "classes": classes,
              "data": {"kind": "cityscapes", "size": [128, 64], "crop": 64, "batch_size": 2, "workers": 0,
                       "normalization": "espnet-cityscapes", **data},
              "augment": {"vflip": False, "rot90": False, "stain_scale": 0.0, "stain_shift": 0.0},
              "stages": [{"epochs": 1}], "run": {"device": "cpu", "threads": 1},
              "output": {"dir": str(tmp_path / "run"), "tensorboard": False}}
    path = tmp_path / "city.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_training_steps_through_the_cli(cityscapes_root, tmp_path):
    result = CliRunner().invoke(main, ["train", "--config", str(_config(tmp_path, cityscapes_root)),
                                       "--data", str(cityscapes_root), "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    ckpt = read_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt["model"]["num_classes"] == 20 and ckpt["classes"]["names"][19] == "background"
    assert ckpt["normalization"]["channel_order"] == "BGR" and ckpt["mpp"] is None
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[0].startswith("stage,epoch,step")
    assert rows[1].split(",")[2] == "2"  # 3 training images, batch 2 -> 2 steps


def test_training_refuses_a_wrong_class_count_or_missing_root(cityscapes_root, tmp_path):
    config = _config(tmp_path, cityscapes_root, num_classes=18)
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--data", str(cityscapes_root)])
    assert result.exit_code == 2 and "needs 19 or 20 classes" in result.stderr
    result = CliRunner().invoke(main, ["train", "--config", str(_config(tmp_path, cityscapes_root))])
    assert result.exit_code == 2 and "data.root" in result.stderr
    result = CliRunner().invoke(main, ["train", "--config", str(_config(tmp_path, cityscapes_root, val_split="x")),
                                       "--data", str(cityscapes_root)])
    assert result.exit_code == 2 and "leftImg8bit/x" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
