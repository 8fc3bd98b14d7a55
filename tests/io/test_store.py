"""The zarr patch store: layout, names, completion flag, codecs, reader validation."""

import json

import numpy as np
import pytest
import zarr

from wsi_seg.errors import InputError, OutputError
from wsi_seg.io.store import (
    FORMAT_VERSION,
    PatchStore,
    open_patch_store,
    parse_codec,
    sanitise_slide_id,
    write_patch_batch,
)


def _make_group(store, name, count=40, patch=32, batch=16, codec="zstd:1", labels=True):
    coords = np.arange(count * 2, dtype=np.int64).reshape(count, 2)
    tissue = np.linspace(0.5, 1.0, count, dtype=np.float32)
    store.create_slide_group(name, coords0=coords, tissue=tissue, patch_px=patch, batch=batch,
                             with_labels=labels, codec=parse_codec(codec), attrs={"source": f"/x/{name}.svs"})
    return coords, tissue


def test_layout_attrs_and_completion(tmp_path):
    path = tmp_path / "p.zarr"
    store = PatchStore.create_or_open(path)
    coords, tissue = _make_group(store, "a")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 8, (40, 32, 32), dtype=np.uint8)
    for start in (0, 16, 32):
        write_patch_batch(path, "a", start, images[start:start + 16], labels[start:start + 16])
    assert open_patch_store(path) == []  # not complete yet: readers do not see it
    store.mark_complete("a")
    (slide,) = open_patch_store(path)
    assert slide.name == "a" and len(slide) == 40
    assert slide.image.shape == (40, 32, 32, 3)
    assert slide.image.chunks == (1, 32, 32, 3) and slide.image.shards == (16, 32, 32, 3)
    assert slide.label.chunks == (1, 32, 32) and slide.label.shards == (16, 32, 32)
    np.testing.assert_array_equal(slide.image[...], images)
    np.testing.assert_array_equal(slide.label[...], labels)
    np.testing.assert_array_equal(slide.coords, coords)
    np.testing.assert_array_equal(slide.tissue, tissue)
    attrs = slide.attrs
    assert attrs["complete"] is True and attrs["format_version"] == FORMAT_VERSION
    assert attrs["source"] == "/x/a.svs" and attrs["codec"] == "zstd:1" and attrs["has_labels"] is True
    root = json.loads((path / "zarr.json").read_text())
    assert root["attributes"]["format_version"] == FORMAT_VERSION


def test_empty_group_and_no_labels(tmp_path):
    store = PatchStore.create_or_open(tmp_path / "p.zarr")
    _make_group(store, "glass", count=0, labels=False)
    store.mark_complete("glass")
    (slide,) = open_patch_store(tmp_path / "p.zarr")
    assert len(slide) == 0 and slide.label is None and slide.coords.shape == (0, 2)


def test_image_codec_round_trip(tmp_path):
    path = tmp_path / "p.zarr"
    store = PatchStore.create_or_open(path)
    _make_group(store, "j", count=16, codec="jpeg:95", labels=True)
    yy, xx = np.mgrid[0:32, 0:32]
    smooth = np.stack([xx * 4, yy * 4, (xx + yy) * 2], axis=-1).astype(np.uint8)
    images = np.repeat(smooth[None], 16, axis=0)
    labels = np.full((16, 32, 32), 7, dtype=np.uint8)
    write_patch_batch(path, "j", 0, images, labels)
    store.mark_complete("j")
    (slide,) = open_patch_store(path)
    assert slide.image.chunks == (1, 32, 32, 3)  # one JPEG per patch
    difference = np.abs(slide.image[...].astype(int) - images.astype(int))
    assert 0 < difference.max() < 20  # lossy but close
    np.testing.assert_array_equal(slide.label[...], labels)  # labels stay lossless


def test_parse_codec():
    assert str(parse_codec("zstd")) == "zstd" and parse_codec("ZSTD:1").level == 1
    assert parse_codec("blosc-lz4").lossless and not parse_codec("webp:80").lossless
    for bad in ("gzip", "zstd:x", "none:3"):
        with pytest.raises(InputError):
            parse_codec(bad)


def test_sanitised_names_and_stable_deduplication(tmp_path):
    assert sanitise_slide_id("/d/my slide (1).svs") == "my_slide_1"
    assert sanitise_slide_id("case.ome.tiff") == "case"
    assert sanitise_slide_id("...svs") == "slide"
    store = PatchStore.create_or_open(tmp_path / "p.zarr")
    first, second = tmp_path / "a" / "x.svs", tmp_path / "b" / "x.svs"
    assert store.assign_names([first, second]) == ["x", "x-2"]
    store.create_slide_group("x-2", coords0=np.zeros((0, 2)), tissue=np.zeros(0), patch_px=8, batch=1,
                             with_labels=False, codec=parse_codec("zstd"), attrs={"source": str(second.resolve())})
    # the group made for b/x.svs keeps its name whatever the order of the inputs
    assert store.assign_names([second, first]) == ["x-2", "x"]


def test_refuses_what_is_not_a_patch_store(tmp_path):
    a_file = tmp_path / "f.zarr"
    a_file.write_text("x")
    with pytest.raises(OutputError, match="f.zarr"):
        PatchStore.create_or_open(a_file)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    with pytest.raises(OutputError, match="not a wsi-seg patch store"):
        PatchStore.create_or_open(other)
    plain = zarr.open_group(str(tmp_path / "plain.zarr"), mode="w")
    plain.attrs["x"] = 1
    with pytest.raises(OutputError, match="missing format"):
        PatchStore.create_or_open(tmp_path / "plain.zarr")
    with pytest.raises(InputError, match="not found"):
        open_patch_store(tmp_path / "missing.zarr")


def test_delete_group(tmp_path):
    store = PatchStore.create_or_open(tmp_path / "p.zarr")
    _make_group(store, "a", count=4)
    store.delete_group("a")
    assert store.group_names() == [] and not (tmp_path / "p.zarr" / "a").exists()
