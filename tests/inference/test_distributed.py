"""Tiling and prediction on a dask.distributed cluster of two worker processes on loopback:
outputs equal a local run, the model is loaded once per worker, bad addresses fail fast."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile
import torch
from click.testing import CliRunner

from wsi_seg.cli import main
from wsi_seg.errors import BatchError
from wsi_seg.inference.predictor import ModelSpec, make_predictor
from wsi_seg.inference.slide import PredictOptions, output_path_for, predict_slides
from wsi_seg.inference.workers import worker_counts
from wsi_seg.io.store import open_patch_store
from wsi_seg.models import create_model
from wsi_seg.models.checkpoint import make_checkpoint, save_checkpoint
from wsi_seg.synth import BIOPSY_CLASSES, synthesize_slide
from wsi_seg.tiling import tile_slides

OPTIONS = dict(tile=128, overlap=32, batch_size=2, progress=False)


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes on 127.0.0.1, started once for the module."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as local, Client(local) as client:
        yield local, client


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Three small synthetic slides (and their label masks) and an untrained espnet_c checkpoint at 2 um/px."""
    root = tmp_path_factory.mktemp("distributed")
    slides = root / "slides"
    slides.mkdir()
    for index, width in enumerate((1024, 1280, 1536)):
        synthesize_slide(slides, f"slide {index}", width=width, height=768, mpp=0.5, seed=10 + index)
    torch.manual_seed(0)
    model = create_model("espnet_c", len(BIOPSY_CLASSES), alpha3=1)
    ckpt = make_checkpoint("espnet_c", len(BIOPSY_CLASSES), {"alpha3": 1}, model.state_dict(),
                           class_names=[n for n, _ in BIOPSY_CLASSES], class_colors=[c for _, c in BIOPSY_CLASSES],
                           mpp=2.0, patch_size=128)
    return slides, save_checkpoint(ckpt, root / "model.pt")


def _slides(folder):
    return sorted(folder.glob("*.svs"))


def _pages(path):
    with tifffile.TiffFile(path) as tif:
        return [page.asarray() for page in tif.pages]


def _assert_same_masks(first, second, names):
    for name in names:
        a, b = _pages(first / name), _pages(second / name)
        assert len(a) == len(b) > 1, name  # the full pyramid
        for level, (x, y) in enumerate(zip(a, b)):
            assert x.dtype == y.dtype and np.array_equal(x, y), f"{name} level {level}"


def _counts(client):
    return {info["pid"]: info for info in client.run(worker_counts).values()}


def test_cluster_predict_equals_local_run_and_loads_the_model_once_per_worker(cluster, data, tmp_path):
    _, client = cluster
    slides, ckpt = data
    model_path = tmp_path / "fresh.pt"  # a file no worker has loaded yet
    shutil.copy(ckpt, model_path)
    paths = _slides(slides)

    local_out, cluster_out = tmp_path / "local", tmp_path / "cluster"
    local_out.mkdir()
    cluster_out.mkdir()
    local = predict_slides(paths, local_out, make_predictor(model_path), PredictOptions(**OPTIONS),
                           report=lambda line: None)

    before = _counts(client)
    lines = []
    remote = predict_slides(paths, cluster_out, ModelSpec(model_path), PredictOptions(**OPTIONS), report=lines.append,
                            client=client)
    after = _counts(client)

    names = [output_path_for(path, cluster_out).name for path in paths]
    assert sorted(p.name for p in cluster_out.iterdir()) == sorted(names)  # no temporary files left
    _assert_same_masks(local_out, cluster_out, names)
    assert [r.slide for r in remote] == paths and [r.output for r in remote] == [cluster_out / n for n in names]
    assert [r.class_pixels for r in remote] == [r.class_pixels for r in local]
    assert sorted(line.split(" (")[0] for line in lines) == sorted(f"wrote {cluster_out / n}" for n in names)

    assert set(after) == set(before) and os.getpid() not in after  # the work ran in the two worker processes
    slides_run = {pid: after[pid]["slides"] - before[pid]["slides"] for pid in after}
    loads = {pid: after[pid]["loads"] - before[pid]["loads"] for pid in after}
    used = [pid for pid, count in slides_run.items() if count]
    assert sum(slides_run.values()) == 3
    assert sum(loads.values()) == len(used)  # one load per worker process used, not one per slide
    assert all(loads[pid] == 1 for pid in used)
    assert max(slides_run.values()) >= 2  # a worker ran several slides on its one load


def test_cluster_predict_skips_existing_masks_and_reports_failures_at_the_end(cluster, data, tmp_path):
    _, client = cluster
    slides, ckpt = data
    folder = tmp_path / "slides"
    folder.mkdir()
    for path in _slides(slides)[:2]:
        shutil.copy(path, folder / path.name)
    (folder / "empty.svs").write_bytes(b"")
    out = tmp_path / "masks"
    out.mkdir()
    first = _slides(slides)[0]
    kept = output_path_for(first, out)
    kept.write_bytes(b"kept")

    lines = []
    with pytest.raises(BatchError) as caught:
        predict_slides(_slides(folder), out, ModelSpec(ckpt), PredictOptions(**OPTIONS), report=lines.append,
                       client=client)
    ((item, reason),) = caught.value.failures
    assert item.endswith("empty.svs") and caught.value.total == 3
    assert "\n" not in reason and not reason.startswith(str(folder))
    assert any(line.startswith(f"skip {first.name}: ") for line in lines)
    assert kept.read_bytes() == b"kept"
    assert sorted(out.iterdir()) == sorted(output_path_for(p, out) for p in _slides(slides)[:2])

    redone = predict_slides([folder / first.name], out, ModelSpec(ckpt), PredictOptions(**OPTIONS), overwrite=True,
                            report=lines.append, client=client)
    assert len(redone) == 1 and _pages(kept)[0].shape == (768, 1024)


