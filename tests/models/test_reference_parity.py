"""The authors' released weights load strictly and reproduce the authors' outputs.

Reads ../shared/reference/espnet (or $WSI_SEG_REFERENCE_DIR/espnet); skips with a
reason when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wsi_seg.data.transforms import preprocess
from wsi_seg.models import create_model, default_hparams
from wsi_seg.models.checkpoint import IMAGENET_NORMALIZATION, load_checkpoint, save_checkpoint
from wsi_seg.models.pretrained import ESPNET_CITYSCAPES_NORMALIZATION, convert_weights

pytestmark = pytest.mark.reference

FRANKFURT = "frankfurt_000000_000294_leftImg8bit"

RELEASED = [
    ("ESPNet/pretrained/encoder/espnet_p_2_q_3.pth", "espnet_c", 20, {"alpha2": 2, "alpha3": 3}),
    ("ESPNet/pretrained/encoder/espnet_p_2_q_5.pth", "espnet_c", 20, {"alpha2": 2, "alpha3": 5}),
    ("ESPNet/pretrained/encoder/espnet_p_2_q_8.pth", "espnet_c", 20, {"alpha2": 2, "alpha3": 8}),
    ("ESPNet/pretrained/decoder/espnet_p_2_q_3.pth", "espnet", 20, {"alpha2": 2, "alpha3": 3}),
    ("ESPNet/pretrained/decoder/espnet_p_2_q_5.pth", "espnet", 20, {"alpha2": 2, "alpha3": 5}),
    ("ESPNet/pretrained/decoder/espnet_p_2_q_8.pth", "espnet", 20, {"alpha2": 2, "alpha3": 8}),
    ("EdgeNets/model_zoo/espnetv2/espnetv2_s_1.0_city_1024x512.pth", "espnetv2", 20, {"scale": 1.0}),
    ("EdgeNets/model_zoo/espnetv2/espnetv2_s_2.0_city_1024x512.pth", "espnetv2", 20, {"scale": 2.0}),
    ("EdgeNets/model_zoo/espnetv2/espnetv2_s_1.0_pascal_384x384.pth", "espnetv2", 21, {"scale": 1.0}),
    ("EdgeNets/model_zoo/espnetv2/espnetv2_s_2.0_pascal_384x384.pth", "espnetv2", 21, {"scale": 2.0}),
]


@pytest.mark.parametrize("rel,arch,classes,hparams", RELEASED, ids=[r[0].rsplit("/", 1)[1] for r in RELEASED])
def test_every_released_file_converts_with_a_strict_load(reference_dir, tmp_path, rel, arch, classes, hparams):
    ckpt = convert_weights(reference_dir / "data" / rel, arch=arch, num_classes=classes, hparams=hparams)
    out = save_checkpoint(ckpt, tmp_path / "converted.pt")
    model, meta = load_checkpoint(out)
    assert meta["model"] == {"name": arch, "num_classes": classes,
                             "hparams": {**default_hparams(arch), **hparams}}
    raw = torch.load(reference_dir / "data" / rel, map_location="cpu", weights_only=True)
    # Every released tensor arrived (the 2018 ESPNet files carry no num_batches_tracked).
    loaded = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert len(loaded) == len([k for k in raw if not k.endswith("num_batches_tracked")])
    assert sorted(float(v.double().sum()) for v in loaded.values()) == pytest.approx(
        sorted(float(v.double().sum()) for k, v in raw.items() if not k.endswith("num_batches_tracked")))


def _model(reference_dir, rel, arch, classes, **hparams):
    ckpt = convert_weights(reference_dir / "data" / rel, arch=arch, num_classes=classes, hparams=hparams)
    model = create_model(arch, classes, **ckpt["model"]["hparams"])
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def _run(model, x: np.ndarray) -> np.ndarray:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    with torch.inference_mode():
        return model(torch.from_numpy(x)[None])[0].numpy()


def _compare(ours: np.ndarray, reference_file: Path):
    ref = np.load(reference_file)["logits"].astype(np.float32)
    assert ours.shape == ref.shape
    max_abs = float(np.abs(ours - ref).max())
    agreement = float((ours.argmax(0) == ref.argmax(0)).mean())
    assert max_abs <= 1e-2, f"max |logit difference| {max_abs}"
    assert agreement >= 0.999, f"argmax agreement {agreement}"
    return max_abs, agreement


def _frankfurt(reference_dir) -> np.ndarray:
    return np.asarray(Image.open(reference_dir / "data/ESPNet/test_data" / f"{FRANKFURT}.png").convert("RGB"))


def test_espnet_preprocessing_reproduces_the_authors_input(reference_dir):
    x = preprocess(_frankfurt(reference_dir), ESPNET_CITYSCAPES_NORMALIZATION, (1024, 512))
    ref = np.load(reference_dir / f"espnet_p2q8_city_{FRANKFURT}_input.npz")["input"]
    assert x.shape == ref.shape == (3, 512, 1024)
    assert np.abs(x - ref).max() < 1e-6


def test_espnetv2_preprocessing_reproduces_the_authors_input(reference_dir):
    x = preprocess(_frankfurt(reference_dir), IMAGENET_NORMALIZATION, (1024, 512))
    ref = np.load(reference_dir / f"espnetv2_s2.0_city_{FRANKFURT}_input.npz")["input"]
    assert np.abs(x - ref).max() < 1e-5


def test_espnet_p2q8_matches_the_authors_logits(reference_dir):
    model = _model(reference_dir, "ESPNet/pretrained/decoder/espnet_p_2_q_8.pth", "espnet", 20, alpha2=2, alpha3=8)
    x = preprocess(_frankfurt(reference_dir), ESPNET_CITYSCAPES_NORMALIZATION, (1024, 512))
    ours = _run(model, x)
    _compare(ours, reference_dir / f"espnet_p2q8_city_{FRANKFURT}_logits.npz")
    argmax = np.asarray(Image.open(reference_dir / f"espnet_p2q8_city_{FRANKFURT}_argmax.png"))
    assert (ours.argmax(0) == argmax).mean() >= 0.999


def test_espnet_c_p2q8_matches_the_authors_logits(reference_dir):
    model = _model(reference_dir, "ESPNet/pretrained/encoder/espnet_p_2_q_8.pth", "espnet_c", 20, alpha2=2, alpha3=8)
    x = preprocess(_frankfurt(reference_dir), ESPNET_CITYSCAPES_NORMALIZATION, (1024, 512))
    ours = _run(model, x)
    assert ours.shape == (20, 64, 128)
    _compare(ours, reference_dir / f"espnet_c_p2q8_city_{FRANKFURT}_logits.npz")


def test_espnetv2_city_matches_the_authors_logits(reference_dir):
    model = _model(reference_dir, "EdgeNets/model_zoo/espnetv2/espnetv2_s_2.0_city_1024x512.pth", "espnetv2", 20,
                   scale=2.0)
    x = preprocess(_frankfurt(reference_dir), IMAGENET_NORMALIZATION, (1024, 512))
    _compare(_run(model, x), reference_dir / f"espnetv2_s2.0_city_{FRANKFURT}_logits.npz")


def test_espnetv2_pascal_matches_the_authors_logits(reference_dir):
    model = _model(reference_dir, "EdgeNets/model_zoo/espnetv2/espnetv2_s_2.0_pascal_384x384.pth", "espnetv2", 21,
                   scale=2.0)
    image = np.asarray(Image.open(reference_dir / "data/EdgeNets/sample_images/sample5.jpg").convert("RGB"))
    ours = _run(model, preprocess(image, IMAGENET_NORMALIZATION, (384, 384)))
    _compare(ours, reference_dir / "espnetv2_s2.0_pascal_sample5_test384_logits.npz")
    argmax = np.asarray(Image.open(reference_dir / "espnetv2_s2.0_pascal_sample5_test384_384x384_argmax.png"))
    assert (ours.argmax(0) == argmax).mean() >= 0.999
