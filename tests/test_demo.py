"""The demo pipeline end to end through the CLI, at a tiny size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[1]


def test_demo_runs_end_to_end_and_resumes(tmp_path):
    work = tmp_path / "demo run"
    cmd = [sys.executable, "-m", "wsi_seg", "demo", "--workdir", str(work), "--config", str(REPO / "configs/demo.yaml"),
           "--size", "1536x1024", "--epochs", "2", "--tile", "256", "--overlap", "64", "--no-progress"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "held-out mIoU" in result.stdout
    assert "stage1 2/2 epochs, stage2 2/2 epochs" in result.stdout and "budget" not in result.stdout
    mask = tifffile.imread(work / "synth_002.mask.tif")
    assert mask.shape == (1024, 1536) and mask.max() < 8 and len(np.unique(mask)) >= 2
    metrics = json.loads((work / "metrics.json").read_text())
    assert 0.0 <= metrics["miou"] <= 1.0 and len(metrics["iou"]) == 8
    for name in ("overview.png", "areas.csv", "annotations.geojson", "overlay.tif", "index.html"):
        assert (work / "review" / name).is_file(), name
    assert (work / "run" / "last.pt").is_file()
    # a rerun skips every finished step
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "holds a finished run" in again.stdout
    assert "== predict" not in again.stdout and "== export" not in again.stdout
    assert json.loads((work / "metrics.json").read_text())["miou"] == metrics["miou"]
    assert "kept 3 slide(s)" in again.stdout and "2 slide(s) already complete" in again.stdout
    assert "is up to date with" in again.stdout

    # other prediction settings predict again (and export again), without training again
    other = subprocess.run([*cmd[:-5], "--tile", "256", "--overlap", "32", "--no-progress"],
                           capture_output=True, text=True, timeout=600)
    assert other.returncode == 0, other.stderr[-2000:]
    assert "== predict" in other.stdout and "== export" in other.stdout and "== train" not in other.stdout
    assert json.loads((work / "demo.json").read_text())["prediction"]["overlap"] == 32

    # a checkpoint newer than the mask (a new training run) predicts again, like make
    later = (work / "synth_002.mask.tif").stat().st_mtime + 5
    os.utime(work / "run" / "last.pt", (later, later))
    retrained = subprocess.run([*cmd[:-5], "--tile", "256", "--overlap", "32", "--no-progress"],
                               capture_output=True, text=True, timeout=600)
    assert retrained.returncode == 0, retrained.stderr[-2000:]
    assert "== predict" in retrained.stdout and "== export" in retrained.stdout

    # other slide settings are refused in one line, and nothing is touched
    before = (work / "synth_002.mask.tif").stat().st_mtime
    refused = subprocess.run([*cmd, "--seed", "3"], capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"wsi-seg: error: {work}: holds a demo made with --size 1536x1024 --seed 0; delete it or choose another --workdir"]
    assert (work / "synth_002.mask.tif").stat().st_mtime == before


def test_demo_says_when_the_time_budget_cut_training(tmp_path):
    cmd = [sys.executable, "-m", "wsi_seg", "demo", "--workdir", str(tmp_path / "d"),
           "--config", str(REPO / "configs/demo.yaml"), "--size", "1024x768", "--epochs", "3", "--minutes", "0.001",
           "--tile", "256", "--overlap", "64", "--tta", "none", "--no-progress"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stage1 1/3 epochs, stage2 1/3 epochs" in result.stdout
    assert "note: the training budget (0.001 min, --minutes) ended training early" in result.stdout
