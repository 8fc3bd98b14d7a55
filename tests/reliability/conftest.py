"""Inputs of the reliability tests, built once per session.

Small synthetic slides (1024 x 768 at 0.5 um/px), one bad file of every kind the
catalogue needs, checkpoints made without training, training configs and a tiny
patch store. Everything lives under one session folder; ``catalogue_inputs`` maps
short names to its paths (strings, ready for ``str.format``).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reliability_inputs import (CLASS_NAMES, MARKER_NAME, geojson_text, glass_slide, label_tiff, pickled_code,
                                png_bomb, read_only, sparse_file, strip_mpp, tiny_checkpoint, train_config)
from wsi_seg.models import create_model
from wsi_seg.models.checkpoint import make_checkpoint, save_checkpoint
from wsi_seg.synth import synthesize_slide


@pytest.fixture
def readonly_folder():
    """``readonly_folder(path)`` makes ``path`` read-only until the test ends."""
    stack = []

    def make(path: Path) -> Path:
        context = read_only(Path(path))
        stack.append(context)
        return context.__enter__()

    yield make
    while stack:
        stack.pop().__exit__(None, None, None)


# ----------------------------------------------------------------------------- the session's inputs


@pytest.fixture(scope="session")
def catalogue_inputs(tmp_path_factory) -> dict[str, str]:
    """Short names -> paths of every input the catalogue uses (see the module docstring)."""
    root = tmp_path_factory.mktemp("catalogue")
    slides, bad, ckpt, cfg = (root / name for name in ("slides", "bad", "ckpt", "configs"))
    for folder in (bad, ckpt, cfg):
        folder.mkdir()
    good, good_mask = synthesize_slide(slides, "good", width=1024, height=768, mpp=0.5, seed=1)
    other, other_mask = synthesize_slide(slides, "other", width=1024, height=768, mpp=0.5, seed=2)
    data = good.read_bytes()

    (bad / "zero.svs").write_bytes(b"")
    (bad / "junk.svs").write_bytes(b"II*\x00" + bytes(range(256)) * 40)  # a TIFF header, then nothing usable
    (bad / "cut10.svs").write_bytes(data[: len(data) // 10])
    (bad / "cut60.svs").write_bytes(data[: len(data) * 6 // 10])
    (bad / "folder.svs").mkdir()
    Image.fromarray(np.full((64, 96, 3), 200, np.uint8)).save(bad / "renamed.svs", format="PNG")
    strip_mpp(good, bad / "nompp.svs")
    png_bomb(bad / "bomb.png")
    (root / "glass").mkdir()
    glass_slide(root / "glass" / "glass.svs")

    spaced = root / "dir é with space"
    spaced.mkdir()
    shutil.copy(good, spaced / "slide é 1.svs")
    (spaced / "broken é.svs").write_bytes(b"not a slide, with a name that is not ASCII")
    (root / "empty").mkdir()
    truncated_batch = root / "batch"
    truncated_batch.mkdir()
    shutil.copy(good, truncated_batch / "good.svs")
    shutil.copy(bad / "cut10.svs", truncated_batch / "cut10.svs")

    # label folders: "other" is labelled properly in each, "good" badly
    def masks(name: str) -> Path:
        folder = root / f"masks_{name}"
        folder.mkdir()
        shutil.copy(other_mask, folder / "other.mask.tif")
        return folder

    Image.fromarray(np.zeros((300, 300), np.uint8), mode="L").save(masks("aspect") / "good.png")
    beyond = np.zeros((768, 1024), np.uint8)
    beyond[300:340, 400:440] = 12
    Image.fromarray(beyond, mode="L").save(masks("range") / "good.png")
    (masks("badjson") / "good.geojson").write_text('{"type": "FeatureCollection", "features": [', encoding="utf-8")
    (masks("unknown") / "good.geojson").write_text(geojson_text("tumour of unknown kind"), encoding="utf-8")
    sparse_file(masks("huge") / "good.geojson", 2 * 1024**3)

    # checkpoints and weight files
    model = tiny_checkpoint(ckpt / "model.pt")
    torch.manual_seed(0)
    foreign = create_model("espnet_c", len(CLASS_NAMES), alpha3=1)
    wrong = make_checkpoint("espnet", len(CLASS_NAMES), {"alpha3": 1}, create_model(
        "espnet", len(CLASS_NAMES), alpha3=1).state_dict(), class_names=CLASS_NAMES, mpp=2.0)
    wrong["state_dict"] = {k: v.clone() for k, v in foreign.state_dict().items()}  # espnet_c weights
    save_checkpoint(wrong, ckpt / "other_arch.pt")
    torch.save(foreign.state_dict(), ckpt / "espnet_c_weights.pth")
    pickled_code(ckpt / "evil.pt", root / MARKER_NAME)
    (ckpt / "zero.pt").write_bytes(b"")
    (ckpt / "junk.pt").write_bytes(b"this is a text file, not a checkpoint\n")
    (ckpt / "notonnx.onnx").write_bytes(b"\x08\x07this is not an ONNX protobuf" * 8)

    # a tiny labelled store and training configs
    from wsi_seg.tiling import tile_slides

    store = root / "store.zarr"
    tile_slides([good, other], store, masks_dir=slides, mpp=2.0, patch=64, min_tissue=0.2, progress=False,
                workers=1)
    run = root / "run-never-written"
    train_config(cfg / "valid.yaml", store, run)
    train_config(cfg / "unknown_key.yaml", store, run, optimiser={"lr": 0.1})
    train_config(cfg / "wrong_type.yaml", store, run, optim={"lr": "fast"})
    train_config(cfg / "negative_crop.yaml", store, run, data={"crop": -64})
    (cfg / "malformed.yaml").write_text("model:\n  name: espnet_c\n classes: [\n", encoding="utf-8")
    sparse_file(cfg / "huge.yaml", 2 * 1024**2)

    # evaluation masks
    label_tiff(root / "pred_aspect.tif", np.zeros((300, 300), np.uint8))
    label_tiff(root / "pred_range.tif", beyond)

    names = {
        "root": root, "slides": slides, "bad": bad, "ckpt": ckpt, "cfg": cfg, "good": good, "good_mask": good_mask,
        "other": other, "other_mask": other_mask, "glass": root / "glass" / "glass.svs", "spaced": spaced,
        "empty": root / "empty", "batch": truncated_batch, "model": model, "store": store,
        "marker": root / MARKER_NAME,
    }
    for name in ("aspect", "range", "badjson", "unknown", "huge"):
        names[f"masks_{name}"] = root / f"masks_{name}"
    return {key: str(value) for key, value in names.items()}
