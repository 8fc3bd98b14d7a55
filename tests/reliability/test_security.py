"""Untrusted files: no code runs from them, no name escapes its folder, nothing unbounded is read.

* checkpoints are read with ``torch.load(weights_only=True)`` only: a crafted pickle is
  refused by every command that reads one, and the file it would create never appears;
* slide names become group and file names through :mod:`wsi_seg.io.names`, whose result
  is one plain path component, so no name writes outside the store or output folder;
* text written into the review page is escaped;
* GeoJSON and configuration files are bounded before they are parsed.
"""

from __future__ import annotations

import ast
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from reliability_inputs import MARKER_NAME, pickled_code, png_bomb, sparse_file, tiny_checkpoint
from wsi_seg.cli import main
from wsi_seg.errors import CheckpointError, ConfigError, InputError
from wsi_seg.io import annotations
from wsi_seg.io.names import MAX_NAME_BYTES, child, safe_name, slide_id, slide_stem

WSI_SEG = Path(__file__).resolve().parents[2] / "wsi_seg"


# ----------------------------------------------------------------------------- checkpoints


def _loaders(path: Path):
    from wsi_seg.models.checkpoint import load_checkpoint, read_checkpoint
    from wsi_seg.models.pretrained import convert_weights
    from wsi_seg.review.classes import classes_from_checkpoint

    return {
        "read_checkpoint": lambda: read_checkpoint(path),
        "load_checkpoint": lambda: load_checkpoint(path),
        "convert_weights": lambda: convert_weights(path, arch="espnet_c", num_classes=8),
        "classes_from_checkpoint": lambda: classes_from_checkpoint(path),
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_a_crafted_pickle_is_refused_everywhere_and_never_runs(tmp_path, legacy):
    marker = tmp_path / MARKER_NAME
    evil = tmp_path / "evil.pt"
    if legacy:  # the pre-1.6 format: a bare pickle stream
        class Payload:
            def __reduce__(self):
                return (open, (str(marker), "w"))

        torch.save({"x": Payload()}, evil, _use_new_zipfile_serialization=False)
    else:
        pickled_code(evil, marker)
    for name, load in _loaders(evil).items():
        with pytest.raises(CheckpointError) as info:
            load()
        assert str(info.value).startswith(f"{evil}: ") and "pickled code" in str(info.value), name
        assert not marker.exists(), name


def test_torch_load_is_only_ever_called_with_weights_only(tmp_path):
    """Every ``torch.load`` in the package passes ``weights_only=True``; nothing unpickles."""
    calls = []
    for source in WSI_SEG.rglob("*.py"):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "joblib.load"):
                pytest.fail(f"{source}: {name} unpickles")
            if name.endswith("torch.load") or name == "load" and "torch" in ast.unparse(node):
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                assert keywords.get("weights_only") == "True", f"{source}:{node.lineno}: {ast.unparse(node)}"
                calls.append(source.name)
    assert "checkpoint.py" in calls


def test_a_good_checkpoint_still_loads(tmp_path):
    from wsi_seg.models.checkpoint import load_checkpoint

    model, meta = load_checkpoint(tiny_checkpoint(tmp_path / "m.pt"))
    assert meta["model"]["name"] == "espnet_c" and not model.training


# ----------------------------------------------------------------------------- names


@pytest.mark.parametrize(("text", "expected"), [
    ("../x", "_x"),  # separators go: one component, never a step up
    ("../../etc/passwd", "_.._etc_passwd"),
    ("/abs/path", "_abs_path"),
    ("C:\\temp\\slide", "C:_temp_slide"),
    ("a\x00b", "a_b"),
    ("line\nbreak\ttab", "line_break_tab"),
    ("..", "slide"),
    (".", "slide"),
    ("...", "slide"),
    (".hidden", "hidden"),
    ("", "slide"),
    ("   ", "slide"),
    ("case 1 é", "case 1 é"),  # readable names are kept as they are
    ("biopsie-Größe_2", "biopsie-Größe_2"),
    ("標本 12", "標本 12"),
    ("cafe\u0301", "café"),  # NFD and NFC spell the same name the same way
])
def test_safe_name(text, expected):
    assert safe_name(text) == expected
    name = safe_name(text)
    root = Path("/store/folder")
    assert child(root, name).parent == root


