"""Kill and resume: ``tile``, ``train`` and ``predict`` killed with SIGKILL part-way, then rerun.

Each test starts ``python -m wsi_seg`` as a real process, waits (polling, no fixed
sleeps) until the work is visibly under way, kills it with SIGKILL, checks that the
kill happened part-way and left no partial output, reruns the command to completion
and compares the result with an uninterrupted run:

* tile: the rerun keeps the finished slide groups, rebuilds the partial ones, and
  the store's arrays equal an uninterrupted run's byte for byte;
* train: ``--resume`` continues from ``last.pt`` at the next epoch and step, the
  metrics hold every epoch once, and the weights match an uninterrupted run;
* predict: the killed slide's mask is absent (nor is a temporary file left after the
  rerun), finished masks are kept, and the rerun's masks equal an uninterrupted run's.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from click.testing import CliRunner

from reliability_inputs import tiny_checkpoint, train_config
from wsi_seg.cli import main
from wsi_seg.io.store import open_patch_store
from wsi_seg.models.checkpoint import load_checkpoint, read_checkpoint
from wsi_seg.synth import synthesize_slide

#: Longest wait for a process to reach the point where it is killed, or to finish.
PATIENCE_S = 150


def _start(args, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "wsi_seg", *map(str, args)], stdout=out,
                                stderr=subprocess.STDOUT, env=env)


def _kill_when(process: subprocess.Popen, ready, log: Path, what: str) -> None:
    """SIGKILL ``process`` as soon as ``ready()`` holds; fail if it ends first."""
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        if ready():
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)
            assert process.returncode == -signal.SIGKILL, (
                f"the process ended by itself before it could be killed {what}:\n{log.read_text()}")
            return
        if process.poll() is not None:
            pytest.fail(f"the process ended (exit {process.returncode}) before {what}:\n{log.read_text()}")
        time.sleep(0.02)
    process.kill()
    process.wait()
    pytest.fail(f"not {what} after {PATIENCE_S} s:\n{log.read_text()}")


def _rerun(args, log: Path) -> str:
    process = _start(args, log)
    try:
        process.wait(timeout=PATIENCE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    text = log.read_text(encoding="utf-8", errors="replace")
    assert process.returncode == 0, text
    return text


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------------- tile


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> Path:
    """Three labelled 1024 x 768 synthetic slides."""
    folder = tmp_path_factory.mktemp("kill-slides")
    for index in range(3):
        synthesize_slide(folder, f"s{index}", width=1024, height=768, mpp=0.5, seed=40 + index)
    return folder


def test_tile_killed_part_way_resumes_to_the_same_store(slides, tmp_path):
    # 32 px patches at 0.5 um/px: hundreds of small batch writes per slide, seconds of work
    options = ["--masks", slides, "--mpp", "0.5", "--patch", "32", "--min-tissue", "0.2", "--workers", "1",
               "--quiet"]
    store = tmp_path / "killed.zarr"
    log = tmp_path / "tile.log"
    process = _start(["tile", slides, "-o", store, *options], log)

    def writing() -> bool:  # a shard of patches is on disk
        return store.is_dir() and any(store.glob("*/image/c/*"))

    _kill_when(process, writing, log, "writing patches")
    complete = [group.name for group in open_patch_store(store)]
    assert len(complete) < 3, "every slide was complete: the kill was not part-way"

    text = _rerun(["tile", slides, "-o", store, *options], tmp_path / "rerun.log")
    assert f"{3 - len(complete)} slide(s) tiled, {len(complete)} skipped (complete), 0 failed" in text

    reference = tmp_path / "reference.zarr"
    result = CliRunner().invoke(main, ["tile", str(slides), "-o", str(reference), *map(str, options)])
    assert result.exit_code == 0, result.output
    resumed, straight = open_patch_store(store), open_patch_store(reference)
    assert [g.name for g in resumed] == [g.name for g in straight] == ["s0", "s1", "s2"]
    for a, b in zip(resumed, straight):
        assert len(a) > 50
        for key in ("image", "label", "coords", "tissue"):
            x, y = np.asarray(a.group[key][...]), np.asarray(b.group[key][...])
            assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes(), (a.name, key)
        assert {k: v for k, v in a.attrs.items()} == {k: v for k, v in b.attrs.items()}
    assert not _hidden(store)


# ----------------------------------------------------------------------------- train


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_train_killed_part_way_resumes_from_last_pt(slides, tmp_path):
    from wsi_seg.tiling import tile_slides

    store = tmp_path / "p.zarr"
    tile_slides([slides], store, masks_dir=slides, mpp=2.0, patch=64, min_tissue=0.2, progress=False, workers=1)
    epochs = 8
    stages = [{"epochs": epochs}]
    killed = train_config(tmp_path / "killed.yaml", store, tmp_path / "killed", stages=stages)
    log = tmp_path / "train.log"
    process = _start(["train", "--config", killed, "--quiet"], log)
    last = tmp_path / "killed" / "last.pt"
    _kill_when(process, last.is_file, log, "after the first epoch")

    state = read_checkpoint(last)["train_state"]
    done = state["epoch"]
    assert 1 <= done < epochs, "the kill was not part-way"
    steps_per_epoch = state["step"] // done

    _rerun(["train", "--config", killed, "--resume", "--quiet"], tmp_path / "rerun.log")
    rows = _rows(tmp_path / "killed")
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert [int(r["step"]) for r in rows] == [steps_per_epoch * e for e in range(1, epochs + 1)]
    final = read_checkpoint(last)["train_state"]
    assert final["epoch"] == epochs and final["step"] == steps_per_epoch * epochs
    model, meta = load_checkpoint(tmp_path / "killed" / "best.pt")
    assert meta["model"]["name"] == "espnet_c"
    assert not _hidden(tmp_path / "killed")

    straight = train_config(tmp_path / "straight.yaml", store, tmp_path / "straight", stages=stages)
    result = CliRunner().invoke(main, ["train", "--config", str(straight), "--quiet"])
    assert result.exit_code == 0, result.output
    for a, b in zip(rows, _rows(tmp_path / "straight")):
        for key in ("epoch", "step", "lr", "train_loss", "val_loss", "miou"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-4, abs=1e-5), (a["epoch"], key)
    resumed = read_checkpoint(last)["state_dict"]
    uninterrupted = read_checkpoint(tmp_path / "straight" / "last.pt")["state_dict"]
    for key in uninterrupted:
        torch.testing.assert_close(resumed[key], uninterrupted[key], rtol=1e-3, atol=1e-4)


# ----------------------------------------------------------------------------- predict


def _pages(path: Path) -> list[np.ndarray]:
    with tifffile.TiffFile(path) as tif:
        return [page.asarray() for page in tif.pages]


def test_predict_killed_part_way_leaves_no_partial_mask(tmp_path):
    inputs = tmp_path / "slides"
    # a small first slide (6 tiles), then a larger one (48 tiles): a second or more in which to kill it
    synthesize_slide(tmp_path / "labels", "s0", width=512, height=384, mpp=0.5, seed=46)
    synthesize_slide(tmp_path / "labels", "s1", width=1536, height=1152, mpp=0.5, seed=47)
    inputs.mkdir()
    for name in ("s0.svs", "s1.svs"):
        (tmp_path / "labels" / name).rename(inputs / name)
    model = tiny_checkpoint(tmp_path / "model.pt")
    options = ["--model", model, "--mpp", "1", "--tile", "128", "--overlap", "32", "--workers", "1",
               "--no-progress"]
    masks = tmp_path / "masks"
    log = tmp_path / "predict.log"
    process = _start(["predict", inputs, "-o", masks, *options], log)

    def second_under_way() -> bool:  # s0 finished, s1 being written
        return (masks / "s0.mask.tif").is_file() and any(masks.glob(".s1.mask.tif.*"))

    _kill_when(process, second_under_way, log, "predicting the second slide")
    assert not (masks / "s1.mask.tif").exists()
    finished = (masks / "s0.mask.tif").read_bytes()

    text = _rerun(["predict", inputs, "-o", masks, *options], tmp_path / "rerun.log")
    assert "skip s0.svs" in text and "done: 1 predicted, 1 skipped" in text
    assert (masks / "s0.mask.tif").read_bytes() == finished
    assert sorted(p.name for p in masks.iterdir()) == ["s0.mask.tif", "s1.mask.tif"]  # no temporary file left

    reference = tmp_path / "reference"
    result = CliRunner().invoke(main, ["predict", str(inputs), "-o", str(reference), *map(str, options)])
    assert result.exit_code == 0, result.output
    for name in ("s0.mask.tif", "s1.mask.tif"):
        resumed, straight = _pages(masks / name), _pages(reference / name)
        assert len(resumed) == len(straight) > 1
        for x, y in zip(resumed, straight):
            np.testing.assert_array_equal(x, y)
        assert (masks / name).read_bytes() == (reference / name).read_bytes(), name
