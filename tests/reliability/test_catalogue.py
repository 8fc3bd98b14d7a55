"""The bad-input catalogue: one row per unusable input, for every command.

Each row runs ``wsi-seg`` in-process and asserts what an unattended batch relies on:

* the exit code (2: the command could not do its job; 1: some slides of a batch
  failed and the others were processed);
* exactly one stderr line about the bad input, naming the file (or option) and the
  problem; a batch ends with its ``N of M item(s) failed`` summary line;
* no traceback and no "internal error";
* nothing new at the row's final output path (a file given beforehand is unchanged);
* for a batch, the other slides' outputs exist.

Paths in a row are ``str.format`` templates over the names of the
``catalogue_inputs`` fixture (tests/reliability/conftest.py) and ``{out}``, an empty
folder of the row's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from wsi_seg.cli import main
from wsi_seg.io.store import open_patch_store

TILE = ("--mpp", "2", "--patch", "64", "--min-tissue", "0.2", "--workers", "1", "--quiet")
PREDICT = ("--tile", "128", "--overlap", "32", "--no-progress")


@dataclass(frozen=True)
class Row:
    command: str
    problem: str
    args: tuple[str, ...]
    code: int
    message: str
    names: str | None = None    # the path (or option) the stderr line names
    absent: str | None = None   # the final output path that must not appear
    made: str | None = None     # the output of another slide of the batch, which must exist
    stdout: str | None = None   # what the batch prints about another slide
    existing: str | None = None  # a file written before the run, which must stay as it was
    readonly: str | None = None  # a folder made read-only before the run

    @property
    def id(self) -> str:
        return f"{self.command}: {self.problem}"


ROWS = [
    # --- info: one slide per argument, the rest of the batch goes on
    Row("info", "missing path", ("info", "{bad}/missing.svs"), 2, "no such file", "{bad}/missing.svs"),
    Row("info", "directory where a file is expected", ("info", "{bad}/folder.svs"), 2, "is a directory",
        "{bad}/folder.svs"),
    Row("info", "zero-byte file", ("info", "{bad}/zero.svs"), 2, "empty file (0 bytes)", "{bad}/zero.svs"),
    Row("info", "SVS truncated at 10%", ("info", "{bad}/cut10.svs"), 2, "truncated or corrupt",
        "{bad}/cut10.svs"),
    Row("info", "SVS truncated at 60%", ("info", "{bad}/cut60.svs"), 2, "truncated or corrupt",
        "{bad}/cut60.svs"),
    Row("info", "file OpenSlide cannot open", ("info", "{bad}/junk.svs"), 2,
        "not a slide format OpenSlide can read", "{bad}/junk.svs"),
    Row("info", "PNG renamed .svs", ("info", "{bad}/renamed.svs"), 2, "it is a PNG image", "{bad}/renamed.svs"),
    Row("info", "batch with a zero-byte file", ("info", "{good}", "{bad}/zero.svs", "{other}"), 1,
        "empty file (0 bytes)", "{bad}/zero.svs", stdout="{other}"),
    Row("info", "non-ASCII path with spaces", ("info", "{spaced}/broken é.svs", "{spaced}/slide é 1.svs"), 1,
        "not a slide format OpenSlide can read", "{spaced}/broken é.svs", stdout="{spaced}/slide é 1.svs"),

    # --- tile: a bad slide or label file fails that slide; the store keeps the others
    Row("tile", "missing path in a batch", ("tile", "{bad}/missing.svs", "{good}", "-o", "{out}/p.zarr", *TILE),
        1, "no such file", "{bad}/missing.svs", absent="{out}/p.zarr/missing", made="{out}/p.zarr/good"),
    Row("tile", "directory where a slide is expected", ("tile", "{bad}/folder.svs", "-o", "{out}/p.zarr", *TILE),
        2, "no slide files found", "{bad}/folder.svs", absent="{out}/p.zarr"),
    Row("tile", "zero-byte slide", ("tile", "{good}", "{bad}/zero.svs", "-o", "{out}/p.zarr", *TILE), 1,
        "empty file (0 bytes)", "{bad}/zero.svs", absent="{out}/p.zarr/zero", made="{out}/p.zarr/good"),
    Row("tile", "SVS truncated at 10%", ("tile", "{good}", "{bad}/cut10.svs", "-o", "{out}/p.zarr", *TILE), 1,
        "truncated or corrupt", "{bad}/cut10.svs", absent="{out}/p.zarr/cut10", made="{out}/p.zarr/good"),
    Row("tile", "SVS truncated at 60%", ("tile", "{good}", "{bad}/cut60.svs", "-o", "{out}/p.zarr", *TILE), 1,
        "truncated or corrupt", "{bad}/cut60.svs", absent="{out}/p.zarr/cut60", made="{out}/p.zarr/good"),
    Row("tile", "PNG renamed .svs", ("tile", "{good}", "{bad}/renamed.svs", "-o", "{out}/p.zarr", *TILE), 1,
        "it is a PNG image", "{bad}/renamed.svs", absent="{out}/p.zarr/renamed", made="{out}/p.zarr/good"),
    Row("tile", "slide without mpp", ("tile", "{good}", "{bad}/nompp.svs", "-o", "{out}/p.zarr", *TILE), 1,
        "no microns-per-pixel metadata; pass --slide-mpp", "{bad}/nompp.svs", absent="{out}/p.zarr/nompp",
        made="{out}/p.zarr/good"),
    Row("tile", "PNG declaring 3.6 gigapixels", ("tile", "{good}", "{bad}/bomb.png", "-o", "{out}/p.zarr", *TILE),
        1, "more than the 1,073,741,824 pixels", "{bad}/bomb.png", absent="{out}/p.zarr/bomb",
        made="{out}/p.zarr/good"),
    Row("tile", "mask of the wrong aspect ratio",
        ("tile", "{good}", "{other}", "-o", "{out}/p.zarr", "--masks", "{masks_aspect}", *TILE), 1,
        "does not match slide 1024x768", "{masks_aspect}/good.png", absent="{out}/p.zarr/good",
        made="{out}/p.zarr/other"),
    Row("tile", "labels beyond the class list",
        ("tile", "{good}", "{other}", "-o", "{out}/p.zarr", "--masks", "{masks_range}", *TILE), 1,
        "label value 12 is outside the class list", "{masks_range}/good.png", absent="{out}/p.zarr/good",
        made="{out}/p.zarr/other"),
    Row("tile", "malformed GeoJSON",
        ("tile", "{good}", "{other}", "-o", "{out}/p.zarr", "--masks", "{masks_badjson}", *TILE), 1,
        "not a readable GeoJSON file", "{masks_badjson}/good.geojson", absent="{out}/p.zarr/good",
        made="{out}/p.zarr/other"),
    Row("tile", "GeoJSON with unknown class names",
        ("tile", "{good}", "{other}", "-o", "{out}/p.zarr", "--masks", "{masks_unknown}", *TILE), 1,
        "'tumour of unknown kind'", "{masks_unknown}/good.geojson", absent="{out}/p.zarr/good",
        made="{out}/p.zarr/other"),
    Row("tile", "GeoJSON of 2 GB",
        ("tile", "{good}", "{other}", "-o", "{out}/p.zarr", "--masks", "{masks_huge}", *TILE), 1,
        "larger than the limit", "{masks_huge}/good.geojson", absent="{out}/p.zarr/good",
        made="{out}/p.zarr/other"),
    Row("tile", "negative patch size", ("tile", "{good}", "-o", "{out}/p.zarr", *TILE, "--patch", "-64"), 2,
        "--patch must be at least 8 pixels, got -64", "--patch", absent="{out}/p.zarr"),
    Row("tile", "empty slide folder", ("tile", "{empty}", "-o", "{out}/p.zarr", *TILE), 2,
        "no slide files found", "{empty}", absent="{out}/p.zarr"),
    Row("tile", "output is a file, not a store", ("tile", "{good}", "-o", "{out}/p.zarr", *TILE), 2,
        "exists and is not a zarr patch store", "{out}/p.zarr", existing="{out}/p.zarr"),
    Row("tile", "read-only output folder", ("tile", "{good}", "-o", "{out}/locked/p.zarr", *TILE), 2,
        "cannot create the patch store", "{out}/locked/p.zarr", absent="{out}/locked/p.zarr",
        readonly="{out}/locked"),
    Row("tile", "class list of 2 MB", ("tile", "{good}", "-o", "{out}/p.zarr", "--classes", "{cfg}/huge.yaml",
                                       *TILE), 2,
        "larger than the limit", "{cfg}/huge.yaml", absent="{out}/p.zarr"),
    Row("tile", "non-ASCII folder with spaces", ("tile", "{spaced}", "-o", "{out}/p.zarr", *TILE), 1,
        "not a slide format OpenSlide can read", "{spaced}/broken é.svs", absent="{out}/p.zarr/broken_é",
        made="{out}/p.zarr/slide_é_1"),

    # --- train: the recipe and the files it names are checked before anything is written
    Row("train", "missing config", ("train", "--config", "{cfg}/missing.yaml", "--quiet"), 2,
        "config file not found", "{cfg}/missing.yaml"),
    Row("train", "config with an unknown key",
        ("train", "--config", "{cfg}/unknown_key.yaml", "--out", "{out}/run", "--quiet"), 2,
        "optimiser: unknown key", "{cfg}/unknown_key.yaml", absent="{out}/run"),
    Row("train", "config with a wrong type",
        ("train", "--config", "{cfg}/wrong_type.yaml", "--out", "{out}/run", "--quiet"), 2,
        "optim.lr: Input should be a valid number", "{cfg}/wrong_type.yaml", absent="{out}/run"),
    Row("train", "config with a negative patch size",
        ("train", "--config", "{cfg}/negative_crop.yaml", "--out", "{out}/run", "--quiet"), 2,
        "data.crop: Input should be greater than 0", "{cfg}/negative_crop.yaml", absent="{out}/run"),
    Row("train", "config that is not YAML",
        ("train", "--config", "{cfg}/malformed.yaml", "--out", "{out}/run", "--quiet"), 2,
        "not valid YAML", "{cfg}/malformed.yaml", absent="{out}/run"),
    Row("train", "config of 2 MB",
        ("train", "--config", "{cfg}/huge.yaml", "--out", "{out}/run", "--quiet"), 2,
        "larger than the limit", "{cfg}/huge.yaml", absent="{out}/run"),
    Row("train", "directory where a config is expected", ("train", "--config", "{cfg}", "--quiet"), 2,
        "is a directory, expected a config file", "{cfg}"),
    Row("train", "init checkpoint that needs pickled code",
        ("train", "--config", "{cfg}/valid.yaml", "--out", "{out}/run", "--init", "{ckpt}/evil.pt", "--quiet"), 2,
        "needs pickled code", "{ckpt}/evil.pt", absent="{out}/run/last.pt"),
    Row("train", "init checkpoint that is a directory",
        ("train", "--config", "{cfg}/valid.yaml", "--out", "{out}/run", "--init", "{ckpt}", "--quiet"), 2,
        "is a directory", "{ckpt}", absent="{out}/run/last.pt"),
    Row("train", "read-only output folder",
        ("train", "--config", "{cfg}/valid.yaml", "--out", "{out}/locked/run", "--quiet"), 2,
        "not writable", "{out}/locked/run", absent="{out}/locked/run", readonly="{out}/locked"),
    Row("train", "resume without a run", ("train", "--config", "{cfg}/valid.yaml", "--out", "{out}/run",
                                          "--resume", "--quiet"), 2,
        "last.pt not found", "{out}/run/last.pt", absent="{out}/run/last.pt"),

    # --- predict
    Row("predict", "missing slide", ("predict", "{bad}/missing.svs", "-o", "{out}/m.tif", "--model", "{model}",
                                     *PREDICT), 2,
        "no such file", "{bad}/missing.svs", absent="{out}/m.tif"),
    Row("predict", "missing checkpoint", ("predict", "{good}", "-o", "{out}/m.tif", "--model", "{ckpt}/none.pt",
                                          *PREDICT), 2,
        "no such file", "{ckpt}/none.pt", absent="{out}/m.tif"),
    Row("predict", "zero-byte checkpoint", ("predict", "{good}", "-o", "{out}/m.tif", "--model", "{ckpt}/zero.pt",
                                            *PREDICT), 2,
        "empty file, not a checkpoint", "{ckpt}/zero.pt", absent="{out}/m.tif"),
    Row("predict", "checkpoint for another architecture",
        ("predict", "{good}", "-o", "{out}/m.tif", "--model", "{ckpt}/other_arch.pt", *PREDICT), 2,
        "weights do not fit the model", "{ckpt}/other_arch.pt", absent="{out}/m.tif"),
    Row("predict", "checkpoint that needs pickled code",
        ("predict", "{good}", "-o", "{out}/m.tif", "--model", "{ckpt}/evil.pt", *PREDICT), 2,
        "needs pickled code", "{ckpt}/evil.pt", absent="{out}/m.tif"),
    Row("predict", "ONNX file that is not ONNX",
        ("predict", "{good}", "-o", "{out}/m.tif", "--model", "{ckpt}/notonnx.onnx", "--backend", "onnx",
         *PREDICT), 2,
        "not a loadable ONNX model", "{ckpt}/notonnx.onnx", absent="{out}/m.tif"),
    Row("predict", "slide without mpp", ("predict", "{bad}/nompp.svs", "-o", "{out}/m.tif", "--model", "{model}",
                                         *PREDICT), 2,
        "no microns-per-pixel metadata; pass --slide-mpp", "{bad}/nompp.svs", absent="{out}/m.tif"),
    Row("predict", "output exists without --overwrite",
        ("predict", "{good}", "-o", "{out}/m.tif", "--model", "{model}", *PREDICT), 2,
        "already exists (pass --overwrite", "{out}/m.tif", existing="{out}/m.tif"),
    Row("predict", "read-only output folder",
        ("predict", "{good}", "-o", "{out}/locked/m.tif", "--model", "{model}", *PREDICT), 2,
        "cannot write", "{out}/locked/m.tif", absent="{out}/locked/m.tif", readonly="{out}/locked"),
    Row("predict", "folder with a truncated slide",
        ("predict", "{batch}", "-o", "{out}/masks", "--model", "{model}", *PREDICT), 1,
        "truncated or corrupt", "{batch}/cut10.svs", absent="{out}/masks/cut10.mask.tif",
        made="{out}/masks/good.mask.tif"),
    Row("predict", "empty slide folder", ("predict", "{empty}", "-o", "{out}/masks", "--model", "{model}",
                                          *PREDICT), 2,
        "no slide files found", "{empty}", absent="{out}/masks"),
    Row("predict", "non-ASCII folder with spaces",
        ("predict", "{spaced}", "-o", "{out}/masks", "--model", "{model}", *PREDICT), 1,
        "not a slide format OpenSlide can read", "{spaced}/broken é.svs", absent="{out}/masks/broken é.mask.tif",
        made="{out}/masks/slide é 1.mask.tif"),

    # --- evaluate
    Row("evaluate", "missing truth", ("evaluate", "--pred", "{good_mask}", "--truth", "{bad}/missing.tif"), 2,
        "no such file", "{bad}/missing.tif"),
    Row("evaluate", "zero-byte prediction", ("evaluate", "--pred", "{bad}/zero.svs", "--truth", "{good_mask}"), 2,
        "not a readable label mask", "{bad}/zero.svs"),
    Row("evaluate", "mask of the wrong aspect ratio",
        ("evaluate", "--pred", "{root}/pred_aspect.tif", "--truth", "{good_mask}", "--json", "{out}/m.json"), 2,
        "aspect ratios differ", "{root}/pred_aspect.tif", absent="{out}/m.json"),
    Row("evaluate", "labels beyond the class list",
        ("evaluate", "--pred", "{root}/pred_range.tif", "--truth", "{good_mask}", "--json", "{out}/m.json"), 2,
        "label value 12 is beyond the 8 classes", "{root}/pred_range.tif", absent="{out}/m.json"),
    Row("evaluate", "read-only output folder",
        ("evaluate", "--pred", "{good_mask}", "--truth", "{good_mask}", "--json", "{out}/locked/m.json"), 2,
        "cannot write", "{out}/locked/m.json", absent="{out}/locked/m.json", readonly="{out}/locked"),
    Row("evaluate", "classes from a checkpoint that needs pickled code",
        ("evaluate", "--pred", "{good_mask}", "--truth", "{good_mask}", "--classes", "{ckpt}/evil.pt"), 2,
        "needs pickled code", "{ckpt}/evil.pt"),

    # --- export (review folder)
    Row("export", "zero-byte slide", ("export", "{bad}/zero.svs", "{good_mask}", "-o", "{out}/review",
                                      "--no-viewer"), 2,
        "empty file (0 bytes)", "{bad}/zero.svs", absent="{out}/review"),
    Row("export", "mask of the wrong aspect ratio",
        ("export", "{good}", "{root}/pred_aspect.tif", "-o", "{out}/review", "--no-viewer"), 2,
        "does not match slide 1024x768", "{root}/pred_aspect.tif", absent="{out}/review"),
    Row("export", "labels beyond the class list",
        ("export", "{good}", "{root}/pred_range.tif", "-o", "{out}/review", "--no-viewer"), 2,
        "label value 12 is outside the class list", "{root}/pred_range.tif", absent="{out}/review"),
    Row("export", "checkpoint that needs pickled code",
        ("export", "{good}", "{good_mask}", "-o", "{out}/review", "--model", "{ckpt}/evil.pt", "--no-viewer"), 2,
        "needs pickled code", "{ckpt}/evil.pt", absent="{out}/review"),
    Row("export", "output exists without --overwrite",
        ("export", "{good}", "{good_mask}", "-o", "{out}/review", "--no-viewer"), 2,
        "already exists (pass --overwrite", "{out}/review", existing="{out}/review"),
    Row("export", "read-only output folder",
        ("export", "{good}", "{good_mask}", "-o", "{out}/locked/review", "--no-viewer"), 2,
        "cannot write", "{out}/locked/review", absent="{out}/locked/review", readonly="{out}/locked"),

    # --- convert-weights
    Row("convert-weights", "missing path",
        ("convert-weights", "{ckpt}/missing.pth", "-o", "{out}/w.pt", "--arch", "espnet_c", "--classes", "8"), 2,
        "no such file", "{ckpt}/missing.pth", absent="{out}/w.pt"),
    Row("convert-weights", "weights of another architecture",
        ("convert-weights", "{ckpt}/espnet_c_weights.pth", "-o", "{out}/w.pt", "--arch", "espnetv2",
         "--classes", "8"), 2,
        "does not fit espnetv2", "{ckpt}/espnet_c_weights.pth", absent="{out}/w.pt"),
    Row("convert-weights", "file that needs pickled code",
        ("convert-weights", "{ckpt}/evil.pt", "-o", "{out}/w.pt", "--arch", "espnet_c", "--classes", "8"), 2,
        "needs pickled code", "{ckpt}/evil.pt", absent="{out}/w.pt"),
    Row("convert-weights", "text file", ("convert-weights", "{ckpt}/junk.pt", "-o", "{out}/w.pt", "--arch",
                                         "espnet_c", "--classes", "8"), 2,
        "not a readable checkpoint", "{ckpt}/junk.pt", absent="{out}/w.pt"),
    Row("convert-weights", "output exists without --overwrite",
        ("convert-weights", "{ckpt}/espnet_c_weights.pth", "-o", "{out}/w.pt", "--arch", "espnet_c",
         "--classes", "8", "--alpha3", "1"), 2,
        "already exists (pass --overwrite", "{out}/w.pt", existing="{out}/w.pt"),
    Row("convert-weights", "read-only output folder",
        ("convert-weights", "{ckpt}/espnet_c_weights.pth", "-o", "{out}/locked/w.pt", "--arch", "espnet_c",
         "--classes", "8", "--alpha3", "1"), 2,
        "cannot write", "{out}/locked/w.pt", absent="{out}/locked/w.pt", readonly="{out}/locked"),

    # --- export-onnx
    Row("export-onnx", "zero-byte checkpoint", ("export-onnx", "{ckpt}/zero.pt", "-o", "{out}/m.onnx"), 2,
        "empty file, not a checkpoint", "{ckpt}/zero.pt", absent="{out}/m.onnx"),
    Row("export-onnx", "checkpoint for another architecture",
        ("export-onnx", "{ckpt}/other_arch.pt", "-o", "{out}/m.onnx"), 2,
        "weights do not fit the model", "{ckpt}/other_arch.pt", absent="{out}/m.onnx"),
    Row("export-onnx", "checkpoint that needs pickled code",
        ("export-onnx", "{ckpt}/evil.pt", "-o", "{out}/m.onnx"), 2,
        "needs pickled code", "{ckpt}/evil.pt", absent="{out}/m.onnx"),
    Row("export-onnx", "output exists without --overwrite", ("export-onnx", "{model}", "-o", "{out}/m.onnx"), 2,
        "already exists (pass --overwrite", "{out}/m.onnx", existing="{out}/m.onnx"),
    Row("export-onnx", "read-only output folder", ("export-onnx", "{model}", "-o", "{out}/locked/m.onnx"), 2,
        "cannot write", "{out}/locked/m.onnx", absent="{out}/locked/m.onnx", readonly="{out}/locked"),

    # --- synth
    Row("synth", "read-only output folder", ("synth", "{out}/locked/slides", "--n", "1", "--size", "256x256"), 2,
        "cannot create the folder", "{out}/locked/slides", absent="{out}/locked/slides", readonly="{out}/locked"),
    Row("synth", "output is a file", ("synth", "{out}/slides", "--n", "1", "--size", "256x256"), 2,
        "is a file", "{out}/slides", existing="{out}/slides"),
]

KEPT = b"written before the run\n"


def _fill(template: str | None, names: dict[str, str]) -> str | None:
    return None if template is None else template.format(**names)


def _check_made(path: Path) -> None:
    if path.parent.suffix == ".zarr":  # a slide group of a patch store: complete
        assert path.name in [group.name for group in open_patch_store(path.parent)], path
    else:
        assert path.is_file(), path


def _snapshot(path: Path):
    if path.is_dir():
        return sorted(str(p.relative_to(path)) for p in path.rglob("*"))
    return path.read_bytes()


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
def test_bad_input(row: Row, catalogue_inputs, tmp_path, readonly_folder):
    out = tmp_path / "out"
    out.mkdir()
    names = {**catalogue_inputs, "out": str(out)}
    existing = Path(_fill(row.existing, names)) if row.existing else None
    if existing is not None:
        existing.write_bytes(KEPT)
    before = _snapshot(existing) if existing is not None else None
    if row.readonly:
        readonly_folder(Path(_fill(row.readonly, names)))

    result = CliRunner().invoke(main, [_fill(arg, names) for arg in row.args])

    assert result.exit_code == row.code, (result.stdout, result.stderr)
    assert "Traceback" not in result.output and "internal error" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    named = _fill(row.names, names)
    about = [line for line in lines if named is None or named in line]
    assert len(about) == 1, lines
    if row.code == 2:
        assert len(lines) == 1 and lines[0].startswith("wsi-seg: error: "), lines
    else:
        assert about[0].startswith("wsi-seg: failed: "), lines
        assert lines[-1].startswith("wsi-seg: error: ") and "item(s) failed" in lines[-1], lines
    assert row.message in about[0], about[0]

    if row.absent is not None:
        absent = Path(_fill(row.absent, names))
        assert not absent.exists(), absent
        leftovers = [p.name for p in absent.parent.glob(f".{absent.name}*")] if absent.parent.is_dir() else []
        assert not leftovers, leftovers
    if existing is not None:
        assert _snapshot(existing) == before
    if row.made is not None:
        _check_made(Path(_fill(row.made, names)))
    if row.stdout is not None:
        assert _fill(row.stdout, names) in result.stdout
    assert not Path(names["marker"]).exists()


def test_the_catalogue_covers_every_command():
    commands = {row.command for row in ROWS}
    assert commands >= {"synth", "info", "tile", "train", "predict", "evaluate", "export", "convert-weights",
                        "export-onnx"}
    assert len(ROWS) >= 30
    assert len({row.id for row in ROWS}) == len(ROWS)


def test_debug_shows_the_traceback(catalogue_inputs):
    result = CliRunner().invoke(main, ["--debug", "info", f"{catalogue_inputs['bad']}/zero.svs"])
    assert result.exit_code != 0
    assert isinstance(result.exception, Exception) and "empty file" in str(result.exception)


# ----------------------------------------------------------------------------- inputs that are not errors


def test_all_glass_slide_tiles_to_an_empty_complete_group(catalogue_inputs, tmp_path):
    store = tmp_path / "p.zarr"
    result = CliRunner().invoke(main, ["tile", catalogue_inputs["glass"], catalogue_inputs["good"], "-o", str(store),
                                       *TILE])
    assert result.exit_code == 0 and not result.stderr.strip(), result.output
    assert "2 slide(s) tiled, 0 skipped (complete), 0 failed" in result.stdout
    groups = {group.name: group for group in open_patch_store(store)}  # complete groups only
    assert sorted(groups) == ["glass", "good"]
    glass = groups["glass"]
    assert len(glass) == 0 and glass.attrs["complete"] is True
    assert glass.image.shape == (0, 64, 64, 3) and glass.coords.shape == (0, 2) and len(groups["good"]) > 0
    again = CliRunner().invoke(main, ["tile", catalogue_inputs["glass"], "-o", str(store), *TILE])
    assert again.exit_code == 0 and "0 slide(s) tiled, 1 skipped (complete)" in again.stdout


def test_all_glass_slide_predicts_to_an_all_background_mask(catalogue_inputs, tmp_path):
    import tifffile

    out = tmp_path / "glass.mask.tif"
    result = CliRunner().invoke(main, ["predict", catalogue_inputs["glass"], "-o", str(out), "--model",
                                       catalogue_inputs["model"], *PREDICT])
    assert result.exit_code == 0 and not result.stderr.strip(), result.output
    assert "0/6 tiles with tissue" in result.stdout
    with tifffile.TiffFile(out) as tif:
        pages = [page.asarray() for page in tif.pages]
    assert pages[0].shape == (768, 1024) and all(not page.any() for page in pages)


def test_non_ascii_paths_with_spaces_work(catalogue_inputs, tmp_path):
    out = tmp_path / "sortie é" / "masque 1 é.tif"
    out.parent.mkdir()
    slide = f"{catalogue_inputs['spaced']}/slide é 1.svs"
    result = CliRunner().invoke(main, ["predict", slide, "-o", str(out), "--model", catalogue_inputs["model"],
                                       *PREDICT])
    assert result.exit_code == 0, result.output
    assert f"wrote {out}" in result.stdout
    result = CliRunner().invoke(main, ["export", slide, str(out), "-o", str(tmp_path / "revue é"), "--no-viewer"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "revue é" / "annotations.geojson").is_file()
