import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from wsi_seg.config import AugmentConfig
from wsi_seg.data.augment import Augmenter, hed_jitter, random_crop
from wsi_seg.data.patches import PatchDataset, describe_store, label_histogram, split_slides
from wsi_seg.errors import InputError
from wsi_seg.io.store import open_patch_store
from wsi_seg.models.checkpoint import IMAGENET_NORMALIZATION
from wsi_seg.synth import synthesize_slide
from wsi_seg.tiling import tile_slides


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    """Two synthetic 2048x1536 slides (mpp 0.5) tiled at mpp 2.0 into 128 px patches."""
    root = tmp_path_factory.mktemp("patch_store")
    for i in range(2):
        synthesize_slide(root / "slides", f"s{i}", width=2048, height=1536, mpp=0.5, seed=20 + i)
    tile_slides([root / "slides"], root / "p.zarr", masks_dir=root / "slides", mpp=2.0, patch=128,
                min_tissue=0.2, progress=False, workers=1)
    return root / "p.zarr"


def test_split_by_fraction_never_shares_a_slide():
    names = [f"slide{i}" for i in range(10)]
    for seed in range(5):
        train, val = split_slides(names, val_fraction=0.3, seed=seed)
        assert not set(train) & set(val)
        assert sorted(train + val) == sorted(names) and len(val) == 3
    assert split_slides(names, val_fraction=0.3, seed=1) == split_slides(names, val_fraction=0.3, seed=1)
    assert split_slides(names, val_fraction=0.3, seed=1) != split_slides(names, val_fraction=0.3, seed=2)


def test_split_small_and_explicit_lists():
    assert split_slides(["a", "b"], val_fraction=0.1) in ((["a"], ["b"]), (["b"], ["a"]))
    assert split_slides(["a"], val_fraction=0.5) == (["a"], [])
    assert split_slides(["a", "b", "c"], val_fraction=0.0) == (["a", "b", "c"], [])
    assert split_slides(["a", "b", "c"], val=["b"]) == (["a", "c"], ["b"])
    assert split_slides(["a", "b", "c"], train=["a"]) == (["a"], ["b", "c"])
    with pytest.raises(InputError, match="data.val_slides: slide\\(s\\) zz not in the store"):
        split_slides(["a", "b"], val=["zz"])
    with pytest.raises(InputError, match="both"):
        split_slides(["a", "b"], train=["a"], val=["a"])


def test_dataset_reads_the_store_and_is_picklable(store):
    info = describe_store(store)
    assert info.mpp == 2.0 and info.patch == 128 and set(info.names) == {"s0", "s1"}
    ds = PatchDataset(store, ["s0", "s1"], normalization=IMAGENET_NORMALIZATION)
    assert len(ds) == sum(info.slides.values())
    image, label = ds[len(ds) - 1]
    assert image.shape == (3, 128, 128) and image.dtype == torch.float32
    assert label.shape == (128, 128) and label.dtype == torch.int64
    groups = {g.name: g for g in open_patch_store(store)}
    last = groups["s1"]
    np.testing.assert_array_equal(label.numpy(), last.label[len(last) - 1])
    clone = pickle.loads(pickle.dumps(ds))  # the open zarr handles are not pickled
    assert clone._groups is None
    torch.testing.assert_close(clone[0][0], ds[0][0])
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_chunk_cache_is_bounded_and_returns_the_stored_patches(store):
    plain = PatchDataset(store, ["s0", "s1"], normalization=IMAGENET_NORMALIZATION, cache_mb=0)
    small = PatchDataset(store, ["s0", "s1"], normalization=IMAGENET_NORMALIZATION, cache_mb=0.5)
    for i in list(range(len(plain))) + [0, len(plain) - 1, 1]:
        (a, b), (c, d) = plain.read(i), small.read(i)
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    assert 0 < small._cached <= small.cache_bytes
    assert pickle.loads(pickle.dumps(small))._cached == 0


def test_dataset_in_worker_processes_matches_main_process(store):
    aug = Augmenter(AugmentConfig(), 64)
    ds = PatchDataset(store, ["s0"], normalization=IMAGENET_NORMALIZATION, transform=aug)
    keys = [(i, 1000 + i) for i in range(len(ds))]
    loader = DataLoader(ds, batch_size=3, sampler=keys, num_workers=2)
    images = torch.cat([b[0] for b in loader])
    expected = torch.stack([ds[k][0] for k in keys])
    torch.testing.assert_close(images, expected)  # augmentation is fixed by the sample seed
    assert images.shape[-2:] == (64, 64)


def test_label_histogram_counts_training_labels(store):
    hist = label_histogram(store, ["s0"], 8)
    s0 = {g.name: g for g in open_patch_store(store)}["s0"]
    direct = np.bincount(np.asarray(s0.label[...]).ravel(), minlength=256)
    np.testing.assert_array_equal(hist, direct[:8])
    with pytest.raises(InputError, match="class id"):
        label_histogram(store, ["s0"], 2)


def test_missing_or_unlabelled_store(tmp_path, store):
    with pytest.raises(InputError, match="not found"):
        describe_store(tmp_path / "nope.zarr")
    with pytest.raises(InputError, match="not in the store"):
        PatchDataset(store, ["zz"], normalization=IMAGENET_NORMALIZATION)


def test_augmenter_keeps_label_ids_and_geometry_joint():
    rng = np.random.default_rng(0)
    # image channel 0 encodes the label, so joint geometry keeps them equal
    label = rng.integers(0, 5, (96, 96)).astype(np.uint8)
    image = np.repeat(label[..., None] * 40, 3, axis=2).astype(np.uint8)
    cfg = AugmentConfig(scale=(1.0, 1.0), stain_scale=0, stain_shift=0, brightness=0, contrast=0)
    for seed in range(8):
        out_image, out_label = Augmenter(cfg, 64)(image, label, np.random.default_rng(seed))
        assert out_image.shape == (64, 64, 3) and out_label.shape == (64, 64)
        np.testing.assert_array_equal(out_image[..., 0], out_label * 40)
    scaled_cfg = AugmentConfig(scale=(0.5, 1.5))
    for seed in range(8):
        _, out_label = Augmenter(scaled_cfg, 64)(image, label, np.random.default_rng(seed))
        assert set(np.unique(out_label)) <= set(range(5)) | {255}  # nearest: no mixed ids, pad = ignore


def test_random_crop_pads_small_inputs_with_ignore():
    image = np.zeros((10, 12, 3), np.uint8)
    label = np.ones((10, 12), np.uint8)
    out_image, out_label = random_crop(image, label, 16, np.random.default_rng(0))
    assert out_label.shape == (16, 16) and (out_label == 1).sum() == 120 and (out_label == 255).sum() == 136
    assert (out_image == 255).all(axis=2).sum() == 136


def test_hed_jitter_identity_and_effect():
    rng = np.random.default_rng(1)
    image = rng.integers(30, 240, (32, 32, 3)).astype(np.uint8)
    np.testing.assert_array_equal(hed_jitter(image, np.ones(3), np.zeros(3)), image)
    darker = hed_jitter(image, np.array([1.5, 1.0, 1.0]), np.zeros(3))
    assert darker.astype(int).sum() < image.astype(int).sum()  # more haematoxylin absorbs more light
