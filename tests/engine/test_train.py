import csv
import logging
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wsi_seg.config import parse_train_config
from wsi_seg.data.patches import PatchDataset
from wsi_seg.engine.losses import downsample_labels, enet_class_weights, segmentation_loss
from wsi_seg.engine.train import EpochSampler, train, transfer_weights
from wsi_seg.errors import WsiSegError
from wsi_seg.models import create_model
from wsi_seg.models.checkpoint import IMAGENET_NORMALIZATION, load_checkpoint, make_checkpoint, read_checkpoint, \
    save_checkpoint
from wsi_seg.synth import BIOPSY_CLASSES, synthesize_slide
from wsi_seg.tiling import tile_slides

CLASSES = [{"name": n, "color": list(c)} for n, c in BIOPSY_CLASSES]


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    """Three synthetic 2048x1536 slides (mpp 0.5) tiled at mpp 2.0 into 128 px patches."""
    root = tmp_path_factory.mktemp("train_store")
    for i in range(3):
        synthesize_slide(root / "slides", f"s{i}", width=2048, height=1536, mpp=0.5, seed=10 + i)
    tile_slides([root / "slides"], root / "p.zarr", masks_dir=root / "slides", mpp=2.0, patch=128,
                min_tissue=0.2, progress=False, workers=1)
    return root / "p.zarr"


def _config(store, out, **changes):
    raw = {
        "model": {"name": "espnet"},
        "classes": CLASSES,
        "data": {"store": str(store), "val_slides": ["s2"], "crop": 64, "batch_size": 4, "workers": 0},
        "stages": [{"model": "espnet", "epochs": 1}],
        "augment": {"scale": [0.9, 1.1]},
        "run": {"seed": 3, "device": "cpu", "threads": 1},
        "output": {"dir": str(out), "tensorboard": False},
    }
    for key, value in changes.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    raw["model"] = {"name": raw["stages"][-1]["model"]}
    return parse_train_config(raw)


def _rows(run_dir):
    with open(Path(run_dir) / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_enet_class_weights_from_known_histogram():
    counts = np.array([70, 20, 10, 0])
    w = enet_class_weights(counts)
    expected = [1 / math.log(1.02 + p) for p in (0.7, 0.2, 0.1, 0.0)]
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    assert w[3] == pytest.approx(1 / math.log(1.02))  # an absent class gets the largest weight
    with pytest.raises(ValueError):
        enet_class_weights([0, 0])


def test_downsample_labels_nearest_keeps_ids():
    labels = torch.arange(16 * 16).reshape(1, 16, 16) % 7
    small = downsample_labels(labels, 8)
    assert small.shape == (1, 2, 2)
    assert small[0, 0, 0] == labels[0, 4, 4] and small[0, 1, 1] == labels[0, 12, 12]


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_loss_decreases_over_a_few_steps(store, one_thread):
    torch.manual_seed(0)
    ds = PatchDataset(store, ["s0"], normalization=IMAGENET_NORMALIZATION)
    images = torch.stack([ds[i][0] for i in range(4)])
    labels = torch.stack([ds[i][1] for i in range(4)])
    model = create_model("espnet_c", len(CLASSES))
    loss_fn = segmentation_loss(None)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(6):
        loss = loss_fn(model(images), downsample_labels(labels, 8))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_epoch_sampler_shards_cover_and_are_seeded():
    a = EpochSampler(10, shuffle=True, seed=1, rank=0, world=2)
    b = EpochSampler(10, shuffle=True, seed=1, rank=1, world=2)
    a.set_epoch(0, 3), b.set_epoch(0, 3)
    ia, ib = [i for i, _ in a], [i for i, _ in b]
    assert len(ia) == len(ib) == len(a) == 5 and sorted(ia + ib) == list(range(10))
    a.set_epoch(0, 4)
    assert [i for i, _ in a] != ia  # a new order each epoch
    a.set_epoch(0, 3)
    assert [i for i, _ in a] == ia  # the same epoch gives the same order and seeds
    odd = EpochSampler(5, shuffle=False, rank=1, world=2, pad=False)
    assert list(odd) == [1, 3] and len(odd) == 2


def test_transfer_weights_loads_every_encoder_tensor():
    torch.manual_seed(1)
    stage1 = create_model("espnet_c", 5)
    torch.manual_seed(2)
    stage2 = create_model("espnet", 5)
    loaded, fresh = transfer_weights(stage2, stage1.state_dict())
    source = stage1.state_dict()
    for key, value in stage2.encoder.state_dict().items():
        assert torch.equal(value, source[key]), key
    assert loaded == sum(1 for k in source if not k.endswith("num_batches_tracked"))
    assert fresh and not any(k.startswith("encoder.") for k in fresh)


def test_two_stage_run_writes_outputs_and_checkpoint_round_trip(store, tmp_path, caplog):
    config = _config(store, tmp_path / "run", stages=[{"name": "stage1", "model": "espnet_c", "epochs": 1},
                                                      {"name": "stage2", "model": "espnet", "epochs": 1}])
    with caplog.at_level(logging.INFO, logger="wsi_seg.train"):
        result = train(config, progress=False)
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.csv", "last.pt", "best.pt", "stage1/best.pt", "stage2/last.pt"):
        assert (run / name).is_file(), name
    assert "stage2: espnet initialised from" in caplog.text
    rows = _rows(run)
    assert [(r["stage"], r["epoch"]) for r in rows] == [("stage1", "1"), ("stage2", "1")]
    assert 0.0 <= float(rows[-1]["miou"]) <= 1.0 and float(rows[-1]["train_loss"]) > 0
    assert len(result.stages) == 2 and result.stages[1].model == "espnet"

    model, meta = load_checkpoint(run / "best.pt")
    assert meta["model"]["name"] == "espnet" and meta["model"]["num_classes"] == 8
    assert meta["classes"]["names"] == [c["name"] for c in CLASSES]
    assert meta["classes"]["colors"][2] == [220, 20, 20]
    assert meta["mpp"] == 2.0 and meta["patch_size"] == 128
    assert meta["normalization"]["channel_order"] == "RGB"
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 128, 128)).shape == (1, 8, 128, 128)
    state = read_checkpoint(run / "last.pt")["train_state"]
    assert state["stage"] == 1 and state["epoch"] == 1 and isinstance(state["rng"]["torch"], torch.Tensor)


