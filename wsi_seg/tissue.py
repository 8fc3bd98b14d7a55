"""Tissue detection on a low-resolution thumbnail, in physical units.

:func:`tissue_mask` is a pure function of an RGB image and its microns per
pixel: stained tissue is saturated (pink eosin, purple hematoxylin) while glass
is grey-white, so pixels whose smoothed HSV saturation passes an Otsu threshold
(clamped to a sane range, so all-tissue and all-glass images behave) are
foreground. Pen ink is saturated too and is rejected by colour: green/cyan and
blue ink by hue, black ink by darkness, and red ink because it is redder and
purer than eosin (its blue channel sits barely above green, where eosin's is far
above; see docs/slides-and-tissue.md for the measured values). Morphology sizes
and the minimum region area are in microns, so the result does not depend on the
thumbnail resolution.

:class:`TissueMap` answers "how much of this level-0 rectangle is tissue?" in
constant time from an integral image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage
from skimage.filters import threshold_otsu
from skimage.morphology import disk, remove_small_holes, remove_small_objects  # noqa: F401

from wsi_seg.errors import InputError

#: Finer inputs are block-averaged to about this resolution before detection.
WORKING_MPP = 4.0


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4) or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise InputError(f"tissue_mask expects an (h, w, 3) RGB image, got shape {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise InputError(f"tissue_mask expects uint8 pixels, got {rgb.dtype}")
    if rgb.shape[2] == 4:  # straight alpha over white
        alpha = rgb[..., 3:4].astype(np.uint16)
        rgb = ((rgb[..., :3].astype(np.uint16) * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return rgb


def _check_mpp(mpp: float) -> float:
    try:
        mpp = float(mpp)
    except (TypeError, ValueError):
        raise InputError(f"tissue_mask needs a positive mpp, got {mpp!r}") from None
    if not np.isfinite(mpp) or mpp <= 0:
        raise InputError(f"tissue_mask needs a positive mpp, got {mpp!r}")
    return mpp


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """HSV in [0, 1] (float32, same height/width) of RGB uint8 or floats in [0, 1].

    The usual hexcone model: value is the largest channel, saturation the
    channel range over the value, hue the sector of the largest channel (blue
    before green before red on ties); grey pixels have hue and saturation 0.
    Computed in float32 with a single pass per channel, several times faster
    than a float64 implementation on thumbnails.
    """
    values = np.asarray(rgb)
    if values.dtype == np.uint8:
        values = values.astype(np.float32) * np.float32(1 / 255)
    else:
        values = values.astype(np.float32, copy=False)
    red, green, blue = values[..., 0], values[..., 1], values[..., 2]
    value = np.maximum(np.maximum(red, green), blue)
    delta = value - np.minimum(np.minimum(red, green), blue)
    grey = delta == 0
    safe = np.where(grey, np.float32(1), delta)
    saturation = np.where(value > 0, delta / np.where(value > 0, value, np.float32(1)), np.float32(0))
    hue = np.where(blue == value, 4 + (red - green) / safe,
                   np.where(green == value, 2 + (blue - red) / safe, (green - blue) / safe))
    hue = (hue / 6) % 1
    hue[grey] = 0
    return np.stack([hue, saturation, value], axis=-1).astype(np.float32, copy=False)


def ink_mask(rgb: np.ndarray) -> np.ndarray:
    """Pixels coloured like pen ink rather than H&E stain (bool, same height/width).

    Green/cyan/yellow ink: hue 0.17-0.55 (no H&E stain has it). Blue ink: hue
    0.55-0.66 with saturation > 0.3 (hematoxylin sits at 0.67-0.8). Black ink:
    value < 0.25 with low saturation. Red ink: red hue, saturation > 0.6 and
    (B - G) / (R - G) < 0.18 (pen red median 0.16, saturation 0.75; eosin
    0.4-0.8, red blood cells about 0.24), grown by hysteresis into the
    neighbouring red-like pixels (saturation > 0.4, ratio < 0.36) that form the
    pale edges of a stroke. Blending with white keeps that ratio unchanged.
    """
    rgb = _check_rgb(rgb)
    hsv = rgb_to_hsv(rgb)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    red, green, blue = (rgb[..., i].astype(np.float32) for i in range(3))
    blue_over_green = (blue - green) / np.maximum(red - green, 1.0)
    green_ink = (hue > 0.17) & (hue < 0.55) & (sat > 0.12)
    blue_ink = (hue >= 0.55) & (hue < 0.66) & (sat > 0.3)
    black_ink = (val < 0.25) & (sat < 0.35)
    red_hue = (hue > 0.93) | (hue < 0.02)
    red_like = red_hue & (sat > 0.4) & (red - green > 60) & (blue_over_green < 0.36) & (blue_over_green > -0.15)
    red_seed = red_like & (sat > 0.6) & (red - green > 90) & (blue_over_green < 0.18)
    # hysteresis: the pale, thin edges of a red stroke overlap red blood cells
    # in colour, so they count as ink only when joined to unmistakable ink
    red_ink = _components_touching(red_like, red_seed)
    return green_ink | blue_ink | black_ink | red_ink


def _components_touching(candidates: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The connected components (8-connected) of `candidates` that contain a seed."""
    if not seeds.any():
        return np.zeros_like(candidates)
    labels, count = ndimage.label(candidates, structure=np.ones((3, 3), dtype=bool))
    keep = np.zeros(count + 1, dtype=bool)
    keep[np.unique(labels[seeds & candidates])] = True
    keep[0] = False
    return keep[labels]


