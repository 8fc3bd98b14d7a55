"""Dask tiling into the zarr patch store, on small slides written in fixtures and a real one."""

import json
import shutil

import numpy as np
import openslide
import pytest
import zarr
from PIL import Image
from scipy import ndimage

from wsi_seg.errors import InputError
from wsi_seg.io.store import open_patch_store
from wsi_seg.io.tiff import write_aperio_svs, write_pyramidal_tiff
from wsi_seg.synth import BIOPSY_CLASSES
from wsi_seg.tiling import discover_slides, tile_slides

CLASSES = ("background", "benign", "malignant", "stroma")
COLOURS = np.array([[255, 255, 255], [190, 70, 160], [110, 40, 150], [235, 130, 190]], dtype=np.uint8)
SLIDE_MPP = 0.5


def _labels(width, height):
    """A known label layout: three tissue regions not aligned with any patch grid.

    Edges sit on multiples of 8 level-0 pixels so that nearest sampling gives the same
    labels whether it reads level 0 or a reduced level of the label pyramid.
    """
    def at(fraction, extent):
        return int(fraction * extent) // 8 * 8

    labels = np.zeros((height, width), dtype=np.uint8)
    labels[at(0.13, height):at(0.85, height), at(0.15, width):at(0.44, width)] = 1
    labels[at(0.2, height):at(0.78, height), at(0.49, width):at(0.88, width)] = 3
    labels[at(0.33, height):at(0.59, height), at(0.59, width):at(0.73, width)] = 2
    return labels


def make_slide(folder, name, width=2048, height=1536, mpp=SLIDE_MPP, labels=None, mask=True):
    """An Aperio SVS whose pixels are the class colours of ``labels`` (+ its label TIFF)."""
    labels = _labels(width, height) if labels is None else labels
    rgb = COLOURS[labels]
    write_aperio_svs(folder / f"{name}.svs", width=width, height=height, band_height=256, mpp=mpp,
                     bands=(rgb[row:row + 256] for row in range(0, height, 256)))
    if mask:
        write_pyramidal_tiff(folder / f"{name}.mask.tif", width=width, height=height, band_height=256, mpp=mpp,
                             bands=(labels[row:row + 256] for row in range(0, height, 256)),
                             colormap=COLOURS, compression="zstd")
    return labels


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slides")
    labels = {"a": make_slide(folder, "a"), "b": make_slide(folder, "b", width=1536, height=1280)}
    return folder, labels


def _arrays(store):
    return {slide.name: {key: np.asarray(slide.group[key][...]) for key in slide.group.array_keys()}
            for slide in open_patch_store(store)}


def _assert_same_arrays(first, second):
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].keys() == second[name].keys()
        for key in first[name]:
            np.testing.assert_array_equal(first[name][key], second[name][key], err_msg=f"{name}/{key}")


def test_patches_equal_openslide_pixels_at_the_slide_mpp(slides, tmp_path):
    folder, _ = slides
    store = tmp_path / "p.zarr"
    summary = tile_slides([folder / "a.svs"], store, class_names=CLASSES, mpp=SLIDE_MPP, patch=256,
                          min_tissue=0.3, progress=False)
    assert summary.done and not summary.failed
    (slide,) = open_patch_store(store)
    assert len(slide) > 5 and summary.patches_written == len(slide)
    with openslide.OpenSlide(str(folder / "a.svs")) as reference:
        for index in range(len(slide)):
            x0, y0 = slide.coords[index].tolist()
            expected = np.asarray(reference.read_region((x0, y0), 0, (256, 256)).convert("RGB"))
            np.testing.assert_array_equal(slide.image[index], expected)
    attrs = slide.attrs
    assert (attrs["slide_width"], attrs["slide_height"], attrs["slide_mpp"]) == (2048, 1536, SLIDE_MPP)
    assert (attrs["mpp"], attrs["patch"], attrs["stride"]) == (SLIDE_MPP, 256, 256)
    assert attrs["class_names"] == list(CLASSES) and attrs["complete"] is True
    assert np.all(slide.tissue >= 0.3)


