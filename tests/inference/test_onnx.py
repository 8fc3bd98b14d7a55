"""ONNX export and the onnxruntime backend: parity with PyTorch, `predict --backend onnx`, bad inputs."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch

from wsi_seg.errors import CheckpointError, InputError
from wsi_seg.inference.onnx_export import (META_KEY, OPSET, ExportablePyramidPool, _pool_matrix, _resize_matrix,
                                           export_checkpoint, export_model, exportable)
from wsi_seg.inference.predictor import TorchPredictor, make_predictor
from wsi_seg.models import create_model
from wsi_seg.models.checkpoint import make_checkpoint, save_checkpoint
from wsi_seg.synth import BIOPSY_CLASSES, synthesize_slide

import onnx
import onnxruntime  # noqa: F401  (the dev extra installs it; the tests must not skip)
from wsi_seg.inference.onnx_backend import OnnxPredictor

NAMES = [n for n, _ in BIOPSY_CLASSES]
COLORS = [c for _, c in BIOPSY_CLASSES]


def wsi_seg(*args, env=None):
    return subprocess.run([sys.executable, "-m", "wsi_seg", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


def _checkpoint(path, name, hparams, num_classes=len(NAMES)):
    torch.manual_seed(0)
    model = create_model(name, num_classes, **hparams)
    _randomise_batchnorm(model)
    names = NAMES[:num_classes] if num_classes <= len(NAMES) else [f"c{i}" for i in range(num_classes)]
    ckpt = make_checkpoint(name, num_classes, hparams, model.state_dict(), class_names=names,
                           mpp=2.0, patch_size=128)
    return save_checkpoint(ckpt, path)


def _randomise_batchnorm(model):
    """Non-trivial running statistics, so that normalisation is actually exercised."""
    gen = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


@pytest.mark.parametrize("name, hparams", [("espnet", {"alpha3": 1}), ("espnetv2", {"scale": 0.5})])
def test_onnx_logits_match_torch_at_two_sizes(tmp_path, name, hparams):
    ckpt = _checkpoint(tmp_path / "m.pt", name, hparams)
    path = export_checkpoint(ckpt, tmp_path / "m.onnx")
    torch_pred = TorchPredictor.from_checkpoint(ckpt, device="cpu", optimize=False)
    onnx_pred = OnnxPredictor(path, device="cpu")
    gen = torch.Generator().manual_seed(3)
    for shape in [(2, 3, 64, 96), (1, 3, 128, 48)]:
        x = torch.randn(*shape, generator=gen) * 2
        with torch.inference_mode():
            expected = torch_pred.model(x).numpy()
        got = onnx_pred.logits(x.numpy())
        assert got.shape == expected.shape == (shape[0], len(NAMES), shape[2], shape[3])
        assert np.abs(got - expected).max() <= 1e-4


def test_export_carries_the_meta_and_opset(tmp_path):
    ckpt = _checkpoint(tmp_path / "m.pt", "espnet_c", {"alpha3": 1})
    path = export_checkpoint(ckpt, tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    assert any(op.domain in ("", "ai.onnx") and op.version == OPSET for op in proto.opset_import)
    dims = [d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", "", "height", "width"]
    pred = OnnxPredictor(path, device="cpu")
    assert pred.meta["model"] == {"name": "espnet_c", "num_classes": 8,
                                  "hparams": {"K": 5, "alpha2": 2, "alpha3": 1, "hff": True}}
    assert pred.meta["classes"]["names"] == NAMES and pred.meta["mpp"] == 2.0
    assert pred.num_classes == 8 and pred.input_multiple == 8
    # the 1/8-resolution logits are upsampled to the tile like TorchPredictor does
    tiles = np.random.default_rng(0).integers(0, 256, (2, 64, 80, 3), dtype=np.uint8)
    probs = pred(tiles)
    expected = TorchPredictor.from_checkpoint(ckpt, device="cpu", optimize=False)(tiles)
    assert probs.shape == (2, 8, 64, 80) and probs.dtype == np.float32
    assert np.abs(probs - expected).max() <= 1e-5


def test_exportable_pyramid_matrices_match_torch_ops():
    x = torch.randn(2, 3, 11, 7)
    for out in [(5, 5), (17, 9), (11, 7)]:
        pooled = torch.matmul(torch.matmul(_pool_matrix(torch.tensor(11), torch.tensor(out[0]), None), x),
                              _pool_matrix(torch.tensor(7), torch.tensor(out[1]), None).T)
        assert torch.allclose(pooled, torch.nn.functional.adaptive_avg_pool2d(x, out), atol=1e-6)
        resized = torch.matmul(torch.matmul(_resize_matrix(torch.tensor(11), torch.tensor(out[0]), None), x),
                               _resize_matrix(torch.tensor(7), torch.tensor(out[1]), None).T)
        expected = torch.nn.functional.interpolate(x, size=out, mode="bilinear", align_corners=True)
        assert torch.allclose(resized, expected, atol=1e-5)
    model = create_model("espnetv2", 8, scale=0.5).eval()
    swapped = exportable(model)
    assert sum(isinstance(m, ExportablePyramidPool) for m in swapped.modules()) == 4
    with torch.inference_mode():
        y = torch.randn(1, 3, 80, 48)
        assert torch.allclose(swapped(y), model(y), atol=1e-5)


@pytest.fixture(scope="module")
def slide_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("onnx-predict")
    svs, _ = synthesize_slide(root, "s", width=1024, height=768, mpp=0.5, seed=1)
    ckpt = _checkpoint(root / "m.pt", "espnet", {"alpha3": 1})
    onnx_path = export_checkpoint(ckpt, root / "m.onnx")
    return root, svs, ckpt, onnx_path


def _one_error_line(result, *fragments):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("wsi-seg: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_predict_backend_onnx_gives_the_torch_mask(slide_setup, tmp_path):
    root, svs, ckpt, onnx_path = slide_setup
    common = ["--tile", "128", "--overlap", "32", "--no-progress"]
    by_torch = wsi_seg("predict", svs, "-o", tmp_path / "torch.tif", "--model", ckpt, *common)
    assert by_torch.returncode == 0, by_torch.stderr
    by_onnx = wsi_seg("predict", svs, "-o", tmp_path / "onnx.tif", "--model", onnx_path, "--backend", "onnx",
                      *common)
    assert by_onnx.returncode == 0, by_onnx.stderr
    a, b = tifffile.imread(tmp_path / "torch.tif"), tifffile.imread(tmp_path / "onnx.tif")
    assert a.shape == b.shape == (768, 1024)
    assert len(np.unique(a)) > 1  # the mask is not trivially constant
    assert (a == b).mean() >= 0.999


def test_export_onnx_cli(slide_setup, tmp_path):
    _, _, ckpt, _ = slide_setup
    out = tmp_path / "cli.onnx"
    result = wsi_seg("export-onnx", ckpt, "-o", out)
    assert result.returncode == 0, result.stderr
    assert "opset 17" in result.stdout and out.is_file()
    _one_error_line(wsi_seg("export-onnx", ckpt, "-o", out), "already exists")


def test_onnx_from_another_class_count_is_refused(slide_setup, tmp_path):
    root, svs, ckpt, onnx_path = slide_setup
    other = export_checkpoint(_checkpoint(tmp_path / "o.pt", "espnet", {"alpha3": 1}, num_classes=6),
                              tmp_path / "other.onnx")
    # the 6-class graph carrying the 8-class model's metadata
    graph = onnx.load(str(other))
    graph.metadata_props[0].value = onnx.load(str(onnx_path)).metadata_props[0].value
    mixed = tmp_path / "mixed.onnx"
    onnx.save(graph, str(mixed))
    with pytest.raises(InputError, match="outputs 6 classes but its metadata describes 8"):
        OnnxPredictor(mixed)
    result = wsi_seg("predict", svs, "-o", tmp_path / "m.tif", "--model", mixed, "--backend", "onnx")
    _one_error_line(result, "outputs 6 classes")
    # an ONNX file without wsi-seg metadata
    del graph.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(graph, str(bare))
    _one_error_line(wsi_seg("predict", svs, "-o", tmp_path / "m.tif", "--model", bare, "--backend", "onnx"),
                    "not a wsi-seg ONNX export")
    # a checkpoint given to the onnx backend, an ONNX file to the torch one
    _one_error_line(wsi_seg("predict", svs, "-o", tmp_path / "m.tif", "--model", ckpt, "--backend", "onnx"),
                    "export-onnx")
    _one_error_line(wsi_seg("predict", svs, "-o", tmp_path / "m.tif", "--model", onnx_path), "--backend onnx")


def test_missing_onnxruntime_names_the_extra(slide_setup, tmp_path):
    root, svs, _, onnx_path = slide_setup
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "onnxruntime.py").write_text("raise ImportError('onnxruntime is not installed')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")])}
    result = wsi_seg("predict", svs, "-o", tmp_path / "m.tif", "--model", onnx_path, "--backend", "onnx", env=env)
    _one_error_line(result, "pip install wsi-seg[onnx]")


def test_export_refuses_missing_and_pickled_code_checkpoints(tmp_path):
    _one_error_line(wsi_seg("export-onnx", tmp_path / "nope.pt", "-o", tmp_path / "a.onnx"), "no such file")
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as fh:
        pickle.dump({"format": "wsi-seg-checkpoint", "payload": Payload()}, fh, protocol=2)
    _one_error_line(wsi_seg("export-onnx", evil, "-o", tmp_path / "a.onnx"), "pickled code")
    with pytest.raises(CheckpointError):
        export_checkpoint(evil, tmp_path / "b.onnx")
    assert not marker.exists() and not (tmp_path / "a.onnx").exists()


def test_make_predictor_picks_the_backend(slide_setup):
    _, _, ckpt, onnx_path = slide_setup
    assert isinstance(make_predictor(ckpt, device="cpu"), TorchPredictor)
    assert isinstance(make_predictor(onnx_path, backend="onnx", device="cpu"), OnnxPredictor)
    with pytest.raises(InputError, match="unknown backend"):
        make_predictor(ckpt, backend="tensorrt")


def test_export_model_keeps_only_json_meta(tmp_path):
    model = create_model("espnet_a", 4, alpha3=1)
    meta = {"model": {"name": "espnet_a", "num_classes": 4, "hparams": {}}, "classes": {"names": list("abcd")},
            "normalization": {"mean": [0, 0, 0], "std": [1, 1, 1]}, "train_state": {"epoch": 3}}
    path = export_model(model, meta, tmp_path / "a.onnx")
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert set(props) == {META_KEY} and "train_state" not in props[META_KEY]


def test_onnx_prediction_never_loads_torch(slide_setup, tmp_path):
    """The ONNX backend's process holds onnxruntime, not PyTorch (hundreds of MiB less)."""
    root, svs, _, onnx_path = slide_setup
    out = tmp_path / "mask.tif"
    code = ("import sys\nfrom wsi_seg.cli import main\n"
            "try:\n    main()\nexcept SystemExit as exc:\n    code = exc.code\n"
            "print('torch loaded' if 'torch' in sys.modules else 'no torch', code)\n")
    result = subprocess.run([sys.executable, "-c", code, "predict", str(svs), "-o", str(out), "--model",
                             str(onnx_path), "--backend", "onnx", "--tile", "128", "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.stdout.strip().splitlines()[-1] in ("no torch 0", "no torch None"), result.stdout + result.stderr
    assert tifffile.imread(out).shape == (768, 1024)


@pytest.mark.parametrize("source,target", [((5, 7), (40, 56)), ((16, 16), (128, 128)), ((3, 9), (17, 30))])
def test_numpy_upsampling_and_softmax_match_torch(source, target):
    from wsi_seg.inference.onnx_backend import softmax, upsample_bilinear

    logits = np.random.default_rng(0).standard_normal((2, 4, *source)).astype(np.float32)
    expected = torch.nn.functional.interpolate(torch.from_numpy(logits), size=target, mode="bilinear",
                                               align_corners=False)
    np.testing.assert_allclose(upsample_bilinear(logits, target), expected.numpy(), atol=1e-5)
    np.testing.assert_allclose(softmax(upsample_bilinear(logits, target)),
                               torch.softmax(expected, 1).numpy(), atol=1e-6)
