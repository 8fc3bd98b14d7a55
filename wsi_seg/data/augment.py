"""Joint image/label augmentation for patch training.

Geometry (random scale, crop, flips, 90-degree rotations) is applied to the
image and its label together, the label always with nearest-neighbour
resampling so class ids never mix. Colour jitter touches the image only: an
H&E stain perturbation in haematoxylin-eosin-DAB optical-density space (each
stain's density scaled by ``1 +- stain_scale`` and shifted by
``+- stain_shift``, the Ruifrok-Johnston colour deconvolution), then
brightness and contrast. Every random draw comes from the ``rng`` passed in, so
a sample's augmentation is fixed by its seed, whichever process runs it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from wsi_seg.config import AugmentConfig

__all__ = ["Augmenter", "hed_jitter", "random_crop"]

# Ruifrok & Johnston stain vectors (rows: haematoxylin, eosin, DAB) in optical density.
_STAINS = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], dtype=np.float64)
_STAINS /= np.linalg.norm(_STAINS, axis=1, keepdims=True)
_RGB_FROM_HED = _STAINS.astype(np.float32)
_HED_FROM_RGB = np.linalg.inv(_STAINS).astype(np.float32)


#: optical density of each uint8 value, -log((v + 1) / 256)
_OD_OF_VALUE = (-np.log((np.arange(256, dtype=np.float64) + 1.0) / 256.0)).astype(np.float32)


def hed_jitter(image: np.ndarray, scale: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Scale and shift the three stain densities of an (H, W, 3) uint8 RGB image.

    Deconvolve to stain densities, scale and shift them, convolve back: one affine
    map in optical density, ``od @ (HED_FROM_RGB diag(scale) RGB_FROM_HED) + shift @
    RGB_FROM_HED``, applied to densities looked up per uint8 value.
    """
    matrix = (_HED_FROM_RGB * np.asarray(scale, np.float32)[None, :]) @ _RGB_FROM_HED
    offset = np.asarray(shift, np.float32) @ _RGB_FROM_HED
    od = _OD_OF_VALUE[image.reshape(-1, 3)]
    rgb = np.exp(-(od @ matrix.astype(np.float32) + offset.astype(np.float32)))
    rgb *= np.float32(256.0)
    rgb -= np.float32(1.0)
    np.clip(rgb, 0, 255, out=rgb)
    return np.rint(rgb, out=rgb).astype(np.uint8).reshape(image.shape)


def random_crop(image: np.ndarray, label: np.ndarray, size: int, rng: np.random.Generator,
                *, fill: int = 255, ignore_index: int = 255) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` window at a random position; smaller inputs are padded
    (image with ``fill``, label with ``ignore_index``) at a random offset."""
    h, w = label.shape
    if h < size or w < size:
        ph, pw = max(size - h, 0), max(size - w, 0)
        top, left = int(rng.integers(0, ph + 1)), int(rng.integers(0, pw + 1))
        padded_image = np.full((max(h, size), max(w, size), 3), fill, np.uint8)
        padded_label = np.full((max(h, size), max(w, size)), ignore_index, label.dtype)
        padded_image[top:top + h, left:left + w] = image
        padded_label[top:top + h, left:left + w] = label
        image, label, (h, w) = padded_image, padded_label, padded_label.shape
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return image[y:y + size, x:x + size], label[y:y + size, x:x + size]


class Augmenter:
    """Callable ``(image, label, rng) -> (image, label)`` returning ``crop`` x ``crop`` arrays."""

    def __init__(self, config: AugmentConfig, crop: int, *, ignore_index: int = 255):
        self.config = config
        self.crop = int(crop)
        self.ignore_index = ignore_index

    def __call__(self, image: np.ndarray, label: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        cfg = self.config
        if not cfg.enabled:
            return random_crop(image, label, self.crop, rng, ignore_index=self.ignore_index)
        lo, hi = cfg.scale
        factor = float(rng.uniform(lo, hi)) if hi > lo else float(lo)
        if abs(factor - 1.0) > 1e-3:
            h, w = label.shape
            size = (max(1, round(w * factor)), max(1, round(h * factor)))
            image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
            label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
        image, label = random_crop(image, label, self.crop, rng, ignore_index=self.ignore_index)
        if cfg.hflip and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        if cfg.vflip and rng.random() < 0.5:
            image, label = image[::-1], label[::-1]
        if cfg.rot90:
            k = int(rng.integers(0, 4))
            if k:
                image, label = np.rot90(image, k), np.rot90(label, k)
        image = np.ascontiguousarray(image)
        label = np.ascontiguousarray(label)
        if cfg.stain_scale > 0 or cfg.stain_shift > 0:
            scale = 1.0 + rng.uniform(-cfg.stain_scale, cfg.stain_scale, 3)
            shift = rng.uniform(-cfg.stain_shift, cfg.stain_shift, 3)
            image = hed_jitter(image, scale, shift)
        if cfg.brightness > 0 or cfg.contrast > 0:
            b = rng.uniform(-cfg.brightness, cfg.brightness) * 255.0
            c = 1.0 + rng.uniform(-cfg.contrast, cfg.contrast)
            pixels = image.astype(np.float32)
            mean = pixels.mean()
            image = np.clip((pixels - mean) * c + mean + b, 0, 255).round().astype(np.uint8)
        return image, label
