import numpy as np
import pytest

from wsi_seg.data.patches import label_statistics
from wsi_seg.engine.sampling import repeat_factors
from wsi_seg.engine.train import EpochSampler
from wsi_seg.io.store import open_patch_store


def test_repeat_factors_boost_patches_of_rare_classes():
    # 10 patches; class 0 in all, class 1 in 5, class 2 in 1, class 3 in none
    presence = np.zeros((10, 4), bool)
    presence[:, 0] = True
    presence[:5, 1] = True
    presence[9, 2] = True
    factors = repeat_factors(presence, 0.4)
    # f = (1, 0.5, 0.1): r_c = (1, 1, sqrt(0.4 / 0.1) = 2); class 3 never seen changes nothing
    np.testing.assert_allclose(factors, [1.0] * 9 + [2.0])
    np.testing.assert_allclose(repeat_factors(presence, 0.0), np.ones(10))
    # a threshold above the frequency of class 1 boosts it too: sqrt(0.8 / 0.5)
    np.testing.assert_allclose(repeat_factors(presence, 0.8)[:5], np.sqrt(1.6))
    with pytest.raises(ValueError):
        repeat_factors(np.zeros(5, bool), 0.5)


def test_weighted_epoch_sampler_draws_in_proportion_and_is_seeded():
    weights = np.ones(100)
    weights[0] = 50.0  # patch 0 carries a third of the probability mass
    sampler = EpochSampler(100, shuffle=True, seed=4, weights=weights)
    draws = []
    for epoch in range(20):
        sampler.set_epoch(1, epoch)
        draws += [i for i, _ in sampler]
    assert len(draws) == 2000
    share = draws.count(0) / len(draws)
    assert 0.28 < share < 0.39, share  # expected 50 / 149 = 0.336
    sampler.set_epoch(1, 3)
    again = [i for i, _ in sampler]
    sampler.set_epoch(1, 3)
    assert [i for i, _ in sampler] == again
    with pytest.raises(ValueError):
        EpochSampler(3, shuffle=True, weights=np.array([1.0, -1.0, 1.0]))
    # two ranks split one weighted epoch
    a = EpochSampler(10, shuffle=True, seed=1, rank=0, world=2, weights=np.arange(1, 11))
    b = EpochSampler(10, shuffle=True, seed=1, rank=1, world=2, weights=np.arange(1, 11))
    assert len(list(a)) == len(list(b)) == 5


def test_label_statistics_presence_matches_the_labels(tmp_path):
    from wsi_seg.synth import synthesize_slide
    from wsi_seg.tiling import tile_slides

    synthesize_slide(tmp_path / "slides", "a", width=1536, height=1024, mpp=0.5, seed=21)
    tile_slides([tmp_path / "slides"], tmp_path / "p.zarr", masks_dir=tmp_path / "slides", mpp=2.0, patch=64,
                min_tissue=0.2, progress=False, workers=1)
    counts, presence = label_statistics(tmp_path / "p.zarr", ["a"], 8)
    labels = np.asarray({g.name: g for g in open_patch_store(tmp_path / "p.zarr")}["a"].label[...])
    assert presence.shape == (labels.shape[0], 8)
    for row, patch in enumerate(labels):
        assert presence[row].tolist() == [bool((patch == c).any()) for c in range(8)]
    np.testing.assert_array_equal(counts, np.bincount(labels.ravel(), minlength=8)[:8])
    assert presence[:, 0].any() and presence.sum() > labels.shape[0]
