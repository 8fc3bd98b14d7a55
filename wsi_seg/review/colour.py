"""Blending class colours over RGB pixels."""

from __future__ import annotations

import numpy as np

from wsi_seg.errors import InputError


def check_alpha(alpha: float) -> float:
    """``alpha`` as a float in [0, 1] (raises :class:`InputError` otherwise)."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        raise InputError(f"alpha must be a number between 0 and 1, got {alpha!r}") from None
    if not 0.0 <= value <= 1.0:
        raise InputError(f"alpha must be between 0 and 1, got {alpha!r}")
    return value


def blend(rgb: np.ndarray, labels: np.ndarray, palette: np.ndarray, alpha: float,
          *, background: int | None = 0) -> np.ndarray:
    """``rgb`` (h, w, 3) uint8 with each pixel mixed towards its class colour by ``alpha``.

    ``palette`` is ``(n, 3)`` uint8 by label value; pixels of class ``background``
    (None: no class) keep the slide colour. Returns a new uint8 array.
    """
    weight = int(round(check_alpha(alpha) * 256))
    palette = np.asarray(palette, np.uint16)
    tint = (palette * weight)  # (n, 3), colour contribution scaled by 256
    keep = np.full(len(palette), 256 - weight, np.uint16)
    if background is not None and 0 <= background < len(palette):
        tint[background] = 0
        keep[background] = 256
    out = (rgb.astype(np.uint16) * keep[labels][..., None] + tint[labels] + 128) >> 8
    return out.astype(np.uint8)
