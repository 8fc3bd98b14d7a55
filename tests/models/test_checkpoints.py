"""The wsi-seg checkpoint format: round trip, refusal of pickled code, fine-tuning loads."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

import wsi_seg
from wsi_seg.errors import CheckpointError, InputError
from wsi_seg.models import create_model
from wsi_seg.models.checkpoint import (
    load_checkpoint,
    load_matching,
    make_checkpoint,
    read_checkpoint,
    save_checkpoint,
)

BIOPSY = ["background", "benign epithelium", "malignant epithelium", "normal stroma",
          "desmoplastic stroma", "secretion", "blood", "necrosis"]


def _checkpoint(name="espnet", classes=8, **hparams):
    torch.manual_seed(0)
    model = create_model(name, classes, **hparams)
    with torch.no_grad():  # make BN statistics non-trivial so the round trip is meaningful
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return model, make_checkpoint(name, classes, {**hparams}, model.state_dict(), class_names=[f"c{i}" for i in range(classes)] if classes != 8 else BIOPSY,
                                  mpp=1.0, patch_size=512, source="test")


def test_round_trip_gives_the_same_outputs(tmp_path):
    model, ckpt = _checkpoint(alpha3=2)
    path = save_checkpoint(ckpt, tmp_path / "m.pt")
    loaded, meta = wsi_seg.load_checkpoint(path)
    assert not loaded.training
    assert meta["classes"]["names"] == BIOPSY
    assert len(meta["classes"]["colors"]) == 8 and meta["mpp"] == 1.0 and meta["patch_size"] == 512
    assert meta["model"]["hparams"]["alpha3"] == 2 and meta["model"]["hparams"]["K"] == 5
    assert "state_dict" not in meta
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        assert torch.equal(model.eval()(x), loaded(x))
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temp file left


def test_a_pickle_that_would_run_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as fh:
        pickle.dump({"format": "wsi-seg-checkpoint", "payload": Payload()}, fh)
    with pytest.raises(CheckpointError, match="pickled code"):
        load_checkpoint(evil)
    assert not marker.exists()
    # torch.save'd objects with code are refused too
    torch.save({"format": "wsi-seg-checkpoint", "payload": Payload()}, tmp_path / "evil2.pt")
    with pytest.raises(CheckpointError, match="pickled code"):
        load_checkpoint(tmp_path / "evil2.pt")
    assert not marker.exists()


def test_bad_files_give_clear_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        load_checkpoint(tmp_path / "empty.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save(create_model("espnet_c", 4, alpha3=1).state_dict(), tmp_path / "raw.pt")
    with pytest.raises(CheckpointError, match="convert-weights"):
        load_checkpoint(tmp_path / "raw.pt")
    with pytest.raises(InputError, match="is a directory"):
        load_checkpoint(tmp_path)


def test_weights_that_do_not_fit_name_the_keys(tmp_path):
    _, ckpt = _checkpoint(alpha3=2)
    ckpt["model"]["hparams"]["alpha3"] = 3
    path = save_checkpoint(ckpt, tmp_path / "m.pt")
    with pytest.raises(CheckpointError, match=r"missing \d+: encoder\.stage3\.2\."):
        load_checkpoint(path)
    ckpt["model"] = {"name": "espnetv9", "num_classes": 8, "hparams": {}}
    with pytest.raises(CheckpointError, match="unknown model 'espnetv9'"):
        read_checkpoint(save_checkpoint(ckpt, tmp_path / "m2.pt"))


def test_fine_tuning_with_another_class_count_reinitialises_only_the_classifier_layers():
    source, _ = _checkpoint("espnetv2", 20, scale=0.5)
    target = create_model("espnetv2", 8, scale=0.5)
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    reinitialised = load_matching(target, source.state_dict())
    # ESPNetv2's pyramid width is min(C // 2, 16): with 8 classes every pyramid block changes
    # shape, while the encoder and the gated skips load.
    assert reinitialised and all(k.startswith("pyramid") for k in reinitialised)
    assert "pyramid1.out.weight" in reinitialised
    assert torch.equal(target.state_dict()["pyramid1.out.weight"], fresh["pyramid1.out.weight"])
    assert torch.equal(target.state_dict()["skip1.gate.1.weight"], source.state_dict()["skip1.gate.1.weight"])
    assert torch.equal(target.state_dict()["stem.conv.weight"], source.state_dict()["stem.conv.weight"])

    espnet_source, _ = _checkpoint("espnet", 20, alpha3=2)
    espnet_target = create_model("espnet", 8, alpha3=2)
    keys = load_matching(espnet_target, espnet_source.state_dict())
    # every layer whose width is the class count: classifier, decoder projections, BN/PReLU over C or 2C
    assert "encoder.classifier.weight" in keys and "head.weight" in keys
    assert not any(k.startswith("encoder.stage") or k.startswith("encoder.down") for k in keys)


def test_save_refuses_a_directory_and_a_missing_folder(tmp_path):
    _, ckpt = _checkpoint("espnet_c", 8, alpha3=1)
    with pytest.raises(InputError, match="is a directory"):
        save_checkpoint(ckpt, tmp_path)
    with pytest.raises(InputError, match="does not exist"):
        save_checkpoint(ckpt, tmp_path / "no" / "m.pt")
