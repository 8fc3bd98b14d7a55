"""The class list of a review: names and display colours, indexed by label value."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wsi_seg.errors import InputError


@dataclass(frozen=True)
class ClassList:
    """Class names and RGB colours; label value ``i`` is ``names[i]``. Label 0 is background."""

    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]

    def __post_init__(self) -> None:
        if not self.names:
            raise InputError("the class list is empty")
        if len(self.names) != len(self.colors):
            raise InputError(f"{len(self.names)} class names but {len(self.colors)} colours")
        if len(self.names) > 256:
            raise InputError(f"{len(self.names)} classes: a uint8 label mask holds at most 256")
        for color in self.colors:
            if len(color) != 3 or not all(0 <= int(v) <= 255 for v in color):
                raise InputError(f"class colour {list(color)!r} is not an [r, g, b] triple of 0..255")

    def __len__(self) -> int:
        return len(self.names)

    @property
    def palette(self) -> np.ndarray:
        """``(256, 3)`` uint8 colours by label value (values beyond the list are black)."""
        table = np.zeros((256, 3), np.uint8)
        table[: len(self.colors)] = np.asarray(self.colors, np.uint8)
        return table

    @classmethod
    def from_pairs(cls, pairs) -> "ClassList":
        """From ``[(name, (r, g, b)), ...]`` such as :data:`wsi_seg.synth.BIOPSY_CLASSES`."""
        names = tuple(str(name) for name, _ in pairs)
        colors = tuple(tuple(int(v) for v in color) for _, color in pairs)
        return cls(names, colors)


def default_classes() -> ClassList:
    """The eight breast-biopsy classes of the synthetic slides."""
    from wsi_seg.synth import BIOPSY_CLASSES

    return ClassList.from_pairs(BIOPSY_CLASSES)


def classes_from_checkpoint(path: str | os.PathLike) -> ClassList:
    """The class names and colours a wsi-seg checkpoint was trained with."""
    from wsi_seg.models.checkpoint import default_colors, read_checkpoint

    meta = read_checkpoint(Path(path)).get("classes") or {}
    names = list(meta.get("names") or [])
    if not names:
        raise InputError(f"{path}: the checkpoint records no class names")
    colors = meta.get("colors") or default_colors(len(names))
    return ClassList(tuple(str(n) for n in names), tuple(tuple(int(v) for v in c) for c in colors))
