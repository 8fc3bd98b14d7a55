"""The ESPNet model family: ESPNet-A/B/C, ESPNet and ESPNetv2.

The builders are imported on first use, so that :mod:`wsi_seg.models.shapes` can be read
without loading PyTorch.
"""

__all__ = ["create_model", "default_hparams", "list_models"]


def __getattr__(name: str):
    if name in __all__:
        from wsi_seg.models import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
