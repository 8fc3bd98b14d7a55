"""Shared fixtures: where the read-only reference data and real slides live."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("WSI_SEG_SHARED_DIR", REPO.parent / "shared"))
REFERENCE = Path(os.environ.get("WSI_SEG_REFERENCE_DIR", SHARED / "reference"))


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The ESPNet authors' weights and outputs (../shared/reference/espnet)."""
    path = REFERENCE / "espnet"
    if not path.is_dir():
        pytest.skip(f"ESPNet reference data not found at {path} (set WSI_SEG_REFERENCE_DIR)")
    return path


@pytest.fixture(scope="session")
def real_dir() -> Path:
    """Real slides, H&E tiles and artefact images (../shared/real)."""
    path = SHARED / "real"
    if not path.is_dir():
        pytest.skip(f"real slide data not found at {path} (set WSI_SEG_SHARED_DIR)")
    return path


@pytest.fixture(scope="session")
def cityscapes_root(tmp_path_factory) -> Path:
    """A tiny Cityscapes tree in the official layout (tests/fake_datasets.py); do not modify it."""
    from fake_datasets import make_cityscapes

    return make_cityscapes(tmp_path_factory.mktemp("cityscapes"))


@pytest.fixture(scope="session")
def voc_root(tmp_path_factory) -> Path:
    """A tiny PASCAL VOC tree (VOCdevkit/VOC2012 under the returned folder's parent); do not modify it."""
    from fake_datasets import make_voc

    return make_voc(tmp_path_factory.mktemp("voc"))
