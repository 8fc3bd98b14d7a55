"""`wsi-seg synth` through the real click entry point."""

from __future__ import annotations

import openslide
import pytest
from click.testing import CliRunner

from wsi_seg.cli import main
from wsi_seg.io.tiff import read_label_tiff


def run(*args):
    return CliRunner().invoke(main, ["synth", *map(str, args)])


def test_synth_writes_named_pairs_and_skips_existing(tmp_path):
    out = tmp_path / "slides"
    result = run(out, "--n", 2, "--size", "512x384", "--mpp", 1.0, "--seed", 3)
    assert result.exit_code == 0, result.output
    assert "wrote 2 slide(s), skipped 0" in result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["synth_000.mask.tif", "synth_000.svs", "synth_001.mask.tif", "synth_001.svs"]
    slide = openslide.OpenSlide(out / "synth_001.svs")
    assert slide.dimensions == (512, 384)
    assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(1.0)
    assert read_label_tiff(out / "synth_000.mask.tif").shape == (384, 512)

    mtime = (out / "synth_000.svs").stat().st_mtime_ns
    again = run(out, "--n", 2, "--size", "512x384", "--mpp", 1.0, "--seed", 3)
    assert again.exit_code == 0 and "wrote 0 slide(s), skipped 2" in again.output
    assert (out / "synth_000.svs").stat().st_mtime_ns == mtime

    forced = run(out, "--n", 1, "--size", "512x384", "--mpp", 1.0, "--seed", 3, "--overwrite", "--pen")
    assert forced.exit_code == 0 and "wrote 1 slide(s)" in forced.output


@pytest.mark.parametrize(
    "args, message",
    [
        (["--size", "12000by10000"], "WIDTHxHEIGHT"),
        (["--size", "100x100"], "at least 256"),
        (["--mpp", "-0.5"], "--mpp"),
        (["--mpp", "abc"], "--mpp"),
        (["--n", "0"], "--n"),
    ],
)
def test_bad_values_are_one_line_usage_errors(tmp_path, args, message):
    result = run(tmp_path / "o", *args)
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_unwritable_output_is_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = run(blocker / "sub", "--n", 1, "--size", "256x256")
    assert result.exit_code == 2
    assert "wsi-seg: error:" in result.output and "file" in result.output
    assert "Traceback" not in result.output
