"""`wsi-seg evaluate-dataset`: class-wise and category-wise mIoU on tiny official-layout datasets.

The checkpoints predict one class everywhere (their classifier weights are zero,
so every logit ties and the argmax is class 0), which makes every metric
computable by hand from the fake labels.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml
from click.testing import CliRunner

from wsi_seg.cli import main
from wsi_seg.models import create_model
from wsi_seg.models.checkpoint import default_colors, make_checkpoint, save_checkpoint
from wsi_seg.models.pretrained import CITYSCAPES_CLASSES, VOC_CLASS_NAMES

CITY_NAMES = [n for n, _ in CITYSCAPES_CLASSES]


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _constant_checkpoint(path, num_classes, names):
    model = create_model("espnet_c", num_classes, alpha2=1, alpha3=1)
    state = model.state_dict()
    state["classifier.weight"].zero_()
    ckpt = make_checkpoint("espnet_c", num_classes, {"alpha2": 1, "alpha3": 1}, state, class_names=names,
                           class_colors=default_colors(num_classes))
    return save_checkpoint(ckpt, path)


def _config(path, kind, names, size):
    path.write_text(yaml.safe_dump({"model": {"name": "espnet_c"}, "classes": [{"name": n} for n in names],
                                    "data": {"kind": kind, "size": size}}))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate_dataset")
    return {
        "city20": _constant_checkpoint(root / "city20.pt", 20, CITY_NAMES),
        "city19": _constant_checkpoint(root / "city19.pt", 19, CITY_NAMES[:19]),
        "voc": _constant_checkpoint(root / "voc.pt", 21, list(VOC_CLASS_NAMES)),
        "city_config": _config(root / "city.yaml", "cityscapes", CITY_NAMES, [64, 32]),
        "voc_config": _config(root / "voc.yaml", "voc", list(VOC_CLASS_NAMES), [64, 64]),
    }


def test_cityscapes_class_and_category_miou(files, cityscapes_root, tmp_path):
    out = tmp_path / "m.json"
    result = _run("evaluate-dataset", "--config", files["city_config"], "--data", cityscapes_root,
                  "--model", files["city20"], "--split", "val", "--json", out, "--no-progress")
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    # per val image (64x128): void 8x128 and parking 24x8 ignored -> 6976 pixels; road 2496
    valid, road = 6976, 24 * 120 - 12 * 32
    assert metrics["images"] == 2 and metrics["resize"] == [64, 32]
    assert sum(metrics["support"].values()) == 2 * valid
    assert metrics["class_names"] == CITY_NAMES[:19]             # background is not evaluated
    assert metrics["iou"]["road"] == pytest.approx(road / valid)
    for name in ("building", "vegetation", "sky", "car"):
        assert metrics["iou"][name] == 0.0
    assert metrics["iou"]["bus"] is None
    assert metrics["miou"] == pytest.approx(road / valid / 5)
    assert metrics["category_iou"]["flat"] == pytest.approx(road / valid)
    assert metrics["category_iou"]["construction"] == 0.0 and metrics["category_iou"]["human"] is None
    assert metrics["category_miou"] == pytest.approx(road / valid / 5)
    table = result.stdout
    assert "cityscapes val: 2 image(s) at 64x32" in table
    assert re.search(rf"mIoU \(class\) +{100 * road / valid / 5:.2f}\n", table)
    assert "mIoU (category)" in table and "vehicle" in table


def test_voc_miou_and_native_size(files, voc_root, tmp_path):
    out = tmp_path / "v.json"
    result = _run("evaluate-dataset", "--config", files["voc_config"], "--data", voc_root, "--model", files["voc"],
                  "--resize", "native", "--json", out, "--no-progress")
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    person, border = 28 * 28, 32 * 32 - 28 * 28
    valid = (96 * 64 - border) + (80 * 72 - border)             # val: image 0 (96x64), image 1 (80x72, with a dog)
    background = valid - 2 * person - 16 * 24
    assert metrics["resize"] is None and "category_iou" not in metrics
    assert metrics["iou"]["background"] == pytest.approx(background / valid)
    assert metrics["iou"]["person"] == 0.0 and metrics["iou"]["dog"] == 0.0 and metrics["iou"]["cat"] is None
    assert metrics["miou"] == pytest.approx(background / valid / 3)


def _one_line(result):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wsi-seg: error: "), result.stderr
    return lines[0]


def test_a_checkpoint_with_another_class_count_is_refused(files, cityscapes_root):
    line = _one_line(_run("evaluate-dataset", "--config", files["city_config"], "--data", cityscapes_root,
                          "--model", files["city19"]))
    assert "has 19 classes" in line and "has 20" in line
    line = _one_line(_run("evaluate-dataset", "--config", files["voc_config"], "--data", cityscapes_root,
                          "--model", files["voc"]))
    assert "no JPEGImages" in line


def test_a_missing_split_or_label_is_one_line_naming_it(files, cityscapes_root, voc_root, tmp_path):
    line = _one_line(_run("evaluate-dataset", "--config", files["city_config"], "--data", cityscapes_root,
                          "--model", files["city20"], "--split", "extra"))
    assert "leftImg8bit/extra" in line
    import shutil

    root = tmp_path / "VOC2012"
    shutil.copytree(voc_root, root)
    (root / "JPEGImages" / "2009_000001.jpg").unlink()
    line = _one_line(_run("evaluate-dataset", "--config", files["voc_config"], "--data", root, "--model",
                          files["voc"]))
    assert "2009_000001.jpg: image file not found" in line
