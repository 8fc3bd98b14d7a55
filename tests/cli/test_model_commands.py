"""`wsi-seg convert-weights` and `wsi-seg model-info` as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from wsi_seg.models.checkpoint import load_checkpoint


def wsi_seg(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "wsi_seg", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_version_and_help():
    result = wsi_seg("--version")
    assert result.returncode == 0 and "wsi-seg, version" in result.stdout
    result = wsi_seg("--help")
    assert result.returncode == 0
    for command in ("convert-weights", "model-info"):
        assert command in result.stdout


def test_model_info_reports_the_paper_numbers():
    result = wsi_seg("model-info", "espnet", "--alpha3", "8", "--classes", "20", "--json")
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["params"] == 364_569
    assert info["size_mb_fp32"] == pytest.approx(1.458, abs=1e-3)  # paper Table 2g: 1.46 MB
    assert info["macs"] == 4_709_441_536
    assert [f["field_px"] for f in info["receptive_fields"]] == [33, 33]
    text = wsi_seg("model-info", "espnetv2", "--scale", "0.5").stdout
    assert "80,342" in text


def test_model_info_bad_input_is_one_line():
    result = wsi_seg("model-info", "espnet_x")
    assert result.returncode == 2
    assert result.stderr.strip() == "wsi-seg: error: unknown model 'espnet_x'; available: espnet_a, espnet_b, " \
                                    "espnet_c, espnet, espnetv2"
    result = wsi_seg("model-info", "espnet", "--input", "500x1000")
    assert result.returncode == 2 and "divisible by 8" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.reference
def test_convert_weights_writes_a_loadable_checkpoint(reference_dir, tmp_path):
    src = reference_dir / "data/EdgeNets/model_zoo/espnetv2/espnetv2_s_1.0_pascal_384x384.pth"
    out = tmp_path / "v2.pt"
    result = wsi_seg("convert-weights", src, "-o", out, "--arch", "espnetv2", "--scale", "1.0", "--classes", "21",
                     "--dataset", "voc")
    assert result.returncode == 0, result.stderr
    model, meta = load_checkpoint(out)
    assert meta["classes"]["names"][15] == "person"
    assert meta["normalization"]["channel_order"] == "RGB"
    assert meta["source"].startswith("espnetv2_s_1.0_pascal_384x384.pth sha256:")
    # an existing output is kept unless --overwrite
    before = out.stat().st_mtime_ns
    result = wsi_seg("convert-weights", src, "-o", out, "--arch", "espnetv2", "--scale", "1.0", "--classes", "21")
    assert result.returncode == 2 and "already exists" in result.stderr and out.stat().st_mtime_ns == before


@pytest.mark.reference
@pytest.mark.parametrize("case", ["missing", "not-a-checkpoint", "other-arch", "other-classes", "other-depth"])
def test_convert_weights_bad_input(reference_dir, tmp_path, case):
    decoder = reference_dir / "data/ESPNet/pretrained/decoder/espnet_p_2_q_8.pth"
    args = {
        "missing": [tmp_path / "nope.pth", "--arch", "espnet", "--classes", "20"],
        "not-a-checkpoint": [reference_dir / "README.md", "--arch", "espnet", "--classes", "20"],
        "other-arch": [decoder, "--arch", "espnetv2", "--classes", "20"],
        "other-classes": [decoder, "--arch", "espnet", "--alpha3", "8", "--classes", "19"],
        "other-depth": [decoder, "--arch", "espnet", "--alpha3", "5", "--classes", "20"],
    }[case]
    expected = {
        "missing": "no such file",
        "not-a-checkpoint": "not a readable checkpoint",
        "other-arch": "does not fit espnetv2",
        "other-classes": "shape mismatch",
        "other-depth": "unexpected",
    }[case]
    out = tmp_path / "out.pt"
    result = wsi_seg("convert-weights", args[0], "-o", out, *args[1:])
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wsi-seg: error: ") and expected in lines[0]
    assert str(args[0].name) in lines[0]
    assert not out.exists() and list(tmp_path.iterdir()) == []
