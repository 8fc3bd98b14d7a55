"""Per-class areas: pixel counts of a mask in square millimetres and percent of tissue."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from wsi_seg.review.classes import ClassList


@dataclass(frozen=True)
class ClassArea:
    """One row of the area table. ``percent_of_tissue`` is None for the background class."""

    label: int
    name: str
    color: tuple[int, int, int]
    pixels: int
    area_mm2: float
    percent_of_tissue: float | None


def class_areas(counts, pixel_area_um2: float, classes: ClassList, *, background: int = 0) -> list[ClassArea]:
    """Area table from pixel counts: ``area_mm2 = pixels * pixel_area_um2 / 1e6``; the percent
    of tissue divides by all pixels that are not ``background``."""
    counts = np.asarray(counts, np.int64)
    tissue = int(counts.sum() - (counts[background] if 0 <= background < len(counts) else 0))
    rows = []
    for label, (name, color) in enumerate(zip(classes.names, classes.colors)):
        pixels = int(counts[label])
        percent = None if label == background else (100.0 * pixels / tissue if tissue else 0.0)
        rows.append(ClassArea(label, name, tuple(color), pixels, pixels * pixel_area_um2 / 1e6, percent))
    return rows


def areas_csv(rows: list[ClassArea]) -> str:
    """The table as CSV text: label, class, pixels, area_mm2, percent_of_tissue."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["label", "class", "pixels", "area_mm2", "percent_of_tissue"])
    for row in rows:
        percent = "" if row.percent_of_tissue is None else f"{row.percent_of_tissue:.4f}"
        writer.writerow([row.label, _as_text(row.name), row.pixels, f"{row.area_mm2:.6f}", percent])
    return buffer.getvalue()


def _as_text(cell: str) -> str:
    """A class name as a spreadsheet shows it: a leading =, +, -, @, tab or carriage return
    would make Excel or LibreOffice read the cell as a formula, so it gets a quote first."""
    return f"'{cell}" if cell[:1] in ("=", "+", "-", "@", "\t", "\r") else cell