def tissue_mask(
    rgb: np.ndarray,
    mpp: float,
    *,
    min_area_um2: float = 20000.0,
    max_hole_area_um2: float = 40000.0,
    closing_um: float = 16.0,
    smoothing_um: float = 16.0,
    min_saturation: float = 0.03,
    max_saturation: float = 0.06,
    reject_ink: bool = True,
    ink_margin_um: float = 12.0,
) -> np.ndarray:
    """Boolean tissue mask (h, w) of an RGB image whose pixels are `mpp` microns.

    ``min_saturation``/``max_saturation`` clamp the Otsu threshold: below the
    first nothing counts (white glass, an all-white image), and the second keeps
    pale tissue when the image holds no glass for Otsu to separate it from.
    Holes smaller than ``max_hole_area_um2`` are filled; regions smaller than
    ``min_area_um2`` are dropped; ink (``reject_ink``), grown by
    ``ink_margin_um``, is never tissue.
    """
    rgb = _check_rgb(rgb)
    mpp = _check_mpp(mpp)
    height, width = rgb.shape[:2]
    factor = max(1, int(WORKING_MPP // mpp))
    small = rgb if factor == 1 else np.asarray(Image.fromarray(rgb).reduce(factor))
    small_mpp = mpp * factor

    # smooth the colour, not the saturation: saturation of noisy grey pixels is
    # biased upwards (max - min > 0), the saturation of their mean is not
    sigma_px = smoothing_um / small_mpp / 2.0
    smooth = small.astype(np.float32)
    if sigma_px >= 0.3:
        smooth = ndimage.gaussian_filter(smooth, (sigma_px, sigma_px, 0), mode="nearest")
    saturation = rgb_to_hsv(smooth / 255.0)[..., 1]
    if float(saturation.max()) <= min_saturation:
        return np.zeros((height, width), dtype=bool)
    threshold = threshold_otsu(saturation) if float(saturation.min()) < float(saturation.max()) else min_saturation
    threshold = float(np.clip(threshold, min_saturation, max_saturation))
    foreground = saturation > threshold

    ink = np.zeros_like(foreground)
    if reject_ink:
        ink = ink_mask(small)
        margin_px = int(round(ink_margin_um / small_mpp))
        if ink.any() and margin_px > 0:
            ink = ndimage.binary_dilation(ink, structure=disk(margin_px))
        foreground &= ~ink

    close_px = int(round(closing_um / small_mpp))
    if close_px > 0:
        # pad so that closing does not eat tissue touching the image border
        padded = np.pad(foreground, close_px, mode="edge")
        padded = ndimage.binary_closing(padded, structure=disk(close_px))
        foreground = padded[close_px:-close_px, close_px:-close_px]
    foreground = ndimage.binary_opening(foreground, structure=disk(1)) if min(foreground.shape) > 4 else foreground
    hole_px = int(max_hole_area_um2 / small_mpp**2)
    if hole_px > 0:
        foreground = _fill_holes_up_to(foreground, hole_px)
    foreground &= ~ink
    min_px = int(min_area_um2 / small_mpp**2)
    if min_px > 0:
        foreground = _drop_regions_below(foreground, min_px)

    if factor == 1:
        return foreground
    rows = np.minimum(np.arange(height) // factor, foreground.shape[0] - 1)
    cols = np.minimum(np.arange(width) // factor, foreground.shape[1] - 1)
    return foreground[rows[:, None], cols[None, :]]


def _skimage_uses_max_size() -> bool:
    import inspect

    return "max_size" in inspect.signature(remove_small_holes).parameters


# scikit-image 0.26 renamed area_threshold/min_size to max_size (inclusive)
_SIZE_KEYWORD = _skimage_uses_max_size()


def _fill_holes_up_to(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Fill background regions of at most `pixels`, enclosed or not.

    Regions cut by the image border count too: in a crop, a lumen or fat
    vacuole at the edge is still tissue; glass around a slide is far larger.
    """
    labels, count = ndimage.label(~mask)
    if count == 0:
        return mask
    small = np.bincount(labels.ravel()) <= pixels
    small[0] = False
    return mask | small[labels]


def _drop_regions_below(mask: np.ndarray, pixels: int) -> np.ndarray:
    if _SIZE_KEYWORD:
        return remove_small_objects(mask, max_size=pixels - 1)
    return remove_small_objects(mask, min_size=pixels)


@dataclass(frozen=True)
class TissueMap:
    """A tissue mask at `mpp` with constant-time area queries in level-0 pixels."""

    mask: np.ndarray
    mpp: float
    _integral: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        mask = np.asarray(self.mask, dtype=bool)
        if mask.ndim != 2:
            raise InputError(f"TissueMap mask must be 2-D, got shape {mask.shape}")
        object.__setattr__(self, "mask", mask)
        object.__setattr__(self, "mpp", _check_mpp(self.mpp))
        integral = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
        np.cumsum(np.cumsum(mask, axis=0, dtype=np.int64), axis=1, out=integral[1:, 1:])
        object.__setattr__(self, "_integral", integral)

    @property
    def tissue_fraction(self) -> float:
        """Fraction of the whole mask that is tissue."""
        return float(self.mask.mean()) if self.mask.size else 0.0

    def fraction(self, x: int, y: int, width0: int, height0: int, slide_mpp: float) -> float:
        """Tissue fraction of the level-0 rectangle (x, y, width0, height0)."""
        boxes0 = np.array([[x, y, width0, height0]], dtype=np.float64)
        return float(self.fractions(boxes0, slide_mpp)[0])

    def fractions(self, boxes0: np.ndarray, slide_mpp: float) -> np.ndarray:
        """Tissue fraction of each level-0 box (N, 4: x, y, width, height).

        Boxes are mapped to mask pixels through ``slide_mpp / self.mpp``; mask
        pixels are counted by area-weighted overlap (partial pixels at the box
        edges count in proportion), and parts of a box outside the mask count
        as background.
        """
        boxes0 = np.asarray(boxes0, dtype=np.float64)
        if boxes0.ndim != 2 or boxes0.shape[1] != 4:
            raise InputError(f"boxes must have shape (N, 4), got {boxes0.shape}")
        scale = _check_mpp(slide_mpp) / self.mpp
        x0 = boxes0[:, 0] * scale
        y0 = boxes0[:, 1] * scale
        x1 = (boxes0[:, 0] + boxes0[:, 2]) * scale
        y1 = (boxes0[:, 1] + boxes0[:, 3]) * scale
        area = (x1 - x0) * (y1 - y0)
        covered = self._area_sum(y1, x1) - self._area_sum(y0, x1) - self._area_sum(y1, x0) + self._area_sum(y0, x0)
        out = np.zeros(len(boxes0), dtype=np.float64)
        positive = area > 0
        out[positive] = covered[positive] / area[positive]
        return np.clip(out, 0.0, 1.0)

    def _area_sum(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Tissue area in [0, y) x [0, x) mask pixels, for real-valued corners."""
        height, width = self.mask.shape
        y = np.clip(y, 0.0, height)
        x = np.clip(x, 0.0, width)
        # bilinear interpolation of the integral image is exact for a mask
        # that is constant over each pixel
        yi = np.minimum(np.floor(y).astype(np.int64), height - 1) if height else np.zeros_like(y, dtype=np.int64)
        xi = np.minimum(np.floor(x).astype(np.int64), width - 1) if width else np.zeros_like(x, dtype=np.int64)
        fy = y - yi
        fx = x - xi
        s = self._integral
        return (
            s[yi, xi] * (1 - fy) * (1 - fx)
            + s[yi + 1, xi] * fy * (1 - fx)
            + s[yi, xi + 1] * (1 - fy) * fx
            + s[yi + 1, xi + 1] * fy * fx
        )


def detect_tissue(slide, *, mpp: float = 8.0, **options) -> TissueMap:
    """Read `slide`'s thumbnail at `mpp` and find its tissue (options go to :func:`tissue_mask`)."""
    thumbnail = slide.thumbnail(mpp)
    return TissueMap(mask=tissue_mask(thumbnail, mpp, **options), mpp=mpp)