def test_safe_name_is_bounded_and_idempotent():
    long = "é" * 500
    name = safe_name(long)
    assert len(name.encode("utf-8")) <= MAX_NAME_BYTES and name == "é" * (MAX_NAME_BYTES // 2)
    for text in ("../x", "a\x00b", "..", "", "case 1 é", long, " .x. "):
        assert safe_name(safe_name(text)) == safe_name(text)


@pytest.mark.parametrize(("path", "group"), [
    ("/d/my slide (1).svs", "my_slide_1"),
    ("case.ome.tiff", "case"),
    ("...svs", "slide"),
    ("/slides/../x.svs", "x"),
    ("/slides/case é 1.svs", "case_é_1"),
    ("__meta.svs", "meta"),
    ("a\x00b.svs", "a_b"),
])
def test_slide_ids_are_plain_group_names(path, group):
    assert slide_id(path) == group
    assert child("/store.zarr", group).name == group


def test_slide_stem():
    assert slide_stem("/x/a.b.svs") == "a.b" and slide_stem("/x/c.OME.TIFF") == "c" and slide_stem("d") == "d"


@pytest.mark.parametrize("name", ["../x", "..", ".", "", "a/b", "/abs", "a\x00b", ".hidden"])
def test_child_refuses_names_that_are_not_plain(name):
    with pytest.raises(ValueError):
        child("/out", name)


def test_store_groups_and_mask_names_stay_inside(tmp_path):
    from wsi_seg.inference.slide import output_path_for
    from wsi_seg.io.store import PatchStore, parse_codec

    out = tmp_path / "masks"
    for hostile in ("../escape.svs", "/abs/escape.svs", "..svs", "a\x00b.svs", "...svs"):
        path = output_path_for(Path(hostile), out)
        assert path.parent == out and path.name.endswith(".mask.tif") and not path.name.startswith(".")
    assert output_path_for(Path("/in/case 1 é.svs"), out).name == "case 1 é.mask.tif"

    store = PatchStore.create_or_open(tmp_path / "p.zarr")
    names = store.assign_names([Path("/a/../x.svs"), Path("/b/..svs"), Path("/c/x.svs")])
    assert names == ["x", "slide", "x-2"]
    for bad in ("../outside", "..", "a/b"):
        with pytest.raises(ValueError):
            store.create_slide_group(bad, coords0=np.zeros((0, 2)), tissue=np.zeros(0), patch_px=8, batch=1,
                                     with_labels=False, codec=parse_codec("zstd"), attrs={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr"]


def test_a_slide_named_dot_dot_is_tiled_and_predicted_inside_its_folders(catalogue_inputs, tmp_path):
    slides = tmp_path / "in"
    slides.mkdir()
    hostile = slides / "..svs"  # stem ".."
    hostile.write_bytes(Path(catalogue_inputs["good"]).read_bytes())
    store, masks = tmp_path / "out" / "p.zarr", tmp_path / "out" / "masks"
    masks.parent.mkdir()
    result = CliRunner().invoke(main, ["tile", str(slides), "-o", str(store), "--mpp", "2", "--patch", "64",
                                       "--quiet", "--workers", "1"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["predict", str(slides), "-o", str(masks), "--model",
                                       catalogue_inputs["model"], "--tile", "128", "--overlap", "32",
                                       "--no-progress"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in store.iterdir()) == ["slide", "zarr.json"]
    assert [p.name for p in masks.iterdir()] == ["slide.mask.tif"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["masks", "p.zarr"]


def test_a_zarr_v2_folder_is_not_taken_for_a_patch_store(tmp_path):
    import zarr

    from wsi_seg.io.store import open_patch_store

    root = zarr.open_group(str(tmp_path / "v2.zarr"), mode="w", zarr_format=2)
    root.attrs.update({"format": "wsi-seg-patches", "format_version": 1})
    with pytest.raises(InputError, match="not a wsi-seg patch store"):
        open_patch_store(tmp_path / "v2.zarr")


# ----------------------------------------------------------------------------- HTML


def test_names_in_the_review_page_are_escaped():
    from wsi_seg.review.areas import ClassArea
    from wsi_seg.review.viewer import render_page

    slide = '<script>alert("slide")</script> & "q" \'s\'.svs'
    areas = [ClassArea(0, "background", (0, 0, 0), 10, 0.1, None),
             ClassArea(1, '<img src=x onerror=alert(1)>', (255, 0, 0), 5, 0.05, 100.0),
             ClassArea(2, "</script><script>alert(2)</script>", (0, 255, 0), 0, 0.0, 0.0),
             ClassArea(3, "{{TITLE}}", (0, 0, 255), 0, 0.0, 0.0)]
    page = render_page(slide_name=slide, areas=areas, alpha=0.4, mpp=0.5,
                       geometry={"width": 10, "height": 10, "tileSize": 254, "overlap": 1, "maxLevel": 4,
                                 "format": "jpeg"})
    for raw in ('<script>alert("slide")', "<img src=x", "</script><script>alert(2)", "onerror=alert(1)>"):
        assert raw not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "&lt;script&gt;alert(&quot;slide&quot;)" in page
    assert page.count("<script") == page.count("</script>")  # only the page's own scripts
    assert "{{TITLE}}" in page  # a class named like a marker is text, not a marker


# ----------------------------------------------------------------------------- size bounds


def test_a_2_gb_geojson_fails_fast_without_reading(tmp_path):
    huge = sparse_file(tmp_path / "huge.geojson", 2 * 1024**3)
    started = time.perf_counter()
    with pytest.raises(InputError) as info:
        annotations.parse_geojson(huge, ["background", "tumour"])
    assert time.perf_counter() - started < 2
    assert str(info.value).startswith(f"{huge}: 2,147,483,648 bytes, larger than the limit")


def _polygon_file(path: Path, vertices: int) -> Path:
    angles = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    ring = [[round(500 + 400 * np.cos(a), 2), round(500 + 400 * np.sin(a), 2)] for a in angles]
    import json

    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]},
               "properties": {"classification": {"name": "tumour"}}}
    path.write_text(json.dumps({"type": "FeatureCollection", "features": [feature]}), encoding="utf-8")
    return path


def test_a_polygon_beyond_the_vertex_limit_fails_before_parsing(tmp_path, monkeypatch):
    monkeypatch.setattr(annotations, "MAX_GEOJSON_VERTICES", 1000)
    calls = []
    monkeypatch.setattr(annotations.json, "loads", lambda *a, **k: calls.append(1))
    path = _polygon_file(tmp_path / "many.geojson", 100_000)  # a stand-in for a billion vertices
    with pytest.raises(InputError, match=r"about 100,\d{3} coordinates, more than the limit of 1,000"):
        annotations.parse_geojson(path, ["background", "tumour"])
    assert not calls  # refused from the raw bytes: the document was never built


def test_the_vertex_limit_counts_exactly_after_parsing(tmp_path, monkeypatch):
    monkeypatch.setattr(annotations, "MAX_GEOJSON_VERTICES", 1000)
    ok = annotations.parse_geojson(_polygon_file(tmp_path / "ok.geojson", 900), ["background", "tumour"])
    assert len(ok) == 1 and len(ok[0].exterior) == 901
    with pytest.raises(InputError, match="more than 1,000 polygon vertices"):
        annotations.parse_geojson(_polygon_file(tmp_path / "over.geojson", 1200), ["background", "tumour"])


@pytest.mark.parametrize("document", [
    '{"type": "FeatureCollection", "features": [1, 2]}',
    '{"type": "FeatureCollection", "features": [{"geometry": "Polygon"}]}',
    '{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": 7}, '
    '"properties": {"classification": {"name": "tumour"}}}',
    '{"type": "Feature", "geometry": {"type": "MultiPolygon", "coordinates": [3]}, '
    '"properties": {"classification": {"name": "tumour"}}}',
    '[' * 100_000 + ']' * 100_000,
])
def test_malformed_geojson_is_one_input_error(tmp_path, document):
    path = tmp_path / "bad.geojson"
    path.write_text(document, encoding="utf-8")
    with pytest.raises(InputError) as info:
        annotations.parse_geojson(path, ["background", "tumour"])
    assert str(info.value).startswith(f"{path}: ")


def test_a_png_declaring_gigapixels_is_refused_before_decoding(tmp_path):
    from wsi_seg.errors import SlideError
    from wsi_seg.io.annotations import RasterLabelSource
    from wsi_seg.io.slide import open_slide

    bomb = png_bomb(tmp_path / "bomb.png", 60_000, 60_000)
    started = time.perf_counter()
    with pytest.raises(SlideError, match="60000 x 60000 px, more than the 1,073,741,824 pixels"):
        open_slide(bomb)
    with pytest.raises(InputError, match="60000 x 60000 px, more than"):
        RasterLabelSource(bomb, slide_size0=(60_000, 60_000), slide_mpp=0.5, num_classes=8)
    assert time.perf_counter() - started < 2


def test_configs_are_bounded(tmp_path):
    from wsi_seg.config import MAX_CONFIG_BYTES, load_train_config, read_class_list

    huge = sparse_file(tmp_path / "huge.yaml", MAX_CONFIG_BYTES + 1)
    for read in (load_train_config, read_class_list):
        with pytest.raises(ConfigError, match=f"{MAX_CONFIG_BYTES + 1:,} bytes, larger than the limit"):
            read(huge)
    # a few hundred bytes that would expand to 10^9 values through aliases
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\n", encoding="utf-8")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="once YAML aliases are expanded, more than the limit"):
        load_train_config(bomb)
    assert time.perf_counter() - started < 2
    cyclic = tmp_path / "cyclic.yaml"
    cyclic.write_text("a: &a [1, *a]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="refers to itself"):
        load_train_config(cyclic)


def test_marker_of_the_catalogue_never_appeared(catalogue_inputs):
    assert not Path(catalogue_inputs["marker"]).exists()
    assert not any(Path(catalogue_inputs["root"]).rglob(MARKER_NAME))
    assert os.path.isfile(os.path.join(catalogue_inputs["ckpt"], "evil.pt"))
