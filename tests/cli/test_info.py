"""`wsi-seg info` on real slides and on unusable files."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from wsi_seg.cli import main


@pytest.fixture(scope="module")
def slides(real_dir):
    return real_dir / "wsi" / "cmu-1-small-region.svs", real_dir / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"


def _run(*args):
    return CliRunner().invoke(main, ["info", *map(str, args)])


def test_text_output_for_both_real_slides(slides):
    cmu, tcga = slides
    result = _run(cmu, tcga)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "vendor: aperio" in out
    assert "size: 2220 x 2967 px (level 0)" in out
    assert "mpp: 0.499 um/px (metadata)" in out
    assert "objective power: 20x" in out
    assert "associated images: label, macro, thumbnail" in out
    assert "1: 2221 x 1783 px, downsample 2.001" in out
    assert "mpp: unknown (pass --slide-mpp)" in out


def test_json_output_and_slide_mpp(slides):
    _, tcga = slides
    result = _run("--json", "--slide-mpp", "0.25", tcga)
    assert result.exit_code == 0, result.output
    (summary,) = json.loads(result.stdout)
    assert summary["vendor"] == "aperio"
    assert summary["dimensions"] == [4443, 3567]
    assert summary["mpp"] == 0.25 and summary["mpp_source"] == "--slide-mpp"
    assert summary["objective_power"] is None
    assert [level["dimensions"] for level in summary["levels"]] == [[4443, 3567], [2221, 1783]]
    assert summary["levels"][1]["downsample"] == pytest.approx(2.0005, abs=1e-3)


def test_batch_goes_past_bad_slides_and_reports_them(slides, tmp_path, real_dir):
    cmu, _ = slides
    empty = tmp_path / "empty.svs"
    empty.write_bytes(b"")
    renamed = tmp_path / "renamed.svs"
    shutil.copy(real_dir / "tiles" / "histoqc_template1.png", renamed)
    missing = tmp_path / "missing.svs"
    result = _run(missing, empty, cmu, tmp_path, renamed)
    assert result.exit_code == 1
    assert "size: 2220 x 2967 px" in result.stdout
    errors = result.stderr.strip().splitlines()
    assert errors == [
        f"wsi-seg: failed: {missing}: no such file",
        f"wsi-seg: failed: {empty}: empty file (0 bytes)",
        f"wsi-seg: failed: {tmp_path}: is a directory, not a slide file",
        f"wsi-seg: failed: {renamed}: not a slide format OpenSlide can read; it is a PNG image: "
        "give it a .png suffix to read it as a plain image",
        "wsi-seg: error: 4 of 5 item(s) failed",
    ]
    assert "Traceback" not in result.output


def test_single_bad_slide_is_one_line_and_non_zero(tmp_path):
    missing = tmp_path / "missing.svs"
    result = _run(missing)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"wsi-seg: error: {missing}: no such file"]
    assert result.stdout == ""


def test_bad_slide_mpp_is_a_usage_error(slides):
    result = _run("--slide-mpp", "-1", slides[0])
    assert result.exit_code == 2
    assert "--slide-mpp" in result.stderr
