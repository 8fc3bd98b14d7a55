"""Test-time augmentation: outputs averaged over flips, through the API and the CLI."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from wsi_seg.errors import InputError
from wsi_seg.inference.backends import ModelSpec, make_predictor
from wsi_seg.inference.tta import FlipAveraging


@pytest.fixture(scope="module")
def tiles():
    return np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)


def test_flips_average_the_four_mirrored_passes(random_checkpoint, tiles):
    plain = make_predictor(random_checkpoint)
    averaged = make_predictor(random_checkpoint, tta="flips")
    assert isinstance(averaged, FlipAveraging) and averaged.num_classes == plain.num_classes
    expected = (plain(tiles) + plain(tiles[:, ::-1].copy())[:, :, ::-1] + plain(tiles[:, :, ::-1].copy())[..., ::-1]
                + plain(tiles[:, ::-1, ::-1].copy())[:, :, ::-1, ::-1]) / 4
    got = averaged(tiles)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)  # still probabilities
    assert np.abs(got - plain(tiles)).max() > 1e-3  # an untrained net is not flip-invariant: it changed


@pytest.mark.parametrize("mode,symmetries", [("flips", [(1,), (2,), (1, 2)]), ("d4", [(1,), (2,), (1, 2), "T"])])
def test_the_average_is_invariant_under_its_symmetries(random_checkpoint, tiles, mode, symmetries):
    averaged = make_predictor(random_checkpoint, tta=mode)
    base = averaged(tiles)
    for symmetry in symmetries:
        if symmetry == "T":
            moved = averaged(np.ascontiguousarray(tiles.transpose(0, 2, 1, 3))).transpose(0, 1, 3, 2)
        else:
            moved = np.flip(averaged(np.ascontiguousarray(np.flip(tiles, symmetry))), [a + 1 for a in symmetry])
        np.testing.assert_allclose(moved, base, atol=1e-5)


def test_unknown_mode_is_refused_and_the_spec_carries_the_mode(random_checkpoint):
    with pytest.raises(InputError, match="flips"):
        make_predictor(random_checkpoint, tta="rotate")
    spec = pickle.loads(pickle.dumps(ModelSpec(random_checkpoint, tta="d4")))
    assert isinstance(spec.load(), FlipAveraging) and spec.load().mode == "d4"
    assert pickle.loads(pickle.dumps(spec.load())).mode == "d4"


def test_predict_cli_with_tta(small_slide, random_checkpoint, tmp_path):
    svs, _ = small_slide
    masks = {}
    for mode in ("none", "flips"):
        out = tmp_path / f"{mode}.mask.tif"
        result = subprocess.run([sys.executable, "-m", "wsi_seg", "predict", str(svs), "-o", str(out), "--model",
                                 str(random_checkpoint), "--tile", "128", "--tta", mode, "--no-progress"],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        masks[mode] = tifffile.imread(out)
    assert masks["none"].shape == masks["flips"].shape == (1536, 2048)
    assert 0.5 < (masks["none"] == masks["flips"]).mean() < 1.0  # mostly the same, not identical