def test_labels_line_up_with_images(slides, tmp_path):
    folder, labels = slides
    store = tmp_path / "p.zarr"
    summary = tile_slides([folder], store, masks_dir=folder, class_names=CLASSES, mpp=1.0, patch=128,
                          stride=96, progress=False)
    assert sorted(summary.groups.values()) == ["a", "b"] and len(summary.done) == 2
    for slide in open_patch_store(store):
        truth = labels[slide.name]
        height0, width0 = truth.shape
        assert slide.label is not None and len(slide) > 10
        seen = set()
        for index in range(len(slide)):
            x0, y0 = slide.coords[index].tolist()
            # nearest sampling: target pixel (r, c) is level-0 pixel (y0 + 2r + 1, x0 + 2c + 1)
            rows, cols = y0 + 2 * np.arange(128) + 1, x0 + 2 * np.arange(128) + 1
            expected = np.zeros((128, 128), dtype=np.uint8)
            row_ok, col_ok = rows < height0, cols < width0
            expected[np.ix_(row_ok, col_ok)] = truth[np.ix_(rows[row_ok], cols[col_ok])]
            label = slide.label[index]
            np.testing.assert_array_equal(label, expected)
            image = slide.image[index].astype(int)
            for class_id in np.unique(label):
                interior = ndimage.binary_erosion(label == class_id, iterations=3)
                if interior.any():
                    seen.add(int(class_id))
                    error = np.abs(image[interior] - COLOURS[class_id]).max()
                    assert error <= 12, (slide.name, index, class_id, error)
        assert seen >= {1, 2, 3}


def test_geojson_labels_through_tiling(tmp_path):
    labels = np.zeros((1024, 1024), dtype=np.uint8)
    labels[100:900, 150:700] = 1
    labels[300:500, 300:500] = 0  # a hole
    labels[200:800, 750:950] = 2
    make_slide(tmp_path, "g", width=1024, height=1024, labels=labels, mask=False)
    square = lambda x0, y0, x1, y1: [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]  # noqa: E731
    features = [
        {"type": "Feature", "properties": {"classification": {"name": "benign"}},
         "geometry": {"type": "Polygon", "coordinates": [square(150, 100, 700, 900), square(300, 300, 500, 500)]}},
        {"type": "Feature", "properties": {"classification": {"name": "Malignant"}},
         "geometry": {"type": "MultiPolygon", "coordinates": [[square(750, 200, 950, 800)]]}},
    ]
    masks = tmp_path / "masks"
    masks.mkdir()
    (masks / "g.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    tile_slides([tmp_path / "g.svs"], tmp_path / "p.zarr", masks_dir=masks, class_names=CLASSES, mpp=SLIDE_MPP,
                patch=128, min_tissue=0.2, progress=False)
    (slide,) = open_patch_store(tmp_path / "p.zarr")
    assert len(slide) > 10
    for index in range(len(slide)):
        x0, y0 = slide.coords[index].tolist()
        np.testing.assert_array_equal(slide.label[index], labels[y0:y0 + 128, x0:x0 + 128])


def test_resume_rebuilds_a_partial_group_to_identical_arrays(slides, tmp_path):
    folder, _ = slides
    options = dict(masks_dir=folder, class_names=CLASSES, mpp=1.0, patch=128, batch=4, progress=False)
    reference = tmp_path / "reference.zarr"
    tile_slides([folder], reference, **options)
    store = tmp_path / "p.zarr"
    tile_slides([folder], store, **options)
    # simulate an interruption in slide b: flag not written, one batch never written
    group = zarr.open_group(str(store / "b"), mode="r+")
    group.attrs["complete"] = False
    shutil.rmtree(store / "b" / "image" / "c" / "1")
    assert [slide.name for slide in open_patch_store(store)] == ["a"]
    a_chunks = sorted(p.stat().st_mtime_ns for p in (store / "a").rglob("*") if p.is_file())
    summary = tile_slides([folder], store, **options)
    assert [s.split("/")[-1] for s in summary.skipped] == ["a.svs"]
    assert [s.split("/")[-1] for s in summary.done] == ["b.svs"]
    assert sorted(p.stat().st_mtime_ns for p in (store / "a").rglob("*") if p.is_file()) == a_chunks
    _assert_same_arrays(_arrays(reference), _arrays(store))


def test_changed_parameters_need_overwrite(slides, tmp_path):
    folder, _ = slides
    store = tmp_path / "p.zarr"
    tile_slides([folder / "a.svs"], store, class_names=CLASSES, mpp=1.0, patch=128, progress=False)
    summary = tile_slides([folder / "a.svs"], store, class_names=CLASSES, mpp=1.0, patch=64, progress=False)
    ((item, reason),) = summary.failed
    assert item.endswith("a.svs") and "patch 128 (now 64)" in reason and "--overwrite" in reason
    summary = tile_slides([folder / "a.svs"], store, class_names=CLASSES, mpp=1.0, patch=64, overwrite=True,
                          progress=False)
    assert len(summary.done) == 1
    assert open_patch_store(store)[0].image.shape[1:] == (64, 64, 3)


def test_distributed_cluster_equals_threaded_run(slides, tmp_path):
    from distributed import Client, LocalCluster

    folder, _ = slides
    options = dict(masks_dir=folder, class_names=CLASSES, mpp=1.0, patch=128, batch=8, progress=False)
    tile_slides([folder], tmp_path / "threads.zarr", **options)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        summary = tile_slides([folder], tmp_path / "cluster.zarr", scheduler=client, **options)
    assert len(summary.done) == 2 and not summary.failed
    _assert_same_arrays(_arrays(tmp_path / "threads.zarr"), _arrays(tmp_path / "cluster.zarr"))


