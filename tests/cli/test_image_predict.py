"""`wsi-seg predict IMAGE.png -o OUT.png`: ordinary images, the checkpoint's preprocessing,
--resize and --color, and parity with the ESPNet authors' argmax through the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from wsi_seg.cli import main
from wsi_seg.data.transforms import preprocess
from wsi_seg.inference.predictor import TorchPredictor
from wsi_seg.inference.tiles import predict_image
from wsi_seg.models import create_model
from wsi_seg.models.checkpoint import default_colors, make_checkpoint, save_checkpoint
from wsi_seg.models.pretrained import ESPNET_CITYSCAPES_NORMALIZATION

FRANKFURT = "frankfurt_000000_000294_leftImg8bit"


def _run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _error_line(result, code=2):
    assert result.exit_code == code, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A small random ESPNet (full-resolution output) with the authors' BGR normalisation, and two images."""
    root = tmp_path_factory.mktemp("image_predict")
    torch.manual_seed(0)
    model = create_model("espnet", 5, alpha2=1, alpha3=1)
    with torch.no_grad():  # make the classes depend clearly on the input
        for p in model.parameters():
            p.mul_(3.0)
    ckpt = make_checkpoint("espnet", 5, {"alpha2": 1, "alpha3": 1}, model.state_dict(),
                           class_names=[f"c{i}" for i in range(5)], class_colors=default_colors(5),
                           normalization=ESPNET_CITYSCAPES_NORMALIZATION)
    rng = np.random.default_rng(1)
    small = rng.integers(0, 256, (70, 100, 3), dtype=np.uint8)
    large = rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)
    Image.fromarray(small).save(root / "small.png")
    Image.fromarray(large).save(root / "large.jpg", quality=100)
    return root, save_checkpoint(ckpt, root / "m.pt")


def _model_argmax(ckpt, x):
    predictor = TorchPredictor.from_checkpoint(ckpt, device="cpu")
    with torch.inference_mode():
        return predictor.model(torch.from_numpy(x)[None])[0].argmax(0).numpy()


def test_an_image_is_labelled_at_its_own_size(setup, tmp_path):
    root, ckpt = setup
    out = tmp_path / "small.labels.png"
    result = _run("predict", root / "small.png", "-o", out, "--model", ckpt)
    assert result.exit_code == 0, result.output
    im = Image.open(out)
    assert im.mode == "P" and im.size == (100, 70)
    labels = np.asarray(im)
    assert np.asarray(im.getpalette()[:15]).reshape(5, 3).tolist() == default_colors(5)
    # padded to a multiple of 8 with the normalised mean (zeros), run once, cropped back
    x = preprocess(np.asarray(Image.open(root / "small.png")), ESPNET_CITYSCAPES_NORMALIZATION)
    padded = np.zeros((3, 72, 104), np.float32)
    padded[:, :70, :100] = x
    assert (labels == _model_argmax(ckpt, padded)[:70, :100]).all()
    assert len(np.unique(labels)) > 1
    assert not (tmp_path / "small.labels.color.png").exists()


def test_a_large_image_is_tiled_and_keeps_its_size(setup, tmp_path):
    root, ckpt = setup
    out = tmp_path / "large.png"
    result = _run("predict", root / "large.jpg", "-o", out, "--model", ckpt, "--tile", 128, "--overlap", 32)
    assert result.exit_code == 0, result.output
    labels = np.asarray(Image.open(out))
    assert labels.shape == (200, 300)
    image = np.asarray(Image.open(root / "large.jpg").convert("RGB"))
    expected = predict_image(image, TorchPredictor.from_checkpoint(ckpt, device="cpu"), tile=128, overlap=32)
    assert (labels == expected).all()


