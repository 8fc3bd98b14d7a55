"""`wsi-seg tile` from the command line: summary, exit codes, one-line errors."""

import numpy as np
import pytest
from click.testing import CliRunner

from wsi_seg.cli import main
from wsi_seg.io.store import open_patch_store
from wsi_seg.io.tiff import write_aperio_svs, write_pyramidal_tiff

COLOURS = np.array([[255, 255, 255], [190, 70, 160], [235, 130, 190]], dtype=np.uint8)


def _slide(folder, name, width=1024, height=768):
    labels = np.zeros((height, width), dtype=np.uint8)
    labels[96:672, 128:560] = 1
    labels[160:640, 600:960] = 2
    write_aperio_svs(folder / f"{name}.svs", width=width, height=height, band_height=256, mpp=0.5,
                     bands=(COLOURS[labels[row:row + 256]] for row in range(0, height, 256)))
    write_pyramidal_tiff(folder / f"{name}.mask.tif", width=width, height=height, band_height=256, mpp=0.5,
                         bands=(labels[row:row + 256] for row in range(0, height, 256)), colormap=COLOURS,
                         compression="zstd")


@pytest.fixture(scope="module")
def slide_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli-slides")
    _slide(folder, "one")
    _slide(folder, "two", width=768)
    return folder


def _run(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def test_tile_writes_a_store_and_resumes(slide_dir, tmp_path):
    store = tmp_path / "p.zarr"
    classes = tmp_path / "classes.yaml"
    classes.write_text("classes:\n  - {name: background, color: [255, 255, 255]}\n  - {name: a}\n  - {name: b}\n")
    args = ["tile", slide_dir, "-o", store, "--masks", slide_dir, "--classes", classes, "--patch", "128",
            "--no-progress", "--workers", "2"]
    result = _run(*args)
    assert result.exit_code == 0, result.output
    assert "2 slide(s) tiled, 0 skipped (complete), 0 failed" in result.output
    assert "task/s" not in result.output  # no bars
    slides = open_patch_store(store)
    assert [s.name for s in slides] == ["one", "two"]
    assert slides[0].attrs["class_names"] == ["background", "a", "b"] and slides[0].label is not None
    assert sum(len(s) for s in slides) > 0
    result = _run(*args)
    assert result.exit_code == 0 and "0 slide(s) tiled, 2 skipped (complete)" in result.output


def test_bad_inputs_give_one_line_each_and_exit_1(slide_dir, tmp_path):
    (tmp_path / "broken.svs").write_bytes(b"not a slide at all")
    result = CliRunner().invoke(main, ["tile", str(slide_dir / "one.svs"), str(tmp_path / "broken.svs"),
                                       str(tmp_path / "gone.svs"), "-o", str(tmp_path / "p.zarr"),
                                       "--classes", "bg,a,b", "--patch", "128"])  # with the progress bar
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    failed = [line for line in lines if line.startswith("wsi-seg: failed: ")]
    assert len(failed) == 2
    assert any("broken.svs: " in line for line in failed) and any("gone.svs: no such file" in line for line in failed)
    assert lines[-1] == "wsi-seg: error: 2 of 3 item(s) failed"
    assert "Traceback" not in result.output
    assert [s.name for s in open_patch_store(tmp_path / "p.zarr")] == ["one"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--codec", "gif"], "unknown codec 'gif'"),
        (["--min-tissue", "2"], "--min-tissue is a fraction"),
        (["--masks", "/nonexistent/masks"], "masks folder not found"),
        (["--classes", "a,a"], "duplicate names"),
    ],
)
def test_bad_options_exit_2_with_one_line(slide_dir, tmp_path, extra, message):
    result = CliRunner().invoke(main, ["tile", str(slide_dir / "one.svs"), "-o", str(tmp_path / "p.zarr"),
                                       "--quiet", *extra])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and message in result.output and result.output.startswith("wsi-seg: error:")


def test_empty_folder_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(main, ["tile", str(tmp_path / "empty"), "-o", str(tmp_path / "p.zarr")])
    assert result.exit_code == 2
    assert "empty: no slide files found" in result.output and result.output.count("\n") == 1