def test_predict_cli_with_scheduler_equals_local_run(cluster, data, tmp_path):
    local_cluster, _ = cluster
    slides, ckpt = data
    common = ["--model", ckpt, "--tile", "128", "--overlap", "32", "--batch-size", "2", "--no-progress"]
    runner = CliRunner()

    def run(*args):
        return runner.invoke(main, ["predict", *map(str, args), *map(str, common)])

    result = run(slides, "-o", tmp_path / "local")
    assert result.exit_code == 0, result.output
    result = run(slides, "-o", tmp_path / "remote", "--scheduler", local_cluster.scheduler_address)
    assert result.exit_code == 0, result.output
    assert "done: 3 predicted, 0 skipped" in result.output
    _assert_same_masks(tmp_path / "local", tmp_path / "remote",
                       [output_path_for(p, tmp_path).name for p in _slides(slides)])
    one = _slides(slides)[1]
    result = run(one, "-o", tmp_path / "one.mask.tif", "--scheduler", local_cluster.scheduler_address)
    assert result.exit_code == 0 and f"wrote {tmp_path / 'one.mask.tif'}" in result.output, result.output
    assert np.array_equal(_pages(tmp_path / "one.mask.tif")[0], _pages(output_path_for(one, tmp_path / "local"))[0])


def test_a_bad_slide_on_the_cluster_is_one_line_and_no_worker_traceback(data, tmp_path):
    # a real command: the workers' own log output lands on the command's stderr
    slides, ckpt = data
    folder = tmp_path / "batch"
    folder.mkdir()
    good = _slides(slides)[0]
    (folder / good.name).symlink_to(good)
    (folder / "empty.svs").write_bytes(b"")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "wsi_seg", "predict", str(folder), "-o", str(out), "--model",
                           str(ckpt), "--tile", "128", "--overlap", "32", "--no-progress", "--cluster", "local:2"],
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 1, done.stderr
    assert output_path_for(good, out).is_file() and not (out / "empty.mask.tif").exists()
    assert "Traceback" not in done.stderr and "Compute Failed" not in done.stderr, done.stderr
    failed = [line for line in done.stderr.splitlines() if line.startswith("wsi-seg: failed:")]
    assert len(failed) == 1 and "empty.svs" in failed[0], done.stderr


def _store_arrays(store):
    return {slide.name: {key: np.asarray(slide.group[key][...]) for key in slide.group.array_keys()}
            for slide in open_patch_store(store)}


def test_cluster_tiling_equals_local_run(cluster, data, tmp_path):
    _, client = cluster
    slides, _ = data
    options = dict(masks_dir=slides, mpp=2.0, patch=64, batch=8, progress=False)
    tile_slides([slides], tmp_path / "local.zarr", **options)
    summary = tile_slides([slides], tmp_path / "cluster.zarr", scheduler=client, **options)
    assert len(summary.done) == 3 and not summary.failed
    local, remote = _store_arrays(tmp_path / "local.zarr"), _store_arrays(tmp_path / "cluster.zarr")
    assert local.keys() == remote.keys() and len(local) == 3
    for name in local:
        assert local[name].keys() == remote[name].keys() and "label" in local[name]
        for key in local[name]:
            np.testing.assert_array_equal(local[name][key], remote[name][key], err_msg=f"{name}/{key}")


def test_tile_cli_with_a_local_cluster(data, tmp_path):
    slides, _ = data
    store = tmp_path / "p.zarr"
    result = CliRunner().invoke(main, ["tile", str(slides), "-o", str(store), "--masks", str(slides), "--mpp", "2",
                                       "--patch", "64", "--quiet", "--cluster", "local:2"])
    assert result.exit_code == 0, result.output
    assert "3 slide(s) tiled, 0 skipped (complete), 0 failed" in result.output
    local = tmp_path / "local.zarr"
    tile_slides([slides], local, masks_dir=slides, mpp=2.0, patch=64, progress=False)
    first, second = _store_arrays(local), _store_arrays(store)
    assert first.keys() == second.keys()
    for name in first:
        for key in first[name]:
            np.testing.assert_array_equal(first[name][key], second[name][key], err_msg=f"{name}/{key}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_scheduler_fails_fast_with_one_line(data, tmp_path):
    slides, ckpt = data
    address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    commands = {
        "predict": ["predict", slides, "-o", tmp_path / "masks", "--model", ckpt, "--tile", "128", "--overlap", "32",
                    "--scheduler", address],
        "tile": ["tile", slides, "-o", tmp_path / "p.zarr", "--scheduler", address],
    }
    started = time.perf_counter()
    running = {name: subprocess.Popen([sys.executable, "-m", "wsi_seg", *map(str, args)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
               for name, args in commands.items()}
    for name, process in running.items():  # both run at once; each must end within 30 s of the start
        out, err = process.communicate(timeout=60)
        elapsed = time.perf_counter() - started
        assert elapsed < 30, f"{name} took {elapsed:.1f} s"
        assert process.returncode == 2, (name, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"wsi-seg: error: --scheduler {address}: cannot connect"), err
    assert not (tmp_path / "masks").exists() and not (tmp_path / "p.zarr").exists()
