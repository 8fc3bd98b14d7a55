"""wsi-seg: whole-slide image segmentation with ESPNet.

The public API is imported lazily so that slide-only commands do not pay for
importing torch.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "create_model": "wsi_seg.models",
    "list_models": "wsi_seg.models",
    "load_checkpoint": "wsi_seg.models.checkpoint",
    "save_checkpoint": "wsi_seg.models.checkpoint",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'wsi_seg' has no attribute {name!r}")