def test_resume_matches_uninterrupted_run(store, tmp_path):
    straight = _config(store, tmp_path / "a", stages=[{"model": "espnet_c", "epochs": 3}])
    train(straight, progress=False)
    first = _config(store, tmp_path / "b", stages=[{"model": "espnet_c", "epochs": 2}])
    train(first, progress=False)
    more = _config(store, tmp_path / "b", stages=[{"model": "espnet_c", "epochs": 3}])
    train(more, resume=True, progress=False)
    a, b = _rows(tmp_path / "a"), _rows(tmp_path / "b")
    assert len(a) == len(b) == 3
    for ra, rb in zip(a, b):
        for key in ("epoch", "step", "lr", "train_loss", "val_loss", "miou"):
            assert float(ra[key]) == pytest.approx(float(rb[key]), rel=1e-5, abs=1e-6), key
    sa = read_checkpoint(tmp_path / "a" / "last.pt")["state_dict"]
    sb = read_checkpoint(tmp_path / "b" / "last.pt")["state_dict"]
    for key in sa:
        torch.testing.assert_close(sa[key], sb[key], rtol=1e-4, atol=1e-5)


def test_init_checkpoint_loads_what_fits_and_names_reinitialised_keys(store, tmp_path, caplog):
    torch.manual_seed(5)
    foreign = create_model("espnet", 19)
    ckpt = make_checkpoint("espnet", 19, {}, foreign.state_dict(), class_names=[f"c{i}" for i in range(19)],
                           source="test")
    save_checkpoint(ckpt, tmp_path / "city.pt")
    config = _config(store, tmp_path / "run", stages=[{"model": "espnet", "epochs": 0}])
    with caplog.at_level(logging.INFO, logger="wsi_seg.train"):
        train(config, init=tmp_path / "city.pt", progress=False)
    assert "re-initialised" in caplog.text and "encoder.classifier" in caplog.text


def test_nan_loss_stops_and_keeps_last_good_checkpoint(store, tmp_path):
    config = _config(store, tmp_path / "run", stages=[{"name": "good", "model": "espnet_c", "epochs": 1},
                                                      {"name": "bad", "model": "espnet", "epochs": 3,
                                                       "lr": 1e30}])
    with pytest.raises(WsiSegError, match="loss is (nan|inf)"):
        train(config, progress=False)
    state = read_checkpoint(tmp_path / "run" / "last.pt")["train_state"]
    assert state["stage_name"] == "good"
    assert not (tmp_path / "run" / "bad" / "last.pt").exists()


