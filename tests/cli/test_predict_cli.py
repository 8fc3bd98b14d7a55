"""`wsi-seg predict` and `wsi-seg evaluate` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import tifffile
import torch

from wsi_seg.models import create_model
from wsi_seg.models.checkpoint import make_checkpoint, save_checkpoint
from wsi_seg.synth import BIOPSY_CLASSES, synthesize_slide


def wsi_seg(*args, umask=None):
    return subprocess.run([sys.executable, "-m", "wsi_seg", *map(str, args)], capture_output=True, text=True,
                          timeout=300, preexec_fn=None if umask is None else (lambda: os.umask(umask)))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    svs, truth = synthesize_slide(root, "case 1 é", width=1024, height=768, mpp=0.5, seed=2)
    torch.manual_seed(0)
    model = create_model("espnet_c", 8, alpha3=1)
    ckpt = make_checkpoint("espnet_c", 8, {"alpha3": 1}, model.state_dict(),
                           class_names=[n for n, _ in BIOPSY_CLASSES], class_colors=[c for _, c in BIOPSY_CLASSES],
                           mpp=2.0, patch_size=128)
    return root, svs, truth, save_checkpoint(ckpt, root / "m.pt")


def _one_error_line(result, *fragments):
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("wsi-seg: error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr


def test_predict_and_evaluate(setup, tmp_path):
    root, svs, truth, ckpt = setup
    out = tmp_path / "mask.tif"
    result = wsi_seg("predict", svs, "-o", out, "--model", ckpt, "--tile", "128", "--overlap", "32", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and tifffile.imread(out).shape == (768, 1024)
    again = wsi_seg("predict", svs, "-o", out, "--model", ckpt, "--tile", "128", "--overlap", "32")
    assert again.returncode == 2
    _one_error_line(again, "already exists", "--overwrite")
    report = tmp_path / "metrics.json"
    result = wsi_seg("evaluate", "--pred", out, "--truth", truth, "--json", report)
    assert result.returncode == 0, result.stderr
    assert "mIoU" in result.stdout and "desmoplastic stroma" in result.stdout
    data = json.loads(report.read_text())
    assert 0 <= data["miou"] <= 1 and len(data["iou"]) == 8 and data["pixels"] == 768 * 1024


def test_outputs_are_readable_by_whom_the_umask_allows(setup, tmp_path):
    """A mask, its probabilities and a review folder written on a shared server get the
    modes of a plain open()/mkdir under the user's umask, not temporary files' owner-only ones."""
    root, svs, truth, ckpt = setup
    out, probs, review = tmp_path / "mask.tif", tmp_path / "probs.zarr", tmp_path / "review"
    result = wsi_seg("predict", svs, "-o", out, "--model", ckpt, "--tile", "128", "--overlap", "32",
                     "--probabilities", probs, "--no-progress", umask=0o022)
    assert result.returncode == 0, result.stderr
    result = wsi_seg("export", svs, out, "-o", review, umask=0o022)
    assert result.returncode == 0, result.stderr
    assert oct(out.stat().st_mode & 0o777) == oct(0o644)
    assert oct(probs.stat().st_mode & 0o777) == oct(0o755)
    assert oct(review.stat().st_mode & 0o777) == oct(0o755)
    assert {oct(p.stat().st_mode & 0o777) for p in review.iterdir() if p.is_file()} == {oct(0o644)}


def test_predict_folder_with_a_bad_slide(setup, tmp_path):
    root, svs, truth, ckpt = setup
    slides = tmp_path / "slides"
    slides.mkdir()
    (slides / "good.svs").write_bytes(svs.read_bytes())
    (slides / "empty.svs").write_bytes(b"")
    out = tmp_path / "masks"
    result = wsi_seg("predict", slides, "-o", out, "--model", ckpt, "--tile", "128", "--overlap", "32",
                     "--no-progress")
    assert result.returncode == 1
    assert "empty.svs" in result.stderr and "Traceback" not in result.stderr
    assert [p.name for p in out.iterdir()] == ["good.mask.tif"]


@pytest.mark.parametrize("case", ["missing-slide", "missing-dir", "pickled-model", "not-a-model", "bad-tile"])
def test_predict_bad_input(setup, tmp_path, case):
    root, svs, truth, ckpt = setup
    evil = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"x": Payload()}, evil)
    args = {
        "missing-slide": [tmp_path / "nope.svs", "-o", tmp_path / "o.tif", "--model", ckpt],
        "missing-dir": [svs, "-o", tmp_path / "no" / "o.tif", "--model", ckpt],
        "pickled-model": [svs, "-o", tmp_path / "o.tif", "--model", evil],
        "not-a-model": [svs, "-o", tmp_path / "o.tif", "--model", truth],
        "bad-tile": [svs, "-o", tmp_path / "o.tif", "--model", ckpt, "--tile", "100"],
    }[case]
    expected = {"missing-slide": "nope.svs", "missing-dir": "does not exist", "pickled-model": "pickled code",
                "not-a-model": "not a readable checkpoint", "bad-tile": "multiple of 8"}[case]
    result = wsi_seg("predict", *args)
    assert result.returncode == 2
    _one_error_line(result, expected)
    assert not (tmp_path / "o.tif").exists()
    assert "ran" not in result.stdout
