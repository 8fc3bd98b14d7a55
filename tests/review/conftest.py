"""Shared fixtures: one small synthetic biopsy and its review folder, made once."""

from __future__ import annotations

import pytest

from wsi_seg.review import ExportOptions, export_review
from wsi_seg.synth import synthesize_slide


@pytest.fixture(scope="session")
def biopsy(tmp_path_factory):
    """(slide, ground-truth mask) of a 2048 x 1536 synthetic biopsy at 0.5 um/px."""
    return synthesize_slide(tmp_path_factory.mktemp("biopsy"), "biopsy", width=2048, height=1536, mpp=0.5, seed=1)


@pytest.fixture(scope="session")
def review(biopsy, tmp_path_factory):
    """The review folder of the biopsy (default options) and the export result."""
    slide, mask = biopsy
    out = tmp_path_factory.mktemp("review") / "review"
    return export_review(slide, mask, out, options=ExportOptions())