def test_oversampling_run_draws_rare_patches_more_often(store, tmp_path, caplog):
    config = _config(store, tmp_path / "run", data={"oversample": 0.9, "val_slides": []},
                     stages=[{"model": "espnet_c", "epochs": 1}])
    with caplog.at_level(logging.INFO, logger="wsi_seg"):
        train(config, progress=False)
    assert "rare-class oversampling (t = 0.9)" in caplog.text
    assert len(_rows(tmp_path / "run")) == 1
    assert read_checkpoint(tmp_path / "run" / "last.pt")["train_state"]["epoch"] == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_on_cpu(store, tmp_path):
    out = tmp_path / "ddp"
    config = tmp_path / "ddp.yaml"
    import yaml

    config.write_text(yaml.safe_dump({
        "model": {"name": "espnet_c"}, "classes": CLASSES,
        "data": {"store": str(store), "val_slides": ["s2"], "crop": 64, "batch_size": 2, "workers": 0},
        "stages": [{"epochs": 2}], "augment": {"enabled": False},
        "run": {"seed": 0, "device": "cpu", "threads": 1}, "output": {"dir": str(out), "tensorboard": False}}))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), "-m", "wsi_seg", "train", "--config", str(config), "--quiet"],
        capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    n_train = len(PatchDataset(store, ["s0", "s1"], normalization=IMAGENET_NORMALIZATION))
    per_rank = math.ceil(n_train / 2)
    steps_per_epoch = math.ceil(per_rank / 2)
    rows = _rows(out)
    assert [int(r["step"]) for r in rows] == [steps_per_epoch, 2 * steps_per_epoch]
    model, meta = load_checkpoint(out / "best.pt")
    assert meta["model"]["name"] == "espnet_c"
    assert read_checkpoint(out / "last.pt")["train_state"]["world_size"] == 2


def test_run_processes_matches_torchrun(store, tmp_path, caplog):
    """run.processes: 2 spawns two gloo ranks itself: the same steps and the same weights as
    the same recipe launched by torchrun with 2 processes (test above)."""
    import yaml

    raw = {"model": {"name": "espnet_c"}, "classes": CLASSES,
           "data": {"store": str(store), "val_slides": ["s2"], "crop": 64, "batch_size": 2, "workers": 0},
           "stages": [{"epochs": 2}], "augment": {"enabled": False},
           "run": {"seed": 0, "device": "cpu", "threads": 1}, "output": {"tensorboard": False}}
    spawned = parse_train_config({**raw, "run": {**raw["run"], "processes": 2},
                                  "output": {**raw["output"], "dir": str(tmp_path / "spawned")}})
    with caplog.at_level(logging.INFO, logger="wsi_seg"):
        result = train(spawned, progress=False)
    assert [s.epochs for s in result.stages] == [2]
    assert "(2 process(es))" in caplog.text  # rank 0's log lines reach this process

    config = tmp_path / "ddp.yaml"
    config.write_text(yaml.safe_dump({**raw, "output": {**raw["output"], "dir": str(tmp_path / "torchrun")}}))
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), "-m", "wsi_seg", "train", "--config", str(config), "--quiet"],
        capture_output=True, text=True, timeout=240, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = _rows(tmp_path / "spawned"), _rows(tmp_path / "torchrun")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    assert [float(r["train_loss"]) for r in a] == pytest.approx([float(r["train_loss"]) for r in b], rel=1e-5)
    first = read_checkpoint(tmp_path / "spawned" / "last.pt")
    second = read_checkpoint(tmp_path / "torchrun" / "last.pt")
    assert first["train_state"]["world_size"] == 2
    for key, value in first["state_dict"].items():
        torch.testing.assert_close(value, second["state_dict"][key], rtol=1e-5, atol=1e-6)


def test_run_processes_reports_a_bad_store_in_one_line(tmp_path):
    config = _config(tmp_path / "missing.zarr", tmp_path / "run", run={"processes": 2})
    with pytest.raises(WsiSegError, match="missing.zarr"):
        train(config, progress=False)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal and /proc are Linux's")
def test_run_processes_ranks_die_with_a_killed_parent(store, tmp_path):
    import signal
    import time

    import yaml

    config = tmp_path / "long.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"name": "espnet_c"}, "classes": CLASSES,
        "data": {"store": str(store), "train_slides": ["s0", "s1"], "val_slides": [], "crop": 64, "batch_size": 2},
        "stages": [{"epochs": 500}], "augment": {"enabled": False},
        "run": {"seed": 0, "device": "cpu", "threads": 1, "processes": 2},
        "output": {"dir": str(tmp_path / "run"), "tensorboard": False}}))
    parent = subprocess.Popen([sys.executable, "-m", "wsi_seg", "train", "--config", str(config), "--quiet"])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (tmp_path / "run" / "metrics.csv").exists():
            time.sleep(0.5)
        children = Path(f"/proc/{parent.pid}/task/{parent.pid}/children")
        ranks = [int(p) for p in children.read_text().split()]
        assert len(ranks) >= 2, "the two ranks should be running"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in ranks):
            time.sleep(0.2)
        alive = [pid for pid in ranks if Path(f"/proc/{pid}").exists()
                 and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]]
        assert not alive, f"ranks {alive} outlived the killed training command"
    finally:
        if parent.poll() is None:
            parent.kill()
