"""`wsi-seg export` on good and bad input: one line, non-zero exit, no review folder left."""

from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner

from wsi_seg.cli import main
from wsi_seg.io.tiff import read_label_tiff, write_pyramidal_tiff


def _run(*args, env=None):
    return CliRunner().invoke(main, ["export", *map(str, args)], env=env)


def _assert_refused(result, out, *words):
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    for word in words:
        assert word in lines[0]
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.")]


def test_export_writes_the_review_folder(biopsy, tmp_path):
    out = tmp_path / "review"
    result = _run(*biopsy, "-o", out, "--no-viewer", "--alpha", "0.6")
    assert result.exit_code == 0, result.output
    assert "regions" in result.output
    assert {p.name for p in out.iterdir()} == {"overview.png", "areas.csv", "annotations.geojson", "overlay.tif"}
    again = _run(*biopsy, "-o", out, "--no-viewer")
    assert again.exit_code == 2 and "already exists" in again.output and out.is_dir()
    assert _run(*biopsy, "-o", out, "--no-viewer", "--overwrite").exit_code == 0


def test_mask_of_another_size_is_refused(biopsy, tmp_path):
    wrong = tmp_path / "wrong.tif"
    write_pyramidal_tiff(wrong, width=2048, height=1024, bands=[np.zeros((1024, 2048), np.uint8)],
                         band_height=1024, mpp=0.5)
    out = tmp_path / "review"
    _assert_refused(_run(biopsy[0], wrong, "-o", out, "--no-viewer"), out, str(wrong), "aspect ratio")


def test_mask_values_outside_the_class_list_are_refused(biopsy, tmp_path):
    labels = read_label_tiff(biopsy[1]).copy()
    labels[700:720, 1000:1020] = 9
    bad = tmp_path / "bad.tif"
    write_pyramidal_tiff(bad, width=2048, height=1536, bands=[labels], band_height=1536, mpp=0.5, min_size=4096)
    out = tmp_path / "review"
    _assert_refused(_run(biopsy[0], bad, "-o", out, "--no-viewer"), out, str(bad), "label value 9")


def test_unreadable_slide_is_refused(biopsy, tmp_path):
    broken = tmp_path / "broken.svs"
    broken.write_bytes(b"II*\x00" + os.urandom(4000))
    out = tmp_path / "review"
    _assert_refused(_run(broken, biopsy[1], "-o", out), out, str(broken))


def test_review_dir_that_cannot_be_written_is_refused(biopsy, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if os.access(locked, os.W_OK):
            # privileged users ignore the mode: a folder under a plain file cannot be made by anyone
            locked.chmod(0o755)
            (tmp_path / "file").write_text("x")
            out = tmp_path / "file" / "review"
            result = _run(*biopsy, "-o", out, "--no-viewer")
            assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
            assert str(out) in result.output and not out.exists()
            return
        out = locked / "review"
        _assert_refused(_run(*biopsy, "-o", out, "--no-viewer"), out, str(out), "cannot write")
    finally:
        locked.chmod(0o755)


def test_missing_openseadragon_is_one_line_with_the_fix(biopsy, tmp_path):
    empty = tmp_path / "no-osd"
    empty.mkdir()
    out = tmp_path / "review"
    result = _run(*biopsy, "-o", out, env={"WSI_SEG_OPENSEADRAGON_DIR": str(empty)})
    _assert_refused(result, out, "OpenSeadragon", "make install")


@pytest.mark.parametrize("alpha", ["1.5", "-0.1"])
def test_bad_alpha_is_a_usage_error(biopsy, tmp_path, alpha):
    result = _run(*biopsy, "-o", tmp_path / "r", "--alpha", alpha)
    assert result.exit_code == 2 and not (tmp_path / "r").exists()
