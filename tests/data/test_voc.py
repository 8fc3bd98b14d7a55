"""PASCAL VOC: the official layout, palette labels with 255 borders, SBD, training through the CLI."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from fake_datasets import VOC_IDS, make_sbd, voc_label
from PIL import Image

from wsi_seg.cli import main
from wsi_seg.data.image_pairs import ImagePairDataset, open_pairs, pairs_histogram
from wsi_seg.data.voc import read_voc_label, voc_pairs, voc_root as find_voc_root
from wsi_seg.errors import InputError
from wsi_seg.models.checkpoint import IMAGENET_NORMALIZATION, default_colors, read_checkpoint
from wsi_seg.models.pretrained import VOC_CLASS_NAMES


def test_the_root_may_be_voc2012_or_a_folder_above_it(voc_root):
    assert find_voc_root(voc_root) == voc_root
    assert find_voc_root(voc_root.parent.parent) == voc_root      # the folder holding VOCdevkit
    assert find_voc_root(voc_root.parent) == voc_root             # VOCdevkit


def test_pairs_follow_the_split_lists(voc_root):
    pairs = voc_pairs(voc_root, "train")
    assert [p[0].stem for p in pairs] == VOC_IDS["train"]
    assert all(i.parent.name == "JPEGImages" and l.parent.name == "SegmentationClass" for i, l in pairs)


def test_palette_labels_read_as_class_ids_with_255_borders(voc_root):
    path = voc_root / "SegmentationClass" / f"{VOC_IDS['train'][1]}.png"
    assert Image.open(path).mode == "P"
    labels = read_voc_label(path)
    assert labels.shape == (72, 80)
    assert (labels == voc_label(1, (80, 72))).all()
    assert set(np.unique(labels).tolist()) == {0, 12, 15, 255}


def test_histogram_skips_the_borders(voc_root):
    counts = pairs_histogram(open_pairs("voc", voc_root, "train", 21), 21)
    sizes = [(96, 64), (80, 72), (96, 64)]
    expected = np.zeros(21, np.int64)
    for i, size in enumerate(sizes):
        expected += np.bincount(voc_label(i, size).reshape(-1), minlength=256)[:21]
    assert (counts == expected).all()
    assert counts[15] == 3 * 28 * 28 and counts[12] == 16 * 24


def test_dataset_items_have_the_fixed_size_and_ignore_index(voc_root):
    ds = ImagePairDataset(open_pairs("voc", voc_root, "val", 21), normalization=IMAGENET_NORMALIZATION,
                          size=(64, 64))
    image, label = ds[1]
    assert image.shape == (3, 64, 64) and label.shape == (64, 64)
    assert 255 in label.unique().tolist() and 15 in label.unique().tolist()


def test_a_missing_split_list_or_file_names_it(voc_root, tmp_path):
    with pytest.raises(InputError, match="ImageSets/Segmentation/test.txt"):
        voc_pairs(voc_root, "test")
    root = tmp_path / "VOC2012"
    shutil.copytree(voc_root, root)
    gone = root / "SegmentationClass" / f"{VOC_IDS['val'][0]}.png"
    gone.unlink()
    (root / "JPEGImages" / f"{VOC_IDS['val'][1]}.jpg").unlink()
    with pytest.raises(InputError) as info:
        voc_pairs(root, "val")
    assert str(info.value).startswith(f"{gone}: label file not found")
    with pytest.raises(InputError, match="no JPEGImages"):
        find_voc_root(tmp_path / "VOC2012" / "ImageSets")


def test_sbd_adds_training_images_not_in_voc_val(voc_root, tmp_path):
    sbd = make_sbd(tmp_path / "sbd")
    pairs = voc_pairs(voc_root, "train", sbd_root=sbd)
    names = [image.stem for image, _ in pairs]
    assert names == VOC_IDS["train"] + ["2010_000001", "2010_000002"]  # not 2007_000033 (VOC val), no repeat
    assert pairs[0][1].suffix == ".png" and pairs[-1][1].suffix == ".mat"
    assert (read_voc_label(pairs[-1][1]) == voc_label(4, (96, 64))).all()
    assert len(voc_pairs(voc_root, "val", sbd_root=sbd)) == 2


def _config(tmp_path, **changes):
    classes = [{"name": n, "color": c} for n, c in zip(VOC_CLASS_NAMES, default_colors(21))]
    config = {"model": {"name": "espnet_c", "hparams": {"alpha2": 1, "alpha3": 1}}, "classes": classes,
              "data": {"kind": "voc", "size": [64, 64], "crop": 48, "batch_size": 2, "workers": 0},
              "augment": {"vflip": False, "rot90": False, "stain_scale": 0.0, "stain_shift": 0.0},
              "stages": [{"epochs": 1}], "run": {"device": "cpu", "threads": 1},
              "output": {"dir": str(tmp_path / "run"), "tensorboard": False}}
    config.update(changes)
    path = tmp_path / "voc.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_training_steps_through_the_cli(voc_root, tmp_path):
    result = CliRunner().invoke(main, ["train", "--config", str(_config(tmp_path)), "--data", str(voc_root.parent),
                                       "--quiet"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    ckpt = read_checkpoint(tmp_path / "run" / "best.pt")
    assert ckpt["model"]["num_classes"] == 21 and ckpt["normalization"]["channel_order"] == "RGB"
    assert ckpt["classes"]["names"] == list(VOC_CLASS_NAMES)
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].split(",")[2] == "2"


def test_a_crop_the_model_cannot_take_is_refused(voc_root, tmp_path):
    config = _config(tmp_path, data={"kind": "voc", "root": str(voc_root), "size": [64, 64], "crop": 44})
    result = CliRunner().invoke(main, ["train", "--config", str(config)])
    assert result.exit_code == 2 and "data.crop: 44 px is not a multiple of 8" in result.stderr