def test_resize_applies_the_checkpoints_resizing_and_color_writes_a_view(setup, tmp_path):
    root, ckpt = setup
    out = tmp_path / "r.png"
    result = _run("predict", root / "small.png", "-o", out, "--model", ckpt, "--resize", "48x32", "--color")
    assert result.exit_code == 0, result.output
    labels = np.asarray(Image.open(out))
    assert labels.shape == (32, 48)
    x = preprocess(np.asarray(Image.open(root / "small.png")), ESPNET_CITYSCAPES_NORMALIZATION, (48, 32))
    assert (labels == _model_argmax(ckpt, x)).all()
    color = Image.open(tmp_path / "r.color.png")
    assert color.mode == "RGB" and color.size == (48, 32)
    assert (np.asarray(color) == np.asarray(default_colors(5), np.uint8)[labels]).all()


def test_bad_options_and_inputs_are_one_line(setup, tmp_path):
    root, ckpt = setup
    line = _error_line(_run("predict", root / "small.png", "-o", tmp_path / "a.png", "--model", ckpt,
                            "--resize", "48by32"))
    assert "--resize '48by32'" in line
    line = _error_line(_run("predict", root / "missing.png", "-o", tmp_path / "a.png", "--model", ckpt))
    assert "missing.png" in line
    (tmp_path / "b.png").write_bytes(b"x")
    line = _error_line(_run("predict", root / "small.png", "-o", tmp_path / "b.png", "--model", ckpt))
    assert "already exists" in line
    result = _run("predict", root / "small.png", "-o", tmp_path / "m.tif", "--model", ckpt, "--resize", "48x32")
    assert result.exit_code == 2 and "--resize and --color apply to ordinary images" in result.output
    result = _run("predict", root / "small.png", "-o", tmp_path / "c.png", "--model", ckpt, "--mpp", "2")
    assert result.exit_code == 2 and "--mpp apply to slides" in result.output


PARITY = [
    ("ESPNet/pretrained/decoder/espnet_p_2_q_8.pth", ["--arch", "espnet", "--alpha2", "2", "--alpha3", "8",
                                                      "--classes", "20", "--dataset", "cityscapes"],
     f"ESPNet/test_data/{FRANKFURT}.png", "1024x512", f"espnet_p2q8_city_{FRANKFURT}_argmax.png"),
    ("EdgeNets/model_zoo/espnetv2/espnetv2_s_2.0_city_1024x512.pth",
     ["--arch", "espnetv2", "--scale", "2.0", "--classes", "20", "--dataset", "cityscapes"],
     f"ESPNet/test_data/{FRANKFURT}.png", "1024x512", f"espnetv2_s2.0_city_{FRANKFURT}_argmax.png"),
    ("EdgeNets/model_zoo/espnetv2/espnetv2_s_2.0_pascal_384x384.pth",
     ["--arch", "espnetv2", "--scale", "2.0", "--classes", "21", "--dataset", "voc"],
     "EdgeNets/sample_images/sample5.jpg", "384x384", "espnetv2_s2.0_pascal_sample5_test384_384x384_argmax.png"),
]


@pytest.mark.reference
@pytest.mark.parametrize("weights,convert,image,size,reference", PARITY, ids=["espnet_p2q8_city", "espnetv2_city",
                                                                               "espnetv2_pascal"])
def test_cli_reproduces_the_authors_argmax(reference_dir, tmp_path, weights, convert, image, size, reference):
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    ckpt = tmp_path / "converted.pt"
    result = _run("convert-weights", reference_dir / "data" / weights, "-o", ckpt, *convert)
    assert result.exit_code == 0, result.output
    out = tmp_path / "labels.png"
    result = _run("predict", reference_dir / "data" / image, "-o", out, "--model", ckpt, "--resize", size)
    assert result.exit_code == 0, result.output
    ours = np.asarray(Image.open(out))
    ref = np.asarray(Image.open(reference_dir / reference))
    assert ours.shape == ref.shape
    agreement = float((ours == ref).mean())
    assert agreement >= 0.999, f"argmax agreement {agreement:.5f}"
