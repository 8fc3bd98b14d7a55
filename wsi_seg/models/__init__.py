"""The ESPNet model family: ESPNet-A/B/C, ESPNet and ESPNetv2."""

from wsi_seg.models.registry import create_model, default_hparams, list_models

__all__ = ["create_model", "default_hparams", "list_models"]