def test_bad_slides_are_reported_and_the_batch_goes_on(slides, tmp_path, real_dir):
    folder, _ = slides
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(folder / "a.svs", bad / "good.svs")
    shutil.copy(folder / "a.mask.tif", bad / "good.mask.tif")
    data = (folder / "a.svs").read_bytes()
    (bad / "truncated.svs").write_bytes(data[: len(data) // 2])
    (bad / "empty.svs").write_bytes(b"")
    shutil.copy(folder / "a.svs", bad / "squashed.svs")
    Image.fromarray(np.zeros((100, 300), dtype=np.uint8)).save(bad / "squashed.png")
    shutil.copy(folder / "a.svs", bad / "wild.svs")
    wild = np.zeros((96, 128), dtype=np.uint8)
    wild[50:60, 50:60] = 9
    Image.fromarray(wild).save(bad / "wild.png")
    inputs = [bad, tmp_path / "missing.svs", real_dir / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"]
    summary = tile_slides(inputs, tmp_path / "p.zarr", masks_dir=bad, class_names=CLASSES, mpp=1.0, patch=128,
                          progress=False)
    assert [s.split("/")[-1] for s in summary.done] == ["good.svs"]
    reasons = {item.split("/")[-1]: reason for item, reason in summary.failed}
    assert set(reasons) == {"empty.svs", "squashed.svs", "truncated.svs", "wild.svs", "missing.svs",
                            "tcga-cr-7395-01a-01-ts1.svs"}
    assert "empty file" in reasons["empty.svs"]
    assert "no such file" in reasons["missing.svs"]
    assert "--slide-mpp" in reasons["tcga-cr-7395-01a-01-ts1.svs"]
    assert "squashed.png: mask aspect ratio" in reasons["squashed.svs"]
    assert "wild.png: label value 9 is outside the class list" in reasons["wild.svs"]
    assert reasons["truncated.svs"]
    assert all("\n" not in reason for reason in reasons.values())
    assert [slide.name for slide in open_patch_store(tmp_path / "p.zarr")] == ["good"]
    root = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")
    assert sorted(root.group_keys()) == ["good"]  # failed slides leave no group behind


def test_all_glass_slide_gives_an_empty_complete_group(tmp_path):
    make_slide(tmp_path, "glass", width=1024, height=768, labels=np.zeros((768, 1024), dtype=np.uint8), mask=False)
    summary = tile_slides([tmp_path / "glass.svs"], tmp_path / "p.zarr", mpp=1.0, patch=128, progress=False)
    assert len(summary.done) == 1 and summary.patches_written == 0
    (slide,) = open_patch_store(tmp_path / "p.zarr")
    assert len(slide) == 0 and slide.attrs["complete"] is True and slide.label is None
    # without a class list, the biopsy classes of the configuration are used
    assert slide.attrs["class_names"] == [name for name, _ in BIOPSY_CLASSES]


def test_real_aperio_slide_patches_equal_openslide(real_dir, tmp_path):
    path = real_dir / "wsi" / "cmu-1-small-region.svs"
    with openslide.OpenSlide(str(path)) as reference:
        slide_mpp = float(reference.properties[openslide.PROPERTY_NAME_MPP_X])
        summary = tile_slides([path], tmp_path / "p.zarr", class_names=CLASSES, mpp=slide_mpp, patch=256,
                              min_tissue=0.6, progress=False)
        assert len(summary.done) == 1
        (slide,) = open_patch_store(tmp_path / "p.zarr")
        assert 5 < len(slide) < 100  # a tissue section on glass: some patches, not all 9 x 12
        for index in range(0, len(slide), 3):
            x0, y0 = slide.coords[index].tolist()
            expected = np.asarray(reference.read_region((x0, y0), 0, (256, 256)).convert("RGB"))
            np.testing.assert_array_equal(slide.image[index], expected)


def test_discover_slides(tmp_path):
    (tmp_path / "x.svs").write_bytes(b"1")
    (tmp_path / "x.mask.tif").write_bytes(b"1")
    (tmp_path / "y.ndpi").write_bytes(b"1")
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in discover_slides([tmp_path])] == ["x.svs", "y.ndpi"]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="empty: no slide files found"):
        discover_slides([empty])


def test_label_images_next_to_slides_are_not_slides(tmp_path):
    for name in ("a.svs", "a.png", "a.geojson", "b.ndpi", "c.png"):
        (tmp_path / name).write_bytes(b"1")
    assert [p.name for p in discover_slides([tmp_path], masks_dir=tmp_path)] == ["a.svs", "b.ndpi", "c.png"]
    assert [p.name for p in discover_slides([tmp_path])] == ["a.png", "a.svs", "b.ndpi", "c.png"]
