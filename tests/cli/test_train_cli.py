"""`wsi-seg train` from the command line: summary, run folder, one-line errors."""

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from wsi_seg.cli import main
from wsi_seg.io.store import PatchStore
from wsi_seg.models.checkpoint import read_checkpoint
from wsi_seg.synth import BIOPSY_CLASSES, synthesize_slide
from wsi_seg.tiling import tile_slides

CLASSES = [{"name": n, "color": list(c)} for n, c in BIOPSY_CLASSES]


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A labelled store (two synthetic slides, mpp 2.0, 128 px) and the same slides without labels."""
    root = tmp_path_factory.mktemp("train_cli")
    for i in range(2):
        synthesize_slide(root / "slides", f"s{i}", width=2048, height=1536, mpp=0.5, seed=30 + i)
    tile_slides([root / "slides"], root / "p.zarr", masks_dir=root / "slides", mpp=2.0, patch=128,
                min_tissue=0.2, progress=False, workers=1)
    tile_slides([root / "slides"], root / "nolabels.zarr", mpp=2.0, patch=128, min_tissue=0.2, progress=False,
                workers=1)
    PatchStore.create_or_open(root / "empty.zarr")
    return root


def _config(tmp_path, store, **changes):
    data = {"model": {"name": "espnet_c"}, "classes": CLASSES,
            "data": {"store": str(store), "val_fraction": 0.5, "crop": 64, "batch_size": 4, "workers": 0},
            "stages": [{"epochs": 1}], "run": {"device": "cpu", "threads": 1},
            "output": {"dir": str(tmp_path / "run"), "tensorboard": False}}
    data.update(changes)
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def _one_line_error(result, code=2):
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("wsi-seg: error: "), result.stderr
    return lines[0]


def test_train_writes_the_run_folder_and_refuses_to_overwrite(stores, tmp_path):
    config = _config(tmp_path, stores / "p.zarr")
    result = _run("train", "--config", config, "--quiet", "--seed", 4)
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    assert "stage1 (espnet_c) 1 epoch(s), best mIoU" in result.stdout and str(run / "best.pt") in result.stdout
    for name in ("last.pt", "best.pt", "metrics.csv", "config.yaml", "stage1/last.pt"):
        assert (run / name).is_file(), name
    assert yaml.safe_load((run / "config.yaml").read_text())["run"]["seed"] == 4
    assert not (run / "tensorboard").exists()
    before = (run / "last.pt").read_bytes()

    again = _run("train", "--config", config, "--quiet")
    assert "already holds a training run" in _one_line_error(again)
    assert (run / "last.pt").read_bytes() == before

    resumed = _run("train", "--resume", "--out", run, "--epochs", 2, "--no-progress")  # config from the run folder
    assert resumed.exit_code == 0, resumed.output
    assert "stage1 epoch 2/2" in resumed.output  # --no-progress keeps the log lines
    assert "batch/s" not in resumed.output  # and hides the bars
    assert read_checkpoint(run / "last.pt")["train_state"]["epoch"] == 2


def test_missing_store(stores, tmp_path):
    line = _one_line_error(_run("train", "--config", _config(tmp_path, stores / "p.zarr"), "--data",
                                tmp_path / "nope.zarr"))
    assert "nope.zarr: patch store not found" in line


def test_empty_store(stores, tmp_path):
    line = _one_line_error(_run("train", "--config", _config(tmp_path, stores / "empty.zarr")))
    assert "empty.zarr" in line and "no complete slide group" in line


def test_store_without_labels(stores, tmp_path):
    line = _one_line_error(_run("train", "--config", _config(tmp_path, stores / "nolabels.zarr")))
    assert "have no labels" in line


def test_unknown_key_and_wrong_type(stores, tmp_path):
    line = _one_line_error(_run("train", "--config", _config(tmp_path, stores / "p.zarr", optimiser={"lr": 1})))
    assert "train.yaml: optimiser: unknown key" in line
    bad = _config(tmp_path, stores / "p.zarr", optim={"lr": "fast"})
    assert "train.yaml: optim.lr: Input should be a valid number" in _one_line_error(_run("train", "--config", bad))


def test_class_count_mismatch(stores, tmp_path):
    config = _config(tmp_path, stores / "p.zarr", classes=CLASSES[:3])
    line = _one_line_error(_run("train", "--config", config))
    assert "config lists 3 classes" in line and "tiled with 8" in line


def test_unwritable_output(stores, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    line = _one_line_error(_run("train", "--config", _config(tmp_path, stores / "p.zarr"), "--out", blocker / "run"))
    assert "not writable" in line


def test_resume_without_checkpoint(stores, tmp_path):
    line = _one_line_error(_run("train", "--config", _config(tmp_path, stores / "p.zarr"), "--resume"))
    assert "--resume" in line and "last.pt not found" in line
    assert not (tmp_path / "run" / "last.pt").exists()


def test_missing_config_option(tmp_path):
    assert "--config: required" in _one_line_error(_run("train"))


def test_bad_init_checkpoint(stores, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    line = _one_line_error(_run("train", "--config", _config(tmp_path, stores / "p.zarr"), "--init", junk))
    assert "junk.pt" in line
    assert not (tmp_path / "run").exists() or not (tmp_path / "run" / "last.pt").exists()
