"""``export_review``: everything a pathologist needs to review a slide and its mask.

The review folder is built in a hidden temporary sibling and renamed to its final
path only when complete, so a failure (bad input, full disk, interrupt) never
leaves a half-written review folder behind.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsi_seg.errors import InputError, OutputError
from wsi_seg.io.atomic import temp_dir
from wsi_seg.io.slide import open_slide
from wsi_seg.review.areas import ClassArea, areas_csv, class_areas
from wsi_seg.review.classes import ClassList, default_classes
from wsi_seg.review.colour import check_alpha
from wsi_seg.review.geojson import TRACE_TILE, RegionTracer, region_features, write_features
from wsi_seg.review.mask import ReviewMask
from wsi_seg.review.overlay import write_overlay
from wsi_seg.review.overview import blended_thumbnail, overview_mpp, render_overview

#: Outputs written into the review folder (the viewer adds its tiles and assets).
OVERVIEW, AREAS, GEOJSON, OVERLAY, PAGE = "overview.png", "areas.csv", "annotations.geojson", "overlay.tif", "index.html"


@dataclass(frozen=True)
class ExportOptions:
    """Settings of a review export.

    alpha: weight of the class colours over the slide (overview, overlay, viewer start).
    simplify: GeoJSON simplification tolerance in mask pixels (0 keeps every vertex).
    min_area_um2: GeoJSON regions and holes smaller than this (square microns) are dropped.
    viewer: write index.html and its tiles (needs OpenSeadragon installed).
    """

    alpha: float = 0.4
    simplify: float = 0.5
    min_area_um2: float = 10.0
    viewer: bool = True
    overwrite: bool = False
    threads: int = 2

    def validate(self) -> "ExportOptions":
        check_alpha(self.alpha)
        for name in ("simplify", "min_area_um2"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise InputError(f"{name} must be a non-negative number, got {value!r}")
        return self


@dataclass
class ReviewResult:
    """What an export wrote."""

    review_dir: Path
    areas: list[ClassArea]
    features: int
    seconds: float
    files: list[str] = field(default_factory=list)


def _make_staging(review_dir: Path, overwrite: bool) -> Path:
    if review_dir.exists() and not overwrite:
        raise OutputError(f"{review_dir}: already exists (pass --overwrite to replace it)")
    if review_dir.exists() and not review_dir.is_dir():
        raise OutputError(f"{review_dir}: exists and is not a folder")
    parent = review_dir.parent
    if not parent.is_dir():
        raise OutputError(f"{review_dir}: folder {parent} does not exist")
    return temp_dir(review_dir, ".partial")  # OutputError when the folder cannot be written


def _publish(staging: Path, review_dir: Path) -> None:
    """Move the finished folder into place (replacing an old review folder when asked)."""
    old = None
    if review_dir.exists():
        old = temp_dir(review_dir, ".old")
        os.rmdir(old)
        os.rename(review_dir, old)
    os.rename(staging, review_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_review(slide_path: str | os.PathLike, mask_path: str | os.PathLike, review_dir: str | os.PathLike, *,
                  classes: ClassList | None = None, options: ExportOptions | None = None,
                  slide_mpp: float | None = None) -> ReviewResult:
    """Write the review folder of ``slide_path`` and its label mask ``mask_path``.

    Outputs: ``overview.png``, ``areas.csv``, ``annotations.geojson``, ``overlay.tif``
    and (unless ``options.viewer`` is False) ``index.html`` with its tiles. ``classes``
    defaults to the biopsy classes. Raises :class:`InputError`/``SlideError`` for unusable
    inputs and :class:`OutputError` when the folder cannot be written; nothing is left at
    ``review_dir`` then.
    """
    started = time.perf_counter()
    options = (options or ExportOptions()).validate()
    classes = classes or default_classes()
    review_dir = Path(review_dir).expanduser().absolute()
    slide = open_slide(slide_path, mpp=slide_mpp)
    mask = ReviewMask(mask_path, slide_size0=slide.dimensions, slide_mpp=slide.mpp, num_classes=len(classes))
    if options.viewer:
        from wsi_seg.review.viewer import openseadragon_dir

        openseadragon_dir()  # fail now, not after the slow parts
    staging = _make_staging(review_dir, options.overwrite)
    try:
        areas, features = _write_all(staging, slide, mask, classes, options)
        files = sorted(p.name for p in staging.iterdir())
        _publish(staging, review_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"{review_dir}: cannot write the review ({exc.strerror or exc})") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ReviewResult(review_dir, areas, features, time.perf_counter() - started, files)


def _write_all(out: Path, slide, mask: ReviewMask, classes: ClassList, options: ExportOptions):
    # one pass over the full-resolution mask: pixel counts and region outlines
    tracer = RegionTracer(mask.width, len(classes), scale=mask.scale, skip=(0,))
    counts = np.zeros(len(classes), np.int64)
    for start in range(0, mask.height, TRACE_TILE):
        stop = min(start + TRACE_TILE, mask.height)
        first = max(0, start - 1)
        rows = mask.rows(first, min(stop + 1, mask.height))  # one row of context each way
        core = rows[start - first : start - first + stop - start]
        counts += np.bincount(core.ravel(), minlength=len(classes))[: len(classes)]
        tracer.add_band(start, rows, top=start - first, height=stop - start)
    areas = class_areas(counts, mask.pixel_area_um2, classes)
    (out / AREAS).write_text(areas_csv(areas), encoding="utf-8")

    palette = classes.palette[: len(classes)]
    thumb_mpp = overview_mpp(slide.dimensions, slide.mpp)
    image = blended_thumbnail(slide, mask, palette, options.alpha, thumb_mpp)
    render_overview(image, areas, title=slide.path.name, mpp=thumb_mpp).save(out / OVERVIEW)

    level0_per_mask_px = (mask.scale[0] + mask.scale[1]) / 2
    features = region_features(tracer.regions(), classes, tolerance=options.simplify * level0_per_mask_px,
                               min_area=options.min_area_um2 / slide.mpp ** 2, namespace=slide.path.name)
    feature_count = write_features(out / GEOJSON, features)

    description = "wsi-seg review overlay of " + slide.path.name.encode("ascii", "replace").decode("ascii")
    write_overlay(out / OVERLAY, slide, mask, palette, options.alpha, description=description)

    if options.viewer:
        from wsi_seg.review.viewer import write_viewer

        write_viewer(out, slide, mask, areas, alpha=options.alpha, slide_name=slide.path.name,
                     threads=options.threads)
    return areas, feature_count
