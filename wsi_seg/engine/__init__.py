"""Training and evaluation machinery: metrics, losses and the training loop."""

from wsi_seg.engine.metrics import ConfusionMatrix

__all__ = ["ConfusionMatrix"]
