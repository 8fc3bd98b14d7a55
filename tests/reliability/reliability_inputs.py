"""Building blocks of the reliability tests: small inputs made without training,
read-only folders, and ``wsi-seg`` as a real process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
import yaml

from wsi_seg.models import create_model
from wsi_seg.models.checkpoint import make_checkpoint, save_checkpoint
from wsi_seg.synth import BIOPSY_CLASSES

CLASSES = [{"name": name, "color": list(color)} for name, color in BIOPSY_CLASSES]
CLASS_NAMES = [name for name, _ in BIOPSY_CLASSES]
COLOURS = [color for _, color in BIOPSY_CLASSES]
#: The file a crafted pickle would create if it were ever unpickled with code.
MARKER_NAME = "MARKER-pickled-code-ran"


# ----------------------------------------------------------------------------- builders


def tiny_checkpoint(path: Path, *, name: str = "espnet_c", mpp: float = 2.0, seed: int = 0) -> Path:
    """An untrained checkpoint (deterministic weights) that runs at ``mpp``."""
    torch.manual_seed(seed)
    model = create_model(name, len(CLASS_NAMES), alpha3=1)
    ckpt = make_checkpoint(name, len(CLASS_NAMES), {"alpha3": 1}, model.state_dict(), class_names=CLASS_NAMES,
                           class_colors=COLOURS, mpp=mpp, patch_size=64)
    return save_checkpoint(ckpt, path)


def pickled_code(path: Path, marker: Path) -> Path:
    """A torch file whose unpickling would create ``marker`` (it must never be unpickled)."""

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"state_dict": {"weight": torch.zeros(1)}, "payload": Payload()}, path)
    return path


def strip_mpp(source: Path, target: Path) -> Path:
    """A copy of a synthetic Aperio slide without any microns-per-pixel metadata."""
    data = source.read_bytes().replace(b"|MPP = ", b"|XPP = ")
    target.write_bytes(data)
    with tifffile.TiffFile(target, mode="r+b") as tif:
        for page in tif.pages:
            unit = page.tags.get("ResolutionUnit")
            if unit is not None and unit.value != 1:
                unit.overwrite(1)  # RESUNIT NONE: the resolution tags carry no size
    return target


def glass_slide(path: Path, *, width: int = 1024, height: int = 768) -> Path:
    """An Aperio slide of bare glass: near-white, no tissue anywhere."""
    from wsi_seg.io.tiff import write_aperio_svs

    rng = np.random.default_rng(0)
    bands = (np.clip(rng.normal(242, 1.5, (min(256, height - y), width, 3)), 0, 255).astype(np.uint8)
             for y in range(0, height, 256))
    write_aperio_svs(path, width=width, height=height, bands=bands, band_height=256, mpp=0.5)
    return path


def label_tiff(path: Path, labels: np.ndarray) -> Path:
    from wsi_seg.io.tiff import write_pyramidal_tiff

    height, width = labels.shape
    write_pyramidal_tiff(path, width=width, height=height, bands=[labels.astype(np.uint8)], band_height=height,
                         mpp=0.5, colormap=np.asarray(COLOURS, np.uint8))
    return path


def sparse_file(path: Path, size: int) -> Path:
    """A file of ``size`` bytes that takes no disk space."""
    with open(path, "wb") as fh:
        fh.truncate(size)
    return path


def train_config(path: Path, store: Path, run_dir: Path, **changes) -> Path:
    data = {"model": {"name": "espnet_c", "hparams": {"alpha3": 1}}, "classes": CLASSES,
            "data": {"store": str(store), "val_fraction": 0.5, "crop": 64, "batch_size": 4, "workers": 0},
            "optim": {"class_weights": "none"},
            "stages": [{"epochs": 1}], "run": {"device": "cpu", "threads": 1},
            "output": {"dir": str(run_dir), "tensorboard": False}}
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def geojson_text(class_name: str) -> str:
    ring = [[100, 100], [500, 100], [500, 400], [100, 400], [100, 100]]
    feature = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
               "properties": {"objectType": "annotation", "classification": {"name": class_name}}}
    return json.dumps({"type": "FeatureCollection", "features": [feature]})


# ----------------------------------------------------------------------------- read-only folders


def _immutable(path: Path, on: bool) -> bool:
    chattr = shutil.which("chattr")
    if chattr is None:
        return False
    done = subprocess.run([chattr, "+i" if on else "-i", str(path)], capture_output=True)
    return done.returncode == 0


def _writable(folder: Path) -> bool:
    probe = folder / ".probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


@contextmanager
def read_only(folder: Path):
    """``folder`` made read-only for this process: mode 0555, and for a privileged user
    (who ignores modes) the immutable attribute; skips the test when neither holds."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    immutable = False
    try:
        if _writable(folder):
            immutable = _immutable(folder, True)
            if not immutable or _writable(folder):
                pytest.skip("cannot make a read-only folder as this user (no effective mode, no chattr +i)")
        yield folder
    finally:
        if immutable:
            _immutable(folder, False)
        folder.chmod(0o755)


def run_cli(*args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``wsi-seg ARGS`` as a real process (``python -m wsi_seg``)."""
    return subprocess.run([sys.executable, "-m", "wsi_seg", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def png_bomb(path: Path, width: int = 60_000, height: int = 60_000) -> Path:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels (a "decompression bomb")."""
    import struct
    import zlib

    from PIL import Image

    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path, format="PNG")
    data = bytearray(path.read_bytes())
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path
