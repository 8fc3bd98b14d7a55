"""Rare-class oversampling of training patches: repeat-factor sampling.

Gupta et al. (LVIS, CVPR 2019) give every image a repeat factor from the rarest
category it contains: with ``f_c`` the fraction of training images that contain
class ``c`` and a threshold ``t``, class ``c`` has ``r_c = max(1, sqrt(t / f_c))``
and an image ``r_i = max over its classes r_c``. Classes present in at least a
fraction ``t`` of the patches are not boosted; a class in 1 % of them with
``t = 0.25`` makes its patches 5x as likely to be drawn.

Here the factors become sampling weights: each epoch draws as many patches as
the training set holds, with replacement, each with probability proportional to
its factor (see :class:`wsi_seg.engine.train.EpochSampler`).
"""

from __future__ import annotations

import numpy as np


def repeat_factors(presence: np.ndarray, threshold: float) -> np.ndarray:
    """Per-patch repeat factors (float64, >= 1) from ``presence``, an (N, C) boolean
    array saying which classes each patch contains. ``threshold`` <= 0 gives all ones."""
    presence = np.asarray(presence, dtype=bool)
    if presence.ndim != 2:
        raise ValueError(f"presence must be (patches, classes), got shape {presence.shape}")
    n = presence.shape[0]
    if n == 0 or threshold <= 0:
        return np.ones(n, np.float64)
    frequency = presence.mean(axis=0)
    per_class = np.ones(presence.shape[1], np.float64)
    seen = frequency > 0
    per_class[seen] = np.maximum(1.0, np.sqrt(threshold / frequency[seen]))
    factors = np.where(presence, per_class[None, :], 1.0).max(axis=1)
    return factors
